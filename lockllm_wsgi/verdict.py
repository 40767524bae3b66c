"""Verdicts: what the scanner says of one text, the parser of the scan API's answer, and the one error a scan
client raises. The bottom of the package: the scan client, the verdict cache and the policy all speak these types,
and this module imports none of them::

    verdict = parse_verdict({"safe": False, "injection": 97})  # -> Verdict(safe=False, score=0.97)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence


class ScannerUnavailable(Exception):
    """No usable verdict within the deadline; the message says why, for logs (it never contains prompt text).

    `caused_by_request` is True when the client, not a sick scanner, is behind the failure, so no fail mode may
    open on it: the request had more fresh texts than the pool has workers, or some of its scans had not even
    started at the deadline; the scanner refused the input (a 4xx other than a bad key or exhausted credit); or it
    was still rate-limiting at the end of the retries (a quota the clients' volume exhausted).
    """

    def __init__(self, message: str, caused_by_request: bool = False):
        super().__init__(message)
        self.caused_by_request = caused_by_request


@dataclass(frozen=True)
class Verdict:
    safe: bool | None  # the scanner's own flag
    score: float | None  # injection score, normalised to 0..1
    label: str | None = None
    scanner_request_id: str | None = None
    cached: bool = False
    families: tuple[str, ...] = ()

    @staticmethod
    def worst(verdicts: Sequence["Verdict"]) -> "Verdict":
        """One verdict for a text scanned in pieces: the most dangerous piece speaks for the whole text."""
        return max(verdicts, key=lambda v: (v.safe is False, v.score if v.score is not None else -1.0))


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
    return Verdict(
        safe=safe,
        score=float(score) if score is not None else None,
        label=str(label) if label is not None else None,
        scanner_request_id=str(request_id) if request_id is not None else None,
    )
