"""Settings: one immutable object built from an INI file and the environment.

Every key is declared once below with the converter that turns its text into a typed value, so an unknown key
or a malformed value stops start-up with a message that names the file, the section and the key::

    settings = load_settings("/etc/lockllm/lockllm.ini")
    settings.scanner.timeout  # -> 5.0

`LOCKLLM_API_KEY` in the environment wins over `[scanner] api_key`, so the key can stay out of the file.
"""

from __future__ import annotations

import configparser
import os
import re
from dataclasses import dataclass, field
from typing import Callable, Mapping
from urllib.parse import urlsplit

from .formats import FORMATS
from .presets import PRESETS
from .stores import is_redis, masked_url, sqlite_path

DEFAULT_SCANNER_URL = "https://api.lockllm.com/v1/scan"
# The scan budget of one whole request, retries included: an LLM call already takes seconds, but a gateway that
# adds more than a few when the scanner is sick is worse than failing by the configured fail mode.
DEFAULT_SCAN_TIMEOUT = 5.0
DEFAULT_RETRIES = 2
DEFAULT_CACHE_TTL = 7 * 24 * 3600
DEFAULT_THRESHOLD = 0.5
# 10 MiB holds the longest real prompts (whole files pasted into context) while bounding memory per request;
# Apache's LimitRequestBody (apache/lockllm-location.conf) sits 1 MiB above it, so the gateway answers over-cap bodies.
DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024
# Real requests nest a handful of levels; a cap far below Python's recursion limit keeps parsing safe.
DEFAULT_MAX_JSON_DEPTH = 64
# Scan calls one request may cost (a text over 100,000 characters counts once per piece): an agent's long history
# of tool calls and results stays well under it, while a body of thousands of tiny parts is refused before any
# scan instead of costing thousands of scans (or, against the deadline, running the scanner out of time).
DEFAULT_MAX_SCAN_UNITS = 1024
DEFAULT_CONNECT_TIMEOUT = 10.0
# Per socket read, not per response: a long generation may pause between tokens but never this long.
DEFAULT_READ_TIMEOUT = 600.0
# A burst lets an agent send its parallel tool-call follow-ups at once without tripping the per-minute rate.
DEFAULT_BURST = 10

SENSITIVITIES = ("low", "medium", "high")


class ConfigError(ValueError):
    """A setting that cannot be used; the message names where it came from."""


@dataclass(frozen=True)
class ScannerSettings:
    backend: str = "lockllm"
    url: str = DEFAULT_SCANNER_URL
    api_key: str = field(default="", repr=False)
    sensitivity: str = "medium"
    timeout: float = DEFAULT_SCAN_TIMEOUT
    retries: int = DEFAULT_RETRIES
    fail_mode: str = "closed"
    cache: str = "off"
    cache_ttl: int = DEFAULT_CACHE_TTL
    offline_signals: tuple[str, ...] = ()
    offline_allow: tuple[str, ...] = ()

    @property
    def cache_path(self) -> str | None:
        """The SQLite file behind `cache = sqlite:////abs/path`, or None when caching is off or in Redis."""
        return sqlite_path(self.cache)


@dataclass(frozen=True)
class PolicySettings:
    action: str = "block"
    threshold: float = DEFAULT_THRESHOLD
    block_status: int = 400
    role_from: str = ""
    non_text_parts: str = "allow"
    unknown_shapes: str = "refuse"
    thresholds: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class LimitSettings:
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_json_depth: int = DEFAULT_MAX_JSON_DEPTH
    max_scan_units: int = DEFAULT_MAX_SCAN_UNITS


@dataclass(frozen=True)
class UpstreamSettings:
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    read_timeout: float = DEFAULT_READ_TIMEOUT


@dataclass(frozen=True)
class AuditSettings:
    path: str = ""  # empty: no audit file
    log_prompts: bool = False


@dataclass(frozen=True)
class OpsSettings:
    metrics_path: str = "/metrics"
    healthz_path: str = "/healthz"
    readyz_path: str = "/readyz"


@dataclass(frozen=True)
class MetricsSettings:
    # Where mod_wsgi's daemon processes share metric values; empty: each process reports its own values only.
    multiprocess_dir: str = ""


@dataclass(frozen=True)
class RateLimitSettings:
    requests_per_minute: float = 0.0  # 0: no rate limit
    burst: int = DEFAULT_BURST
    store: str = ""  # sqlite:////abs/path or redis://host:port/db

    @property
    def enabled(self) -> bool:
        return self.requests_per_minute > 0


