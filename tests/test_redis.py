"""Several nodes, one Redis: shared verdicts and limits; a lost Redis degrades to local behaviour, then recovers."""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import time

import pytest
import redis
import requests

from support.fakes import SCANNER_KEY, scans

CHAT = "/openai/v1/chat/completions"
COMPLETION = {"id": "chatcmpl-1", "object": "chat.completion", "choices": []}
PROMPT = "A prompt that must never be stored in Redis"

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None,
                                reason="needs redis-server (apt install redis-server)")


class RedisServer:
    """A throwaway redis-server on a loopback port, which tests can stop and start again on the same port."""

    def __init__(self) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                         "--appendonly", "no"], stdout=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        client.close()

    def stop(self) -> None:
        assert self.process is not None
        self.process.terminate()
        self.process.wait(timeout=10)
        self.process = None


@pytest.fixture(scope="session")
def redis_server():
    server = RedisServer()
    server.start()
    yield server
    if server.process is not None:
        server.stop()


@pytest.fixture
def store(redis_server, monkeypatch):
    """The Redis, emptied, with a short outage cool-down so recovery shows within a test."""
    monkeypatch.setattr("lockllm_wsgi.stores.DEFAULT_COOL_DOWN_SECONDS", 0.3)
    if redis_server.process is None:
        redis_server.start()
    client = redis.Redis.from_url(redis_server.url)
    client.flushdb()
    yield redis_server
    client.close()
    if redis_server.process is None:
        redis_server.start()


def chat(gateway, text: str = "hi") -> requests.Response:
    return requests.post(gateway.url + CHAT, json={"model": "m", "messages": [{"role": "user", "content": text}]},
                         headers={"Authorization": "Bearer sk-provider-canary-redis"}, timeout=10)


@pytest.fixture
def relaying(provider):
    provider.expect_request("/v1/chat/completions").respond_with_json(COMPLETION)
    return provider


def test_nodes_share_verdicts_and_redis_holds_no_prompt_or_key(make_gateway, store, scanner, relaying):
    first, second = (make_gateway(scanner_extra=f"cache = {store.url}\n") for _ in range(2))
    assert chat(first, PROMPT).status_code == 200
    assert first.app.scanner.flush()  # the verdict is stored after the answer, by the cache writer thread
    response = chat(second, PROMPT)
    assert response.status_code == 200 and len(scans(scanner)) == 1  # the second node reused the first's verdict
    client = redis.Redis.from_url(store.url)
    keys = client.keys("*")
    assert keys and all(key.startswith(b"lockllm_wsgi:verdicts") for key in keys)
    stored = b"".join(client.dump(key) or b"" for key in keys)
    assert PROMPT.encode() not in stored and SCANNER_KEY.encode() not in stored
    assert 0 < client.ttl(keys[0]) <= 7 * 24 * 3600 + 3600
    client.close()


def test_nodes_share_rate_limits(make_gateway, store, relaying):
    limit = f"[ratelimit]\nrequests_per_minute = 6\nburst = 2\nstore = {store.url}\n"
    first, second = make_gateway(limit), make_gateway(limit)
    assert [chat(first).status_code, chat(second).status_code, chat(first).status_code] == [200, 200, 429]


def test_a_lost_redis_degrades_to_local_behaviour_then_recovers(make_gateway, store, scanner, relaying, caplog):
    gateway = make_gateway(f"[ratelimit]\nrequests_per_minute = 600\nburst = 5\nstore = {store.url}\n",
                           scanner_extra=f"cache = {store.url}\n")
    assert chat(gateway, PROMPT).status_code == 200
    assert gateway.app.scanner.flush()  # its verdict written (after the answer) while Redis is still up
    store.stop()
    with caplog.at_level(logging.WARNING):
        assert [chat(gateway, PROMPT).status_code for _ in range(3)] == [200, 200, 200]  # no outage
        assert len(scans(scanner)) == 4  # no shared cache: each request scanned live
        assert gateway.app.scanner.flush()  # their writes done (skipped) before Redis is back, not landing after
        store.start()
        time.sleep(0.4)  # past the cool-down
        assert chat(gateway, PROMPT).status_code == 200
        assert gateway.app.scanner.flush()  # the live verdict is in Redis before the next request looks for it
        assert chat(gateway, PROMPT).status_code == 200
    events = [message for message in caplog.messages if '"event": "store_' in message]
    assert sum('"store_unavailable", "store": "ratelimit"' in event for event in events) == 1
    assert sum('"store_unavailable", "store": "verdict_cache"' in event for event in events) == 1
    assert any('"store_recovered", "store": "ratelimit"' in event for event in events)
    assert len(scans(scanner)) == 5  # shared cache back: the first live scan after recovery is reused
    assert redis.Redis.from_url(store.url).keys("lockllm_wsgi:ratelimit:*")


def test_readyz_reports_a_lost_redis_cache(make_gateway, store):
    gateway = make_gateway(scanner_extra=f"cache = {store.url}\n")
    assert requests.get(gateway.url + "/readyz", timeout=10).status_code == 200
    store.stop()
    response = requests.get(gateway.url + "/readyz", timeout=10)
    assert response.status_code == 503 and "ConnectionError" in response.json()["checks"]["cache"]
