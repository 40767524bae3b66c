"""Inline files: what a model reads from the bytes a request carries (base64 fields, `data:` URLs).

Providers read a file as text when its bytes are text, whatever type the client declared: a text file typed
`application/octet-stream`, with no type, or in a `data:` URL whose type is left empty (RFC 2397's default is
`text/plain`) is still text to them. So the decision is made on the content as well as on the declared type::

    inline_text(b"Hello", media_type="application/octet-stream")  # -> "Hello"
    inline_text(png_bytes, media_type="image/png")                # -> None: not text

Markup a provider turns into text before the model reads it (HTML and XML with their entities, RTF with its
escapes, Markdown's inline HTML) has a second reading, `markup_text`, scanned beside the raw text. A text file
that declares a charset other than UTF-8 (UTF-7 shows `+AEk-` to a scanner and `I` to a decoder) is refused, as
are declared text files that are not valid base64 or UTF-8: each such problem is a `ValueError` whose message
says what is wrong, which the collector reports with the field's path.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import html
import re
from typing import Any
from urllib.parse import unquote_to_bytes


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
_UTF8_NAMES = frozenset({"utf-8", "utf8", "us-ascii", "ascii"})
# Declared kinds whose bytes a provider decodes as media or a document, never as text: their byte statistics say
# nothing (a PNG with a large text chunk, an ASCII-only PDF whose text is hex strings), only valid UTF-8 does.
_MEDIA_PREFIXES = ("image/", "audio/", "video/", "application/pdf")
# Magic numbers of binary formats providers read: such bytes are non-text, whatever type they declare.
_BINARY_MAGIC = (b"%PDF-", b"\x89PNG", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"RIFF", b"PK\x03\x04", b"OggS", b"fLaC",
                 b"ID3", b"\x1a\x45\xdf\xa3", b"II*\x00", b"MM\x00*", b"\xd0\xcf\x11\xe0")
# Markup a provider converts to text before the model reads it, by declared type or file name.
_MARKUP_MEDIA = frozenset({"text/html", "application/xhtml+xml", "text/xml", "application/xml", "application/rtf",
                           "text/rtf", "text/markdown", "text/x-markdown"})
_MARKUP_EXTENSIONS = frozenset({"html", "htm", "xhtml", "xml", "rtf", "md", "markdown"})
_ATTRIBUTE_TEXT = re.compile(r"""\b(?:alt|title|aria-label|placeholder|summary)\s*=\s*(?:"([^"]*)"|'([^']*)')""",
                             re.IGNORECASE)
_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF8, "utf-8-sig"),
         (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))
# Share of visible characters from which bytes that are not valid UTF-8 still count as text: a provider decoding
# with replacement shows the model the rest (an attack behind one stray 0xFF byte), while compressed or image
# data decodes to well under half visible characters.
MOSTLY_TEXT = 0.75
_SNIFF_BLOCK = 64 * 1024
_NOT_VISIBLE = re.compile("[\ufffd\x00-\x08\x0e-\x1f\x7f-\x9f]")
_TAG = re.compile(r"<[^<>]*>")
_RTF_TOKEN = re.compile(r"\\'([0-9a-fA-F]{2})|\\u(-?\d+) ?(?:\\'[0-9a-fA-F]{2}|[^\\{}])?|\\([a-zA-Z]+)(-?\d+)? ?"
                        r"|\\([\\{}])|\\[^a-zA-Z]|[{}]")
_RTF_BREAKS = {"par": "\n", "line": "\n", "tab": "\t", "cell": " ", "row": "\n"}


def split_media_type(media_type: Any) -> tuple[str, dict[str, str]]:
    """`text/plain; charset=UTF-8` -> ("text/plain", {"charset": "utf-8"})."""
    if not isinstance(media_type, str):
        return "", {}
    kind, *params = media_type.split(";")
    options = {}
    for param in params:
        name, _, value = param.partition("=")
        options[name.strip().lower()] = value.strip().strip('"').lower()
    return kind.strip().lower(), options


def is_text_media(media_type: Any) -> bool:
    kind, _ = split_media_type(media_type)
    return kind.startswith("text/") or kind in _TEXT_MEDIA or kind.endswith(("+json", "+xml"))


def is_text_filename(filename: Any) -> bool:
    return isinstance(filename, str) and filename.rsplit(".", 1)[-1].strip().lower() in _TEXT_EXTENSIONS


