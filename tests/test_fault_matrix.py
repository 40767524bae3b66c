"""The fault matrix: bad input, scanner faults and provider faults, one row per case.

Each row says what goes in (or what breaks), the status that must come out, and whether the scanner and the
provider may be called. Bad input gets the same answer in both fail modes and never reaches either."""

from __future__ import annotations

import gzip
import http.client
import json
import socket
import threading
import time

import pytest
import requests
from werkzeug.wrappers import Response

from support.fakes import ATTACK, scanner_verdict
from support.rawserver import RawServer, read_request

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hello"}]}
CHAT_BYTES = json.dumps(CHAT).encode()
COMPLETION = {"id": "x", "object": "chat.completion", "choices": []}


def send(gateway, method="POST", path="/openai/v1/chat/completions", body=CHAT_BYTES, headers=None,
         content_type="application/json"):
    """A raw HTTP request (http.client keeps the path and headers exactly as given); a callable body is called
    for a fresh generator, so a chunked row can run once per fail mode."""
    body = body() if callable(body) else body
    connection = http.client.HTTPConnection("127.0.0.1", gateway.server.server_port, timeout=15)
    all_headers = {"Content-Type": content_type} if content_type else {}
    all_headers.update(headers or {})
    if body is not None and not any(name.lower() in ("content-length", "transfer-encoding") for name in all_headers):
        all_headers["Content-Length"] = str(len(body))
    connection.request(method, path, body=body, headers=all_headers, encode_chunked="Transfer-Encoding" in all_headers)
    response = connection.getresponse()
    payload = response.read()
    connection.close()
    return response.status, payload, dict(response.getheaders())


def chunks(data: bytes, size: int = 1000):
    for start in range(0, len(data), size):
        yield data[start:start + size]


BAD_INPUT = [
    pytest.param({"body": b"{not json"}, 400, "invalid_json", id="invalid-json"),
    pytest.param({"body": b'["a"]'}, 400, "invalid_json", id="non-object"),
    pytest.param({"body": b""}, 400, "empty_body", id="empty-body"),
    pytest.param({"content_type": None}, 415, "unsupported_content_type", id="missing-content-type"),
    pytest.param({"content_type": "text/plain"}, 415, "unsupported_content_type", id="wrong-content-type"),
    pytest.param({"body": b'{"model": "m", "messages": [{"role": "user", "content": "a", "content": "b"}]}'},
                 400, "duplicate_json_key", id="duplicate-key-deep"),
    pytest.param({"body": b'{"model": "m", "temperature": NaN, "messages": []}'}, 400, "invalid_json", id="nan"),
    pytest.param({"body": b'{"model": "m", "n": ' + b"1" * 5000 + b"}"}, 400, "invalid_json", id="huge-number"),
    pytest.param({"body": b'{"model": "\xc3\x28"}'}, 400, "invalid_utf8", id="invalid-utf8"),
    pytest.param({"body": b'{"model": "\\udc00"}'}, 400, "invalid_json", id="lone-surrogate"),
    pytest.param({"body": b"\xef\xbb\xbf" + CHAT_BYTES}, 400, "invalid_json", id="utf8-bom"),
    pytest.param({"body": b'{"a":' + b"[" * 50000 + b"]" * 50000 + b"}"}, 400, "json_too_deep", id="deep-nesting"),
    pytest.param({"body": b"x" * (1024 * 1024 + 1)}, 413, "request_too_large", id="oversized-content-length"),
    pytest.param({"body": lambda: chunks(b"x" * (1024 * 1024 + 1)), "headers": {"Transfer-Encoding": "chunked"}},
                 413, "request_too_large", id="oversized-chunked"),
    pytest.param({"body": gzip.compress(b" " * (2 * 1024 * 1024)), "headers": {"Content-Encoding": "gzip"}},
                 413, "request_too_large", id="gzip-bomb"),
    pytest.param({"body": gzip.compress(gzip.compress(CHAT_BYTES)), "headers": {"Content-Encoding": "gzip, gzip"}},
                 415, "unsupported_content_encoding", id="stacked-encodings"),
    pytest.param({"body": CHAT_BYTES, "headers": {"Content-Encoding": "compress"}}, 415,
                 "unsupported_content_encoding", id="unknown-encoding"),
    pytest.param({"method": "PUT"}, 405, "method_not_allowed", id="wrong-method"),
    pytest.param({"method": "GET", "body": CHAT_BYTES}, 400, "unexpected_body", id="get-with-body"),
    pytest.param({"path": "/nowhere/v1/chat/completions"}, 404, "unknown_route", id="unknown-route"),
    pytest.param({"path": "/openai/v1/../../admin"}, 400, "invalid_path", id="dot-dot"),
    pytest.param({"path": "/openai/v1/%2e%2e/chat/completions"}, 400, "invalid_path", id="encoded-dot-dot"),
    pytest.param({"path": "/openai/v1%2fchat/completions"}, 400, "invalid_path", id="encoded-slash"),
    pytest.param({"path": "/openai//v1/chat/completions"}, 400, "invalid_path", id="double-slash"),
    pytest.param({"path": "/openai/v1/images/generations", "body": b'{"prompt": "a cat"}'}, 400,
                 "unrecognized_request", id="unknown-endpoint"),
    pytest.param({"body": b'{"model": "m", "messages": [{"role": "user", "content": [{"type": "hologram"}]}]}'},
                 400, "unrecognized_request", id="unknown-part-type"),
    pytest.param({"body": b'{"model": "m", "messages": [], "new_text_field": "x"}'}, 400, "unrecognized_request",
                 id="unknown-top-level-field"),
    pytest.param({"body": b'{"model": "m", "messages": []}'}, 400, "nothing_to_scan", id="empty-extraction"),
    pytest.param({"body": b'{"model": "m", "messages": [{"role": "user", "content": "\\u200b \\u200d"}]}'}, 400,
                 "nothing_to_scan", id="invisible-only-text"),
    pytest.param({"body": b'{"model": "m", "prompt": [1, 2, 3]}', "path": "/openai/v1/completions"}, 400,
                 "unrecognized_request", id="token-id-prompt"),
]


