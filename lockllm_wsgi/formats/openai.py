"""The OpenAI wire format: chat completions, the Responses API, legacy completions and embeddings.

Every role's messages are read (system, developer, user, assistant, tool), with content as a string or a list of
parts, participant names, tool-call names, arguments and ids (ids that are plain identifiers are not scanned),
tool and response-schema descriptions, text files given inline (decoded); the Responses API's `instructions` and
`input` items (reasoning summaries and reasoning text too); legacy `prompt` strings. Every object read has known
keys only. Token-id prompts and remote MCP tools are refused: they cannot be scanned as text. Errors take OpenAI's
shape, which `openai` turns into `BadRequestError` and friends::

    {"error": {"message": "...", "type": "invalid_request_error", "param": null, "code": "..."}}
"""

from __future__ import annotations

import json
import re
from typing import Any

from ..extract import Collector, UnknownShape, as_list, as_object
from ..refusal import Refusal
from . import Walker, WireFormat, json_bytes, known_role, responses, with_request_id
from .answers import Piece, StreamReader, json_or_none, unreadable

# Top-level keys that carry no text the model reads (sampling, routing, bookkeeping). Any other key is unknown
# and refused, so a field added to the API later cannot smuggle text past the scanner.
_PLAIN_KEYS = frozenset(
    """model stream stream_options temperature top_p n stop max_tokens max_completion_tokens presence_penalty
    frequency_penalty logit_bias logprobs top_logprobs user seed service_tier parallel_tool_calls store metadata
    reasoning_effort reasoning modalities audio web_search_options prompt_cache_key safety_identifier verbosity
    tool_choice function_call truncation include previous_response_id background max_output_tools max_tool_calls
    max_output_tokens text_format echo best_of encoding_format dimensions conversation""".split()
    # Sampling knobs of the OpenAI-compatible hosts in presets.py (Mistral, Together, vLLM, Ollama...).
    + "random_seed safe_prompt prompt_mode top_k min_p repetition_penalty".split()
)
# The top-level keys of each endpoint's body: the plain ones and those it reads (built once, not per request).
_CHAT_KEYS = _PLAIN_KEYS | {"messages", "tools", "functions", "response_format", "prediction"}
_RESPONSES_KEYS = _PLAIN_KEYS | {"input", "instructions", "tools", "text", "prompt"}
_COMPLETIONS_KEYS = _PLAIN_KEYS | {"prompt", "suffix"}
_EMBEDDINGS_KEYS = _PLAIN_KEYS | {"input"}

_TEXT_PART_TYPES = {"text": "text", "input_text": "text", "output_text": "text", "refusal": "refusal"}
_NON_TEXT_PART_TYPES = frozenset({"image_url", "input_image", "input_audio", "input_file", "file", "audio"})
# Every key of an object the walker reads is known: a parser that matches keys case-insensitively (Go's
# encoding/json, behind Ollama's OpenAI layer) would otherwise take `ARGUMENTS` or `TEXT` for the field we read.
_TEXT_PART_KEYS = frozenset({"type", "text", "refusal", "annotations", "logprobs", "cache_control",
                             "prompt_cache_breakpoint"})
_NON_TEXT_PART_KEYS = frozenset({"type", "image_url", "input_audio", "file", "file_id", "file_data", "file_url",
                                 "filename", "detail", "audio", "cache_control", "prompt_cache_breakpoint"})
_MESSAGE_KEYS = frozenset({"role", "content", "name", "tool_calls", "function_call", "tool_call_id", "refusal",
                           "audio", "prefix"})
CHAT_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
RESPONSES_ROLES = frozenset({"system", "developer", "user", "assistant"})
# Ids a client echoes back, skipped only in the exact syntax the OpenAI API and the OpenAI-compatible servers of
# presets.py generate (see ID_SYNTAX's sources in docs/formats.md); any other value in an id field is judged.
ID_SYNTAX = re.compile(
    r"call_[A-Za-z0-9]{24}"  # OpenAI chat tool calls and Responses call ids; Together (lower case)
    r"|(?:msg|fc|rs|ctc)_[0-9a-f]{32,64}"  # Responses item ids (32, 48 and 50 hex digits seen)
    r"|chatcmpl-tool-(?:[0-9a-f]{32}|[0-9a-f]{16})"  # vLLM (uuid4 hex, shortened to 16 in 2025)
    r"|call_[a-z0-9]{8}"  # Ollama
    r"|call_[a-z0-9]{4}"  # Groq
    r"|call_[0-9]{1,3}_(?:[A-Za-z0-9]{24}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"  # DeepSeek
    r"|[A-Za-z0-9]{9}"  # Mistral
)
_CACHE_MARKER_KEYS = frozenset({"type", "ttl", "mode"})
_FILE_KEYS = frozenset({"file_id", "file_data", "filename", "file_url"})


