"""What a streamed event waits inside mod_wsgi, by release and response-flush-delay: Debian's packaged mod_wsgi (no
such option) against the venv's 6.1 with its default (5 ms) and with 0, as `apache-config` and `serve` set it.

A tiny WSGI app in a daemon group yields --events chunks --interval ms apart, each carrying the time it was
yielded; the client notes when each arrives (same machine, same clock). No gateway, no provider: only mod_wsgi's
daemon-to-Apache hop is measured. Each configuration is its own Apache (own ServerRoot, a free port)::

    /opt/lockllm-venv/bin/python benchmarks/flush_delay.py [--streams 20] [--events 20] [--interval 20]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

APACHE2 = shutil.which("apache2") or shutil.which("apache2", path="/usr/sbin")
MODULES = "/usr/lib/apache2/modules"
DISTRO_MODULE = os.path.join(MODULES, "mod_wsgi.so")

APP = '''\
import time

def application(environ, start_response):
    count = int(environ.get("HTTP_X_EVENTS", "20"))
    interval = float(environ.get("HTTP_X_INTERVAL_MS", "20")) / 1000
    start_response("200 OK", [("Content-Type", "text/event-stream")])
    def events():
        for _ in range(count):
            yield ("data: %.6f\\n\\n" % time.time()).encode()
            time.sleep(interval)
    return events()
'''

CONF = """\
ServerRoot {root}
DefaultRuntimeDir {root}
PidFile {root}/httpd.pid
ErrorLog {root}/error.log
LogLevel warn
User www-data
Group www-data
ServerName 127.0.0.1
Listen 127.0.0.1:{port}
LoadModule mpm_event_module {modules}/mod_mpm_event.so
LoadModule authz_core_module {modules}/mod_authz_core.so
LoadModule wsgi_module {module}
WSGISocketPrefix {root}/wsgi
WSGIDaemonProcess bench processes=1 threads=4 {options}
WSGIScriptAlias /stream {root}/app.wsgi process-group=bench application-group=%{{GLOBAL}}
"""


def venv_module() -> str:
    express = shutil.which("mod_wsgi-express", path=os.path.dirname(sys.executable)) or "mod_wsgi-express"
    line = subprocess.run([express, "module-config"], check=True, capture_output=True, text=True).stdout
    return line.split("\n")[0].split(" ", 2)[2].strip('"')


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def one_stream(port: int, events: int, interval: float) -> list[float]:
    """Seconds from each event's yield in the daemon to its arrival here."""
    waits, buffer = [], b""
    with socket.create_connection(("127.0.0.1", port)) as connection:
        connection.sendall(f"GET /stream HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Events: {events}\r\n"
                           f"X-Interval-Ms: {interval}\r\nConnection: close\r\n\r\n".encode())
        while True:
            data = connection.recv(65536)
            arrived = time.time()
            if not data:
                break
            buffer += data
            while b"data: " in buffer and b"\n\n" in buffer[buffer.index(b"data: "):]:
                start = buffer.index(b"data: ")
                end = buffer.index(b"\n\n", start)
                waits.append(arrived - float(buffer[start + 6:end]))
                buffer = buffer[end + 2:]
    assert len(waits) == events, (len(waits), events)
    return waits


def measure(label: str, module: str, options: str, args: argparse.Namespace) -> list[str]:
    root = tempfile.mkdtemp(prefix="lockllm-flush-")
    os.chmod(root, 0o755)
    port = free_port()
    with open(os.path.join(root, "app.wsgi"), "w", encoding="utf-8") as handle:
        handle.write(APP)
    with open(os.path.join(root, "httpd.conf"), "w", encoding="utf-8") as handle:
        handle.write(CONF.format(root=root, port=port, modules=MODULES, module=module, options=options))
    server = subprocess.Popen([APACHE2, "-d", root, "-f", os.path.join(root, "httpd.conf"), "-DFOREGROUND"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                one_stream(port, 1, 0)
                break
            except (OSError, AssertionError, ValueError):
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit(f"{label}: Apache did not start; see {root}/error.log")
                time.sleep(0.2)
        for _ in range(5):
            one_stream(port, 3, 0)  # warm the daemon's threads
        first, rest = [], []
        for _ in range(args.streams):
            waits = one_stream(port, args.events, args.interval)
            first.append(waits[0])
            rest += waits[1:]
    finally:
        server.terminate()
        server.wait(timeout=20)
        shutil.rmtree(root, ignore_errors=True)

    def ms(values: list[float], q: int) -> str:
        return f"{statistics.quantiles(values, n=100)[q - 1] * 1000:.2f}" if len(values) > 1 else "-"
    return [label, ms(first, 50), ms(first, 99), ms(rest, 50), ms(rest, 99), f"{max(rest) * 1000:.2f}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--streams", type=int, default=20)
    parser.add_argument("--events", type=int, default=20)
    parser.add_argument("--interval", type=float, default=20.0, help="ms between events (default 20)")
    args = parser.parse_args()
    if not APACHE2:
        raise SystemExit("apache2 is not installed")
    configurations = []
    if os.path.exists(DISTRO_MODULE):
        configurations.append(("Debian mod_wsgi (no option)", DISTRO_MODULE, ""))
    module = venv_module()
    configurations += [("venv mod_wsgi, default delay", module, ""),
                       ("venv mod_wsgi, response-flush-delay=0", module, "response-flush-delay=0")]
    rows = [measure(label, path, options, args) for label, path, options in configurations]
    print(f"{args.streams} streams x {args.events} events {args.interval:g} ms apart; ms from the daemon's yield "
          "to the client's read")
    header = ["mod_wsgi", "first p50", "first p99", "next p50", "next p99", "next max"]
    widths = [max(len(str(row[i])) for row in rows + [header]) for i in range(len(header))]
    for row in [header] + rows:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)))


if __name__ == "__main__":
    main()