@dataclass(frozen=True)
class Route:
    name: str
    prefix: str
    upstream: str
    format: str
    # Keys the route's format takes (WireFormat.route_options), completed and checked by its check_route.
    options: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Settings:
    scanner: ScannerSettings = ScannerSettings()
    policy: PolicySettings = PolicySettings()
    limits: LimitSettings = LimitSettings()
    upstream: UpstreamSettings = UpstreamSettings()
    routes: tuple[Route, ...] = ()
    audit: AuditSettings = AuditSettings()
    ops: OpsSettings = OpsSettings()
    metrics: MetricsSettings = MetricsSettings()
    ratelimit: RateLimitSettings = RateLimitSettings()
    source: str = "<defaults>"


# --- converters: text -> value, raising ValueError with a message for people --------------------------------


def _one_of(*choices: str) -> Callable[[str], str]:
    def convert(text: str) -> str:
        value = text.strip().lower()
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}, not {text!r}")
        return value

    return convert



def _bounded(kind: Callable[[str], float], accept: Callable[[float], bool], requirement: str) -> Callable[[str], float]:
    """A converter to int or float that also checks the range, saying what it needs when the text does not fit."""

    def convert(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise ValueError(f"must be {requirement}, not {text!r}") from None
        if not accept(value):
            raise ValueError(f"must be {requirement}, not {text!r}")
        return value

    return convert


_positive_float = _bounded(float, lambda value: value > 0, "a number above 0")
_count = _bounded(int, lambda value: value >= 0, "a whole number of 0 or more")
_positive_int = _bounded(int, lambda value: value > 0, "a whole number above 0")
_fraction = _bounded(float, lambda value: 0.0 <= value <= 1.0, "a score from 0 to 1")
_block_status = _bounded(int, lambda value: 400 <= value <= 499, "a 4xx status")
_rate = _bounded(float, lambda value: value >= 0, "0 (off) or a number of requests above 0")


def _http_url(text: str) -> str:
    value = text.strip().rstrip("/")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"must be an http:// or https:// URL, not {text!r}")
    if parts.query or parts.fragment:
        raise ValueError(f"must not carry a query or fragment: {text!r}")
    return value


def _store(text: str) -> str:
    """A shared store: `sqlite:////absolute/path` (one node) or `redis://host:port/db` (several nodes)."""
    value = text.strip()
    if is_redis(value):
        if not urlsplit(value).hostname:
            raise ValueError(f"needs a host (redis://host:6379/0), not {masked_url(value)!r}")
        return value
    path = sqlite_path(value)
    if path is None:
        raise ValueError("must be 'sqlite:////absolute/path.sqlite' or 'redis://host:port/db', "
                         f"not {masked_url(value)!r}")
    if not os.path.isabs(path):
        raise ValueError(f"needs an absolute path (four slashes: sqlite:////var/cache/...), not {text!r}")
    return value


def _lines(text: str) -> tuple[str, ...]:
    return tuple(line.strip() for line in text.splitlines() if line.strip())


def _signals(text: str) -> tuple[str, ...]:
    """Operator rules for the offline scanner, one `WEIGHT FAMILY REGEX` a line, checked now rather than later."""
    from .offline import OfflineDetector, parse_signal

    lines = _lines(text)
    for number, line in enumerate(lines, 1):
        try:
            OfflineDetector(extra_signals=[parse_signal(line)])
        except ValueError as error:
            raise ValueError(f"line {number} ({line!r}): {error}") from None
    return lines


def _cache(text: str) -> str:
    return "off" if text.strip().lower() == "off" else _store(text)


def _on_off(text: str) -> bool:
    value = text.strip().lower()
    if value not in ("on", "off"):
        raise ValueError(f"must be on or off, not {text!r}")
    return value == "on"


def _absolute_path(text: str) -> str:
    value = text.strip()
    if value and not os.path.isabs(value):
        raise ValueError(f"must be an absolute path, not {text!r}")
    return value


def _ops_path(text: str) -> str:
    value = _prefix(text)
    if not value:
        raise ValueError(f"must be a path below /, such as /metrics, not {text!r}")
    return value


def _environ_key(text: str) -> str:
    value = text.strip()
    if value and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*", value):
        raise ValueError(f"must be a WSGI environ key such as AUTHENTICATE_ROLE or HTTP_X_LLM_ROLE, not {text!r}")
    return value


