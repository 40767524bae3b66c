"""The operator's endpoints: `/healthz` (the process answers), `/readyz` (it can do its job: its scanner, its
cache, and every path it writes), `/metrics`.

They are answered before routing, so no path under them is ever relayed to a provider, whatever the routes say.
They carry no secrets, but they do tell who uses the gateway how much: restrict them in Apache (see
docs/operations.md, `<Location /metrics> Require ip 10.0.0.0/8`)::

    endpoints = OpsEndpoints(settings, metrics, scanner=scanner)
    response = endpoints(environ, start_response)  # None when the path is not an operator endpoint
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Callable, Iterable, Optional
from urllib.parse import urlsplit

import requests

from .config import Settings
from .metrics import Metrics
from .permissions import Account, permission_problems
from .verdict_cache import cache_problem, unused_cache

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

# A readiness probe runs every few seconds; a scanner slower than this to answer at all is not ready for traffic.
DEFAULT_READY_TIMEOUT_SECONDS = 2.0


def scanner_problem(settings: Settings, timeout: float = DEFAULT_READY_TIMEOUT_SECONDS) -> str | None:
    """Why the scanner cannot be reached, or None. Any HTTP answer from its host counts: the probe sends no key
    and no text, so it spends no scan budget and leaks nothing."""
    if settings.scanner.backend != "lockllm":
        return None
    parts = urlsplit(settings.scanner.url)
    with requests.Session() as session:
        session.trust_env = False  # the same rule as the scan client: no ambient proxy
        try:
            session.head(f"{parts.scheme}://{parts.netloc}/", timeout=timeout, allow_redirects=False).close()
        except requests.RequestException as error:
            return f"{parts.netloc}: {type(error).__name__}"
    return None


def cache_check(settings: Settings, scanner: object = None) -> tuple[str, Optional[str]]:
    """What /readyz says of the verdict cache this process actually uses, and the problem (None when there is none).

    The offline scanner caches nothing, so a cache it does not use is no reason to be unready; a cache the scan
    client could not open at start-up is one, though scans still work: the process pays a live scan for every
    text until it is restarted. Otherwise the file (or Redis) is checked live."""
    if settings.scanner.cache == "off":
        return "off", None
    if settings.scanner.backend != "lockllm":
        return "not used: the offline scanner needs no cache", None
    unused = unused_cache(getattr(scanner, "session", None))
    if unused is not None:
        problem = f"not in use: {unused}; this process scans without a cache until it restarts"
    else:
        problem = cache_problem(settings.scanner)
    return problem or "ok", problem


class OpsEndpoints:
    def __init__(self, settings: Settings, metrics: Metrics, account_problem: Callable[[], str | None] = lambda: None,
                 scanner: object = None):
        """`scanner` is the app's scan client: /readyz and the metrics report the cache it actually uses."""
        self.settings = settings
        self.metrics = metrics
        # The scan client's last word on the gateway's key or credit: reachable is not enough to be ready.
        self.account_problem = account_problem
        self.scanner = scanner
        # Why the INI file's last change was not taken (reload.py); readiness stays 200 on it.
        self.reload_problem: str | None = None
        if settings.scanner.cache != "off" and settings.scanner.backend == "lockllm" and scanner is not None:
            metrics.cache_in_use(unused_cache(getattr(scanner, "session", None)) is None)
        self._answers: dict[str, Callable[[], tuple[str, str, bytes]]] = {
            settings.ops.healthz_path: self._healthz,
            settings.ops.readyz_path: self._readyz,
            settings.ops.metrics_path: self._metrics,
        }

    def __call__(self, environ: "WSGIEnvironment", start_response: "StartResponse") -> Iterable[bytes] | None:
        answer = self._answers.get(environ.get("PATH_INFO", ""))
        if answer is None:
            return None
        if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            status, content_type, body = "405 Method Not Allowed", "text/plain; charset=utf-8", b"GET or HEAD only\n"
        else:
            status, content_type, body = answer()
        start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(body))),
                                ("Cache-Control", "no-store")])
        return [b""] if environ.get("REQUEST_METHOD") == "HEAD" else [body]

    @staticmethod
    def _healthz() -> tuple[str, str, bytes]:
        return "200 OK", "application/json", b'{"status": "ok"}\n'

    def _readyz(self) -> tuple[str, str, bytes]:
        # The configuration was loaded and validated when the app was built; the rest is checked live.
        cache, cache_trouble = cache_check(self.settings, self.scanner)
        scanner = scanner_problem(self.settings) or self.account_problem()
        config = "ok" if self.reload_problem is None else f"last change not applied: {self.reload_problem}"
        # A path this process cannot write loses audit records or log lines on every request until it is fixed.
        permissions = "; ".join(str(problem) for problem in permission_problems(self.settings, Account.current()))
        checks = {"config": config, "cache": cache, "scanner": scanner or "ok", "permissions": permissions or "ok"}
        ready = cache_trouble is None and scanner is None and not permissions
        body = json.dumps({"status": "ready" if ready else "not_ready", "checks": checks}).encode() + b"\n"
        return ("200 OK" if ready else "503 Service Unavailable"), "application/json", body

    def _metrics(self) -> tuple[str, str, bytes]:
        content_type, body = self.metrics.render()
        return "200 OK", content_type, body
