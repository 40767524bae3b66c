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

import re
from typing import Any

from ..extract import Collector, as_list, as_object
from ..refusal import Refusal
from . import WireFormat, json_bytes, known_role, with_request_id

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
