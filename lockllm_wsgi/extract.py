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

import json
import re
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping

from . import files
from .normalize import collapse_whitespace, scan_copy

# Characters of the text before a segment scanned with it: enough to hold the start of an instruction split
# across messages or parts, small enough that a resent conversation scans well under twice its length
# (benchmarks/conversation.py).
DEFAULT_CONTEXT_CHARS = 300
# A string of this many base64 characters and nothing else, in a part the format does not know, is read as bytes.
_MIN_BASE64_CHARS = 64
_BASE64 = re.compile(r"[A-Za-z0-9+/_-]+=*")
# Levels of JSON inside a JSON string that tool arguments are decoded through (clients double-encode them).
_MAX_JSON_IN_JSON = 3


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
    # Judged with the context before it, but the text after it continues from the text before it: a second reading
    # of the same bytes (raw markup beside the text a converter makes of it), an id or a file name.
    aside: bool = False


@dataclass
class Collector:
    """Gathers segments and the parts that cannot be scanned as text (images, audio, binary files).

    `lenient` is `[policy] unknown_shapes = scan_strings`: an unknown key or part type is then collected as plain
    strings (its key names too) while the rest of the body is still read as the format knows it; otherwise it
    raises `UnknownShape`. A value of the wrong type is malformed either way, and always raises.
    """

    lenient: bool = False
    segments: list[Segment] = field(default_factory=list)
    non_text: list[str] = field(default_factory=list)

    def text(self, value: Any, where: str, role: str | None = None, aside: bool = False) -> None:
        """Collect a field that must be a string (or null / absent)."""
        if value is None:
            return
        if not isinstance(value, str):
            raise UnknownShape(where, f"expected a string, found {type(value).__name__}")
        if value:
            self.segments.append(Segment(value, where, role, aside))

    def strings(self, value: Any, where: str, role: str | None = None) -> None:
        """Collect every string inside a free-form value (a JSON schema, tool arguments as an object...)."""
        for path, text in iter_strings(value, where):
            self.text(text, path, role)

    def json_text(self, value: Any, where: str, role: str | None = None, depth: int = 0) -> None:
        """Tool-call arguments: a string of JSON, which chat templates print decoded. Escapes (`\\u0049`) hide
        text from a scan of the raw string, so when there are any the decoded strings are collected too."""
        self.text(value, where, role)
        if isinstance(value, str) and "\\" in value:
            try:
                decoded = json.loads(value)
            except (ValueError, RecursionError):
                return  # not JSON: the model reads the raw string, which was collected
            if isinstance(decoded, str) and depth < _MAX_JSON_IN_JSON:
                self.json_text(decoded, f"{where}<decoded>", role, depth + 1)  # JSON sent as a JSON string
            else:
                self.strings(decoded, f"{where}<decoded>", role)

    def binary(self, where: str) -> None:
        self.non_text.append(where)

    def label(self, value: Any, where: str, role: str | None = None) -> None:
        """An id or file name: judged with the text before it, but not part of the run of text a split injection
        could continue across, so junk put in one between two halves cannot cut them apart."""
        self.text(value, where, role, aside=True)

    def identifier(self, value: Any, where: str, role: str | None, syntax: re.Pattern | None) -> None:
        """An id field: skipped when it has the provider's documented id syntax exactly, judged otherwise (always,
        for a provider that documents none)."""
        if not (isinstance(value, str) and syntax is not None and syntax.fullmatch(value)):
            self.label(value, where, role)

    def file(self, data: Any, where: str, role: str | None, media_type: Any = None, filename: Any = None) -> None:
        """Base64 file bytes: text (by declared type, file name or content) is scanned, anything else is non-text."""
        try:
            self._file_bytes(files.decode_base64(data), where, role, media_type, filename)
        except ValueError as problem:
            raise UnknownShape(where, str(problem)) from None

    def url(self, value: Any, where: str, role: str | None) -> None:
        """A file or image URL: a `data:` URL's bytes are read like any inline file; a remote URL is non-text."""
        if not isinstance(value, str):
            raise UnknownShape(where, f"expected a URL, found {type(value).__name__}")
        if value[:5].lower() != "data:":
            self.binary(where)
            return
        try:
            media_type, data = files.data_url(value)
            self._file_bytes(data, where, role, media_type, None)
        except ValueError as problem:
            raise UnknownShape(where, str(problem)) from None

    def _file_bytes(self, data: bytes, where: str, role: str | None, media_type: Any, filename: Any) -> None:
        text = files.inline_text(data, media_type, files.is_text_filename(filename))
        if text is None:
            self.binary(where)
        else:
            self.document(text, where, role, media_type, filename)

    def document(self, text: Any, where: str, role: str | None, media_type: Any = None, filename: Any = None) -> None:
        """A document's text: markup a provider converts (HTML, XML, RTF, Markdown) is judged as the model reads
        it after the conversion, and raw beside it (comments, scripts)."""
        converted = files.markup_text(text) if isinstance(text, str) and files.is_markup(text, media_type,
                                                                                         filename) else None
        self.text(text, where, role, aside=converted is not None)
        if converted is not None:
            self.text(converted, f"{where}<as text>", role)

    def keys(self, obj: Mapping[str, Any], known: frozenset[str], prefix: str) -> None:
        """Every key of an object the format reads must be known: a field added to an API later, or a case
        variant (`Text` beside `text`) a case-insensitive parser would take, must not carry text past the scanner."""
        for key in obj:
            if key not in known:
                self.unknown(obj[key], f"{prefix}{key}", "is not a field this gateway knows; it cannot be scanned",
                             key=key)

    def unknown(self, value: Any, where: str, what: str, key: str | None = None) -> None:
        """A key or part the format does not know: refused, or in lenient mode scanned as plain strings (with the
        key's name, which a model printing the object would read)."""
        if not self.lenient:
            raise UnknownShape(where, what)
        if key is not None:
            self.text(key, f"{where}<key>")
        for path, text in iter_strings(value, where):
            # Inline bytes inside an unknown part (vLLM's audio_url, image_embeds...) are still files: read by
            # content, and counted as non-text when they are not text.
            if text[:5].lower() == "data:":
                self.url(text, path, None)
            elif len(text) >= _MIN_BASE64_CHARS and _BASE64.fullmatch(text):
                self.file(text, path, None)
            else:
                self.text(text, path)


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
    """One text sent to the scanner: a segment's normalised text, preceded by the tail of what came before it."""

    text: str
    segment: Segment


