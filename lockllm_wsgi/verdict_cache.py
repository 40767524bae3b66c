"""The verdict cache: requests-cache's storage on SQLite (one node) or Redis (several), keeping verdicts only.

requests-cache by default pickles whole responses with their requests, so the cache file would hold the prompt
(the request body) and the key (a header). Here the stored entry is scrubbed to the verdict fields, the cache key
is a hash of what changes a verdict (scanner URL, the key's identity, the body: text and sensitivity), the
serializer is JSON (a tampered entry cannot run code), and any cache error is a miss. The scan client uses it
through `VerdictStore` (below); only verdicts its own parser accepted are stored.
"""

from __future__ import annotations

import hashlib
from contextlib import closing
import json
import logging
import queue
import random
import sqlite3
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Callable

import requests
import redis
from requests_cache import BaseCache, RedisCache, SQLiteCache
from requests_cache.serializers.pipeline import SerializerPipeline, Stage
from requests_cache.serializers.preconf import json_preconf_stage

from .config import ScannerSettings
from .stores import Outage, ThreadConnections, create_private_file, is_redis, masked_url, redis_client

log = logging.getLogger(__name__)

# Fields of a scan answer worth keeping; everything else (an echoed input, say) is dropped before storing, and
# the kept findings lose what quotes the prompt (a policy's violation details, PII's redacted input).
VERDICT_FIELDS = ("safe", "label", "confidence", "injection", "request_id", "scan_warning", "policy_confidence",
                  "policy_warnings", "pii_result", "abuse_warnings")
_QUOTING_FIELDS = {"policy_warnings": ("violation_details",), "pii_result": ("redacted_input",),
                   "abuse_warnings": ("indicators", "recommendation"), "scan_warning": ("message",)}


def _without_quotes(key: str, value: object) -> object:
    drop = _QUOTING_FIELDS.get(key, ())
    if isinstance(value, dict):
        return {name: item for name, item in value.items() if name not in drop}
    if isinstance(value, list):
        return [_without_quotes(key, item) for item in value]
    return value
# Milliseconds a process waits for another's write before treating the cache as unavailable (a miss).
DEFAULT_BUSY_TIMEOUT_MS = 2000
# Redis keys of the verdict cache start with this, so one Redis can serve other applications too.
REDIS_NAMESPACE = "lockllm_wsgi:verdicts"
# Batches of verdicts waiting for the background writer (one batch: a verdict, or a request's held verdicts).
# Storing a verdict costs about 0.3 ms of CPU (requests-cache's model, cattrs, JSON, an SQLite write), so it happens
# off the request; when this many batches are waiting the newest is dropped (a later miss, never a wrong verdict).
DEFAULT_WRITE_QUEUE = 256
# Daemon processes that open a new cache file at the same moment race to switch it to WAL, and SQLite answers
# "database is locked" to the losers at once (the busy timeout does not apply): each tries again this many times,
# after OPEN_BACKOFF_SECONDS doubled per attempt and jittered, a few seconds at worst, once per process start.
DEFAULT_OPEN_ATTEMPTS = 6
OPEN_BACKOFF_SECONDS = 0.05
_sleep = time.sleep  # the pause between attempts (tests replace it, never time.sleep itself)
# Page cache of each thread's read connection (SQLite's default is 2 MiB each); lookups touch a few pages.
READER_CACHE_KIB = 256


