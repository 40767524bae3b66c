"""Prometheus metrics, fed from each request's log record, served at `/metrics`.

Under mod_wsgi a gateway runs as several daemon processes; with `[metrics] multiprocess_dir` set, every process
writes its values to files there and `/metrics` adds them up (prometheus_client's multiprocess mode), so a scrape
sees the whole gateway whichever process answers it. The mode is chosen when prometheus_client is first imported,
which is why this module imports it only after setting PROMETHEUS_MULTIPROC_DIR::

    metrics = Metrics(settings.metrics)
    metrics.observe(record, retries_total=scanner.retries_total); content_type, body = metrics.render()
"""

from __future__ import annotations

import atexit
import logging
import os
import stat
import sys
import tempfile
import threading

from typing import Any

from .config import ConfigError, MetricsSettings
from .record import RequestRecord

# Seconds. A cached verdict takes milliseconds, a live scan tens to hundreds; past the default 5 s deadline the
# fail mode applies, so finer buckets up there say nothing.
SCAN_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Seconds until the provider's response headers arrive: a generation that is not streamed sends them only once the
# whole answer is written, which can take minutes.
UPSTREAM_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
_MULTIPROC_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"

log = logging.getLogger(__name__)


def default_multiprocess_dir() -> str | None:
    """Under mod_wsgi with more than one daemon process and no `[metrics] multiprocess_dir`: a folder private to
    this user and this Apache run (named by the Apache parent's pid, so a restart starts afresh while a graceful
    restart keeps counting), in the temp dir; else None (one process: its own values are the whole story).

    A scrape answered by one of two processes without it would report half the traffic, a different half each
    time. The folder must be a directory of ours, 0700, not a link: a name in /tmp that someone else made first
    leaves the metrics per process, with a warning."""
    try:
        import mod_wsgi  # the embedded module in a daemon; the pip package of the same name has no process count
    except ImportError:
        return None
    if int(getattr(mod_wsgi, "maximum_processes", 1) or 1) <= 1:
        return None
    folder = os.path.join(tempfile.gettempdir(), f"lockllm-metrics-{os.geteuid()}-{os.getppid()}")
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        status = os.lstat(folder)
    except OSError as error:
        log.warning('{"event": "metrics_per_process", "folder": "%s", "error": "%s"}', folder, error.strerror)
        return None
    if not stat.S_ISDIR(status.st_mode) or status.st_uid != os.geteuid() or status.st_mode & 0o077:
        log.warning('{"event": "metrics_per_process", "folder": "%s", "error": "not a private folder of this user; '
                    'set [metrics] multiprocess_dir"}', folder)
        return None
    return folder


def _enable_multiprocess(folder: str) -> None:
    """Point prometheus_client at `folder` before it is imported; refuse if it was imported in another mode."""
    if "prometheus_client" in sys.modules and os.environ.get(_MULTIPROC_VARIABLE) != folder:
        raise ConfigError(f"[metrics] multiprocess_dir = {folder}: prometheus_client was imported before the gateway "
                          f"was built, so its mode is already fixed; set {_MULTIPROC_VARIABLE}={folder} in the "
                          "environment of the process, or build the gateway first")
    os.makedirs(folder, mode=0o700, exist_ok=True)
    os.environ[_MULTIPROC_VARIABLE] = folder


def _mark_dead(folder: str) -> None:
    """Drop this process's live gauges (lockllm_scan_cache_in_use) when it exits, so a replaced daemon process
    does not report for ever; its counters stay, as prometheus_client's multiprocess mode keeps them."""
    from prometheus_client.multiprocess import mark_process_dead

    try:
        mark_process_dead(os.getpid(), folder)
    except OSError:
        pass


