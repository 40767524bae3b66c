"""Load through real Apache: a burst of identical, distinct and hostile prompts across two daemon processes that
share one SQLite verdict cache, and many large bodies at once. Every request is answered as expected and
accounted for in the request log exactly once; memory stays bounded."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from support.apache_servers import missing_tools, public_folder, running_apache2, running_express, worker_owned_folder
from support.fakes import ATTACK
from support.gateway import write_config

MISSING = missing_tools()
pytestmark = [pytest.mark.apache, pytest.mark.skipif(MISSING is not None, reason=MISSING or "")]

COMPLETION = {"id": "x", "object": "chat.completion", "choices": []}
MAX_BODY = 8 * 1024 * 1024
BURST, BURST_THREADS = 200, 16
LARGE_BODIES, LARGE_BODY_BYTES = 20, 5 * 1024 * 1024
# How much each daemon's peak RSS may grow while it takes 20 bodies of 5 MiB with 6 threads; measured ~120 MiB
# (it holds at most 6 at once: raw bytes, the parsed document, the normalised copies and the relay's copy).
MAX_HWM_GROWTH_MIB = 256
# A scan budget (the whole request's, [scanner] timeout) no loaded test machine runs out of: these tests are about
# what is answered and logged, not how fast. The usual 3 s was not enough for a 5 MiB text on a machine whose cores
# were shared by ten or more busy processes: one body of 20 got the gateway's 503 scanner_unavailable.
SCAN_BUDGET = "timeout = 60\n"


@pytest.fixture(scope="module")
def load_site(scanner_server, provider_server):
    root = public_folder("lockllm-load-")
    cache = worker_owned_folder(os.path.join(root, "cache"))
    config = write_config(Path(root), scanner_server.url_for("/v1/scan"), provider_server.url_for("").rstrip("/"),
                          extra=f"[limits]\nmax_body_bytes = {MAX_BODY}\n",
                          scanner_extra=f"cache = sqlite:///{cache}/verdicts.sqlite\n{SCAN_BUDGET}")
    yield root, config
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def load_gateway(load_site):
    """load_gateway(name): the module's express or apache2 server, started on first use and kept for the module's
    other test: each test reads only the log lines, requests and memory figures of its own requests."""
    root, config = load_site
    running: dict[str, object] = {}
    with contextlib.ExitStack() as stack:
        def gateway(name: str):
            if name not in running:
                start = running_express if name == "express" else running_apache2
                running[name] = stack.enter_context(start(config, root))
            return running[name]
        yield gateway


def _request_records(log_text: str) -> list[dict]:
    """The JSON objects of the request log lines (`"event": "request"`), wherever Apache put them."""
    records = []
    for line in log_text.splitlines():
        start = line.find('{"event": "request"')
        if start >= 0:
            records.append(json.loads(line[start:]))
    return records


def _logged_requests(gateway, log_start: int, ids: list[str]) -> list[dict]:
    """The request log's records of the openai route after `log_start`, once every one of `ids` is among them (or
    after 10 s): a request's line is written when Apache closes its response, which can be just after the client
    read it. A test waits for its own lines, so none turns up in the log of the module's next test."""
    deadline = time.monotonic() + 10
    while True:
        records = [record for record in _request_records(gateway.log_text()[log_start:])
                   if record.get("route") == "openai"]
        if set(ids) <= {record.get("request_id") for record in records} or time.monotonic() > deadline:
            return records
        time.sleep(0.05)


def _burst_plan() -> list[tuple[str, int]]:
    """(prompt, expected status) x 200: half one repeated prompt (a tenth of them one repeated attack), half
    distinct prompts (a fifth of them distinct attacks)."""
    tag = uuid.uuid4().hex[:8]
    same, same_attack = f"What is the weather like? [{tag}]", f"{ATTACK} and reveal secrets [{tag}]"
    plan = []
    for number in range(BURST):
        if number % 2 == 0:
            plan.append((same_attack, 400) if number % 20 == 0 else (same, 200))
        elif number % 10 == 5:
            plan.append((f"{ATTACK} number {number} [{tag}]", 400))
        else:
            plan.append((f"Tell me fact number {number} [{tag}]", 200))
    return plan


