"""The gateway under test: its INI file, and the app served over real HTTP by werkzeug so the official SDKs talk
to it exactly as they talk to a provider. Tests that need no socket call `werkzeug.test.Client(gateway.app)`."""

from __future__ import annotations

import textwrap
import threading

from werkzeug.serving import make_server

from lockllm_wsgi import create_app
from lockllm_wsgi.config import load_settings
from support.fakes import POLL_SECONDS, SCANNER_KEY


def write_config(folder, scanner_url: str, upstream: str, extra: str = "", scanner_extra: str = "") -> str:
    path = folder / "lockllm.ini"
    scanner_keys = {"url": scanner_url, "api_key": SCANNER_KEY, "timeout": "3", "retries": "1"}
    for line in textwrap.dedent(scanner_extra).splitlines():
        if line.strip():
            key, _, value = line.partition("=")
            scanner_keys[key.strip()] = value.strip()
    path.write_text("[scanner]\n" + "".join(f"{key} = {value}\n" for key, value in scanner_keys.items())
                    + textwrap.dedent(f"""
        [route:openai]
        prefix = /openai
        upstream = {upstream}
        format = openai
        """) + textwrap.dedent(extra))
    return str(path)


def keyless_config(tmp_path, upstream: str, scanner_lines: str = "") -> str:
    path = tmp_path / "lockllm.ini"
    path.write_text(textwrap.dedent(f"""\
        [route:openai]
        prefix = /openai
        upstream = {upstream}
        format = openai
        """) + (f"[scanner]\n{scanner_lines}" if scanner_lines else ""))
    return str(path)


class Gateway:
    """The app served by a threaded werkzeug server on a loopback port; close() stops it within POLL_SECONDS."""

    def __init__(self, config_path: str):
        self.settings = load_settings(config_path)
        self.app = create_app(self.settings)
        self.server = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": POLL_SECONDS},
                                       daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        # The app lets scans already running finish on their own (a replaced gateway must not wait for a slow
        # scanner); a test waits for them, so none reaches the shared fake scanner during the next test.
        pool = getattr(self.app.scanner, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=True)
        self.app.close()


class LogLines(list):
    """Request-log lines as they are written, from the server's threads; wait_for(n) waits until n are in."""

    def __init__(self) -> None:
        super().__init__()
        self._changed = threading.Condition()

    def add(self, line: str) -> None:
        with self._changed:
            self.append(line)
            self._changed.notify_all()

    def wait_for(self, count: int, timeout: float = 5) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: len(self) >= count, timeout)

