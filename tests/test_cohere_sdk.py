"""End to end: the official `cohere` SDK (v1 and v2 clients) through the gateway's `cohere` route."""

from __future__ import annotations

import json

import cohere
import pytest
from cohere.errors import BadRequestError, ServiceUnavailableError
from werkzeug.wrappers import Response

from support.fakes import ATTACK

PROVIDER_KEY = "co-provider-canary"
ROUTES = {"cohere": ""}
V2_REPLY = {"id": "r1", "finish_reason": "COMPLETE", "message": {"role": "assistant", "content": [
    {"type": "text", "text": "Hello!"}]}, "usage": {}}
V1_REPLY = {"text": "Hello!", "generation_id": "g1", "finish_reason": "COMPLETE"}


def v2(gateway) -> cohere.ClientV2:
    return cohere.ClientV2(api_key=PROVIDER_KEY, base_url=f"{gateway.url}/cohere", timeout=10)


def v1(gateway) -> cohere.Client:
    return cohere.Client(api_key=PROVIDER_KEY, base_url=f"{gateway.url}/cohere", timeout=10)


def test_clean_v2_chat_reaches_cohere_unchanged_with_its_key(make_gateway, provider):
    provider.expect_request("/v2/chat", method="POST").respond_with_json(V2_REPLY)
    gateway = make_gateway(routes=ROUTES)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello"}]
    reply = v2(gateway).chat(model="command-a", messages=messages)
    assert reply.message.content[0].text == "Hello!"
    (received, _), = provider.log
    assert received.headers["Authorization"] == f"Bearer {PROVIDER_KEY}"
    assert json.loads(received.get_data())["messages"] == messages


def test_clean_v2_stream_is_relayed(make_gateway, provider):
    events = [{"type": "message-start", "id": "r1", "delta": {"message": {"role": "assistant"}}},
              *({"type": "content-delta", "index": 0, "delta": {"message": {"content": {"text": text}}}}
                for text in ("Hel", "lo")),
              {"type": "message-end", "delta": {"finish_reason": "COMPLETE"}}]
    body = "".join(f"event: {item['type']}\ndata: {json.dumps(item)}\n\n" for item in events)
    provider.expect_request("/v2/chat", method="POST").respond_with_response(
        Response(body, content_type="text/event-stream"))
    gateway = make_gateway(routes=ROUTES)
    pieces = [item.delta.message.content.text for item in v2(gateway).chat_stream(
        model="command-a", messages=[{"role": "user", "content": "hi"}]) if item.type == "content-delta"]
    assert pieces == ["Hel", "lo"]
    assert json.loads(provider.log[0][0].get_data())["stream"] is True


def test_clean_v1_chat_is_relayed(make_gateway, provider):
    provider.expect_request("/v1/chat", method="POST").respond_with_json(V1_REPLY)
    gateway = make_gateway(routes=ROUTES)
    assert v1(gateway).chat(message="Say hello", preamble="Be brief.").text == "Hello!"
    assert json.loads(provider.log[0][0].get_data())["message"] == "Say hello"


TOOL_CALL = {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}


@pytest.mark.parametrize("call, where", [
    pytest.param(lambda c: c.chat(model="m", messages=[{"role": "system", "content": ATTACK},
                                                       {"role": "user", "content": "hi"}]),
                 "messages[0].content", id="v2-system"),
    pytest.param(lambda c: c.chat(model="m", messages=[
        {"role": "user", "content": [{"type": "text", "text": ATTACK}]}]),
                 "messages[0].content[0].text", id="v2-user-part"),
    pytest.param(lambda c: c.chat(model="m", messages=[
        {"role": "user", "content": "hi"}, {"role": "assistant", "tool_plan": "look", "tool_calls": [TOOL_CALL]},
        {"role": "tool", "tool_call_id": "c1", "content": [
            {"type": "document", "document": {"data": {"r": ATTACK}}}]}]),
        "messages[2].content[0].document.data.r", id="v2-tool-result"),
    pytest.param(lambda c: c.chat(model="m", messages=[{"role": "user", "content": "hi"}],
                                  documents=[{"data": {"snippet": ATTACK}}]), "documents[0].data.snippet",
                 id="v2-documents"),
    pytest.param(lambda c: c.chat(model="m", messages=[{"role": "user", "content": "hi"}], tools=[
        {"type": "function", "function": {"name": "lookup", "description": ATTACK, "parameters": {}}}]),
        "tools[0].function.description", id="v2-tool-description"),
])
def test_v2_injection_is_blocked_with_bad_request_error(make_gateway, provider, call, where):
    gateway = make_gateway(routes=ROUTES)
    with pytest.raises(BadRequestError) as caught:
        call(v2(gateway))
    assert where in caught.value.body["message"] and caught.value.body["id"] in caught.value.body["message"]
    assert caught.value.status_code == 400
    assert provider.log == []


@pytest.mark.parametrize("call, where", [
    pytest.param(lambda c: c.chat(message=ATTACK), "message", id="v1-message"),
    pytest.param(lambda c: c.chat(message="hi", preamble=ATTACK), "preamble", id="v1-preamble"),
    pytest.param(lambda c: c.chat(message="hi", chat_history=[{"role": "CHATBOT", "message": ATTACK}]),
                 "chat_history[0].message", id="v1-history"),
    pytest.param(lambda c: c.chat(message="hi", documents=[{"title": "t", "snippet": ATTACK}]), "documents[0].snippet",
                 id="v1-documents"),
    pytest.param(lambda c: c.chat(message="", tool_results=[
        {"call": {"name": "lookup", "parameters": {}}, "outputs": [{"answer": ATTACK}]}]),
        "tool_results[0].outputs[0].answer", id="v1-tool-results"),
])
def test_v1_injection_is_blocked_with_bad_request_error(make_gateway, provider, call, where):
    gateway = make_gateway(routes=ROUTES)
    with pytest.raises(BadRequestError) as caught:
        call(v1(gateway))
    assert where in caught.value.body["message"]
    assert provider.log == []


def test_injection_in_a_streamed_request_is_blocked(make_gateway, provider):
    gateway = make_gateway(routes=ROUTES)
    with pytest.raises(BadRequestError):
        list(v2(gateway).chat_stream(model="m", messages=[{"role": "user", "content": ATTACK}]))
    assert provider.log == []


def test_scanner_outage_is_service_unavailable(make_gateway, provider, scanner):
    scanner.clear()
    scanner.expect_request("/v1/scan").respond_with_json({"error": {"message": "down"}}, status=500)
    gateway = make_gateway(routes=ROUTES)
    with pytest.raises(ServiceUnavailableError):
        v2(gateway).chat(model="m", messages=[{"role": "user", "content": "hi"}],
                         request_options={"max_retries": 0})
    assert provider.log == []
