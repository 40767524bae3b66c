"""The background cache writer: writes happen after the answer, and a full queue drops a write, never blocks."""

from __future__ import annotations

import threading

from lockllm_wsgi.verdict_cache import BackgroundWriter


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
