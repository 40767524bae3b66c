"""The WSGI application: route, read, extract, scan, decide, then refuse or relay.

Every request ends in exactly one of: relayed (allowed, monitored or failed open), refused by the gateway in
the route's provider error shape (malformed input, blocked, scanner unavailable, upstream unreachable), and is
counted and logged once, with the request id the client sees in `X-Request-Id`::

    application = GatewayApp(load_settings("/etc/lockllm/lockllm.ini"))
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import time
from dataclasses import replace
from http import HTTPStatus
from typing import TYPE_CHECKING, Callable, Iterable, Iterator
from urllib.parse import quote

from .audit import AuditLog, Counters, ensure_handler, log_event, log_request
from .body import read_body, read_json_request
from .config import PolicySettings, Route, ScannerSettings, Settings
from .extract import Collector, ScanUnit, UnknownShape, scan_units
from .formats import FORMATS, WireFormat
from .formats.openai import OpenAIFormat
from .health import OpsEndpoints
from .identity import client_identity
from .metrics import Metrics
from .output import (MAX_JUDGED_ANSWER_BYTES, OUTPUT_BLOCKED, AuditedBody, EnforcedStream, Judge, Outcome,
                     judge_answer, judge_later, read_json_answer)
from .overrides import request_action, request_policy, request_scanner
from .policy import INJECTION, decide
from .proxy_headers import blocked_message, lockllm_headers
from .ratelimit import RateLimiter
from .refusal import Refusal
from .record import RequestRecord
from .redact import strip_pii
from .relay import Relay, UpstreamBody, UpstreamError, request_headers
from .scan import make_scanner, pieces
from .verdict import ScannerUnavailable, Verdict

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

log = logging.getLogger(__name__)

# Methods that carry no prompt: relayed unscanned, provided they have no body.
BODYLESS_METHODS = frozenset({"GET", "HEAD", "DELETE", "OPTIONS"})
# Encoded dots, slashes and backslashes in the raw request target: decoded differently by different servers,
# they are how path tricks reach an upstream endpoint the route did not mean to expose.
_ENCODED_PATH_TRICK = re.compile(r"%(2e|2f|5c|00)", re.IGNORECASE)
_PATH_SAFE = "/:@!$&'()*+,;=-._~"
_FALLBACK_FORMAT = OpenAIFormat()
# What a client is told when the scanner refuses the gateway's own account: the operator has something to fix.
_ACCOUNT_MESSAGES = {
    "unauthorized": "The prompt scanner refused this gateway's API key, so the request was not sent; ask the "
                    "gateway operator to check [scanner] api_key (or LOCKLLM_API_KEY).",
    "insufficient_credits": "The prompt scanner account of this gateway has no credit left, so the request was not "
                            "sent; ask the gateway operator to top it up.",
}


class GatewayApp:
    def __init__(self, settings: Settings, metrics: Metrics | None = None):
        self.settings = settings
        self.routes: tuple[tuple[Route, WireFormat], ...] = tuple((r, FORMATS[r.format]) for r in settings.routes)
        self.scanner = make_scanner(settings.scanner)
        self.relay = Relay(settings.upstream)
        self.counters = Counters()
        self.audit = AuditLog(settings.audit)
        # A reloaded gateway keeps counting where the one it replaces stopped (reload.py).
        self.metrics = metrics if metrics is not None and metrics.settings == settings.metrics else Metrics(
            settings.metrics)
        self.ops = OpsEndpoints(settings, self.metrics, lambda: getattr(self.scanner, "account_problem", None),
                                self.scanner)
        self.limiter = RateLimiter(settings.ratelimit) if settings.ratelimit.enabled else None
        ensure_handler(settings.log.path)
        log_event("start", config=settings.source, scanner=settings.scanner.backend,
                  routes=[route.prefix or "/" for route in settings.routes],
                  note="no LockLLM key configured: scanning with the built-in offline scanner"
                  if settings.scanner.backend == "offline" and not settings.scanner.api_key else None)

    def set_reload_problem(self, problem: str | None) -> None:
        """Why the INI file's last change was not taken (reload.py): shown by /readyz and the metrics."""
        self.ops.reload_problem = problem
        self.metrics.config_reload_failed(problem is not None)

    def close(self) -> None:
        """Release the scan pool, the cache writer, the provider connections and the rate-limit store's (a
        replaced gateway's)."""
        self.scanner.close()
        self.relay.close()
        if self.limiter is not None:
            self.limiter.close()

    def __call__(self, environ: "WSGIEnvironment", start_response: "StartResponse") -> Iterable[bytes]:
        answered = self.ops(environ, start_response)
        if answered is not None:
            return answered
        started = time.monotonic()
        record = RequestRecord(request_id=f"req_{secrets.token_hex(12)}", method=environ.get("REQUEST_METHOD", ""),
                               client=environ.get("REMOTE_ADDR"), user=environ.get("REMOTE_USER"))
        fmt: WireFormat = _FALLBACK_FORMAT
        try:
            route, fmt, path = self._route(environ)
            record.route, record.path = route.name, path
            record.identity = client_identity(environ, fmt.client_key(environ))
            if self.limiter is not None:
                self.limiter.check(route.name, record.identity)  # before the body: a flood costs no scans
            return self._handle(environ, start_response, route, fmt, path, record, started)
        except Refusal as refusal:
            return self._refuse(start_response, fmt, refusal, record, started)
        except Exception:  # noqa: BLE001 - a defect still ends in a documented answer, counted and logged
            log.exception('{"event": "gateway_error", "request_id": "%s"}', record.request_id)
            record.decision = "error"
            return self._refuse(start_response, fmt, Refusal(
                500, "gateway_error", "The gateway failed on this request and did not send it; the operator can "
                "find the cause in the log by this request id."), record, started)

    # --- steps ---------------------------------------------------------------------------------------------

    def _route(self, environ: "WSGIEnvironment") -> tuple[Route, WireFormat, str]:
        path = environ.get("PATH_INFO", "") or "/"
        raw_target = environ.get("REQUEST_URI", "")
        if _ENCODED_PATH_TRICK.search(raw_target.split("?", 1)[0]) or "//" in path or "\\" in path or any(
            segment in (".", "..") for segment in path.split("/")
        ):
            raise Refusal(400, "invalid_path", "The request path has '..', '//' or encoded separators; send a plain path.")
        for route, fmt in self.routes:
            if path == route.prefix or path.startswith(route.prefix + "/"):
                return route, fmt, path[len(route.prefix):] or "/"
        raise Refusal(404, "unknown_route", f"No route serves {path}; check the base URL (routes: "
                      f"{', '.join(route.prefix or '/' for route, _ in self.routes)}).")

    def _handle(self, environ, start_response, route: Route, fmt: WireFormat, path: str, record: RequestRecord,
                started: float) -> Iterable[bytes]:
        """Relay a bodyless call as it is; read, judge and then relay (or refuse) a POST."""
        method = record.method
        policy = request_policy(environ, route.policy or self.settings.policy, self.settings.named_policies)
        policy = request_action(environ, policy)
        # The route's or named policy's output mode, else the gateway's.
        record.output_mode = policy.output_mode or self.settings.output.mode
        if record.output_mode == "enforce" and fmt.answer_kind(method, path) == "unread":
            # Unknown means refuse: an answer the guard cannot read would reach the client unjudged. Refused before
            # anything is scanned or sent, so nothing is paid for.
            raise Refusal(self.settings.output.block_status, "output_not_judgeable", "This gateway judges every "
                          f"answer before sending it and cannot read the answers of {method} {path} on a {fmt.name} "
                          "route, so the call was not sent; ask the operator (see the README's Output guard).")
        if method in BODYLESS_METHODS:
            if read_body(environ, self.settings.limits.max_body_bytes):
                raise Refusal(400, "unexpected_body", f"A {method} request must not carry a body.")
            return self._relay(environ, start_response, route, fmt, path, b"", record, started)
        if method != "POST":
            raise Refusal(405, "method_not_allowed", f"{method} is not supported here; LLM APIs take POST.",
                          headers=(("Allow", "GET, HEAD, POST, DELETE, OPTIONS"),))
        limits = self.settings.limits
        raw, document = read_json_request(environ, limits.max_body_bytes, limits.max_json_depth)
        # The refusal of a blocked or unjudged request is raised; a body with personal data stripped is returned.
        stripped = self._judge(environ, policy, fmt, path, document, record, started)
        return self._relay(environ, start_response, route, fmt, path, stripped or raw, record, started,
                           rewritten=stripped is not None)

    def _judge(self, environ, policy: PolicySettings, fmt: WireFormat, path: str, document: dict,
               record: RequestRecord, started: float) -> bytes | None:
        """Extract, scan and decide by the request's policy; returns when the request may be relayed (allowed,
        monitored, failed open), with the new body when personal data was stripped from it."""
        scanner = request_scanner(environ, self.settings.scanner, policy.client_overrides)
        collector = self._extract(fmt, path, document, policy)
        role = environ.get(policy.role_from) if policy.role_from else None
        # What the answer is judged with, if the output guard is on: the same scanner settings and threshold, and
        # the system and developer texts an answer must not reproduce.
        record.judged_with = (scanner, policy.thresholds.get(role, policy.threshold) if role else policy.threshold)
        record.system_texts = tuple(segment.text for segment in collector.segments
                                    if (segment.role or "").lower() in ("system", "developer"))
        record.stream = fmt.is_stream(path, document)
        record.segments, record.non_text_parts = len(collector.segments), len(collector.non_text)
        if collector.non_text and policy.non_text_parts == "block":
            raise Refusal(400, "unscannable_content", f"{collector.non_text[0]} is not text and cannot be scanned; "
                          "this gateway is set to refuse images, audio and files.")
        units = self._scan_units(collector, policy)
        verdicts = self._scan(units, record, scanner)
        if verdicts is None:
            return None  # failed open: the scanner is down and the operator chose to relay
        decision = decide(verdicts, units, policy, scanner, role)
        record.decision, record.score, record.threshold = decision.action, decision.score, decision.threshold
        record.trigger, record.role, record.code = decision.trigger, role, decision.code
        record.findings = sorted({code for verdict in verdicts for code in verdict.findings}) or None
        record.proxy_headers = tuple(lockllm_headers(verdicts, decision, scanner))
        if decision.trigger_index is not None:
            text = units[decision.trigger_index].segment.text
            record.prompt_sha256, record.prompt_chars = hashlib.sha256(text.encode("utf-8")).hexdigest(), len(text)
            record.scanner_request_id = verdicts[decision.trigger_index].scanner_request_id
            record.prompt = text  # for the audit file only when log_prompts = on; never the request log
            if not decision.relay:
                raise Refusal(policy.block_status, decision.code or INJECTION,
                              blocked_message(decision, verdicts[decision.trigger_index]))
        if scanner.pii_action != "strip":
            return None
        return self._strip(document, units, verdicts, scanner, record, started)

    def _strip(self, document: dict, units: list[ScanUnit], verdicts: list[Verdict], scanner: ScannerSettings,
               record: RequestRecord, started: float) -> bytes | None:
        """The body with LockLLM's redacted text in place of each text it found personal data in; None if none."""
        segments = list({id(unit.segment): unit.segment for unit, verdict in zip(units, verdicts)
                         if verdict.pii_detected}.values())
        if not segments:
            return None
        deadline = started + self.settings.scanner.timeout * 2  # the scan's budget, and as much again to strip
        try:
            redactions = [(segment, self.scanner.redact(segment.text, deadline, scanner)) for segment in segments]
        except ScannerUnavailable as problem:
            record.scanner_problem = str(problem)
            raise Refusal(503, "scanner_unavailable", "The personal data in this request could not be stripped, so "
                          "it was not sent; try again shortly.") from None
        record.pii_stripped = len(redactions)
        return strip_pii(document, redactions)

    def _extract(self, fmt: WireFormat, path: str, document: dict, policy: PolicySettings) -> Collector:
        try:
            return fmt.extract(path, document, lenient=policy.unknown_shapes == "scan_strings")
        except UnknownShape as unknown:
            raise Refusal(400, "unrecognized_request", f"The gateway cannot read {unknown.where}: {unknown.what}. "
                          "It refuses what it cannot scan.") from None

    def _scan_units(self, collector: Collector, policy: PolicySettings) -> list[ScanUnit]:
        """The units to scan, within the request's budget; a request with nothing visible is refused, never
        allowed unscanned (text that normalises to nothing is nothing a model reads). Texts the operator vetted
        (`allow_sha256`) are left out."""
        segments = collector.segments
        if policy.allow_sha256:
            segments = [segment for segment in segments
                        if hashlib.sha256(segment.text.encode("utf-8")).hexdigest() not in policy.allow_sha256]
        units = scan_units(segments)
        if not units:
            raise Refusal(400, "nothing_to_scan", "The request has no text to scan; send at least one message.")
        calls = sum(len(pieces(unit.text)) for unit in units)
        limit = self.settings.limits.max_scan_units
        if calls > limit:
            raise Refusal(413, "too_many_texts", f"The request holds {calls} texts to scan, more than this gateway's "
                          f"limit of {limit}; send fewer messages or parts (or ask the operator to raise "
                          "[limits] max_scan_units).")
        return units

    def _scan(self, units: list[ScanUnit], record: RequestRecord, scanner: ScannerSettings) -> list[Verdict] | None:
        """The verdicts, or None when the scanner is unavailable and the fail mode is open; 503 when closed."""
        scan_started = time.monotonic()
        try:
            # The input scans' cache writes wait until the answer is sent (and judged, in audit mode): _finish.
            verdicts = self.scanner.scan([unit.text for unit in units], deadline=scan_started
                                         + self.settings.scanner.timeout, settings=scanner,
                                         after_answer=record.after_answer)
        except ScannerUnavailable as problem:
            record.scan_ms = round((time.monotonic() - scan_started) * 1000, 2)
            record.scanner_problem = str(problem)
            # Fail-open is for a scanner that is down, erroring or slow on a normal request; what the client can
            # cause (its size, input the scanner refuses, a flood that exhausts the quota) never buys a relay.
            if problem.fails_open(self.settings.scanner.fail_mode == "open"):
                record.decision = "fail_open"
                return None
            record.decision = "fail_closed"
            if problem.account:
                log_event("scanner_account_problem", request_id=record.request_id, problem=problem.account)
                raise Refusal(503, f"scanner_{problem.account}", _ACCOUNT_MESSAGES[problem.account]) from None
            raise Refusal(503, "scanner_unavailable", "The prompt scanner is unavailable, so the request was not "
                          "sent; try again shortly, or ask the gateway operator to check the scanner.") from None
        record.scan_ms = round((time.monotonic() - scan_started) * 1000, 2)
        record.scans, record.cache_hits = len(verdicts), sum(verdict.cached for verdict in verdicts)
        return verdicts

    def _relay(self, environ, start_response, route: Route, fmt: WireFormat, path: str, body: bytes,
               record: RequestRecord, started: float, rewritten: bool = False) -> Iterable[bytes]:
        query = environ.get("QUERY_STRING", "")
        url = route.upstream + quote(path, safe=_PATH_SAFE) + (f"?{query}" if query else "")
        headers = request_headers(environ)
        if rewritten:  # a stripped body is plain JSON, whatever the client's encoding was
            headers.pop("Content-Encoding", None)
        guarding = record.output_mode != "off" and fmt.answer_kind(record.method, path) != "none"
        if guarding:  # the guard reads answers as sent: no compressed ones
            headers = {name: value for name, value in headers.items() if name.lower() != "accept-encoding"}
            headers["Accept-Encoding"] = "identity"
        # The format may re-sign for the upstream (Bedrock's SigV4); a client's own signature never passes.
        headers = fmt.upstream_headers(route.options, record.method, url, headers, body)
        upstream_started = time.monotonic()
        try:
            status, reason, headers_out, upstream_body = self.relay.send(record.method, url, headers, body)
        except UpstreamError as error:
            record.upstream_problem = error.cause  # the log's, never the client's
            raise Refusal(error.status, "upstream_unavailable", str(error)) from None
        finally:
            record.upstream_ms = round((time.monotonic() - upstream_started) * 1000, 2)
        record.decision = record.decision or "unscanned"
        record.status = status
        # The provider's own X-Request-Id is what its support desk asks for: keep it, ours is X-LockLLM-Request-Id.
        upstream_has_id = any(name.lower() == "x-request-id" for name, _ in headers_out)
        headers_out += [header for header in self._gateway_headers(record)
                        if not (upstream_has_id and header[0] == "X-Request-Id")]
        answer, finish = (self._guard(fmt, path, status, headers_out, upstream_body, record,
                                      _server_drops_connections(environ)) if guarding
                          else (upstream_body, self._finish))
        self.counters.add(record.decision)
        start_response(f"{status} {reason or 'Upstream'}", headers_out)
        return _LoggedBody(answer, record, started, finish)

    def _guard(self, fmt: WireFormat, path: str, status: int, headers_out: list[tuple[str, str]], body: UpstreamBody,
               record: RequestRecord, drops_connections: bool
               ) -> tuple[Iterable[bytes], Callable[[RequestRecord], None]]:
        """The output guard (output.py): the answer as it is relayed, and what finishes the request after it.
        Raises the refusal of an unsafe plain answer in enforce mode. `drops_connections`: whether the server
        can end a cut stream without its terminating chunk, for formats whose SDK needs that to raise."""
        settings = self.settings.output
        if not 200 <= status < 300:
            return body, self._finish  # the provider's own error: no model text
        if fmt.answer_kind(record.method, path) == "unread":
            record.output = "unjudged"  # audit mode (enforce refused the call before sending it)
            return body, self._finish
        found = {name.lower(): value.lower() for name, value in headers_out}
        content_type = found.get("content-type", "")
        framing = fmt.stream_framing(path, content_type)
        if found.get("content-encoding", "identity") != "identity" or not (framing or "json" in content_type):
            record.output = "unjudged"
            if record.output_mode == "enforce":
                body.close()
                raise Refusal(502, "output_not_judgeable", "The provider answered in a form the gateway cannot "
                              "judge (compressed, or not JSON), so the answer was not sent.")
            return body, self._finish
        scanner, threshold = record.judged_with or (self.settings.scanner, self.settings.policy.threshold)
        judge = Judge(self.scanner, settings, scanner, threshold, record.system_texts, self.settings.scanner.timeout)
        outcome, fail_open = Outcome(), self.settings.scanner.fail_mode == "open"
        if record.output_mode == "audit":
            audited = AuditedBody(body, fmt, path, framing)

            def finish_later(done: RequestRecord) -> None:
                def judge_then_finish() -> None:
                    try:
                        texts = audited.texts()
                        if texts is None:
                            done.output = "unjudged"
                        else:
                            judge_answer(judge, texts, outcome, fail_open)
                            _record_outcome(done, outcome, flag_only=True)
                    finally:
                        self._finish(done)
                judge_later(judge_then_finish)

            return audited, finish_later
        if framing is not None:
            def error(code: str, message: str) -> tuple[str | None, bytes]:
                refusal = Refusal(503 if code == "scanner_unavailable" else settings.block_status, code, message)
                return fmt.stream_error(path, refusal, record.request_id)

            ending = fmt.stream_cut_ending(path)
            if not drops_connections:  # raising would only log an error: the stream ends cleanly all the same
                ending = replace(ending, drop_connection=False)
            enforced = EnforcedStream(body, framing, fmt.stream_reader(path), judge, outcome,
                                      settings.holdback_chars, fail_open, error, ending)
            return enforced, lambda done: (_record_outcome(done, outcome), self._finish(done))[-1]
        raw = b""
        try:
            for chunk in body:
                raw += chunk
                if len(raw) > MAX_JUDGED_ANSWER_BYTES:
                    record.output = "unjudged"
                    raise Refusal(502, "output_not_judgeable", "The answer is too large for the gateway to judge, "
                                  "so it was not sent.")
        finally:
            body.close()
        allowed = judge_answer(judge, read_json_answer(fmt, path, raw), outcome, fail_open)
        _record_outcome(record, outcome)
        if not allowed and outcome.decision == "fail_closed":
            raise Refusal(503, "scanner_unavailable", "The answer could not be judged (the prompt scanner is "
                          "unavailable), so it was not sent; try again shortly.")
        if not allowed:
            raise Refusal(settings.block_status, OUTPUT_BLOCKED, "The model's answer was withheld by the gateway's "
                          f"output guard ({', '.join(outcome.findings)}).")
        return [raw], self._finish

    def _refuse(self, start_response, fmt: WireFormat, refusal: Refusal, record: RequestRecord,
                started: float) -> Iterable[bytes]:
        headers, body = fmt.error_body(refusal, record.request_id)
        record.decision = record.decision or "refused"
        record.status, record.code = refusal.status, refusal.code
        headers = headers + list(refusal.headers) + self._gateway_headers(record) + [("Content-Length", str(len(body)))]
        self.counters.add(record.decision)
        start_response(f"{refusal.status} {HTTPStatus(refusal.status).phrase}", headers)
        return _LoggedBody([body], record, started, self._finish)

    def _finish(self, record: RequestRecord) -> None:
        """Everything that follows a finished request: the log line, the audit record, the metrics, and the
        verdict cache writes its scans held back."""
        try:
            fields = record.fields()
            try:
                self.metrics.observe(record, getattr(self.scanner, "retries_total", None))
                self.audit.write(fields)
            finally:
                log_request(fields)
        finally:
            for run in record.after_answer:
                run()

    @staticmethod
    def _gateway_headers(record: RequestRecord) -> list[tuple[str, str]]:
        """Our request id, and LockLLM Proxy Mode's verdict headers: `X-LockLLM-Safe: unknown` only where nothing
        was judged (a bodyless call, a refusal before the scan, a fail-open)."""
        ids = [("X-Request-Id", record.request_id), ("X-LockLLM-Request-Id", record.request_id)]
        if record.proxy_headers:
            return ids + list(record.proxy_headers)
        return ids + [("X-LockLLM-Scanned", "false"), ("X-LockLLM-Safe", "unknown")]


