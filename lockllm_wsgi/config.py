"""Settings: one immutable object built from an INI file and the environment.

Every setting is declared once, as a field of its section's dataclass below: its name (the INI key), type,
default and the converter that turns its text into a typed value (`setting(default, converter)`). The keys each
section accepts are read from those fields (`[thresholds]` takes any role as its key; `[route:NAME]` takes the
keys in `_ROUTE_KEYS` and its format's route_options), so an unknown key or a malformed value stops start-up with
a message that names the file, the section and the key::

    settings = load_settings("/etc/lockllm/lockllm.ini")
    settings.scanner.timeout  # -> 5.0

`LOCKLLM_API_KEY` in the environment wins over `[scanner] api_key`, so the key can stay out of the file.
"""

from __future__ import annotations

import configparser
import os
import re
from dataclasses import dataclass, field, fields, is_dataclass, replace
from typing import Any, Callable, Mapping, TypeVar
from urllib.parse import urlsplit

from .formats import FORMATS
from .presets import PRESETS
from .stores import is_redis, masked_url, sqlite_path

SENSITIVITIES = ("low", "medium", "high")

_T = TypeVar("_T")
_N = TypeVar("_N", int, float)


class ConfigError(ValueError):
    """A setting that cannot be used; the message names where it came from."""


def setting(default: _T, convert: Callable[[str], _T], *, secret: bool = False) -> _T:
    """A dataclass field read from the INI key of the same name: `convert` turns its text into the value, raising
    ValueError with a message for people; `secret` keeps the value out of the dataclass's repr."""
    return field(default=default, repr=not secret, metadata={"convert": convert})


def setting_keys(section: type) -> dict[str, Callable[[str], Any]]:
    """The INI keys of a settings dataclass, in declaration order, each with its converter."""
    return {item.name: item.metadata["convert"] for item in fields(section) if "convert" in item.metadata}


@dataclass(frozen=True)
class Route:
    name: str
    prefix: str
    upstream: str
    format: str
    # Keys the route's format takes (WireFormat.route_options), completed and checked by its check_route.
    options: Mapping[str, str] = field(default_factory=dict)
    # [policy] with the keys the route section sets over it; None when it sets none.
    policy: PolicySettings | None = None


# --- converters: text -> value, raising ValueError with a message for people --------------------------------


def _one_of(*choices: str) -> Callable[[str], str]:
    def convert(text: str) -> str:
        value = text.strip().lower()
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}, not {text!r}")
        return value

    return convert


def _bounded(kind: Callable[[str], _N], accept: Callable[[_N], bool], requirement: str) -> Callable[[str], _N]:
    """A converter to int or float that also checks the range, saying what it needs when the text does not fit."""

    def convert(text: str) -> _N:
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


def _digests(text: str) -> frozenset[str]:
    values = frozenset(text.replace(",", " ").lower().split())
    bad = [value for value in values if not re.fullmatch(r"[0-9a-f]{64}", value)]
    if bad:
        raise ValueError(f"must be SHA-256 hex digests (64 hex digits each), not {bad[0][:70]!r}")
    return values


def _optional_output_mode(text: str) -> str:
    return _one_of("off", "audit", "enforce")(text) if text.strip() else ""


def _optional_fraction(text: str) -> float | None:
    return _fraction(text) if text.strip() else None


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


def _offline_model(text: str) -> str:
    """`nanoguard` only where the model extra is installed: checked now, so start-up and check-config say how to
    install it rather than the first scan failing."""
    value = _one_of("off", "nanoguard")(text)
    if value == "nanoguard":
        from .classifier import missing_requirement

        problem = missing_requirement()
        if problem is not None:
            raise ValueError(problem)
    return value


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


# --- the settings, one dataclass per INI section ------------------------------------------------------------