def _id(value, where: str, role: str | None, collector: Collector) -> None:
    collector.identifier(value, where, role, ID_SYNTAX)


def _file(file: dict, where: str, role: str | None, collector: Collector) -> None:
    """A file (`file` in chat, `input_file` in Responses): its bytes are read by type, name and content; an
    uploaded file (`file_id`) or a remote one (`file_url`) is non-text, fetched where the gateway cannot see it."""
    collector.label(file.get("filename"), f"{where}.filename", role)
    data = file.get("file_data")
    if data is None:
        collector.binary(where)
    elif isinstance(data, str) and data[:5].lower() == "data:":
        collector.url(data, f"{where}.file_data", role)
    else:
        collector.file(data, f"{where}.file_data", role, filename=file.get("filename"))


def _image(value, where: str, role: str | None, collector: Collector) -> None:
    """An image URL: a `data:` URL is read as an inline file (text inside is text), a remote URL is non-text."""
    if isinstance(value, dict):
        collector.keys(value, frozenset({"url", "detail"}), f"{where}.")
        value = value.get("url")
        where = f"{where}.url"
    collector.url(value, where, role)


def _content(content, where: str, role: str | None, collector: Collector) -> None:
    """A message's content: a string, or a list of typed parts."""
    if content is None or isinstance(content, str):
        collector.text(content, where, role)
        return
    for index, part in enumerate(as_list(content, where)):
        part_where = f"{where}[{index}]"
        part = as_object(part, part_where)
        kind = part.get("type")
        for key in ("cache_control", "prompt_cache_breakpoint"):  # cache markers: `type` and `ttl` only
            if part.get(key) is not None:
                collector.keys(as_object(part[key], f"{part_where}.{key}"), _CACHE_MARKER_KEYS, f"{part_where}.{key}.")
        if kind in _TEXT_PART_TYPES:
            collector.keys(part, _TEXT_PART_KEYS, f"{part_where}.")
            read = _TEXT_PART_TYPES[kind]
            collector.text(part.get(read), f"{part_where}.{read}", role)
            unread = "refusal" if read == "text" else "text"
            if part.get(unread) is not None:
                raise UnknownShape(f"{part_where}.{unread}", f"a {kind} part has no {unread}")
            if part.get("annotations") is not None:
                collector.strings(part["annotations"], f"{part_where}.annotations", role)
            # Log probabilities echoed back hold the tokens of an earlier answer: a template printing the part's
            # extra fields (vLLM passes them on) would show them.
            collector.strings(part.get("logprobs"), f"{part_where}.logprobs", role)
        elif kind in _NON_TEXT_PART_TYPES:
            collector.keys(part, _NON_TEXT_PART_KEYS, f"{part_where}.")
            if kind == "file":
                file = as_object(part.get("file"), f"{part_where}.file")
                collector.keys(file, _FILE_KEYS, f"{part_where}.file.")
                _file(file, f"{part_where}.file", role, collector)
            elif kind == "input_file":
                _file(part, part_where, role, collector)
            elif kind in ("image_url", "input_image") and part.get("image_url") is not None:
                _image(part["image_url"], f"{part_where}.image_url", role, collector)
            elif kind == "input_audio" and isinstance(part.get("input_audio"), dict):
                audio = part["input_audio"]
                collector.keys(audio, frozenset({"data", "format"}), f"{part_where}.input_audio.")
                collector.file(audio.get("data"), f"{part_where}.input_audio.data", role, f"audio/{audio.get('format')}")
            else:
                collector.binary(part_where)
        else:
            collector.unknown(part, f"{part_where}.type", f"content part type {kind!r} is not known")


