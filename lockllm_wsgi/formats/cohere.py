"""Cohere: Chat v1 (`/v1/chat`) and v2 (`/v2/chat`), Embed and Rerank (v1 and v2).

Read, in v1: `message`, `preamble`, every `chat_history` turn (message, tool calls, tool results), `documents`,
`tool_results` and tool definitions; in v2: every message's content (a string or text, thinking and document
parts), tool calls and tool plans, `documents` and tools. Embed `texts` and inputs, rerank `query` and
`documents` too; images are non-text parts. Errors take Cohere's shape, `{"id": ..., "message": ...}`, which the
`cohere` SDK raises as `BadRequestError` (400) or `ServiceUnavailableError` (503) with the body attached::

    fmt = FORMATS["cohere"]
    fmt.extract("/v2/chat", {"model": "command-a", "messages": [{"role": "user", "content": "hi"}]})
"""

from __future__ import annotations

import json
import re
from typing import Any, Iterator

from ..extract import Collector, as_list, as_object
from ..refusal import Refusal
from . import WireFormat, json_bytes, known_role, with_request_id
from .answers import (CutEnding, Fact, Framing, JSONLines, JSONStreamReader, Piece, SSEEvents, StreamReader,
                      Transcript, unreadable)

# Keys with no text the model reads. `connectors` and `conversation_id` make Cohere fetch text itself (web
# search, stored history): the gateway cannot scan what it never sees, as with OpenAI's stored responses.
_SAMPLING = frozenset("model stream temperature max_tokens k p seed stop_sequences frequency_penalty "
                      "presence_penalty safety_mode priority logprobs".split())
_V1_CHAT_KEYS = _SAMPLING | frozenset(
    """message preamble chat_history conversation_id prompt_truncation connectors search_queries_only documents
    citation_quality max_input_tokens raw_prompting return_prompt tools tool_results force_single_step
    response_format accepts""".split()
)
_V2_CHAT_KEYS = _SAMPLING | frozenset(
    "messages documents tools strict_tools citation_options response_format tool_choice thinking return_prompt".split()
)
_EMBED_KEYS = frozenset("model texts images inputs input_type embedding_types truncate output_dimension max_tokens "
                        "priority".split())
_RERANK_KEYS = frozenset("model query documents top_n rank_fields return_documents max_chunks_per_doc "
                         "max_tokens_per_doc priority".split())
# v1 history roles are upper case; the gateway reports them as the v2 roles.
_V1_ROLES = {"USER": "user", "CHATBOT": "assistant", "SYSTEM": "system", "TOOL": "tool"}
V2_ROLES = frozenset({"user", "assistant", "system", "tool"})


def _free_form(body: dict, keys: tuple[str, ...], role: str, collector: Collector) -> None:
    """Fields whose every string the model reads (documents, tool definitions and results, schemas)."""
    for key in keys:
        if body.get(key) is not None:
            collector.strings(body[key], key, role)


def _v1_chat(body: dict, collector: Collector) -> None:
    collector.keys(body, _V1_CHAT_KEYS, "")
    collector.text(body.get("preamble"), "preamble", "system")
    for index, turn in enumerate(as_list(body.get("chat_history") or [], "chat_history")):
        where = f"chat_history[{index}]"
        turn = as_object(turn, where)
        collector.keys(turn, frozenset({"role", "message", "tool_calls", "tool_results"}), f"{where}.")
        role = _V1_ROLES[known_role(turn.get("role"), frozenset(_V1_ROLES), f"{where}.role")]
        collector.text(turn.get("message"), f"{where}.message", role)
        collector.strings(turn.get("tool_calls"), f"{where}.tool_calls", role)
        collector.strings(turn.get("tool_results"), f"{where}.tool_results", "tool")
    collector.text(body.get("message"), "message", "user")
    _free_form(body, ("documents",), "document", collector)
    _free_form(body, ("tool_results",), "tool", collector)
    _free_form(body, ("tools",), "tools", collector)
    _free_form(body, ("response_format",), "response_format", collector)


_PART_FIELDS = {"text": "text", "thinking": "thinking", "document": "document", "image_url": "image_url"}


