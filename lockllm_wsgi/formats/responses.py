"""The OpenAI Responses API's answers (`/v1/responses`, also Azure's and the OpenAI-compatible hosts'), for the
output guard: the `output` items of a plain answer, and the typed events of a stream.

Channels follow the answer's own structure: `output[0].content[1]` (a message's text or refusal part),
`output[2].summary[0]` (a reasoning summary), `output[3]` (a function, custom, MCP or code-interpreter call: its
name and arguments, as one tool text). A stream's `*.delta` events add to their channel; the events that repeat
the whole text (`*.done`, `response.output_item.done`, `response.completed`...) add only what the deltas did not
already carry, so a provider cannot show the SDK's final `response` a text its deltas never held::

    reader = ResponsesStream()
    reader.feed("response.output_text.delta", '{"output_index": 0, "content_index": 0, "delta": "Hel"}')
"""

from __future__ import annotations

import json
from typing import Any, Iterator

from .answers import Fact, JSONStreamReader, Piece, Transcript, unreadable

# Output items by type: the fields holding what the model wrote for a tool to run.
_TOOL_ITEMS = {
    "function_call": ("name", "arguments"),
    "custom_tool_call": ("name", "input"),
    "mcp_call": ("name", "arguments"),
    "mcp_approval_request": ("name", "arguments"),
    "code_interpreter_call": ("code",),
}
# Items with no model-written text: hosted tools' progress and results (search results are documents, not the
# model's words; an image is base64), and an MCP server's tool list.
_SILENT_ITEMS = frozenset({"web_search_call", "file_search_call", "image_generation_call", "mcp_list_tools"})
# A message's or reasoning item's parts by type, and the field holding the text.
_PART_TEXT = {"output_text": "text", "text": "text", "refusal": "refusal", "reasoning_text": "text",
              "summary_text": "text"}
# Delta events by type: the field of the whole text they build, and whether it goes to a tool.
_DELTAS = {
    "response.output_text.delta": ("text", False),
    "response.refusal.delta": ("refusal", False),
    "response.reasoning_text.delta": ("text", False),
    "response.reasoning_summary_text.delta": ("text", False),
    "response.audio.transcript.delta": ("transcript", False),
    "response.function_call_arguments.delta": ("arguments", True),
    "response.custom_tool_call_input.delta": ("input", True),
    "response.mcp_call_arguments.delta": ("arguments", True),
    "response.code_interpreter_call_code.delta": ("code", True),
}
# `*.done` events repeat a whole text in one of these fields.
_DONE_FIELDS = {"text": False, "refusal": False, "transcript": False, "arguments": True, "input": True, "code": True}
# Events that carry no model text: the provider's error, audio and image bytes, citations of search results.
_SILENT_EVENTS = frozenset({"error", "response.audio.delta", "response.image_generation_call.partial_image",
                            "response.output_text.annotation.added"})
# Keys that locate or count an event: an event with nothing else (a hosted tool's progress) holds no text.
# `obfuscation` is random padding OpenAI adds to deltas against length side channels.
_BOOKKEEPING = frozenset({"type", "item_id", "output_index", "content_index", "summary_index", "sequence_number",
                          "response_id", "obfuscation"})


def _item_facts(item: Any, where: str) -> Iterator[Fact]:
    if not isinstance(item, dict):
        return
    kind = item.get("type")
    if kind in _TOOL_ITEMS:
        for field in _TOOL_ITEMS[kind]:
            if isinstance(item.get(field), str):
                yield where, field, item[field], True
    elif kind in ("message", "reasoning"):
        for key in ("content", "summary"):
            parts = item.get(key)
            for index, part in enumerate(parts if isinstance(parts, list) else []):
                yield from _part_facts(part, f"{where}.{key}[{index}]")
    elif kind not in _SILENT_ITEMS:
        # An item type this reader does not know: its whole JSON is judged.
        yield where, "item", json.dumps(item, ensure_ascii=False), False


def _part_facts(part: Any, where: str) -> Iterator[Fact]:
    if isinstance(part, dict):
        field = _PART_TEXT.get(part.get("type"))
        if field is not None and isinstance(part.get(field), str):
            yield where, field, part[field], False


def _output_facts(response: Any) -> Iterator[Fact]:
    output = response.get("output") if isinstance(response, dict) else None
    for index, item in enumerate(output if isinstance(output, list) else []):
        yield from _item_facts(item, f"output[{index}]")


def answer_pieces(answer: Any) -> list[Piece]:
    """The pieces of a plain Responses answer (`{"object": "response", "output": [...]}`)."""
    return [Piece(channel, text, tool) for channel, _, text, tool in _output_facts(answer)]


def _channel(event: dict) -> str:
    where = f"output[{event.get('output_index')}]" if "output_index" in event else "audio"
    if "summary_index" in event:
        return f"{where}.summary[{event['summary_index']}]"
    if "content_index" in event:
        return f"{where}.content[{event['content_index']}]"
    return where


class ResponsesStream(JSONStreamReader):
    """Typed events (`event: response.output_text.delta` and `data: {"type": ...}`)."""

    def __init__(self) -> None:
        self._transcript = Transcript()

    def read(self, event: str | None, payload: dict, data: str) -> list[Piece]:
        kind = payload.get("type", event)
        if kind in _SILENT_EVENTS:
            return []
        if kind in _DELTAS:
            field, tool = _DELTAS[kind]
            delta = payload.get("delta")
            if not isinstance(delta, str):
                return unreadable(data)
            return [self._transcript.delta(_channel(payload), field, delta, tool)]
        if isinstance(payload.get("response"), dict):  # response.created, .in_progress, .completed, .failed...
            return self._transcript.settle(_output_facts(payload["response"]))
        if "item" in payload:  # response.output_item.added / .done
            return self._transcript.settle(_item_facts(payload["item"], f"output[{payload.get('output_index')}]"))
        if "part" in payload:  # response.content_part.* and response.reasoning_summary_part.*
            return self._transcript.settle(_part_facts(payload["part"], _channel(payload)))
        done = [(_channel(payload), field, payload[field], tool) for field, tool in _DONE_FIELDS.items()
                if isinstance(payload.get(field), str)]
        if done:
            return self._transcript.settle(done)
        if set(payload) <= _BOOKKEEPING:
            return []
        return unreadable(data)  # an event this reader does not know: judged as it is
