"""The Gemini API (Google AI Studio): generateContent, streamGenerateContent, countTokens, embedContent and
cachedContents, under /v1beta or /v1.

Read: `systemInstruction` and every `contents[].parts[]` (text, function calls and responses, code and its
output), tool declarations and `generationConfig` (response schemas describe fields to the model). Inline and
file data are non-text parts. The API parses JSON as protobuf does, so `system_instruction` means the same as
`systemInstruction`: both spellings are read, and a body that uses both for one field is refused, since the
scanner and the provider could each pick a different one. Errors take Google's shape, which `google-genai`
turns into `errors.ClientError` (4xx) or `errors.ServerError` (5xx)::

    fmt = FORMATS["gemini"]
    fmt.extract("/v1beta/models/gemini-2.5-flash:generateContent", {"contents": [{"parts": [{"text": "hi"}]}]})
"""

from __future__ import annotations

import json
import re
from typing import Any, Iterable, Mapping

from ..extract import Collector, UnknownShape, as_list, as_object
from ..refusal import Refusal
from . import WireFormat, json_bytes, known_role, only_key, with_request_id
from .answers import Framing, JSONArrayElements, Piece, SSEEvents, StreamReader, json_or_none, unreadable

# google.rpc.Code names by HTTP status, as the Gemini API documents them in its error table.
STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
ROLES = frozenset({"user", "model", "function"})
_PART_DATA = frozenset({"text", "inlineData", "fileData", "functionCall", "functionResponse", "executableCode",
                        "codeExecutionResult"})
_PART_META = ("thought", "thoughtSignature", "videoMetadata", "mediaResolution", "partMetadata")
_REQUEST_KEYS = ("model", "contents", "tools", "toolConfig", "safetySettings", "systemInstruction",
                 "generationConfig", "cachedContent")
_CACHE_KEYS = ("model", "contents", "tools", "toolConfig", "systemInstruction", "ttl", "expireTime",
               "displayName", "name")
_EMBED_KEYS = ("model", "content", "taskType", "title", "outputDimensionality")


def _snake(name: str) -> str:
    return re.sub(r"[A-Z]", lambda match: "_" + match.group().lower(), name)


def fields(obj: Any, known: Iterable[str], where: str, collector: Collector) -> dict[str, Any]:
    """The object's fields under their camelCase names; unknown keys and a field spelt both ways are refused."""
    obj = as_object(obj, where)
    spellings = {spelling: name for name in known for spelling in (name, _snake(name))}
    found: dict[str, Any] = {}
    for key, value in obj.items():
        name = spellings.get(key)
        if name is None:
            collector.unknown(value, _join(where, key), "is not a field this gateway knows; it cannot be scanned", key=key)
            continue
        if name in found:
            raise UnknownShape(_join(where, key), f"is given twice, as {name} and {_snake(name)}; send one spelling")
        found[name] = value
    return found


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _blob(value: Any, at: str, role: str | None, collector: Collector) -> None:
    """Inline bytes: a text file (by its type or by its content, whatever type it declares) is read by the model as
    text, so it is decoded and scanned; images, audio, video and PDFs are non-text."""
    blob = fields(value, ("mimeType", "data", "displayName"), at, collector)
    collector.label(blob.get("displayName"), f"{at}.displayName", role)
    collector.file(blob.get("data"), f"{at}.data", role, blob.get("mimeType"))


def _part(part: Any, where: str, role: str | None, collector: Collector) -> None:
    values = fields(part, (*_PART_DATA, *_PART_META), where, collector)
    kind = only_key(values, _PART_DATA, where)
    value = values[kind]
    at = f"{where}.{kind}"
    # Free-form metadata a client attaches to a part: not documented as prompt text, but cheap to be sure of.
    collector.strings(values.get("partMetadata"), f"{where}.partMetadata", role)
    if kind == "text":
        collector.text(value, at, role)
    elif kind == "inlineData":
        _blob(value, at, role, collector)
    elif kind == "fileData":
        file = fields(value, ("fileUri", "mimeType", "displayName"), at, collector)
        collector.label(file.get("displayName"), f"{at}.displayName", role)
        collector.binary(at)
    elif kind == "functionCall":
        call = fields(value, ("id", "name", "args"), at, collector)
        # Gemini documents no syntax for call ids, so every id is judged.
        collector.identifier(call.get("id"), f"{at}.id", role, None)
        collector.text(call.get("name"), f"{at}.name", role)
        collector.strings(call.get("args"), f"{at}.args", role)
    elif kind == "functionResponse":
        response = fields(value, ("id", "name", "response", "parts", "willContinue", "scheduling"), at, collector)
        collector.identifier(response.get("id"), f"{at}.id", "tool", None)
        collector.text(response.get("name"), f"{at}.name", "tool")
        collector.strings(response.get("response"), f"{at}.response", "tool")
        for index, item in enumerate(as_list(response.get("parts") or [], f"{at}.parts")):
            # Function-response parts carry only inline or file data; anything else (text) is refused.
            item_at = f"{at}.parts[{index}]"
            values = fields(item, ("inlineData", "fileData"), item_at, collector)
            data = only_key(values, frozenset({"inlineData", "fileData"}), item_at)
            if data == "inlineData":
                _blob(values[data], f"{item_at}.inlineData", "tool", collector)
            else:
                fields(values[data], ("fileUri", "mimeType", "displayName"), f"{item_at}.fileData", collector)
                collector.binary(f"{item_at}.fileData")
    elif kind == "executableCode":
        collector.text(fields(value, ("language", "code"), at, collector).get("code"), f"{at}.code", role)
    else:  # codeExecutionResult
        collector.text(fields(value, ("outcome", "output"), at, collector).get("output"), f"{at}.output", "tool")


