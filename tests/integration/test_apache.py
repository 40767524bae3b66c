"""The gateway under real Apache: mod_wsgi-express (as `lockllm-wsgi serve` starts it) and a system apache2 over
HTTPS whose vhost Includes the shipped snippets unchanged, driven by the openai SDK and requests."""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import statistics
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import cohere
import httpx
import openai
import pytest
from cohere.core.http_sse import SSEError
import requests
from werkzeug.wrappers import Response

from lockllm_wsgi.apache_config import BODY_LIMIT_MARGIN_BYTES
from support.apache_servers import (DrippingProvider, missing_tools, public_folder, running_apache2, running_express,
                                    worker_owned_folder)
from support.answer_streams import WIRES
from support.fakes import ATTACK, COMPLETION, scans
from support.gateway import write_config

MISSING = missing_tools()
pytestmark = [pytest.mark.apache, pytest.mark.skipif(MISSING is not None, reason=MISSING or "")]

PROVIDER_KEY = "sk-provider-canary-apache-42"
MAX_BODY = 64 * 1024


@pytest.fixture(scope="module")
def site(scanner_server, provider_server):
    """A folder www-data can read: the INI file (shared verdict cache, small body cap, a raw-socket route)."""
    root = public_folder("lockllm-apache-")
    dripping = DrippingProvider()
    cache = worker_owned_folder(os.path.join(root, "cache"))
    config = write_config(
        pathlib.Path(root), scanner_server.url_for("/v1/scan"), provider_server.url_for("").rstrip("/"),
        extra=f"[limits]\nmax_body_bytes = {MAX_BODY}\n\n[route:dripping]\nprefix = /dripping\n"
              f"upstream = {dripping.url}\nformat = openai\n\n[output]\nholdback_chars = 200\n\n[route:cohere]\n"
              f"prefix = /cohere\nupstream = {provider_server.url_for('').rstrip('/')}\nformat = cohere\n"
              "output_mode = enforce\n",
        scanner_extra=f"cache = sqlite:///{cache}/verdicts.sqlite\n")
    yield root, config, dripping
    dripping.close()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module", params=["express", "apache2"])
def gateway(request, site):
    root, config, _ = site
    start = running_express if request.param == "express" else running_apache2
    with start(config, root) as running:
        yield running


def sdk(gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.base}/openai/v1", api_key=PROVIDER_KEY, max_retries=0, timeout=20,
                         http_client=openai.DefaultHttpxClient(verify=gateway.tls))


def unique(text: str) -> str:
    """Text no earlier test scanned, so the shared verdict cache cannot answer for the scanner."""
    return f"{text} [{uuid.uuid4().hex[:8]}]"


def test_allowed_completion_is_relayed_with_the_provider_key(gateway, scanner, provider):
    provider.expect_request("/v1/chat/completions", method="POST").respond_with_json(COMPLETION)
    text = unique("Say hello")
    with sdk(gateway) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-test", messages=[{"role": "user", "content": text}])
    assert raw.parse().choices[0].message.content == "Hello!"
    assert raw.headers["x-lockllm-scanned"] == "true"
    (received, _), = provider.log
    assert received.headers["Authorization"] == f"Bearer {PROVIDER_KEY}"  # WSGIPassAuthorization On
    assert [scan["input"] for scan in scans(scanner)] == [text]


def test_injection_is_blocked_with_the_sdk_error(gateway, scanner, provider):
    with sdk(gateway) as client, pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": unique(ATTACK)}])
    assert caught.value.code == "prompt_injection_detected"
    assert provider.log == []


def _first_chunk_seconds(client: openai.OpenAI, first_chunk_seen: threading.Event) -> float:
    started = time.monotonic()
    pieces, first = [], None
    with client.chat.completions.with_streaming_response.create(
            model="m", messages=[{"role": "user", "content": unique("hi")}], stream=True) as streaming:
        assert "content-encoding" not in streaming.headers  # mod_deflate kept out of the stream
        for event in streaming.parse():
            if first is None:
                first = time.monotonic() - started
                first_chunk_seen.set()
            pieces.append(event.choices[0].delta.content)
    assert pieces == ["Hel", "lo"]
    return first


