"""The Include path with the distribution's mod_wsgi: a separate Apache that loads Debian's libapache2-mod-wsgi-py3
(4.9.4, Python 3.11) and already runs another WSGI application; `lockllm-wsgi apache-config` asks it which
mod_wsgi it loads and prints Defines for that release; the shipped vhost then serves the SDK over HTTPS while the
other application keeps answering from its own daemon group, with its own Python, untouched."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import threading
import uuid

import openai
import pytest
import requests
from werkzeug.wrappers import Response

from lockllm_wsgi.apache_config import BODY_LIMIT_MARGIN_BYTES, module_file_facts

from support.apache_distro import DISTRO_MOD_WSGI, distro_module_missing, running_distro_apache
from support.apache_servers import public_folder, worker_owned_folder
from support.fakes import ATTACK, COMPLETION, scans
from support.gateway import write_config

MISSING = distro_module_missing()
pytestmark = [pytest.mark.apache, pytest.mark.skipif(MISSING is not None, reason=MISSING or "")]

PROVIDER_KEY = "sk-provider-canary-distro-7"
MAX_BODY = 64 * 1024


@pytest.fixture(scope="module")
def gateway(scanner_server, provider_server):
    root = public_folder("lockllm-distro-")
    cache = worker_owned_folder(os.path.join(root, "cache"))
    config = write_config(pathlib.Path(root), scanner_server.url_for("/v1/scan"),
                          provider_server.url_for("").rstrip("/"), extra=f"[limits]\nmax_body_bytes = {MAX_BODY}\n",
                          scanner_extra=f"cache = sqlite:///{cache}/verdicts.sqlite\n")
    with running_distro_apache(config, root) as running:
        yield running
    shutil.rmtree(root, ignore_errors=True)


def _other(gateway) -> requests.Response:
    answer = requests.get(f"{gateway.other_base}/", verify=gateway.verify, timeout=10)
    assert answer.status_code == 200, answer.text
    return answer


@pytest.fixture(autouse=True)
def other_app_keeps_answering(gateway):
    """Before and after every test, the server's other application answers from its own group and Python."""
    before = _other(gateway).json()
    yield
    after = _other(gateway).json()
    assert before["group"] == after["group"] == "other"
    assert after["prefix"] == "/usr"  # the module's own Python, not the gateway's venv


def sdk(gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.base}/openai/v1", api_key=PROVIDER_KEY, max_retries=0, timeout=20,
                         http_client=openai.DefaultHttpxClient(verify=gateway.tls))


def unique(text: str) -> str:
    return f"{text} [{uuid.uuid4().hex[:8]}]"


def test_apache_config_found_the_loaded_distribution_module(gateway):
    release, python = module_file_facts(DISTRO_MOD_WSGI)
    version = ".".join(map(str, release))
    assert f"# mod_wsgi {version}, loaded by the server from {DISTRO_MOD_WSGI}, built for Python {python}" \
        in gateway.apache_config
    assert "LoadModule" not in gateway.apache_config.replace("# ", "")  # the server's module, loaded once
    if release < (6, 1):
        assert "\nDefine LOCKLLM_RESPONSE_FLUSH_DELAY" not in gateway.apache_config
    # Both applications are answered by that module: the Server header names it (ServerTokens Full).
    assert f"mod_wsgi/{version}" in _other(gateway).headers["server"]
    assert _other(gateway).json()["mod_wsgi"] == version


def test_allowed_completion_is_relayed_with_the_provider_key(gateway, scanner, provider):
    provider.expect_request("/v1/chat/completions", method="POST").respond_with_json(COMPLETION)
    text = unique("Say hello")
    with sdk(gateway) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-test", messages=[{"role": "user", "content": text}])
    assert raw.parse().choices[0].message.content == "Hello!"
    assert raw.headers["x-lockllm-scanned"] == "true"
    (received, _), = provider.log
    assert received.headers["Authorization"] == f"Bearer {PROVIDER_KEY}"
    assert [scan["input"] for scan in scans(scanner)] == [text]


def test_injection_is_blocked_with_the_sdk_error(gateway, scanner, provider):
    with sdk(gateway) as client, pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": unique(ATTACK)}])
    assert caught.value.code == "prompt_injection_detected"
    assert provider.log == []


def test_stream_events_arrive_while_the_provider_is_still_sending_and_the_other_app_answers(gateway, scanner,
                                                                                           provider):
    held = threading.Event()

    def stream(_request):
        def events():
            chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
                     "choices": [{"index": 0, "delta": {"content": "Hel"}, "finish_reason": None}]}
            yield f"data: {json.dumps(chunk)}\n\n"
            held.wait(5)  # the rest only once the client has the first token (after 5 s: the test fails)
            chunk["choices"][0]["delta"]["content"] = "lo"
            yield f"data: {json.dumps(chunk)}\n\n"
            yield "data: [DONE]\n\n"
        return Response(events(), content_type="text/event-stream")

    provider.expect_request("/v1/chat/completions", method="POST").respond_with_handler(stream)
    pieces = []
    with sdk(gateway) as client, client.chat.completions.with_streaming_response.create(
            model="m", messages=[{"role": "user", "content": unique("hi")}], stream=True) as streaming:
        assert "content-encoding" not in streaming.headers
        for event in streaming.parse():
            if not pieces:
                _other(gateway)  # mid-stream, the other application answers
                held.set()
            pieces.append(event.choices[0].delta.content)
    assert pieces == ["Hel", "lo"] and held.is_set()


def _chunks(payload: bytes, size: int):
    for start in range(0, len(payload), size):
        yield payload[start:start + size]


def test_chunked_request_body_is_scanned_and_relayed(gateway, scanner, provider):
    provider.expect_request("/v1/chat/completions", method="POST").respond_with_json(COMPLETION)
    text = unique("Summarise this file")
    payload = json.dumps({"model": "gpt-test", "messages": [{"role": "user", "content": text}]}).encode()
    answer = requests.post(f"{gateway.base}/openai/v1/chat/completions", data=_chunks(payload, 16),
                           verify=gateway.verify, timeout=20,
                           headers={"Content-Type": "application/json", "Authorization": f"Bearer {PROVIDER_KEY}"})
    assert answer.status_code == 200, answer.text
    assert answer.request.headers["Transfer-Encoding"] == "chunked"
    (received, _), = provider.log
    assert received.get_data() == payload
    assert [scan["input"] for scan in scans(scanner)] == [text]


@pytest.mark.parametrize("size, chunked", [
    pytest.param(MAX_BODY, True, id="chunked-over-the-app-cap"),
    pytest.param(MAX_BODY + BODY_LIMIT_MARGIN_BYTES, False, id="content-length-over-apache-limit"),
])
def test_oversized_body_gets_413_in_the_sdk_error_shape(gateway, scanner, provider, size, chunked):
    payload = json.dumps({"model": "m", "messages": [{"role": "user", "content": "x" * size}]}).encode()
    answer = requests.post(f"{gateway.base}/openai/v1/chat/completions", verify=gateway.verify, timeout=20,
                           data=_chunks(payload, 4096) if chunked else payload,
                           headers={"Content-Type": "application/json"})
    assert answer.status_code == 413
    assert answer.json()["error"]["code"] == "request_too_large"
    assert scanner.log == [] and provider.log == []
