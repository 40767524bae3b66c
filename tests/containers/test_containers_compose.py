"""The container images and compose.yaml: containers/build-images builds the base image with debootstrap (no
registry), the gateway and Redis; podman-compose starts the shipped compose.yaml, unchanged, with two gateway
replicas and Redis on its bridge network, the test's INI file and certificate mounted and the LockLLM key in the
environment. The openai SDK talks to the replicas over HTTPS; the fake scanner and provider run in this process,
reached from the containers through the host's bridge address."""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import shutil
import ssl
import subprocess
import threading
import uuid

import openai
import pytest
import requests
from werkzeug.wrappers import Response

from support.apache_servers import free_port, public_folder, self_signed_certificate
from support.containers import (GATEWAY_IMAGE, Compose, build_images, logs, missing_container_tools, podman,
                                podman_environment, wait_until)
from support.fakes import ATTACK, COMPLETION, FakeServer, scanner_verdict
from support.gateway import write_config

MISSING = missing_container_tools()
# Not in the default run (setup.cfg): `pytest -m containers -n 0`, one process, one image build, one compose project.
pytestmark = [pytest.mark.containers, pytest.mark.skipif(MISSING is not None, reason=MISSING or "")]

# How the containers reach this machine: podman names the host's address on each bridge network so.
HOST_FROM_CONTAINERS = "host.containers.internal"
# The container's www-data, which must read the mounted INI file and certificate.
CONTAINER_USER_ID = 33
PROVIDER_KEY = "sk-provider-canary-containers-9"
# Only in the environment, never in the INI file (which carries support.fakes.SCANNER_KEY): the scanner seeing
# this one shows the variable reached the mod_wsgi daemons and wins over the file.
ENVIRONMENT_KEY = "llm-from-the-container-environment-0002"
STOP_GRACE_SECONDS = 20
REPLICAS = ("gateway-1", "gateway-2")




@pytest.fixture(scope="module")
def fakes():
    """The scanner and provider, on every address of this machine: containers come from their bridge network."""
    scanner, provider = FakeServer(host="0.0.0.0"), FakeServer(host="0.0.0.0")
    scanner.start()
    provider.start()
    yield scanner, provider
    scanner.stop()
    provider.stop()


@pytest.fixture(scope="module")
def stack(fakes):
    scanner, provider = fakes
    build_images()
    root = public_folder("lockllm-compose-")
    config = write_config(
        pathlib.Path(root), f"http://{HOST_FROM_CONTAINERS}:{scanner.port}/v1/scan",
        f"http://{HOST_FROM_CONTAINERS}:{provider.port}", scanner_extra="cache = redis://redis:6379/0\n")
    os.chmod(config, 0o644)
    tls = os.path.join(root, "tls")
    os.makedirs(tls, mode=0o755)
    cert, key = self_signed_certificate(tls)
    os.rename(cert, os.path.join(tls, "tls.crt"))
    os.rename(key, os.path.join(tls, "tls.key"))
    os.chown(os.path.join(tls, "tls.key"), CONTAINER_USER_ID, CONTAINER_USER_ID)  # 0600, as a key should be
    ports = {replica: free_port() for replica in REPLICAS}
    env = {"LOCKLLM_CONFIG": config, "LOCKLLM_TLS_DIR": tls, "LOCKLLM_API_KEY": ENVIRONMENT_KEY,
           "LOCKLLM_PORT_1": str(ports["gateway-1"]), "LOCKLLM_PORT_2": str(ports["gateway-2"]),
           "LOCKLLM_STOP_GRACE": str(STOP_GRACE_SECONDS)}
    compose = Compose(f"lockllm-test-{uuid.uuid4().hex[:8]}", env)
    with compose:
        compose.bases = {replica: f"https://127.0.0.1:{port}" for replica, port in ports.items()}
        compose.ca_file = os.path.join(tls, "tls.crt")
        for replica in REPLICAS:
            wait_until(lambda replica=replica: _ready(compose, replica), f"{replica} to be ready", timeout=90)
        yield compose
    leftovers = compose.leftovers()
    shutil.rmtree(root, ignore_errors=True)
    assert leftovers == [], f"compose down left {leftovers} behind"