def test_stream_first_chunk_arrives_while_the_provider_is_still_sending(gateway, scanner, provider):
    held = threading.Event()

    def stream(_request):
        def events():
            chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
                     "choices": [{"index": 0, "delta": {"content": "Hel"}, "finish_reason": None}]}
            yield f"data: {json.dumps(chunk)}\n\n"
            held.wait(5)  # the rest only once the client has the first token (or after 5 s: the test fails)
            chunk["choices"][0]["delta"]["content"] = "lo"
            yield f"data: {json.dumps(chunk)}\n\n"
            yield "data: [DONE]\n\n"
        return Response(events(), content_type="text/event-stream")

    provider.expect_request("/v1/chat/completions", method="POST").respond_with_handler(stream)
    timings: dict[str, list[float]] = {"direct": [], gateway.name: []}
    with openai.OpenAI(base_url=provider.url_for("/v1"), api_key=PROVIDER_KEY, max_retries=0, timeout=20) as direct, \
            sdk(gateway) as through:
        for _ in range(5):
            for name, client in (("direct", direct), (gateway.name, through)):
                held.clear()
                timings[name].append(_first_chunk_seconds(client, held))
    medians = {name: round(statistics.median(values) * 1000, 1) for name, values in timings.items()}
    print(f"\ntime to first streamed chunk, median of 5 (ms): {medians}")
    assert max(timings[gateway.name]) < 4  # never waited for the provider's 5 s give-up


def _chunks(payload: bytes, size: int):
    for start in range(0, len(payload), size):
        yield payload[start:start + size]


def test_chunked_request_body_is_scanned_and_relayed(gateway, scanner, provider):
    provider.expect_request("/v1/chat/completions", method="POST").respond_with_json(COMPLETION)
    text = unique("Summarise this file")
    payload = json.dumps({"model": "gpt-test", "messages": [{"role": "user", "content": text}]}).encode()
    with requests.Session() as session:
        answer = session.post(f"{gateway.base}/openai/v1/chat/completions", data=_chunks(payload, 16),
                              verify=gateway.verify, timeout=20, headers={
                                  "Content-Type": "application/json", "Authorization": f"Bearer {PROVIDER_KEY}"})
    assert answer.status_code == 200, answer.text
    assert answer.request.headers["Transfer-Encoding"] == "chunked"
    (received, _), = provider.log
    assert received.get_data() == payload
    assert [scan["input"] for scan in scans(scanner)] == [text]


@pytest.mark.parametrize("size, chunked", [
    pytest.param(MAX_BODY, False, id="content-length-over-the-app-cap"),
    pytest.param(MAX_BODY, True, id="chunked-over-the-app-cap"),
    pytest.param(MAX_BODY + BODY_LIMIT_MARGIN_BYTES, False, id="content-length-over-apache-limit"),
])
def test_oversized_body_gets_413_in_the_sdk_error_shape_before_any_scan(gateway, scanner, provider, size, chunked):
    payload = json.dumps({"model": "m", "messages": [{"role": "user", "content": "x" * size}]}).encode()
    with requests.Session() as session:
        answer = session.post(f"{gateway.base}/openai/v1/chat/completions", verify=gateway.verify, timeout=20,
                              data=_chunks(payload, 4096) if chunked else payload,
                              headers={"Content-Type": "application/json"})
    assert answer.status_code == 413
    assert answer.json()["error"]["code"] == "request_too_large"  # one JSON error, from the app or Apache
    assert scanner.log == [] and provider.log == []


def test_client_disconnect_mid_stream_frees_the_thread_and_closes_upstream(gateway, scanner, site):
    dripping = site[2]
    with requests.Session() as session:
        answer = session.post(f"{gateway.base}/dripping/v1/chat/completions", stream=True, verify=gateway.verify,
                              timeout=20, json={"model": "m", "stream": True,
                                                "messages": [{"role": "user", "content": unique("count")}]})
        assert answer.status_code == 200
        next(answer.iter_content(chunk_size=None))
        request_id = answer.headers["x-request-id"]
        answer.close()  # the client goes away mid-stream
        client_gone = time.monotonic()
    upstream_closed = dripping.hangups.get(timeout=15) - client_gone  # the gateway closed the provider connection
    print(f"\n{gateway.name}: upstream closed {upstream_closed:.2f} s after the client disconnected")
    assert upstream_closed < 5
    deadline = time.monotonic() + 10
    while request_id not in gateway.log_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    # The request log line is written when the response is closed: the daemon thread finished the request.
    assert request_id in gateway.log_text()


