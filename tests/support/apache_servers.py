"""The gateway under real Apache for the integration tests: mod_wsgi-express started by `express_command` (what
`lockllm-wsgi serve` runs) and a system apache2 whose HTTPS vhost is the shipped apache/lockllm-vhost.conf,
with a throwaway certificate, plus a raw-socket provider that notices when the gateway hangs up.

    with running_apache2(config_path, root) as gateway:
        requests.get(f"{gateway.base}/openai/v1/models", verify=gateway.verify)
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import pwd
import queue
import select
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Iterator

import requests

from lockllm_wsgi.apache_config import TEMPLATE_DIR, install_values, server_config, write_script
from lockllm_wsgi.config import load_settings
from lockllm_wsgi.express import express_command
from support.rawserver import RawServer, read_request

APACHE2 = shutil.which("apache2") or shutil.which("apache2", path="/usr/sbin")
APACHE_MODULES = "/usr/lib/apache2/modules"
WORKER_USER = "www-data"
PROCESSES, THREADS = 2, 6
START_SECONDS = 45
# How often a starting server is asked whether it answers yet: it is ready within a second or two, and each probe
# costs it next to nothing.
READY_POLL_SECONDS = 0.05


def missing_express() -> str | None:
    """Why mod_wsgi-express cannot run here (looked up as lockllm_wsgi.express does), or None."""
    if not shutil.which("mod_wsgi-express", path=os.path.dirname(sys.executable)) and not shutil.which(
            "mod_wsgi-express"):
        return "mod_wsgi-express is not installed (pip install 'lockllm-wsgi[apache]')"
    return None


def missing_tools() -> str | None:
    """Why the Apache tests cannot run here, or None."""
    if not APACHE2:
        return "apache2 is not installed (apt-get install apache2 apache2-dev)"
    if missing_express():
        return missing_express()
    if not shutil.which("openssl"):
        return "openssl is not installed"
    return None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def public_folder(prefix: str) -> str:
    """A temp folder Apache's workers can enter (pytest's tmp_path is 0700 under root)."""
    folder = tempfile.mkdtemp(prefix=prefix)
    os.chmod(folder, 0o755)
    return folder


def worker_owned_folder(path: str) -> str:
    """A 0700 folder owned by the worker user, as the docs ask for the verdict cache."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    if os.geteuid() == 0:
        entry = pwd.getpwnam(WORKER_USER)
        os.chown(path, entry.pw_uid, entry.pw_gid)
    return path


def self_signed_certificate(folder: str) -> tuple[str, str]:
    cert, key = os.path.join(folder, "cert.pem"), os.path.join(folder, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout", key, "-out", cert],
                   check=True, capture_output=True)
    return cert, key


@functools.cache
def loopback_certificate() -> tuple[str, str]:
    """One throwaway certificate for 127.0.0.1 per test process, for every HTTPS server it starts: making an RSA
    key costs a few tenths of a second of CPU, and no test depends on a server's certificate being its own."""
    folder = public_folder("lockllm-tls-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return self_signed_certificate(folder)


@dataclass
class RunningGateway:
    name: str
    base: str  # URL of the mount point: routes follow (/openai/v1/...)
    ca_file: str | None  # the throwaway certificate to trust, for HTTPS
    error_log: str
    http_base: str | None = None  # the plain-HTTP vhost, where there is one

    @property
    def verify(self) -> str | bool:
        """For requests."""
        return self.ca_file or True

    @property
    def tls(self) -> ssl.SSLContext | bool:
        """For the openai SDK's HTTP client, which deprecates a path."""
        return ssl.create_default_context(cafile=self.ca_file) if self.ca_file else True

    def log_text(self) -> str:
        with open(self.error_log, encoding="utf-8", errors="replace") as handle:
            return handle.read()


def wait_until_answering(base: str, process: subprocess.Popen, log_path: str | os.PathLike, verify: str | bool = True
                         ) -> None:
    """Until the app itself answers at `base` (its X-Request-Id header), or fail with the server's log."""
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline and process.poll() is None:
        with contextlib.suppress(requests.RequestException):
            if "x-request-id" in requests.get(f"{base}/not-a-route", verify=verify, timeout=5).headers:
                return
        time.sleep(READY_POLL_SECONDS)
    with open(log_path, encoding="utf-8", errors="replace") as handle:
        raise RuntimeError(f"the server at {base} did not start:\n{handle.read()[-4000:]}")


@contextlib.contextmanager
def _supervised(command: list[str], gateway: RunningGateway, output: str) -> Iterator[RunningGateway]:
    with open(output, "ab") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until_answering(gateway.base, process, gateway.error_log, gateway.verify)
        yield gateway
    finally:
        stop(process)


def stop(process: subprocess.Popen) -> None:
    """Stop a server started in its own session: politely, then its whole process group."""
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, 9)
        process.wait()


