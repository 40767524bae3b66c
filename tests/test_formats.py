"""Each wire format, field by field: the text at every path the model reads is collected with that path, unknown
shapes are refused, and errors come out in the provider's own shape."""

from __future__ import annotations

import json

import pytest

from lockllm_wsgi.extract import UnknownShape
from lockllm_wsgi.formats import FORMATS
from lockllm_wsgi.refusal import Refusal

T = "INJECTED TEXT"
IMG = {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}


def collected(fmt: str, path: str, body: dict) -> dict[str, tuple[str, str | None]]:
    """where -> (text, role) of every segment the format collected."""
    return {s.where: (s.text, s.role) for s in FORMATS[fmt].extract(path, body).segments}


def anthropic(*messages, **top) -> dict:
    return {"model": "claude", "max_tokens": 10, "messages": list(messages) or [{"role": "user", "content": "hi"}],
            **top}


def user(*blocks) -> dict:
    return {"role": "user", "content": list(blocks)}


FIELD_PATHS = [
    # --- anthropic -----------------------------------------------------------------------------------------
    pytest.param("anthropic", "/v1/messages", anthropic(system=T), "system", "system", id="anthropic-system-string"),
    pytest.param("anthropic", "/v1/messages", anthropic(system=[{"type": "text", "text": T}]), "system[0].text",
                 "system", id="anthropic-system-blocks"),
    pytest.param("anthropic", "/v1/messages", anthropic({"role": "user", "content": T}), "messages[0].content",
                 "user", id="anthropic-content-string"),
    pytest.param("anthropic", "/v1/messages", anthropic(user({"type": "text", "text": T})),
                 "messages[0].content[0].text", "user", id="anthropic-text-block"),
    pytest.param("anthropic", "/v1/messages/count_tokens", {"model": "c", "messages": [user({"type": "text", "text": T})]},
                 "messages[0].content[0].text", "user", id="anthropic-count-tokens"),
    pytest.param("anthropic", "/v1/messages", anthropic(
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {"q": T}}]}),
        "messages[0].content[0].input.q", "assistant", id="anthropic-tool-use-input"),
    pytest.param("anthropic", "/v1/messages", anthropic(
        user({"type": "tool_result", "tool_use_id": "t1", "content": T})),
        "messages[0].content[0].content", "tool", id="anthropic-tool-result-string"),
    pytest.param("anthropic", "/v1/messages", anthropic(
        user({"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": "ok"},
                                                                       {"type": "text", "text": T}]})),
        "messages[0].content[0].content[1].text", "tool", id="anthropic-tool-result-blocks"),
    pytest.param("anthropic", "/v1/messages", anthropic(
        {"role": "assistant", "content": [{"type": "thinking", "thinking": T, "signature": "sig"}]}),
        "messages[0].content[0].thinking", "assistant", id="anthropic-thinking"),
    pytest.param("anthropic", "/v1/messages", anthropic(user(
        {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": T}})),
        "messages[0].content[0].source.data", "user", id="anthropic-text-document"),
    pytest.param("anthropic", "/v1/messages", anthropic(user(
        {"type": "document", "source": {"type": "content", "content": [{"type": "text", "text": T}]}})),
        "messages[0].content[0].source.content[0].text", "user", id="anthropic-content-document"),
    pytest.param("anthropic", "/v1/messages", anthropic(user(
        {"type": "document", "title": T, "source": {"type": "url", "url": "https://x/y.pdf"}})),
        "messages[0].content[0].title", "user", id="anthropic-document-title"),
    pytest.param("anthropic", "/v1/messages", anthropic(user(
        {"type": "search_result", "source": "https://x", "title": "t", "content": [{"type": "text", "text": T}]})),
        "messages[0].content[0].content[0].text", "user", id="anthropic-search-result"),
    pytest.param("anthropic", "/v1/messages", anthropic(tools=[{"name": "f", "description": T, "input_schema": {}}]),
                 "tools[0].description", "tools", id="anthropic-tool-description"),
    pytest.param("anthropic", "/v1/messages", anthropic(tools=[{"name": "f", "input_schema": {
        "type": "object", "properties": {"q": {"type": "string", "description": T}}}}]),
        "tools[0].input_schema.properties.q.description", "tools", id="anthropic-tool-schema"),
    pytest.param("anthropic", "/v1/messages", {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 5,
                                               "messages": [{"role": "user", "content": T}]},
                 "messages[0].content", "user", id="anthropic-bedrock-invoke-body"),
]


@pytest.mark.parametrize("fmt, path, body, where, role", FIELD_PATHS)
def test_text_at_every_field_path_is_collected_with_its_where(fmt, path, body, where, role):
    assert collected(fmt, path, body)[where] == (T, role)


BINARY_PARTS = [
    pytest.param("anthropic", "/v1/messages", anthropic(user({"type": "image", "source": IMG})),
                 "messages[0].content[0]", id="anthropic-image"),
    pytest.param("anthropic", "/v1/messages", anthropic(user(
        {"type": "tool_result", "tool_use_id": "t", "content": [{"type": "image", "source": IMG}]})),
        "messages[0].content[0].content[0]", id="anthropic-image-in-tool-result"),
    pytest.param("anthropic", "/v1/messages", anthropic(user(
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBER"}})),
        "messages[0].content[0]", id="anthropic-pdf"),
]


@pytest.mark.parametrize("fmt, path, body, where", BINARY_PARTS)
def test_non_text_parts_are_recorded_as_unscannable(fmt, path, body, where):
    assert where in FORMATS[fmt].extract(path, body).non_text


UNKNOWN_SHAPES = [
    pytest.param("anthropic", "/v1/messages", anthropic(user({"type": "hologram", "text": T})),
                 "messages[0].content[0].type", id="anthropic-unknown-block"),
    pytest.param("anthropic", "/v1/messages", anthropic(mcp_servers=[{"url": "https://x", "name": "m"}]),
                 "mcp_servers", id="anthropic-mcp-servers"),
    pytest.param("anthropic", "/v1/messages", anthropic({"role": "user", "content": "hi", "extra": T}),
                 "messages[0].extra", id="anthropic-unknown-message-key"),
    pytest.param("anthropic", "/v1/messages", anthropic(user({"type": "tool_use", "name": "f", "input": {}},
                                                             {"type": "text", "text": 5})),
                 "messages[0].content[1].text", id="anthropic-text-not-a-string"),
    pytest.param("anthropic", "/v1/complete", {"prompt": T}, "path", id="anthropic-legacy-complete"),
]


@pytest.mark.parametrize("fmt, path, body, where", UNKNOWN_SHAPES)
def test_unknown_shapes_are_refused_naming_the_field(fmt, path, body, where):
    with pytest.raises(UnknownShape) as caught:
        FORMATS[fmt].extract(path, body)
    assert caught.value.where == where


BLOCKED = Refusal(400, "prompt_injection_detected", "The request was blocked.")
UNAVAILABLE = Refusal(503, "scanner_unavailable", "The scanner is unavailable.")

ERROR_SHAPES = [
    pytest.param("anthropic", BLOCKED, {"type": "error", "request_id": "req_1", "error": {
        "type": "invalid_request_error", "message": "The request was blocked. (request id req_1)",
        "details": {"error_code": "prompt_injection_detected"}}}, id="anthropic-400"),
    pytest.param("anthropic", UNAVAILABLE, {"type": "error", "request_id": "req_1", "error": {
        "type": "api_error", "message": "The scanner is unavailable. (request id req_1)",
        "details": {"error_code": "scanner_unavailable"}}}, id="anthropic-503"),
    pytest.param("anthropic", Refusal(529, "overloaded", "Busy."), {"type": "error", "request_id": "req_1", "error": {
        "type": "overloaded_error", "message": "Busy. (request id req_1)", "details": {"error_code": "overloaded"}}},
        id="anthropic-529"),
]


@pytest.mark.parametrize("fmt, refusal, expected", ERROR_SHAPES)
def test_errors_take_the_provider_shape_with_the_request_id(fmt, refusal, expected):
    headers, body = FORMATS[fmt].error_body(refusal, "req_1")
    assert ("Content-Type", "application/json") in headers
    assert json.loads(body) == expected
