"""/healthz, /readyz and /metrics: answered by the gateway itself, never relayed, right across processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from werkzeug.wrappers import Response

from lockllm_wsgi import create_app
from lockllm_wsgi.config import ConfigError, load_settings
from support.fakes import ATTACK, closed_port
from support.gateway import write_config

CHAT = "/openai/v1/chat/completions"
COMPLETION = {"id": "chatcmpl-1", "object": "chat.completion", "choices": []}
ROOT_ROUTE = "[route:everything]\nprefix = /\nupstream = {upstream}\nformat = openai\n"


def chat(gateway, text: str) -> requests.Response:
    return requests.post(gateway.url + CHAT, json={"model": "m", "messages": [{"role": "user", "content": text}]},
                         timeout=10)


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} from a Prometheus text exposition."""
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def scrape(gateway, request_log_lines, expected_requests: int) -> dict[tuple[str, tuple], float]:
    """The metrics once `expected_requests` requests are finished. A request is counted when the server closes its
    response, possibly after the client has its answer, and lockllm_requests_total comes first: the other series
    of the same request are complete once its request-log line, written last, is in."""
    assert request_log_lines.wait_for(expected_requests)
    return samples(requests.get(gateway.url + "/metrics", timeout=10).text)


@pytest.mark.parametrize("method, path, status", [
    pytest.param("GET", "/healthz", 200, id="healthz"),
    pytest.param("HEAD", "/healthz", 200, id="healthz-head"),
    pytest.param("GET", "/readyz", 200, id="readyz"),
    pytest.param("GET", "/metrics", 200, id="metrics"),
    pytest.param("POST", "/metrics", 405, id="metrics-post"),
])
def test_operator_endpoints_are_answered_and_never_relayed_even_under_a_root_route(make_gateway, provider, method,
                                                                                    path, status):
    gateway = make_gateway(ROOT_ROUTE.format(upstream=provider.url_for("").rstrip("/")))
    response = requests.request(method, gateway.url + path, timeout=10)
    assert response.status_code == status
    assert response.headers["Cache-Control"] == "no-store"
    assert provider.log == []


def test_endpoint_paths_are_configurable(make_gateway, provider):
    gateway = make_gateway("[ops]\nhealthz_path = /ops/live\nmetrics_path = /ops/metrics\n"
                           + ROOT_ROUTE.format(upstream=provider.url_for("").rstrip("/")))
    provider.expect_request("/healthz").respond_with_data("upstream")
    assert requests.get(gateway.url + "/ops/live", timeout=10).json() == {"status": "ok"}
    assert "lockllm_requests" in requests.get(gateway.url + "/ops/metrics", timeout=10).text
    assert requests.get(gateway.url + "/healthz", timeout=10).text == "upstream"  # no longer an operator path


def test_metrics_count_decisions_by_route_and_code_with_latencies_and_cache_hits(make_gateway, provider, tmp_path,
                                                                                  request_log_lines):
    provider.expect_request("/v1/chat/completions").respond_with_json(COMPLETION)
    gateway = make_gateway(scanner_extra=f"cache = sqlite:///{tmp_path}/cache.sqlite\n")
    chat(gateway, "hello")
    chat(gateway, "hello")  # the same text again: a cache hit
    chat(gateway, ATTACK)
    requests.post(gateway.url + CHAT, data=b"{", headers={"Content-Type": "application/json"}, timeout=10)
    values = scrape(gateway, request_log_lines, 4)
    requests_total = {labels: value for (name, labels), value in values.items() if name == "lockllm_requests_total"}
    assert requests_total == {
        (("code", "none"), ("decision", "allow"), ("route", "openai")): 2.0,
        (("code", "prompt_injection_detected"), ("decision", "block"), ("route", "openai")): 1.0,
        (("code", "invalid_json"), ("decision", "refused"), ("route", "openai")): 1.0,
    }
    assert values[("lockllm_scan_seconds_count", (("route", "openai"),))] == 3.0
    assert values[("lockllm_upstream_seconds_count", (("route", "openai"),))] == 2.0
    assert values[("lockllm_scan_cache_lookups_total", (("result", "hit"),))] == 1.0
    assert values[("lockllm_scan_cache_lookups_total", (("result", "miss"),))] == 2.0


def test_scanner_retries_are_counted(make_gateway, provider, scanner, request_log_lines):
    provider.expect_request("/v1/chat/completions").respond_with_json(COMPLETION)
    answers = iter([Response("busy", status=503), Response(json.dumps({"safe": True, "injection": 2}),
                                                          content_type="application/json")])
    scanner.clear()
    scanner.expect_request("/v1/scan").respond_with_handler(lambda request: next(answers))
    gateway = make_gateway()
    assert chat(gateway, "hello").status_code == 200
    assert scrape(gateway, request_log_lines, 1)[("lockllm_scanner_retries_total", ())] == 1.0