def _content(content: Any, where: str, role: str, collector: Collector) -> None:
    """A v2 message's content: a string, or a list of typed parts."""
    if isinstance(content, str) or content is None:
        collector.text(content, where, role)
        return
    for index, part in enumerate(as_list(content, where)):
        at = f"{where}[{index}]"
        part = as_object(part, at)
        kind = part.get("type")
        # Only the part's own field beside its type: any other key is text nobody scanned.
        if kind in _PART_FIELDS:
            collector.keys(part, frozenset({"type", _PART_FIELDS[kind]}), f"{at}.")
        if kind == "text":
            collector.text(part.get("text"), f"{at}.text", role)
        elif kind == "thinking":
            collector.text(part.get("thinking"), f"{at}.thinking", role)
        elif kind == "document":
            collector.strings(part.get("document"), f"{at}.document", role)
        elif kind == "image_url":
            image = part.get("image_url")
            if isinstance(image, dict):
                collector.keys(image, frozenset({"url", "detail"}), f"{at}.image_url.")
                collector.url(image.get("url"), f"{at}.image_url.url", role)
            else:
                collector.url(image, f"{at}.image_url", role)
        else:
            collector.unknown(part, f"{at}.type", f"content part type {kind!r} is not known")


def _tool_calls(calls: Any, where: str, role: str, collector: Collector) -> None:
    """v2 tool calls: the id and name as text, the arguments as the JSON text the model wrote (decoded too)."""
    for index, call in enumerate(as_list(calls or [], where)):
        at = f"{where}[{index}]"
        call = as_object(call, at)
        collector.keys(call, frozenset({"id", "type", "function"}), f"{at}.")
        collector.identifier(call.get("id"), f"{at}.id", role, None)
        function = as_object(call.get("function") or {}, f"{at}.function")
        collector.keys(function, frozenset({"name", "arguments"}), f"{at}.function.")
        collector.text(function.get("name"), f"{at}.function.name", role)
        collector.json_text(function.get("arguments"), f"{at}.function.arguments", role)


def _v2_chat(body: dict, collector: Collector) -> None:
    collector.keys(body, _V2_CHAT_KEYS, "")
    for index, message in enumerate(as_list(body.get("messages"), "messages")):
        where = f"messages[{index}]"
        message = as_object(message, where)
        collector.keys(message, frozenset({"role", "content", "tool_calls", "tool_plan", "tool_call_id", "citations"}),
                   f"{where}.")
        role = known_role(message.get("role"), V2_ROLES, f"{where}.role")
        _content(message.get("content"), f"{where}.content", role, collector)
        collector.text(message.get("tool_plan"), f"{where}.tool_plan", role)
        # Cohere's call ids embed the tool's name (any text), so no syntax makes one safe to skip: all are judged.
        collector.identifier(message.get("tool_call_id"), f"{where}.tool_call_id", role, None)
        _tool_calls(message.get("tool_calls"), f"{where}.tool_calls", role, collector)
        collector.strings(message.get("citations"), f"{where}.citations", role)
    _free_form(body, ("documents",), "document", collector)
    _free_form(body, ("tools",), "tools", collector)
    _free_form(body, ("response_format",), "response_format", collector)


def _embed(body: dict, collector: Collector) -> None:
    collector.keys(body, _EMBED_KEYS, "")
    for index, text in enumerate(as_list(body.get("texts") or [], "texts")):
        collector.text(text, f"texts[{index}]", "user")
    for index, image in enumerate(as_list(body.get("images") or [], "images")):
        collector.url(image, f"images[{index}]", "user")
    for index, item in enumerate(as_list(body.get("inputs") or [], "inputs")):
        where = f"inputs[{index}]"
        collector.keys(as_object(item, where), frozenset({"content"}), f"{where}.")
        _content(as_object(item, where).get("content"), f"{where}.content", "user", collector)


def _rerank(body: dict, collector: Collector) -> None:
    collector.keys(body, _RERANK_KEYS, "")
    collector.text(body.get("query"), "query", "user")
    _free_form(body, ("documents",), "document", collector)


# --- answers (the output guard) -------------------------------------------------------------------------------

_CHAT = re.compile(r"^/v[12]/chat$")
_NO_ANSWER_TEXT = re.compile(r"^/v[12]/(embed|rerank|tokenize|detokenize|models(/[^/]+)?)$")
# Events that carry no model text: the stream's start and end, citations (pointers into the request's documents),
# search queries and results (the connector's documents), debug output.
_V1_SILENT = frozenset({"stream-start", "citation-generation", "search-queries-generation", "search-results",
                        "debug"})