@dataclass(frozen=True)
class ScannerSettings:
    # The default when the file names no backend is decided by load_settings: lockllm with a key, else offline.
    backend: str = setting("lockllm", _one_of("lockllm", "offline"))
    url: str = setting("https://api.lockllm.com/v1/scan", _http_url)
    api_key: str = setting("", str.strip, secret=True)
    sensitivity: str = setting("medium", _one_of(*SENSITIVITIES))
    # The scan budget of one whole request, retries included: an LLM call already takes seconds, but a gateway that
    # adds more than a few when the scanner is sick is worse than failing by the configured fail mode.
    timeout: float = setting(5.0, _positive_float)
    retries: int = setting(2, _count)
    fail_mode: str = setting("closed", _one_of("closed", "open"))
    cache: str = setting("off", _cache)  # off, sqlite:////abs/path or redis://host:port/db
    cache_ttl: int = setting(7 * 24 * 3600, _positive_int)
    # What LockLLM checks (sent as X-LockLLM-* headers, and part of the verdict cache key): `combined` runs the
    # injection model and the account's custom policies, `normal` the model only, `policy_only` the policies only.
    scan_mode: str = setting("combined", _one_of("normal", "policy_only", "combined"))
    # What a custom-policy, abuse or PII finding does: block the request, allow it with the finding in the log,
    # audit file and response headers, or (off) not ask LockLLM for that check at all.
    policy_action: str = setting("block", _one_of("block", "allow_with_warning", "off"))
    abuse_action: str = setting("off", _one_of("block", "allow_with_warning", "off"))
    # `strip`: the provider receives LockLLM's redacted text in place of each text with personal data (redact.py).
    pii_action: str = setting("off", _one_of("block", "strip", "allow_with_warning", "off"))
    # LockLLM's own chunking of long inputs: on, off, or empty to leave it to LockLLM.
    chunk: str = setting("", _one_of("on", "off", ""))
    offline_signals: tuple[str, ...] = setting((), _signals)
    offline_allow: tuple[str, ...] = setting((), _lines)
    # The offline scanner's model stage (classifier/): `nanoguard` flags what the rules miss, at ~100 ms of CPU
    # per 512-token window of every text not yet judged; needs the model extra.
    offline_model: str = setting("off", _offline_model)

    @property
    def cache_path(self) -> str | None:
        """The SQLite file behind `cache = sqlite:////abs/path`, or None when caching is off or in Redis."""
        return sqlite_path(self.cache)


@dataclass(frozen=True)
class PolicySettings:
    action: str = setting("block", _one_of("block", "monitor"))
    # Empty: LockLLM's own `safe` decides, at the `sensitivity` chosen; a score from 0 to 1: the injection score
    # is compared with it instead. The offline scanner, which has no `safe`, uses offline.DEFAULT_THRESHOLD then.
    threshold: float | None = setting(None, _optional_fraction)
    block_status: int = setting(400, _block_status)
    role_from: str = setting("", _environ_key)  # empty: every caller is judged by `threshold`
    non_text_parts: str = setting("allow", _one_of("allow", "block"))
    unknown_shapes: str = setting("refuse", _one_of("refuse", "scan_strings"))
    # SHA-256 hex digests of vetted texts (a company's own long system prompt) that are not judged; every other
    # text of the request still is. The audit file records the digest of every text that triggered a block.
    allow_sha256: frozenset[str] = setting(frozenset(), _digests)
    # How far a client's X-LockLLM-* request headers (an app built on LockLLM's SDK) may change the scan: `none`,
    # `tighten` (raise sensitivity, turn a check on or to block, never loosen what the operator set) or `any`.
    client_overrides: str = setting("tighten", _one_of("none", "tighten", "any"))
    # The output guard's mode where this policy applies (a route, a named policy): off, audit or enforce; empty:
    # `[output] mode`. A route can guard its answers while the others are relayed unread, or the reverse.
    output_mode: str = setting("", _optional_output_mode)
    # Read from the [thresholds] section, one key per role, each a score from 0 to 1.
    thresholds: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class LimitSettings:
    # 10 MiB holds the longest real prompts (whole files pasted into context) while bounding memory per request;
    # Apache's LimitRequestBody (apache/lockllm-location.conf) sits 1 MiB above it, so the gateway answers
    # over-cap bodies.
    max_body_bytes: int = setting(10 * 1024 * 1024, _positive_int)
    # Real requests nest a handful of levels; a cap far below Python's recursion limit keeps parsing safe.
    max_json_depth: int = setting(64, _positive_int)
    # Scan calls one request may cost (a text over 100,000 characters counts once per piece): an agent's long
    # history of tool calls and results stays well under it, while a body of thousands of tiny parts is refused
    # before any scan instead of costing thousands of scans (or, against the deadline, running the scanner out
    # of time).
    max_scan_units: int = setting(1024, _positive_int)


@dataclass(frozen=True)
class UpstreamSettings:
    connect_timeout: float = setting(10.0, _positive_float)
    # Per socket read, not per response: a long generation may pause between tokens but never this long.
    read_timeout: float = setting(600.0, _positive_float)


@dataclass(frozen=True)
class AuditSettings:
    path: str = setting("", _absolute_path)  # empty: no audit file
    log_prompts: bool = setting(False, _on_off)


@dataclass(frozen=True)
class LogSettings:
    # Empty: the request log goes to stderr, which mod_wsgi writes to Apache's error log as [wsgi:error] lines. A
    # path: one JSON line per request appended there by one O_APPEND write (several processes, logrotate as is).
    path: str = setting("", _absolute_path)


@dataclass(frozen=True)
class OpsSettings:
    metrics_path: str = setting("/metrics", _ops_path)
    healthz_path: str = setting("/healthz", _ops_path)
    readyz_path: str = setting("/readyz", _ops_path)


