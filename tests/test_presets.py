"""OpenAI-compatible host presets: the table fills a route's upstream and format; the `mistralai` SDK, pointed at
a preset route, reaches the (fake) host unchanged and gets blocked with its own error."""

from __future__ import annotations

import json
import textwrap

import pytest
from mistralai.client import Mistral
from mistralai.client.errors import SDKError

from lockllm_wsgi.config import ConfigError, load_settings
from lockllm_wsgi.presets import PRESETS
from support.fakes import ATTACK, COMPLETION, SCANNER_KEY


def route_settings(tmp_path, keys: str):
    path = tmp_path / "lockllm.ini"
    path.write_text(f"[scanner]\napi_key = {SCANNER_KEY}\n\n[route:host]\nprefix = /host\n" + textwrap.dedent(keys))
    (route,) = load_settings(str(path)).routes
    return route


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_a_preset_fills_upstream_and_openai_format(tmp_path, preset):
    route = route_settings(tmp_path, f"preset = {preset}\n")
    assert (route.upstream, route.format) == (PRESETS[preset], "openai")


@pytest.mark.parametrize("keys, expected", [
    pytest.param("preset = ollama\nupstream = http://gpu-box:11434\n", ("http://gpu-box:11434", "openai"),
                 id="upstream-overrides-preset"),
    pytest.param("preset = vllm\nformat = openai\n", ("http://localhost:8000", "openai"), id="format-openai-allowed"),
])
def test_preset_with_explicit_keys(tmp_path, keys, expected):
    route = route_settings(tmp_path, keys)
    assert (route.upstream, route.format) == expected


@pytest.mark.parametrize("keys, named", [
    pytest.param("preset = groq\nformat = anthropic\n", "[route:host] format", id="non-openai-format"),
    pytest.param("preset = skynet\n", "[route:host] preset", id="unknown-preset"),
])
def test_bad_preset_settings_stop_start_up_naming_the_key(tmp_path, keys, named):
    with pytest.raises(ConfigError, match=named.replace("[", r"\[").replace("]", r"\]")):
        route_settings(tmp_path, keys)


PROVIDER_KEY = "mistral-provider-canary"



@pytest.fixture
def mistral_gateway(make_gateway, provider):
    """A mistral preset route whose `upstream` points at the fake host instead of api.mistral.ai."""
    return make_gateway(extra=f"\n[route:mistral]\nprefix = /mistral\npreset = mistral\n"
                              f"upstream = {provider.url_for('').rstrip('/')}\n")


def client(gateway) -> Mistral:
    return Mistral(api_key=PROVIDER_KEY, server_url=f"{gateway.url}/mistral")


def test_clean_mistral_chat_reaches_the_host_unchanged(mistral_gateway, provider):
    provider.expect_request("/v1/chat/completions", method="POST").respond_with_json(COMPLETION)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello"}]
    reply = client(mistral_gateway).chat.complete(model="mistral-small-latest", messages=messages)
    assert reply.choices[0].message.content == "Hello!"
    (received, _), = provider.log
    assert received.headers["Authorization"] == f"Bearer {PROVIDER_KEY}"
    assert json.loads(received.get_data())["messages"] == messages


@pytest.mark.parametrize("messages", [
    pytest.param([{"role": "system", "content": ATTACK}, {"role": "user", "content": "hi"}], id="system"),
    pytest.param([{"role": "user", "content": "hi"}, {"role": "assistant", "content": ATTACK},
                  {"role": "user", "content": "go on"}], id="earlier-assistant-turn"),
])
def test_injection_through_a_preset_is_blocked_with_sdk_error(mistral_gateway, provider, messages):
    with pytest.raises(SDKError) as caught:
        client(mistral_gateway).chat.complete(model="mistral-small-latest", messages=messages)
    assert caught.value.raw_response.status_code == 400
    assert json.loads(caught.value.body)["error"]["code"] == "prompt_injection_detected"
    assert provider.log == []
