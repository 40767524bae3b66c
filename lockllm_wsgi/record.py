"""The request record: one typed object per request, filled in step by step on the request path and written out
once when the request ends, as the request log line, the audit record and the metrics::

    record = RequestRecord(request_id="req_...", method="POST", client="10.0.0.5")
    record.decision = "allow"
    record.fields()  # -> {"request_id": "req_...", "method": "POST", "route": None, ..., "decision": "allow"}

Fields left unset (None) are left out of `fields()`, except the first six, which every log line carries.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields as dataclass_fields
from typing import Callable

# Every line names these, set or not: an operator greps for `"route": null` as readily as for a route.
_ALWAYS = frozenset({"request_id", "method", "route", "client", "user", "identity"})
# Carried for later steps of the request, never written out.
_NOT_LOGGED = frozenset({"proxy_headers", "system_texts", "judged_with", "output_mode", "after_answer"})


@dataclass
class RequestRecord:
    request_id: str
    method: str
    route: str | None = None
    client: str | None = None
    user: str | None = None
    identity: str | None = None
    path: str | None = None
    stream: bool | None = None  # operators tell streamed calls apart in the log
    segments: int | None = None
    non_text_parts: int | None = None
    scan_ms: float | None = None
    scanner_problem: str | None = None
    scans: int | None = None
    cache_hits: int | None = None
    decision: str | None = None  # allow, block, monitor, fail_open, fail_closed, unscanned, refused, error
    score: float | None = None
    threshold: float | None = None
    trigger: str | None = None  # where the unsafe text was (field path)
    role: str | None = None
    prompt_sha256: str | None = None
    prompt_chars: int | None = None
    scanner_request_id: str | None = None
    # The text that triggered a block: kept in the audit file only with `[audit] log_prompts = on`, never logged.
    prompt: str | None = None
    findings: list[str] | None = None  # LockLLM's findings besides injection, blocking or allowed with a warning
    pii_stripped: int | None = None  # texts relayed with LockLLM's redacted text in place (pii_action = strip)
    # LockLLM Proxy Mode's response headers for this request's verdict (proxy_headers.py); sent, not logged.
    proxy_headers: tuple[tuple[str, str], ...] = ()
    # The request's system and developer texts, for the output guard's leak check; never logged.
    system_texts: tuple[str, ...] = ()
    # (scanner settings, threshold) the request was judged with, which its answer is judged with too; not logged.
    judged_with: tuple | None = None
    output_mode: str = "off"  # the output guard's mode for this request (route, named policy or [output]); not logged
    # What runs once the answer is sent (app.py: the verdict cache writes of this request's scans); not logged.
    after_answer: list[Callable[[], None]] = field(default_factory=list)
    output: str | None = None  # the output guard: pass, flagged, blocked, fail_open, fail_closed, unjudged
    output_findings: list[str] | None = None
    output_trigger: str | None = None  # where in the answer (choices[0], content[1], ...)
    output_scans: int | None = None
    output_ms: float | None = None
    upstream_ms: float | None = None
    upstream_problem: str | None = None  # why the provider could not be reached (502/504), for the operator only
    status: int | None = None
    code: str | None = None
    bytes_out: int | None = None
    total_ms: float | None = None

    def fields(self) -> dict[str, object]:
        """The record as the log line, audit record and metrics read it, in this order."""
        values = vars(self)  # the instance's own dict: one lookup per field, not a getattr and a generator step
        return {name: values[name] for name in _LOGGED_NAMES if name in _ALWAYS or values[name] not in (None, ())}


# The fields a log line may carry, in declaration order (read once: fields() runs for every request).
_LOGGED_NAMES = tuple(field.name for field in dataclass_fields(RequestRecord) if field.name not in _NOT_LOGGED)