@dataclass(frozen=True)
class MetricsSettings:
    # Where mod_wsgi's daemon processes share metric values; empty: a private folder per Apache run in the temp dir
    # when mod_wsgi runs more than one daemon process (metrics.default_multiprocess_dir), else none.
    multiprocess_dir: str = setting("", _absolute_path)


@dataclass(frozen=True)
class RateLimitSettings:
    requests_per_minute: float = setting(0.0, _rate)  # 0: no rate limit
    # A burst lets an agent send its parallel tool-call follow-ups at once without tripping the per-minute rate.
    burst: int = setting(10, _positive_int)
    store: str = setting("", _store)  # sqlite:////abs/path or redis://host:port/db; required with a rate

    @property
    def enabled(self) -> bool:
        return self.requests_per_minute > 0


@dataclass(frozen=True)
class OutputSettings:
    # What the gateway does with the model's answers: `off` (relayed unread), `audit` (relayed byte for byte as
    # they arrive, judged after they end, findings logged) or `enforce` (an unsafe answer is refused, an unsafe
    # stream cut with the provider's own error event).
    mode: str = setting("off", _one_of("off", "audit", "enforce"))
    # A system or developer text is "leaked" when the answer reproduces a run of this many characters of it
    # (whitespace collapsed): long enough that a quoted common phrase is not a leak, short enough to catch a
    # paragraph of a prompt.
    leak_min_chars: int = setting(200, _positive_int)
    # enforce, streams: text not yet judged that may be held back before it is judged (and then sent). Larger
    # means fewer scans per answer and a later first token; a phrase within this many characters is judged whole
    # before any of it is sent.
    holdback_chars: int = setting(300, _positive_int)
    # enforce, plain answers: the status of a refused answer; 422 is retried by no official SDK (they retry
    # 408, 409, 429 and 5xx), and a retry would pay for the same generation again.
    block_status: int = setting(422, _block_status)


@dataclass(frozen=True)
class Settings:
    scanner: ScannerSettings = ScannerSettings()
    policy: PolicySettings = PolicySettings()
    limits: LimitSettings = LimitSettings()
    upstream: UpstreamSettings = UpstreamSettings()
    routes: tuple[Route, ...] = ()
    audit: AuditSettings = AuditSettings()
    log: LogSettings = LogSettings()
    ops: OpsSettings = OpsSettings()
    metrics: MetricsSettings = MetricsSettings()
    ratelimit: RateLimitSettings = RateLimitSettings()
    output: OutputSettings = OutputSettings()
    # [policy:NAME] sections: the [policy] keys each sets, applied over the route's policy for a request whose
    # WSGI environ names it in LOCKLLM_POLICY (SetEnv in Apache; a client cannot set the environ).
    named_policies: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    source: str = "<defaults>"


# INI section -> the dataclass its keys fill: the Settings fields that hold one, named as their sections.
SECTIONS: dict[str, type] = {item.name: type(item.default) for item in fields(Settings) if is_dataclass(item.default)}

# [route:NAME] keys every format takes, plus `preset` (fills upstream and format); a format's own keys (Bedrock's
# region) are its route_options, in _ROUTE_OPTIONS below.
_ROUTE_KEYS: dict[str, Callable[[str], object]] = {
    "prefix": _prefix,
    "upstream": _http_url,
    "format": _format,
    "preset": _one_of(*PRESETS),
}


class _CaseKeepingParser(configparser.RawConfigParser):
    """Keys keep their case: a [thresholds] role is the role Apache sets (`Contractor`, not `contractor`), and a
    setting spelt `Timeout` is named in the error rather than silently read as `timeout`."""

    def optionxform(self, optionstr: str) -> str:
        return optionstr


class _Reader:
    """Converts the keys of one parsed INI file, naming the file, section and key in every error."""

    def __init__(self, parser: _CaseKeepingParser, source: str):
        self.parser = parser
        self.source = source

    def fail(self, section: str, key: str | None, problem: str) -> ConfigError:
        where = f"[{section}] {key}" if key else f"[{section}]"
        return ConfigError(f"{self.source}: {where} {problem}")

    def section(self, name: str, converters: Mapping[str, Callable[[str], Any]]) -> dict[str, Any]:
        """The converted values of the keys the section sets (the converters name the keys it may set)."""
        if not self.parser.has_section(name):
            return {}
        values: dict[str, Any] = {}
        for key, text in self.parser.items(name):
            convert = converters.get(key)
            if convert is None:
                raise self.fail(name, key, f"is not a known setting (known: {', '.join(converters)})")
            try:
                values[key] = convert(text)
            except ValueError as error:
                raise self.fail(name, key, str(error)) from None
        return values

    def settings(self, name: str, section: type[_T], **values: Any) -> _T:
        """The section's dataclass, from the keys the section sets over the field defaults (and `values`)."""
        return section(**self.section(name, setting_keys(section)), **values)


