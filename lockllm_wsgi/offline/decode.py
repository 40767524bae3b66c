"""Text preparation and payload decoding for the offline detector.

`prepare` and `squash` give the copies the rules run on (lower-cased, look-alikes mapped to Latin, a
letters-only copy against spaced-out words); `decoded_payloads` finds base64, hex, percent-encoded, HTML-entity and ROT13
segments and yields what they decode to::

    latin, native = prepare("Ｉgnore аll previous")  # -> ("ignore all previous", "ignore аll previous")
    list(decoded_payloads("aWdub3JlIGFsbCBwcmV2aW91cyBpbnN0cnVjdGlvbnM="))  # -> ["ignore all previous ..."]
"""

from __future__ import annotations

import base64
import binascii
import codecs
import html
import re
import unicodedata
from typing import Iterator
from urllib.parse import unquote

# A decoded segment is scanned only if it is mostly printable text: random base64-looking identifiers (hashes,
# keys, URLs) decode to binary noise and must not cost a rule pass or fire anything.
DEFAULT_MIN_PRINTABLE_RATIO = 0.9
# Shortest encoded run worth decoding: shorter runs cannot hold an instruction and are common in normal text.
DEFAULT_MIN_BASE64_CHARS = 16
DEFAULT_MIN_HEX_BYTES = 8
# Bounds the decoding work per scan whatever the input: an attacker gains nothing from a payload longer than
# a prompt, and a 100 kB token of "aaaa..." must not be decoded whole.
DEFAULT_MAX_DECODE_CHARS = 8192
DEFAULT_MAX_SEGMENTS = 16

# Zero-width and bidi controls hide inside words ("ig\u200bnore"); the caller strips them, but cheap to repeat.
_INVISIBLE = dict.fromkeys(
    [0x00AD, 0x034F, 0x061C, 0x115F, 0x1160, 0x17B4, 0x17B5, 0x180E, 0x2060, 0x2061, 0x2062, 0x2063, 0x2064, 0xFEFF]
    + list(range(0x200B, 0x2010))
    + list(range(0x202A, 0x202F))
    + list(range(0x2066, 0x206A)),
    None,
)
# Unicode tag characters (U+E0020..U+E007E) carry invisible ASCII; map them back so the hidden text is read.
_TAGS = {0xE0000 + cp: cp for cp in range(0x20, 0x7F)}
# Curly quotes become ASCII so the rules need only one apostrophe ("I’ve" == "I've").
_QUOTES = {0x2018: "'", 0x2019: "'", 0x201B: "'", 0x2032: "'", 0x201C: '"', 0x201D: '"', 0x201F: '"', 0x2033: '"'}
_CLEAN = {**_INVISIBLE, **_TAGS, **_QUOTES}

# Cyrillic and Greek letters drawn like Latin ones ("іgnоrе" with Cyrillic і, о, е); mapped only in the copy
# the Latin rules read, the multilingual rules read the text unmapped.
_HOMOGLYPHS = str.maketrans(
    {
        "а": "a", "в": "b", "е": "e", "ё": "e", "к": "k", "м": "m", "н": "h", "о": "o", "р": "p", "с": "c",
        "т": "t", "у": "y", "х": "x", "ѕ": "s", "і": "i", "ї": "i", "ј": "j", "ԁ": "d", "һ": "h", "ӏ": "l",
        "ԛ": "q", "ԝ": "w", "ɡ": "g", "ո": "n", "ս": "u",
        "α": "a", "β": "b", "ε": "e", "η": "n", "ι": "i", "κ": "k", "ν": "v", "ο": "o", "ρ": "p", "τ": "t",
        "υ": "u", "χ": "x", "ω": "w", "γ": "y", "ѵ": "v", "ʀ": "r", "ɪ": "i", "ᴏ": "o", "ꜱ": "s",
    }
)
# Leetspeak digits, applied only to the squashed copy where digits carry no other meaning.
_LEET = bytes.maketrans(b"013457@$", b"oieastas")
# Everything but a-z is dropped from the squashed copy: "i g n o r e", "ig-nore" and "ig.nore" become "ignore".
_NOT_LETTERS = bytes(i for i in range(256) if not 97 <= i <= 122)

_BASE64_TOKEN = re.compile(r"[A-Za-z0-9+/_-]{%d,}={0,2}" % DEFAULT_MIN_BASE64_CHARS)
_HEX_TOKEN = re.compile(r"(?:0x)?((?:[0-9a-fA-F]{2}){%d,})" % DEFAULT_MIN_HEX_BYTES)
# Hex written with separators: "\\x69\\x67", "0x69 0x67" or "69 67 6e". A printable byte starts with 2..7, which
# lets the regex engine skip straight to digits; single-character separators keep the runs unambiguous.
_HEX_ESCAPED = re.compile(r"(?:\\x[0-9a-fA-F]{2}){%d,}" % DEFAULT_MIN_HEX_BYTES)
_HEX_SEPARATED = (
    re.compile(r"0x[2-7][0-9a-fA-F](?:[ ,:;]{1,2}0x[0-9a-fA-F]{2}){%d,}" % (DEFAULT_MIN_HEX_BYTES - 1)),
    re.compile(r"[2-7][0-9a-fA-F](?:[ ,:;][0-9a-fA-F]{2}){%d,}" % (DEFAULT_MIN_HEX_BYTES - 1)),
)
_HEX_SEPARATORS = re.compile(r"\\x|0x|[ ,:;]")
_PERCENT = re.compile(r"%[0-9a-fA-F]{2}")
_ENTITY = re.compile(r"&(?:#[0-9]{2,7}|#x[0-9a-fA-F]{2,6}|[a-zA-Z]{2,8});")
# ROT13 of "ignore", "previous", "instruction", "system", "prompt", "disregard", "forget", "reveal": a
# ROT13 payload almost always carries one, so the whole text is rotated only when one is present.
_ROT13_WORDS = ("vtaber", "cerivbhf", "vafgehpgvba", "flfgrz", "cebzcg", "qvfertneq", "sbetrg", "erirny")


