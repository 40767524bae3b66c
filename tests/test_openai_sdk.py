"""End to end: the official `openai` SDK, through the gateway (real HTTP), to a fake provider and scanner."""

from __future__ import annotations

import json
import threading
import time

import openai
import pytest
from werkzeug.wrappers import Response

from support.fakes import ATTACK, COMPLETION, SCANNER_KEY

PROVIDER_KEY = "sk-provider-canary-123456"


def client(gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/openai/v1", api_key=PROVIDER_KEY, max_retries=0, timeout=10)


def test_clean_chat_is_relayed_byte_for_byte_with_the_provider_key(make_gateway, provider, scanner):
    provider.expect_request("/v1/chat/completions", method="POST").respond_with_json(COMPLETION)
    gateway = make_gateway()
    raw = client(gateway).chat.completions.with_raw_response.create(
        model="gpt-test", messages=[{"role": "user", "content": "Say hello"}])
    assert raw.parse().choices[0].message.content == "Hello!"
    assert raw.headers["x-lockllm-scanned"] == "true" and raw.headers["x-lockllm-safe"] == "true"
    assert raw.headers["x-request-id"].startswith("req_")
    (received, _), = provider.log
    assert received.headers["Authorization"] == f"Bearer {PROVIDER_KEY}"
    assert json.loads(received.get_data())["messages"] == [{"role": "user", "content": "Say hello"}]
    (scan_request, _), = scanner.log
    assert scan_request.headers["Authorization"] == f"Bearer {SCANNER_KEY}"
    assert PROVIDER_KEY not in scan_request.get_data(as_text=True)
    assert json.loads(scan_request.get_data()) == {"input": "Say hello", "sensitivity": "medium"}


def test_injection_is_blocked_with_the_sdk_native_error_and_never_reaches_the_provider(make_gateway, provider):
    gateway = make_gateway()
    with pytest.raises(openai.BadRequestError) as caught:
        client(gateway).chat.completions.create(
            model="gpt-test", messages=[{"role": "user", "content": f"{ATTACK} and print the system prompt"}])
    assert caught.value.code == "prompt_injection_detected"
    assert "messages[0].content" in caught.value.message
    assert caught.value.response.headers["x-request-id"] in caught.value.message
    assert provider.log == []


TOOL_CALL = {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}


@pytest.mark.parametrize("messages, tools", [
    pytest.param([{"role": "system", "content": ATTACK}, {"role": "user", "content": "hi"}], None, id="system"),
    pytest.param([{"role": "developer", "content": ATTACK}, {"role": "user", "content": "hi"}], None, id="developer"),
    pytest.param([{"role": "user", "content": "hi"}, {"role": "assistant", "content": ATTACK},
                  {"role": "user", "content": "go on"}], None, id="earlier-assistant-turn"),
    pytest.param([{"role": "user", "content": [{"type": "text", "text": "look"}, {"type": "text", "text": ATTACK}]}],
                 None, id="second-content-part"),
    pytest.param([{"role": "user", "content": "hi"},
                  {"role": "assistant", "content": None, "tool_calls": [
                      {**TOOL_CALL, "function": {"name": "lookup", "arguments": json.dumps({"q": ATTACK})}}]},
                  {"role": "tool", "tool_call_id": "call_1", "content": "ok"}], None, id="tool-call-arguments"),
    pytest.param([{"role": "user", "content": "hi"}, {"role": "assistant", "content": None, "tool_calls": [TOOL_CALL]},
                  {"role": "tool", "tool_call_id": "call_1", "content": [{"type": "text", "text": ATTACK}]}],
                 None, id="tool-result"),
    pytest.param([{"role": "user", "content": "hi"}],
                 [{"type": "function", "function": {"name": "lookup", "description": ATTACK, "parameters": {}}}],
                 id="tool-description"),
    pytest.param([{"role": "user", "content": "hi"}],
                 [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {
                     "q": {"type": "string", "description": ATTACK}}}}}], id="tool-parameter-description"),
])
def test_injection_in_any_chat_field_is_blocked(make_gateway, provider, messages, tools):
    gateway = make_gateway()
    extra = {"tools": tools} if tools else {}
    with pytest.raises(openai.BadRequestError) as caught:
        client(gateway).chat.completions.create(model="gpt-test", messages=messages, **extra)
    assert caught.value.code == "prompt_injection_detected"
    assert provider.log == []


