"""The Anthropic Messages API: `/v1/messages` and `/v1/messages/count_tokens`, also the body of InvokeModel on Bedrock.

Read: the top-level `system` (a string or text blocks), every message's content (a string or blocks: text,
documents given as text, search results, thinking, tool-use input, tool results and the blocks inside them) and
tool definitions. Images and binary documents are non-text parts. Errors take Anthropic's shape, which the
`anthropic` SDK turns into `BadRequestError` (400), `ServiceUnavailableError` (503) and friends::

    fmt = FORMATS["anthropic"]
    fmt.extract("/v1/messages", {"model": "claude", "max_tokens": 9, "messages": [{"role": "user", "content": "hi"}]})
"""

from __future__ import annotations

import json
import re
from typing import Any

from ..extract import Collector, as_list, as_object
from ..refusal import Refusal
from . import WireFormat, json_bytes, known_role, with_request_id
from .answers import Piece, StreamReader, json_or_none, unreadable

# Top-level keys that carry no text the model reads; `anthropic_version` and `anthropic_beta` are how the same
# body is sent to Bedrock's InvokeModel. `mcp_servers` is absent on purpose: the tools it brings are fetched by
# the provider (unscannable here) and its entries hold authorization tokens that must not reach the scanner.
_PLAIN_KEYS = frozenset(
    """model max_tokens stream stop_sequences temperature top_k top_p metadata tool_choice thinking service_tier
    container context_management inference_geo anthropic_version anthropic_beta""".split()
)
_BODY_KEYS = _PLAIN_KEYS | {"messages", "system", "tools", "output_format", "output_config"}
_MESSAGE_KEYS = frozenset({"role", "content"})
# `system` messages are in the SDK's MessageParam beside the top-level `system`.
ROLES = frozenset({"user", "assistant", "system"})
# Tool-use ids as the API generates them (client and server tools; the Vertex and Bedrock spellings); any other
# value is judged.
ID_SYNTAX = re.compile(r"(?:srvtoolu|toolu|toolu_vrtx|toolu_bdrk)_01[A-Za-z0-9]{22}")
_BLOCK_KEYS = {
    "text": {"text", "citations"},
    "image": {"source", "transformations"},
    "document": {"source", "citations", "context", "title"},
    "search_result": {"content", "source", "title", "citations"},
    "thinking": {"thinking", "signature"},
    "redacted_thinking": {"data"},
    "tool_use": {"id", "input", "name", "caller", "toolset_name"},
    "server_tool_use": {"id", "input", "name", "caller"},
    "tool_result": {"tool_use_id", "content", "is_error", "toolset_name"},
}
_BLOCK_KEYS = {kind: frozenset(keys | {"type", "cache_control"}) for kind, keys in _BLOCK_KEYS.items()}
_CACHE_CONTROL_KEYS = frozenset({"type", "ttl"})
_SOURCE_KEYS = {
    "base64": frozenset({"type", "media_type", "data"}),
    "text": frozenset({"type", "media_type", "data"}),
    "url": frozenset({"type", "url"}),
    "file": frozenset({"type", "file_id"}),
    "content": frozenset({"type", "content"}),
}


def _source(block: dict, where: str, role: str | None, collector: Collector) -> None:
    """An image or document `source`: plain text is scanned, nested content blocks are walked, inline bytes are
    read by type and content (a text file typed as anything is still text); URLs and uploaded files are non-text."""
    at = f"{where}.source"
    source = as_object(block.get("source"), at)
    kind = source.get("type")
    keys = _SOURCE_KEYS.get(kind)
    if keys is None:
        collector.unknown(source, f"{at}.type", f"source type {kind!r} is not known")
        return
    collector.keys(source, keys, f"{at}.")
    if kind == "text":
        collector.document(source.get("data"), f"{at}.data", role, source.get("media_type"))
    elif kind == "content":
        _content(source.get("content"), f"{at}.content", role, collector)
    elif kind == "base64":
        collector.file(source.get("data"), f"{at}.data", role, source.get("media_type"))
    else:
        collector.binary(where)