class Metrics:
    """The gateway's metrics, in their own registry (one per app, so several apps in a process do not clash)."""

    def __init__(self, settings: MetricsSettings):
        self.settings = settings
        self.multiprocess_dir = settings.multiprocess_dir
        if not self.multiprocess_dir:
            default = default_multiprocess_dir()
            if default and "prometheus_client" in sys.modules and os.environ.get(_MULTIPROC_VARIABLE) != default:
                log.warning('{"event": "metrics_per_process", "error": "prometheus_client was imported before the '
                            'gateway; set [metrics] multiprocess_dir"}')
                default = None
            self.multiprocess_dir = default or ""
        if self.multiprocess_dir:
            _enable_multiprocess(self.multiprocess_dir)
            atexit.register(_mark_dead, self.multiprocess_dir)
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("lockllm_requests", "Requests answered, by route, decision and refusal code",
                                ("route", "decision", "code"), registry=self.registry)
        self.scan_seconds = Histogram("lockllm_scan_seconds", "Time spent scanning one request's texts, by route",
                                      ("route",), buckets=SCAN_BUCKETS, registry=self.registry)
        self.upstream_seconds = Histogram("lockllm_upstream_seconds",
                                          "Time until the provider's response headers arrived, by route",
                                          ("route",), buckets=UPSTREAM_BUCKETS, registry=self.registry)
        self.cache = Counter("lockllm_scan_cache_lookups", "Verdict cache lookups, by result (hit or miss)",
                             ("result",), registry=self.registry)
        self.retries = Counter("lockllm_scanner_retries", "Scan calls retried after a 429, 5xx or connection error",
                               registry=self.registry)
        self.output = Counter("lockllm_output_answers", "Answers seen by the output guard, by route, outcome (pass, "
                              "flagged, blocked, fail_open, fail_closed, unjudged) and first finding",
                              ("route", "outcome", "finding"), registry=self.registry)
        self._retries_lock = threading.Lock()
        self._retries_seen = 0
        self._reload_gauge: Any = None
        # Each metric's child per label values, looked up once: labels() checks and copies its values and takes
        # the metric's lock on every call, five times a request. The label values are the routes, decisions,
        # codes and findings a process meets, as many as prometheus_client keeps children for anyway.
        self._children: dict[tuple[Any, tuple[str, ...]], Any] = {}

    def cache_in_use(self, in_use: bool) -> None:
        """Say whether this process's scans go through the configured verdict cache (0: it could not be opened at
        start-up, every text is scanned live). The lowest value of the live processes is reported."""
        from prometheus_client import Gauge

        gauge = Gauge("lockllm_scan_cache_in_use", "1 when this process's scans go through the configured verdict "
                      "cache, 0 when it could not be opened (scanning without it)", registry=self.registry,
                      multiprocess_mode="livemin")
        gauge.set(1 if in_use else 0)

    def config_reload_failed(self, failed: bool) -> None:
        """1 while the INI file's last change could not be taken (the process serves the last good settings)."""
        from prometheus_client import Gauge

        if self._reload_gauge is None:
            self._reload_gauge = Gauge("lockllm_config_reload_failed", "1 while the configuration file's last change "
                                       "was refused and the last good settings are served", registry=self.registry,
                                       multiprocess_mode="livemax")
        self._reload_gauge.set(1 if failed else 0)

    def _child(self, metric: Any, *labels: str) -> Any:
        child = self._children.get((metric, labels))
        if child is None:  # two threads may both ask: labels() gives both the same child
            child = self._children[(metric, labels)] = metric.labels(*labels)
        return child

    def observe(self, record: RequestRecord, retries_total: int | None = None) -> None:
        """Count one finished request from its record (the same facts the request log line carries)."""
        route = record.route or "none"
        self._child(self.requests, route, record.decision or "unknown", record.code or "none").inc()
        if record.scan_ms is not None:
            self._child(self.scan_seconds, route).observe(record.scan_ms / 1000)
        if record.upstream_ms is not None:
            self._child(self.upstream_seconds, route).observe(record.upstream_ms / 1000)
        if record.scans is not None and record.cache_hits is not None:
            # Both series exist from the first scanned request on; adding 0 would only write the same value again.
            hits, misses = self._child(self.cache, "hit"), self._child(self.cache, "miss")
            if record.cache_hits:
                hits.inc(record.cache_hits)
            if record.scans - record.cache_hits:
                misses.inc(record.scans - record.cache_hits)
        if record.output is not None:
            self._child(self.output, route, record.output, (record.output_findings or ["none"])[0]).inc()
        if retries_total is not None and retries_total != self._retries_seen:
            # The scanner keeps a running total per process; the counter takes what was added since last time.
            with self._retries_lock:
                added, self._retries_seen = retries_total - self._retries_seen, retries_total
            if added > 0:
                self.retries.inc(added)

    def render(self) -> tuple[str, bytes]:
        """(content type, body) of a scrape: all processes' values in multiprocess mode, else this process's."""
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
        from prometheus_client.multiprocess import MultiProcessCollector

        registry = self.registry
        if self.multiprocess_dir:
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=self.multiprocess_dir)
        return CONTENT_TYPE_LATEST, generate_latest(registry)
