"""The OpenAI wire format: chat completions, the Responses API, legacy completions and embeddings.

Every role's messages are read (system, developer, user, assistant, tool), with content as a string or a list of
parts, tool-call arguments, tool and response-schema descriptions; the Responses API's `instructions` and `input`
items; legacy `prompt` strings. Token-id prompts are refused: they cannot be scanned as text. Errors take OpenAI's
shape, which `openai` turns into `BadRequestError` and friends::

    {"error": {"message": "...", "type": "invalid_request_error", "param": null, "code": "..."}}
"""

from __future__ import annotations

import re

from ..extract import Collector, UnknownShape, as_list, as_object
from ..refusal import Refusal
from . import Walker, WireFormat, check_keys, json_bytes, with_request_id

# Top-level keys that carry no text the model reads (sampling, routing, bookkeeping). Any other key is unknown
# and refused, so a field added to the API later cannot smuggle text past the scanner.
_PLAIN_KEYS = frozenset(
    """model stream stream_options temperature top_p n stop max_tokens max_completion_tokens presence_penalty
    frequency_penalty logit_bias logprobs top_logprobs user seed service_tier parallel_tool_calls store metadata
    reasoning_effort reasoning modalities audio web_search_options prompt_cache_key safety_identifier verbosity
    tool_choice function_call truncation include previous_response_id background max_output_tools max_tool_calls
    max_output_tokens text_format echo best_of suffix encoding_format dimensions conversation""".split()
    # Sampling knobs of the OpenAI-compatible hosts in presets.py (Mistral, Together, vLLM, Ollama...).
    + "random_seed safe_prompt prompt_mode top_k min_p repetition_penalty".split()
)

_TEXT_PART_TYPES = {"text": "text", "input_text": "text", "output_text": "text", "refusal": "refusal"}
_NON_TEXT_PART_TYPES = frozenset({"image_url", "input_image", "input_audio", "input_file", "file", "audio"})


def _content(content, where: str, role: str | None, collector: Collector) -> None:
    """A message's content: a string, or a list of typed parts."""
    if content is None or isinstance(content, str):
        collector.text(content, where, role)
        return
    for index, part in enumerate(as_list(content, where)):
        part_where = f"{where}[{index}]"
        part = as_object(part, part_where)
        kind = part.get("type")
        if kind in _TEXT_PART_TYPES:
            collector.text(part.get(_TEXT_PART_TYPES[kind]), f"{part_where}.{_TEXT_PART_TYPES[kind]}", role)
        elif kind in _NON_TEXT_PART_TYPES:
            collector.binary(part_where)
        else:
            raise UnknownShape(f"{part_where}.type", f"content part type {kind!r} is not known")


def _tools(tools, where: str, collector: Collector) -> None:
    """Tool definitions: names, descriptions and parameter schemas are all read by the model."""
    for index, tool in enumerate(as_list(tools, where)):
        collector.strings(as_object(tool, f"{where}[{index}]"), f"{where}[{index}]", role="tools")


def _tool_calls(calls, where: str, role: str | None, collector: Collector) -> None:
    for index, call in enumerate(as_list(calls, where)):
        call = as_object(call, f"{where}[{index}]")
        function = as_object(call.get("function") or call.get("custom") or {}, f"{where}[{index}].function")
        collector.text(function.get("name"), f"{where}[{index}].function.name", role)
        collector.text(function.get("arguments") or function.get("input"), f"{where}[{index}].function.arguments", role)


def _chat(body: dict, collector: Collector) -> None:
    check_keys(
        body, _PLAIN_KEYS | {"messages", "tools", "functions", "response_format", "prediction"}, "",
    )
    for index, message in enumerate(as_list(body.get("messages"), "messages")):
        where = f"messages[{index}]"
        message = as_object(message, where)
        role = message.get("role")
        if not isinstance(role, str):
            raise UnknownShape(f"{where}.role", "every message needs a role")
        check_keys(
            message,
            # `prefix` (Mistral) marks an assistant message the model continues: its content is read like any other.
            frozenset({"role", "content", "name", "tool_calls", "function_call", "tool_call_id", "refusal", "audio",
                       "prefix"}),
            f"{where}.",
        )
        _content(message.get("content"), f"{where}.content", role, collector)
        collector.text(message.get("refusal"), f"{where}.refusal", role)
        if message.get("tool_calls") is not None:
            _tool_calls(message["tool_calls"], f"{where}.tool_calls", role, collector)
        if message.get("function_call") is not None:
            call = as_object(message["function_call"], f"{where}.function_call")
            collector.text(call.get("arguments"), f"{where}.function_call.arguments", role)
    for key in ("tools", "functions"):
        if body.get(key) is not None:
            _tools(body[key], key, collector)
    if body.get("response_format") is not None:
        collector.strings(body["response_format"], "response_format", role="response_format")
    if body.get("prediction") is not None:
        prediction = as_object(body["prediction"], "prediction")
        _content(prediction.get("content"), "prediction.content", "prediction", collector)


