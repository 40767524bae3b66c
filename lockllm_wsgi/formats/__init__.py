"""Wire formats: one module per provider API, each knowing where the text is and how its errors look.

A format is a `WireFormat`, whose methods name everything a format supplies to the request path: the endpoints it
reads and how it walks their bodies into a `Collector` (`endpoints`, `extract`), whether a request streams, its
error shape and vocabulary (so the provider's SDK raises its native exception), the headers sent upstream (a
provider that authenticates per request re-signs here), the client identity a rate limit counts, the route
options it takes from the INI file, and, for the output guard, how its answers are read, how its streams are
framed and read, and how its mid-stream error event looks. Adding a format is one module, one line in
`_registry` and one test module (docs/new-format.md)::

    fmt = FORMATS["openai"]
    collector = fmt.extract("/v1/chat/completions", body)

Formats import the extraction and value modules below them, never the settings or the app above them.
"""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from typing import Any, Callable, Mapping

from ..extract import Collector, UnknownShape
from .answers import CutEnding, Framing, Piece, SSEEvents, StreamReader
from ..identity import provider_key
from ..refusal import Refusal

Walker = Callable[[dict, Collector], None]
# A route option's converter: its INI text in, its value out, ValueError with a message for people.
OptionConverter = Callable[[str], str]

# Error kinds by status in the vocabulary OpenAI and Anthropic share (their `type` / `error.type`); formats with
# their own vocabulary (Gemini's google.rpc codes, Bedrock's exception names) override `error_kind`.
KIND_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    415: "invalid_request_error",
    429: "rate_limit_error",
    502: "api_error",
    503: "api_error",
    504: "api_error",
}


class WireFormat(ABC):
    """Everything one provider API supplies; a subclass sets `name` and `endpoints` and renders `error_body`."""

    name = ""
    # (compiled path pattern, walker): the first pattern that matches the path after the route prefix wins.
    endpoints: tuple[tuple[re.Pattern, Walker], ...] = ()
    # Keys a `[route:NAME]` section of this format may set beyond prefix, upstream, format and preset.
    route_options: Mapping[str, OptionConverter] = {}

    def extract(self, path: str, body: dict, lenient: bool = False) -> Collector:
        """The body's segments; `lenient` (unknown_shapes = scan_strings) scans what is unknown as plain strings."""
        collector = Collector(lenient=lenient)
        for pattern, walk in self.endpoints:
            if pattern.search(path):
                walk(body, collector)
                return collector
        if not lenient:
            raise UnknownShape("path", f"{path} is not an endpoint the {self.name} format knows how to scan")
        collector.strings(body, "body")  # an endpoint the format does not know: nothing in it is known either
        return collector

    def is_stream(self, path: str, body: Mapping[str, Any]) -> bool:
        return body.get("stream") is True

    @abstractmethod
    def error_body(self, refusal: Refusal, request_id: str) -> tuple[list[tuple[str, str]], bytes]:
        """The headers and body of a refusal in the provider's own error shape."""

    def error_kind(self, status: int) -> str:
        """The provider's name for an error of this status, where its error shape has one."""
        return KIND_BY_STATUS.get(status, "invalid_request_error" if status < 500 else "api_error")

    def client_key(self, environ: Mapping[str, object]) -> str | None:
        """What identifies the calling client to this provider (its API key), for rate limits and audit records;
        None when the request carries none."""
        return provider_key(environ)

    def check_route(self, upstream: str, options: Mapping[str, str]) -> Mapping[str, str]:
        """The route's options completed and checked at start-up; ValueError names what is missing."""
        return options

    def upstream_headers(self, options: Mapping[str, str], method: str, url: str, headers: dict[str, str],
                         body: bytes) -> dict[str, str]:
        """The headers sent upstream; a format whose provider authenticates per request (SigV4) re-signs here."""
        return headers

    # --- answers, for the output guard (answers.py) ---------------------------------------------------------

    def answer_kind(self, method: str, path: str) -> str:
        """What the answer to this call holds for the output guard: "read" (model text this format reads),
        "none" (no model text: embeddings, token counts, model lists) or "unread" (model text this format cannot
        read yet; enforce mode refuses such calls). A format that reads no answers says "unread" everywhere."""
        return "unread"

    def answer_pieces(self, path: str, answer: Any) -> list[Piece]:
        """The pieces of a plain JSON answer (its texts and tool calls); only called where answer_kind is "read"."""
        raise NotImplementedError(f"the {self.name} format reads no answers")

    def stream_framing(self, path: str, content_type: str) -> Framing | None:
        """How a streamed answer of this Content-Type is cut into events; None when the answer is not a stream this
        format reads (it is then read whole, as JSON). Server-sent events by default."""
        return SSEEvents() if content_type.startswith("text/event-stream") else None

    def stream_reader(self, path: str) -> StreamReader:
        """A reader for one streamed answer's events; only called where answer_kind is "read"."""
        raise NotImplementedError(f"the {self.name} format reads no streams")

    def stream_error(self, path: str, refusal: Refusal, request_id: str) -> tuple[str | None, bytes]:
        """The provider's own mid-stream error, which makes its SDK raise while iterating: the event's name (or
        exception type) and payload, which the stream's framing wraps (`Framing.error_event`)."""
        raise NotImplementedError(f"the {self.name} format has no stream error event")

    def stream_cut_ending(self, path: str) -> CutEnding:
        """What follows that error event so the SDK raises, where its SDK yields the event rather than raising on
        it; nothing by default (the other SDKs raise on the event itself)."""
        return CutEnding()


def json_bytes(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode("utf-8")


def known_role(value: Any, known: frozenset[str], where: str) -> str:
    """A message's role, which must be one the format defines: a chat template prints the role as it is, so an
    invented one ("system_override", "User") is text the model reads that no scan judged."""
    if not isinstance(value, str):
        raise UnknownShape(where, "every message needs a role")
    if value not in known:
        raise UnknownShape(where, f"role {value[:40]!r} is not one of {', '.join(sorted(known))}")
    return value


def only_key(block: Mapping[str, Any], keys: frozenset[str], where: str) -> str:
    """The one key of a union object (Gemini parts, Bedrock content blocks) that says what it holds."""
    present = [key for key in block if key in keys]
    if len(present) != 1:
        raise UnknownShape(where, f"expected exactly one of {', '.join(sorted(keys))}, found {present or 'none'}")
    return present[0]


def with_request_id(refusal: Refusal, request_id: str) -> str:
    """The refusal's message as every format shows it: the request id lets an operator find the log line."""
    return f"{refusal.message} (request id {request_id})"


def _registry() -> dict[str, WireFormat]:
    from .anthropic import AnthropicFormat
    from .azure import AzureFormat
    from .bedrock import BedrockFormat
    from .cohere import CohereFormat
    from .gemini import GeminiFormat
    from .openai import OpenAIFormat

    formats = (OpenAIFormat(), AzureFormat(), AnthropicFormat(), GeminiFormat(), BedrockFormat(), CohereFormat())
    return {fmt.name: fmt for fmt in formats}


FORMATS: dict[str, WireFormat] = _registry()