def _block(block: Any, where: str, role: str | None, collector: Collector) -> None:
    block = as_object(block, where)
    kind = block.get("type")
    keys = _BLOCK_KEYS.get(kind)
    if keys is None:
        collector.unknown(block, f"{where}.type", f"content block type {kind!r} is not known")
        return
    collector.keys(block, keys, f"{where}.")
    if block.get("cache_control") is not None:
        collector.keys(as_object(block["cache_control"], f"{where}.cache_control"), _CACHE_CONTROL_KEYS,
                       f"{where}.cache_control.")
    if kind == "text":
        collector.text(block.get("text"), f"{where}.text", role)
        if block.get("citations") is not None:
            # Cited passages are quoted back to the model in later turns.
            collector.strings(block["citations"], f"{where}.citations", role)
    elif kind == "image":
        _source(block, where, role, collector)
    elif kind == "document":
        collector.text(block.get("title"), f"{where}.title", role)
        collector.text(block.get("context"), f"{where}.context", role)
        _source(block, where, role, collector)
    elif kind == "search_result":
        collector.text(block.get("title"), f"{where}.title", role)
        collector.text(block.get("source"), f"{where}.source", role)
        _content(block.get("content"), f"{where}.content", role, collector)
    elif kind == "thinking":
        collector.text(block.get("thinking"), f"{where}.thinking", role)
    elif kind == "redacted_thinking":
        # Encrypted by the provider and verified by it on return: no text a client could have written.
        return
    elif kind in ("tool_use", "server_tool_use"):
        collector.identifier(block.get("id"), f"{where}.id", role, ID_SYNTAX)
        collector.text(block.get("name"), f"{where}.name", role)
        collector.text(block.get("toolset_name"), f"{where}.toolset_name", role)
        collector.strings(block.get("caller"), f"{where}.caller", role)
        collector.strings(block.get("input"), f"{where}.input", role)
    else:  # tool_result
        collector.identifier(block.get("tool_use_id"), f"{where}.tool_use_id", "tool", ID_SYNTAX)
        collector.text(block.get("toolset_name"), f"{where}.toolset_name", "tool")
        content = block.get("content")
        if isinstance(content, str) or content is None:
            collector.text(content, f"{where}.content", "tool")
        else:
            _content(content, f"{where}.content", "tool", collector)


def _content(content: Any, where: str, role: str | None, collector: Collector) -> None:
    """A string, or a list of content blocks."""
    if isinstance(content, str) or content is None:
        collector.text(content, where, role)
        return
    for index, block in enumerate(as_list(content, where)):
        _block(block, f"{where}[{index}]", role, collector)


def messages(body: dict, collector: Collector) -> None:
    """The Messages API body (also count_tokens, and Anthropic bodies on Bedrock InvokeModel)."""
    collector.keys(body, _BODY_KEYS, "")
    _content(body.get("system"), "system", "system", collector)
    for index, message in enumerate(as_list(body.get("messages"), "messages")):
        where = f"messages[{index}]"
        message = as_object(message, where)
        collector.keys(message, _MESSAGE_KEYS, f"{where}.")
        role = known_role(message.get("role"), ROLES, f"{where}.role")
        _content(message.get("content"), f"{where}.content", role, collector)
    for index, tool in enumerate(as_list(body.get("tools") or [], "tools")):
        # Names, descriptions and input schemas are all read by the model.
        collector.strings(as_object(tool, f"tools[{index}]"), f"tools[{index}]", "tools")
    for key in ("output_format", "output_config"):
        if body.get(key) is not None:
            collector.strings(body[key], key, "response_format")


# --- answers (the output guard) -------------------------------------------------------------------------------

# Blocks whose text the model wrote, by type: the field holding it, and whether it is a tool call.
_TEXT_BLOCKS = {"text": "text", "thinking": "thinking"}
_TOOL_BLOCKS = frozenset({"tool_use", "server_tool_use"})
# Stream deltas, by type: the field holding the text and whether it is a tool call's input. signature_delta
# (a signature over thinking) and citations_delta (pointers into the request's documents) hold no model text.
_DELTAS = {"text_delta": ("text", False), "thinking_delta": ("thinking", False),
           "input_json_delta": ("partial_json", True)}
