"""End to end: the official `anthropic` SDK through the gateway's `anthropic` route to a fake provider."""

from __future__ import annotations

import json

import anthropic
import pytest
from werkzeug.wrappers import Response

from support.fakes import ATTACK

MESSAGE = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-test",
           "content": [{"type": "text", "text": "Hello!"}], "stop_reason": "end_turn", "stop_sequence": None,
           "usage": {"input_tokens": 1, "output_tokens": 1}}
PROVIDER_KEY = "sk-ant-provider-canary"
ROUTES = {"anthropic": ""}


def client(gateway) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=f"{gateway.url}/anthropic", api_key=PROVIDER_KEY, max_retries=0, timeout=10)


def test_clean_message_reaches_the_provider_unchanged_with_its_key(make_gateway, provider):
    provider.expect_request("/v1/messages", method="POST").respond_with_json(MESSAGE)
    gateway = make_gateway(routes=ROUTES)
    sent = {"model": "claude-test", "max_tokens": 10, "system": "Be brief.",
            "messages": [{"role": "user", "content": "Say hello"}]}
    reply = client(gateway).messages.create(**sent)
    assert reply.content[0].text == "Hello!"
    (received, _), = provider.log
    assert json.loads(received.get_data()) == sent
    # This SDK version sends the key as a bearer token; older ones used x-api-key: either passes through.
    assert received.headers["Authorization"] == f"Bearer {PROVIDER_KEY}"
    assert received.headers["anthropic-version"]


def test_clean_stream_is_relayed(make_gateway, provider):
    events = [
        ("message_start", {"type": "message_start", "message": {**MESSAGE, "content": []}}),
        ("content_block_start", {"type": "content_block_start", "index": 0,
                                 "content_block": {"type": "text", "text": ""}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "text_delta", "text": "Hel"}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "text_delta", "text": "lo"}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("message_stop", {"type": "message_stop"}),
    ]
    body = "".join(f"event: {name}\ndata: {json.dumps(data)}\n\n" for name, data in events)
    provider.expect_request("/v1/messages", method="POST").respond_with_response(
        Response(body, content_type="text/event-stream"))
    gateway = make_gateway(routes=ROUTES)
    with client(gateway).messages.stream(model="claude-test", max_tokens=10,
                                         messages=[{"role": "user", "content": "hi"}]) as stream:
        assert "".join(stream.text_stream) == "Hello"
    (received, _), = provider.log
    assert json.loads(received.get_data())["stream"] is True


TOOL_USE = {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "lookup", "input": {"q": "x"}}]}


@pytest.mark.parametrize("fields, where", [
    pytest.param({"system": ATTACK}, "system", id="system"),
    pytest.param({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": ATTACK},
                               {"role": "user", "content": "go on"}]}, "messages[1].content", id="earlier-turn"),
    pytest.param({"messages": [{"role": "user", "content": [{"type": "text", "text": "a"},
                                                            {"type": "text", "text": ATTACK}]}]},
                 "messages[0].content[1].text", id="second-text-block"),
    pytest.param({"messages": [{"role": "user", "content": "hi"}, {**TOOL_USE, "content": [
        {**TOOL_USE["content"][0], "input": {"q": ATTACK}}]}, {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "t1", "content": "ok"}]}]},
        "messages[1].content[0].input.q", id="tool-use-input"),
    pytest.param({"messages": [{"role": "user", "content": "hi"}, TOOL_USE, {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "t1", "content": ATTACK}]}]},
        "messages[2].content[0].content", id="tool-result-string"),
    pytest.param({"messages": [{"role": "user", "content": "hi"}, TOOL_USE, {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": ATTACK}]}]}]},
        "messages[2].content[0].content[0].text", id="tool-result-blocks"),
    pytest.param({"tools": [{"name": "lookup", "description": ATTACK, "input_schema": {"type": "object"}}]},
                 "tools[0].description", id="tool-description"),
])
def test_injection_in_any_field_is_blocked_with_bad_request_error(make_gateway, provider, fields, where):
    gateway = make_gateway(routes=ROUTES)
    request = {"model": "claude-test", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}], **fields}
    with pytest.raises(anthropic.BadRequestError) as caught:
        client(gateway).messages.create(**request)
    error = caught.value
    assert error.type == "invalid_request_error" and error.error_code == "prompt_injection_detected"
    assert where in error.api_message and error.request_id in error.api_message
    assert provider.log == []


def test_injection_in_a_streamed_request_is_blocked_before_the_stream(make_gateway, provider):
    gateway = make_gateway(routes=ROUTES)
    with pytest.raises(anthropic.BadRequestError):
        with client(gateway).messages.stream(model="claude-test", max_tokens=10,
                                             messages=[{"role": "user", "content": ATTACK}]) as stream:
            list(stream.text_stream)
    assert provider.log == []


def test_count_tokens_is_scanned(make_gateway, provider):
    gateway = make_gateway(routes=ROUTES)
    with pytest.raises(anthropic.BadRequestError):
        client(gateway).messages.count_tokens(model="claude-test", messages=[{"role": "user", "content": ATTACK}])
    assert provider.log == []


def test_scanner_outage_is_the_sdk_service_unavailable_error(make_gateway, provider, scanner):
    scanner.clear()
    scanner.expect_request("/v1/scan").respond_with_json({"error": {"message": "down"}}, status=500)
    gateway = make_gateway(routes=ROUTES)
    with pytest.raises(anthropic.InternalServerError) as caught:
        client(gateway).messages.create(model="claude-test", max_tokens=10,
                                        messages=[{"role": "user", "content": "hi"}])
    assert caught.value.status_code == 503 and caught.value.error_code == "scanner_unavailable"
    assert provider.log == []