def _contents(value: Any, where: str, collector: Collector, role: str | None = None) -> None:
    """One Content: its parts, attributed to `role`, or when None to the content's own role (user by default)."""
    content = fields(value, ("role", "parts"), where, collector)
    if content.get("role") is not None:  # a system instruction's role is ignored by the API; any known one will do
        known_role(content["role"], ROLES | {"system"} if role == "system" else ROLES, _join(where, "role"))
    role = role or content.get("role") or "user"
    for index, part in enumerate(as_list(content.get("parts") or [], _join(where, "parts"))):
        _part(part, f"{_join(where, 'parts')}[{index}]", role, collector)


def _request(body: Mapping[str, Any], where: str, collector: Collector) -> None:
    """The parts of a generate request (also of a cached content) the model reads."""
    if body.get("systemInstruction") is not None:
        _contents(body["systemInstruction"], _join(where, "systemInstruction"), collector, role="system")
    for index, content in enumerate(as_list(body.get("contents") or [], _join(where, "contents"))):
        _contents(content, f"{_join(where, 'contents')}[{index}]", collector)
    for index, tool in enumerate(as_list(body.get("tools") or [], _join(where, "tools"))):
        # Function names, descriptions and parameter schemas are all read by the model.
        collector.strings(as_object(tool, f"{_join(where, 'tools')}[{index}]"), f"{_join(where, 'tools')}[{index}]",
                          "tools")
    if body.get("generationConfig") is not None:
        # Response schemas (descriptions, enums) are read by the model; stop sequences are only matched against
        # its output, never read, so they are not judged.
        config = as_object(body["generationConfig"], _join(where, "generationConfig"))
        for key, value in config.items():
            if key not in ("stopSequences", "stop_sequences"):
                collector.strings({key: value}, _join(where, "generationConfig"), "response_format")


def _generate(body: dict, collector: Collector) -> None:
    _request(fields(body, _REQUEST_KEYS, "", collector), "", collector)


def _count_tokens(body: dict, collector: Collector) -> None:
    values = fields(body, ("contents", "generateContentRequest"), "", collector)
    _request(values, "", collector)
    if values.get("generateContentRequest") is not None:
        nested = fields(values["generateContentRequest"], _REQUEST_KEYS, "generateContentRequest", collector)
        _request(nested, "generateContentRequest", collector)


def _cached_content(body: dict, collector: Collector) -> None:
    _request(fields(body, _CACHE_KEYS, "", collector), "", collector)


def _embed(body: Any, where: str, collector: Collector) -> None:
    values = fields(body, _EMBED_KEYS, where, collector)
    collector.text(values.get("title"), _join(where, "title"), "user")
    _contents(values.get("content"), _join(where, "content"), collector, role="user")


def _embed_one(body: dict, collector: Collector) -> None:
    _embed(body, "", collector)


def _embed_batch(body: dict, collector: Collector) -> None:
    for index, request in enumerate(as_list(fields(body, ("requests",), "", collector).get("requests"), "requests")):
        _embed(request, f"requests[{index}]", collector)


# --- answers (the output guard) -------------------------------------------------------------------------------

_GENERATE = re.compile(r"^/v1(beta)?/(tunedModels|models)/[^/]+:(generateContent|streamGenerateContent)$")
# Answers with no model text: token counts, embeddings, cache metadata, model lists.
_NO_ANSWER_TEXT = re.compile(r"^/v1(beta)?/(models/[^/]+:(countTokens|embedContent|batchEmbedContents)$|cachedContents"
                             r"(/[^/]+)?$|models(/[^/:]+)?$)")
# Parts by kind: the field holding what the model wrote, the channel suffix, and whether it goes to a tool.
# A function call's arguments go to the app's tools; code runs in the provider's sandbox, and its output is shown.
_PART_TEXT = {"functionCall": ("", ".functionCall", True), "executableCode": ("code", ".code", True),
              "codeExecutionResult": ("output", ".codeResult", False)}
