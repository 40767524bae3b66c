"""Normalisation of the copy of text that is scanned, so obfuscation is seen as the model sees it.

Only the scan copy changes; the bytes relayed to the provider are never touched::

    normalize_for_scan("ig\u200bnore \U000E0069")  # -> "ignore i"

Unicode tag characters (U+E0020..U+E007E) are invisible but models read them as the ASCII they shadow, so they
become that ASCII; zero-width, bidi and variation-selector characters split words for a classifier without changing
what a model reads, so they are dropped; NFKC folds full-width and other compatibility forms.
"""

from __future__ import annotations

import unicodedata

_DROPPED = (
    [0x00AD, 0x034F, 0x061C, 0x115F, 0x1160, 0x17B4, 0x17B5, 0x180E, 0x3164, 0xFEFF, 0xFFA0]
    + list(range(0x200B, 0x2010))  # zero-width space/joiners, LRM/RLM
    + list(range(0x202A, 0x202F))  # bidi embeddings and overrides
    + list(range(0x2060, 0x2070))  # word joiner, invisible operators, bidi isolates
    + list(range(0xFE00, 0xFE10))  # variation selectors
    + list(range(0xE0100, 0xE01F0))  # variation selectors supplement
    + [0xE0000, 0xE0001, 0xE007F]  # tag block controls (language tag, cancel tag)
)
_TRANSLATION = {code: None for code in _DROPPED}
_TRANSLATION.update({0xE0000 + code: chr(code) for code in range(0x20, 0x7F)})


def normalize_for_scan(text: str) -> str:
    return unicodedata.normalize("NFKC", text.translate(_TRANSLATION))
