"""A scanner's Retry-After is read leniently: an HTTP date or seconds; anything else is ignored, never fatal."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest
import requests

from lockllm_wsgi.config import ScannerSettings
from lockllm_wsgi.scan import LockLLMScanner, _retry_after
from support.fakes import FakeServer


def answer_with(retry_after: str) -> requests.Response:
    response = requests.Response()
    response.status_code = 429
    response.headers["Retry-After"] = retry_after
    return response


def http_date(seconds_from_now: float) -> str:
    return format_datetime(datetime.now(timezone.utc) + timedelta(seconds=seconds_from_now), usegmt=True)


@pytest.mark.parametrize("header, seconds", [
    ("3", 3.0),
    ("1.5", 1.5),
    (" 2 ", 2.0),
    ("0", 0.0),
    ("-1", 0.0),
    ("soon", 0.0),
    ("", 0.0),
    ("nan", 0.0),
    ("inf", 0.0),
    ("1,5", 0.0),
    ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),  # a date gone by: no wait
])
def test_retry_after_is_read_leniently(header, seconds):
    assert _retry_after(answer_with(header)) == seconds


def test_retry_after_as_a_future_http_date_is_the_time_until_it():
    assert 50 <= _retry_after(answer_with(http_date(60))) <= 60


def test_no_retry_after_is_no_wait():
    assert _retry_after(requests.Response()) == 0.0


@pytest.fixture
def fake_scanner():
    server = FakeServer()  # stops in 10 ms, not 0.5 s
    server.start()
    yield server
    server.clear()
    if server.is_running():
        server.stop()


@pytest.mark.parametrize("status", [429, 503])
@pytest.mark.parametrize("retry_after", ["1.5e-1", "soon", "-1", "", "nan", "0.05", "Wed, 21 Oct 2015 07:28:00 GMT"])
def test_an_odd_retry_after_is_still_retried(fake_scanner, status, retry_after):
    fake_scanner.expect_ordered_request("/v1/scan", method="POST").respond_with_json(
        {"error": {"type": "busy", "code": "slow_down"}}, status=status, headers={"Retry-After": retry_after})
    fake_scanner.expect_ordered_request("/v1/scan", method="POST").respond_with_json(
        {"safe": True, "injection": 2, "request_id": "scan_2"})
    scanner = LockLLMScanner(ScannerSettings(url=fake_scanner.url_for("/v1/scan"), api_key="llm-key", retries=2,
                                             timeout=5.0))
    try:
        started = time.monotonic()
        [verdict] = scanner.scan(["Hello there"], deadline=started + 5.0)
    finally:
        scanner.close()
    assert verdict.safe is True and verdict.scanner_request_id == "scan_2"
    assert len(fake_scanner.log) == 2 and scanner.retries_total == 1
    assert time.monotonic() - started < 2.0  # the backoff spaced the retry, no odd header stretched it
