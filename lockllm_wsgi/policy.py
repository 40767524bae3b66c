"""Policy: verdicts and settings in, one decision out. Pure, so every rule is tested without sockets::

    decision = decide(verdicts, units, settings.policy, role="contractor")
    decision.relay  # False when the request is blocked
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from .config import PolicySettings
from .extract import ScanUnit
from .verdict import Verdict


@dataclass(frozen=True)
class Decision:
    action: str  # "allow", "block" or "monitor" (unsafe, relayed and recorded)
    score: float | None  # the highest injection score seen
    threshold: float
    trigger: str | None = None  # where the unsafe text was (field path), for logs and the error message
    trigger_role: str | None = None
    trigger_index: int | None = None  # which verdict and unit

    @property
    def relay(self) -> bool:
        return self.action != "block"


def is_unsafe(verdict: Verdict, threshold: float) -> bool:
    """At or above the threshold is unsafe; with no score, the scanner's own flag decides."""
    if verdict.score is not None:
        return verdict.score >= threshold
    return verdict.safe is False


def decide(verdicts: Sequence[Verdict], units: Sequence[ScanUnit], policy: PolicySettings, role: str | None) -> Decision:
    threshold = policy.thresholds.get(role, policy.threshold) if role else policy.threshold
    scores = [verdict.score for verdict in verdicts if verdict.score is not None]
    top = max(scores) if scores else None
    for index, (verdict, unit) in enumerate(zip(verdicts, units)):
        if is_unsafe(verdict, threshold):
            action = "block" if policy.action == "block" else "monitor"
            return Decision(action, top, threshold, unit.segment.where, unit.segment.role, index)
    return Decision("allow", top, threshold)
