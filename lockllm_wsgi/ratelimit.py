"""Rate limits: a token bucket per route and client identity, shared by every process (SQLite) or node (Redis).

A client may send `burst` requests at once, then `requests_per_minute` on average; one more is refused with 429 and
Retry-After in the route's provider shape, before its body is read or scanned, so a flood costs no scanner budget.
If the shared store fails, each process keeps limits in memory (logged once) until the store is back: a lost
Redis weakens the limit, it never stops the gateway::

    limiter = RateLimiter(settings.ratelimit)
    limiter.check("openai", "user:alice")  # raises Refusal(429, "rate_limited", ...) when the bucket is empty
"""

from __future__ import annotations

import logging
import math
import sqlite3
import threading
import time
from typing import Protocol

import redis

from .config import RateLimitSettings
from .refusal import Refusal
from .stores import Outage, ThreadConnections, create_private_file, is_redis, redis_client, sqlite_path

log = logging.getLogger(__name__)

# Milliseconds a process waits for another's SQLite write before the store counts as failed (memory takes over).
DEFAULT_BUSY_TIMEOUT_MS = 500
# Every this many requests, forget buckets that have refilled: a full bucket and no bucket mean the same.
DEFAULT_PRUNE_EVERY = 1000
REDIS_PREFIX = "lockllm_wsgi:ratelimit:"


def refill_and_take(tokens: float, updated: float, now: float, rate: float, capacity: float) -> tuple[float, float]:
    """The bucket after refilling since `updated` and taking one token: (tokens left, seconds to wait, 0 if none)."""
    tokens = min(capacity, tokens + max(0.0, now - updated) * rate)
    if tokens >= 1:
        return tokens - 1, 0.0
    return tokens, (1 - tokens) / rate


class Buckets(Protocol):
    def take(self, key: str, rate: float, capacity: float) -> float:
        """Take a token from bucket `key`; the seconds until one is available, or 0 when taken."""

    def close(self) -> None:
        """Release the store's connections."""


class MemoryBuckets:
    """One process's buckets: the fallback while the shared store is away."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}
        self._takes = 0

    def take(self, key: str, rate: float, capacity: float) -> float:
        now = time.time()
        with self._lock:
            tokens, updated = self._buckets.get(key, (capacity, now))
            tokens, wait = refill_and_take(tokens, updated, now, rate, capacity)
            self._buckets[key] = (tokens, now)
            self._takes += 1
            if self._takes % DEFAULT_PRUNE_EVERY == 0:
                full = now - capacity / rate
                self._buckets = {k: v for k, v in self._buckets.items() if v[1] > full}
        return wait


class SQLiteBuckets:
    """Buckets in a SQLite file, shared by the processes of one node; one write transaction per request."""

    def __init__(self, path: str):
        self.path = path
        create_private_file(path)
        self._takes = 0
        self._connections = ThreadConnections(self._connect)
        self._connections.get().execute(
            "CREATE TABLE IF NOT EXISTS buckets (key TEXT PRIMARY KEY, tokens REAL NOT NULL, updated REAL NOT NULL)")

    def _connect(self) -> sqlite3.Connection:
        # Autocommit mode, so BEGIN IMMEDIATE below is the only transaction and takes the write lock at once.
        connection = sqlite3.connect(self.path, timeout=DEFAULT_BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                                     check_same_thread=False)
        connection.execute("PRAGMA journal_mode=WAL")
        return connection

    def close(self) -> None:
        self._connections.close()

    def take(self, key: str, rate: float, capacity: float) -> float:
        connection = self._connections.get()
        now = time.time()
        connection.execute("BEGIN IMMEDIATE")
        try:
            row = connection.execute("SELECT tokens, updated FROM buckets WHERE key = ?", (key,)).fetchone()
            tokens, wait = refill_and_take(*(row or (capacity, now)), now, rate, capacity)
            connection.execute("INSERT OR REPLACE INTO buckets (key, tokens, updated) VALUES (?, ?, ?)",
                               (key, tokens, now))
            self._takes += 1
            if self._takes % DEFAULT_PRUNE_EVERY == 0:
                connection.execute("DELETE FROM buckets WHERE updated < ?", (now - capacity / rate,))
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        return wait


# refill_and_take, in Lua, run atomically by Redis on its own clock, so nodes with skewed clocks agree.
_REDIS_TAKE = """
local rate, capacity = tonumber(ARGV[1]), tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'updated')
local tokens, updated = tonumber(state[1]) or capacity, tonumber(state[2]) or now
tokens = math.min(capacity, tokens + math.max(0, now - updated) * rate)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = (1 - tokens) / rate end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'updated', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(capacity / rate) + 1)
return tostring(wait)
"""


class RedisBuckets:
    """Buckets in Redis, shared by every node; each expires once it would be full again."""

    def __init__(self, url: str):
        self._client = redis_client(url)
        self._take = self._client.register_script(_REDIS_TAKE)

    def close(self) -> None:
        self._client.close()

    def take(self, key: str, rate: float, capacity: float) -> float:
        return float(self._take(keys=[REDIS_PREFIX + key], args=[rate, capacity]))


class RateLimiter:
    def __init__(self, settings: RateLimitSettings):
        self.settings = settings
        self.rate = settings.requests_per_minute / 60
        self.capacity = float(settings.burst)
        self.local = MemoryBuckets()
        self.outage = Outage("ratelimit", settings.store)
        self.shared: Buckets | None
        try:
            self.shared = RedisBuckets(settings.store) if is_redis(settings.store) \
                else SQLiteBuckets(str(sqlite_path(settings.store)))
        except (OSError, sqlite3.Error) as error:
            self.shared = None
            self.outage.failed(error)

    def _take(self, key: str) -> float:
        if self.shared is not None and self.outage.available():
            try:
                wait = self.shared.take(key, self.rate, self.capacity)
            except (sqlite3.Error, redis.RedisError) as error:
                self.outage.failed(error)
            else:
                self.outage.succeeded()
                return wait
        return self.local.take(key, self.rate, self.capacity)

    def close(self) -> None:
        if self.shared is not None:
            self.shared.close()

    def check(self, route: str, identity: str) -> None:
        wait = self._take(f"{route}:{identity}")
        if wait > 0:
            seconds = max(1, math.ceil(wait))
            raise Refusal(429, "rate_limited", f"Too many requests: this gateway allows "
                          f"{self.settings.requests_per_minute:g} per minute (bursts of {self.settings.burst}) per "
                          f"client; retry in {seconds} s.", headers=(("Retry-After", str(seconds)),))
