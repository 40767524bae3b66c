"""Rate limits: a token bucket per route and client, shared through a SQLite file, refused in the provider's shape."""

from __future__ import annotations

import logging
import time

import pytest
import requests

from lockllm_wsgi.identity import client_identity
from support.fakes import scans

CHAT = "/openai/v1/chat/completions"
COMPLETION = {"id": "chatcmpl-1", "object": "chat.completion", "choices": []}


def limited(tmp_path, rpm: float, burst: int, store: str | None = None) -> str:
    store = store or f"sqlite:///{tmp_path}/rl.sqlite"
    return f"[ratelimit]\nrequests_per_minute = {rpm:g}\nburst = {burst}\nstore = {store}\n"


def chat(gateway, key: str = "sk-client-one") -> requests.Response:
    return requests.post(gateway.url + CHAT, json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
                         headers={"Authorization": f"Bearer {key}"}, timeout=10)


class Clock:
    """time.time() for the rate limiter, moved only by the test: however long a request takes, no token refills
    in between unless the test says so."""

    def __init__(self) -> None:
        self.now = time.time()

    def time(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr("lockllm_wsgi.ratelimit.time", clock)
    return clock


@pytest.fixture
def relaying(provider):
    provider.expect_request("/v1/chat/completions").respond_with_json(COMPLETION)
    return provider


def test_past_the_burst_a_client_gets_429_with_retry_after_and_no_scan(make_gateway, tmp_path, relaying, scanner,
                                                                       clock):
    gateway = make_gateway(limited(tmp_path, rpm=6, burst=2))
    assert [chat(gateway).status_code for _ in range(2)] == [200, 200]
    refused = chat(gateway)
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "10"  # one token per 10 s at 6 a minute
    error = refused.json()["error"]
    assert error["code"] == "rate_limited" and error["type"] == "rate_limit_error"
    assert len(scans(scanner)) == 2 and len(relaying.log) == 2


def test_the_bucket_refills_at_the_configured_rate(make_gateway, tmp_path, relaying, clock):
    gateway = make_gateway(limited(tmp_path, rpm=600, burst=1))
    assert [chat(gateway).status_code for _ in range(2)] == [200, 429]  # a slow first request refills nothing
    clock.now += 0.15  # 10 tokens a second
    assert chat(gateway).status_code == 200


def test_each_client_and_each_route_has_its_own_bucket(make_gateway, tmp_path, relaying):
    gateway = make_gateway(limited(tmp_path, rpm=6, burst=1) + "[route:other]\nprefix = /other\n"
                           f"upstream = {relaying.url_for('').rstrip('/')}\nformat = openai\n")
    assert chat(gateway, "sk-client-one").status_code == 200
    assert chat(gateway, "sk-client-one").status_code == 429
    assert chat(gateway, "sk-client-two").status_code == 200
    other_route = requests.post(gateway.url + "/other/v1/chat/completions", headers={
        "Authorization": "Bearer sk-client-one"}, json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
        timeout=10)
    assert other_route.status_code == 200


def test_processes_sharing_the_store_share_the_limit(make_gateway, tmp_path, relaying):
    first, second = make_gateway(limited(tmp_path, rpm=6, burst=2)), make_gateway(limited(tmp_path, rpm=6, burst=2))
    assert [chat(first).status_code, chat(second).status_code, chat(first).status_code] == [200, 200, 429]


def test_an_unusable_store_falls_back_to_per_process_limits(make_gateway, tmp_path, relaying, caplog):
    (tmp_path / "not-a-folder").write_text("")
    with caplog.at_level(logging.WARNING, logger="lockllm_wsgi.stores"):
        gateway = make_gateway(limited(tmp_path, rpm=6, burst=1, store=f"sqlite:///{tmp_path}/not-a-folder/rl.sqlite"))
        assert [chat(gateway).status_code for _ in range(2)] == [200, 429]
    assert any('"event": "store_unavailable"' in message for message in caplog.messages)


@pytest.mark.parametrize("environ, identity", [
    pytest.param({"REMOTE_USER": "alice", "HTTP_AUTHORIZATION": "Bearer sk-1", "REMOTE_ADDR": "10.0.0.1"},
                 "user:alice", id="apache-user-first"),
    pytest.param({"HTTP_AUTHORIZATION": "Bearer sk-1", "REMOTE_ADDR": "10.0.0.1"}, "key:", id="bearer-key"),
    pytest.param({"HTTP_X_API_KEY": "sk-1"}, "key:", id="anthropic-key"),
    pytest.param({"HTTP_API_KEY": "sk-1"}, "key:", id="azure-key"),
    pytest.param({"QUERY_STRING": "alt=sse&key=sk-1"}, "key:", id="gemini-query-key"),
    pytest.param({"REMOTE_ADDR": "10.0.0.1"}, "addr:10.0.0.1", id="address-last"),
])
def test_client_identity_prefers_apache_user_then_hashed_key_then_address(environ, identity):
    found = client_identity(environ)
    assert found.startswith(identity) and "sk-1" not in found
    if identity == "key:":
        assert found == client_identity({"HTTP_AUTHORIZATION": "Bearer sk-1"})  # one key, one bucket, any header
