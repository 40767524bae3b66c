"""Verdicts: what the scanner says of one text, the parser of the scan API's answer, and the one error a scan
client raises. The bottom of the package: the scan client, the verdict cache and the policy all speak these types,
and this module imports none of them::

    verdict = parse_verdict({"safe": False, "injection": 97})  # -> Verdict(safe=False, score=0.97)
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property
from typing import Sequence


class ScannerUnavailable(Exception):
    """No usable verdict within the deadline; the message says why, for logs (it never contains prompt text).

    `caused_by_request` is True when the client, not a sick scanner, is behind the failure, so no fail mode may
    open on it: the request had more fresh texts than the pool has workers, or a scan that ran out of time had
    started late (it waited in the pool for half the budget) or was of a very long text; the scanner refused the
    input (a 4xx other than a bad key or exhausted credit); or it was still rate-limiting at the end of the retries
    (a quota the clients' volume exhausted).
    """

    def __init__(self, message: str, caused_by_request: bool = False, account: str | None = None,
                 timed_out: bool = False):
        super().__init__(message)
        self.caused_by_request = caused_by_request
        # The scan ran out of time (timed out, never sent, or cut off at the deadline): the client's doing when its
        # text is very long or was sent late (breaker.on_clients_account), which scan.py decides.
        self.timed_out = timed_out
        # "unauthorized" (the scanner refuses the gateway's key) or "insufficient_credits" (its account has no
        # credit left): outages the operator must tell apart from a scanner that is down.
        self.account = account

    def fails_open(self, fail_open: bool) -> bool:
        """Whether the text goes on unjudged: only where the operator chose `fail_mode = open`, and never for a
        failure the client caused (the request path and the output guard alike)."""
        return fail_open and not self.caused_by_request


# LockLLM's block answers (sent when an X-LockLLM-*-Action: block header asked for them): verdicts, not errors.
BLOCK_CODES = frozenset({"prompt_injection_detected", "policy_violation", "pii_detected", "abuse_detected"})


@dataclass(frozen=True)
class Verdict:
    """What the scanner says of one text: LockLLM's whole answer, not only its injection score."""

    safe: bool | None  # the scanner's own flag: every check it ran, together
    score: float | None  # injection score, normalised to 0..1
    label: str | None = None
    scanner_request_id: str | None = None
    cached: bool = False
    families: tuple[str, ...] = ()  # the offline scanner's rule families
    model_score: float | None = None  # the offline model's own injection probability, when it ran
    confidence: float | None = None  # of the injection label, 0..100
    scan_warning: bool = False  # LockLLM flagged injection but was asked to allow with a warning
    policy_warnings: int = 0  # custom policies violated
    policy_confidence: float | None = None
    pii_detected: bool = False
    pii_types: tuple[str, ...] = ()
    abuse_detected: bool = False
    abuse_types: tuple[str, ...] = ()
    abuse_confidence: float | None = None
    blocked: str | None = None  # the code of a LockLLM block answer

    @cached_property  # asked several times a request (decision, warnings, headers, log) of the memo's one object
    def findings(self) -> tuple[str, ...]:
        """LockLLM's findings besides the injection score, as refusal codes."""
        found = [self.blocked] if self.blocked else []
        found += [code for code, hit in (("policy_violation", self.policy_warnings > 0),
                                         ("pii_detected", self.pii_detected),
                                         ("abuse_detected", self.abuse_detected)) if hit and code not in found]
        return tuple(found)

    @staticmethod
    def worst(verdicts: Sequence["Verdict"]) -> "Verdict":
        """One verdict for a text scanned in pieces: the most dangerous piece speaks for the whole text, and no
        piece's finding is lost."""
        if len(verdicts) == 1:  # the usual case: a text short enough for one scan call speaks for itself
            return verdicts[0]
        worst = max(verdicts, key=lambda v: (v.blocked is not None, v.safe is False, bool(v.findings),
                                             v.score if v.score is not None else -1.0))
        return replace(
            worst,
            policy_warnings=max(v.policy_warnings for v in verdicts),
            pii_detected=any(v.pii_detected for v in verdicts),
            pii_types=tuple(sorted({kind for v in verdicts for kind in v.pii_types})),
            abuse_detected=any(v.abuse_detected for v in verdicts),
            abuse_types=tuple(sorted({kind for v in verdicts for kind in v.abuse_types})),
            abuse_confidence=max((v.abuse_confidence for v in verdicts if v.abuse_confidence is not None),
                                 default=None),
            blocked=next((v.blocked for v in verdicts if v.blocked), None),
        )


def _number(value: object, low: float, high: float) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        return None
    return float(value)


def _names(values: object) -> tuple[str, ...]:
    return tuple(sorted({str(value)[:60] for value in values})) if isinstance(values, list) else ()


def parse_verdict(data: object) -> Verdict:
    """A Verdict from the scan API's JSON, or ScannerUnavailable if it says nothing usable (never "safe")."""
    if not isinstance(data, dict):
        raise ScannerUnavailable("scanner answered with JSON that is not an object")
    safe = data.get("safe")
    if not isinstance(safe, bool):
        safe = None
    score = data.get("injection")
    if isinstance(score, bool) or not isinstance(score, (int, float)) or not 0 <= score <= 100:
        score = None
    elif isinstance(score, int) or score > 1:
        # Percentages come as whole numbers (some API versions) and fractions with a decimal point, so an integer
        # 1 is 1 %, not certainty; 1.0 is certainty.
        score = score / 100.0
    if safe is None and score is None:
        raise ScannerUnavailable("scanner verdict has neither 'safe' nor a usable 'injection' score")
    label = data.get("label")
    request_id = data.get("request_id")
    policies = data.get("policy_warnings")
    pii = data.get("pii_result") if isinstance(data.get("pii_result"), dict) else {}
    abuse = data.get("abuse_warnings") if isinstance(data.get("abuse_warnings"), dict) else {}
    return Verdict(
        safe=safe,
        score=float(score) if score is not None else None,
        label=str(label) if label is not None else None,
        scanner_request_id=str(request_id) if request_id is not None else None,
        confidence=_number(data.get("confidence"), 0, 100),
        scan_warning=bool(data.get("scan_warning")),
        policy_warnings=len(policies) if isinstance(policies, list) else 0,
        policy_confidence=_number(data.get("policy_confidence"), 0, 100),
        pii_detected=pii.get("detected") is True,
        pii_types=_names(pii.get("entity_types")),
        # Present only when abuse was found; `detected` defaults to true, as in LockLLM's own SDK.
        abuse_detected=bool(abuse) and abuse.get("detected", True) is not False,
        abuse_types=_names(abuse.get("abuse_types")),
        abuse_confidence=_number(abuse.get("confidence"), 0, 100),
    )


def parse_block(status: int, data: object) -> Verdict | None:
    """A LockLLM block answer (400 prompt_injection_detected or abuse_detected, 403 policy_violation or
    pii_detected) as the verdict it is, or None when the answer is an error of another kind."""
    error = data.get("error") if isinstance(data, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    if status not in (400, 403) or code not in BLOCK_CODES:
        return None
    scan = error.get("scan_result") if isinstance(error.get("scan_result"), dict) else {}
    pii = error.get("pii_details") if isinstance(error.get("pii_details"), dict) else {}
    injection = _number(scan.get("injection"), 0, 100)
    return Verdict(
        safe=False, score=injection / 100 if injection is not None else None,
        scanner_request_id=str(error.get("request_id")) if error.get("request_id") is not None else None,
        blocked=str(code), pii_detected=code == "pii_detected", pii_types=_names(pii.get("entity_types")),
        policy_warnings=1 if code == "policy_violation" else 0, abuse_detected=code == "abuse_detected",
    )
