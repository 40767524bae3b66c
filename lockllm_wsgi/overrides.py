"""Per-request settings: the route's policy, a named policy the WSGI environ chooses, and the X-LockLLM-* request
headers an app built on LockLLM's SDK sends, honoured only as far as `[policy] client_overrides` allows::

    policy = request_policy(environ, route_policy, settings.named_policies)      # LOCKLLM_POLICY=strict
    scanner = request_scanner(environ, settings.scanner, policy.client_overrides)  # X-LockLLM-Sensitivity: high

With `tighten` (the default) a client may raise the sensitivity, widen the scan mode to `combined`, or turn a check
on or to `block`, never loosen what the operator set; with `none` the headers are ignored; with `any` they are
taken as they are. The headers are never forwarded to the provider (relay.py).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Mapping

from .config import PolicySettings, ScannerSettings
from .refusal import Refusal

# The WSGI environ key (Apache: SetEnv LOCKLLM_POLICY strict) naming a [policy:NAME] for the request. Headers reach
# the environ only as HTTP_*, so a client cannot set it.
POLICY_ENVIRON_KEY = "LOCKLLM_POLICY"
_STRICTNESS = {
    "sensitivity": ("low", "medium", "high"),
    "action": ("off", "allow_with_warning", "block"),
}
# Header (as in the WSGI environ) -> the ScannerSettings field it sets, and how its values are ordered.
_HEADERS = {
    "HTTP_X_LOCKLLM_SENSITIVITY": ("sensitivity", "sensitivity"),
    "HTTP_X_LOCKLLM_POLICY_ACTION": ("policy_action", "action"),
    "HTTP_X_LOCKLLM_PII_ACTION": ("pii_action", "action"),
    "HTTP_X_LOCKLLM_ABUSE_ACTION": ("abuse_action", "action"),
}


def request_policy(environ: Mapping[str, Any], policy: PolicySettings,
                   named: Mapping[str, Mapping[str, Any]]) -> PolicySettings:
    name = environ.get(POLICY_ENVIRON_KEY)
    if not name:
        return policy
    if name not in named:
        raise Refusal(500, "gateway_misconfigured", f"This location asks for the policy {str(name)[:40]!r}, which the "
                      "gateway's configuration does not define; the operator must add [policy:NAME] or fix SetEnv.")
    return replace(policy, **named[name])


def request_scanner(environ: Mapping[str, Any], scanner: ScannerSettings, mode: str) -> ScannerSettings:
    if mode == "none":
        return scanner
    changes: dict[str, str] = {}
    for key, (field, scale) in _HEADERS.items():
        value = str(environ.get(key) or "").strip().lower()
        order = _STRICTNESS[scale]
        if value in order and (mode == "any" or order.index(value) > order.index(getattr(scanner, field))):
            changes[field] = value
    scan_mode = str(environ.get("HTTP_X_LOCKLLM_SCAN_MODE") or "").strip().lower()
    if scan_mode in ("normal", "policy_only", "combined") and (mode == "any" or scan_mode == "combined"):
        changes["scan_mode"] = scan_mode
    return replace(scanner, **changes) if changes else scanner


def request_action(environ: Mapping[str, Any], policy: PolicySettings) -> PolicySettings:
    """X-LockLLM-Scan-Action: `block` turns a monitoring policy to blocking (tighten); `allow_with_warning` turns
    blocking to monitoring only where any override is allowed."""
    value = str(environ.get("HTTP_X_LOCKLLM_SCAN_ACTION") or "").strip().lower()
    if policy.client_overrides == "none":
        return policy
    if value == "block" and policy.action != "block":
        return replace(policy, action="block")
    if value == "allow_with_warning" and policy.client_overrides == "any":
        return replace(policy, action="monitor")
    return policy