_SILENT_DELTAS = frozenset({"signature_delta", "citations_delta"})
# Events that carry no answer text (message_start's content is always empty; an error event is the provider's).
_SILENT_EVENTS = frozenset({"message_start", "message_delta", "message_stop", "content_block_stop", "ping", "error"})


def _block_pieces(block: Any, where: str) -> list[Piece]:
    if not isinstance(block, dict):
        return []
    kind = block.get("type")
    if kind in _TEXT_BLOCKS and isinstance(block.get(_TEXT_BLOCKS[kind]), str):
        return [Piece(where, block[_TEXT_BLOCKS[kind]])]
    if kind in _TOOL_BLOCKS:
        pieces = [Piece(where, block["name"], tool=True)] if isinstance(block.get("name"), str) else []
        if block.get("input"):  # a stream's content_block_start has `{}`: the input follows in deltas
            pieces.append(Piece(where, json.dumps(block["input"], ensure_ascii=False), tool=True))
        return pieces
    return []


def message_pieces(answer: Any) -> list[Piece]:
    """The pieces of a plain Messages answer (also Bedrock's InvokeModel answer for Anthropic models)."""
    content = answer.get("content") if isinstance(answer, dict) else None
    return [piece for index, block in enumerate(content if isinstance(content, list) else [])
            for piece in _block_pieces(block, f"content[{index}]")]


class MessagesStream(StreamReader):
    """Messages events (`event: content_block_delta` ...); Bedrock's InvokeModelWithResponseStream carries the
    same events for Anthropic models."""

    def feed(self, event: str | None, data: str) -> list[Piece]:
        if event in _SILENT_EVENTS or not data.strip():
            return []
        payload = json_or_none(data)
        if not isinstance(payload, dict):
            return unreadable(data)
        where = f"content[{payload.get('index')}]"
        if event == "content_block_start":
            return _block_pieces(payload.get("content_block"), where)
        if event == "content_block_delta":
            delta = payload.get("delta") if isinstance(payload.get("delta"), dict) else {}
            if delta.get("type") in _SILENT_DELTAS:
                return []
            field, tool = _DELTAS.get(delta.get("type"), (None, False))
            if field is not None and isinstance(delta.get(field), str):
                return [Piece(where, delta[field], tool=tool)]
        return unreadable(data)  # an event or delta type this reader does not know: judged as it is


class AnthropicFormat(WireFormat):
    name = "anthropic"
    endpoints = (
        (re.compile(r"/v1/messages(/count_tokens)?$"), messages),
    )

    def answer_kind(self, method: str, path: str) -> str:
        if path.endswith("/count_tokens") or re.search(r"/v1/models(/[^/]+)?$", path):
            return "none"
        return "read" if method == "POST" and path.endswith("/v1/messages") else "unread"

    def answer_pieces(self, path: str, answer: Any) -> list[Piece]:
        return message_pieces(answer)

    def stream_reader(self, path: str) -> StreamReader:
        return MessagesStream()

    def stream_error(self, path: str, refusal: Refusal, request_id: str) -> tuple[str | None, bytes]:
        """`event: error`: the anthropic SDK raises an APIStatusError on it while iterating."""
        return "error", self.error_body(refusal, request_id)[1]

    def error_kind(self, status: int) -> str:
        # 529 is Anthropic's own "overloaded"; every other status keeps the shared vocabulary.
        return "overloaded_error" if status == 529 else super().error_kind(status)

    def error_body(self, refusal: Refusal, request_id: str) -> tuple[list[tuple[str, str]], bytes]:
        """Anthropic's error envelope; `details.error_code` is what the SDK exposes as `error.error_code`, and
        `request-id` is the header it reads into `error.request_id`."""
        payload = {
            "type": "error",
            "error": {"type": self.error_kind(refusal.status), "message": with_request_id(refusal, request_id),
                      "details": {"error_code": refusal.code}},
            "request_id": request_id,
        }
        return [("Content-Type", "application/json"), ("request-id", request_id)], json_bytes(payload)
