"""A circuit breaker for the scan client: a scanner that keeps failing is not waited for on every request.

A hanging scanner costs each request the whole scan deadline (5 s by default) and holds a daemon thread for it,
so throughput collapses to threads / deadline. After DEFAULT_FAILURES consecutive failed scans (connection errors,
timeouts, 5xx, unusable answers: what the scanner causes, never what a request causes), the breaker opens: for
DEFAULT_COOL_DOWN_SECONDS every scan that has no cached verdict fails at once, so the fail mode decides at once
(503 when closed, relay when open). Then one scan is let through as a probe: a verdict closes the breaker, a
failure opens it for another cool-down. Cached verdicts keep being served while it is open::

    breaker = CircuitBreaker()
    scan_piece = breaker.guard(live_scan, cached_only)  # scan_piece(text, deadline) -> Verdict or ScannerUnavailable

Not for rate limits (a 429 to the end of the retries is the clients' volume, handled by the scan client), input
the scanner refuses, or a refused key or spent credit (fast, and named to the client): those neither open nor
close it. Nor can one request open it: its texts' failures count once (with fail_mode = open, a request of many
texts whose own scans time out would otherwise open the breaker and have the rest of itself relayed unscanned).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Callable, Optional

from .verdict import ScannerUnavailable, Verdict

log = logging.getLogger(__name__)

# Consecutive failed scans that open the breaker: more than one request's worth of bad luck (a blip fails the few
# texts in flight), few enough that a hung scanner is noticed within a request or two.
DEFAULT_FAILURES = 5
# Seconds the breaker stays open before one probe: short enough that a recovered scanner is used again soon,
# long enough that a dead one costs one deadline per cool-down instead of one per request.
DEFAULT_COOL_DOWN_SECONDS = 10.0
# A failed scan counts only for a text no longer than this that started with at least half the request's scan
# budget left: a healthy scanner judges ordinary texts quickly whatever they say, while a very long text, or one
# queued behind a request's many others (or other requests'), may miss the deadline on a client's account. A
# client must not be able to open the breaker (and, with fail_mode = open, have everyone's requests relayed
# unscanned) by its own size, nor have its own request relayed when such a text runs out of time (scan.py).
COUNTED_TEXT_CHARS = 20_000


def on_clients_account(text: str, time_left: float, budget: float) -> bool:
    """Whether a scan of `text`, started with `time_left` of a request's `budget` seconds, may miss the deadline
    on the client's account (COUNTED_TEXT_CHARS)."""
    return len(text) > COUNTED_TEXT_CHARS or time_left < budget / 2


class CircuitBreaker:
    """Closed (scans go through), open (they fail at once), half-open (one probe goes through); thread-safe."""

    def __init__(self, failures: int = DEFAULT_FAILURES, cool_down: float = DEFAULT_COOL_DOWN_SECONDS,
                 clock: Callable[[], float] = time.monotonic):
        self.failures = failures
        self.cool_down = cool_down
        self._clock = clock
        self._lock = threading.Lock()
        self._consecutive = 0
        self._counted: set[object] = set()  # the requests whose failure is in the count: each counts once
        self._open_until: Optional[float] = None
        self._probing = False

    @property
    def state(self) -> str:
        with self._lock:
            if self._open_until is None:
                return "closed"
            return "open" if self._clock() < self._open_until or self._probing else "half_open"

    def allow(self) -> bool:
        """Whether a live scan may go now; in half-open, only the first caller (the probe) is let through."""
        with self._lock:
            if self._open_until is None:
                return True
            if self._clock() < self._open_until or self._probing:
                return False
            self._probing = True
            return True

    def succeeded(self) -> None:
        with self._lock:
            recovered = self._open_until is not None
            self._consecutive, self._open_until, self._probing = 0, None, False
            self._counted.clear()
        if recovered:
            log.warning(json.dumps({"event": "scanner_circuit_closed"}))

    def failed(self, problem: str, request: object = None) -> None:
        """A failed scan of `request` (any hashable naming it; None: a request of its own)."""
        with self._lock:
            if request is not None and request in self._counted and not self._probing:
                return
            if request is not None:
                self._counted.add(request)
            self._consecutive += 1
            opening = self._probing or (self._open_until is None and self._consecutive >= self.failures)
            if opening:
                self._open_until, self._probing = self._clock() + self.cool_down, False
                self._counted.clear()
        if opening:
            log.warning(json.dumps({"event": "scanner_circuit_open", "consecutive_failures": self._consecutive,
                                    "cool_down_seconds": self.cool_down, "problem": problem}))

    def released(self) -> None:
        """A scan that neither succeeded nor failed for the scanner's sake (a 429, input it refused): a probe's
        slot is given back, the count is left as it was."""
        with self._lock:
            self._probing = False

    def guard(self, scan: Callable[..., Verdict], cached: Callable[..., Optional[Verdict]],
              budget: float) -> Callable[..., Verdict]:
        """`scan(text, deadline, *rest)` behind the breaker: while it is open, `cached(text, *rest)` answers if it
        can, else ScannerUnavailable at once. `budget` is the scan deadline of a whole request, in seconds
        (COUNTED_TEXT_CHARS says why). The texts of one request share its `deadline`, which names the request
        here, so its failures count once."""

        def guarded(text: str, deadline: float, *rest: object) -> Verdict:
            if not self.allow():
                verdict = cached(text, *rest)
                if verdict is not None:
                    return verdict
                raise ScannerUnavailable(f"scanner circuit open after {self.failures} consecutive failures "
                                         f"(next probe within {self.cool_down:g}s)")
            counted = not on_clients_account(text, deadline - self._clock(), budget)
            try:
                verdict = scan(text, deadline, *rest)
            except ScannerUnavailable as problem:
                # A refused key or spent credit fails fast and is reported by name: nothing to save by opening.
                if problem.caused_by_request or getattr(problem, "account", None) or not counted:
                    self.released()
                else:
                    self.failed(str(problem), deadline)
                raise
            except BaseException as error:
                if counted:
                    self.failed(type(error).__name__, deadline)
                else:
                    self.released()
                raise
            self.succeeded()
            return verdict

        return guarded
