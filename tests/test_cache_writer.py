"""The background cache writer: writes happen after the answer, and a full queue drops a write, never blocks."""

from __future__ import annotations

import io
import json
import sqlite3
import threading
from contextlib import closing

import pytest
import requests

from lockllm_wsgi.verdict_cache import BackgroundWriter
from support.fakes import ATTACK, closed_port


def test_a_full_queue_drops_the_write_instead_of_blocking_the_request():
    writer = BackgroundWriter(maxsize=1)
    release = threading.Event()
    started = threading.Event()
    done: list[str] = []

    def slow_write():
        started.set()
        release.wait(5)
        done.append("slow")

    writer.submit(slow_write)
    assert started.wait(5)  # the writer thread is busy with it; the queue is empty again
    writer.submit(lambda: done.append("queued"))  # fills the queue of one
    writer.submit(lambda: done.append("dropped"))  # returns at once: nothing waits on the cache
    release.set()
    assert writer.flush(5)
    writer.close()
    assert done == ["slow", "queued"]


def test_a_failing_write_does_not_stop_the_writer():
    writer = BackgroundWriter()
    done: list[str] = []

    def broken():
        raise RuntimeError("disk full")

    writer.submit(broken)
    writer.submit(lambda: done.append("next"))
    assert writer.flush(5)
    writer.close()
    assert done == ["next"]


def test_held_writes_wait_for_their_release_and_flush_waits_for_them():
    writer = BackgroundWriter()
    done: list[str] = []
    held = writer.hold()
    held.submit(lambda: done.append("held"))
    assert not writer.flush(0.05) and done == []  # nothing written while the request's answer is going out
    held.release()
    assert writer.flush(5) and done == ["held"]
    held.submit(lambda: done.append("late"))  # a scan that outlived its request: written at once
    held.release()  # a second release changes nothing
    assert writer.flush(5) and done == ["held", "late"]
    writer.close()


def test_a_request_of_more_fresh_texts_than_the_queue_holds_is_written_whole():
    writer = BackgroundWriter(maxsize=2)
    done: list[int] = []
    held = writer.hold()
    for index in range(10):
        held.submit(lambda index=index: done.append(index))
    held.release()
    assert writer.flush(5) and done == list(range(10))
    writer.close()


def test_a_closed_writer_drops_what_it_is_given_and_is_not_started_again():
    writer = BackgroundWriter()
    done: list[str] = []
    held = writer.hold()
    held.submit(lambda: done.append("held"))
    writer.submit(lambda: done.append("before"))
    writer.close()  # a replaced gateway, its cache closed after this
    held.release()  # a request that ended after it: its cache is gone
    writer.submit(lambda: done.append("after"))
    assert writer.flush(5) and done == ["before"]


def _stored_verdicts(cache: str) -> int:
    with closing(sqlite3.connect(cache)) as connection:  # a connection's own `with` does not close it
        return connection.execute("SELECT COUNT(*) FROM responses").fetchone()[0]


def test_a_fresh_verdict_is_stored_once_the_answer_is_sent(make_gateway, provider, tmp_path):
    """Stored as it arrived, the verdict's write took the GIL from the request going on to the provider."""
    provider.expect_request("/v1/chat/completions").respond_with_json({"id": "x", "choices": []})
    cache = tmp_path / "verdicts.sqlite"
    app = make_gateway(scanner_extra=f"cache = sqlite:///{cache}").app
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "a fresh text"}]}).encode()
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/openai/v1/chat/completions", "CONTENT_LENGTH": str(len(body)),
               "CONTENT_TYPE": "application/json", "REMOTE_ADDR": "127.0.0.1", "wsgi.input": io.BytesIO(body)}
    answer = app(environ, lambda status, headers, exc_info=None: None)
    assert json.loads(b"".join(answer)) == {"id": "x", "choices": []}
    assert app.scanner.writer._drain(5)  # whatever was queued is written: nothing was
    assert _stored_verdicts(cache) == 0
    answer.close()  # the server is done sending the answer
    assert app.scanner.flush() and _stored_verdicts(cache) == 1


@pytest.mark.parametrize("text, upstream_up, status", [
    pytest.param("a fresh text", True, 200, id="relayed"),
    pytest.param(f"a fresh text. {ATTACK}", True, 400, id="blocked"),
    pytest.param("a fresh text", False, 502, id="provider-unreachable"),
])
def test_every_ending_of_a_scanned_request_stores_its_verdict(make_gateway, provider, tmp_path, text, upstream_up,
                                                             status):
    """The held writes are released however the request ends, so flush (which waits for held writes) returns."""
    provider.expect_request("/v1/chat/completions").respond_with_json({"id": "x", "choices": []})
    cache = tmp_path / "verdicts.sqlite"
    gateway = make_gateway(scanner_extra=f"cache = sqlite:///{cache}",
                           upstream=None if upstream_up else f"http://127.0.0.1:{closed_port()}")
    answer = requests.post(gateway.url + "/openai/v1/chat/completions", timeout=10,
                           json={"model": "m", "messages": [{"role": "user", "content": text}]})
    assert answer.status_code == status
    assert gateway.app.scanner.flush(5) and _stored_verdicts(cache) == 1
