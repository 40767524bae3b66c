"""The audit file: one JSON line per blocked, monitored or failed-open request, safe to rotate and to share."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import requests
from werkzeug.wrappers import Response

from support.fakes import ATTACK

PROVIDER_KEY = "sk-provider-canary-audit-778899"
CHAT = "/openai/v1/chat/completions"
COMPLETION = {"id": "chatcmpl-1", "object": "chat.completion", "choices": []}


def as_apache_user(gateway, user: str) -> None:
    """Play Apache's authentication: the request reaches the app with REMOTE_USER set."""
    app = gateway.app
    gateway.server.app = lambda environ, start_response: app({**environ, "REMOTE_USER": user}, start_response)


def chat(gateway, text: str) -> requests.Response:
    return requests.post(gateway.url + CHAT, json={"model": "m", "messages": [
        {"role": "system", "content": "You are helpful."}, {"role": "user", "content": text}]},
        headers={"Authorization": f"Bearer {PROVIDER_KEY}"}, timeout=10)


def audit_lines(path, expected: int | None = None) -> list[dict]:
    """The records in `path`; with `expected`, waits for that many (a record is written once the server closes
    the response, which can be just after the client has read it)."""
    deadline = time.monotonic() + 5
    while True:
        lines = path.read_text().splitlines() if path.exists() else []
        if expected is None or len(lines) >= expected or time.monotonic() > deadline:
            return [json.loads(line) for line in lines]
        time.sleep(0.02)


def audited_gateway(make_gateway, tmp_path, policy="", scanner_extra="", log_prompts="off"):
    path = tmp_path / "audit.log"
    gateway = make_gateway(f"[audit]\npath = {path}\nlog_prompts = {log_prompts}\n{policy}", scanner_extra)
    return gateway, path


def test_blocked_request_writes_one_record_with_who_what_where(make_gateway, tmp_path, provider):
    gateway, path = audited_gateway(make_gateway, tmp_path, policy="[policy]\nrole_from = REMOTE_USER\n")
    as_apache_user(gateway, "alice")
    response = chat(gateway, f"{ATTACK} now")
    assert response.status_code == 400
    (record,) = audit_lines(path, 1)
    assert list(record)[:4] == ["time", "request_id", "decision", "route"]
    assert record["request_id"] == response.headers["X-Request-Id"]
    assert record["decision"] == "block" and record["route"] == "openai" and record["status"] == 400
    assert record["user"] == "alice" and record["role"] == "alice" and record["client"] == "127.0.0.1"
    assert record["trigger"] == "messages[1].content" and record["score"] == 0.97
    assert record["prompt_chars"] == len(f"{ATTACK} now") and len(record["prompt_sha256"]) == 64
    assert record["scanner_request_id"] == "scan_123"
    assert record["scan_ms"] >= 0 and record["total_ms"] >= record["scan_ms"]
    assert "prompt" not in record and ATTACK not in path.read_text()
    assert path.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("policy, scanner_extra, text, decision", [
    pytest.param("[policy]\naction = monitor\n", "", ATTACK, "monitor", id="monitored"),
    pytest.param("", "fail_mode = open\n", "hello", "fail_open", id="failed-open"),
])
def test_relayed_but_unjudged_or_unsafe_requests_are_audited(make_gateway, tmp_path, provider, scanner, policy,
                                                            scanner_extra, text, decision):
    provider.expect_request("/v1/chat/completions").respond_with_json(COMPLETION)
    if decision == "fail_open":
        scanner.clear()
        scanner.expect_request("/v1/scan").respond_with_response(Response("down", status=503))
    gateway, path = audited_gateway(make_gateway, tmp_path, policy, scanner_extra)
    assert chat(gateway, text).status_code == 200
    (record,) = audit_lines(path, 1)
    assert record["decision"] == decision and record["status"] == 200


def test_allowed_and_malformed_requests_are_not_audited(make_gateway, tmp_path, provider, request_log_lines):
    provider.expect_request("/v1/chat/completions").respond_with_json(COMPLETION)
    gateway, path = audited_gateway(make_gateway, tmp_path)
    assert chat(gateway, "hello").status_code == 200
    assert requests.post(gateway.url + CHAT, data=b"{", headers={"Content-Type": "application/json"},
                         timeout=10).status_code == 400
    # Both requests are finished: an audit record is written before the request-log line, in the same close().
    assert request_log_lines.wait_for(2)
    assert audit_lines(path) == []


FORGERY = 'hi"}\n{"decision": "allow"}\r\u2028\u2029\u0085\x00' + ATTACK


def test_prompts_are_kept_only_when_asked_and_cannot_forge_records(make_gateway, tmp_path, request_log_lines):
    gateway, path = audited_gateway(make_gateway, tmp_path, log_prompts="on")
    chat(gateway, FORGERY)
    audit_lines(path, 1)
    raw = path.read_bytes()
    assert raw.count(b"\n") == 1 and raw.isascii()
    (record,) = audit_lines(path, 1)
    assert record["prompt"] == FORGERY
    assert PROVIDER_KEY not in raw.decode()
    assert request_log_lines.wait_for(1)
    (line,) = request_log_lines  # written after the audit record, in the same close()
    assert ATTACK not in line and PROVIDER_KEY not in line and json.loads(line)["prompt_chars"] == len(FORGERY)


def test_a_rotated_file_is_replaced_by_a_fresh_one(make_gateway, tmp_path):
    gateway, path = audited_gateway(make_gateway, tmp_path)
    chat(gateway, ATTACK)
    audit_lines(path, 1)
    path.rename(tmp_path / "audit.log.1")  # what logrotate does (without copytruncate)
    chat(gateway, ATTACK)
    assert len(audit_lines(tmp_path / "audit.log.1")) == 1
    assert len(audit_lines(path, 1)) == 1


WRITER = """
import sys
from lockllm_wsgi.audit import AuditLog
from lockllm_wsgi.config import AuditSettings
audit = AuditLog(AuditSettings(path=sys.argv[1], log_prompts=True))
for n in range(200):
    audit.write({"request_id": f"{sys.argv[2]}-{n}", "decision": "block", "prompt": sys.argv[2] * 20000})
"""


def test_processes_writing_at_once_never_interleave_records(tmp_path):
    path = tmp_path / "audit.log"
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), name]) for name in "abcd"]
    assert [writer.wait(timeout=60) for writer in writers] == [0, 0, 0, 0]
    records = audit_lines(path)
    assert len(records) == 800
    assert all(record["prompt"] == record["request_id"][0] * 20000 for record in records)
