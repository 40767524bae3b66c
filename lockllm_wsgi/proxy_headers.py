"""LockLLM Proxy Mode's response headers, on every answer the gateway gives to a judged request, so an app built on
the `lockllm` SDK reads the gateway's verdict with `lockllm.utils.parse_proxy_metadata` as it reads LockLLM's own
proxy; and the refusal message for each kind of finding::

    headers = lockllm_headers(verdicts, decision, settings.scanner)
    # [("X-LockLLM-Scanned", "true"), ("X-LockLLM-Safe", "false"), ("X-LockLLM-Blocked", "true"), ...]

Detail headers carry base64 JSON, as LockLLM's do; none holds prompt text.
"""

from __future__ import annotations

import base64
import json
from typing import Sequence

from .config import ScannerSettings
from .policy import INJECTION, Decision
from .verdict import Verdict


def _detail(value: dict) -> str:
    return base64.b64encode(json.dumps(value, separators=(",", ":")).encode()).decode()


def _percent(value: float | None) -> str:
    return f"{value:g}" if value is not None else "0"


def lockllm_headers(verdicts: Sequence[Verdict], decision: Decision, scanner: ScannerSettings) -> list[tuple[str, str]]:
    unsafe = decision.action != "allow"
    headers = [
        ("X-LockLLM-Scanned", "true"),
        ("X-LockLLM-Safe", "false" if unsafe or decision.warnings else "true"),
        ("X-LockLLM-Label", "1" if unsafe else "0"),
        ("X-LockLLM-Sensitivity", scanner.sensitivity),
        ("X-Scan-Mode", scanner.scan_mode),
    ]
    if decision.action == "block":
        headers.append(("X-LockLLM-Blocked", "true"))
    injected = [v for v in verdicts if v.scan_warning or (v.score is not None and decision.code == INJECTION)]
    if decision.code == INJECTION or any(v.scan_warning for v in verdicts):
        score = max((v.score for v in injected if v.score is not None), default=decision.score)
        confidence = max((v.confidence for v in injected if v.confidence is not None), default=None)
        headers += [("X-LockLLM-Scan-Warning", "true"),
                    ("X-LockLLM-Injection-Score", _percent(score * 100 if score is not None else None)),
                    ("X-LockLLM-Confidence", _percent(confidence)),
                    ("X-LockLLM-Scan-Detail", _detail({"injection_score": score, "where": decision.trigger}))]
    policies = [v for v in verdicts if v.policy_warnings]
    if policies:
        confidence = max((v.policy_confidence for v in policies if v.policy_confidence is not None), default=None)
        headers += [("X-LockLLM-Policy-Warnings", "true"),
                    ("X-LockLLM-Warning-Count", str(sum(v.policy_warnings for v in policies))),
                    ("X-LockLLM-Policy-Confidence", _percent(confidence)),
                    ("X-LockLLM-Warning-Detail", _detail({"texts": len(policies)}))]
    if scanner.pii_action != "off":
        types = sorted({kind for v in verdicts for kind in v.pii_types})
        headers += [("X-LockLLM-PII-Detected", "true" if any(v.pii_detected for v in verdicts) else "false"),
                    ("X-LockLLM-PII-Types", ",".join(types)), ("X-LockLLM-PII-Count", str(len(types))),
                    ("X-LockLLM-PII-Action", scanner.pii_action)]
    abuse = [v for v in verdicts if v.abuse_detected]
    if abuse:
        types = sorted({kind for v in abuse for kind in v.abuse_types})
        confidence = max((v.abuse_confidence for v in abuse if v.abuse_confidence is not None), default=None)
        headers += [("X-LockLLM-Abuse-Detected", "true"), ("X-LockLLM-Abuse-Types", ",".join(types)),
                    ("X-LockLLM-Abuse-Confidence", _percent(confidence)),
                    ("X-LockLLM-Abuse-Detail", _detail({"types": types}))]
    return headers


def blocked_message(decision: Decision, verdict: Verdict) -> str:
    """What the client is told of a blocked request: what was found, where, and what to do."""
    where = decision.trigger
    found = {
        INJECTION: f"looks like a prompt injection (score {decision.score if decision.score is not None else 'n/a'}, "
                   + (f"threshold {decision.threshold})" if decision.threshold is not None
                      else "over the scanner's own threshold)"),
        "policy_violation": "violates a custom policy of this gateway's scanner account",
        "pii_detected": f"contains personal data ({', '.join(verdict.pii_types) or 'PII'}), which this gateway refuses",
        "abuse_detected": f"looks like abuse ({', '.join(verdict.abuse_types) or 'abusive use'})",
    }.get(decision.code or INJECTION, f"was judged unsafe by the scanner ({decision.code})")
    return (f"The request was blocked: the text at {where} {found}. If this is legitimate, ask the gateway operator "
            "to review it.")