def _prefix(text: str) -> str:
    value = "/" + text.strip().strip("/")
    if "//" in value or ".." in value or "%" in value:
        raise ValueError(f"must be a plain path such as /openai, not {text!r}")
    return "" if value == "/" else value


def _format(text: str) -> str:
    value = text.strip().lower()
    if value not in FORMATS:
        raise ValueError(f"must be one of {', '.join(sorted(FORMATS))}, not {text!r}")
    return value


_SCANNER_KEYS: dict[str, Callable[[str], object]] = {
    "backend": _one_of("lockllm", "offline"),
    "url": _http_url,
    "api_key": str.strip,
    "sensitivity": _one_of(*SENSITIVITIES),
    "timeout": _positive_float,
    "retries": _count,
    "fail_mode": _one_of("closed", "open"),
    "cache": _cache,
    "cache_ttl": _positive_int,
    "offline_signals": _signals,
    "offline_allow": _lines,
}
_POLICY_KEYS: dict[str, Callable[[str], object]] = {
    "action": _one_of("block", "monitor"),
    "threshold": _fraction,
    "block_status": _block_status,
    "role_from": _environ_key,
    "non_text_parts": _one_of("allow", "block"),
    "unknown_shapes": _one_of("refuse", "scan_strings"),
}
_LIMIT_KEYS: dict[str, Callable[[str], object]] = {
    "max_body_bytes": _positive_int,
    "max_json_depth": _positive_int,
    "max_scan_units": _positive_int,
}
_UPSTREAM_KEYS: dict[str, Callable[[str], object]] = {
    "connect_timeout": _positive_float,
    "read_timeout": _positive_float,
}
_AUDIT_KEYS: dict[str, Callable[[str], object]] = {
    "path": _absolute_path,
    "log_prompts": _on_off,
}
_OPS_KEYS: dict[str, Callable[[str], object]] = {
    "metrics_path": _ops_path,
    "healthz_path": _ops_path,
    "readyz_path": _ops_path,
}
_METRICS_KEYS: dict[str, Callable[[str], object]] = {
    "multiprocess_dir": _absolute_path,
}
_RATELIMIT_KEYS: dict[str, Callable[[str], object]] = {
    "requests_per_minute": _rate,
    "burst": _positive_int,
    "store": _store,
}
_ROUTE_KEYS: dict[str, Callable[[str], object]] = {
    "prefix": _prefix,
    "upstream": _http_url,
    "format": _format,
    "preset": _one_of(*PRESETS),
}


class _Reader:
    """Converts the keys of one parsed INI file, naming the file, section and key in every error."""

    def __init__(self, parser: configparser.RawConfigParser, source: str):
        self.parser = parser
        self.source = source

    def fail(self, section: str, key: str | None, problem: str) -> ConfigError:
        where = f"[{section}] {key}" if key else f"[{section}]"
        return ConfigError(f"{self.source}: {where} {problem}")

    def section(self, name: str, converters: Mapping[str, Callable[[str], object]]) -> dict[str, object]:
        if not self.parser.has_section(name):
            return {}
        values: dict[str, object] = {}
        for key, text in self.parser.items(name):
            convert = converters.get(key)
            if convert is None:
                raise self.fail(name, key, f"is not a known setting (known: {', '.join(converters)})")
            try:
                values[key] = convert(text)
            except ValueError as error:
                raise self.fail(name, key, str(error)) from None
        return values


_KNOWN_SECTIONS = ("scanner", "policy", "thresholds", "limits", "upstream", "audit", "ops", "metrics", "ratelimit")


# Every option some format takes; a route may set only its own format's (checked in _route).
_ROUTE_OPTIONS = {key: convert for fmt in FORMATS.values() for key, convert in fmt.route_options.items()}


def _route(reader: _Reader, section: str, values: dict[str, object]) -> Route:
    """A route from its converted keys: the format's own options checked and completed by the format."""
    fmt = FORMATS[str(values["format"])]
    options = {key: str(values.pop(key)) for key in list(values) if key in _ROUTE_OPTIONS}
    for key in options:
        if key not in fmt.route_options:
            raise reader.fail(section, key, f"is not a setting of {fmt.name} routes")
    try:
        options = dict(fmt.check_route(str(values["upstream"]), options))
    except ValueError as error:
        raise reader.fail(section, None, str(error)) from None
    return Route(name=section[len("route:"):], prefix=str(values.get("prefix", "")), upstream=str(values["upstream"]),
                 format=fmt.name, options=options)


