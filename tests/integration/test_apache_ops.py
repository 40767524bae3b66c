"""Day-one operations under real Apache: `lockllm-wsgi serve` appends to its log file, a daemon that cannot load
its settings answers JSON, and every answer a client gets is JSON labelled as JSON."""

from __future__ import annotations

import contextlib
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time
from typing import Iterator

import pytest
import requests

from lockllm_wsgi.apache_config import code_dir

from support.apache_servers import (free_port, missing_tools, public_folder, running_apache2, running_express, stop,
                                    wait_until_answering)
from support.gateway import write_config

MISSING = missing_tools()
pytestmark = [pytest.mark.apache, pytest.mark.skipif(MISSING is not None, reason=MISSING or "")]


@pytest.fixture
def folder():
    root = public_folder("lockllm-ops-")
    yield pathlib.Path(root)
    shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def serving(config: str, root: pathlib.Path, log_path: pathlib.Path, *extra: str) -> Iterator[str]:
    """`lockllm-wsgi serve` (this checkout's) with stdout and stderr appended to `log_path`, as `>>` does."""
    port = free_port()
    command = [sys.executable, "-m", "lockllm_wsgi.cli", "serve", "--config", config, "--port", str(port),
               "--processes", "1", "--threads", "4", "--server-root", str(root / "express"), *extra]
    environment = {**os.environ, "PYTHONPATH": code_dir()}
    with open(log_path, "ab") as log:
        process = subprocess.Popen(command, stdout=log, stderr=log, env=environment, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_answering(base, process, log_path)
        yield base
    finally:
        stop(process)


def wait_for_text(path: pathlib.Path, text: str, timeout: float = 10) -> str:
    deadline = time.monotonic() + timeout
    while True:
        content = path.read_text(errors="replace")
        if text in content or time.monotonic() > deadline:
            return content
        time.sleep(0.1)


def test_serve_appends_to_the_file_its_stderr_is_redirected_to(folder, scanner_server, provider_server):
    config = write_config(folder, scanner_server.url_for("/v1/scan"), provider_server.url_for("").rstrip("/"))
    log_path = folder / "gateway.log"
    log_path.write_text("an earlier line\n")
    request_ids = []
    for _run in range(2):
        with serving(config, folder, log_path) as base:
            request_ids.append(requests.get(f"{base}/no-route", timeout=10).headers["X-Request-Id"])
            wait_for_text(log_path, request_ids[-1])
    content = log_path.read_text(errors="replace")
    assert content.startswith("an earlier line\n")
    assert all(request_id in content for request_id in request_ids)


def test_serve_log_file_option_appends_there(folder, scanner_server, provider_server):
    config = write_config(folder, scanner_server.url_for("/v1/scan"), provider_server.url_for("").rstrip("/"))
    named = folder / "logs" / "lockllm.log"
    named.parent.mkdir()
    named.write_text("kept\n")
    with serving(config, folder, folder / "terminal.log", "--log-file", str(named)) as base:
        request_id = requests.get(f"{base}/no-route", timeout=10).headers["X-Request-Id"]
        content = wait_for_text(named, request_id)
    assert content.startswith("kept\n") and request_id in content


def graceful(gateway, root: pathlib.Path) -> None:
    """What `apachectl -k graceful` does: SIGUSR1 to the parent."""
    pid_file = root / "express" / "httpd.pid" if gateway.name == "express" else root / "apache2" / "run" / "httpd.pid"
    os.kill(int(pid_file.read_text().strip()), signal.SIGUSR1)


@pytest.mark.parametrize("start", [running_express, running_apache2], ids=["express", "apache2"])
def test_a_bad_ini_file_after_a_graceful_restart_is_answered_in_json(folder, scanner_server, provider_server, start):
    config = write_config(folder, scanner_server.url_for("/v1/scan"), provider_server.url_for("").rstrip("/"))
    with start(config, str(folder)) as gateway:
        good = pathlib.Path(config).read_text()
        pathlib.Path(config).write_text(good.replace("timeout = 3", "timeout = soon"))
        graceful(gateway, folder)
        deadline, response = time.monotonic() + 30, None
        while (left := deadline - time.monotonic()) > 0:
            # A request waits for the new daemons (seconds after the signal): giving up sooner only asks again.
            with contextlib.suppress(requests.RequestException):
                response = requests.get(f"{gateway.base}/healthz", verify=gateway.verify, timeout=left)
                if response.status_code == 503 and b"gateway_misconfigured" in response.content:
                    break
            time.sleep(0.3)
        assert response is not None and response.status_code == 503, response and response.text
        assert response.headers["Content-Type"] == "application/json"
        assert "[scanner] timeout" in response.json()["error"]["message"]
        chat = requests.post(f"{gateway.base}/openai/v1/chat/completions", verify=gateway.verify, timeout=10,
                             json={"model": "m", "messages": [{"role": "user", "content": "hi"}]})
        assert chat.status_code == 503 and chat.json()["error"]["code"] == "gateway_misconfigured"
        assert wait_for_text(pathlib.Path(gateway.error_log), '"event": "unavailable"').count(
            '"event": "unavailable"') >= 1


MAX_BODY = 64 * 1024


@pytest.fixture(scope="module", params=["express", "apache2"])
def small_cap_gateway(request, scanner_server, provider_server):
    """The module's server of each kind, with a 64 KiB body cap: for the body-limit and error-document tests, and
    the metrics test, which counts only the requests it sends."""
    root = public_folder("lockllm-json-")
    config = write_config(pathlib.Path(root), scanner_server.url_for("/v1/scan"),
                          provider_server.url_for("").rstrip("/"), extra=f"[limits]\nmax_body_bytes = {MAX_BODY}\n")
    start = running_express if request.param == "express" else running_apache2
    with start(config, root) as gateway:
        yield gateway
    shutil.rmtree(root, ignore_errors=True)


def requests_counted(text: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    return sum(sample.value for family in text_string_to_metric_families(text) for sample in family.samples
               if sample.name == "lockllm_requests_total" and sample.labels.get("code") == "unknown_route")


def test_metrics_add_up_across_daemons_without_a_multiprocess_dir(small_cap_gateway):
    gateway = small_cap_gateway
    with requests.Session() as session:
        before = requests_counted(session.get(f"{gateway.base}/metrics", verify=gateway.verify, timeout=10).text)
        for _ in range(20):
            # A new connection each time, so both daemon processes answer some.
            requests.get(f"{gateway.base}/no-route", verify=gateway.verify, timeout=10)

        def scrape() -> float:
            return requests_counted(requests.get(f"{gateway.base}/metrics", verify=gateway.verify, timeout=10).text)

        # Each request is counted when the server has closed its response, which can be just after the client
        # read it: wait for the count, then every scrape, whichever daemon answers it, must show all of them.
        deadline = time.monotonic() + 10
        while scrape() < before + 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        scrapes = {scrape() for _ in range(6)}
    assert scrapes == {before + 20}


def _chunks(size: int):
    yield b'{"model": "m", "messages": [{"role": "user", "content": "'
    for _ in range(size // 8192):
        yield b"x" * 8192
    yield b'"}]}'


@pytest.mark.parametrize("chunked", [pytest.param(True, id="chunked"), pytest.param(False, id="content-length")])
def test_a_body_over_apaches_limit_gets_one_json_413_labelled_json(small_cap_gateway, scanner, provider, chunked):
    """Over LimitRequestBody (the app's cap + 1 MiB): with a Content-Length Apache refuses it unread, with its
    JSON document; a chunked one is read to its end and refused by the app (no HTML 500 page appended)."""
    from lockllm_wsgi.apache_config import BODY_LIMIT_MARGIN_BYTES

    size = MAX_BODY + BODY_LIMIT_MARGIN_BYTES + 512 * 1024
    body = _chunks(size) if chunked else b"".join(_chunks(size))
    answer = requests.post(f"{small_cap_gateway.base}/openai/v1/chat/completions", data=body, timeout=30,
                           verify=small_cap_gateway.verify, headers={"Content-Type": "application/json"})
    assert answer.status_code == 413
    assert answer.headers["Content-Type"] == "application/json"
    assert answer.json()["error"]["code"] == "request_too_large"  # one JSON document, nothing after it
    assert scanner.log == [] and provider.log == []


@pytest.mark.parametrize("status", [413, 502, 503])
def test_apaches_own_error_documents_are_labelled_json(small_cap_gateway, status):
    base = small_cap_gateway.base.rsplit("/llm", 1)[0]
    answer = requests.get(f"{base}/lockllm-errors/{status}.json", verify=small_cap_gateway.verify, timeout=10)
    assert answer.status_code == 200 and answer.headers["Content-Type"] == "application/json"
    assert answer.json()["error"]["code"] in ("request_too_large", "gateway_unavailable")


def test_a_folder_the_daemons_cannot_write_is_named_with_its_fix(folder, scanner_server, provider_server):
    """Checked as the user the daemons run as (www-data), not as root who starts Apache: the Include path's
    daemons say so at start and in /readyz; `serve` refuses to start."""
    audit = folder / "audit"
    audit.mkdir(mode=0o755)  # root's: the daemons can enter it, not write in it
    config = write_config(folder, scanner_server.url_for("/v1/scan"), provider_server.url_for("").rstrip("/"),
                          extra=f"[audit]\npath = {audit}/audit.log\n")
    with running_apache2(config, str(folder)) as gateway:
        ready = requests.get(f"{gateway.base}/readyz", verify=gateway.verify, timeout=10)
        assert ready.status_code == 503
        assert f"chown www-data:www-data {audit}" in ready.json()["checks"]["permissions"]
        assert '"event": "permission_problem"' in wait_for_text(pathlib.Path(gateway.error_log), "permission_problem")
    with pytest.raises(SystemExit, match=f"chown www-data:www-data {audit}"):
        running_express(config, str(folder)).__enter__()