@pytest.fixture
def scanner(fakes):
    server = fakes[0]
    server.clear()
    server.expect_request("/v1/scan", method="POST").respond_with_handler(scanner_verdict)
    yield server
    server.clear()


@pytest.fixture
def provider(fakes):
    server = fakes[1]
    server.clear()
    yield server
    server.clear()


def _ready(stack: Compose, replica: str) -> bool:
    try:
        return requests.get(f"{stack.bases[replica]}/readyz", verify=stack.ca_file, timeout=5).status_code == 200
    except requests.RequestException:
        return False


def sdk(stack: Compose, replica: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.bases[replica]}/openai/v1", api_key=PROVIDER_KEY, max_retries=0,
                         timeout=30, http_client=openai.DefaultHttpxClient(
                             verify=ssl.create_default_context(cafile=stack.ca_file)))


def unique(text: str) -> str:
    return f"{text} [{uuid.uuid4().hex[:8]}]"


def scans_of(scanner, text: str) -> list:
    """The scan calls that judged `text` (the scanner also gets the readiness probes' HEAD /)."""
    return [request for request, _ in scanner.log
            if request.path == "/v1/scan" and json.loads(request.get_data())["input"] == text]


def test_a_relayed_chat_over_https_scanned_with_the_key_from_the_environment_and_logged_to_stderr(stack, scanner,
                                                                                                   provider):
    provider.expect_request("/v1/chat/completions", method="POST").respond_with_json(COMPLETION)
    text = unique("Say hello")
    with sdk(stack, "gateway-1") as client:
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-test", messages=[{"role": "user", "content": text}])
    assert raw.parse().choices[0].message.content == "Hello!"
    (received, _), = provider.log
    assert received.headers["Authorization"] == f"Bearer {PROVIDER_KEY}"
    (scan,) = scans_of(scanner, text)
    assert scan.headers["Authorization"] == f"Bearer {ENVIRONMENT_KEY}"
    request_id = raw.headers["x-lockllm-request-id"]
    line = wait_until(lambda: next((line for line in logs(stack.container("gateway-1")).splitlines()
                                    if f'"request_id": "{request_id}"' in line), None), "the request's log line")
    assert '"decision": "allow"' in line and text not in line and ENVIRONMENT_KEY not in line


def _chunk(content: str) -> str:
    return "data: " + json.dumps({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
                                  "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": None}]}) \
        + "\n\n"


def held_stream(first: str, rest: list[str], release: threading.Event, released: list[bool]):
    """A provider handler streaming `first`, then, once `release` is set, `rest` and [DONE]; `released` gets
    whether the release came (False: it waited STOP_GRACE_SECONDS in vain)."""
    def handler(_request):
        def events():
            yield _chunk(first)
            released.append(release.wait(STOP_GRACE_SECONDS))
            yield from (_chunk(content) for content in rest)
            yield "data: [DONE]\n\n"
        return Response(events(), content_type="text/event-stream")
    return handler


def test_a_streamed_chat_arrives_event_by_event(stack, scanner, provider):
    release, released = threading.Event(), []
    provider.expect_request("/v1/chat/completions", method="POST").respond_with_handler(
        held_stream("Hel", ["lo"], release, released))
    pieces = []
    with sdk(stack, "gateway-2") as client:
        for chunk in client.chat.completions.create(model="gpt-test", stream=True,
                                                    messages=[{"role": "user", "content": unique("Stream")}]):
            pieces.append(chunk.choices[0].delta.content)
            release.set()  # the provider sends the rest only once the client holds the first token
    assert pieces == ["Hel", "lo"] and released == [True]


def test_an_injection_is_refused_with_the_sdk_error_and_never_relayed(stack, scanner, provider):
    with sdk(stack, "gateway-2") as client, pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": unique(ATTACK)}])
    assert caught.value.code == "prompt_injection_detected"
    assert provider.log == []


def _verdicts_in_redis(stack: Compose) -> int:
    keys = podman("exec", stack.container("redis"), "redis-cli", "--scan", "--pattern", "lockllm_wsgi:verdicts*")
    return len(keys.stdout.split())