# Parts that hold no text: generated images and files, and the metadata beside a part's data.
_SILENT_PARTS = frozenset({"inlineData", "fileData"})
_PART_METADATA = frozenset({"thought", "thoughtSignature", "thought_signature", "videoMetadata", "partMetadata"})


def _snake_or_camel(part: dict, name: str) -> Any:
    return part.get(name, part.get(_snake(name)))


def _part_pieces(part: Any, where: str) -> list[Piece]:
    if not isinstance(part, dict):
        return []
    if isinstance(part.get("text"), str):
        return [Piece(f"{where}.thought" if part.get("thought") else where, part["text"])]
    for kind, (field, suffix, tool) in _PART_TEXT.items():
        value = _snake_or_camel(part, kind)
        if isinstance(value, dict):
            text = value.get(field) if field else f"{value.get('name', '')}{json.dumps(value.get('args') or {})}"
            return [Piece(where + suffix, text, tool)] if isinstance(text, str) else []
    if any(_snake_or_camel(part, kind) is not None for kind in _SILENT_PARTS) or set(part) <= _PART_METADATA:
        return []
    return unreadable(json.dumps(part, ensure_ascii=False))  # a part this reader does not know: judged whole


def _candidate_pieces(answer: Any) -> list[Piece]:
    """The parts of every candidate of a GenerateContentResponse (a plain answer, or one chunk of a stream)."""
    candidates = answer.get("candidates") if isinstance(answer, dict) else None
    pieces: list[Piece] = []
    for position, candidate in enumerate(candidates if isinstance(candidates, list) else []):
        if not isinstance(candidate, dict) or not isinstance(candidate.get("content"), dict):
            continue
        where = f"candidates[{candidate.get('index', position)}]"
        parts = candidate["content"].get("parts")
        for part in parts if isinstance(parts, list) else []:
            pieces += _part_pieces(part, where)
    return pieces


class _GenerateStream(StreamReader):
    """Each event (an SSE `data:` or an element of the JSON array) is a whole GenerateContentResponse holding
    the next parts; an `error` object is the provider's own error."""

    def feed(self, event: str | None, data: str) -> list[Piece]:
        if not data.strip():
            return []
        chunk = json_or_none(data)
        if not isinstance(chunk, dict):
            return unreadable(data)
        if "error" in chunk and "candidates" not in chunk:
            return []
        return _candidate_pieces(chunk)


class GeminiFormat(WireFormat):
    name = "gemini"
    endpoints = (
        (_GENERATE, _generate),
        (re.compile(r"^/v1(beta)?/models/[^/]+:countTokens$"), _count_tokens),
        (re.compile(r"^/v1(beta)?/models/[^/]+:embedContent$"), _embed_one),
        (re.compile(r"^/v1(beta)?/models/[^/]+:batchEmbedContents$"), _embed_batch),
        (re.compile(r"^/v1(beta)?/cachedContents$"), _cached_content),
    )

    def is_stream(self, path: str, body: Mapping[str, Any]) -> bool:
        return path.endswith(":streamGenerateContent")

    def answer_kind(self, method: str, path: str) -> str:
        if _NO_ANSWER_TEXT.search(path):
            return "none"
        return "read" if method == "POST" and _GENERATE.search(path) else "unread"

    def answer_pieces(self, path: str, answer: Any) -> list[Piece]:
        return _candidate_pieces(answer)

    def stream_framing(self, path: str, content_type: str) -> Framing | None:
        """Server-sent events with `alt=sse` (what google-genai asks for); without it, streamGenerateContent sends
        one JSON array whose elements arrive one by one."""
        if content_type.startswith("text/event-stream"):
            return SSEEvents()
        return JSONArrayElements() if path.endswith(":streamGenerateContent") and "json" in content_type else None

    def stream_reader(self, path: str) -> StreamReader:
        return _GenerateStream()

    def stream_error(self, path: str, refusal: Refusal, request_id: str) -> tuple[str | None, bytes]:
        """An element `{"error": {...}}`, as the API sends a mid-stream error: google-genai raises ClientError (4xx)
        or ServerError (5xx) on it while iterating."""
        return None, self.error_body(refusal, request_id)[1]

    def error_kind(self, status: int) -> str:
        return STATUS_NAMES.get(status, "INVALID_ARGUMENT" if status < 500 else "INTERNAL")

    def error_body(self, refusal: Refusal, request_id: str) -> tuple[list[tuple[str, str]], bytes]:
        error = {
            "code": refusal.status,
            "message": with_request_id(refusal, request_id),
            "status": self.error_kind(refusal.status),
            # ErrorInfo is how Google APIs give a machine-readable reason beside the message.
            "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": refusal.code.upper(),
                         "domain": "lockllm-wsgi", "metadata": {"request_id": request_id}}],
        }
        return [("Content-Type", "application/json")], json_bytes({"error": error})