def decode_base64(data: Any) -> bytes:
    """Standard or URL-safe base64, padding optional, whitespace ignored; anything else is refused."""
    if not isinstance(data, str):
        raise ValueError(f"expected base64 data, found {type(data).__name__}")
    compact = re.sub(r"\s+", "", data).replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(compact + "=" * (-len(compact) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("is not valid base64") from None


def _check_charset(options: dict[str, str]) -> None:
    charset = options.get("charset")
    if charset is not None and charset not in _UTF8_NAMES:
        raise ValueError(f"declares charset {charset!r}; the gateway reads text files as UTF-8 only")


def is_binary_format(data: bytes) -> bool:
    """The bytes start with the magic number of a binary format (an MP4/HEIC `ftyp` box at offset 4 too)."""
    return data.startswith(_BINARY_MAGIC) or data[4:8] == b"ftyp"


def bytes_as_text(data: bytes, media_type: Any = None) -> str | None:
    """The text the bytes hold, or None if they are not text.

    Bytes of a known binary format are not text. Valid UTF-8 is text, control characters and all (the scan copy
    drops them). A byte-order mark gives UTF-16 or UTF-32, and the bytes after it are read as UTF-8 too (a decoder
    that ignores the mark shows those). Other bytes are still text when at least MOSTLY_TEXT of what they decode to
    is visible, unless they are declared as media or PDF; the undecodable bytes are dropped."""
    if is_binary_format(data):
        return None
    for bom, codec in _BOMS:
        if data.startswith(bom):
            try:
                text = data.decode(codec)
            except UnicodeDecodeError:
                return None
            after = data[len(bom):]
            return text if codec == "utf-8-sig" else f"{text}\n{after.decode('utf-8', 'replace')}"
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    if split_media_type(media_type)[0].startswith(_MEDIA_PREFIXES) or not _mostly_visible(data):
        return None
    return data.decode("utf-8", "replace").replace("\ufffd", "")


def _mostly_visible(data: bytes) -> bool:
    """Whether at least MOSTLY_TEXT of what the bytes decode to is visible, counted a block at a time (a 5 MiB
    image is never held as one 20 MB string) and given up once the rest could not make up the share."""
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    hidden = total = 0
    for start in range(0, len(data), _SNIFF_BLOCK):
        block = decoder.decode(data[start:start + _SNIFF_BLOCK], final=start + _SNIFF_BLOCK >= len(data))
        total += len(block)
        hidden += len(_NOT_VISIBLE.findall(block))
        if hidden > (1 - MOSTLY_TEXT) * (total + max(0, len(data) - start - _SNIFF_BLOCK)):
            return False
    return total > 0 and hidden <= (1 - MOSTLY_TEXT) * total


def inline_text(data: bytes, media_type: Any, text_declared: bool = False) -> str | None:
    """The text of an inline file's bytes, None for binary content; a declared text file must be UTF-8 text."""
    _check_charset(split_media_type(media_type)[1])
    text = bytes_as_text(data, media_type)
    if text is None and (text_declared or is_text_media(media_type)):
        raise ValueError("is declared as text but is not UTF-8 text")
    return text


def data_url(url: str) -> tuple[str, bytes]:
    """A `data:` URL's media type (RFC 2397: `text/plain` when left empty) and bytes."""
    header, comma, payload = url[5:].partition(",")
    if not comma:
        raise ValueError("is a data URL without a comma")
    base64_encoded = header.lower().endswith(";base64")
    media_type = header[:-len(";base64")] if base64_encoded else header
    if not split_media_type(media_type)[0]:
        media_type = "text/plain" + media_type
    data = decode_base64(payload) if base64_encoded else unquote_to_bytes(payload)
    return media_type, data


def _rtf_token(match: re.Match) -> str:
    hex_byte, code, word, _, literal = match.groups()
    if hex_byte:
        return bytes([int(hex_byte, 16)]).decode("cp1252", "replace")
    if code:
        return chr(int(code) % 0x10000)
    if word:
        return _RTF_BREAKS.get(word, "")
    return literal or ""


def is_markup(text: str, media_type: Any = None, filename: Any = None) -> bool:
    """Whether a provider converts this file before the model reads it: declared (or named) HTML, XML, RTF or
    Markdown, or content that opens as RTF or an HTML document. A plain text file is read as it is."""
    if split_media_type(media_type)[0] in _MARKUP_MEDIA:
        return True
    if isinstance(filename, str) and filename.rsplit(".", 1)[-1].strip().lower() in _MARKUP_EXTENSIONS:
        return True
    head = text.lstrip()[:64].lower()
    return head.startswith(("{\\rtf", "<!doctype html", "<html", "<?xml"))


def markup_text(text: str) -> str | None:
    """What a provider's converter reads from markup (RTF escapes; HTML/XML text, entities and the attribute text
    an HTML-to-Markdown converter keeps, such as `alt`), when it differs from the raw text."""
    if text.lstrip().startswith("{\\rtf"):
        converted = _RTF_TOKEN.sub(_rtf_token, text)
    elif "<" in text or "&" in text:
        # Tags go without a gap: "Ig<b></b>nore" is one word to the model; entities are resolved after the tags,
        # so an escaped "&lt;b&gt;" stays text.
        converted = html.unescape(_TAG.sub("", text))
        attributes = [html.unescape(double or single) for double, single in _ATTRIBUTE_TEXT.findall(text)]
        if attributes:
            converted = "\n".join([converted, *attributes])
    else:
        return None
    return converted if converted != text else None
