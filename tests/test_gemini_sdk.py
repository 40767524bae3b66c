"""End to end: the official `google-genai` SDK through the gateway's `gemini` route to a fake provider."""

from __future__ import annotations

import json
import logging
import re
import threading

import pytest
import requests
from google import genai
from google.genai import errors, types
from werkzeug.wrappers import Response

from support.fakes import ATTACK

PROVIDER_KEY = "AIza-provider-canary"
MODEL = "gemini-test"
REPLY = {"candidates": [{"content": {"role": "model", "parts": [{"text": "Hello!"}]}, "finishReason": "STOP",
                         "index": 0}],
         "usageMetadata": {"promptTokenCount": 1, "candidatesTokenCount": 1, "totalTokenCount": 2},
         "modelVersion": MODEL}
ROUTES = {"gemini": ""}


@pytest.fixture
def request_log():
    """request_log() -> the gateway's request-log lines of this test, once one is written (the gateway logs when
    the response is closed, just after the client has read it)."""
    lines: list[str] = []
    written = threading.Event()
    handler = logging.Handler()
    handler.emit = lambda record: (lines.append(record.getMessage()), written.set())  # type: ignore[method-assign]
    logger = logging.getLogger("lockllm_wsgi.requests")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield lambda: lines if written.wait(5) else []
    logger.removeHandler(handler)
    logger.setLevel(level)


def endpoint(method: str) -> re.Pattern:
    # SDK releases differ in the API version they call (v1beta, v1); the gateway serves both.
    return re.compile(rf"/v1(beta)?/models/{MODEL}:{method}")


@pytest.fixture
def client():
    """client(gateway) -> genai.Client; kept referenced until the test ends (the SDK closes its HTTP client when
    the Client object is collected, even mid-call)."""
    made = []

    def make(gateway) -> genai.Client:
        made.append(_client(gateway))
        return made[-1]

    yield make
    for sdk in made:
        sdk.close()


def _client(gateway) -> genai.Client:
    return genai.Client(api_key=PROVIDER_KEY, http_options=types.HttpOptions(
        base_url=f"{gateway.url}/gemini", timeout=10_000, retry_options=types.HttpRetryOptions(attempts=1)))


def test_clean_request_reaches_the_provider_unchanged_with_its_key(client, make_gateway, provider, request_log):
    provider.expect_request(endpoint("generateContent"), method="POST").respond_with_json(REPLY)
    gateway = make_gateway(routes=ROUTES)
    reply = client(gateway).models.generate_content(
        model=MODEL, contents="Say hello", config=types.GenerateContentConfig(system_instruction="Be brief."))
    assert reply.text == "Hello!"
    (received, _), = provider.log
    assert received.headers["x-goog-api-key"] == PROVIDER_KEY
    body = json.loads(received.get_data())
    assert body["contents"] == [{"parts": [{"text": "Say hello"}], "role": "user"}]
    assert body["systemInstruction"]["parts"] == [{"text": "Be brief."}]
    lines = request_log()
    assert lines and not any(PROVIDER_KEY in line for line in lines)


def test_clean_stream_is_relayed(client, make_gateway, provider):
    chunks = [{"candidates": [{"content": {"role": "model", "parts": [{"text": text}]}, "index": 0}]}
              for text in ("Hel", "lo")]
    provider.expect_request(endpoint("streamGenerateContent"), method="POST").respond_with_response(
        Response("".join(f"data: {json.dumps(chunk)}\r\n\r\n" for chunk in chunks), content_type="text/event-stream"))
    gateway = make_gateway(routes=ROUTES)
    pieces = [chunk.text for chunk in client(gateway).models.generate_content_stream(model=MODEL, contents="hi")]
    assert pieces == ["Hel", "lo"]
    (received, _), = provider.log
    assert received.args["alt"] == "sse"


def test_a_key_in_the_query_is_relayed_and_never_logged(make_gateway, provider, request_log):
    provider.expect_request(endpoint("generateContent"), method="POST").respond_with_json(REPLY)
    gateway = make_gateway(routes=ROUTES)
    answer = requests.post(f"{gateway.url}/gemini/v1beta/models/{MODEL}:generateContent?key={PROVIDER_KEY}",
                           json={"contents": [{"parts": [{"text": "hi"}]}]}, timeout=10)
    assert answer.status_code == 200
    (received, _), = provider.log
    assert received.args["key"] == PROVIDER_KEY
    lines = request_log()
    assert lines and not any(PROVIDER_KEY in line for line in lines)


FUNCTION_CALL = types.Content(role="model", parts=[types.Part(function_call=types.FunctionCall(
    name="lookup", args={"q": "x"}))])


@pytest.mark.parametrize("contents, config, where", [
    pytest.param("hi", types.GenerateContentConfig(system_instruction=ATTACK), "systemInstruction.parts[0].text",
                 id="system-instruction"),
    pytest.param(ATTACK, None, "contents[0].parts[0].text", id="user-text"),
    pytest.param([types.Content(role="user", parts=[types.Part(text="hi")]),
                  types.Content(role="model", parts=[types.Part(text=ATTACK)]),
                  types.Content(role="user", parts=[types.Part(text="go on")])], None, "contents[1].parts[0].text",
                 id="earlier-model-turn"),
    pytest.param([types.Content(role="user", parts=[types.Part(text="hi")]), types.Content(role="model", parts=[
        types.Part(function_call=types.FunctionCall(name="lookup", args={"q": ATTACK}))])], None,
        "contents[1].parts[0].functionCall.args.q", id="function-call-args"),
    pytest.param([types.Content(role="user", parts=[types.Part(text="hi")]), FUNCTION_CALL,
                  types.Content(role="user", parts=[types.Part(function_response=types.FunctionResponse(
                      name="lookup", response={"result": ATTACK}))])], None,
                 "contents[2].parts[0].functionResponse.response.result", id="function-response"),
    pytest.param("hi", types.GenerateContentConfig(tools=[types.Tool(function_declarations=[
        types.FunctionDeclaration(name="lookup", description=ATTACK)])]),
        "tools[0].functionDeclarations[0].description", id="function-description"),
])
def test_injection_in_any_field_is_blocked_with_client_error(client, make_gateway, provider, contents, config, where):
    gateway = make_gateway(routes=ROUTES)
    with pytest.raises(errors.ClientError) as caught:
        client(gateway).models.generate_content(model=MODEL, contents=contents, config=config)
    assert caught.value.code == 400 and caught.value.status == "INVALID_ARGUMENT"
    assert where in caught.value.message and "request id req_" in caught.value.message
    assert provider.log == []


def test_injection_in_a_streamed_request_is_blocked(client, make_gateway, provider):
    gateway = make_gateway(routes=ROUTES)
    with pytest.raises(errors.ClientError):
        list(client(gateway).models.generate_content_stream(model=MODEL, contents=ATTACK))
    assert provider.log == []


def test_scanner_outage_is_a_server_error_unavailable(client, make_gateway, provider, scanner):
    scanner.clear()
    scanner.expect_request("/v1/scan").respond_with_json({"error": {"message": "down"}}, status=500)
    gateway = make_gateway(routes=ROUTES)
    with pytest.raises(errors.ServerError) as caught:
        client(gateway).models.generate_content(model=MODEL, contents="hi")
    assert caught.value.code == 503 and caught.value.status == "UNAVAILABLE"
    assert provider.log == []