def _known_sections() -> tuple[str, ...]:
    names: list[str] = []
    for name in SECTIONS:
        names.append(name)
        if name == "policy":
            names.append("thresholds")  # fills PolicySettings.thresholds, one key per role
    return tuple(names)


_KNOWN_SECTIONS = _known_sections()


# Any [policy] key may also be set in a [route:NAME] or a [policy:NAME] section.
_POLICY_KEYS = setting_keys(PolicySettings)
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
    parser = _CaseKeepingParser(default_section="__no_defaults__", strict=True)
    try:
        with open(path, encoding="utf-8") as handle:
            parser.read_file(handle, source=path)
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the configuration file: {error.strerror}") from None
    except configparser.Error as error:
        raise ConfigError(f"{path}: not a valid INI file: {error}") from None
    reader = _Reader(parser, path)

    for name in parser.sections():
        if name not in _KNOWN_SECTIONS and not name.startswith(("route:", "policy:")):
            raise reader.fail(name, None, f"is not a known section (known: {', '.join(_KNOWN_SECTIONS)}, route:NAME, "
                              "policy:NAME)")

    scanner_values = reader.section("scanner", setting_keys(ScannerSettings))
    if environ.get("LOCKLLM_API_KEY"):
        scanner_values["api_key"] = environ["LOCKLLM_API_KEY"].strip()
    if "backend" not in scanner_values:
        # A newcomer without a LockLLM key still gets protection: the in-process scanner needs no network.
        scanner_values["backend"] = "lockllm" if scanner_values.get("api_key") else "offline"
    scanner = ScannerSettings(**scanner_values)
    if scanner.backend == "lockllm" and not scanner.api_key:
        raise reader.fail("scanner", "api_key", "is required with backend = lockllm (or set LOCKLLM_API_KEY)")

    thresholds = {}
    if parser.has_section("thresholds"):
        for role, text in parser.items("thresholds"):
            try:
                thresholds[role] = _fraction(text)
            except ValueError as error:
                raise reader.fail("thresholds", role, str(error)) from None
    policy = reader.settings("policy", PolicySettings, thresholds=thresholds)
    if thresholds and not policy.role_from:
        raise reader.fail("policy", "role_from", "must name the environ key that carries the role used by [thresholds]")

    routes = []
    for name in parser.sections():
        if not name.startswith("route:"):
            continue
        values = reader.section(name, {**_ROUTE_KEYS, **_ROUTE_OPTIONS, **_POLICY_KEYS})
        route_policy = {key: values.pop(key) for key in list(values) if key in _POLICY_KEYS}
        preset = values.pop("preset", None)
        if preset is not None:
            if values.setdefault("format", "openai") != "openai":
                raise reader.fail(name, "format", f"must be openai (or left out) with preset = {preset}")
            values.setdefault("upstream", PRESETS[str(preset)])
        for required in ("upstream", "format"):
            if required not in values:
                raise reader.fail(name, required, "is required")
        route = _route(reader, name, values)
        routes.append(replace(route, policy=replace(policy, **route_policy)) if route_policy else route)
    if not routes:
        raise ConfigError(f"{path}: no [route:NAME] section: name at least one upstream, e.g. [route:openai]")
    prefixes = [route.prefix for route in routes]
    duplicated = {prefix for prefix in prefixes if prefixes.count(prefix) > 1}
    if duplicated:
        raise ConfigError(f"{path}: two routes share the prefix {sorted(duplicated)[0]!r}")

    named_policies = {name[len("policy:"):]: reader.section(name, _POLICY_KEYS)
                      for name in parser.sections() if name.startswith("policy:")}

    ratelimit = reader.settings("ratelimit", RateLimitSettings)
    if ratelimit.enabled and not ratelimit.store:
        raise reader.fail("ratelimit", "store", "is required with requests_per_minute, so every process shares the "
                          "limit: sqlite:////var/lib/lockllm/ratelimit.sqlite or redis://host:6379/0")

    return Settings(
        scanner=scanner,
        policy=policy,
        limits=reader.settings("limits", LimitSettings),
        upstream=reader.settings("upstream", UpstreamSettings),
        # Longest prefix first, so /openai/azure wins over /openai.
        routes=tuple(sorted(routes, key=lambda route: len(route.prefix), reverse=True)),
        audit=reader.settings("audit", AuditSettings),
        log=reader.settings("log", LogSettings),
        ops=reader.settings("ops", OpsSettings),
        metrics=reader.settings("metrics", MetricsSettings),
        ratelimit=ratelimit,
        output=reader.settings("output", OutputSettings),
        named_policies=named_policies,
        source=path,
    )
