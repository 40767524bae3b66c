"""Amazon Bedrock Runtime: Converse and ConverseStream, and InvokeModel (plain and streamed) for Anthropic models.

Read: `system` blocks, every message's content blocks (text, tool-use input, tool results with their text and
JSON, reasoning text, citations, search results, guard content, text documents), tool specifications, prompt
variables, output schemas and the free-form `additionalModelRequestFields`. Images, video, audio and binary
documents are non-text parts. InvokeModel bodies of Anthropic models (`anthropic.*`, or an inference profile such
as `us.anthropic.*`) are read by the anthropic format's walker; other models' InvokeModel bodies are refused.

Clients sign their requests for the gateway's host, so the client's SigV4 headers are dropped and the request is
signed again with the gateway's own AWS credentials (botocore's default chain: environment, config files, role)
for the route's `region`, else the region in the upstream host name, else the AWS SDK's own (AWS_REGION, the
profile), settled when the route is loaded. Needs the `aws` extra (botocore). Errors carry
`x-amzn-ErrorType`, so botocore raises `ClientError` with code `ValidationException` and our message::

    fmt = FORMATS["bedrock"]
    fmt.extract("/model/amazon.nova-lite-v1:0/converse", {"messages": [{"role": "user", "content": [{"text": "hi"}]}]})
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import threading
from typing import Any, Mapping
from urllib.parse import urlsplit

from ..extract import Collector, as_list, as_object
from ..refusal import Refusal
from . import WireFormat, eventstream, json_bytes, known_role, only_key, with_request_id
from .anthropic import MessagesStream, message_pieces
from .anthropic import messages as anthropic_messages
from .answers import Framing, Piece, StreamReader, json_or_none, unreadable

# Bedrock's error types by status, as botocore names them in the bedrock-runtime service model.
ERROR_TYPES = {
    400: "ValidationException",
    403: "AccessDeniedException",
    404: "ResourceNotFoundException",
    429: "ThrottlingException",
    500: "InternalServerException",
    502: "ServiceUnavailableException",
    503: "ServiceUnavailableException",
    504: "ServiceUnavailableException",
}
# The client's signature covers the gateway's host: it is never forwarded, and the gateway signs anew.
CLIENT_SIGNATURE_HEADERS = frozenset({"authorization", "x-amz-date", "x-amz-security-token", "x-amz-content-sha256"})
SIGNING_SERVICE = "bedrock"
_REGION_IN_HOST = re.compile(r"^bedrock-runtime(?:-fips)?\.([a-z0-9-]+)\.amazonaws\.com$")
_AWS_REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-\d+")
# SigV4: `Authorization: AWS4-HMAC-SHA256 Credential=AKID/20250101/us-east-1/bedrock/aws4_request, ...`.
_CREDENTIAL = re.compile(r"Credential=([A-Z0-9]{16,128})/")

_CONVERSE_KEYS = frozenset(
    """messages system inferenceConfig toolConfig guardrailConfig projectIdentifier additionalModelRequestFields
    promptVariables additionalModelResponseFieldPaths requestMetadata performanceConfig serviceTier
    outputConfig""".split()
)
_BLOCK_KINDS = frozenset(
    """text image document video audio toolUse toolResult guardContent cachePoint reasoningContent
    citationsContent searchResult toolAddition toolRemoval json""".split()
)
_MEDIA_KINDS = frozenset({"image", "video", "audio"})
# Document formats declared as text: their bytes must be text. Other formats' bytes are read by content too.
_TEXT_DOCUMENT_FORMATS = {"txt": "text/plain", "md": "text/markdown", "csv": "text/csv", "html": "text/html"}
ROLES = frozenset({"user", "assistant", "system"})
# Tool-use ids as Bedrock generates them; any other value (the API allows any [a-zA-Z0-9_.:-]{1,64}) is judged.
ID_SYNTAX = re.compile(r"tooluse_[A-Za-z0-9_-]{22}")


def _document(document: Any, where: str, role: str | None, collector: Collector) -> None:
    document = as_object(document, where)
    collector.keys(document, frozenset({"format", "name", "source", "context", "citations"}), f"{where}.")
    collector.text(document.get("name"), f"{where}.name", role)
    collector.text(document.get("context"), f"{where}.context", role)
    source = as_object(document.get("source"), f"{where}.source")
    kind = only_key(source, frozenset({"bytes", "s3Location", "text", "content"}), f"{where}.source")
    collector.keys(source, frozenset({kind}), f"{where}.source.")
    # An html or md document is converted by Bedrock whichever way its text comes: read it after the conversion.
    media_type = _TEXT_DOCUMENT_FORMATS.get(str(document.get("format", "")).lower())
    if kind == "text":
        collector.document(source["text"], f"{where}.source.text", role, media_type)
    elif kind == "content":
        for index, item in enumerate(as_list(source["content"], f"{where}.source.content")):
            item = as_object(item, f"{where}.source.content[{index}]")
            collector.keys(item, frozenset({"text"}), f"{where}.source.content[{index}].")
            collector.document(item.get("text"), f"{where}.source.content[{index}].text", role, media_type)
    elif kind == "bytes":
        collector.file(source["bytes"], f"{where}.source.bytes", role, media_type)
    else:
        collector.binary(where)


def _media(value: Any, where: str, role: str | None, collector: Collector) -> None:
    """An image, video or audio block: inline bytes are read by content (text inside is text), S3 is non-text."""
    value = as_object(value, where)
    collector.keys(value, frozenset({"format", "source", "error"}), f"{where}.")
    source = as_object(value.get("source"), f"{where}.source")
    kind = only_key(source, frozenset({"bytes", "s3Location"}), f"{where}.source")
    collector.keys(source, frozenset({kind}), f"{where}.source.")
    if kind == "bytes":
        collector.file(source["bytes"], f"{where}.source.bytes", role)
    else:
        collector.binary(where)


def _text_items(items: Any, where: str, role: str | None, collector: Collector) -> None:
    """A list of `{"text": ...}` objects (search-result and citation content)."""
    for index, item in enumerate(as_list(items or [], where)):
        item = as_object(item, f"{where}[{index}]")
        collector.keys(item, frozenset({"text"}), f"{where}[{index}].")
        collector.text(item.get("text"), f"{where}[{index}].text", role)


def _block(block: Any, where: str, role: str | None, collector: Collector) -> None:
    """One content block: a union object whose single key says what it holds."""
    block = as_object(block, where)
    kind = only_key(block, _BLOCK_KINDS, where)
    # A content block is a union: one member, nothing beside it (a second key is text nobody scanned).
    collector.keys(block, frozenset({kind}), f"{where}.")
    value = block[kind]
    at = f"{where}.{kind}"
    if kind == "text":
        collector.text(value, at, role)
    elif kind in _MEDIA_KINDS:
        _media(value, at, role, collector)
    elif kind == "document":
        _document(value, at, role, collector)
    elif kind == "toolUse":
        value = as_object(value, at)
        collector.keys(value, frozenset({"toolUseId", "name", "input", "type"}), f"{at}.")
        collector.identifier(value.get("toolUseId"), f"{at}.toolUseId", role, ID_SYNTAX)
        collector.text(value.get("name"), f"{at}.name", role)
        collector.strings(value.get("input"), f"{at}.input", role)
    elif kind == "toolResult":
        value = as_object(value, at)
        collector.keys(value, frozenset({"toolUseId", "content", "status", "type"}), f"{at}.")
        collector.identifier(value.get("toolUseId"), f"{at}.toolUseId", "tool", ID_SYNTAX)
        for index, item in enumerate(as_list(value.get("content") or [], f"{at}.content")):
            _block(item, f"{at}.content[{index}]", "tool", collector)
    elif kind == "json":
        collector.strings(value, at, role)
    elif kind == "guardContent":
        guarded = as_object(value, at)
        member = only_key(guarded, frozenset({"text", "image"}), at)
        collector.keys(guarded, frozenset({member}), f"{at}.")
        if member == "text":
            text = as_object(guarded["text"], f"{at}.text")
            collector.keys(text, frozenset({"text", "qualifiers"}), f"{at}.text.")
            collector.text(text.get("text"), f"{at}.text.text", role)
        else:
            _media(guarded["image"], f"{at}.image", role, collector)
    elif kind == "reasoningContent":
        # redactedContent is encrypted by the provider and checked by it on return: no client-written text.
        value = as_object(value, at)
        collector.keys(value, frozenset({"reasoningText", "redactedContent"}), f"{at}.")
        reasoning = as_object(value.get("reasoningText") or {}, f"{at}.reasoningText")
        collector.keys(reasoning, frozenset({"text", "signature"}), f"{at}.reasoningText.")
        collector.text(reasoning.get("text"), f"{at}.reasoningText.text", role)
    elif kind == "citationsContent":
        value = as_object(value, at)
        collector.keys(value, frozenset({"content", "citations"}), f"{at}.")
        _text_items(value.get("content"), f"{at}.content", role, collector)
        collector.strings(value.get("citations"), f"{at}.citations", role)
    elif kind == "searchResult":
        value = as_object(value, at)
        collector.keys(value, frozenset({"source", "title", "content", "citations"}), f"{at}.")
        collector.text(value.get("source"), f"{at}.source", role)
        collector.text(value.get("title"), f"{at}.title", role)
        _text_items(value.get("content"), f"{at}.content", role, collector)
    elif kind == "cachePoint":
        collector.keys(as_object(value, at), frozenset({"type", "ttl"}), f"{at}.")
    elif kind in ("toolAddition", "toolRemoval"):
        collector.strings(value, at, role)


def _converse(body: dict, collector: Collector) -> None:
    collector.keys(body, _CONVERSE_KEYS, "")
    for index, block in enumerate(as_list(body.get("system") or [], "system")):
        _block(block, f"system[{index}]", "system", collector)
    for index, message in enumerate(as_list(body.get("messages") or [], "messages")):
        where = f"messages[{index}]"
        message = as_object(message, where)
        collector.keys(message, frozenset({"role", "content"}), f"{where}.")
        role = known_role(message.get("role"), ROLES, f"{where}.role")
        for part, block in enumerate(as_list(message.get("content"), f"{where}.content")):
            _block(block, f"{where}.content[{part}]", role, collector)
    tool_config = as_object(body.get("toolConfig") or {}, "toolConfig")
    collector.keys(tool_config, frozenset({"tools", "toolChoice"}), "toolConfig.")
    tools = tool_config.get("tools") or []
    for index, tool in enumerate(as_list(tools, "toolConfig.tools")):
        # Tool names, descriptions and input schemas are all read by the model.
        collector.strings(as_object(tool, f"toolConfig.tools[{index}]"), f"toolConfig.tools[{index}]", "tools")
    if body.get("promptVariables") is not None:
        collector.strings(body["promptVariables"], "promptVariables", "user")
    if body.get("outputConfig") is not None:
        collector.strings(body["outputConfig"], "outputConfig", "response_format")
    if body.get("additionalModelRequestFields") is not None:
        # Free-form, model-specific fields: any string in them may reach the model.
        collector.strings(body["additionalModelRequestFields"], "additionalModelRequestFields", "model_fields")


# --- answers (the output guard) -------------------------------------------------------------------------------

_CONVERSE = re.compile(r"^/model/[^/]+/(converse|converse-stream)$")
_INVOKE_ANTHROPIC = re.compile(r"^/model/(?:[a-z]+\.)?anthropic\.[^/]+/(invoke|invoke-with-response-stream)$")
_STREAMS = ("/converse-stream", "/invoke-with-response-stream")
# ConverseStream events with no model text: the message's start and end, a block's end, usage and metrics.
_SILENT_EVENTS = frozenset({"messageStart", "messageStop", "contentBlockStop", "metadata"})
# The exception a cut stream ends with: both stream APIs define it ("an error occurred while streaming the
# response"), and boto3 raises it as EventStreamError with this code.
STREAM_EXCEPTION = "modelStreamErrorException"


def _block_pieces(block: Any, where: str) -> list[Piece]:
    """A Converse content block, whole (plain answers) or a stream's start or delta of one: text, a tool call's
    name and input (whole, or the input's JSON in pieces), reasoning text. Signatures, redacted reasoning and
    citations hold no model text."""
    if not isinstance(block, dict):
        return []
    pieces = [Piece(where, block["text"])] if isinstance(block.get("text"), str) else []
    tool = block.get("toolUse")
    if isinstance(tool, dict):
        pieces += [Piece(where, tool["name"], tool=True)] if isinstance(tool.get("name"), str) else []
        if isinstance(tool.get("input"), str):
            pieces.append(Piece(where, tool["input"], tool=True))
        elif tool.get("input") is not None:
            pieces.append(Piece(where, json.dumps(tool["input"], ensure_ascii=False), tool=True))
    reasoning = block.get("reasoningContent")
    if isinstance(reasoning, dict):
        text = reasoning.get("text", (reasoning.get("reasoningText") or {}).get("text"))
        pieces += [Piece(f"{where}.reasoning", text)] if isinstance(text, str) else []
    return pieces


def _converse_pieces(answer: Any) -> list[Piece]:
    message = (answer.get("output") or {}).get("message") if isinstance(answer, dict) else None
    content = message.get("content") if isinstance(message, dict) else None
    return [piece for index, block in enumerate(content if isinstance(content, list) else [])
            for piece in _block_pieces(block, f"content[{index}]")]


class _ConverseStream(StreamReader):
    def feed(self, event: str | None, data: str) -> list[Piece]:
        if event in _SILENT_EVENTS or (event or "").startswith("exception:"):
            return []
        payload = json_or_none(data)
        if not isinstance(payload, dict) or event not in ("contentBlockStart", "contentBlockDelta"):
            return unreadable(data)
        block = payload.get("start" if event == "contentBlockStart" else "delta")
        return _block_pieces(block, f"content[{payload.get('contentBlockIndex', 0)}]")


class _InvokeStream(StreamReader):
    """`chunk` events whose `bytes` (base64) hold one Anthropic Messages event each."""

    def __init__(self) -> None:
        self._messages = MessagesStream()

    def feed(self, event: str | None, data: str) -> list[Piece]:
        if (event or "").startswith("exception:"):
            return []
        payload = json_or_none(data)
        if event != "chunk" or not isinstance(payload, dict) or not isinstance(payload.get("bytes"), str):
            return unreadable(data)
        try:
            inner = base64.b64decode(payload["bytes"], validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return unreadable(data)
        kind = json_or_none(inner)
        return self._messages.feed(kind.get("type") if isinstance(kind, dict) else None, inner)


class _Credentials:
    """The gateway's AWS credentials from botocore's default chain, resolved once per process (refreshable
    credentials renew themselves); a miss is not remembered, so credentials that appear later are used."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._credentials: Any = None

    def get(self) -> Any:
        with self._lock:
            if self._credentials is None:
                import botocore.session  # the aws extra: only Bedrock routes need it

                self._credentials = botocore.session.get_session().get_credentials()
            return self._credentials

    def forget(self) -> None:
        with self._lock:
            self._credentials = None


CREDENTIALS = _Credentials()


def region_option(text: str) -> str:
    """The `region` a Bedrock route may set."""
    value = text.strip()
    if not _AWS_REGION.fullmatch(value):
        raise ValueError(f"must be an AWS region such as us-east-1, not {text!r}")
    return value


def signing_region(route_region: str, url: str) -> str:
    """The route's `region`, else the one the upstream host names (bedrock-runtime.REGION.amazonaws.com), else ""."""
    if route_region:
        return route_region
    match = _REGION_IN_HOST.match(urlsplit(url).hostname or "")
    return match.group(1) if match else ""


def sdk_region() -> str:
    """The region the AWS SDKs would use: AWS_REGION, AWS_DEFAULT_REGION, else the profile's; "" if none."""
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        return region
    try:
        import botocore.session  # the aws extra: reads the profile (AWS_PROFILE, AWS_CONFIG_FILE)
    except ImportError:
        return ""
    return botocore.session.get_session().get_config_variable("region") or ""


class BedrockFormat(WireFormat):
    name = "bedrock"
    endpoints = (
        (_CONVERSE, _converse),
        (_INVOKE_ANTHROPIC, anthropic_messages),
    )

    route_options = {"region": region_option}

    def is_stream(self, path: str, body: Mapping[str, Any]) -> bool:
        return path.endswith(("/converse-stream", "/invoke-with-response-stream"))

    def check_route(self, upstream: str, options: Mapping[str, str]) -> Mapping[str, str]:
        """The region to sign for, settled at start-up: the route's, the upstream host's, or the AWS SDK's own."""
        region = signing_region(options.get("region", ""), upstream) or sdk_region()
        if not region:
            raise ValueError("names no AWS region to sign for: set `region` in this route (or AWS_REGION in the "
                             "daemons' environment), or use an upstream such as https://bedrock-runtime.us-east-1."
                             "amazonaws.com")
        return {**options, "region": region}

    def client_key(self, environ: Mapping[str, object]) -> str | None:
        """The client's AWS access key id from its SigV4 `Credential=`: the rest of the header (date, signature)
        changes on every request, and one client must be one identity."""
        match = _CREDENTIAL.search(str(environ.get("HTTP_AUTHORIZATION") or ""))
        return f"aws:{match.group(1)}" if match else super().client_key(environ)

    def answer_kind(self, method: str, path: str) -> str:
        if method != "POST" or not (_CONVERSE.search(path) or _INVOKE_ANTHROPIC.search(path)):
            return "unread"
        # Streams come in AWS event-stream framing, which only botocore (the aws extra) parses here.
        return "unread" if path.endswith(_STREAMS) and not eventstream.available() else "read"

    def answer_pieces(self, path: str, answer: Any) -> list[Piece]:
        return _converse_pieces(answer) if _CONVERSE.search(path) else message_pieces(answer)

    def stream_framing(self, path: str, content_type: str) -> Framing | None:
        if content_type.startswith("application/vnd.amazon.eventstream") and eventstream.available():
            return eventstream.EventStreamMessages()
        return None

    def stream_reader(self, path: str) -> StreamReader:
        return _ConverseStream() if _CONVERSE.search(path) else _InvokeStream()

    def stream_error(self, path: str, refusal: Refusal, request_id: str) -> tuple[str | None, bytes]:
        """An exception message (`modelStreamErrorException`, or `serviceUnavailableException` when the scanner is
        down), which boto3 raises as EventStreamError while iterating."""
        kind = "serviceUnavailableException" if refusal.status >= 500 else STREAM_EXCEPTION
        return kind, json_bytes({"message": with_request_id(refusal, request_id)})

    def error_kind(self, status: int) -> str:
        return ERROR_TYPES.get(status, "ValidationException" if status < 500 else "InternalServerException")

    def upstream_headers(self, options: Mapping[str, str], method: str, url: str, headers: dict[str, str],
                         body: bytes) -> dict[str, str]:
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest

        kept = {name: value for name, value in headers.items() if name.lower() not in CLIENT_SIGNATURE_HEADERS}
        region = options["region"]  # settled by check_route at start-up
        credentials = CREDENTIALS.get()
        if credentials is None:
            raise Refusal(500, "gateway_misconfigured", "The gateway has no AWS credentials to sign the request to "
                          "Bedrock; the operator must give it some (environment, config file or instance role).")
        request = AWSRequest(method=method, url=url, data=body, headers=kept)
        SigV4Auth(credentials.get_frozen_credentials(), SIGNING_SERVICE, region).add_auth(request)
        return dict(request.headers.items())

    def error_body(self, refusal: Refusal, request_id: str) -> tuple[list[tuple[str, str]], bytes]:
        headers = [("Content-Type", "application/json"), ("x-amzn-ErrorType", self.error_kind(refusal.status)),
                   ("x-amzn-RequestId", request_id)]
        return headers, json_bytes({"message": with_request_id(refusal, request_id)})