def _tools(tools, where: str, collector: Collector) -> None:
    """Tool definitions: names, descriptions and parameter schemas are all read by the model."""
    for index, tool in enumerate(as_list(tools, where)):
        tool = as_object(tool, f"{where}[{index}]")
        if tool.get("type") == "mcp":
            # As Anthropic's mcp_servers: the tools come from a server the gateway never sees, and the entry holds
            # the server's authorization, which must not be sent to the scanner.
            raise UnknownShape(f"{where}[{index}].type", "remote MCP tools are fetched by the provider and cannot "
                               "be scanned (and their headers must not reach the scanner)")
        collector.strings(tool, f"{where}[{index}]", role="tools")


def _tool_calls(calls, where: str, role: str | None, collector: Collector) -> None:
    for index, call in enumerate(as_list(calls, where)):
        at = f"{where}[{index}]"
        call = as_object(call, at)
        collector.keys(call, frozenset({"id", "type", "function", "custom"}), f"{at}.")
        kind = "custom" if "custom" in call else "function"
        if "custom" in call and "function" in call:
            raise UnknownShape(f"{at}.custom", "a tool call is either a function or a custom call, not both")
        function = as_object(call.get(kind), f"{at}.{kind}")
        argument = "input" if kind == "custom" else "arguments"
        collector.keys(function, frozenset({"name", argument}), f"{at}.{kind}.")
        collector.text(function.get("name"), f"{at}.{kind}.name", role)
        # The id right before the arguments, as templates print it (Kimi-K2: `functions.NAME:0` then arguments).
        _id(call.get("id"), f"{at}.id", role, collector)
        if kind == "function":
            collector.json_text(function.get(argument), f"{at}.{kind}.{argument}", role)
        else:
            collector.text(function.get(argument), f"{at}.{kind}.{argument}", role)


def _chat(body: dict, collector: Collector) -> None:
    collector.keys(body, _CHAT_KEYS, "")
    if body.get("web_search_options") is not None:
        # The user location is handed to the search tool, whose results the model reads.
        collector.strings(body["web_search_options"], "web_search_options", role="tools")
    for index, message in enumerate(as_list(body.get("messages"), "messages")):
        where = f"messages[{index}]"
        message = as_object(message, where)
        role = known_role(message.get("role"), CHAT_ROLES, f"{where}.role")
        # `prefix` (Mistral) marks an assistant message the model continues: its content is read like any other.
        collector.keys(message, _MESSAGE_KEYS, f"{where}.")
        # The participant's name is shown to the model beside its message.
        collector.text(message.get("name"), f"{where}.name", role)
        _content(message.get("content"), f"{where}.content", role, collector)
        _id(message.get("tool_call_id"), f"{where}.tool_call_id", role, collector)
        if message.get("audio") is not None:  # a reference to an earlier audio answer, nothing else
            collector.keys(as_object(message["audio"], f"{where}.audio"), frozenset({"id"}), f"{where}.audio.")
        collector.text(message.get("refusal"), f"{where}.refusal", role)
        if message.get("tool_calls") is not None:
            _tool_calls(message["tool_calls"], f"{where}.tool_calls", role, collector)
        if message.get("function_call") is not None:
            call = as_object(message["function_call"], f"{where}.function_call")
            collector.keys(call, frozenset({"name", "arguments"}), f"{where}.function_call.")
            collector.text(call.get("name"), f"{where}.function_call.name", role)
            collector.json_text(call.get("arguments"), f"{where}.function_call.arguments", role)
    for key in ("tools", "functions"):
        if body.get(key) is not None:
            _tools(body[key], key, collector)
    if body.get("response_format") is not None:
        collector.strings(body["response_format"], "response_format", role="response_format")
    if body.get("prediction") is not None:
        prediction = as_object(body["prediction"], "prediction")
        collector.keys(prediction, frozenset({"type", "content"}), "prediction.")
        _content(prediction.get("content"), "prediction.content", "prediction", collector)


_ITEM_COMMON = frozenset({"type", "id", "status"})
_ITEM_KEYS = {
    "message": _ITEM_COMMON | {"role", "content"},
    "function_call": _ITEM_COMMON | {"call_id", "name", "arguments"},
    "custom_tool_call": _ITEM_COMMON | {"call_id", "name", "input"},
    "function_call_output": _ITEM_COMMON | {"call_id", "output"},
    "custom_tool_call_output": _ITEM_COMMON | {"call_id", "output"},
    "reasoning": _ITEM_COMMON | {"summary", "content", "encrypted_content"},
    "item_reference": frozenset({"type", "id"}),
}