def clean(text: str) -> str:
    """NFKC plus invisible-character removal; a no-op (and near free) for plain ASCII."""
    if text.isascii():
        return text
    return unicodedata.normalize("NFKC", text).translate(_CLEAN)


def prepare(text: str) -> tuple[str, str]:
    """Return (latin, native): lower-cased text with look-alikes mapped to Latin, and lower-cased text as
    written (for non-Latin languages)."""
    native = clean(text).lower()
    latin = native if native.isascii() else native.translate(_HOMOGLYPHS)
    return latin, native


def squash(latin: str) -> str:
    """The letters-only copy of `latin`, with leetspeak digits read as letters."""
    # Two passes: bytes.translate deletes before it maps, and the digits must be mapped before deletion.
    return latin.encode("ascii", "ignore").translate(_LEET).translate(None, _NOT_LETTERS).decode("ascii")


def _printable(decoded: str) -> bool:
    if not decoded:
        return False
    # str.isprintable is one C loop; the character count is needed only for text with line breaks or controls.
    if not decoded.isprintable():
        good = sum(1 for c in decoded if c.isprintable() or c in "\n\r\t")
        if good < DEFAULT_MIN_PRINTABLE_RATIO * len(decoded):
            return False
    return any(c.isalpha() for c in decoded)


def _from_bytes(raw: bytes) -> str | None:
    try:
        decoded = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return decoded if _printable(decoded) else None


def _base64(token: str) -> str | None:
    token = token[:DEFAULT_MAX_DECODE_CHARS].rstrip("=")
    token = token[: len(token) - len(token) % 4] if len(token) % 4 == 1 else token
    padded = token + "=" * (-len(token) % 4)
    altchars = b"-_" if ("-" in token or "_" in token) else None
    try:
        raw = base64.b64decode(padded, altchars=altchars, validate=True)
    except (binascii.Error, ValueError):
        return None
    return _from_bytes(raw)


def _hex(digits: str) -> str | None:
    digits = digits[: DEFAULT_MAX_DECODE_CHARS - DEFAULT_MAX_DECODE_CHARS % 2]
    try:
        return _from_bytes(bytes.fromhex(digits[: len(digits) - len(digits) % 2]))
    except ValueError:
        return None


def _long_tokens(text: str) -> Iterator[str]:
    """The distinct whitespace-separated words long enough to hold a payload, in order of first appearance."""
    # str.split is a C loop, far cheaper than a regex scan over every position of a long prompt. A repeated
    # word (a URL, a pasted token) decodes to the same text each time, so it is tried once.
    seen: set[str] = set()
    for word in text.split():
        if len(word) >= DEFAULT_MIN_BASE64_CHARS and word not in seen:
            seen.add(word)
            yield word


def decoded_payloads(text: str) -> Iterator[str]:
    """Yield the printable texts hidden in `text` by a common encoding, at most DEFAULT_MAX_SEGMENTS of them."""
    found = 0
    seen: set[str] = set()

    def fresh(decoded: str | None) -> bool:
        if decoded is None or decoded in seen or decoded == text:
            return False
        seen.add(decoded)
        return True

    for word in _long_tokens(text):
        if found >= DEFAULT_MAX_SEGMENTS:
            return
        for match in _BASE64_TOKEN.finditer(word):
            candidate = match.group()
            # All-lower or all-digit runs are words, paths or hex, not base64 of a sentence.
            decoded = _base64(candidate) if not candidate.islower() and not candidate.isdigit() else None
            if fresh(decoded):
                found += 1
                yield decoded  # type: ignore[misc]
        for match in _HEX_TOKEN.finditer(word):
            decoded = _hex(match.group(1))
            if fresh(decoded):
                found += 1
                yield decoded  # type: ignore[misc]
    # The escaped form has no literal prefix the regex engine can skip to, so it runs only when one is present.
    for pattern in (_HEX_ESCAPED, *_HEX_SEPARATED) if "\\x" in text else _HEX_SEPARATED:
        for match in pattern.finditer(text):
            if found >= DEFAULT_MAX_SEGMENTS:
                return
            decoded = _hex(_HEX_SEPARATORS.sub("", match.group()))
            if fresh(decoded):
                found += 1
                yield decoded  # type: ignore[misc]
    # Percent-encoding and HTML entities are decoded in place over the whole text: the payload is often only
    # partly escaped ("ignore%20previous"), so there is no clean segment to cut out.
    if "%" in text and len(_PERCENT.findall(text, 0, DEFAULT_MAX_DECODE_CHARS)) >= 3:
        decoded = unquote(text)
        if fresh(decoded):
            yield decoded
    if "&" in text and len(_ENTITY.findall(text, 0, DEFAULT_MAX_DECODE_CHARS)) >= 3:
        decoded = html.unescape(text)
        if fresh(decoded):
            yield decoded
    lowered = text.lower()
    if any(word in lowered for word in _ROT13_WORDS):
        decoded = codecs.encode(text, "rot13")
        if fresh(decoded):
            yield decoded