def _server_drops_connections(environ: WSGIEnvironment) -> bool:
    """Whether an exception from the response iterable ends the response without its terminating chunk, as
    werkzeug's server and mod_wsgi's embedded mode do. mod_wsgi's daemon mode (the shipped configuration and
    mod_wsgi-express) does not: its Apache child ends the chunked body cleanly whatever the daemon process does, and
    mod_wsgi logs the exception as an error (measured with mod_wsgi 6.1.1, see docs/formats.md)."""
    return not environ.get("mod_wsgi.process_group")


def _record_outcome(record: RequestRecord, outcome: Outcome, flag_only: bool = False) -> None:
    """The output guard's outcome on the request record; in audit mode a finding is "flagged", never "blocked"."""
    record.output = "flagged" if flag_only and outcome.decision == "blocked" else outcome.decision
    record.output_findings = outcome.findings or None
    record.output_trigger = outcome.trigger if outcome.findings else None
    record.output_scans = outcome.scans or None
    record.output_ms = outcome.ms or None


class _LoggedBody:
    """Passes a response body through and writes the request's log line when the server closes it."""

    def __init__(self, body: Iterable[bytes], record: RequestRecord, started: float,
                 finish: Callable[[RequestRecord], None]):
        self._body = body
        self._record = record
        self._started = started
        self._finish = finish
        self._sent = 0

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._body:
            self._sent += len(chunk)
            yield chunk

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            self._record.bytes_out = self._sent
            self._record.total_ms = round((time.monotonic() - self._started) * 1000, 2)
            self._finish(self._record)
