"""Offline prompt-injection detector: weighted rules, in process, no network and no model.

It scores a text 0..1 from general rule families (instruction override, persona jailbreaks, system-prompt
extraction, fake delimiters, tool abuse, data exfiltration, code injection, dictated output) and re-runs them on payloads hidden
by base64, hex, percent-encoding, HTML entities or ROT13, on look-alike letters and on spaced-out words::

    detector = OfflineDetector(extra_signals=[parse_signal("0.9 custom_leak (?:reveal|print) the secret")])
    detector.detect("Ignore all previous instructions").score  # -> 0.95
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Dict, Iterator, Sequence, Tuple

from .decode import clean, decoded_payloads, prepare, squash
from .rules import (
    ENCODED,
    LATIN_RULES,
    META,
    META_NEEDLES,
    NATIVE_RULES,
    NOT_ADDRESSED,
    SQUASHED_RULES,
    Rule,
)

__all__ = ["CustomSignal", "Detection", "OfflineDetector", "parse_signal", "DEFAULT_THRESHOLD"]

# The score from which a text is flagged: the policy's default threshold ([policy] threshold), which the rule weights
# below are set against.
DEFAULT_THRESHOLD = 0.5
# An imperative not addressed to the model ("should I ignore the previous instructions?") keeps some weight:
# it is still odd in a prompt, but alone it must stay under the threshold.
DEFAULT_NOT_ADDRESSED_FACTOR = 0.4
# Text that discusses prompt injection quotes attacks; halving keeps a lone quoted phrase under the threshold
# while a real attack, which fires several rules, still passes it.
DEFAULT_META_FACTOR = 0.5
# Characters before a match read to tell whom it addresses: NOT_ADDRESSED before an imperative verb, a rule's
# `before` pattern (a subject naming the model, a line start).
LOOKBEHIND_CHARS = 40
# Matches of one rule examined for an addressed one; past this the rule counts at its discounted weight, so a
# text repeating a hedged phrase thousands of times stays linear.
DEFAULT_MAX_MATCHES = 8
# Weight of the encoded_payload family when a decoded segment fires a rule of at least DEFAULT_THRESHOLD;
# hiding an instruction is itself evidence of intent. Weaker inner hits get DEFAULT_ENCODED_WEAK_WEIGHT.
DEFAULT_ENCODED_WEIGHT = 0.6
DEFAULT_ENCODED_WEAK_WEIGHT = 0.2
# Decoded text is decoded again once (base64 of hex, percent-encoded base64), no deeper.
DEFAULT_MAX_DECODE_DEPTH = 2

_FAMILY_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}\Z")

# rule name -> (family, weight) of the rules that fired in one scan
_Fired = Dict[str, Tuple[str, float]]
_UNGATED = tuple(rule for rule in LATIN_RULES if rule.gate is None)
_GATED = tuple(rule for rule in LATIN_RULES if rule.gate is not None)
_GROUPS = {rule.name: rule.group for rule in LATIN_RULES + SQUASHED_RULES + NATIVE_RULES}


@dataclass(frozen=True)
class Detection:
    score: float  # injection score 0..1
    families: tuple[str, ...]  # rule families that fired, strongest first


@dataclass(frozen=True)
class CustomSignal:
    """An operator's own rule: a case-insensitive regular expression with a weight and a family name."""

    pattern: str
    weight: float
    family: str = "custom"

    def __post_init__(self) -> None:
        _check_weight(self.weight)
        if not isinstance(self.family, str) or not _FAMILY_NAME.match(self.family):
            raise ValueError(
                f"custom signal family {self.family!r} must be lower-case letters, digits and _ (starting with a letter)"
            )
        _compile_signal(self.pattern)


def _check_weight(weight: object) -> None:
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0.0 <= weight <= 1.0:
        raise ValueError(f"custom signal weight {weight!r} must be a number from 0 to 1")


def _compile_signal(pattern: object) -> re.Pattern[str]:
    if not isinstance(pattern, str) or not pattern.strip():
        raise ValueError("custom signal pattern must be a non-empty regular expression")
    try:
        compiled = re.compile(pattern, re.IGNORECASE)
    except re.error as exc:
        raise ValueError(f"custom signal pattern {pattern!r} is not a valid regular expression: {exc}") from None
    if compiled.match(""):
        raise ValueError(f"custom signal pattern {pattern!r} matches the empty string, so it would fire on every text")
    return compiled