def _response_item(item, where: str, collector: Collector) -> None:
    """One item of the Responses API `input` list."""
    if isinstance(item, str):
        collector.text(item, where, "user")
        return
    item = as_object(item, where)
    kind = item.get("type", "message")
    keys = _ITEM_KEYS.get(kind)
    if keys is not None:
        collector.keys(item, keys, f"{where}.")
    if keys is not None and kind != "item_reference":
        _id(item.get("id"), f"{where}.id", "assistant", collector)
    if kind == "message":
        role = known_role(item.get("role"), RESPONSES_ROLES, f"{where}.role")
        _content(item.get("content"), f"{where}.content", role, collector)
    elif kind in ("function_call", "custom_tool_call"):
        collector.text(item.get("name"), f"{where}.name", "assistant")
        if kind == "function_call":
            collector.json_text(item.get("arguments"), f"{where}.arguments", "assistant")
        else:
            collector.text(item.get("input"), f"{where}.input", "assistant")
        _id(item.get("call_id"), f"{where}.call_id", "assistant", collector)
    elif kind in ("function_call_output", "custom_tool_call_output"):
        _id(item.get("call_id"), f"{where}.call_id", "tool", collector)
        output = item.get("output")
        if isinstance(output, list):
            _content(output, f"{where}.output", "tool", collector)
        else:
            collector.text(output, f"{where}.output", "tool")
    elif kind == "reasoning":
        # The summary, and the raw reasoning text that open-weight models (gpt-oss) are given back.
        for key in ("summary", "content"):
            for index, entry in enumerate(as_list(item.get(key) or [], f"{where}.{key}")):
                entry = as_object(entry, f"{where}.{key}[{index}]")
                collector.keys(entry, frozenset({"type", "text"}), f"{where}.{key}[{index}].")
                collector.text(entry.get("text"), f"{where}.{key}[{index}].text", "assistant")
    elif kind == "item_reference":
        # A reference to an item stored at the provider: its text was scanned when it was first sent.
        _id(item.get("id"), f"{where}.id", "assistant", collector)
    else:
        collector.unknown(item, f"{where}.type", f"input item type {kind!r} is not known")


def _responses(body: dict, collector: Collector) -> None:
    collector.keys(body, _RESPONSES_KEYS, "")
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
        _prompt(as_object(body["prompt"], "prompt"), collector)


# A stored prompt's id (`pmpt_` and hex) and version (digits); its text was written at the provider, its
# variables are filled in by this request.
_PROMPT_ID = re.compile(r"pmpt_[0-9a-f]{32,64}")
_PROMPT_VERSION = re.compile(r"[0-9]{1,10}")


def _prompt(prompt: dict, collector: Collector) -> None:
    """A stored prompt template: each variable is a string or an input part (text, image, file) the model reads."""
    collector.keys(prompt, frozenset({"id", "version", "variables"}), "prompt.")
    collector.identifier(prompt.get("id"), "prompt.id", "user", _PROMPT_ID)
    collector.identifier(prompt.get("version"), "prompt.version", "user", _PROMPT_VERSION)
    variables = as_object(prompt.get("variables") or {}, "prompt.variables")
    for name, value in variables.items():  # the name is the template's placeholder, not text the model reads
        where = f"prompt.variables.{name}"
        if isinstance(value, dict):
            _content([value], where, "user", collector)
        else:
            collector.text(value, where, "user")


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
    # `suffix` only here: anywhere else it is unknown, so no walker can leave it unread.
    collector.keys(body, _COMPLETIONS_KEYS, "")
    _text_or_texts(body.get("prompt"), "prompt", "user", collector)
    collector.text(body.get("suffix"), "suffix", "user")


def _embeddings(body: dict, collector: Collector) -> None:
    collector.keys(body, _EMBEDDINGS_KEYS, "")
    _text_or_texts(body.get("input"), "input", "user", collector)


# Walkers by endpoint path suffix, in matching order (chat/completions before completions); Azure's format mounts
# the same walkers under its own paths.
ENDPOINT_WALKERS: dict[str, Walker] = {
    "chat/completions": _chat,
    "responses": _responses,
    "completions": _completions,
    "embeddings": _embeddings,
}


# --- answers (the output guard) -------------------------------------------------------------------------------

# Answers with no model text: vectors, and the model list.
_NO_ANSWER_TEXT = re.compile(r"(/embeddings|/models(/[^/]+)?)$")
_CHAT_ANSWERS = re.compile(r"/(chat/)?completions$")
_RESPONSES_ANSWERS = re.compile(r"/responses$")



