"""Wire formats: one module per provider API, each knowing where the text is and how its errors look.

A format is a `WireFormat`: a table of the endpoints whose bodies it reads (a path pattern and a function that
walks the body into a `Collector`), and `error_body`, which renders a `Refusal` in that provider's error shape so
its SDK raises its native exception::

    fmt = FORMATS["openai"]
    collector = fmt.extract("/v1/chat/completions", body)
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any, Callable, Mapping

from ..extract import Collector, UnknownShape
from ..refusal import Refusal

if TYPE_CHECKING:
    from ..config import Route

Walker = Callable[[dict, Collector], None]


class WireFormat:
    """Base: subclasses fill `name`, `endpoints` and `error_body`."""

    name = ""
    # (compiled path pattern, walker): the first pattern that matches the path after the route prefix wins.
    endpoints: tuple[tuple[re.Pattern, Walker], ...] = ()

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

    def error_body(self, refusal: Refusal, request_id: str) -> tuple[list[tuple[str, str]], bytes]:
        raise NotImplementedError

    def upstream_headers(self, route: "Route", method: str, url: str, headers: dict[str, str],
                         body: bytes) -> dict[str, str]:
        """The headers sent upstream; a format whose provider authenticates per request (SigV4) re-signs here."""
        return headers


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