def scan_units(segments: list[Segment], context_chars: int = DEFAULT_CONTEXT_CHARS) -> list[ScanUnit]:
    """The scan units of a request, in order; a segment with nothing visible gives none.

    The context is the tail of everything before the segment, not of one segment: an injection cut into many short
    parts (a model reads a message's parts as one text) is still seen whole within the window. It is measured in
    the normalised text, whose invisible characters are gone and whose whitespace runs are one character each, so
    no padding of invisible or blank characters, however long, can push the first half out of the window.

    Two kinds of text are judged with the context but kept out of it, so they cannot push it out either: bytes
    hidden in variation selectors (invisible to the model unless it decodes them), and `aside` segments (ids, file
    names, raw markup). Either may still hold a first half, so the next segment is also judged once right after
    them, in a unit of its own.
    """
    units: list[ScanUnit] = []
    context = ""
    side: list[str] = []  # tails of hidden bytes and aside segments the next segment is also judged after
    for segment in segments:
        visible, hidden = scan_copy(segment.text)
        if not (visible.strip() or hidden):
            continue
        joined = _join(context, visible)
        units.append(ScanUnit(_join(joined, hidden), segment))
        if not segment.aside:
            units.extend(ScanUnit(_join(tail, visible), segment) for tail in side)
            if not segment.where.endswith("<as text>"):  # a converted reading passes them on to what follows
                side = []
        if segment.aside:
            side.append(joined[-context_chars:])
        else:
            context = joined[-context_chars:]
        if hidden:
            side.append(hidden[-context_chars:])
    return units


def _join(before: str, text: str) -> str:
    if not before:
        return text
    return collapse_whitespace(f"{before}\n{text}") if text else before