@pytest.mark.parametrize("fail_mode", ["closed", "open"])
@pytest.mark.parametrize("request_parts, status, code", BAD_INPUT)
def test_bad_input_is_refused_before_any_scan(make_gateway, scanner, provider, fail_mode, request_parts, status, code):
    gateway = make_gateway(scanner_extra=f"fail_mode = {fail_mode}\n", extra="[limits]\nmax_body_bytes = 1048576\n")
    got_status, payload, headers = send(gateway, **request_parts)
    assert got_status == status
    error = json.loads(payload)["error"]
    assert error["code"] == code
    assert headers["X-Request-Id"] in error["message"]
    assert scanner.log == [] and provider.log == []


# --- scanner faults ----------------------------------------------------------------------------------------


def drip(conn: socket.socket) -> None:
    read_request(conn)
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n")
    for _ in range(200):
        conn.sendall(b" ")
        time.sleep(0.1)


def hang(conn: socket.socket) -> None:
    read_request(conn)
    time.sleep(5)


def reset_mid_response(conn: socket.socket) -> None:
    read_request(conn)
    conn.sendall(b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"safe": tr')
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")


def respond(status: int, body, content_type="application/json", headers=None):
    def handler(_request):
        text = body if isinstance(body, str) else json.dumps(body)
        return Response(text, status=status, content_type=content_type, headers=headers or {})
    handler.status = status
    return handler


SCANNER_FAULTS = [
    pytest.param("raw", drip, id="slow-drip"),
    pytest.param("raw", hang, id="hang"),
    pytest.param("raw", reset_mid_response, id="reset-mid-response"),
    pytest.param("refused", None, id="connection-refused"),
    pytest.param("handler", respond(500, {"error": {"message": "boom"}}), id="http-500"),
    pytest.param("handler", respond(200, "<html>maintenance</html>", "text/html"), id="200-html"),
    pytest.param("handler", respond(200, '{"safe": tru', "application/json"), id="200-malformed-json"),
    pytest.param("handler", respond(200, {"label": 0}), id="200-missing-verdict"),
    pytest.param("handler", respond(200, {"safe": "probably", "injection": "low"}), id="200-unknown-verdict"),
    pytest.param("handler", respond(200, {"injection": 250}), id="200-score-out-of-range"),
    pytest.param("handler", respond(401, {"error": {"message": "bad key", "type": "auth", "code": "invalid_key"}}),
                 id="401-our-own-request"),
]


@pytest.mark.parametrize("fail_mode", ["closed", "open"])
@pytest.mark.parametrize("kind, behaviour", SCANNER_FAULTS)
def test_scanner_faults_follow_the_fail_mode_within_the_deadline(make_gateway, scanner, provider, fail_mode, kind,
                                                                 behaviour, tmp_path):
    raw = None
    scanner_url = None
    if kind == "raw":
        raw = RawServer(behaviour)
        scanner_url = raw.url + "/v1/scan"
    elif kind == "refused":
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            scanner_url = f"http://127.0.0.1:{probe.getsockname()[1]}/v1/scan"
    else:
        scanner.clear()
        scanner.expect_request("/v1/scan").respond_with_handler(behaviour)
    provider.expect_request("/v1/chat/completions").respond_with_json(COMPLETION)
    gateway = make_gateway(scanner_url=scanner_url, scanner_extra=(
        f"fail_mode = {fail_mode}\ntimeout = 1\ncache = sqlite:///{tmp_path}/cache.sqlite\n"))
    try:
        started = time.monotonic()
        status, payload, _ = send(gateway)
        elapsed = time.monotonic() - started
        if fail_mode == "closed":
            # A refused key is named apart from a scanner that is down: the operator has something to fix.
            expected = "scanner_unauthorized" if getattr(behaviour, "status", None) == 401 else "scanner_unavailable"
            assert status == 503 and json.loads(payload)["error"]["code"] == expected
            assert provider.log == []
        else:
            assert status == 200
            assert len(provider.log) == 1
            assert gateway.app.counters.snapshot()["fail_open"] == 1
        assert elapsed < 1.8  # the 1 s scan budget, plus the request's own time
        # No verdict from a failure is ever cached: once the scanner recovers, the text is scanned for real.
        scanner.clear()
        scanner.expect_request("/v1/scan").respond_with_handler(scanner_verdict)
        if kind != "handler":
            return
        status, _, headers = send(gateway)
        assert status == 200 and headers["X-LockLLM-Safe"] == "true"
    finally:
        if raw:
            raw.close()


@pytest.mark.parametrize("status, body, headers", [
    pytest.param(429, {"error": {"message": "slow down"}}, {"Retry-After": "30"}, id="429-retry-after-beyond-budget"),
    pytest.param(413, {"error": {"message": "input too long"}}, {}, id="413-input-refused"),
    pytest.param(400, {"error": {"message": "bad input"}}, {}, id="400-input-refused"),
])
def test_what_a_client_can_cause_never_fails_open(make_gateway, scanner, provider, status, body, headers):
    """A scanner refusing the input, or rate-limiting because clients exhausted its quota, is no outage: even with
    fail_mode = open the request is refused (503), never relayed unjudged."""
    scanner.clear()
    scanner.expect_request("/v1/scan").respond_with_handler(respond(status, body, headers=headers))
    provider.expect_request("/v1/chat/completions").respond_with_json(COMPLETION)
    gateway = make_gateway(scanner_extra="fail_mode = open\ntimeout = 1\n")
    response_status, payload, _ = send(gateway)
    assert response_status == 503 and json.loads(payload)["error"]["code"] == "scanner_unavailable"
    assert provider.log == []


def test_429_with_a_short_retry_after_is_retried_within_the_budget(make_gateway, scanner, provider):
    scanner.clear()
    scanner.expect_ordered_request("/v1/scan").respond_with_handler(
        respond(429, {"error": {"message": "slow down"}}, headers={"Retry-After": "0"}))
    scanner.expect_ordered_request("/v1/scan").respond_with_handler(scanner_verdict)
    provider.expect_request("/v1/chat/completions").respond_with_json(COMPLETION)
    gateway = make_gateway()
    status, _, headers = send(gateway)
    assert status == 200 and headers["X-LockLLM-Safe"] == "true"
    assert len(scanner.log) == 2


def test_a_fail_open_request_that_carries_an_attack_is_not_cached_as_safe(make_gateway, scanner, provider, tmp_path):
    scanner.clear()
    scanner.expect_request("/v1/scan").respond_with_handler(respond(503, {"error": {"message": "down"}}))
    provider.expect_request("/v1/chat/completions").respond_with_json(COMPLETION)
    gateway = make_gateway(scanner_extra=f"fail_mode = open\ncache = sqlite:///{tmp_path}/c.sqlite\nretries = 0\n")
    attack = json.dumps({"model": "m", "messages": [{"role": "user", "content": ATTACK}]}).encode()
    assert send(gateway, body=attack)[0] == 200
    scanner.clear()
    scanner.expect_request("/v1/scan").respond_with_handler(scanner_verdict)
    assert send(gateway, body=attack)[0] == 400


# --- provider faults ---------------------------------------------------------------------------------------


def test_provider_refused_is_502(make_gateway):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    status, payload, _ = send(make_gateway(upstream=closed))
    assert status == 502 and json.loads(payload)["error"]["code"] == "upstream_unavailable"


def test_provider_timeout_is_504(make_gateway):
    raw = RawServer(hang)
    try:
        status, payload, _ = send(make_gateway(upstream=raw.url, extra="[upstream]\nread_timeout = 0.5\n"))
    finally:
        raw.close()
    assert status == 504 and json.loads(payload)["error"]["code"] == "upstream_unavailable"


def test_slow_first_byte_within_the_limit_is_relayed(make_gateway, provider):
    def slow(_request):
        time.sleep(0.6)
        return Response(json.dumps(COMPLETION), content_type="application/json")
    provider.expect_request("/v1/chat/completions").respond_with_handler(slow)
    status, _, _ = send(make_gateway(extra="[upstream]\nread_timeout = 2\n"))
    assert status == 200


@pytest.mark.parametrize("status", [400, 401, 429, 500, 503])
def test_provider_errors_are_relayed_with_body_and_headers(make_gateway, provider, status):
    provider.expect_request("/v1/chat/completions").respond_with_json(
        {"error": {"message": "provider says no", "code": "x"}}, status=status,
        headers={"X-Ratelimit-Remaining-Requests": "7", "X-Request-Id": "upstream-id"})
    got, payload, headers = send(make_gateway())
    assert got == status
    assert json.loads(payload)["error"]["message"] == "provider says no"
    assert headers["X-Ratelimit-Remaining-Requests"] == "7"
    assert headers["X-Request-Id"] == "upstream-id"
    assert headers["X-LockLLM-Request-Id"].startswith("req_")


def test_upstream_redirect_is_not_followed(make_gateway, provider):
    provider.expect_request("/v1/chat/completions").respond_with_data(
        "", status=307, headers={"Location": "http://127.0.0.2:9/steal"})
    status, _, headers = send(make_gateway())
    assert status == 307 and headers["Location"] == "http://127.0.0.2:9/steal"
    assert len(provider.log) == 1


def sse_then_reset(relayed: threading.Event):
    """A provider that sends one event, then resets the connection once the client has that event (`relayed`),
    so the reset cannot overtake the event on its way through the gateway."""
    def behave(conn: socket.socket) -> None:
        read_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        event = b'data: {"choices": []}\n\n'
        conn.sendall(b"%x\r\n%s\r\n" % (len(event), event))
        relayed.wait(10)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    return behave


def test_a_reset_mid_stream_reaches_the_client_as_a_cut_stream(make_gateway):
    relayed = threading.Event()
    raw = RawServer(sse_then_reset(relayed))
    try:
        gateway = make_gateway(upstream=raw.url)
        body = json.dumps({**CHAT, "stream": True}).encode()
        with requests.post(f"{gateway.url}/openai/v1/chat/completions", data=body, stream=True, timeout=10,
                           headers={"Content-Type": "application/json"}) as response:
            assert response.status_code == 200
            received = b""
            with pytest.raises(requests.exceptions.ChunkedEncodingError):
                for chunk in response.iter_content(None):
                    received += chunk
                    relayed.set()  # the provider resets only now
    finally:
        relayed.set()
        raw.close()
    assert received == b'data: {"choices": []}\n\n'  # and no invented [DONE]


def endless_stream(conn: socket.socket) -> None:
    read_request(conn)
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
    event = b'data: {"choices": []}\n\n'
    for _ in range(600):
        conn.sendall(b"%x\r\n%s\r\n" % (len(event), event))
        time.sleep(0.05)


def test_a_client_that_goes_away_mid_stream_closes_the_upstream_connection(make_gateway):
    raw = RawServer(endless_stream)
    try:
        gateway = make_gateway(upstream=raw.url)
        body = json.dumps({**CHAT, "stream": True}).encode()
        client = socket.create_connection(("127.0.0.1", gateway.server.server_port))
        client.sendall(b"POST /openai/v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                       b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        client.settimeout(10)
        with client.makefile("rb") as reader:  # to the end of the status line, however many recvs that takes
            assert reader.readline().startswith(b"HTTP/1.1 200")
        client.close()
        # The upstream's next writes fail once the gateway closed its side.
        assert raw.closed_by_peer.wait(10)
    finally:
        raw.close()


# --- the upstream comes from configuration only --------------------------------------------------------------


@pytest.mark.parametrize("path, headers", [
    pytest.param("/openai/v1/chat/completions", {"Host": "evil.example"}, id="host"),
    pytest.param("http://evil.example/openai/v1/chat/completions", {}, id="absolute-form"),
    pytest.param("/openai/v1/chat/completions", {"X-Forwarded-Host": "evil.example"}, id="x-forwarded-host"),
    pytest.param("/openai/v1/chat/completions", {"X-Original-URL": "http://evil.example/x"}, id="x-original-url"),
])
def test_client_sent_hosts_cannot_redirect_traffic(make_gateway, provider, path, headers):
    provider.expect_request("/v1/chat/completions").respond_with_json(COMPLETION)
    gateway = make_gateway()
    status, _, _ = send(gateway, path=path, headers=headers)
    assert status == 200
    (received, _), = provider.log
    assert received.host == f"127.0.0.1:{provider.port}"
    assert "evil" not in json.dumps(dict(received.headers))


def test_an_unexpected_fault_inside_the_scan_client_is_scanner_unavailable(make_gateway, provider, monkeypatch):
    gateway = make_gateway()

    def broken_send(*_args, **_kwargs):
        raise RuntimeError("a library bug")

    monkeypatch.setattr(gateway.app.scanner.session, "send", broken_send)
    status, payload, _ = send(gateway)
    assert status == 503 and json.loads(payload)["error"]["code"] == "scanner_unavailable"
    assert provider.log == []


def test_closing_the_relayed_body_closes_the_upstream_connection():
    """The WSGI server calls close() when the client goes away; the body object is still referenced then, so
    only close() itself (not garbage collection) can free the provider's connection."""
    from lockllm_wsgi.config import UpstreamSettings
    from lockllm_wsgi.relay import Relay

    raw = RawServer(endless_stream)
    relay = Relay(UpstreamSettings())
    try:
        _, _, _, body = relay.send("POST", raw.url + "/v1/chat/completions", {"Content-Type": "application/json"},
                                   CHAT_BYTES)
        assert next(iter(body)).startswith(b"data:")
        body.close()
        assert raw.closed_by_peer.wait(5)
        assert body is not None  # still referenced: the close above did it
    finally:
        relay.close()
        raw.close()


def test_a_defect_in_the_gateway_is_a_logged_500_in_the_provider_shape(make_gateway, scanner, provider, monkeypatch,
                                                                      caplog):
    gateway = make_gateway()

    def broken_extract(*_args, **_kwargs):
        raise KeyError("a bug")

    monkeypatch.setattr(gateway.app.routes[0][1], "extract", broken_extract)
    status, payload, headers = send(gateway)
    assert status == 500
    error = json.loads(payload)["error"]
    assert error["code"] == "gateway_error" and headers["X-Request-Id"] in error["message"]
    assert f'"gateway_error", "request_id": "{headers["X-Request-Id"]}"' in caplog.text
    assert scanner.log == [] and provider.log == []
