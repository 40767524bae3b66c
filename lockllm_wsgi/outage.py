"""Outage: the state of one shared store (Redis) that the gateway can live without for a while.

After a failure the store is skipped for a cool-down, so a lost Redis costs one timeout per cool-down, not one per
request; the first failure and the recovery are each logged once, as JSON::

    redis_state = Outage("ratelimit", "redis://cache:6379/0")
    if redis_state.available(): ...; redis_state.failed(error) or redis_state.succeeded()
"""

from __future__ import annotations

import logging
import threading
import time

from .config import masked_url

log = logging.getLogger(__name__)

# Long enough that a dead Redis does not add a connect timeout to every request, short enough that limits and
# shared verdicts come back soon after Redis does.
DEFAULT_COOL_DOWN_SECONDS = 5.0


class Outage:
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