def test_daemon_processes_share_the_verdict_cache_under_load(gateway, scanner, provider):
    provider.expect_request("/v1/chat/completions", method="POST").respond_with_json(COMPLETION)
    prompts = [unique(f"question {number}") for number in range(20)]
    log_start = len(gateway.log_text())

    def ask(number: int) -> int:
        # A new connection per request: Apache closes idle keep-alive connections when it retires a spare child,
        # and a POST racing that close is lost before reaching the gateway (clients retry it; this test must not).
        body = {"model": "gpt-test", "messages": [{"role": "user", "content": prompts[number % len(prompts)]}]}
        return requests.post(f"{gateway.base}/openai/v1/chat/completions", json=body, verify=gateway.verify,
                             timeout=30, headers={"Authorization": f"Bearer {PROVIDER_KEY}"}).status_code

    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(ask, range(100)))
    assert statuses == [200] * 100
    assert len(provider.log) == 100
    assert len(scanner.log) < 100  # repeats were answered from the cache
    served_by = set(re.findall(r"\[pid (\d+):tid \d+\][^\n]*\"route\": \"openai\"", gateway.log_text()[log_start:]))
    for _ in range(20):  # which daemon accepts is the kernel's choice: ask more until both have answered
        if len(served_by) == 2:
            break
        with ThreadPoolExecutor(32) as pool:
            assert set(pool.map(ask, range(64))) == {200}
        served_by |= set(re.findall(r"\[pid (\d+):tid \d+\][^\n]*\"route\": \"openai\"",
                                    gateway.log_text()[log_start:]))
    assert len(served_by) == 2, served_by  # both daemon processes took requests, sharing the one SQLite file
    print(f"\n{gateway.name}: {len(scanner.log)} scans for 100 requests; "
          f"{gateway.log_text()[log_start:].count('cache_error')} cache errors read as misses")


@pytest.mark.parametrize("gateway", ["apache2"], indirect=True)  # the shipped vhost; express serves HTTP only
def test_plain_http_redirects_to_https(gateway):
    answer = requests.post(f"{gateway.http_base}/openai/v1/chat/completions", data=b"{}", allow_redirects=False,
                           timeout=10)
    assert answer.status_code == 308
    assert answer.headers["location"] == f"{gateway.base}/openai/v1/chat/completions"


SAFE = "Here is a long and perfectly harmless introduction. " * 8  # past the holdback: relayed before the attack


def _cohere_cut_events(gateway, provider, version: str) -> list:
    """The events the cohere SDK yields for a stream the output guard cuts, and what it raised (None: nothing)."""
    wire = WIRES[f"cohere-{version}"]
    events = wire.events([SAFE, "Now: ", ATTACK, " the end"])
    provider.expect_request(wire.path, method="POST").respond_with_handler(
        lambda _request: Response(iter(events), content_type=wire.content_type))
    read: list = []
    with httpx.Client(verify=gateway.tls, timeout=20) as http:
        client = (cohere.Client if version == "v1" else cohere.ClientV2)(
            api_key=PROVIDER_KEY, base_url=f"{gateway.base}/cohere", httpx_client=http)
        try:
            read += client.chat_stream(**wire.request)  # keeps what it took before a raise
        except httpx.TransportError as raised:
            return read + [raised]
    return read + [None]


def test_a_cut_cohere_v2_stream_makes_the_sdk_raise_after_the_error_event(gateway, scanner, provider):
    *events, raised = _cohere_cut_events(gateway, provider, "v2")
    assert isinstance(raised, SSEError)  # mid-iteration, the unfinished over-long line after the error event
    assert "".join(event.delta.message.content.text for event in events if event.type == "content-delta") == SAFE
    assert events[-1].type == "message-end" and events[-1].delta.finish_reason == "ERROR"
    assert "output guard" in events[-1].delta.error
    assert len(provider.log) == 1


def test_under_daemon_mode_a_cut_cohere_v1_stream_ends_after_its_error_event_and_logs_no_error(gateway, scanner,
                                                                                              provider):
    """mod_wsgi's Apache child ends the chunked body cleanly whatever the daemon process does, so the v1 SDK,
    which raises only on a broken stream, cannot be made to raise: its caller reads the error event, then the end
    (README, Output guard). The gateway raises nothing there, so mod_wsgi logs no error."""
    log_start = len(gateway.log_text())
    *events, raised = _cohere_cut_events(gateway, provider, "v1")
    assert raised is None
    assert "".join(event.text for event in events if event.event_type == "text-generation") == SAFE
    assert events[-1].event_type == "stream-end" and events[-1].finish_reason == "ERROR"
    assert "output guard" in events[-1].error
    assert "exception raised processing WSGI script" not in gateway.log_text()[log_start:]
