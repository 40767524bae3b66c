"""Normalisation of the copy of text that is scanned, so obfuscation is seen as the model sees it.

Only the scan copy changes; the bytes relayed to the provider are never touched::

    normalize_for_scan("ig\u200bnore \U000E0069")  # -> "ignore i"

Unicode tag characters (U+E0020..U+E007E) are invisible but models read them as the ASCII they shadow, so they
become that ASCII; zero-width, bidi and variation-selector characters split words for a classifier without changing
what a model reads, so they are dropped (a run of them hides bytes, which are decoded); NFKC folds full-width and
other compatibility forms; control characters and generic combining marks on ASCII letters are dropped.
"""

from __future__ import annotations

import re
import unicodedata

_DROPPED = (
    [0x00AD, 0x034F, 0x061C, 0x115F, 0x1160, 0x17B4, 0x17B5, 0x180E, 0x3164, 0xFEFF, 0xFFA0]
    + list(range(0x200B, 0x2010))  # zero-width space/joiners, LRM/RLM
    + list(range(0x202A, 0x202F))  # bidi embeddings and overrides
    + list(range(0x2060, 0x2070))  # word joiner, invisible operators, bidi isolates
    + list(range(0xFE00, 0xFE10))  # variation selectors
    + list(range(0xE0100, 0xE01F0))  # variation selectors supplement
    + [0xE0000, 0xE0001, 0xE007F]  # tag block controls (language tag, cancel tag)
    # C0 and C1 control characters other than whitespace: nothing a model reads, but a NUL can cut a text short
    # in a scanner written in C, and controls split words for a classifier.
    + [code for code in range(0x00, 0x20) if chr(code) not in "\t\n\r\x0b\x0c"]
    + list(range(0x7F, 0xA0))
)
_TRANSLATION = {code: None for code in _DROPPED}
_TRANSLATION.update({0xE0000 + code: chr(code) for code in range(0x20, 0x7F)})
# A run of variation selectors is not how any script uses them (one follows a base character): it is a byte
# string hidden after an emoji, one selector a byte ("emoji smuggling"), which a model can decode when told how.
_SELECTOR_RUN = re.compile("[\uFE00-\uFE0F\U000E0100-\U000E01EF]{2,}")
# Generic combining marks (strike-through, "Zalgo" stacks) left on an ASCII letter after NFKC: models read the
# letter through them, classifiers see broken words. Marks of other scripts, and accents NFKC composes, stay.
_MARKS_ON_ASCII = re.compile("(?<=[\x00-\x7f])[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]+")


def _selector_bytes(match: re.Match) -> str:
    data = bytes(ord(c) - 0xFE00 if ord(c) < 0x10000 else ord(c) - 0xE0100 + 16 for c in match.group())
    return " " + data.decode("utf-8", "replace") + " "


def normalize_for_scan(text: str) -> str:
    if text.isascii():
        return text.translate(_TRANSLATION)
    text = _SELECTOR_RUN.sub(_selector_bytes, text)
    return _MARKS_ON_ASCII.sub("", unicodedata.normalize("NFKC", text.translate(_TRANSLATION)))
