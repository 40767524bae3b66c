"""End to end: the `openai` SDK's Azure clients through the gateway's `azure` route to a fake Azure endpoint."""

from __future__ import annotations

import json

import openai
import pytest
from werkzeug.wrappers import Response

from support.fakes import ATTACK, COMPLETION

PROVIDER_KEY = "azure-provider-canary-key"
API_VERSION = "2024-10-21"
ROUTES = {"azure": ""}


def deployment_client(gateway) -> openai.AzureOpenAI:
    return openai.AzureOpenAI(azure_endpoint=f"{gateway.url}/azure", api_key=PROVIDER_KEY, api_version=API_VERSION,
                              max_retries=0, timeout=10)


def v1_client(gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/azure/openai/v1", api_key=PROVIDER_KEY, max_retries=0, timeout=10)


def test_deployment_chat_reaches_azure_unchanged_with_key_and_api_version(make_gateway, provider):
    provider.expect_request("/openai/deployments/gpt-4o/chat/completions", method="POST").respond_with_json(COMPLETION)
    gateway = make_gateway(routes=ROUTES)
    messages = [{"role": "user", "content": "Say hello"}]
    reply = deployment_client(gateway).chat.completions.create(model="gpt-4o", messages=messages)
    assert reply.choices[0].message.content == "Hello!"
    (received, _), = provider.log
    assert received.headers["api-key"] == PROVIDER_KEY
    assert received.args["api-version"] == API_VERSION
    assert json.loads(received.get_data())["messages"] == messages


def test_v1_chat_reaches_azure(make_gateway, provider):
    provider.expect_request("/openai/v1/chat/completions", method="POST").respond_with_json(COMPLETION)
    gateway = make_gateway(routes=ROUTES)
    reply = v1_client(gateway).chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content == "Hello!"
    assert len(provider.log) == 1


@pytest.mark.parametrize("call, where", [
    pytest.param(lambda gw: deployment_client(gw).chat.completions.create(
        model="gpt-4o", messages=[{"role": "system", "content": ATTACK}, {"role": "user", "content": "hi"}]),
        "messages[0].content", id="deployment-chat-system"),
    pytest.param(lambda gw: deployment_client(gw).embeddings.create(model="embed", input=["fine", ATTACK]),
                 "input[1]", id="deployment-embeddings"),
    pytest.param(lambda gw: v1_client(gw).chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": [{"type": "text", "text": ATTACK}]}]),
        "messages[0].content[0].text", id="v1-chat-part"),
    pytest.param(lambda gw: v1_client(gw).responses.create(model="gpt-4o", input=ATTACK), "input",
                 id="v1-responses"),
])
def test_injection_is_blocked_with_bad_request_error(make_gateway, provider, call, where):
    gateway = make_gateway(routes=ROUTES)
    with pytest.raises(openai.BadRequestError) as caught:
        call(gateway)
    assert caught.value.code == "prompt_injection_detected" and where in caught.value.message
    assert provider.log == []


def test_on_your_data_is_refused_before_any_scan(make_gateway, provider, scanner):
    gateway = make_gateway(routes=ROUTES)
    with pytest.raises(openai.BadRequestError) as caught:
        deployment_client(gateway).chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}],
            extra_body={"data_sources": [{"type": "azure_search", "parameters": {"endpoint": "https://s"}}]})
    assert caught.value.code == "unrecognized_request" and "data_sources" in caught.value.message
    assert provider.log == [] and scanner.log == []


def test_deployment_stream_is_relayed(make_gateway, provider):
    chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o",
             "choices": [{"index": 0, "delta": {"content": "Hello"}, "finish_reason": None}]}
    provider.expect_request("/openai/deployments/gpt-4o/chat/completions", method="POST").respond_with_response(
        Response(f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n", content_type="text/event-stream"))
    gateway = make_gateway(routes=ROUTES)
    pieces = [event.choices[0].delta.content for event in deployment_client(gateway).chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True)]
    assert pieces == ["Hello"]
    assert json.loads(provider.log[0][0].get_data())["stream"] is True
