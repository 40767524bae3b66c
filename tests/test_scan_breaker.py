"""The scan client's circuit breaker: after consecutive scanner failures, requests are decided at once by the
fail mode for a cool-down, then one probe; a recovered scanner closes it; cached verdicts keep being served."""

from __future__ import annotations

import json
import threading
import time

import pytest
import requests
from werkzeug.wrappers import Response

from support.fakes import scanner_verdict
from lockllm_wsgi.breaker import COUNTED_TEXT_CHARS, CircuitBreaker
from lockllm_wsgi.verdict import ScannerUnavailable, Verdict

CHAT = "/openai/v1/chat/completions"
SAFE = Verdict(safe=True, score=0.01)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.requests = 0  # calls made through call(), each a request of its own

    def __call__(self) -> float:
        return self.now


def failing(_text: str, _deadline: float) -> Verdict:
    raise ScannerUnavailable("scanner connection failed: ReadTimeout")


def guarded(breaker: CircuitBreaker, scan=failing, cached=lambda text: None):
    return breaker.guard(scan, cached, budget=5.0)


def call(scan, clock: Clock, text: str = "hello", deadline: float | None = None) -> Verdict | str:
    """One scan, by default as a request of its own (a deadline no other call has: it names the request)."""
    clock.requests += 1
    try:
        return scan(text, deadline if deadline is not None else clock() + 5.0 + clock.requests * 1e-6)
    except ScannerUnavailable as problem:
        return str(problem)


def test_it_opens_after_consecutive_failures_and_probes_after_the_cool_down():
    clock = Clock()
    breaker = CircuitBreaker(failures=3, cool_down=10, clock=clock)
    calls = []

    def scan(text, deadline):
        calls.append(text)
        return failing(text, deadline)

    scan_piece = guarded(breaker, scan)
    for _ in range(3):
        call(scan_piece, clock)
    assert breaker.state == "open" and len(calls) == 3
    assert "circuit open" in call(scan_piece, clock) and len(calls) == 3  # at once, the scanner not asked
    clock.now += 10
    assert breaker.state == "half_open"
    call(scan_piece, clock)  # the probe fails: open again
    assert len(calls) == 4 and breaker.state == "open"
    clock.now += 10
    assert guarded(breaker, scan=lambda text, deadline: SAFE)("x", clock() + 5) == SAFE
    assert breaker.state == "closed"


def test_a_success_resets_the_count():
    clock = Clock()
    breaker = CircuitBreaker(failures=3, clock=clock)
    for outcome in (failing, failing, lambda text, deadline: SAFE, failing, failing):
        call(guarded(breaker, outcome), clock)
    assert breaker.state == "closed"


def test_only_one_probe_goes_through_in_half_open():
    clock = Clock()
    breaker = CircuitBreaker(failures=1, cool_down=1, clock=clock)
    call(guarded(breaker), clock)
    clock.now += 1
    assert [breaker.allow(), breaker.allow()] == [True, False]


@pytest.mark.parametrize("problem", [
    pytest.param(ScannerUnavailable("scanner answered 429", caused_by_request=True), id="rate-limited"),
    pytest.param(ScannerUnavailable("scanner answered 400", caused_by_request=True), id="input-refused"),
])
def test_what_a_request_causes_never_opens_it(problem):
    clock = Clock()
    breaker = CircuitBreaker(failures=1, clock=clock)

    def scan(text, deadline):
        raise problem

    for _ in range(5):
        call(guarded(breaker, scan), clock)
    assert breaker.state == "closed"


def test_long_texts_and_late_starts_are_not_counted():
    """A client's own size (a long text, or texts queued behind its many others) cannot open the breaker."""
    clock = Clock()
    breaker = CircuitBreaker(failures=1, clock=clock)
    call(guarded(breaker), clock, text="x" * (COUNTED_TEXT_CHARS + 1))
    scan_piece = guarded(breaker)
    try:
        scan_piece("short", clock() + 1.0)  # started with 1 s of a 5 s budget left
    except ScannerUnavailable:
        pass
    assert breaker.state == "closed"


