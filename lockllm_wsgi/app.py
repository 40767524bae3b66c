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
from http import HTTPStatus
from typing import TYPE_CHECKING, Callable, Iterable, Iterator
from urllib.parse import quote

from .audit import PROMPT_KEY, AuditLog, Counters, ensure_handler, log_event, log_request
from .body import check_content_type, decode_body, parse_json, read_body
from .config import Route, Settings
from .extract import Collector, UnknownShape, scan_units
from .formats import FORMATS, WireFormat
from .formats.openai import OpenAIFormat
from .health import OpsEndpoints
from .identity import client_identity
from .metrics import Metrics
from .policy import decide
from .ratelimit import RateLimiter
from .refusal import Refusal
from .relay import Relay, UpstreamError, request_headers
from .scan import ScannerUnavailable, make_scanner, pieces

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


class GatewayApp:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.routes: tuple[tuple[Route, WireFormat], ...] = tuple((r, FORMATS[r.format]) for r in settings.routes)
        self.scanner = make_scanner(settings.scanner)
        self.relay = Relay(settings.upstream)
        self.counters = Counters()
        self.audit = AuditLog(settings.audit)
        self.metrics = Metrics(settings.metrics)
        self.ops = OpsEndpoints(settings, self.metrics)
        self.limiter = RateLimiter(settings.ratelimit) if settings.ratelimit.enabled else None
        ensure_handler()
        log_event("start", config=settings.source, scanner=settings.scanner.backend,
                  routes=[route.prefix or "/" for route in settings.routes],
                  note="no LockLLM key configured: scanning with the built-in offline scanner"
                  if settings.scanner.backend == "offline" and not settings.scanner.api_key else None)

    def __call__(self, environ: "WSGIEnvironment", start_response: "StartResponse") -> Iterable[bytes]:
        answered = self.ops(environ, start_response)
        if answered is not None:
            return answered
        started = time.monotonic()
        record: dict[str, object] = {
            "request_id": f"req_{secrets.token_hex(12)}",
            "method": environ.get("REQUEST_METHOD", ""),
            "route": None,
            "client": environ.get("REMOTE_ADDR"),
            "user": environ.get("REMOTE_USER"),
            "identity": client_identity(environ),
        }
        fmt: WireFormat = _FALLBACK_FORMAT
        try:
            route, fmt, path = self._route(environ)
            record["route"] = route.name
            record["path"] = path
            if self.limiter is not None:
                self.limiter.check(route.name, str(record["identity"]))  # before the body: a flood costs no scans
            return self._handle(environ, start_response, route, fmt, path, record, started)
        except Refusal as refusal:
            return self._refuse(start_response, fmt, refusal, record, started)
        except Exception:  # noqa: BLE001 - a defect still ends in a documented answer, counted and logged
            log.exception('{"event": "gateway_error", "request_id": "%s"}', record["request_id"])
            record["decision"] = "error"
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

    def _handle(self, environ, start_response, route: Route, fmt: WireFormat, path: str, record, started):
        method = environ.get("REQUEST_METHOD", "")
        limits = self.settings.limits
        if method in BODYLESS_METHODS:
            if read_body(environ, limits.max_body_bytes):
                raise Refusal(400, "unexpected_body", f"A {method} request must not carry a body.")
            return self._relay(environ, start_response, route, path, b"", record, started)
        if method != "POST":
            raise Refusal(405, "method_not_allowed", f"{method} is not supported here; LLM APIs take POST.",
                          headers=(("Allow", "GET, HEAD, POST, DELETE, OPTIONS"),))
        check_content_type(environ.get("CONTENT_TYPE", ""))
        raw = read_body(environ, limits.max_body_bytes)
        document = parse_json(decode_body(raw, environ.get("HTTP_CONTENT_ENCODING", ""), limits.max_body_bytes),
                              limits.max_json_depth)
        collector = self._extract(fmt, path, document)
        record["stream"] = fmt.is_stream(path, document)  # operators tell streamed calls apart in the log
        record["segments"] = len(collector.segments)
        record["non_text_parts"] = len(collector.non_text)
        if collector.non_text and self.settings.policy.non_text_parts == "block":
            raise Refusal(400, "unscannable_content", f"{collector.non_text[0]} is not text and cannot be scanned; "
                          "this gateway is set to refuse images, audio and files.")
        # Text that normalises to nothing (zero-width characters only) is nothing a model reads; a request made
        # only of such text is refused like an empty one, never allowed unscanned.
        units = scan_units(collector.segments)
        if not units:
            raise Refusal(400, "nothing_to_scan", "The request has no text to scan; send at least one message.")
        texts = [unit.text for unit in units]
        calls = sum(len(pieces(text)) for text in texts)
        if calls > limits.max_scan_units:
            raise Refusal(413, "too_many_texts", f"The request holds {calls} texts to scan, more than this gateway's "
                          f"limit of {limits.max_scan_units}; send fewer messages or parts (or ask the operator to "
                          "raise [limits] max_scan_units).")

        scan_started = time.monotonic()
        try:
            verdicts = self.scanner.scan(texts, deadline=scan_started + self.settings.scanner.timeout)
        except ScannerUnavailable as problem:
            record["scan_ms"] = round((time.monotonic() - scan_started) * 1000, 2)
            record["scanner_problem"] = str(problem)
            # Fail-open is for a scanner that is down or slow on a normal request; a deadline run out by the
            # request's own size is never a way to buy an unjudged relay.
            if self.settings.scanner.fail_mode == "open" and not problem.queued:
                record["decision"] = "fail_open"
                return self._relay(environ, start_response, route, path, raw, record, started)
            record["decision"] = "fail_closed"
            raise Refusal(503, "scanner_unavailable", "The prompt scanner is unavailable, so the request was not "
                          "sent; try again shortly, or ask the gateway operator to check the scanner.") from None
        record["scan_ms"] = round((time.monotonic() - scan_started) * 1000, 2)
        record["scans"] = len(verdicts)
        record["cache_hits"] = sum(verdict.cached for verdict in verdicts)
        role = environ.get(self.settings.policy.role_from) if self.settings.policy.role_from else None
        decision = decide(verdicts, units, self.settings.policy, role)
        record.update(decision=decision.action, score=decision.score, threshold=decision.threshold,
                      trigger=decision.trigger, role=role)
        if decision.trigger_index is not None:
            text = units[decision.trigger_index].segment.text
            record.update(prompt_sha256=hashlib.sha256(text.encode("utf-8")).hexdigest(), prompt_chars=len(text),
                          scanner_request_id=verdicts[decision.trigger_index].scanner_request_id)
            record[PROMPT_KEY] = text  # for the audit file only when log_prompts = on; never the request log
        if not decision.relay:
            raise Refusal(self.settings.policy.block_status, "prompt_injection_detected",
                          f"The request was blocked: the text at {decision.trigger} looks like a prompt injection "
                          f"(score {decision.score if decision.score is not None else 'n/a'}, threshold "
                          f"{decision.threshold}). If this is legitimate, ask the gateway operator to review it.")
        return self._relay(environ, start_response, route, path, raw, record, started)

    def _extract(self, fmt: WireFormat, path: str, document: dict) -> Collector:
        try:
            return fmt.extract(path, document, lenient=self.settings.policy.unknown_shapes == "scan_strings")
        except UnknownShape as unknown:
            raise Refusal(400, "unrecognized_request", f"The gateway cannot read {unknown.where}: {unknown.what}. "
                          "It refuses what it cannot scan.") from None

    def _relay(self, environ, start_response, route: Route, path: str, body: bytes, record, started):
        query = environ.get("QUERY_STRING", "")
        url = route.upstream + quote(path, safe=_PATH_SAFE) + (f"?{query}" if query else "")
        # The format may re-sign for the upstream (Bedrock's SigV4); a client's own signature never passes.
        headers = FORMATS[route.format].upstream_headers(route, environ["REQUEST_METHOD"], url,
                                                         request_headers(environ), body)
        upstream_started = time.monotonic()
        try:
            status, reason, headers_out, upstream_body = self.relay.send(environ["REQUEST_METHOD"], url, headers, body)
        except UpstreamError as error:
            record["upstream_ms"] = round((time.monotonic() - upstream_started) * 1000, 2)
            raise Refusal(error.status, "upstream_unavailable", str(error)) from None
        record["upstream_ms"] = round((time.monotonic() - upstream_started) * 1000, 2)
        record.setdefault("decision", "unscanned")
        record["status"] = status
        # The provider's own X-Request-Id is what its support desk asks for: keep it, ours is X-LockLLM-Request-Id.
        upstream_has_id = any(name.lower() == "x-request-id" for name, _ in headers_out)
        headers_out += [header for header in self._gateway_headers(record)
                        if not (upstream_has_id and header[0] == "X-Request-Id")]
        self.counters.add(str(record["decision"]))
        start_response(f"{status} {reason or 'Upstream'}", headers_out)
        return _LoggedBody(upstream_body, record, started, self._finish)

    def _refuse(self, start_response, fmt: WireFormat, refusal: Refusal, record, started) -> Iterable[bytes]:
        headers, body = fmt.error_body(refusal, str(record["request_id"]))
        record.setdefault("decision", "refused")
        record.update(status=refusal.status, code=refusal.code)
        headers = headers + list(refusal.headers) + self._gateway_headers(record) + [("Content-Length", str(len(body)))]
        self.counters.add(str(record["decision"]))
        start_response(f"{refusal.status} {HTTPStatus(refusal.status).phrase}", headers)
        return _LoggedBody([body], record, started, self._finish)

    def _finish(self, record: dict) -> None:
        """Everything that follows a finished request: the log line, the audit record, the metrics."""
        try:
            self.metrics.observe(record, getattr(self.scanner, "retries_total", None))
            self.audit.write(record)
        finally:
            log_request(**record)

    @staticmethod
    def _gateway_headers(record) -> list[tuple[str, str]]:
        decision = record.get("decision")
        safe = {"allow": "true", "block": "false", "monitor": "false"}.get(str(decision), "unknown")
        return [
            ("X-Request-Id", str(record["request_id"])),
            ("X-LockLLM-Request-Id", str(record["request_id"])),
            ("X-LockLLM-Scanned", "true" if safe != "unknown" else "false"),
            ("X-LockLLM-Safe", safe),
        ]


class _LoggedBody:
    """Passes a response body through and writes the request's log line when the server closes it."""

    def __init__(self, body: Iterable[bytes], record: dict, started: float, finish: Callable[[dict], None]):
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
            self._record["bytes_out"] = self._sent
            self._record["total_ms"] = round((time.monotonic() - self._started) * 1000, 2)
            self._finish(self._record)