def _message_pieces(message: Any, where: str) -> list[Piece]:
    """The texts of one chat message or stream delta: content (a string or text parts), refusal, reasoning text
    some hosts add, tool calls and the legacy function call. Tool-call deltas carry their own `index`."""
    if not isinstance(message, dict):
        return []
    pieces = []
    content = message.get("content")
    if isinstance(content, str):
        pieces.append(Piece(where, content))
    elif isinstance(content, list):
        pieces += [Piece(where, part["text"]) for part in content
                   if isinstance(part, dict) and isinstance(part.get("text"), str)]
    for key in ("refusal", "reasoning_content", "reasoning"):
        if isinstance(message.get(key), str):
            pieces.append(Piece(f"{where}.{key}", message[key]))
    for position, call in enumerate(message.get("tool_calls") or []):
        if not isinstance(call, dict):
            continue
        index = call.get("index", position)
        for key in ("function", "custom"):
            function = call.get(key)
            if isinstance(function, dict):
                for field in ("name", "arguments", "input"):
                    if isinstance(function.get(field), str):
                        pieces.append(Piece(f"{where}.tool_calls[{index}]", function[field], tool=True))
    function_call = message.get("function_call")
    if isinstance(function_call, dict):
        pieces += [Piece(f"{where}.function_call", function_call[field], tool=True)
                   for field in ("name", "arguments") if isinstance(function_call.get(field), str)]
    return pieces


def _choice_pieces(answer: Any, delta: bool) -> list[Piece]:
    pieces: list[Piece] = []
    choices = answer.get("choices") if isinstance(answer, dict) else None
    for position, choice in enumerate(choices if isinstance(choices, list) else []):
        if not isinstance(choice, dict):
            continue
        where = f"choices[{choice.get('index', position)}]"
        if isinstance(choice.get("text"), str):  # legacy completions
            pieces.append(Piece(where, choice["text"]))
        pieces += _message_pieces(choice.get("delta" if delta else "message"), where)
    return pieces


class _ChatStream(StreamReader):
    """`data: {chunk}` events and the closing `data: [DONE]`; an error event from the provider holds no answer."""

    def feed(self, event: str | None, data: str) -> list[Piece]:
        if data.strip() == "[DONE]" or not data.strip():
            return []
        chunk = json_or_none(data)
        if not isinstance(chunk, dict) or event not in (None, "message"):
            return unreadable(data)
        if "error" in chunk and "choices" not in chunk:
            return []
        return _choice_pieces(chunk, delta=True)


class OpenAIFormat(WireFormat):
    name = "openai"
    endpoints = tuple((re.compile(rf"/{suffix}$"), walk) for suffix, walk in ENDPOINT_WALKERS.items())

    def answer_kind(self, method: str, path: str) -> str:
        if _NO_ANSWER_TEXT.search(path):
            return "none"
        read = _CHAT_ANSWERS.search(path) or _RESPONSES_ANSWERS.search(path)
        return "read" if method == "POST" and read else "unread"

    def answer_pieces(self, path: str, answer: Any) -> list[Piece]:
        if _RESPONSES_ANSWERS.search(path):
            return responses.answer_pieces(answer)
        return _choice_pieces(answer, delta=False)

    def stream_reader(self, path: str) -> StreamReader:
        return responses.ResponsesStream() if _RESPONSES_ANSWERS.search(path) else _ChatStream()

    def stream_error(self, path: str, refusal: Refusal, request_id: str) -> tuple[str | None, bytes]:
        """Chat: `data: {"error": {...}}`. Responses: an `error` event whose data is both the Responses API's
        error event (`type`, `code`, `message`, `param`) and carries `error`, the key the openai SDK raises
        APIError on while iterating."""
        body = self.error_body(refusal, request_id)[1]
        if not _RESPONSES_ANSWERS.search(path):
            return None, body
        error = json.loads(body)["error"]
        return "error", json_bytes({"type": "error", "code": error["code"], "message": error["message"],
                                    "param": None, "error": error})

    def error_body(self, refusal: Refusal, request_id: str) -> tuple[list[tuple[str, str]], bytes]:
        error = {"message": with_request_id(refusal, request_id), "type": self.error_kind(refusal.status), "param": None,
                 "code": refusal.code}
        return [("Content-Type", "application/json")], json_bytes({"error": error})
