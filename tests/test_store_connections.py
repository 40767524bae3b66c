"""Per-thread SQLite connections (stores.ThreadConnections): one per thread, each closed by its owner, never left
to the garbage collector (Python 3.13 reports that as a ResourceWarning, an error in this suite)."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from lockllm_wsgi.stores import ThreadConnections


@pytest.fixture
def connections(tmp_path):
    """A maker of (ThreadConnections, every connection it opened): the test holds the only reference."""

    def make() -> tuple[ThreadConnections, list[sqlite3.Connection]]:
        opened: list[sqlite3.Connection] = []

        def connect() -> sqlite3.Connection:
            opened.append(sqlite3.connect(tmp_path / "store.sqlite", check_same_thread=False))
            return opened[-1]

        return ThreadConnections(connect), opened

    return make


def closed(connection: sqlite3.Connection) -> bool:
    try:
        connection.execute("SELECT 1")
    except sqlite3.ProgrammingError:
        return True
    return False


def test_each_thread_has_its_own_and_keeps_it(connections):
    store, opened = connections()
    mine = store.get()
    assert store.get() is mine
    theirs = []
    worker = threading.Thread(target=lambda: theirs.append(store.get()))
    worker.start()
    worker.join()
    assert theirs[0] is not mine and len(opened) == 2
    store.close()


def test_an_ended_threads_connection_is_closed_when_the_next_is_opened(connections):
    store, opened = connections()
    worker = threading.Thread(target=store.get)
    worker.start()
    worker.join()
    assert not closed(opened[0])
    later = threading.Thread(target=store.get)  # a new thread's first connection prunes the ended one
    later.start()
    later.join()
    assert closed(opened[0]) and not closed(opened[1])
    store.close()
    assert all(closed(connection) for connection in opened)


def test_an_owner_let_go_without_close_closes_them(connections):
    store, opened = connections()
    store.get()
    del store
    assert closed(opened[0])