@pytest.mark.parametrize("server", ["express", "apache2"])
def test_burst_over_two_daemons_sharing_the_cache_is_answered_and_logged_once(server, load_gateway, scanner,
                                                                               provider):
    provider.expect_request("/v1/chat/completions", method="POST").respond_with_json(COMPLETION)
    plan = _burst_plan()
    gateway = load_gateway(server)
    log_start = len(gateway.log_text())

    def ask(item: tuple[str, int]) -> tuple[int, str, str]:
        # A new connection per request, as in test_apache.py: a POST racing Apache's close of an idle
        # keep-alive connection is lost before it reaches the gateway.
        answer = requests.post(f"{gateway.base}/openai/v1/chat/completions", verify=gateway.verify, timeout=30,
                               json={"model": "m", "messages": [{"role": "user", "content": item[0]}]})
        return answer.status_code, answer.headers.get("X-Request-Id", ""), answer.text

    began = time.monotonic()
    with ThreadPoolExecutor(BURST_THREADS) as pool:
        answers = list(pool.map(ask, plan))
    seconds = time.monotonic() - began
    ids = [request_id for _, request_id, _ in answers]
    records = _logged_requests(gateway, log_start, ids)
    log_tail = gateway.log_text()[log_start:]
    relayed = [received for received, _ in provider.log]  # the burst's, before any extra question
    daemons = set(re.findall(r"\[pid (\d+):tid \d+\][^\n]*\"event\": \"request\"", log_tail))
    for _ in range(20):  # which daemon accepts is the kernel's choice: ask more until both have answered
        if len(daemons) == 2:
            break
        with ThreadPoolExecutor(BURST_THREADS) as pool:
            list(pool.map(ask, [("a plain question", 200)] * BURST_THREADS * 2))
        daemons |= set(re.findall(r"\[pid (\d+):tid \d+\][^\n]*\"event\": \"request\"",
                                  gateway.log_text()[log_start:]))

    assert not [text for _, _, text in answers if "database is locked" in text.lower()]
    assert [status for status, _, _ in answers] == [status for _, status in plan]
    assert all(ids) and len(set(ids)) == BURST
    logged = [record["request_id"] for record in records]
    assert sorted(logged) == sorted(ids)  # count in = count out, each request once
    by_id = {record["request_id"]: record for record in records}
    assert all(by_id[request_id]["status"] == status for request_id, (_, status) in zip(ids, plan))
    assert len(relayed) == sum(status == 200 for _, status in plan)
    assert not any(ATTACK.encode() in received.get_data() for received in relayed)
    assert len(daemons) == 2, daemons
    print(f"\n{server}: {BURST} requests in {seconds:.1f} s from {BURST_THREADS} threads, {len(scanner.log)} scans, "
          f"{log_tail.count('cache_error')} cache errors read as misses, daemons {sorted(daemons)}")


def _daemon_pids(root: str) -> list[int]:
    """The mod_wsgi daemon processes of the express server under `root` (display name "(wsgi:...")."""
    with open(os.path.join(root, "express", "httpd.pid")) as handle:
        parent = handle.read().strip()
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                ppid = handle.read().rsplit(")", 1)[1].split()[1]
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                name = handle.read()
        except OSError:
            continue
        if ppid == parent and name.startswith(b"(wsgi:"):
            pids.append(int(entry))
    return sorted(pids)


def _status_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def _large_body(number: int, tag: str) -> bytes:
    """~5 MiB: most requests carry an image (relayed, not scanned) and a question; every fifth is all text."""
    if number % 5 == 0:
        text = f"Summarise document {number} [{tag}]: " + "lorem ipsum dolor sit amet " * (LARGE_BODY_BYTES // 27)
        content: object = text
    else:
        image = base64.b64encode(os.urandom(LARGE_BODY_BYTES * 3 // 4)).decode()
        content = [{"type": "text", "text": f"What is in picture {number}? [{tag}]"},
                   {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{image}"}}]
    return json.dumps({"model": "m", "messages": [{"role": "user", "content": content}]}).encode()


def test_many_large_bodies_at_once_are_answered_with_bounded_memory(load_site, load_gateway, scanner, provider):
    root, _ = load_site
    provider.expect_request("/v1/chat/completions", method="POST").respond_with_json(COMPLETION)
    tag = uuid.uuid4().hex[:8]
    bodies = [_large_body(number, tag) for number in range(LARGE_BODIES)]
    gateway = load_gateway("express")
    log_start = len(gateway.log_text())
    pids = _daemon_pids(root)
    assert len(pids) == 2, pids
    before = {pid: _status_kib(pid, "VmHWM") for pid in pids}

    def send(body: bytes) -> tuple[int, str]:
        answer = requests.post(f"{gateway.base}/openai/v1/chat/completions", data=body, timeout=60,
                               headers={"Content-Type": "application/json"})
        return answer.status_code, answer.headers.get("X-Request-Id", "")

    began = time.monotonic()
    with ThreadPoolExecutor(LARGE_BODIES) as pool:
        answers = list(pool.map(send, bodies))
    seconds = time.monotonic() - began
    statuses = [status for status, _ in answers]
    after = {pid: _status_kib(pid, "VmHWM") for pid in pids}
    assert _daemon_pids(root) == pids  # no daemon died or was recycled
    _logged_requests(gateway, log_start, [request_id for _, request_id in answers])
    growth_mib = {pid: round((after[pid] - before[pid]) / 1024, 1) for pid in pids}
    print(f"\nexpress: {LARGE_BODIES} x {LARGE_BODY_BYTES >> 20} MiB at once in {seconds:.1f} s, {len(scanner.log)} "
          f"scans; daemon VmHWM MiB before {[round(before[pid] / 1024, 1) for pid in pids]}, growth {growth_mib}")
    assert statuses == [200] * LARGE_BODIES
    assert len(provider.log) == LARGE_BODIES
    assert max(growth_mib.values()) < MAX_HWM_GROWTH_MIB
