"""Shared fixtures: a fake LockLLM scanner and a fake provider (pytest-httpserver), and the gateway under test
served over real HTTP by werkzeug, so the official SDKs talk to it exactly as they talk to a provider."""

from __future__ import annotations

import json
import logging
import threading
import textwrap

import pytest
from pytest_httpserver import HTTPServer
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from lockllm_wsgi import create_app
from lockllm_wsgi.config import load_settings

# What the fake scanner treats as an attack: a marker no benign test text contains.
ATTACK = "IGNORE ALL PREVIOUS INSTRUCTIONS"
SCANNER_KEY = "llm-test-scanner-key-0001"


@pytest.fixture(autouse=True)
def _no_ambient_proxies(monkeypatch):
    """Tests behave the same on every machine: no proxy variables, no LockLLM key from the environment."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "all_proxy",
                 "no_proxy", "LOCKLLM_API_KEY", "LOCKLLM_WSGI_CONFIG"):
        monkeypatch.delenv(name, raising=False)


def scanner_verdict(request: Request) -> Response:
    """LockLLM's scan API, played: unsafe when the input carries ATTACK, with the score in percent."""
    payload = request.get_json()
    unsafe = ATTACK.lower() in payload["input"].lower()
    return Response(json.dumps({
        "safe": not unsafe, "label": 1 if unsafe else 0, "confidence": 97 if unsafe else 99,
        "injection": 97 if unsafe else 2, "request_id": "scan_123",
    }), content_type="application/json")


def _fake_server():
    server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    server.start()
    yield server
    server.clear()
    server.stop()


@pytest.fixture(scope="session")
def provider_server():
    yield from _fake_server()


@pytest.fixture
def provider(provider_server):
    provider_server.clear()
    yield provider_server
    provider_server.clear()


@pytest.fixture(scope="session")
def scanner_server():
    yield from _fake_server()


@pytest.fixture
def scanner(scanner_server):
    """The fake scanner, answering every scan by `scanner_verdict` unless a test sets its own handler."""
    scanner_server.clear()
    scanner_server.expect_request("/v1/scan", method="POST").respond_with_handler(scanner_verdict)
    yield scanner_server
    scanner_server.clear()


def scans(server: HTTPServer) -> list[dict]:
    """The JSON bodies the fake scanner received."""
    return [json.loads(request.get_data()) for request, _ in server.log]


def write_config(folder, scanner_url: str, upstream: str, extra: str = "", scanner_extra: str = "") -> str:
    path = folder / "lockllm.ini"
    scanner_keys = {"url": scanner_url, "api_key": SCANNER_KEY, "timeout": "3", "retries": "1"}
    for line in textwrap.dedent(scanner_extra).splitlines():
        if line.strip():
            key, _, value = line.partition("=")
            scanner_keys[key.strip()] = value.strip()
    path.write_text("[scanner]\n" + "".join(f"{key} = {value}\n" for key, value in scanner_keys.items())
                    + textwrap.dedent(f"""
        [route:openai]
        prefix = /openai
        upstream = {upstream}
        format = openai
        """) + textwrap.dedent(extra))
    return str(path)


class Gateway:
    """The app served by a threaded werkzeug server on a loopback port."""

    def __init__(self, config_path: str):
        self.settings = load_settings(config_path)
        self.app = create_app(self.settings)
        self.server = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.app.scanner.close()
        self.app.relay.close()


@pytest.fixture
def make_gateway(tmp_path, scanner, provider):
    """make_gateway(extra, scanner_extra, scanner_url, upstream, routes) -> Gateway, by default in front of the fakes.

    `routes` maps a format name to extra keys of its route: `[route:NAME]` with `prefix = /NAME`, the fake
    provider as upstream and `format = NAME` is added for each.
    """
    started = []

    def make(extra: str = "", scanner_extra: str = "", scanner_url: str | None = None,
             upstream: str | None = None, routes: dict[str, str] | None = None) -> Gateway:
        upstream = upstream or provider.url_for("").rstrip("/")
        for name, keys in (routes or {}).items():
            extra += f"\n[route:{name}]\nprefix = /{name}\nupstream = {upstream}\nformat = {name}\n{keys}\n"
        config = write_config(tmp_path, scanner_url or scanner.url_for("/v1/scan"), upstream, extra, scanner_extra)
        gateway = Gateway(config)
        started.append(gateway)
        return gateway

    yield make
    for gateway in started:
        gateway.close()


@pytest.fixture
def make_gateway_once(make_gateway, scanner, provider):
    """One gateway for a property test's many examples, with a provider that accepts every chat."""
    provider.expect_request("/v1/chat/completions").respond_with_json({"id": "x", "choices": []})
    return make_gateway(), scanner, provider


class LogLines(list):
    """Request-log lines as they are written, from the server's threads; wait_for(n) waits until n are in."""

    def __init__(self) -> None:
        super().__init__()
        self._changed = threading.Condition()

    def add(self, line: str) -> None:
        with self._changed:
            self.append(line)
            self._changed.notify_all()

    def wait_for(self, count: int, timeout: float = 5) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: len(self) >= count, timeout)


@pytest.fixture
def request_log_lines():
    """The request log's per-request lines (stderr in production) as captured records. The gateway writes a
    request's line when the server closes its response, after its metrics and audit record and possibly just
    after the client has read the answer: wait_for(n) before reading them, or anything written before them."""
    lines = LogLines()
    handler = logging.Handler()
    handler.emit = lambda record: (  # type: ignore[method-assign]
        lines.add(record.getMessage()) if '"event": "request"' in record.getMessage() else None)
    logger = logging.getLogger("lockllm_wsgi.requests")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)  # the app sets it only if it adds its own handler, which this one prevents
    yield lines
    logger.removeHandler(handler)
    logger.setLevel(level)
