"""A daemon that cannot build the gateway (a bad INI file after a graceful restart) answers every request, the
operator endpoints included, with a JSON 503 naming the problem, logged once; the import never fails."""

from __future__ import annotations

import logging
import threading

import openai
import pytest
from werkzeug.serving import make_server
from werkzeug.test import Client

from lockllm_wsgi import wsgi_application
from lockllm_wsgi.unavailable import UnavailableApp

BAD_INI = "[scanner]\ntimeout = soon\n\n[route:openai]\nprefix = /openai\nupstream = https://api.openai.com\n" \
          "format = openai\n"


@pytest.fixture
def events():
    """The JSON events the gateway logs, as text."""
    seen: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger("lockllm_wsgi.requests")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield seen
    logger.removeHandler(handler)
    logger.setLevel(level)


@pytest.fixture
def broken(tmp_path):
    path = tmp_path / "lockllm.ini"
    path.write_text(BAD_INI)
    return str(path)


@pytest.mark.parametrize("method, path", [
    pytest.param("GET", "/healthz", id="healthz"),
    pytest.param("GET", "/readyz", id="readyz"),
    pytest.param("GET", "/metrics", id="metrics"),
    pytest.param("POST", "/openai/v1/chat/completions", id="chat"),
    pytest.param("GET", "/anything/else", id="unknown-path"),
])
def test_every_request_gets_a_json_503_naming_the_problem(broken, method, path):
    response = Client(wsgi_application(broken)).open(path, method=method, json={"model": "m"})
    assert response.status_code == 503
    assert response.headers["Content-Type"] == "application/json"
    error = response.get_json()["error"]
    assert error["code"] == "gateway_misconfigured"
    assert "[scanner] timeout" in error["message"] and broken in error["message"]
    assert response.headers["X-Request-Id"] in error["message"]


def test_the_problem_is_logged_once(broken, events):
    client = Client(wsgi_application(broken))
    for _ in range(3):
        client.get("/healthz")
    logged = [event for event in events if '"event": "unavailable"' in event]
    assert len(logged) == 1 and "[scanner] timeout" in logged[0]


def test_an_unexpected_failure_names_only_its_type():
    """An error that is not a ConfigError may quote a URL with a password: the client sees its type only."""
    app = UnavailableApp(OSError("redis://:secret@host failed"))
    message = Client(app).get("/healthz").get_json()["error"]["message"]
    assert "OSError" in message and "secret" not in message


def test_a_good_configuration_builds_the_gateway(tmp_path):
    path = tmp_path / "lockllm.ini"
    path.write_text(BAD_INI.replace("timeout = soon", "timeout = 5"))
    app = wsgi_application(str(path))
    assert not isinstance(app.current, UnavailableApp)
    assert Client(app).get("/healthz").status_code == 200
    app.current.close()


def test_the_openai_sdk_reads_it(broken):
    server = make_server("127.0.0.1", 0, wsgi_application(broken), threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{server.server_port}/openai/v1", api_key="sk-x",
                               max_retries=0)
        with pytest.raises(openai.InternalServerError) as raised:
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
        assert raised.value.status_code == 503 and raised.value.code == "gateway_misconfigured"
    finally:
        server.shutdown()
        server.server_close()