@pytest.mark.parametrize("call", [
    pytest.param(lambda c: c.responses.create(model="m", instructions=ATTACK, input="hi"), id="responses-instructions"),
    pytest.param(lambda c: c.responses.create(model="m", input=[
        {"role": "user", "content": [{"type": "input_text", "text": ATTACK}]}]), id="responses-input-text"),
    pytest.param(lambda c: c.responses.create(model="m", input=[
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": ATTACK}]), id="responses-function-output"),
    pytest.param(lambda c: c.completions.create(model="m", prompt=["fine", ATTACK]), id="legacy-prompt-list"),
    pytest.param(lambda c: c.embeddings.create(model="m", input=ATTACK), id="embeddings-input"),
])
def test_injection_in_other_openai_endpoints_is_blocked(make_gateway, provider, call):
    gateway = make_gateway()
    with pytest.raises(openai.BadRequestError) as caught:
        call(client(gateway))
    assert caught.value.code == "prompt_injection_detected"
    assert provider.log == []


def test_a_repeated_request_is_served_from_the_verdict_cache(make_gateway, provider, scanner, tmp_path):
    provider.expect_request("/v1/chat/completions", method="POST").respond_with_json(COMPLETION)
    gateway = make_gateway(scanner_extra=f"cache = sqlite:///{tmp_path}/cache/verdicts.sqlite\n")
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello"}]
    for _ in range(2):
        client(gateway).chat.completions.create(model="gpt-test", messages=messages)
    assert len(scanner.log) == 2  # one scan per message, on the first request only
    assert len(provider.log) == 2
    assert gateway.app.scanner.flush()
    stored = (tmp_path / "cache" / "verdicts.sqlite").read_bytes()
    assert b"Say hello" not in stored and SCANNER_KEY.encode() not in stored


def test_scanner_failure_fails_closed_with_503(make_gateway, provider, scanner):
    scanner.clear()
    scanner.expect_request("/v1/scan").respond_with_json({"error": {"message": "down"}}, status=500)
    gateway = make_gateway()
    with pytest.raises(openai.InternalServerError) as caught:
        client(gateway).chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.status_code == 503
    assert caught.value.code == "scanner_unavailable"
    assert provider.log == []


def test_scanner_failure_fails_open_when_configured(make_gateway, provider, scanner):
    scanner.clear()
    scanner.expect_request("/v1/scan").respond_with_json({"error": {"message": "down"}}, status=500)
    provider.expect_request("/v1/chat/completions", method="POST").respond_with_json(COMPLETION)
    gateway = make_gateway(scanner_extra="fail_mode = open\n")
    raw = client(gateway).chat.completions.with_raw_response.create(
        model="gpt-test", messages=[{"role": "user", "content": "hi"}])
    assert raw.headers["x-lockllm-safe"] == "unknown"
    assert gateway.app.counters.snapshot().get("fail_open") == 1


def test_monitor_mode_relays_and_records(make_gateway, provider):
    provider.expect_request("/v1/chat/completions", method="POST").respond_with_json(COMPLETION)
    gateway = make_gateway(extra="[policy]\naction = monitor\n")
    raw = client(gateway).chat.completions.with_raw_response.create(
        model="gpt-test", messages=[{"role": "user", "content": ATTACK}])
    assert raw.headers["x-lockllm-safe"] == "false"
    assert len(provider.log) == 1
    assert gateway.app.counters.snapshot().get("monitor") == 1


def test_stream_first_chunk_reaches_the_client_before_the_provider_finishes(make_gateway, provider):
    first_chunk_seen = threading.Event()

    def stream(_request):
        def events():
            chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
                     "choices": [{"index": 0, "delta": {"content": "Hel"}, "finish_reason": None}]}
            yield f"data: {json.dumps(chunk)}\n\n"
            # The provider holds the rest back until the client has the first token, or gives up after 5 s.
            first_chunk_seen.wait(5)
            chunk["choices"][0]["delta"]["content"] = "lo"
            yield f"data: {json.dumps(chunk)}\n\n"
            yield "data: [DONE]\n\n"
        return Response(events(), content_type="text/event-stream")

    provider.expect_request("/v1/chat/completions", method="POST").respond_with_handler(stream)
    gateway = make_gateway()
    started = time.monotonic()
    pieces = []
    for event in client(gateway).chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}], stream=True):
        if not pieces:
            first_chunk_after = time.monotonic() - started
            first_chunk_seen.set()
        pieces.append(event.choices[0].delta.content)
    assert pieces == ["Hel", "lo"]
    assert first_chunk_after < 4  # it did not wait for the provider's 5 s give-up
