"""Normalisation of the copy of text that is scanned, so obfuscation is seen as the model sees it.

Only the scan copy changes; the bytes relayed to the provider are never touched::

    normalize_for_scan("ig\u200bnore   \U000E0069")  # -> "ignore i"

What is removed is chosen by Unicode property, not by a list, through the `regex` module (which follows the
current Unicode release, newer than the `unicodedata` of older Pythons): every default-ignorable code point and
every format character (`Cf`) is invisible, splits words for a classifier and changes nothing a model reads, so it
is dropped; so are control characters other than whitespace. Two invisible families carry text and are decoded
instead: Unicode tag characters (U+E0020..U+E007E) become the ASCII they shadow, and variation selectors, one
byte each ("emoji smuggling"), are gathered from the whole text, in order, and their bytes appended as a line of
their own (a model told how reads them whether they follow one emoji or one letter each). Blank-looking letters
(Hangul fillers, the Braille blank) become spaces; NFKC folds full-width and other compatibility forms; generic
combining marks on ASCII letters are dropped; and every run of whitespace becomes one space (or one newline), so
padding cannot push text out of the window of context scanned with the next part (see `extract.scan_units`).
"""

from __future__ import annotations

import re
import unicodedata

import regex

# Tag characters shadow printable ASCII; the rest of the tag block (language tag, cancel tag) is default-ignorable.
_TAGS = {0xE0000 + code: chr(code) for code in range(0x20, 0x7F)}
_SELECTORS = regex.compile("[\uFE00-\uFE0F\U000E0100-\U000E01EF]")
# Invisible by property; whitespace controls (tab, newline, vertical tab, form feed, carriage return) stay, as the
# whitespace they are. \p{Cc} covers C0, DEL and C1: nothing a model reads, but a NUL can cut a text short in a
# scanner written in C, and controls split words for a classifier.
_INVISIBLE = regex.compile(r"[[\p{Default_Ignorable_Code_Point}\p{Cf}\p{Cc}]--[\t\n\x0b\x0c\r]]", regex.V1)
# Letters and symbols that render as nothing but are not default-ignorable (or, for the Hangul fillers, are
# letters NFKC maps onto each other): the Braille blank, and the Hangul fillers, read as the gap they show.
_BLANKS = {0x2800: " ", 0x115F: " ", 0x1160: " ", 0x3164: " ", 0xFFA0: " "}
# Any combining mark (strike-through, enclosing circles, "Zalgo" stacks) left on an ASCII character after NFKC:
# models read the letter through them, classifiers see broken words. Marks on other scripts' letters stay.
_MARKS_ON_ASCII = regex.compile(r"(?<=[\x00-\x7f])\p{M}+")
# Latin letters carrying a diacritic, and Latin letters: when most letters of a text wear one ("Íğñóřé"), that is
# decoration, not a language's spelling (French marks well under a fifth of its letters), and it goes.
_DECORATED = regex.compile(r"[a-zA-Z]\p{M}|[À-ɏ]")
_LATIN = regex.compile(r"[\p{Latin}]")
_DECORATION_SHARE = 0.5


def _strip_decoration(text: str) -> str:
    decomposed = unicodedata.normalize("NFD", text)
    marked = len(regex.findall(r"\p{Latin}\p{M}", decomposed))
    if marked < _DECORATION_SHARE * max(1, len(_LATIN.findall(text))):
        return text
    return unicodedata.normalize("NFC", regex.sub(r"(?<=\p{Latin})\p{M}+", "", decomposed))


def _letter_forms() -> dict[int, str]:
    """Letters NFKC does not fold that models read as plain Latin letters: small capitals (ɪɢɴᴏʀᴇ), squared,
    negative squared and negative circled capitals (🅸🅶🅽), and regional indicator symbols (🇮🇬🇳); taken from the
    characters' Unicode names, in the blocks that hold them."""
    forms = {}
    pattern = re.compile(r"(?:LATIN LETTER SMALL CAPITAL|(?:NEGATIVE )?(?:SQUARED|CIRCLED) LATIN CAPITAL LETTER|"
                         r"REGIONAL INDICATOR SYMBOL LETTER) ([A-Z])")
    for start, end in ((0x0250, 0x02B0), (0x1D00, 0x1DC0), (0xA720, 0xA800), (0x1F100, 0x1F200)):
        for code in range(start, end):
            match = pattern.fullmatch(unicodedata.name(chr(code), ""))
            if match:
                forms[code] = match.group(1)
    return forms


_LETTER_FORMS = _letter_forms()
_ASCII_CONTROLS = {code: None for code in range(0x20) if chr(code) not in "\t\n\x0b\x0c\r"} | {0x7F: None}
_LINE_BREAK_RUN = re.compile(r"\s*\n\s*")
_SPACE_RUN = re.compile(r"\s{2,}|[^\S\n ]")
# What the two substitutions would change: two whitespace characters in a row, or one other than a space or newline.
_UNCOLLAPSED = re.compile(r"\s\s|[^\S\n ]")


def _selector_bytes(text: str) -> str:
    """The bytes hidden in the text's variation selectors (VS1-16 are bytes 0-15, VS17-256 bytes 16-255), as text."""
    data = bytes(ord(c) - 0xFE00 if ord(c) < 0x10000 else ord(c) - 0xE0100 + 16 for c in _SELECTORS.findall(text))
    return data.decode("utf-8", "replace")


def collapse_whitespace(text: str) -> str:
    """Every run of whitespace as one newline (when it holds one) or one space."""
    if _UNCOLLAPSED.search(text) is None:
        return text  # most texts of a request: one search is half the time of the two substitutions
    return _SPACE_RUN.sub(" ", _LINE_BREAK_RUN.sub("\n", text))


def _fold(text: str) -> str:
    visible = _INVISIBLE.sub("", text.translate(_TAGS).translate(_BLANKS))
    # NFKC can map a compatibility form onto a character removed above; remove again after it.
    folded = _INVISIBLE.sub("", unicodedata.normalize("NFKC", visible)).translate(_LETTER_FORMS)
    folded = _MARKS_ON_ASCII.sub("", folded)
    if _DECORATED.search(folded):
        folded = _strip_decoration(folded)
    return collapse_whitespace(folded)


def scan_copy(text: str) -> tuple[str, str]:
    """(what the model sees, the text hidden in its variation selectors, "" if none), both normalised."""
    if text.isascii():
        return collapse_whitespace(text.translate(_ASCII_CONTROLS)), ""
    hidden = _fold(_selector_bytes(text)) if _SELECTORS.search(text) else ""
    return _fold(text), hidden if hidden.strip() else ""


def normalize_for_scan(text: str) -> str:
    visible, hidden = scan_copy(text)
    return f"{visible}\n{hidden}" if hidden else visible