@contextlib.contextmanager
def running_express(config_path: str, root: str) -> Iterator[RunningGateway]:
    """mod_wsgi-express from the same code path as `lockllm-wsgi serve`."""
    port = free_port()
    command = express_command(load_settings(config_path), config_path, host="127.0.0.1", port=port,
                              processes=PROCESSES, threads=THREADS, server_root=os.path.join(root, "express"))
    output = os.path.join(root, "express.log")
    gateway = RunningGateway("express", f"http://127.0.0.1:{port}", None, output)
    with _supervised(command, gateway, output) as running:
        yield running


# What Debian's apache2.conf would give a test's server: its own root, ports, user and the usual modules, with
# compression on for what many servers compress (the location snippet must keep the gateway's streams out of it).
SERVER_BASE_CONF = """\
ServerRoot {root}
DefaultRuntimeDir {root}/run
PidFile {root}/run/httpd.pid
ErrorLog {root}/error.log
LogLevel warn
LogFormat "%h %l %u %t \\"%r\\" %>s %b \\"%{{Referer}}i\\" \\"%{{User-Agent}}i\\"" combined
User {user}
Group {user}
ServerName 127.0.0.1
Listen 127.0.0.1:{http_port}
Listen 127.0.0.1:{https_port}
LoadModule mpm_event_module {modules}/mod_mpm_event.so
StartServers 1
LoadModule authz_core_module {modules}/mod_authz_core.so
LoadModule alias_module {modules}/mod_alias.so
LoadModule env_module {modules}/mod_env.so
LoadModule socache_shmcb_module {modules}/mod_socache_shmcb.so
LoadModule ssl_module {modules}/mod_ssl.so
LoadModule filter_module {modules}/mod_filter.so
LoadModule deflate_module {modules}/mod_deflate.so
AddOutputFilterByType DEFLATE text/event-stream application/json text/plain
"""
# The test's server: the base, then the shipped lockllm files unchanged.
_HTTPD_CONF = SERVER_BASE_CONF + """\
WSGISocketPrefix {root}/run/wsgi
Include {root}/lockllm.conf
Include {templates}/lockllm-vhost.conf
"""


@contextlib.contextmanager
def running_apache2(config_path: str, root: str) -> Iterator[RunningGateway]:
    """A system apache2 with its own ServerRoot whose HTTPS vhost is the shipped lockllm-vhost.conf."""
    root = os.path.join(root, "apache2")
    os.makedirs(os.path.join(root, "run"), mode=0o755)
    cert, key = loopback_certificate()
    http_port, https_port = free_port(), free_port()
    script = write_script(os.path.join(root, "lockllm.wsgi"), config_path)
    values = install_values(load_settings(config_path), script, prefix="/llm", processes=PROCESSES, threads=THREADS,
                            user=WORKER_USER)
    values.update(LOCKLLM_SERVER_NAME="127.0.0.1", LOCKLLM_HTTP_PORT=str(http_port),
                  LOCKLLM_HTTPS_PORT=str(https_port), LOCKLLM_TLS_CERT=cert, LOCKLLM_TLS_KEY=key, LOCKLLM_LOG_DIR=root)
    with open(os.path.join(root, "lockllm.conf"), "w", encoding="utf-8") as handle:
        handle.write(server_config(values))
    conf = os.path.join(root, "httpd.conf")
    with open(conf, "w", encoding="utf-8") as handle:
        handle.write(_HTTPD_CONF.format(root=root, user=WORKER_USER, http_port=http_port, https_port=https_port,
                                        modules=APACHE_MODULES, templates=TEMPLATE_DIR))
    gateway = RunningGateway("apache2", f"https://127.0.0.1:{https_port}/llm", cert,
                             os.path.join(root, "lockllm-error.log"), http_base=f"http://127.0.0.1:{http_port}/llm")
    open(gateway.error_log, "a").close()
    with _supervised([APACHE2, "-d", root, "-f", conf, "-DFOREGROUND"], gateway,
                     os.path.join(root, "stderr.log")) as running:
        yield running


class DrippingProvider(RawServer):
    """A provider on a raw socket: answers every request with an endless event stream, one event per 50 ms, and
    puts on `hangups` the time.monotonic() at which it saw the gateway close the connection."""

    INTERVAL = 0.05
    GIVE_UP_SECONDS = 30

    def __init__(self) -> None:
        self.hangups: queue.Queue[float] = queue.Queue()
        super().__init__(self._answer)

    def _answer(self, connection: socket.socket) -> None:
        read_request(connection)
        connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n")
        started = time.monotonic()
        while time.monotonic() - started < self.GIVE_UP_SECONDS:
            try:
                readable, _, _ = select.select([connection], [], [], 0)
                if readable and not connection.recv(1):
                    break  # the gateway closed its end
                connection.sendall(b'data: {"choices": [{"index": 0, "delta": {"content": "tok"}}]}\n\n')
            except OSError:
                break  # reset: the gateway is gone
            time.sleep(self.INTERVAL)
        self.hangups.put(time.monotonic())
