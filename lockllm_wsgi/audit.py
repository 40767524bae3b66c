"""The request log: one JSON object per request, with stable field names, never prompt text or secrets.

Records go to the `lockllm_wsgi.requests` logger; under mod_wsgi its handler writes to stderr, which Apache puts
in the vhost's error log, one line per request::

    log_request(request_id="7f3c...", route="openai", decision="block", status=400, ...)
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from collections import Counter

request_log = logging.getLogger("lockllm_wsgi.requests")

_setup_lock = threading.Lock()


class _RedactQuery(logging.Filter):
    """urllib3 logs each request's URL at debug level; a Gemini `key=` query parameter is a secret."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                arg.split("?", 1)[0] + "?<redacted>" if isinstance(arg, str) and "?" in arg else arg
                for arg in record.args
            )
        return True


class _CurrentStderr(logging.StreamHandler):
    """Writes to whatever sys.stderr is when a record is emitted, not when the handler was made: mod_wsgi (and
    test runners) replace sys.stderr, and a handler holding the old one would write nowhere."""

    @property  # type: ignore[override]
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def ensure_handler() -> None:
    """Give the request log a plain stderr handler unless the host application configured one, and keep
    query-string secrets out of urllib3's debug log."""
    with _setup_lock:
        urllib3_log = logging.getLogger("urllib3.connectionpool")
        if not any(isinstance(existing, _RedactQuery) for existing in urllib3_log.filters):
            urllib3_log.addFilter(_RedactQuery())
        if request_log.handlers:
            return
        handler = _CurrentStderr()
        handler.setFormatter(logging.Formatter("%(message)s"))
        request_log.addHandler(handler)
        request_log.setLevel(logging.INFO)
        request_log.propagate = False


class Counters:
    """Per-process request counts by decision: what `/metrics` and the tests read."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def add(self, name: str) -> None:
        with self._lock:
            self._counts[name] += 1

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)


def log_event(event: str, **fields: object) -> None:
    request_log.info(json.dumps({"event": event, **fields}, ensure_ascii=True, default=str))


def log_request(**fields: object) -> None:
    log_event("request", **fields)