def test_readyz_reports_each_check(make_gateway, tmp_path):
    cache = tmp_path / "cache.sqlite"
    gateway = make_gateway(scanner_extra=f"cache = sqlite:///{cache}\n")
    assert requests.get(gateway.url + "/readyz", timeout=10).json() == {
        "status": "ready", "checks": {"config": "ok", "cache": "ok", "scanner": "ok", "permissions": "ok"}}
    for path in tmp_path.glob("cache.sqlite*"):
        path.unlink()  # the cache volume is gone
    response = requests.get(gateway.url + "/readyz", timeout=10)
    assert response.status_code == 503 and "OperationalError" in response.json()["checks"]["cache"]


def test_readyz_is_not_ready_when_the_scanner_cannot_be_reached(tmp_path, provider):
    settings = load_settings(write_config(tmp_path, f"http://127.0.0.1:{closed_port()}/v1/scan",
                                          provider.url_for("").rstrip("/")))
    statuses = []
    body = b"".join(create_app(settings)({"PATH_INFO": "/readyz", "REQUEST_METHOD": "GET"},
                                         lambda status, headers: statuses.append(status)))
    assert statuses == ["503 Service Unavailable"]
    assert "ConnectionError" in json.loads(body)["checks"]["scanner"]


def test_multiprocess_dir_must_be_set_before_prometheus_client_is_imported(tmp_path, provider, scanner):
    config = write_config(tmp_path, scanner.url_for("/v1/scan"), provider.url_for("").rstrip("/"),
                          f"[metrics]\nmultiprocess_dir = {tmp_path}/metrics\n")
    with pytest.raises(ConfigError, match="imported before"):
        create_app(config)  # this test process imported prometheus_client at the top


PROCESS = textwrap.dedent("""
    import sys
    from werkzeug.test import Client
    from lockllm_wsgi import create_app
    client = Client(create_app(sys.argv[1]))
    for _ in range(int(sys.argv[2])):
        client.post("/openai/v1/chat/completions", data=b"{", content_type="application/json").close()
    sys.stdout.write(client.get("/metrics").get_data(as_text=True))
""")


def test_metrics_add_up_across_daemon_processes(tmp_path, provider, scanner):
    config = write_config(tmp_path, scanner.url_for("/v1/scan"), provider.url_for("").rstrip("/"),
                          f"[metrics]\nmultiprocess_dir = {tmp_path}/metrics\n")
    for count in (3, 4):
        subprocess.run([sys.executable, "-c", PROCESS, config, str(count)], check=True, capture_output=True)
    scraped = subprocess.run([sys.executable, "-c", PROCESS, config, "0"], check=True, capture_output=True, text=True)
    key = ("lockllm_requests_total", (("code", "invalid_json"), ("decision", "refused"), ("route", "openai")))
    assert samples(scraped.stdout)[key] == 7.0


FAKE_MOD_WSGI = textwrap.dedent("""
    import sys, types
    sys.modules["mod_wsgi"] = types.SimpleNamespace(maximum_processes=int(sys.argv[3]), process_group="lockllm")
""")


@pytest.mark.parametrize("processes, expected", [pytest.param(2, 7.0, id="two-daemons-add-up"),
                                                 pytest.param(1, 0.0, id="one-daemon-reports-its-own")])
def test_several_mod_wsgi_daemons_share_metrics_by_default(tmp_path, provider, scanner, processes, expected):
    """No [metrics] multiprocess_dir: under mod_wsgi with more than one daemon process (children of one Apache
    parent, here of this test), a scrape still adds up every process's values."""
    config = write_config(tmp_path, scanner.url_for("/v1/scan"), provider.url_for("").rstrip("/"))
    environment = {**os.environ, "TMPDIR": str(tmp_path)}
    environment.pop("PROMETHEUS_MULTIPROC_DIR", None)
    for count in (3, 4):
        subprocess.run([sys.executable, "-c", FAKE_MOD_WSGI + PROCESS, config, str(count), str(processes)],
                       check=True, capture_output=True, env=environment)
    scraped = subprocess.run([sys.executable, "-c", FAKE_MOD_WSGI + PROCESS, config, "0", str(processes)],
                             check=True, capture_output=True, text=True, env=environment)
    key = ("lockllm_requests_total", (("code", "invalid_json"), ("decision", "refused"), ("route", "openai")))
    assert samples(scraped.stdout).get(key, 0.0) == expected
    shared = [name for name in os.listdir(tmp_path) if name.startswith("lockllm-metrics-")]
    assert shared == ([f"lockllm-metrics-{os.geteuid()}-{os.getpid()}"] if processes > 1 else [])


def test_a_default_folder_someone_else_made_is_not_used(tmp_path, monkeypatch):
    import types

    from lockllm_wsgi import metrics

    monkeypatch.setitem(sys.modules, "mod_wsgi", types.SimpleNamespace(maximum_processes=2))
    monkeypatch.setattr(metrics.tempfile, "gettempdir", lambda: str(tmp_path))
    planted = tmp_path / f"lockllm-metrics-{os.geteuid()}-{os.getppid()}"
    planted.mkdir(mode=0o777)
    planted.chmod(0o777)
    assert metrics.default_multiprocess_dir() is None
    planted.rmdir()
    planted.symlink_to(tmp_path)
    assert metrics.default_multiprocess_dir() is None
