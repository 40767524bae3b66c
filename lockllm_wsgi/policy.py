"""Policy: verdicts and settings in, one decision out. Pure, so every rule is tested without sockets::

    decision = decide(verdicts, units, settings.policy, settings.scanner, role="contractor")
    decision.relay  # False when the request is blocked
    decision.code   # prompt_injection_detected, policy_violation, pii_detected or abuse_detected

Every part of LockLLM's answer counts. Injection: where the operator set no threshold, LockLLM's own `safe` decides
(so `sensitivity` means what LockLLM says it means); where one is set (globally or for the caller's role), the
injection score is compared with it instead. A custom-policy, PII or abuse finding does what its `*_action` says
(block, or allow with a warning); a LockLLM block answer blocks; and a text LockLLM calls unsafe for a reason the
gateway does not recognise is unsafe.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from .config import PolicySettings, ScannerSettings
from .extract import ScanUnit
from .offline import DEFAULT_THRESHOLD as SCORE_ONLY_THRESHOLD
from .verdict import Verdict

INJECTION = "prompt_injection_detected"


@dataclass(frozen=True)
class Decision:
    action: str  # "allow", "block" or "monitor" (unsafe, relayed and recorded)
    score: float | None  # the highest injection score seen
    threshold: float | None  # the threshold the scores were compared with; None: LockLLM's `safe` decided
    trigger: str | None = None  # where the unsafe text was (field path), for logs and the error message
    trigger_role: str | None = None
    trigger_index: int | None = None  # which verdict and unit
    code: str | None = None  # why it is unsafe: INJECTION or the LockLLM finding that blocks
    warnings: tuple[str, ...] = ()  # findings allowed with a warning (`*_action = allow_with_warning`)

    @property
    def relay(self) -> bool:
        return self.action != "block"


def _actions(scanner: ScannerSettings) -> dict[str, str]:
    return {"policy_violation": scanner.policy_action, "pii_detected": scanner.pii_action,
            "abuse_detected": scanner.abuse_action}


def unsafe_reasons(verdict: Verdict, threshold: float | None, actions: dict[str, str]) -> list[str]:
    """Why a verdict makes its text unsafe, most specific first; empty when it does not."""
    reasons = [verdict.blocked] if verdict.blocked else []
    reasons += [code for code in verdict.findings if actions.get(code) == "block" and code not in reasons]
    if verdict.safe is None and threshold is None:
        threshold = SCORE_ONLY_THRESHOLD  # a scanner with a score and no flag (the offline scanner)
    if threshold is not None and verdict.score is not None:
        injected = verdict.score >= threshold
    else:
        # LockLLM's flag: unsafe for injection (its warning or label says so), or for no reason the gateway knows.
        injected = verdict.safe is False and (verdict.scan_warning or verdict.label == "1" or not verdict.findings)
    if injected and INJECTION not in reasons:
        reasons.append(INJECTION)
    return reasons


def unsafe_reasons_for(verdict: Verdict, threshold: float | None, scanner: ScannerSettings) -> list[str]:
    """unsafe_reasons with the actions the scanner settings name (the output guard judges answers this way)."""
    return unsafe_reasons(verdict, threshold, _actions(scanner))


def is_unsafe(verdict: Verdict, threshold: float | None, scanner: ScannerSettings) -> bool:
    return bool(unsafe_reasons(verdict, threshold, _actions(scanner)))


def decide(verdicts: Sequence[Verdict], units: Sequence[ScanUnit], policy: PolicySettings, scanner: ScannerSettings,
           role: str | None) -> Decision:
    threshold = policy.thresholds.get(role, policy.threshold) if role else policy.threshold
    actions = _actions(scanner)
    scores = [verdict.score for verdict in verdicts if verdict.score is not None]
    top = max(scores) if scores else None
    warnings = tuple(sorted({code for verdict in verdicts for code in verdict.findings
                             if actions.get(code) == "allow_with_warning"}))
    for index, (verdict, unit) in enumerate(zip(verdicts, units)):
        reasons = unsafe_reasons(verdict, threshold, actions)
        if reasons:
            action = "block" if policy.action == "block" else "monitor"
            return Decision(action, top, threshold, unit.segment.where, unit.segment.role, index, reasons[0],
                            warnings)
    return Decision("allow", top, threshold, warnings=warnings)
