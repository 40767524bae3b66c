"""Shared pieces of the benchmarks: fake scanner and provider, servers for the gateway and a bare relay, load.

Every server runs in its own process (the fakes, werkzeug or mod_wsgi-express), so the load generator in the
benchmark's own process does not share a GIL with what it measures::

    with Stack() as stack:                      # fake scanner + fake provider, each in a subprocess
        gw = stack.serve("gateway", mode="express")
        lat = open_loop(gw.url + "/openai/v1/chat/completions", chat_body, rate=50, count=200)

Run as a script, this module is the subprocess side: `_harness.py scanner|provider|werkzeug ...`.
"""

from __future__ import annotations

import http.client
import json
import os
import queue
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import textwrap
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable
# Apache's workers run as www-data: everything they read lives here, world-readable.
WORK_ROOT = "/var/tmp/lockllm-bench"
CHAT_PATH = "/openai/v1/chat/completions"
SCANNER_KEY = "llm-bench-scanner-key-0001"


# --- fakes (subprocess side) -------------------------------------------------------------------------------

class _Quiet(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are separate writes: no 40 ms delayed-ACK stall

    def log_message(self, *args):  # noqa: D401 - silence the per-request line
        pass

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _json(self, data: object, status: int = 200) -> None:
        payload = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024


class ScannerHandler(_Quiet):
    """LockLLM's scan API, played: always safe; counts calls and characters; GET /stats, POST /reset, and
    POST /delay {"ms": N} to change how long it takes to answer."""

    lock = threading.Lock()
    calls = 0
    chars = 0
    delay = 0.0

    def do_GET(self):
        with self.lock:
            self._json({"calls": ScannerHandler.calls, "chars": ScannerHandler.chars})

    def do_POST(self):
        body = self._body()
        if self.path == "/reset":
            with self.lock:
                ScannerHandler.calls = ScannerHandler.chars = 0
            return self._json({})
        if self.path == "/delay":
            ScannerHandler.delay = float(json.loads(body)["ms"]) / 1000
            return self._json({})
        text = json.loads(body)["input"]
        with self.lock:
            ScannerHandler.calls += 1
            ScannerHandler.chars += len(text)
        if ScannerHandler.delay:
            time.sleep(ScannerHandler.delay)
        self._json({"safe": True, "injection": 2, "request_id": "x"})  # percent; see docs note


class ProviderHandler(_Quiet):
    """A chat-completions provider: JSON, or SSE when the body says stream (X-Bench-* headers shape the stream).

    X-Bench-Chunks (20), X-Bench-Interval-Ms (20), X-Bench-Chunk-Bytes (~80), X-Bench-Reply-Chars (200).
    """

    def do_GET(self):
        self._json({"ok": True})

    def do_POST(self):
        body = json.loads(self._body() or b"{}")
        reply_chars = int(self.headers.get("X-Bench-Reply-Chars", "200"))
        if not body.get("stream"):
            return self._json({
                "id": "chatcmpl-bench", "object": "chat.completion", "created": 0, "model": "bench",
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": ("All good. " * 400)[:reply_chars]}}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            })
        chunks = int(self.headers.get("X-Bench-Chunks", "20"))
        interval = float(self.headers.get("X-Bench-Interval-Ms", "20")) / 1000
        size = int(self.headers.get("X-Bench-Chunk-Bytes", "0"))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        filler = "x" * size
        for index in range(chunks):
            event = ('data: {"choices":[{"index":0,"delta":{"content":"tok%d%s"}}]}\n\n' % (index, filler)).encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
            self.wfile.flush()
            if interval and index < chunks - 1:
                time.sleep(interval)
        done = b"data: [DONE]\n\n"
        self.wfile.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(done), done))
        self.wfile.flush()


def _serve_fake(handler) -> None:
    server = _Server(("127.0.0.1", 0), handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


def _serve_werkzeug(kind: str, config: str) -> None:
    from werkzeug.serving import WSGIRequestHandler, make_server

    class QuietHandler(WSGIRequestHandler):
        def log_request(self, *args, **kwargs):
            pass

    server = make_server("127.0.0.1", 0, make_app(kind, config), threaded=True, request_handler=QuietHandler)
    server.request_queue_size = 1024
    print(server.server_port, flush=True)
    server.serve_forever()


def make_app(kind: str, config: str):
    """The WSGI app under test: the gateway, or the bare relay in front of the same upstream."""
    if kind == "gateway":
        from lockllm_wsgi import create_app

        return create_app(config)
    from benchmarks.bare_relay import BareRelay

    return BareRelay(config)


# --- orchestration (benchmark side) --------------------------------------------------------------------------

def _spawn(args: list[str], log: str) -> tuple[subprocess.Popen, int]:
    env = {**os.environ, "PYTHONPATH": REPO}
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        env.pop(name, None)
    with open(log, "ab") as err:
        proc = subprocess.Popen([PY, os.path.abspath(__file__), *args], stdout=subprocess.PIPE, stderr=err,
                                env=env, start_new_session=True)
    port = int(proc.stdout.readline())
    return proc, port


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, seconds: float = 30.0) -> None:
    parts = urlsplit(url)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=2)
            conn.request("GET", "/")
            conn.getresponse().read()
            conn.close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up within {seconds}s")


