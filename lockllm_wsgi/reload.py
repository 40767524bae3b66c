"""Changes without restarts: the application a `.wsgi` script serves, which notices a changed INI file and switches
to it without Apache restarting its daemons (a graceful restart cuts streams older than a few seconds)::

    application = ReloadingApp("/etc/lockllm/lockllm.ini", build)

At most every DEFAULT_CHECK_SECONDS a request looks at the file's identity (modification time, size, inode). When
it changed, the whole file is loaded and validated again: if it is good, new requests go to a gateway built from it
while requests in flight finish on the settings they started with (the old gateway's pools are closed once its last
request ends); if it is broken, nothing changes, the problem is logged once per change of the file and shown by
`/readyz` (readiness stays 200: one bad edit must not take a fleet out of its load balancer) and the
`lockllm_config_reload_failed` metric. `lockllm-wsgi check-config` stays the way to validate before saving.
"""

from __future__ import annotations

import os
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

from .audit import log_event

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

# How stale the settings may be after a save: a stat of one file, at most this often, costs nothing per request.
DEFAULT_CHECK_SECONDS = 2.0


def _identity(path: str) -> tuple[int, int, int] | None:
    try:
        status = os.stat(path)
    except OSError:
        return None
    return status.st_mtime_ns, status.st_size, status.st_ino


class ReloadingApp:
    """`build(path, previous)` returns (app, problem): the gateway (keeping what it takes over from `previous`), or a
    stand-in and the reason it could not be built."""

    def __init__(self, path: str, build: Callable[[str, Any], tuple[Any, str | None]],
                 check_every: float = DEFAULT_CHECK_SECONDS):
        self.path = path
        self._build = build
        self._check_every = check_every
        self._lock = threading.Lock()
        self._identity = _identity(path)
        self.current, problem = build(path, None)
        self.started_unavailable = problem is not None
        self.reload_problem: str | None = None  # why the last changed file was not taken; None when it was
        self._next_check = time.monotonic() + check_every
        self._in_flight: dict[int, int] = {}
        self._retired: list[Any] = []
        self._publish()

    def __call__(self, environ: "WSGIEnvironment", start_response: "StartResponse") -> Iterable[bytes]:
        if time.monotonic() >= self._next_check:
            self._check()
        app = self.current
        with self._lock:
            self._in_flight[id(app)] = self._in_flight.get(id(app), 0) + 1
        try:
            body = app(environ, start_response)
        except BaseException:
            self._done(app)
            raise
        return _Tracked(body, lambda: self._done(app))

    def _check(self) -> None:
        with self._lock:
            if time.monotonic() < self._next_check:
                return  # another thread checked meanwhile
            self._next_check = time.monotonic() + self._check_every
            identity = _identity(self.path)
            if identity == self._identity:
                return
            self._identity = identity
        app, problem = self._build(self.path, self.current)  # outside the lock: requests go on meanwhile
        if problem is not None and not self.started_unavailable:
            self.reload_problem = problem
            log_event("config_reload_failed", config=self.path, problem=problem,
                      effect="still serving the last good settings; fix the file (lockllm-wsgi check-config)")
            _close(app)
        else:
            with self._lock:
                old, self.current = self.current, app
                self.started_unavailable = problem is not None
                self.reload_problem = None
                self._retired.append(old)
            log_event("config_reloaded", config=self.path)
            self._close_idle()
        self._publish()

    def _publish(self) -> None:
        """Tell the serving gateway what /readyz and the metrics should say of the reload."""
        note = getattr(self.current, "set_reload_problem", None)
        if note is not None:
            note(self.reload_problem)

    def _done(self, app: Any) -> None:
        with self._lock:
            self._in_flight[id(app)] -= 1
        self._close_idle()

    def _close_idle(self) -> None:
        """Close the pools of retired gateways whose last request has ended."""
        with self._lock:
            idle = [app for app in self._retired if not self._in_flight.get(id(app))]
            self._retired = [app for app in self._retired if self._in_flight.get(id(app))]
            for app in idle:
                self._in_flight.pop(id(app), None)
        for app in idle:
            _close(app)


def _close(app: Any) -> None:
    close = getattr(app, "close", None)
    if close is not None:
        close()


class _Tracked:
    """The response body, passed through, telling the reloader when the server closes it."""

    def __init__(self, body: Iterable[bytes], done: Callable[[], None]):
        self._body = body
        self._done = done

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._body)

    def close(self) -> None:
        try:
            _close(self._body)
        finally:
            self._done()