class BackgroundWriter:
    """One thread that runs cache writes after the request has moved on; a full queue drops the write.

    Started on first use, so a process forked after construction gets its own thread; once closed, it drops what
    it is given (a scan that outlived a replaced gateway must not reopen the cache it closed)."""

    def __init__(self, maxsize: int = DEFAULT_WRITE_QUEUE):
        self._queue: queue.Queue[tuple[Callable[[], None], ...] | None] = queue.Queue(maxsize)
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._closed = False
        self._holds = 0  # HeldWrites holding writes not yet released
        self._holds_changed = threading.Condition()

    def submit(self, *writes: Callable[[], None]) -> None:
        """Queue `writes`, run in order as one batch."""
        if self._closed:
            log.debug('{"event": "cache_write_dropped", "reason": "closed"}')
            return
        if self._thread is None or not self._thread.is_alive():
            with self._start_lock:
                if self._thread is None or not self._thread.is_alive():
                    self._thread = threading.Thread(target=self._run, name="lockllm-cache-writer", daemon=True)
                    self._thread.start()
        try:
            self._queue.put_nowait(writes)
        except queue.Full:
            log.debug('{"event": "cache_write_dropped", "queued": %d}', self._queue.maxsize)

    def hold(self) -> HeldWrites:
        """A request's hold on its writes, to release once its answer is sent (HeldWrites)."""
        return HeldWrites(self)

    def _count_hold(self, change: int) -> None:
        """HeldWrites' count of holds with writes in them, which flush waits for."""
        with self._holds_changed:
            self._holds += change
            self._holds_changed.notify_all()

    def _run(self) -> None:
        while True:
            writes = self._queue.get()
            try:
                if writes is None:
                    return
                for write in writes:
                    try:
                        write()  # guarded by the backend: a failed write is logged, never raised
                    except Exception:  # noqa: BLE001 - the writer thread must outlive any one bad write
                        log.exception("cache write failed")
            finally:
                self._queue.task_done()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every write so far is done, the held ones included (tests); False if `timeout` passed first."""
        deadline = time.monotonic() + timeout
        with self._holds_changed:
            if not self._holds_changed.wait_for(lambda: not self._holds, timeout):
                return False
        return self._drain(max(0.0, deadline - time.monotonic()))

    def _drain(self, timeout: float) -> bool:
        with self._queue.all_tasks_done:
            return self._queue.all_tasks_done.wait_for(lambda: not self._queue.unfinished_tasks, timeout)

    def close(self, timeout: float = 1.0) -> None:
        """Finish the queued writes (up to `timeout`) and stop the thread; writes given later are dropped. Writes
        still held (a request that has not ended) are not waited for."""
        self._closed = True
        if self._thread is not None and self._thread.is_alive():
            self._drain(timeout)
            try:
                self._queue.put_nowait(None)
            except queue.Full:
                pass


class HeldWrites:
    """One request's verdict cache writes, held until its answer is sent (app.py), then queued as one batch.

    Queued as each verdict arrived, a write made the writer thread take the GIL from the request it belonged to,
    just as the request went on to the provider: 0.5-0.9 ms of a cache miss (docs/benchmarks.md, round six). One
    batch, so a request of many fresh texts is not cut short by the writer's queue. A write that comes after the
    release (a scan worker that outlived its request's deadline) is queued at once."""

    def __init__(self, writer: BackgroundWriter):
        self._writer = writer
        self._held: list[Callable[[], None]] = []
        self._open = True
        self._lock = threading.Lock()

    def submit(self, write: Callable[[], None]) -> None:
        with self._lock:
            if self._open:
                if not self._held:
                    self._writer._count_hold(1)
                self._held.append(write)
                return
        self._writer.submit(write)

    def release(self) -> None:
        with self._lock:
            held, self._held, self._open = self._held, [], False
        if held:
            try:
                self._writer.submit(*held)
            finally:
                self._writer._count_hold(-1)


def _scrub(entry: dict) -> dict:
    """Drop the prompt and the key from a response about to be stored: keep status, expiry and verdict."""
    request = entry.get("request") or {}
    entry["request"] = {**request, "body": None, "headers": {}}
    entry["headers"] = {"Content-Type": "application/json"}
    content = entry.pop("_decoded_content", None)
    entry.pop("_content", None)
    if isinstance(content, dict):
        entry["_decoded_content"] = {key: _without_quotes(key, content[key]) for key in VERDICT_FIELDS if key in content}
    else:
        entry["_decoded_content"] = {}
    return entry


_SCRUBBING_JSON = SerializerPipeline(
    [
        json_preconf_stage,
        Stage(dumps=_scrub, loads=lambda entry: entry),
        Stage(json),
    ],
    name="scrubbed-json",
    is_binary=False,
)


class _Forgiving:
    """Cache storage whose every failure ("database is locked", a corrupted row, a lost Redis) is logged and read
    as a miss. With an `outage`, a failed store is skipped for a cool-down instead of timing out on every scan."""

    outage: Outage | None = None
    writer: BackgroundWriter | None = None

    def _guarded(self, operation: str, call, default=None):
        if self.outage is not None and not self.outage.available():
            return default
        try:
            result = call()
        except Exception as error:  # noqa: BLE001 - any broken entry must be a miss, never a scanner error
            log.warning('{"event": "cache_error", "operation": "%s", "error": "%s"}', operation, type(error).__name__)
            if self.outage is not None:
                self.outage.failed(error)
            return default
        if self.outage is not None:
            self.outage.succeeded()
        return result

    def get_response(self, key, default=None):
        return self._guarded("read", lambda: super(_Forgiving, self).get_response(key, default), default)

    def get_verdict(self, key: str):
        """The stored, unexpired response under `key`, or None: one read of the responses table (verdicts are
        never stored under redirect aliases), any failure a miss."""
        response = self._guarded("read", lambda: self._load(key))
        if response is None or response.is_expired:
            return None
        return response

    def _load(self, key: str):
        return self.responses.get(key)

    def save_response(self, response, cache_key=None, expires=None,
                      writer: BackgroundWriter | HeldWrites | None = None):
        """requests-cache's save, by `writer` (else this cache's writer thread, else at once)."""
        def write():
            self._guarded("write", lambda: super(_Forgiving, self).save_response(response, cache_key, expires))

        writer = writer if writer is not None else self.writer
        if writer is None:
            return write()
        # The key is already computed, so the held or queued response need not keep the prompt (the request body)
        # alive.
        if cache_key is not None and getattr(response, "request", None) is not None:
            request = response.request.copy()
            request.body = None
            response.request = request
        writer.submit(write)

    def delete(self, *args, **kwargs):
        self._guarded("delete", lambda: super(_Forgiving, self).delete(*args, **kwargs))


class ForgivingSQLiteCache(_Forgiving, SQLiteCache):
    """The verdict cache of one node: a SQLite file shared by its processes (WAL, busy timeout).

    Lookups use a read connection of their own per thread: requests-cache's one connection is shared with the
    writer thread, so a lookup waited behind the write transaction of another verdict (0.7 ms a read under load,
    against 0.04 ms alone); under WAL, readers on their own connections never wait for the writer."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._readers = ThreadConnections(self._connect_reader)

    def _connect_reader(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self.responses.db_path, timeout=DEFAULT_BUSY_TIMEOUT_MS / 1000,
                                     isolation_level=None, check_same_thread=False)
        connection.execute(f"PRAGMA cache_size=-{READER_CACHE_KIB}")  # the OS caches the file; keep this small
        connection.execute("PRAGMA query_only=1")
        return connection

    def _load(self, key: str):
        row = self._readers.get().execute("SELECT value FROM responses WHERE key=?", (key,)).fetchone()
        return self.responses.deserialize(key, row[0]) if row else None

    def close(self) -> None:
        self._readers.close()
        super().close()


class ForgivingRedisCache(_Forgiving, RedisCache):
    """The verdict cache shared by several nodes; while Redis is lost, every scan is a miss (scanned live)."""


def open_backend(settings: ScannerSettings, attempts: int = DEFAULT_OPEN_ATTEMPTS) -> BaseCache:
    """The storage named by `[scanner] cache`, with the scrubbing serializer; raises OSError or sqlite3.Error once
    `attempts` tries have met a lock held by another process."""
    if is_redis(settings.cache):
        backend = ForgivingRedisCache(REDIS_NAMESPACE, connection=redis_client(settings.cache),
                                      serializer=_SCRUBBING_JSON, decode_content=True)
        backend.outage = Outage("verdict_cache", settings.cache)
        return backend
    path = settings.cache_path
    assert path is not None, "open_backend needs a cache setting other than off"
    create_private_file(path)
    for attempt in range(attempts):
        try:
            return ForgivingSQLiteCache(
                path, serializer=_SCRUBBING_JSON, decode_content=True, wal=True,
                busy_timeout=DEFAULT_BUSY_TIMEOUT_MS, timeout=DEFAULT_BUSY_TIMEOUT_MS / 1000,
            )
        except sqlite3.OperationalError as error:
            if not _is_contention(error) or attempt + 1 >= attempts:
                raise
            log.debug('{"event": "cache_open_retry", "attempt": %d, "error": "%s"}', attempt + 1, error)
            _sleep(OPEN_BACKOFF_SECONDS * 2 ** attempt * random.uniform(0.5, 1.5))
    raise AssertionError("not reached")


def _is_contention(error: sqlite3.OperationalError) -> bool:
    """Another connection holds the lock (SQLITE_BUSY or SQLITE_LOCKED): worth trying again shortly."""
    name = getattr(error, "sqlite_errorname", "")
    return name in ("SQLITE_BUSY", "SQLITE_LOCKED") or "database is locked" in str(error)


def cache_problem(settings: ScannerSettings) -> str | None:
    """Why the configured cache cannot be used right now, or None when it can (or caching is off)."""
    if settings.cache == "off":
        return None
    try:
        if settings.cache_path:
            with closing(sqlite3.connect(f"file:{settings.cache_path}?mode=ro", uri=True, timeout=1)) as connection:
                connection.execute("SELECT 1 FROM responses LIMIT 1").fetchone()
        else:
            with redis_client(settings.cache) as client:
                client.ping()
    except (sqlite3.Error, redis.RedisError) as error:
        return f"{masked_url(settings.cache)}: {type(error).__name__}: {error}"
    return None


class UncachedSession(requests.Session):
    """The session scans go through when the configured cache could not be opened: `cache_problem` says why, for
    /readyz and the metrics (a process that scans without its cache must not look like one that has it)."""

    def __init__(self, cache_problem: str):
        super().__init__()
        self.cache_problem = cache_problem


def unused_cache(session: object) -> str | None:
    """Why the configured cache is not behind `session` (it could not be opened at start-up), or None."""
    return session.cache_problem if isinstance(session, UncachedSession) else None


def verdict_key(method: str, url: str, key_identity: str, headers, body: bytes) -> str:
    """The cache key: method, scanner URL, the key's identity, what LockLLM was asked to check (the X-LockLLM-*
    headers change the verdict as much as the text does) and the body (text and sensitivity), hashed."""
    digest = hashlib.sha256()
    asked = "\n".join(f"{name}:{value}" for name, value in sorted(headers)
                      if name.lower().startswith("x-lockllm-")).encode()
    for part in (method.encode(), url.encode(), key_identity.encode(), asked, body):
        digest.update(part if isinstance(part, bytes) else part.encode())
        digest.update(b"\0")
    return digest.hexdigest()


class VerdictStore:
    """The verdict cache as the scan client uses it: look a verdict up, store a fresh one off the request.

    The storage is requests-cache's (its SQLite or Redis backend, its CachedResponse model, the scrubbing JSON
    serializer above, its expiry); what is left out is CachedSession's per-request machinery (cache policy from
    headers, a second lookup for redirect aliases, the synchronous save), which cost 1-1.5 ms of CPU per
    cache miss (docs/benchmarks.md). A miss is sent by the caller's own session; only a usable verdict is stored::

        store = open_verdict_store(settings.scanner, key_identity, writer)
        key = store.key(url, headers, body)
        cached = store.lookup(key)            # CachedResponse or None
        store.save(key, response)             # after parse_verdict accepted it; queued for the writer thread
        store.save(key, response, held)       # ... or held until the request's answer is sent (HeldWrites)
    """

    def __init__(self, backend: BaseCache, key_identity: str, ttl: float):
        self.backend = backend
        self.key_identity = key_identity
        self.ttl = ttl

    def key(self, url: str, headers: dict[str, str], body: bytes) -> str:
        return verdict_key("POST", url, self.key_identity, headers.items(), body)

    def lookup(self, key: str):
        return self.backend.get_verdict(key)  # type: ignore[attr-defined]

    def save(self, key: str, response: requests.Response, held: HeldWrites | None = None) -> None:
        """Store `response` under `key`, by the writer thread (`held`: once the request's answer is sent)."""
        expires = datetime.now(timezone.utc) + timedelta(seconds=self.ttl)
        self.backend.save_response(response, cache_key=key, expires=expires, writer=held)

    def close(self) -> None:
        self.backend.close()


def open_verdict_store(settings: ScannerSettings, key_identity: str,
                       writer: BackgroundWriter | None = None) -> tuple[VerdictStore | None, str | None]:
    """(the verdict store for `settings.cache`, None); (None, why) if the cache cannot be opened (logged), and the
    scans go uncached. With a `writer`, verdicts are stored by its thread."""
    try:
        backend = open_backend(settings)
    except (OSError, sqlite3.Error) as error:
        log.error(
            '{"event": "cache_unavailable", "cache": "%s", "error": "%s", "effect": "scanning without a cache"}',
            masked_url(settings.cache), str(error).replace('"', "'"),
        )
        return None, f"{masked_url(settings.cache)}: {type(error).__name__}: {error}"
    backend.writer = writer  # type: ignore[attr-defined]
    return VerdictStore(backend, key_identity, float(settings.cache_ttl)), None
