"""Shared stores: the SQLite files and Redis servers that the verdict cache and the rate limit keep their state
in, and what both need of them: reading a store URL, a private file, a Redis client that gives up quickly, a URL
safe to log, and the state of a store the gateway can live without for a while (`Outage`)::

    if is_redis(url): client = redis_client(url)
    else: create_private_file(sqlite_path(url))
    outage = Outage("ratelimit", url)  # outage.available(); outage.failed(error); outage.succeeded()
    connections = ThreadConnections(lambda: sqlite3.connect(path, check_same_thread=False))  # .get(), .close()

Imports nothing of the package, and Redis only when a client is made, so settings and policy stay light.
"""

from __future__ import annotations

import logging
import os
import re
import sqlite3
import threading
import time
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    import redis

log = logging.getLogger(__name__)

SQLITE_PREFIX = "sqlite:///"
REDIS_SCHEMES = ("redis://", "rediss://")
# A scan takes tens of milliseconds; a store lookup that takes longer than this is worse than no store.
DEFAULT_REDIS_TIMEOUT_SECONDS = 0.25
# Long enough that a dead Redis does not add a connect timeout to every request, short enough that limits and
# shared verdicts come back soon after Redis does.
DEFAULT_COOL_DOWN_SECONDS = 5.0


def is_redis(url: str) -> bool:
    return url.startswith(REDIS_SCHEMES)


def sqlite_path(url: str) -> str | None:
    """The file behind `sqlite:////abs/path`, or None for any other URL."""
    return url[len(SQLITE_PREFIX):] if url.startswith(SQLITE_PREFIX) else None


def masked_url(url: str) -> str:
    """A store URL safe to print: any password (redis://:secret@host) replaced by ****."""
    return re.sub(r"(://[^/@]*?:)[^/@]*@", r"\1****@", url)


def create_private_file(path: str) -> None:
    """Create `path` 0600 (SQLite gives its -wal and -shm files the same mode) in a 0700 folder, if missing."""
    folder = os.path.dirname(path)
    if not os.path.isdir(folder):
        os.makedirs(folder, mode=0o700, exist_ok=True)
    os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))


class ThreadConnections:
    """One SQLite connection per thread (a connection must not be used by two threads at once), each closed by us:
    when its thread has ended (checked whenever a new one is opened, so there are never more than live threads)
    or at close(). Left to the garbage collector, a connection is closed without a word on Python 3.12 and with
    a ResourceWarning on 3.13. `connect` must pass check_same_thread=False: the closing thread is another one."""

    def __init__(self, connect: Callable[[], sqlite3.Connection]):
        self._connect = connect
        self._local = threading.local()
        self._lock = threading.Lock()
        self._open: list[tuple[threading.Thread, sqlite3.Connection]] = []

    def get(self) -> sqlite3.Connection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._connect()
            self._local.connection = connection
            with self._lock:
                ended = [pair for pair in self._open if not pair[0].is_alive()]
                self._open = [pair for pair in self._open if pair[0].is_alive()]
                self._open.append((threading.current_thread(), connection))
            for _thread, stale in ended:
                stale.close()
        return connection

    def close(self) -> None:
        with self._lock:
            pairs, self._open = self._open, []
        for _thread, connection in pairs:
            connection.close()

    # An owner dropped without close() (an app a test built and let go) still closes them, as requests-cache's
    # own SQLite connection does.
    __del__ = close


def redis_client(url: str) -> "redis.Redis":
    """A Redis client that gives up quickly: a slow Redis must cost a miss, not a slow request."""
    import redis

    return redis.Redis.from_url(url, socket_timeout=DEFAULT_REDIS_TIMEOUT_SECONDS,
                                socket_connect_timeout=DEFAULT_REDIS_TIMEOUT_SECONDS)


class Outage:
    """A shared store that failed is skipped for a cool-down, so a lost Redis costs one timeout per cool-down, not
    one per request; the first failure and the recovery are each logged once, as JSON."""

    def __init__(self, store: str, url: str, cool_down: float | None = None):
        self.store = store
        self.where = masked_url(url)
        self.cool_down = DEFAULT_COOL_DOWN_SECONDS if cool_down is None else cool_down
        self._lock = threading.Lock()
        self._down_until: float | None = None

    def available(self) -> bool:
        with self._lock:
            return self._down_until is None or time.monotonic() >= self._down_until

    def failed(self, error: BaseException) -> None:
        with self._lock:
            first = self._down_until is None
            self._down_until = time.monotonic() + self.cool_down
        if first:
            log.warning('{"event": "store_unavailable", "store": "%s", "url": "%s", "error": "%s", '
                        '"effect": "local behaviour until it is back"}', self.store, self.where, type(error).__name__)

    def succeeded(self) -> None:
        with self._lock:
            recovered = self._down_until is not None
            self._down_until = None
        if recovered:
            log.warning('{"event": "store_recovered", "store": "%s", "url": "%s"}', self.store, self.where)
