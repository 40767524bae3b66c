"""The shipped systemd unit for `lockllm-wsgi serve`: systemd accepts it, and its commands, run the way systemd runs
them (its Environment, ExecStartPre, then ExecStart with output appended to its log file, stopped by its
KillSignal), start a gateway that answers and stop it."""

from __future__ import annotations

import os
import pathlib
import shlex
import shutil
import signal
import subprocess
import sys

import pytest
import requests

from lockllm_wsgi.apache_config import TEMPLATE_DIR
from support.apache_servers import free_port, missing_tools, public_folder, wait_until_answering
from support.gateway import write_config

MISSING = missing_tools()
pytestmark = [pytest.mark.apache, pytest.mark.skipif(MISSING is not None, reason=MISSING or "")]
UNIT = pathlib.Path(TEMPLATE_DIR) / "lockllm-wsgi.service"


def service_settings(text: str) -> dict[str, list[str]]:
    """The [Service] section's settings, each with every value it was given (systemd allows repeats)."""
    settings: dict[str, list[str]] = {}
    section = None
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line
        elif section == "[Service]" and line and not line.startswith("#"):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


@pytest.fixture
def site(scanner_server, provider_server):
    """The unit with its installation paths swapped for this test's: venv, INI file, runtime and log folders."""
    root = pathlib.Path(public_folder("lockllm-unit-"))
    config = write_config(root, scanner_server.url_for("/v1/scan"), provider_server.url_for("").rstrip("/"))
    port = free_port()
    text = (UNIT.read_text().replace("/opt/lockllm-venv", sys.prefix)
            .replace("/etc/lockllm/lockllm.ini", str(config)).replace("/run/lockllm-wsgi", str(root / "run"))
            .replace("/var/log/lockllm-wsgi", str(root / "log")).replace("--port 8000", f"--port {port}"))
    yield root, text, port
    shutil.rmtree(root, ignore_errors=True)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_accepts_the_unit(site):
    root, text, _port = site
    unit = root / "lockllm-wsgi.service"
    unit.write_text(text)
    checked = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True)
    assert checked.returncode == 0 and checked.stderr == "", checked.stderr


def test_its_commands_start_a_gateway_that_logs_by_appending_and_stops_on_its_signal(site):
    root, text, port = site
    service = service_settings(text)
    environment = {**os.environ, **dict(value.split("=", 1) for value in service["Environment"])}
    (root / "log").mkdir()  # what LogsDirectory= makes
    log_path = pathlib.Path(service["StandardError"][0].removeprefix("append:"))
    assert service["StandardOutput"] == service["StandardError"]
    log_path.write_text("an earlier line\n")
    subprocess.run(shlex.split(service["ExecStartPre"][0]), env=environment, check=True, capture_output=True)
    with open(log_path, "ab") as log:
        process = subprocess.Popen(shlex.split(service["ExecStart"][0]), stdout=log, stderr=log, env=environment,
                                   start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until_answering(base, process, log_path)
        request_id = requests.get(f"{base}/no-route", timeout=10).headers["X-Request-Id"]
        process.send_signal(getattr(signal, service["KillSignal"][0]))
        assert process.wait(timeout=float(service["TimeoutStopSec"][0])) == 0
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    content = log_path.read_text(errors="replace")
    assert content.startswith("an earlier line\n") and request_id in content
    assert (root / "run" / "lockllm.wsgi").exists()  # Apache's files went where systemd removes them at stop
