"""Small day-one frictions: the cause of an unreachable provider in the log (never to the client), and a
missing configuration never read as "unsafe" by `scan`'s exit status."""

from __future__ import annotations

import json
import socket

import pytest
import requests

from lockllm_wsgi.cli import main
from lockllm_wsgi.relay import UpstreamError


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_the_cause_of_a_502_is_logged_not_sent(make_gateway, scanner, request_log_lines):
    gateway = make_gateway(upstream=f"http://127.0.0.1:{closed_port()}")
    response = requests.post(gateway.url + "/openai/v1/chat/completions", timeout=10,
                             json={"model": "m", "messages": [{"role": "user", "content": "hello"}]})
    assert response.status_code == 502 and response.json()["error"]["code"] == "upstream_unavailable"
    assert "refused" not in response.text.lower() and "NewConnectionError" not in response.text
    assert request_log_lines.wait_for(1)
    line = json.loads(request_log_lines[-1])
    assert line["upstream_problem"].startswith("NewConnectionError") and "refused" in line["upstream_problem"]


def test_a_query_string_never_reaches_the_cause():
    error = UpstreamError(502, "x", OSError("GET /v1beta/models/m:generateContent?key=AIza-secret failed"))
    assert "AIza-secret" not in error.cause and "?<redacted>" in error.cause


@pytest.mark.parametrize("argv", [["scan", "hello"], ["check-config"], ["cache", "stats"]])
def test_no_configuration_exits_2_not_1(argv, capsys):
    assert main(argv) == 2
    assert "--config FILE" in capsys.readouterr().err
