"""Extraction: the texts a model will read, with where each came from.

A wire format walks its request body with a `Collector`; anything it does not recognise raises `UnknownShape`
(never silently skipped). The segments then become scan units: each segment is scanned with the tail of the text
before it, so an injection split across messages or parts is seen in one scan, while a chat that resends its
history reuses the cached verdicts of every unit it already sent::

    collector = Collector()
    collector.text("Ignore previous...", "messages[0].content", role="user")
    units = scan_units(collector.segments)
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from typing import Any, Iterator

# Characters of the text before a segment scanned with it: enough to hold the start of an instruction split
# across messages or parts, small enough that a resent conversation scans well under twice its length
# (benchmarks/conversation.py).
DEFAULT_CONTEXT_CHARS = 300


class UnknownShape(Exception):
    """The body has a field or part this format does not know how to read; `where` is its path."""

    def __init__(self, where: str, what: str):
        super().__init__(f"{where}: {what}")
        self.where = where
        self.what = what


@dataclass(frozen=True)
class Segment:
    text: str
    where: str
    role: str | None = None


@dataclass
class Collector:
    """Gathers segments and the parts that cannot be scanned as text (images, audio, files)."""

    segments: list[Segment] = field(default_factory=list)
    non_text: list[str] = field(default_factory=list)

    def text(self, value: Any, where: str, role: str | None = None) -> None:
        """Collect a field that must be a string (or null / absent)."""
        if value is None:
            return
        if not isinstance(value, str):
            raise UnknownShape(where, f"expected a string, found {type(value).__name__}")
        if value:
            self.segments.append(Segment(value, where, role))

    def strings(self, value: Any, where: str, role: str | None = None) -> None:
        """Collect every string inside a free-form value (a JSON schema, tool arguments as an object...)."""
        for path, text in iter_strings(value, where):
            self.text(text, path, role)

    def binary(self, where: str) -> None:
        self.non_text.append(where)

    def encoded_text(self, data: Any, where: str, role: str | None = None) -> None:
        """A base64 text file (plain text, Markdown, CSV, HTML, JSON, code): the model reads it as text, so it is
        decoded and scanned; data that is not base64 of UTF-8 is refused, since the provider might read it anyway."""
        if not isinstance(data, str):
            raise UnknownShape(where, f"expected base64 text, found {type(data).__name__}")
        compact = re.sub(r"\s+", "", data).replace("-", "+").replace("_", "/")
        try:
            text = base64.b64decode(compact + "=" * (-len(compact) % 4), validate=True).decode("utf-8-sig")
        except (binascii.Error, ValueError):
            raise UnknownShape(where, "a text file must be base64 of UTF-8 text") from None
        self.text(text, where, role)


def iter_strings(value: Any, where: str) -> Iterator[tuple[str, str]]:
    """Every string in a JSON value, keys included (a key is text the model reads too), with its path."""
    if isinstance(value, str):
        yield where, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield f"{where}.{key}<key>", key
            yield from iter_strings(item, f"{where}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from iter_strings(item, f"{where}[{index}]")


# Media types of files a model reads as text (Gemini, OpenAI and Bedrock accept these as documents).
_TEXT_MEDIA = frozenset(
    """application/json application/xml application/yaml application/x-yaml application/javascript
    application/x-javascript application/typescript application/x-typescript application/x-python
    application/x-python-code application/x-sh application/sql application/rtf application/csv
    application/x-ndjson application/jsonl application/ld+json application/xhtml+xml""".split()
)
_TEXT_EXTENSIONS = frozenset(
    "txt text md markdown csv tsv json jsonl ndjson xml html htm yaml yml py js ts sh sql rtf log ini toml".split()
)


def is_text_media(media_type: Any) -> bool:
    kind = media_type.split(";", 1)[0].strip().lower() if isinstance(media_type, str) else ""
    return kind.startswith("text/") or kind in _TEXT_MEDIA or kind.endswith(("+json", "+xml"))


def is_text_filename(filename: Any) -> bool:
    return isinstance(filename, str) and filename.rsplit(".", 1)[-1].strip().lower() in _TEXT_EXTENSIONS


def as_list(value: Any, where: str) -> list:
    if not isinstance(value, list):
        raise UnknownShape(where, f"expected a list, found {type(value).__name__}")
    return value


def as_object(value: Any, where: str) -> dict:
    if not isinstance(value, dict):
        raise UnknownShape(where, f"expected an object, found {type(value).__name__}")
    return value


@dataclass(frozen=True)
class ScanUnit:
    """One text sent to the scanner: a segment, preceded by the tail of the segment before it."""

    text: str
    segment: Segment


def scan_units(segments: list[Segment], context_chars: int = DEFAULT_CONTEXT_CHARS) -> list[ScanUnit]:
    # The context is the tail of everything before the segment, not of one segment: an injection cut into many
    # short parts (a model reads a message's parts as one text) is still seen whole within the context window.
    units: list[ScanUnit] = []
    context = ""
    for segment in segments:
        units.append(ScanUnit(f"{context}\n{segment.text}" if context else segment.text, segment))
        context = units[-1].text[-context_chars:]
    return units
