"""The model's view of a request: what a model reads once the provider has decoded the body.

Written independently of the gateway's extraction: it walks the whole JSON value, resolves what providers resolve
(base64 files and `data:` URLs whose bytes are text, HTML/XML entities and tags, RTF escapes, tool-call arguments
printed as the JSON a chat template makes of them, Unicode tag characters read as ASCII, bytes hidden in variation
selectors) and drops what a model never sees (invisible format characters, the structure: keys, roles, types,
ids, model names). `squash` then removes case and whitespace, so "in the model view" means "the model can read it
as one run of text, whatever invisible padding, part or message boundary lies between its pieces".
"""

from __future__ import annotations

import base64
import binascii
import html
import json
import re
import unicodedata
from typing import Any
from urllib.parse import unquote_to_bytes

import regex

# Values a model never reads: the request's structure and settings, not its text.
STRUCTURE_KEYS = frozenset(
    """type role model media_type mimeType mime_type format id call_id tool_call_id toolUseId tool_use_id status
    detail stop stop_sequences stopSequences max_tokens filename file_id""".split()
)
BASE64_KEYS = frozenset({"data", "bytes", "file_data"})
# Free-form JSON values (tool inputs and results, documents) are printed to the model as JSON text, keys and all.
FREE_FORM_KEYS = frozenset({"input", "args", "response", "document"})
_INVISIBLE = regex.compile(r"[[\p{Default_Ignorable_Code_Point}\p{Cf}\p{Cc}]--[\t\n\r]]", regex.V1)
_SELECTOR = regex.compile("[\uFE00-\uFE0F\U000E0100-\U000E01EF]")


def read_as_model(text: str) -> str:
    """A text as a model reads it: tags as ASCII, selector bytes decoded and appended, invisibles gone, NFKC."""
    hidden = bytes(ord(c) - 0xFE00 if ord(c) < 0x10000 else ord(c) - 0xE0100 + 16 for c in _SELECTOR.findall(text))
    text = "".join(chr(ord(c) - 0xE0000) if 0xE0020 <= ord(c) <= 0xE007E else c for c in text)
    text = unicodedata.normalize("NFKC", _INVISIBLE.sub("", text)).replace("\u2800", " ")
    return text + "\n" + _INVISIBLE.sub("", hidden.decode("utf-8", "replace"))


def _markup(text: str) -> str:
    if text.startswith("{\\rtf"):
        text = re.sub(r"\\'([0-9a-f]{2})", lambda m: chr(int(m.group(1), 16)), text)
        text = re.sub(r"\\u(\d+)\??", lambda m: chr(int(m.group(1))), text)
        return re.sub(r"\\[a-z]+\d* ?|[{}]", "", text)
    return html.unescape(re.sub(r"<[^<>]*>", "", text))


def _file_text(data: bytes) -> str | None:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _decoded(key: str, value: str) -> str:
    if value.startswith("data:"):
        header, _, payload = value.partition(",")
        data = base64.b64decode(payload) if header.endswith(";base64") else unquote_to_bytes(payload)
        return _markup(_file_text(data) or "")
    if key in BASE64_KEYS:
        try:
            text = _file_text(base64.b64decode(value, validate=True))
        except (binascii.Error, ValueError):
            text = None
        return _markup(text) if text is not None else value
    if key == "arguments":
        try:
            return json.dumps(json.loads(value), ensure_ascii=False)
        except ValueError:
            return value
    return value


def texts(value: Any, key: str = "") -> list[str]:
    """Every text the model reads in a JSON value, in document order."""
    if isinstance(value, str):
        return [] if key in STRUCTURE_KEYS else [read_as_model(_decoded(key, value))]
    if isinstance(value, dict) and key in FREE_FORM_KEYS:
        return [read_as_model(json.dumps(value, ensure_ascii=False))]
    if isinstance(value, dict):
        return [text for name, item in value.items() for text in texts(item, name)]
    if isinstance(value, list):  # a list's strings share its key (base64 data...); its objects start afresh
        return [text for item in value for text in texts(item, "" if isinstance(item, dict) else key)]
    return []


def squash(text: str) -> str:
    return re.sub(r"\s+", "", text).lower()


def model_view(body: dict) -> str:
    return squash("".join(texts(body)))
