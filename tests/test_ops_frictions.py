"""Small day-one frictions: the cause of an unreachable provider in the log (never to the client), a missing
configuration never read as "unsafe" by `scan`'s exit status, and a warning for an upstream that repeats the
version the SDK already sends."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import requests

from lockllm_wsgi.advice import config_warnings
from lockllm_wsgi.cli import main
from lockllm_wsgi.config import load_settings
from lockllm_wsgi.relay import UpstreamError
from support.fakes import closed_port


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


@pytest.mark.parametrize("fmt, upstream, warned", [
    pytest.param("openai", "https://api.openai.com/v1", True, id="openai-v1"),
    pytest.param("openai", "https://api.openai.com", False, id="openai"),
    pytest.param("openai", "https://api.groq.com/openai", False, id="groq-preset-form"),
    pytest.param("anthropic", "https://api.anthropic.com/v1/", True, id="anthropic-v1-slash"),
    pytest.param("gemini", "https://generativelanguage.googleapis.com/v1beta", True, id="gemini-v1beta"),
    pytest.param("cohere", "https://api.cohere.com/v2", True, id="cohere-v2"),
    pytest.param("azure", "https://r.openai.azure.com/openai", True, id="azure-openai"),
    pytest.param("azure", "https://r.openai.azure.com", False, id="azure"),
])
def test_an_upstream_ending_in_the_sdks_own_version_is_warned_about(tmp_path, fmt, upstream, warned):
    path = tmp_path / "lockllm.ini"
    path.write_text(f"[scanner]\nbackend = offline\n\n[route:main]\nprefix = /main\nupstream = {upstream}\n"
                    f"format = {fmt}\n")
    warnings = config_warnings(load_settings(str(path)))
    assert bool(warnings) == warned
    if warned:
        assert "[route:main]" in warnings[0] and "use upstream = " in warnings[0]


def test_check_config_prints_the_warning(tmp_path, capsys):
    path = tmp_path / "lockllm.ini"
    path.write_text("[scanner]\nbackend = offline\n\n[route:openai]\nprefix = /openai\n"
                    "upstream = https://api.openai.com/v1\nformat = openai\n")
    assert main(["check-config", str(path), "--user", "root"]) == 0
    assert "warning: [route:openai] upstream https://api.openai.com/v1 ends in /v1" in capsys.readouterr().err


def test_the_request_log_can_go_to_its_own_file(tmp_path, provider):
    """[log] path: each line appended to that file (not stderr, where mod_wsgi marks it [wsgi:error])."""
    log_path = tmp_path / "requests.log"
    log_path.write_text("kept\n")
    config = tmp_path / "lockllm.ini"
    config.write_text(f"[scanner]\nbackend = offline\n\n[log]\npath = {log_path}\n\n[route:openai]\n"
                      f"prefix = /openai\nupstream = {provider.url_for('').rstrip('/')}\nformat = openai\n")
    program = ("import sys\nfrom werkzeug.test import Client\nfrom lockllm_wsgi import create_app\n"
               "client = Client(create_app(sys.argv[1]))\n"
               "for _ in range(2): client.get('/no-route').close()\n")
    finished = subprocess.run([sys.executable, "-c", program, str(config)], capture_output=True, text=True,
                              check=True)
    lines = log_path.read_text().splitlines()
    assert lines[0] == "kept"
    events = [json.loads(line)["event"] for line in lines[1:]]
    assert events == ["start", "request", "request"]
    assert '"event": "request"' not in finished.stderr