_V2_SILENT = frozenset({"message-start", "content-end", "tool-call-end", "citation-start", "citation-end",
                        "message-end", "debug"})
# The longest line the cohere SDK's v2 stream reader buffers without a newline before it raises `SSEError`
# (`cohere.core.http_sse._api.MAX_LINE_SIZE`, 1 MiB in cohere 7.3). Its only way to raise mid-stream, whatever
# the server: it yields Cohere's error events as ordinary events and ends quietly on a clean end.
SDK_MAX_LINE_CHARS = 1024 * 1024
# After a cut v2 stream's error event: an SSE comment line left unfinished and longer than that limit. SSE readers
# ignore comments and drop an unfinished line at the end, so the error event stays the last event anyone reads;
# the cohere SDK raises on it. Sent once per cut stream, never otherwise.
_V2_CUT_TRAILER = (b": the gateway's output guard cut this stream; the event above says why. This comment is left "
                   b"unfinished and longer than the cohere SDK reads, so that the SDK raises rather than ending "
                   b"quietly ").ljust(SDK_MAX_LINE_CHARS + 1, b".")


def _dict(value: Any, *keys: str) -> dict:
    """value[key1][key2]... where each is an object; {} where one is not."""
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    return value if isinstance(value, dict) else {}


def _v1_facts(response: Any) -> Iterator[Fact]:
    """A v1 answer's text and tool calls (name and parameters: what the app's tools receive)."""
    if isinstance(response, dict) and isinstance(response.get("text"), str):
        yield "text", "text", response["text"], False
    calls = response.get("tool_calls") if isinstance(response, dict) else None
    for index, call in enumerate(calls if isinstance(calls, list) else []):
        if isinstance(call, dict):
            yield f"tool_calls[{index}]", "call", f"{call.get('name', '')}{json.dumps(call.get('parameters'))}", True


def _v2_pieces(message: Any) -> list[Piece]:
    """A v2 answer's message: text and thinking parts, the tool plan, tool calls (name and arguments)."""
    pieces = []
    content = message.get("content") if isinstance(message, dict) else None
    for index, part in enumerate(content if isinstance(content, list) else []):
        for field in ("text", "thinking"):
            if isinstance(part, dict) and isinstance(part.get(field), str):
                pieces.append(Piece(f"content[{index}]", part[field]))
    if isinstance(message, dict) and isinstance(message.get("tool_plan"), str):
        pieces.append(Piece("tool_plan", message["tool_plan"]))
    calls = message.get("tool_calls") if isinstance(message, dict) else None
    for index, call in enumerate(calls if isinstance(calls, list) else []):
        function = _dict(call, "function")
        pieces += [Piece(f"tool_calls[{index}]", function[field], tool=True) for field in ("name", "arguments")
                   if isinstance(function.get(field), str)]
    return pieces


class _V1Stream(JSONStreamReader):
    """v1 events (`event_type`), one JSON object a line or as server-sent events. `tool-calls-generation` and
    `stream-end` repeat what the deltas carried: only what they add is judged."""

    def __init__(self) -> None:
        self._transcript = Transcript()
        self._calls: dict[int, str] = {}

    def read(self, event: str | None, payload: dict, data: str) -> list[Piece]:
        kind = payload.get("event_type")
        if kind in _V1_SILENT:
            return []
        if kind == "text-generation" and isinstance(payload.get("text"), str):
            return [self._transcript.delta("text", "text", payload["text"])]
        if kind == "tool-calls-chunk":
            delta = _dict(payload, "tool_call_delta")
            pieces = [self._transcript.delta("tool_plan", "text", delta["text"])] if isinstance(
                delta.get("text"), str) else []
            channel = f"tool_calls[{delta.get('index', 0)}]"
            return pieces + [self._transcript.delta(channel, "call", delta[field], tool=True)
                             for field in ("name", "parameters") if isinstance(delta.get(field), str)]
        if kind == "tool-calls-generation":
            return self._transcript.settle(_v1_facts({"tool_calls": payload.get("tool_calls")}))
        if kind == "stream-end":
            return self._transcript.settle(_v1_facts(payload.get("response")))
        return unreadable(data)  # an event this reader does not know: judged as it is