def test_a_verdict_one_replica_paid_for_answers_the_other_through_redis(stack, scanner, provider):
    provider.expect_request("/v1/chat/completions", method="POST").respond_with_json(COMPLETION)
    text = unique("Summarise the meeting notes")
    stored = _verdicts_in_redis(stack)
    with sdk(stack, "gateway-1") as client:
        client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": text}])
    # The verdict is stored after the answer, by the replica's cache writer thread.
    wait_until(lambda: _verdicts_in_redis(stack) > stored, "the verdict to reach Redis")
    with sdk(stack, "gateway-2") as client:
        client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": text}])
    assert len(scans_of(scanner, text)) == 1
    assert len(provider.log) == 2


def _refused(stack: Compose, replica: str) -> bool:
    try:
        requests.get(f"{stack.bases[replica]}/healthz", verify=stack.ca_file, timeout=5)
    except requests.ConnectionError:
        return True
    return False


def test_sigterm_lets_a_running_stream_finish_then_the_replica_exits(stack, scanner, provider):
    replica = stack.container("gateway-2")
    release, released = threading.Event(), []
    provider.expect_request("/v1/chat/completions", method="POST").respond_with_handler(
        held_stream("0", ["1", "2"], release, released))
    pieces, stopping = [], None
    try:
        with sdk(stack, "gateway-2") as client:
            for chunk in client.chat.completions.create(model="gpt-test", stream=True,
                                                        messages=[{"role": "user", "content": unique("Count")}]):
                pieces.append(chunk.choices[0].delta.content)
                if stopping is None:
                    # SIGTERM, then a kill once the container's stop timeout (compose's stop_grace_period) is over.
                    stopping = subprocess.Popen(["podman", "stop", replica], env=podman_environment(),
                                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                    wait_until(lambda: "shutting down gracefully" in logs(replica), "Apache's graceful stop")
                    # New connections are refused at once: a load balancer takes the replica out.
                    wait_until(lambda: _refused(stack, "gateway-2"), "the stopping replica to refuse connections")
                    release.set()  # only now does the provider send the rest of the stream
        assert pieces == ["0", "1", "2"] and released == [True]
        assert stopping.wait(timeout=STOP_GRACE_SECONDS + 30) == 0, stopping.stderr.read()
        # Apache's own graceful exit once the stream ended, not the engine's kill after its stop timeout (137).
        assert podman("inspect", "--format", "{{.State.ExitCode}}", replica).stdout.strip() == "0"
        assert "Apache exited (0)" in logs(replica)
    finally:
        release.set()
        if stopping is not None:
            stopping.wait(timeout=STOP_GRACE_SECONDS + 30)
            stopping.stderr.close()
        podman("start", replica)
        wait_until(lambda: _ready(stack, "gateway-2"), "gateway-2 to be back", timeout=90)


def test_the_healthcheck_asks_readyz_and_every_process_runs_as_www_data(stack):
    replica = stack.container("gateway-1")
    configured = json.loads(podman("image", "inspect", GATEWAY_IMAGE).stdout)[0]["Healthcheck"]
    assert configured["Test"] == ["CMD", "/opt/lockllm/healthcheck"]
    assert podman("healthcheck", "run", replica, check=False).returncode == 0  # 1: unhealthy, 125: none defined
    assert '200 {"status": "ready"' in podman("exec", replica, "/opt/lockllm/healthcheck").stdout
    users = podman("top", replica, "user").stdout.split()[1:]
    assert users and set(users) == {"www-data"}


def test_without_a_mounted_certificate_a_self_signed_one_is_made_and_announced(stack):
    port = free_port()
    container = f"{stack.project}-selfsigned"
    podman("run", "-d", "--name", container, "-p", f"127.0.0.1:{port}:8443", GATEWAY_IMAGE)
    try:
        wait_until(lambda: "resuming normal operations" in logs(container), "Apache to start")
        served = ssl.PEM_cert_to_DER_cert(ssl.get_server_certificate(("127.0.0.1", port)))
        fingerprint = ":".join(f"{byte:02X}" for byte in hashlib.sha256(served).digest())
        announced = logs(container)
        assert "SELF-SIGNED" in announced and fingerprint in announced
    finally:
        podman("rm", "-f", container)
