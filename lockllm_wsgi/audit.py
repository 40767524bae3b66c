"""What leaves the process about each request: the request log line, and the audit record of every request the
scanner did not simply allow.

The request log goes to the `lockllm_wsgi.requests` logger (stderr, so Apache's error log), one JSON object per
request, never prompt text or secrets. The audit file (`[audit] path`) gets one JSON line per blocked, monitored
or failed-open request, for reviewing blocks and false positives::

    audit = AuditLog(settings.audit)
    audit.write(record)  # no-op for allowed requests; `record["prompt"]` kept only with log_prompts = on
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from collections import Counter
from typing import Mapping

from .config import AuditSettings

request_log = logging.getLogger("lockllm_wsgi.requests")
log = logging.getLogger(__name__)

_setup_lock = threading.Lock()

# Decisions an auditor reviews: the scanner judged the request unsafe, or did not judge it at all.
AUDITED_DECISIONS = frozenset({"block", "monitor", "fail_open"})
# The record key holding the triggering text: only the audit file may carry it, and only when the operator asks.
PROMPT_KEY = "prompt"
# Audit records start with these, in this order, so a reviewer's eye (or `cut`) finds them in the same place.
_LEADING_FIELDS = ("time", "request_id", "decision", "route")


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


class _AppendingFile(logging.Handler):
    """`[log] path`: each line is one write() on a file opened O_APPEND for it, as the audit file is: whole and in
    order whichever process writes, and a file logrotate moved away is created afresh by the next line."""

    def __init__(self, path: str):
        super().__init__()
        self.path = path

    def emit(self, record: logging.LogRecord) -> None:
        try:
            handle = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
            try:
                os.write(handle, (self.format(record) + "\n").encode("utf-8", "backslashreplace"))
            finally:
                os.close(handle)
        except OSError:
            self.handleError(record)


def ensure_handler(path: str = "") -> None:
    """Give the request log a handler unless the host application configured one: lines appended to `path`
    (`[log] path`), else plain stderr (Apache's error log); and keep query-string secrets out of urllib3's debug
    log."""
    with _setup_lock:
        urllib3_log = logging.getLogger("urllib3.connectionpool")
        if not any(isinstance(existing, _RedactQuery) for existing in urllib3_log.filters):
            urllib3_log.addFilter(_RedactQuery())
        if request_log.handlers:
            return
        handler = _AppendingFile(path) if path else _CurrentStderr()
        handler.setFormatter(logging.Formatter("%(message)s"))
        request_log.addHandler(handler)
        request_log.setLevel(logging.INFO)
        request_log.propagate = False


class Counters:
    """Per-process request counts by decision, for tests and `lockllm-wsgi` diagnostics."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def add(self, name: str) -> None:
        with self._lock:
            self._counts[name] += 1

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)


def json_line(fields: Mapping[str, object]) -> bytes:
    """One JSON object on one line. ensure_ascii escapes every non-ASCII character (U+2028, U+0085 included) and
    json escapes control characters, so no text inside a field can end the line and forge a second record."""
    return (json.dumps(fields, ensure_ascii=True, default=str, separators=(",", ":")) + "\n").encode("ascii")


# The request log's lines: ASCII JSON (a line's text cannot end it early), anything else as its str().
_LINE_ENCODER = json.JSONEncoder(ensure_ascii=True, default=str)


def _log_line(line: dict[str, object]) -> None:
    # makeRecord and handle, not info(): info() looks up its caller (findCaller walks the stack) for every line,
    # about a sixth of a cache hit's log line, and the caller is always this function.
    if request_log.isEnabledFor(logging.INFO):
        request_log.handle(request_log.makeRecord(request_log.name, logging.INFO, __file__, 0,
                                                  _LINE_ENCODER.encode(line), None, None, "_log_line"))


def log_event(event: str, **fields: object) -> None:
    _log_line({"event": event, **fields})


def log_request(fields: Mapping[str, object]) -> None:
    """The request's log line: its record's fields, never the prompt."""
    line = {"event": "request", **fields}
    line.pop(PROMPT_KEY, None)
    _log_line(line)


class AuditLog:
    """Appends audit records to `[audit] path`; safe with logrotate and with many processes writing at once.

    The file is opened with O_APPEND for every record: after logrotate moves it away, the next record creates a
    fresh file (no copytruncate, no signal to Apache needed), and each record is a single write() of one line,
    which O_APPEND keeps whole and in order on a local filesystem, whichever process writes it.
    """

    def __init__(self, settings: AuditSettings):
        self.settings = settings

    def write(self, record: Mapping[str, object]) -> None:
        # A stripped body is the one case where the provider got other bytes than the client sent: always audited;
        # so is an answer the output guard found something in.
        if not self.settings.path or (record.get("decision") not in AUDITED_DECISIONS and not record.get("pii_stripped")
                                      and not record.get("output_findings")):
            return
        fields = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        fields.update((key, record[key]) for key in _LEADING_FIELDS[1:] if key in record)
        fields.update((key, value) for key, value in record.items()
                      if key not in fields and (key != PROMPT_KEY or self.settings.log_prompts))
        line = json_line(fields)
        try:
            handle = os.open(self.settings.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                os.write(handle, line)
            finally:
                os.close(handle)
        except OSError as error:
            # The request was already answered; a full disk must not turn into an error for the client.
            log.error('{"event": "audit_write_failed", "request_id": "%s", "error": "%s"}',
                      record.get("request_id"), error.strerror)