class _V2Stream(JSONStreamReader):
    """v2 server-sent events, named as their `type`; deltas only, nothing repeated."""

    def read(self, event: str | None, payload: dict, data: str) -> list[Piece]:
        kind = payload.get("type", event)
        if kind in _V2_SILENT:
            return []
        message = _dict(payload, "delta", "message")
        index = payload.get("index", 0)
        if kind in ("content-start", "content-delta"):
            content = _dict(message, "content")
            return [Piece(f"content[{index}]", content[field]) for field in ("text", "thinking")
                    if isinstance(content.get(field), str)]
        if kind == "tool-plan-delta" and isinstance(message.get("tool_plan"), str):
            return [Piece("tool_plan", message["tool_plan"])]
        if kind in ("tool-call-start", "tool-call-delta"):
            function = _dict(message, "tool_calls", "function")
            return [Piece(f"tool_calls[{index}]", function[field], tool=True) for field in ("name", "arguments")
                    if isinstance(function.get(field), str)]
        return unreadable(data)


class CohereFormat(WireFormat):
    name = "cohere"
    endpoints = (
        (re.compile(r"^/v1/chat$"), _v1_chat),
        (re.compile(r"^/v2/chat$"), _v2_chat),
        (re.compile(r"^/v[12]/embed$"), _embed),
        (re.compile(r"^/v[12]/rerank$"), _rerank),
    )

    def error_body(self, refusal: Refusal, request_id: str) -> tuple[list[tuple[str, str]], bytes]:
        return [("Content-Type", "application/json")], json_bytes(
            {"id": request_id, "message": with_request_id(refusal, request_id)})

    def answer_kind(self, method: str, path: str) -> str:
        if _NO_ANSWER_TEXT.search(path):
            return "none"
        return "read" if method == "POST" and _CHAT.search(path) else "unread"

    def answer_pieces(self, path: str, answer: Any) -> list[Piece]:
        if path.startswith("/v1/"):
            return [Piece(channel, text, tool) for channel, _, text, tool in _v1_facts(answer)]
        return _v2_pieces(answer.get("message") if isinstance(answer, dict) else None)

    def stream_framing(self, path: str, content_type: str) -> Framing | None:
        """v2 streams server-sent events; v1 one JSON object a line (`application/stream+json`), or server-sent
        events when asked for them."""
        if content_type.startswith("text/event-stream"):
            return SSEEvents()
        return JSONLines() if any(kind in content_type for kind in ("stream+json", "ndjson", "jsonl")) else None

    def stream_reader(self, path: str) -> StreamReader:
        return _V1Stream() if path.startswith("/v1/") else _V2Stream()

    def stream_error(self, path: str, refusal: Refusal, request_id: str) -> tuple[str | None, bytes]:
        """Cohere's own end of a failed generation: v2 `message-end` with `finish_reason` ERROR and its documented
        `delta.error` message; v1 `stream-end` with `finish_reason` ERROR (and the refusal beside it). The cohere
        SDK yields it as an ordinary event (it raises on no in-band event), so a caller that checks the finish
        reason, as Cohere documents, reads why; `stream_cut_ending` then makes the SDK raise."""
        message = f"{refusal.code}: {with_request_id(refusal, request_id)}"
        if path.startswith("/v1/"):
            return None, json_bytes({"is_finished": True, "event_type": "stream-end", "finish_reason": "ERROR",
                                     "response": {"text": "", "generation_id": None, "finish_reason": "ERROR"},
                                     "error": message})
        return "message-end", json_bytes({"type": "message-end", "delta": {"finish_reason": "ERROR",
                                                                         "error": message}})

    def stream_cut_ending(self, path: str) -> CutEnding:
        """v2: a line longer than the SDK reads, on which it raises `SSEError` under any server. v1: the SDK reads
        lines with no limit and skips what it cannot parse, so only a dropped connection makes it raise (httpx's
        `RemoteProtocolError`, the chunked body incomplete), where the server can drop one (app.py)."""
        if path.startswith("/v1/"):
            return CutEnding(drop_connection=True)
        return CutEnding(trailer=_V2_CUT_TRAILER)
