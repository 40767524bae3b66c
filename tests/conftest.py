"""Fixtures: a fake LockLLM scanner and a fake provider (pytest-httpserver), and the gateway under test served
over real HTTP by werkzeug (tests/support/gateway.py). Shared helpers live in tests/support/, not here."""

from __future__ import annotations

import logging
import os

import pytest

from support.fakes import FakeServer, scanner_verdict
from support.gateway import Gateway, LogLines, write_config


def pytest_xdist_auto_num_workers(config):
    """`-n auto`: one worker more than this process may use cores (setup.cfg's --maxprocesses caps it). The
    real-Apache files spend much of their time waiting on their servers (Apache's ~3 s of grace at a graceful
    restart, a daemon's 2 s between looks at the INI file), which a third worker on two cores fills: 101-125 s
    against 126-136 s for the whole suite. PYTEST_XDIST_AUTO_NUM_WORKERS still decides when set."""
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return None  # pytest-xdist's own hook reads it
    return len(os.sched_getaffinity(0)) + 1


@pytest.hookimpl(trylast=True)  # after pytest-randomly's shuffle and pytest's grouping by module-scoped fixtures
def pytest_collection_modifyitems(items):
    """The real-Apache tests first, in their (random) order: each of their files starts its own servers and
    waits on them for seconds, so under pytest-xdist (setup.cfg: one file per worker at a time, in this order) one
    left for the end would keep the run going long after the other workers are done."""
    items.sort(key=lambda item: item.get_closest_marker("apache") is None)


@pytest.fixture(autouse=True)
def _no_ambient_proxies(monkeypatch):
    """Tests behave the same on every machine: no proxy variables, no LockLLM key from the environment."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "all_proxy",
                 "no_proxy", "LOCKLLM_API_KEY", "LOCKLLM_WSGI_CONFIG"):
        monkeypatch.delenv(name, raising=False)


def _fake_server():
    server = FakeServer()
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
    provider_server.wait_until_idle()
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
    scanner_server.wait_until_idle()
    scanner_server.clear()


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
