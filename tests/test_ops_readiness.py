"""/readyz and the metrics describe the verdict cache this process actually uses, and a cache file opened by
several daemon processes at once is opened by all of them."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from werkzeug.test import Client

from lockllm_wsgi import create_app
from lockllm_wsgi import verdict_cache
from lockllm_wsgi.config import ScannerSettings


def readyz(app) -> tuple[int, dict]:
    response = Client(app).get("/readyz")
    return response.status_code, response.get_json()


def cache_gauge(app) -> float | None:
    text = Client(app).get("/metrics").get_data(as_text=True)
    return next((sample.value for family in text_string_to_metric_families(text) for sample in family.samples
                 if sample.name == "lockllm_scan_cache_in_use"), None)


def test_the_readmes_offline_setup_with_a_sqlite_cache_is_ready(tmp_path, provider):
    """No key (so the offline scanner) and a cache nobody creates: the offline scanner uses no cache, so the
    missing file is no reason to stay unready."""
    config = tmp_path / "lockllm.ini"
    config.write_text(f"[scanner]\ncache = sqlite:///{tmp_path}/cache/verdicts.sqlite\n\n"
                      f"[route:openai]\nprefix = /openai\nupstream = {provider.url_for('').rstrip('/')}\n"
                      "format = openai\n")
    app = create_app(str(config))
    status, body = readyz(app)
    assert status == 200, body
    assert body["checks"]["cache"] == "not used: the offline scanner needs no cache"
    assert cache_gauge(app) is None  # no cache to be in use or not


def test_the_cache_the_scanner_opened_is_ready_and_counted_in_use(make_gateway, tmp_path):
    gateway = make_gateway(scanner_extra=f"cache = sqlite:///{tmp_path}/verdicts.sqlite\n")
    assert readyz(gateway.app) == (200, {"status": "ready", "checks": {"config": "ok", "cache": "ok", "scanner": "ok",
                                                                       "permissions": "ok"}})
    assert cache_gauge(gateway.app) == 1.0


def test_no_cache_is_said_to_be_off(make_gateway):
    gateway = make_gateway()
    assert readyz(gateway.app) == (200, {"status": "ready", "checks": {"config": "ok", "cache": "off", "scanner": "ok",
                                                                       "permissions": "ok"}})


def test_a_cache_that_could_not_be_opened_is_not_ready_and_shows_in_the_metrics(make_gateway, tmp_path, monkeypatch):
    """Locked for longer than the start-up retries: the process scans without a cache, and says so."""

    def locked(*_args, **_kwargs):
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(verdict_cache, "ForgivingSQLiteCache", locked)
    monkeypatch.setattr(verdict_cache, "OPEN_BACKOFF_SECONDS", 0.0)
    gateway = make_gateway(scanner_extra=f"cache = sqlite:///{tmp_path}/verdicts.sqlite\n")
    status, body = readyz(gateway.app)
    assert status == 503
    assert body["checks"]["cache"].startswith("not in use: ") and "database is locked" in body["checks"]["cache"]
    assert cache_gauge(gateway.app) == 0.0
    # Scans still work, live.
    response = requests.post(gateway.url + "/openai/v1/chat/completions", timeout=10,
                             json={"model": "m", "messages": [{"role": "user", "content": "hello"}]})
    assert response.status_code != 503


def test_start_up_contention_is_retried_with_backoff(tmp_path, monkeypatch):
    calls, pauses = [], []
    real = verdict_cache.ForgivingSQLiteCache

    def contended(*args, **kwargs):
        calls.append(1)
        if len(calls) < 3:
            raise sqlite3.OperationalError("database is locked")
        return real(*args, **kwargs)

    monkeypatch.setattr(verdict_cache, "ForgivingSQLiteCache", contended)
    monkeypatch.setattr(verdict_cache, "_sleep", pauses.append)
    backend = verdict_cache.open_backend(ScannerSettings(cache=f"sqlite:///{tmp_path}/verdicts.sqlite"))
    backend.close()
    assert len(calls) == 3 and len(pauses) == 2
    base = verdict_cache.OPEN_BACKOFF_SECONDS  # doubled per attempt, jittered by 0.5-1.5
    assert base * 0.5 <= pauses[0] <= base * 1.5 and base * 1.0 <= pauses[1] <= base * 3.0


def test_start_up_contention_is_bounded(tmp_path, monkeypatch):
    calls = []

    def locked(*_args, **_kwargs):
        calls.append(1)
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(verdict_cache, "ForgivingSQLiteCache", locked)
    monkeypatch.setattr(verdict_cache, "_sleep", lambda _seconds: None)
    with pytest.raises(sqlite3.OperationalError):
        verdict_cache.open_backend(ScannerSettings(cache=f"sqlite:///{tmp_path}/verdicts.sqlite"))
    assert len(calls) == verdict_cache.DEFAULT_OPEN_ATTEMPTS


def test_other_cache_errors_are_not_retried(tmp_path, monkeypatch):
    calls = []

    def broken(*_args, **_kwargs):
        calls.append(1)
        raise sqlite3.OperationalError("unable to open database file")

    monkeypatch.setattr(verdict_cache, "ForgivingSQLiteCache", broken)
    with pytest.raises(sqlite3.OperationalError):
        verdict_cache.open_backend(ScannerSettings(cache=f"sqlite:///{tmp_path}/verdicts.sqlite"))
    assert calls == [1]


def _open_at_once(path: str, barrier, results) -> None:
    barrier.wait()
    try:
        verdict_cache.open_backend(ScannerSettings(cache=f"sqlite:///{path}")).close()
        results.put("ok")
    except Exception as error:  # noqa: BLE001 - reported to the test
        results.put(f"{type(error).__name__}: {error}")


def test_daemons_opening_a_new_cache_file_at_once_all_get_it(tmp_path):
    """The real race: without the retries about one process in 150 lost the switch to WAL ("database is
    locked") and scanned without a cache for its whole life."""
    context = multiprocessing.get_context("fork")
    outcomes = []
    for round_number in range(25):
        path = os.path.join(tmp_path, f"verdicts-{round_number}.sqlite")
        barrier, results = context.Barrier(8), context.Queue()
        processes = [context.Process(target=_open_at_once, args=(path, barrier, results)) for _ in range(8)]
        for process in processes:
            process.start()
        outcomes += [results.get(timeout=30) for _ in processes]
        for process in processes:
            process.join(30)
    assert set(outcomes) == {"ok"}


def test_a_path_the_daemon_cannot_write_is_not_ready_and_names_the_fix(make_gateway, tmp_path):
    gateway = make_gateway(f"[audit]\npath = {tmp_path}/missing/audit.log\n")
    status, body = readyz(gateway.app)
    assert status == 503 and body["status"] == "not_ready"
    assert f"{tmp_path}/missing" in body["checks"]["permissions"] and "install -d" in body["checks"]["permissions"]
    (tmp_path / "missing").mkdir()
    assert readyz(gateway.app)[0] == 200  # checked live: fixed without a restart