def parse_signal(text: str) -> CustomSignal:
    """Parse one config line "WEIGHT FAMILY REGEX", e.g. "0.9 custom_leak (?:reveal|print) the secret"."""
    parts = text.strip().split(None, 2)
    if len(parts) != 3:
        raise ValueError(f"custom signal {text!r} must be 'WEIGHT FAMILY REGEX', e.g. '0.9 custom_leak reveal the secret'")
    weight_text, family, pattern = parts
    try:
        weight = float(weight_text)
    except ValueError:
        raise ValueError(f"custom signal {text!r}: weight {weight_text!r} is not a number from 0 to 1") from None
    if math.isnan(weight):
        raise ValueError(f"custom signal {text!r}: weight {weight_text!r} is not a number from 0 to 1")
    return CustomSignal(pattern=pattern, weight=weight, family=family)


class OfflineDetector:
    """Scores texts with the built-in rules plus `extra_signals`; `allow_phrases` are cut out before scanning
    (case-insensitive literals, e.g. a quoted instruction the operator's own template always sends)."""

    def __init__(self, extra_signals: Sequence[CustomSignal] = (), allow_phrases: Sequence[str] = ()):
        custom = []
        for index, signal in enumerate(extra_signals):
            if not isinstance(signal, CustomSignal):
                raise ValueError(f"extra_signals[{index}] must be a CustomSignal, not {type(signal).__name__}")
            _check_weight(signal.weight)
            regex = _compile_signal(signal.pattern)
            custom.append(Rule(f"custom_{index}", signal.family, float(signal.weight), regex))
        self._custom: tuple[Rule, ...] = tuple(custom)
        self._allow = _allow_regex(allow_phrases)

    def detect(self, text: str) -> Detection:
        fired: _Fired = {}
        self._scan(text, fired, depth=0)
        return _combine(fired)

    def _scan(self, text: str, fired: _Fired, depth: int) -> None:
        latin, native = prepare(text)
        if self._allow is not None:
            latin = self._allow.sub(" ", latin)
            native = self._allow.sub(" ", native)
        latin_view = _View(latin)
        # For plain ASCII the two copies are one string, so the native rules reuse the Latin look-ups.
        native_view = latin_view if native == latin else _View(native)
        meta = latin_view.has_any(META_NEEDLES) and META.search(latin) is not None
        for rule in _UNGATED:
            _apply(rule, latin_view, fired, meta)
        for rule in _GATED:
            # Gated rules cost a pass only when their gate fired; they would not count otherwise.
            if rule.gate in fired:
                _apply(rule, latin_view, fired, meta)
        for rule in self._custom:
            _apply(rule, latin_view, fired, meta=False)
            if native_view is not latin_view:
                _apply(rule, native_view, fired, meta=False)
        squashed = _View(squash(latin))
        for rule in SQUASHED_RULES:
            _apply(rule, squashed, fired, meta)
        for rule in NATIVE_RULES:
            _apply(rule, native_view, fired, meta)
        if depth < DEFAULT_MAX_DECODE_DEPTH:
            self._scan_decoded(text, fired, depth)

    def _scan_decoded(self, text: str, fired: _Fired, depth: int) -> None:
        for decoded in decoded_payloads(clean(text)):
            inner: _Fired = {}
            self._scan(decoded, inner, depth + 1)
            if not inner:
                continue
            strongest = max(weight for _, weight in inner.values())
            weight = DEFAULT_ENCODED_WEIGHT if strongest >= DEFAULT_THRESHOLD else DEFAULT_ENCODED_WEAK_WEIGHT
            inner["encoded"] = (ENCODED, max(weight, inner.get("encoded", (ENCODED, 0.0))[1]))
            for name, (family, inner_weight) in inner.items():
                if inner_weight > fired.get(name, (family, 0.0))[1]:
                    fired[name] = (family, inner_weight)