def test_one_request_cannot_open_it_however_many_of_its_texts_fail():
    """With fail_mode = open, a request whose own many scans time out must not open the breaker and have the
    rest of itself relayed unscanned: its failures count once."""
    clock = Clock()
    breaker = CircuitBreaker(failures=3, clock=clock)
    scan_piece = guarded(breaker)
    one_request = clock() + 5.0
    for number in range(10):
        call(scan_piece, clock, f"text {number}", deadline=one_request)
    assert breaker.state == "closed"
    call(scan_piece, clock)
    call(scan_piece, clock)
    assert breaker.state == "open"  # three requests failing: the scanner's trouble, not one client's


def test_a_cached_verdict_is_served_while_open():
    clock = Clock()
    breaker = CircuitBreaker(failures=1, clock=clock)
    scan_piece = guarded(breaker, cached=lambda text: SAFE if text == "known" else None)
    call(scan_piece, clock)
    assert call(scan_piece, clock, "known") == SAFE
    assert "circuit open" in call(scan_piece, clock, "new")


# --- through the gateway ----------------------------------------------------------------------------------


def wait_for_state(breaker: CircuitBreaker, state: str, timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while breaker.state != state and time.monotonic() < deadline:
        time.sleep(0.02)
    return breaker.state == state


def chat(gateway, text: str) -> tuple[int, float]:
    started = time.monotonic()
    response = requests.post(gateway.url + CHAT, timeout=30,
                             json={"model": "m", "messages": [{"role": "user", "content": text}]})
    return response.status_code, time.monotonic() - started


@pytest.mark.parametrize("fail_mode, decided", [pytest.param("closed", 503, id="closed"),
                                                pytest.param("open", 200, id="open")])
def test_a_hanging_scanner_is_not_waited_for_once_the_breaker_opens(make_gateway, scanner, provider, fail_mode,
                                                                    decided):
    provider.expect_request("/v1/chat/completions").respond_with_json({"id": "x", "choices": []})
    healthy = threading.Event()
    asked: list[str] = []

    def hanging(request):
        asked.append(request.get_json()["input"])
        healthy.wait(1.0)  # hangs until the scanner is healthy again (the gateway gives up after 0.3 s)
        return scanner_verdict(request)

    scanner.clear()
    scanner.expect_request("/v1/scan", method="POST").respond_with_handler(hanging)
    gateway = make_gateway(scanner_extra=f"timeout = 0.3\nretries = 0\nfail_mode = {fail_mode}")
    breaker = gateway.app.scanner.breaker
    for number in range(breaker.failures):
        status, seconds = chat(gateway, f"slow {number}")
        assert status == decided and seconds >= 0.25  # each waited for the deadline
    # The last scan's own timeout fires just after its request was answered at the deadline.
    assert wait_for_state(breaker, "open")
    assert chat(gateway, "decided at once")[0] == decided
    assert not any("decided at once" in text for text in asked)  # not sent, so not waited for
    healthy.set()
    breaker._clock = lambda: time.monotonic() + breaker.cool_down  # the cool-down over, without waiting it out
    assert chat(gateway, "the probe")[0] == 200
    assert any("the probe" in text for text in asked)
    assert gateway.app.scanner.breaker.state == "closed"


def test_cached_verdicts_keep_working_while_it_is_open(make_gateway, scanner, provider, tmp_path):
    provider.expect_request("/v1/chat/completions").respond_with_json({"id": "x", "choices": []})
    down = threading.Event()

    def flaky(request):
        if down.is_set():
            return Response(json.dumps({"error": {"type": "server_error"}}), status=500)
        return scanner_verdict(request)

    scanner.clear()
    scanner.expect_request("/v1/scan", method="POST").respond_with_handler(flaky)
    gateway = make_gateway(scanner_extra=f"retries = 0\ncache = sqlite:///{tmp_path}/verdicts.sqlite")
    gateway.app.scanner.breaker.cool_down = 3600  # no probe during the test, however slow the machine
    assert chat(gateway, "asked before")[0] == 200
    assert gateway.app.scanner.flush()
    down.set()
    for number in range(gateway.app.scanner.breaker.failures):
        assert chat(gateway, f"fresh {number}")[0] == 503
    assert wait_for_state(gateway.app.scanner.breaker, "open")
    gateway.app.scanner._memo.clear()  # from the SQLite cache itself, not only this process's memory
    asked = len(scanner.log)
    assert chat(gateway, "asked before")[0] == 200
    assert chat(gateway, "never asked")[0] == 503
    assert len(scanner.log) == asked  # neither reached the scanner