def load_settings(path: str, environ: Mapping[str, str] | None = None) -> Settings:
    """Read `path` into Settings; `environ` (default os.environ) supplies LOCKLLM_API_KEY."""
    environ = os.environ if environ is None else environ
    parser = configparser.RawConfigParser(default_section="__no_defaults__", strict=True)
    try:
        with open(path, encoding="utf-8") as handle:
            parser.read_file(handle, source=path)
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the configuration file: {error.strerror}") from None
    except configparser.Error as error:
        raise ConfigError(f"{path}: not a valid INI file: {error}") from None
    reader = _Reader(parser, path)

    for name in parser.sections():
        if name not in _KNOWN_SECTIONS and not name.startswith("route:"):
            raise reader.fail(name, None, f"is not a known section (known: {', '.join(_KNOWN_SECTIONS)}, route:NAME)")

    scanner_values = reader.section("scanner", _SCANNER_KEYS)
    if environ.get("LOCKLLM_API_KEY"):
        scanner_values["api_key"] = environ["LOCKLLM_API_KEY"].strip()
    if "backend" not in scanner_values:
        # A newcomer without a LockLLM key still gets protection: the in-process scanner needs no network.
        scanner_values["backend"] = "lockllm" if scanner_values.get("api_key") else "offline"
    scanner = ScannerSettings(**scanner_values)  # type: ignore[arg-type]
    if scanner.backend == "lockllm" and not scanner.api_key:
        raise reader.fail("scanner", "api_key", "is required with backend = lockllm (or set LOCKLLM_API_KEY)")

    thresholds = {}
    if parser.has_section("thresholds"):
        for role, text in parser.items("thresholds"):
            try:
                thresholds[role] = _fraction(text)
            except ValueError as error:
                raise reader.fail("thresholds", role, str(error)) from None
    policy = PolicySettings(**reader.section("policy", _POLICY_KEYS), thresholds=thresholds)  # type: ignore[arg-type]
    if thresholds and not policy.role_from:
        raise reader.fail("policy", "role_from", "must name the environ key that carries the role used by [thresholds]")

    routes = []
    for name in parser.sections():
        if not name.startswith("route:"):
            continue
        values = reader.section(name, {**_ROUTE_KEYS, **_ROUTE_OPTIONS})
        preset = values.pop("preset", None)
        if preset is not None:
            if values.setdefault("format", "openai") != "openai":
                raise reader.fail(name, "format", f"must be openai (or left out) with preset = {preset}")
            values.setdefault("upstream", PRESETS[str(preset)])
        for required in ("upstream", "format"):
            if required not in values:
                raise reader.fail(name, required, "is required")
        routes.append(_route(reader, name, values))
    if not routes:
        raise ConfigError(f"{path}: no [route:NAME] section: name at least one upstream, e.g. [route:openai]")
    prefixes = [route.prefix for route in routes]
    duplicated = {prefix for prefix in prefixes if prefixes.count(prefix) > 1}
    if duplicated:
        raise ConfigError(f"{path}: two routes share the prefix {sorted(duplicated)[0]!r}")

    ratelimit = RateLimitSettings(**reader.section("ratelimit", _RATELIMIT_KEYS))  # type: ignore[arg-type]
    if ratelimit.enabled and not ratelimit.store:
        raise reader.fail("ratelimit", "store", "is required with requests_per_minute, so every process shares the "
                          "limit: sqlite:////var/lib/lockllm/ratelimit.sqlite or redis://host:6379/0")

    return Settings(
        scanner=scanner,
        policy=policy,
        limits=LimitSettings(**reader.section("limits", _LIMIT_KEYS)),  # type: ignore[arg-type]
        upstream=UpstreamSettings(**reader.section("upstream", _UPSTREAM_KEYS)),  # type: ignore[arg-type]
        # Longest prefix first, so /openai/azure wins over /openai.
        routes=tuple(sorted(routes, key=lambda route: len(route.prefix), reverse=True)),
        audit=AuditSettings(**reader.section("audit", _AUDIT_KEYS)),  # type: ignore[arg-type]
        ops=OpsSettings(**reader.section("ops", _OPS_KEYS)),  # type: ignore[arg-type]
        metrics=MetricsSettings(**reader.section("metrics", _METRICS_KEYS)),  # type: ignore[arg-type]
        ratelimit=ratelimit,
        source=path,
    )