class Served:
    def __init__(self, proc: subprocess.Popen, url: str, kind: str, mode: str):
        self.proc, self.url, self.kind, self.mode = proc, url, kind, mode

    def daemon_pids(self) -> list[int]:
        """mod_wsgi daemon processes: Apache's children whose display name is "(wsgi:...)"."""
        pids = []
        for child in _children(self.proc.pid):  # mod_wsgi-express execs into Apache's parent process
            with open(f"/proc/{child}/cmdline", "rb") as cmdline:
                if cmdline.read().startswith(b"(wsgi:"):
                    pids.append(child)
        return pids

    def daemon_cpu_seconds(self) -> float:
        """User plus system CPU time the mod_wsgi daemon processes have used so far."""
        return sum(sum(cpu_seconds(f"/proc/{pid}/stat")) for pid in self.daemon_pids())

    def stop(self) -> None:
        if self.proc.poll() is None:
            if self.mode == "express":
                os.kill(self.proc.pid, signal.SIGTERM)
            else:
                self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


def cpu_seconds(stat_path: str) -> tuple[float, float]:
    """(user, system) CPU seconds from a /proc stat file: a process's (/proc/PID/stat) or one thread's."""
    with open(stat_path) as stat:
        fields = stat.read().rsplit(")", 1)[1].split()  # after the name, which may hold spaces and parentheses
    ticks = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / ticks, int(fields[12]) / ticks  # utime, stime (fields 14 and 15 of proc(5))


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    if int(stat.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    return out


def _threads(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    return 0


def vm_kib(pid: int, field: str = "VmHWM") -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


class Stack:
    """The fake scanner and provider, and whatever is served in front of them; all stopped on exit."""

    def __init__(self, scanner_delay_ms: float = 0.0):
        self.run_id = secrets.token_hex(4)
        self.root = os.path.join(WORK_ROOT, self.run_id)
        os.makedirs(self.root, mode=0o755, exist_ok=True)
        os.chmod(WORK_ROOT, 0o755)
        self.log = os.path.join(self.root, "servers.log")
        self.served: list[Served] = []
        self.scanner_proc, scanner_port = _spawn(["scanner", str(scanner_delay_ms)], self.log)
        self.provider_proc, provider_port = _spawn(["provider"], self.log)
        self.scanner_url = f"http://127.0.0.1:{scanner_port}"
        self.provider_url = f"http://127.0.0.1:{provider_port}"
        self._configs = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        for served in self.served:
            served.stop()
        for proc in (self.scanner_proc, self.provider_proc):
            proc.terminate()
            proc.wait(5)
        shutil.rmtree(self.root, ignore_errors=True)

    def config(self) -> str:
        """A fresh INI file with its own (empty) verdict cache, readable by Apache's workers."""
        self._configs += 1
        folder = os.path.join(self.root, f"cfg{self._configs}")
        cache = os.path.join(folder, "cache")
        os.makedirs(cache, mode=0o755)
        shutil.chown(cache, "www-data", "www-data")
        os.chmod(folder, 0o755)
        path = os.path.join(folder, "lockllm.ini")
        with open(path, "w") as handle:
            handle.write(textwrap.dedent(f"""\
                [scanner]
                url = {self.scanner_url}/v1/scan
                api_key = {SCANNER_KEY}
                cache = sqlite:///{cache}/verdicts.sqlite

                [route:openai]
                prefix = /openai
                upstream = {self.provider_url}
                format = openai
                """))
        os.chmod(path, 0o644)
        return path

    def serve(self, kind: str, mode: str, processes: int = 2, threads: int = 15) -> Served:
        """`kind` gateway|relay served by `mode` werkzeug|express (express_command, same defaults as serve)."""
        config = self.config()
        if mode == "werkzeug":
            proc, port = _spawn(["werkzeug", kind, config], self.log)
            served = Served(proc, f"http://127.0.0.1:{port}", kind, mode)
        else:
            served = self._express(kind, config, processes, threads)
        self.served.append(served)
        wait_http(served.url)
        return served

    def _express(self, kind: str, config: str, processes: int, threads: int) -> Served:
        from lockllm_wsgi.config import load_settings
        from lockllm_wsgi.express import express_command

        port = _free_port()
        server_root = os.path.join(self.root, f"express-{port}")
        command = express_command(load_settings(config), config, host="127.0.0.1", port=port,
                                  processes=processes, threads=threads, server_root=server_root)
        # Same command, but the script imports from this checkout, and the relay script serves the bare relay.
        with open(os.path.join(server_root, "lockllm.wsgi"), "w") as script:
            script.write(f"import sys\nsys.path.insert(0, {REPO!r})\n"
                         f"from benchmarks._harness import make_app\napplication = make_app({kind!r}, {config!r})\n")
        with open(self.log, "ab") as out:
            proc = subprocess.Popen(command, stdout=out, stderr=out, start_new_session=True)
        return Served(proc, f"http://127.0.0.1:{port}", kind, "express")

    def scanner_stats(self) -> dict:
        return get_json(self.scanner_url + "/stats")

    def scanner_reset(self) -> None:
        post(self.scanner_url + "/reset", b"{}")

    def scanner_delay(self, ms: float) -> None:
        """From now on the fake scanner answers after `ms` milliseconds."""
        post(self.scanner_url + "/delay", json.dumps({"ms": ms}).encode())


# --- clients -----------------------------------------------------------------------------------------------

def get_json(url: str) -> dict:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    conn.request("GET", parts.path)
    data = json.loads(conn.getresponse().read())
    conn.close()
    return data


def post(url: str, body: bytes, headers: dict | None = None) -> tuple[int, bytes]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    conn.request("POST", parts.path, body, {"Content-Type": "application/json", **(headers or {})})
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, data


def chat_body(prompt: str, stream: bool = False) -> bytes:
    return json.dumps({"model": "bench", "stream": stream,
                       "messages": [{"role": "user", "content": prompt}]}).encode()


class _Client(threading.local):
    conn: http.client.HTTPConnection | None = None


def _request(local: _Client, host: str, port: int, path: str, body: bytes, headers: dict) -> int:
    for attempt in (0, 1):
        if local.conn is None:
            local.conn = http.client.HTTPConnection(host, port, timeout=30)
        try:
            local.conn.request("POST", path, body, headers)
            response = local.conn.getresponse()
            response.read()
            if response.getheader("Connection", "").lower() == "close":
                local.conn.close()
                local.conn = None
            return response.status
        except (http.client.HTTPException, OSError):
            local.conn.close()
            local.conn = None
            if attempt:
                raise
    return 0


def open_loop(url: str, make_body, rate: float, count: int, workers: int = 16,
              headers: dict | None = None) -> list[float]:
    """Fire `count` requests at `rate`/s on a fixed schedule; each latency runs from its scheduled send time."""
    parts = urlsplit(url)
    headers = {"Content-Type": "application/json", **(headers or {})}
    start = time.perf_counter() + 0.05
    jobs: queue.Queue = queue.Queue()
    for index in range(count):
        jobs.put((index, start + index / rate))
    latencies = [float("nan")] * count
    local = _Client()
    deadline = start + count / rate + 60

    def work():
        while time.perf_counter() < deadline:
            try:
                index, due = jobs.get_nowait()
            except queue.Empty:
                break
            body = make_body(index)
            pause = due - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            status = _request(local, parts.hostname, parts.port, parts.path, body, headers)
            if status == 200:
                latencies[index] = time.perf_counter() - due
        if local.conn is not None:
            local.conn.close()

    threads = [threading.Thread(target=work) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    good = [value for value in latencies if value == value]
    if len(good) < count:
        print(f"  warning: {count - len(good)} of {count} requests to {url} failed", file=sys.stderr)
    return good


def closed_loop(url: str, make_body, concurrency: int, seconds: float,
                latencies: list[float] | None = None) -> tuple[float, int]:
    """Requests/s with `concurrency` clients sending back to back for `seconds`; (rate, failures). Each
    successful request's time is appended to `latencies` when given."""
    parts = urlsplit(url)
    headers = {"Content-Type": "application/json"}
    local = _Client()
    done = [0] * concurrency
    failed = [0] * concurrency
    stop = time.perf_counter() + seconds

    def work(slot: int):
        counter = 0
        while time.perf_counter() < stop:
            counter += 1
            sent = time.perf_counter()
            try:
                ok = _request(local, parts.hostname, parts.port, parts.path, make_body(slot * 1_000_000 + counter),
                              headers) == 200
            except (http.client.HTTPException, OSError):
                ok = False
            if ok:
                done[slot] += 1
                if latencies is not None:
                    latencies.append(time.perf_counter() - sent)
            else:
                failed[slot] += 1
        if local.conn is not None:
            local.conn.close()

    started = time.perf_counter()
    threads = [threading.Thread(target=work, args=(slot,)) for slot in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(done) / (time.perf_counter() - started), sum(failed)


def stream_timing(url: str, body: bytes, headers: dict | None = None) -> tuple[float, list[float], int]:
    """(seconds to the first SSE event, gaps between events, bytes) for one streamed completion."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    sent = time.perf_counter()
    conn.request("POST", parts.path, body, {"Content-Type": "application/json", **(headers or {})})
    response = conn.getresponse()
    arrivals, size, pending = [], 0, b""
    while True:
        chunk = response.read1(65536)
        if not chunk:
            break
        now = time.perf_counter()
        size += len(chunk)
        pending += chunk
        events = pending.count(b"\n\n")
        if events:
            arrivals.extend([now] * events)
            pending = pending[pending.rfind(b"\n\n") + 2:]
    conn.close()
    if response.status != 200 or not arrivals:
        raise RuntimeError(f"stream from {url} failed: {response.status}")
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:])]
    return arrivals[0] - sent, gaps, size


# --- figures -----------------------------------------------------------------------------------------------

def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f}"


def table(header: list[str], rows: list[list[object]]) -> str:
    cells = [header] + [[str(cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["| " + " | ".join(cell.ljust(width) for cell, width in zip(row, widths)) + " |" for row in cells]
    lines.insert(1, "|" + "|".join("-" * (width + 2) for width in widths) + "|")
    return "\n".join(lines)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


if __name__ == "__main__":
    role = sys.argv[1]
    if role == "scanner":
        ScannerHandler.delay = float(sys.argv[2]) / 1000 if len(sys.argv) > 2 else 0.0
        _serve_fake(ScannerHandler)
    elif role == "provider":
        _serve_fake(ProviderHandler)
    elif role == "werkzeug":
        _serve_werkzeug(sys.argv[2], sys.argv[3])
    else:
        raise SystemExit(f"unknown role {role}")
