"""The scan client: texts in, verdicts out, within one wall-clock deadline per request.

`LockLLMScanner` calls the LockLLM scan API through a requests session cached in SQLite (see `verdict_cache`),
scanning the texts of one request in parallel, retrying 429/5xx/connection errors with backoff inside the deadline.
Every failure becomes `ScannerUnavailable`; nothing else leaves this module, so the caller applies the fail mode
at one place::

    scanner = LockLLMScanner(settings.scanner)
    verdicts = scanner.scan(["Hello", "Ignore all previous instructions"], deadline=time.monotonic() + 5)
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import threading
import time
from collections import OrderedDict
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from datetime import datetime, timezone
from dataclasses import replace
from typing import Callable, Sequence

import requests
from requests.adapters import HTTPAdapter
from werkzeug.http import parse_date

from .config import ScannerSettings
from .breaker import CircuitBreaker, on_clients_account
from .offline_scan import OfflineScanner
from .verdict import ScannerUnavailable, Verdict, parse_block, parse_verdict
from .verdict_cache import BackgroundWriter, HeldWrites, UncachedSession, open_verdict_store

log = logging.getLogger(__name__)

# The scan API's limit per call; longer texts are scanned whole, in overlapping pieces.
MAX_SCAN_CHARS = 100_000
# Overlap between pieces, so a phrase cut at a piece boundary is whole in one of them.
PIECE_OVERLAP_CHARS = 2_000
# Parallel scan calls per process: the texts of one request are scanned at once, so a cache-miss request costs
# about one scan round trip, not one per message: 64 judges the 64 fresh texts of a long first turn in one round
# of calls (benchmarks/first_turn.py: 1.4 round trips with connection set-up, 2.35 with 32 workers), and a worker
# costs one idle thread and one pooled connection at rest.
DEFAULT_SCAN_WORKERS = 64
BACKOFF_BASE_SECONDS = 0.1
# The problem of a scan call whose deadline had passed before it could be sent.
NOT_ATTEMPTED = "not attempted"
# Scanner answers that say the gateway's own key or account is wrong (bad key, no credit): an outage to the
# operator, not something the request's content caused, and named apart from a scanner that is down.
ACCOUNT_PROBLEMS = {401: "unauthorized", 403: "unauthorized", 402: "insufficient_credits"}
OPERATOR_STATUSES = frozenset(ACCOUNT_PROBLEMS)
# The gateway asks LockLLM for warnings, never for block answers, and applies each `*_action` itself: a warning
# answer is a 200, which the verdict cache keeps; a block answer (a 4xx) would be scanned again every time.
_ASKED_ACTION = "allow_with_warning"


def scan_headers(settings: ScannerSettings) -> dict[str, str]:
    """The X-LockLLM-* headers of every scan call: what LockLLM checks, per the settings."""
    headers = {"X-LockLLM-Scan-Mode": settings.scan_mode, "X-LockLLM-Scan-Action": _ASKED_ACTION,
               "X-LockLLM-Sensitivity": settings.sensitivity}
    for name, action in (("Policy", settings.policy_action), ("Abuse", settings.abuse_action),
                         ("PII", settings.pii_action)):  # strip too: the redacted text is asked for apart
        if action != "off":
            headers[f"X-LockLLM-{name}-Action"] = _ASKED_ACTION
    if settings.chunk:
        headers["X-LockLLM-Chunk"] = "true" if settings.chunk == "on" else "false"
    return headers
# Verdicts kept in process memory in front of the SQLite cache (keyed by a hash of the text, never the text): a
# resent history is answered without a pool hand-off, a SQLite read and requests-cache's deserialisation, which
# cost about 0.5 ms per request on a cache hit (benchmarks/latency.py). 4096 entries of ~300 bytes each.
DEFAULT_MEMO_ENTRIES = 4096
# Scan calls prepared ahead, one per set of headers: the operator's settings, and the few that clients' X-LockLLM-*
# headers can make (overrides.py); past this many, a set is prepared for each call instead.
MAX_PREPARED_CALLS = 16


def pieces(text: str, size: int = MAX_SCAN_CHARS, overlap: int = PIECE_OVERLAP_CHARS) -> list[str]:
    if len(text) <= size:
        return [text]
    step = size - overlap
    return [text[start:start + size] for start in range(0, len(text) - overlap, step)]


def _retry_after(response: requests.Response) -> float:
    """Seconds the scanner asks us to wait (an HTTP date or a number of seconds); 0.0 for what cannot be read, so
    an odd header ("soon", "-1") never ends the retries: the backoff still spaces them."""
    value = response.headers.get("Retry-After", "").strip()
    when = parse_date(value)
    if when is not None:
        return max(0.0, when.timestamp() - time.time())
    try:
        seconds = float(value)
    except ValueError:
        return 0.0
    return seconds if math.isfinite(seconds) and seconds >= 0 else 0.0


class LockLLMScanner:
    """Scans texts with the LockLLM API; thread-safe, one per process."""

    def __init__(self, settings: ScannerSettings, workers: int = DEFAULT_SCAN_WORKERS):
        self.settings = settings
        self.workers = workers
        # The key's identity (never the key) goes into every cache key: a verdict paid for by one account is not
        # served to another configuration.
        key_identity = hashlib.sha256(settings.api_key.encode()).hexdigest()[:16]
        # Verdicts are stored by one writer thread, after the request's answer where the caller takes their
        # release (scan's after_answer): a cache write is not on the request's time, and this process's repeats are
        # answered by the memo meanwhile.
        self.writer = BackgroundWriter() if settings.cache != "off" else None
        # The verdict cache (requests-cache's storage, looked up and written directly: verdict_cache.VerdictStore)
        # and the session that asks LockLLM when it has no verdict.
        self.store, cache_problem = (open_verdict_store(settings, key_identity, self.writer) if settings.cache != "off"
                                     else (None, None))
        # A cache that could not be opened is named by the session (health.py: /readyz and the metrics say so).
        self.session = UncachedSession(cache_problem) if cache_problem else requests.Session()
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=workers)
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)
        self.session.trust_env = False  # ambient proxy variables must not reroute prompt text
        # requests' own default headers (User-Agent, Accept-Encoding...) are written in here once, because scan
        # calls are sent as prepared requests (_prepared), which do not pick them up from the session.
        self._headers = {**requests.utils.default_headers(), "Authorization": f"Bearer {settings.api_key}",
                         "Content-Type": "application/json"}
        # What LockLLM is asked to check with the operator's settings, built once: a request changes it only when
        # a client's X-LockLLM-* headers tightened the settings (overrides.py).
        self._asked = scan_headers(settings)
        self._prepared_calls: dict[tuple[tuple[str, str], ...], requests.PreparedRequest] = {}
        self._asked_key = repr(sorted(self._asked.items())).encode()  # its part of every memo key, made once
        # Redaction calls answer with the prompt's redacted text: never through the cache.
        self._plain = requests.Session()
        self._plain.trust_env = False
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lockllm-scan")
        self._stats_lock = threading.Lock()
        self.retries_total = 0
        # The scanner's last word on the gateway's own key or credit ("unauthorized: ..."), until a scan succeeds.
        self.account_problem: str | None = None
        self._memo: OrderedDict[bytes, tuple[float, Verdict]] | None = OrderedDict() if settings.cache_path else None
        self._memo_lock = threading.Lock()
        # A scanner failing again and again is not waited for on every request (breaker.py); cached verdicts still go.
        self.breaker = CircuitBreaker()
        self._scan_guarded = self.breaker.guard(
            self._scan_piece,
            lambda text, asked, held, started: self._stored(text, asked, *self._request(text, asked))[0],
            budget=settings.timeout)

    def _memo_key(self, text: str, asked: dict[str, str]) -> bytes:
        """The text's hash with what LockLLM was asked to check: other checks, another verdict."""
        checks = self._asked_key if asked is self._asked else repr(sorted(asked.items())).encode()
        return hashlib.sha256(text.encode() + b"\0" + checks).digest()

    def _recall(self, text: str, asked: dict[str, str]) -> Verdict | None:
        if self._memo is None:
            return None
        key = self._memo_key(text, asked)
        with self._memo_lock:
            entry = self._memo.get(key)
            if entry is None:
                return None
            if entry[0] <= time.monotonic():
                del self._memo[key]
                return None
            self._memo.move_to_end(key)
            return entry[1]

    def _remember(self, text: str, asked: dict[str, str], verdict: Verdict, expires: datetime | None) -> None:
        if self._memo is None:
            return
        ttl = float(self.settings.cache_ttl)
        if expires is not None:  # a verdict read from SQLite lives no longer than its stored entry
            ttl = min(ttl, (expires.replace(tzinfo=expires.tzinfo or timezone.utc)
                            - datetime.now(timezone.utc)).total_seconds())
        key = self._memo_key(text, asked)
        with self._memo_lock:
            self._memo[key] = (time.monotonic() + ttl, replace(verdict, cached=True))
            self._memo.move_to_end(key)
            while len(self._memo) > DEFAULT_MEMO_ENTRIES:
                self._memo.popitem(last=False)

    def scan(self, texts: Sequence[str], deadline: float, settings: ScannerSettings | None = None,
             after_answer: list[Callable[[], None]] | None = None) -> list[Verdict]:
        """One verdict per text, in order; raises ScannerUnavailable if any text cannot be judged in time.
        `settings` are this request's, when a client's X-LockLLM-* headers changed what LockLLM checks.
        `after_answer` collects what the caller runs once its answer is sent: the release of the fresh verdicts'
        cache writes, held until then (HeldWrites)."""
        asked = self._asked if settings is None or settings is self.settings else scan_headers(settings)
        jobs = [pieces(text) for text in texts]
        # A text repeated within the request (a resent tool result, the same file twice) is scanned once, and one
        # this process judged before is taken from memory at once: only the others go to the pool.
        judged: dict[str, Verdict | Future] = {}
        held: HeldWrites | None = None
        started: dict[str, float] = {}  # when each fresh text's scan call was about to be sent
        for piece in (piece for job in jobs for piece in job):
            if piece in judged:
                continue
            remembered = self._recall(piece, asked)
            if remembered is not None:
                judged[piece] = remembered
                continue
            if held is None and after_answer is not None:
                held = self._hold(after_answer)
            judged[piece] = self._pool.submit(self._scan_guarded, piece, deadline, asked, held, started)
        fresh = {value: piece for piece, value in judged.items() if isinstance(value, Future)}
        if fresh:
            self._wait(fresh, deadline, started)
        verdicts = {piece: value.result() if isinstance(value, Future) else value for piece, value in judged.items()}
        return [Verdict.worst([verdicts[piece] for piece in job]) for job in jobs]

    def _hold(self, after_answer: list[Callable[[], None]]) -> HeldWrites | None:
        """A hold on a request's cache writes, its release added to `after_answer`; None without a cache, and with
        Redis: no memo stands in front of it, so until the answer ended (a stream's, minutes) every repeat of the
        text would pay a scan."""
        if self.writer is None or self.store is None or self._memo is None:
            return None
        held = self.writer.hold()
        after_answer.append(held.release)
        return held

    def _wait(self, fresh: dict[Future, str], deadline: float, started: dict[str, float]) -> None:
        """Returns when every scan call has its verdict; raises ScannerUnavailable when one failed or the deadline
        came first (the calls not yet started are cancelled). `fresh` maps the request's scan calls to their texts,
        `started` says when each was about to be sent (its verdict not in the cache).

        Running out of time is the request's own doing, never a fail-open, when it had more fresh texts than the
        pool has workers, or when the text that ran out was sent with less than half the budget left or is very
        long (breaker.on_clients_account): under load a request's texts queue behind others', start late and time
        out, and a flood must not buy relays. Decided from these facts, not from what is still running when this looks
        (under load, a request of 100 texts found its first 64 done and was relayed unscanned)."""
        done, pending = wait(fresh, timeout=max(0.0, deadline - time.monotonic()), return_when=FIRST_EXCEPTION)
        queued = any([future.cancel() for future in pending]) or len(fresh) > self.workers

        def late(future: Future) -> bool:
            text = fresh[future]
            return text not in started or on_clients_account(text, deadline - started[text], self.settings.timeout)

        def clients(future: Future) -> bool:  # not asked of a cancelled call: `queued` already says so
            if not future.done():
                return late(future)
            problem = future.exception()
            return isinstance(problem, ScannerUnavailable) and (
                problem.caused_by_request or (problem.timed_out and late(future)))

        # Every failed and every unfinished scan is looked at, not the first failure found: which had failed when
        # this looked depends on the machine's speed.
        caused_by_request = queued or any(clients(future) for future in fresh)
        failure = next((future.exception() for future in done if future.exception() is not None), None)
        if failure is None and pending:
            raise ScannerUnavailable(f"no verdict within the scan deadline of {self.settings.timeout:g}s"
                                     + (f" ({len(fresh)} fresh texts, {self.workers} scan workers)" if queued else ""),
                                     caused_by_request=caused_by_request, timed_out=True)
        if isinstance(failure, ScannerUnavailable):
            failure.caused_by_request = caused_by_request
            raise failure
        if failure is not None:
            # A fault below (a library's unexpected exception) still means "no verdict", never an unhandled error.
            raise ScannerUnavailable(f"scan failed: {type(failure).__name__}",
                                     caused_by_request=caused_by_request) from failure

    def _request(self, text: str, asked: dict[str, str]) -> tuple[bytes, dict[str, str]]:
        """The scan call's body and headers; the body is encoded once: its bytes are both what is sent and part of
        the cache key."""
        return (json.dumps({"input": text, "sensitivity": asked["X-LockLLM-Sensitivity"]}).encode(),
                {**self._headers, **asked})

    def _prepared(self, body: bytes, headers: dict[str, str]) -> requests.PreparedRequest:
        """The scan call for `body`, sent with Session.send: Session.post would merge the session's cookie jar, hooks
        and settings into every call, and preparing a request parses its URL and checks its headers each time, 0.4 ms
        of a cache miss together (benchmarks/miss_phases.py). So the call without its body is prepared once per
        header set and copied. A scan call carries no cookies and follows no redirects; send still applies the
        session's adapter and TLS checks, and no ambient proxy (trust_env is off)."""
        key = tuple(headers.items())
        template = self._prepared_calls.get(key)
        if template is None:
            template = requests.Request("POST", self.settings.url, headers=headers).prepare()
            if len(self._prepared_calls) < MAX_PREPARED_CALLS:
                self._prepared_calls[key] = template
        prepared = template.copy()
        prepared.prepare_body(body, None)
        return prepared

    def _stored(self, text: str, asked: dict[str, str], body: bytes,
                headers: dict[str, str]) -> tuple[Verdict | None, str | None]:
        """(the verdict the cache holds for this scan call or None, its cache key or None without a cache)."""
        if self.store is None:
            return None, None
        key = self.store.key(self.settings.url, headers, body)
        stored = self.store.lookup(key)
        if stored is None:
            return None, key
        try:
            verdict = parse_verdict(stored.json())
        except (ValueError, ScannerUnavailable):
            return None, key  # a stored entry the parser refuses is a miss: scanned live, stored again
        self._remember(text, asked, verdict, stored.expires)
        return replace(verdict, cached=True), key

    def _scan_piece(self, text: str, deadline: float, asked: dict[str, str], held: HeldWrites | None,
                    started: dict[str, float]) -> Verdict:
        body, headers = self._request(text, asked)
        stored, key = self._stored(text, asked, body, headers)
        if stored is not None:
            return stored
        prepared = self._prepared(body, headers)
        started[text] = time.monotonic()  # what is left of the budget from here is the scan call's (_wait)
        problem, status, timed_out = NOT_ATTEMPTED, 0, True
        for attempt in range(self.settings.retries + 1):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            if attempt:
                with self._stats_lock:
                    self.retries_total += 1
            wait_before_retry = 0.0
            try:
                response = self.session.send(prepared, timeout=(remaining, remaining), allow_redirects=False)
            except requests.RequestException as error:
                problem, status = f"scanner connection failed: {type(error).__name__}", 0
                # requests reports a body read that timed out as a ConnectionError: the clock says it too.
                timed_out = isinstance(error, requests.Timeout) or time.monotonic() >= deadline
            else:
                timed_out = False  # the scanner answered, in time
                with response:
                    if response.status_code == 200:
                        try:
                            data = response.json()
                        except ValueError:
                            raise ScannerUnavailable("scanner answered 200 with a body that is not JSON") from None
                        verdict = parse_verdict(data)
                        self.account_problem = None
                        if key is not None:  # only a verdict the parser accepted is kept (scrubbed: verdict_cache)
                            self.store.save(key, response, held)
                        self._remember(text, asked, verdict, None)
                        return replace(verdict, cached=False)
                    status = response.status_code
                    blocked = parse_block(status, _json_or_none(response))
                    if blocked is not None:
                        return blocked  # LockLLM's block answer is a verdict, never an outage
                    problem = f"scanner answered {status}: {_error_message(response)}"
                    if status != 429 and status < 500:
                        # About our own request (bad key, bad input): retrying cannot help. A bad key or exhausted
                        # credit is the operator's problem (the fail mode applies); anything else is about the
                        # input, which the client chose: never a fail-open.
                        account = ACCOUNT_PROBLEMS.get(status)
                        if account:
                            self.account_problem = f"{account}: {problem}"  # shown by /readyz until a scan works
                        raise ScannerUnavailable(problem, caused_by_request=status not in OPERATOR_STATUSES,
                                                 account=account)
                    wait_before_retry = _retry_after(response)
            backoff = BACKOFF_BASE_SECONDS * (2 ** attempt) * random.uniform(0.5, 1.5)
            pause = max(wait_before_retry, backoff)
            if attempt == self.settings.retries or time.monotonic() + pause >= deadline:
                break
            time.sleep(pause)
        # Rate-limited to the end: the volume that exhausted the scanner's quota is the clients' to make, so a
        # flood must not turn the next requests into fail-opens. Never sent: the text reached a worker only after
        # the deadline, queued behind the request's other texts (or other requests'); the volume ran it out, not a
        # sick scanner. (Sent late and timed out, or cut off at the deadline: _wait decides whose doing that was
        # from when the call was sent, and counts the request's fresh texts against the workers.)
        raise ScannerUnavailable(problem, caused_by_request=status == 429 or problem == NOT_ATTEMPTED,
                                 timed_out=timed_out)

    def redact(self, text: str, deadline: float, settings: ScannerSettings | None = None) -> str:
        """LockLLM's `redacted_input` for one text (pii_action = strip): asked outside the verdict cache, which never
        keeps text; ScannerUnavailable when LockLLM does not give one in time."""
        asked = {**scan_headers(settings or self.settings), "X-LockLLM-PII-Action": "strip"}
        body, headers = self._request(text, asked)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ScannerUnavailable("no time left to strip personal data")
        try:
            with self._plain.post(self.settings.url, data=body, headers=headers, timeout=(remaining, remaining),
                                  allow_redirects=False) as response:
                redacted = (_json_or_none(response) or {}).get("pii_result", {}).get("redacted_input")
        except (requests.RequestException, AttributeError) as error:
            raise ScannerUnavailable(f"stripping personal data failed: {type(error).__name__}") from None
        if not isinstance(redacted, str):
            raise ScannerUnavailable("scanner gave no redacted input to strip personal data with")
        return redacted

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until the verdicts scanned so far are in the shared cache; False if `timeout` passed first."""
        return self.writer.flush(timeout) if self.writer is not None else True

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._plain.close()
        if self.writer is not None:
            self.writer.close()
        if self.store is not None:
            self.store.close()
        self.session.close()


def _json_or_none(response: requests.Response) -> object:
    try:
        return response.json()
    except ValueError:
        return None


def _error_message(response: requests.Response) -> str:
    """The scan API's error type and code (not its message, which may quote the input): enough for an operator
    to tell a bad key from an outage."""
    try:
        error = response.json()["error"]
        return f"{str(error.get('type'))[:60]}/{str(error.get('code'))[:60]}"
    except (ValueError, KeyError, TypeError, AttributeError):
        return "(no JSON error envelope)"


def make_scanner(settings: ScannerSettings) -> LockLLMScanner | OfflineScanner:
    """The scanner the settings name: the LockLLM API, or the in-process offline scanner (its model loaded now)."""
    if settings.backend == "offline":
        return OfflineScanner(settings)
    return LockLLMScanner(settings)