def _response_item(item, where: str, collector: Collector) -> None:
    """One item of the Responses API `input` list."""
    if isinstance(item, str):
        collector.text(item, where, "user")
        return
    item = as_object(item, where)
    kind = item.get("type", "message")
    if kind == "message":
        _content(item.get("content"), f"{where}.content", item.get("role"), collector)
    elif kind in ("function_call", "custom_tool_call"):
        collector.text(item.get("name"), f"{where}.name", "assistant")
        collector.text(item.get("arguments", item.get("input")), f"{where}.arguments", "assistant")
    elif kind in ("function_call_output", "custom_tool_call_output"):
        output = item.get("output")
        if isinstance(output, list):
            _content(output, f"{where}.output", "tool", collector)
        else:
            collector.text(output, f"{where}.output", "tool")
    elif kind == "reasoning":
        for index, summary in enumerate(as_list(item.get("summary") or [], f"{where}.summary")):
            collector.text(as_object(summary, f"{where}.summary[{index}]").get("text"), f"{where}.summary[{index}].text", "assistant")
    elif kind == "item_reference":
        # A reference to an item stored at the provider: its text was scanned when it was first sent.
        return
    else:
        raise UnknownShape(f"{where}.type", f"input item type {kind!r} is not known")


def _responses(body: dict, collector: Collector) -> None:
    check_keys(body, _PLAIN_KEYS | {"input", "instructions", "tools", "text", "prompt"}, "")
    collector.text(body.get("instructions"), "instructions", "system")
    value = body.get("input")
    if isinstance(value, str) or value is None:
        collector.text(value, "input", "user")
    else:
        for index, item in enumerate(as_list(value, "input")):
            _response_item(item, f"input[{index}]", collector)
    if body.get("tools") is not None:
        _tools(body["tools"], "tools", collector)
    if body.get("text") is not None:
        collector.strings(body["text"], "text", role="response_format")
    if body.get("prompt") is not None:
        # A stored prompt template's variables are text the model reads.
        collector.strings(as_object(body["prompt"], "prompt").get("variables") or {}, "prompt.variables", "user")


def _text_or_texts(value, where: str, role: str, collector: Collector) -> None:
    """Legacy `prompt` and embeddings `input`: a string or a list of strings (token ids cannot be scanned)."""
    if isinstance(value, list):
        for index, item in enumerate(value):
            if not isinstance(item, str):
                raise UnknownShape(f"{where}[{index}]", "token ids cannot be scanned; send the text instead")
            collector.text(item, f"{where}[{index}]", role)
    else:
        collector.text(value, where, role)


def _completions(body: dict, collector: Collector) -> None:
    check_keys(body, _PLAIN_KEYS | {"prompt"}, "")
    _text_or_texts(body.get("prompt"), "prompt", "user", collector)
    collector.text(body.get("suffix"), "suffix", "user")


def _embeddings(body: dict, collector: Collector) -> None:
    check_keys(body, _PLAIN_KEYS | {"input"}, "")
    _text_or_texts(body.get("input"), "input", "user", collector)


# Walkers by endpoint path suffix, in matching order (chat/completions before completions); Azure's format mounts
# the same walkers under its own paths.
ENDPOINT_WALKERS: dict[str, Walker] = {
    "chat/completions": _chat,
    "responses": _responses,
    "completions": _completions,
    "embeddings": _embeddings,
}


class OpenAIFormat(WireFormat):
    name = "openai"
    endpoints = tuple((re.compile(rf"/{suffix}$"), walk) for suffix, walk in ENDPOINT_WALKERS.items())

    def error_body(self, refusal: Refusal, request_id: str) -> tuple[list[tuple[str, str]], bytes]:
        error = {"message": with_request_id(refusal, request_id), "type": refusal.kind, "param": None,
                 "code": refusal.code}
        return [("Content-Type", "application/json")], json_bytes({"error": error})