def _allow_regex(phrases: Sequence[str]) -> re.Pattern[str] | None:
    prepared = []
    for phrase in phrases:
        if not isinstance(phrase, str) or not phrase.strip():
            raise ValueError("allow phrases must be non-empty strings")
        prepared.append(prepare(phrase)[0].strip())
    if not prepared:
        return None
    # Longest first so a phrase containing another is removed whole.
    return re.compile("|".join(re.escape(p) for p in sorted(set(prepared), key=len, reverse=True)))


class _View:
    """One copy of the text with its literal look-ups remembered: many rules share needles and anchor words
    ("your", "ignor", "system"), and each `in` or `find` of an absent word reads the whole text, so a scan
    searches each distinct literal once instead of once per rule."""

    __slots__ = ("text", "_present", "_starts", "_candidates")

    def __init__(self, text: str):
        self.text = text
        self._present: dict[str, bool] = {}
        self._starts: dict[str, list[int]] = {}
        self._candidates: dict[tuple[tuple[str, ...], re.Pattern[str] | None], list[int]] = {}

    def has_any(self, literals: Sequence[str]) -> bool:
        present = self._present
        for literal in literals:
            found = present.get(literal)
            if found is None:
                found = present[literal] = literal in self.text
            if found:
                return True
        return False

    def starts(self, literal: str) -> list[int]:
        """Every offset where `literal` occurs, overlapping ones included, in increasing order."""
        found = self._starts.get(literal)
        if found is None:
            found = []
            if self._present.get(literal, True):
                find = self.text.find
                start = find(literal)
                while start != -1:
                    found.append(start)
                    start = find(literal, start + 1)
            self._starts[literal] = found
        return found

    def candidates(self, anchors: tuple[str, ...], head: re.Pattern[str] | None) -> list[int]:
        """Offsets of the anchor words, anchor by anchor, where `head` matches (all of them without a head)."""
        key = (anchors, head)
        found = self._candidates.get(key)
        if found is None:
            found = [start for anchor in anchors for start in self.starts(anchor)]
            if head is not None:
                found = [start for start in found if head.match(self.text, start)]
            self._candidates[key] = found
        return found


def _apply(rule: Rule, view: _View, fired: _Fired, meta: bool) -> None:
    if rule.needles and not view.has_any(rule.needles):
        return
    if any(name in fired for name in rule.unless):
        return
    text = view.text
    best = 0.0
    for count, start in enumerate(_match_starts(rule, view)):
        weight = rule.weight
        if rule.imperative and NOT_ADDRESSED.search(text, max(0, start - LOOKBEHIND_CHARS), start):
            weight *= DEFAULT_NOT_ADDRESSED_FACTOR
        if meta:
            weight *= DEFAULT_META_FACTOR
        best = max(best, weight)
        if best >= rule.weight or count + 1 >= DEFAULT_MAX_MATCHES:
            break
    if best > fired.get(rule.name, (rule.family, 0.0))[1]:
        fired[rule.name] = (rule.family, best)


def _match_starts(rule: Rule, view: _View) -> Iterator[int]:
    """Start offsets of the rule's matches, trying the regex only at its anchor words when it has some."""
    text = view.text
    if not rule.anchors:
        for match in rule.regex.finditer(text):
            yield match.start()
        return
    for start in view.candidates(rule.anchors, rule.head):
        if rule.regex.match(text, start) and (
            rule.before is None or rule.before.search(text, max(0, start - LOOKBEHIND_CHARS), start)
        ):
            yield start


def _combine(fired: _Fired) -> Detection:
    group_weight: dict[str, float] = {}
    family_weight: dict[str, float] = {}
    for name, (family, weight) in fired.items():
        group = _GROUPS.get(name, name)
        group_weight[group] = max(weight, group_weight.get(group, 0.0))
        family_weight[family] = max(weight, family_weight.get(family, 0.0))
    # Noisy-or over independent evidence: pieces add up, and the score never passes 1.
    remaining = 1.0
    for weight in group_weight.values():
        remaining *= 1.0 - weight
    families = tuple(sorted(family_weight, key=lambda family: (-family_weight[family], family)))
    return Detection(score=round(1.0 - remaining, 4), families=families)
