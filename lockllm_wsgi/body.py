"""Reading and parsing a request body, strictly and with hard caps, before anything is scanned.

Every problem is a client error raised as a `Refusal` (4xx), never a scanner error, so fail-open can never let a
malformed body through::

    raw, document = read_json_request(environ, max_bytes=10 << 20, max_depth=64)  # or step by step:
    raw = read_body(environ, max_bytes=10 << 20)
    document = parse_json(decode_body(raw, environ.get("HTTP_CONTENT_ENCODING", ""), 10 << 20), max_depth=64)
"""

from __future__ import annotations

import json
import math
import re
import zlib
from typing import Any

from .refusal import Refusal

_READ_CHUNK = 64 * 1024
# A JSON escape of a UTF-16 surrogate (paired ones too, which the walk then finds whole).
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
# The one Content-Type spelling read: JSON, with at most one plain `charset=utf-8`. Parsers disagree on the rest
# (RFC 2231's `charset*=`, a repeated charset, quoting, escapes), and a provider that honours another charset
# (utf-7, latin-1) would read other text than the scanner judged.
_JSON_CONTENT_TYPE = re.compile(r"application/json(?:\s*;\s*charset=utf-?8)?\s*", re.IGNORECASE)


def read_json_request(environ: dict, max_bytes: int, max_depth: int) -> tuple[bytes, dict]:
    """The raw body as received (what is relayed) and the JSON object it holds, checked by every rule here."""
    check_content_type(environ.get("CONTENT_TYPE", ""))
    raw = read_body(environ, max_bytes)
    return raw, parse_json(decode_body(raw, environ.get("HTTP_CONTENT_ENCODING", ""), max_bytes), max_depth)


def check_content_type(value: str) -> None:
    """415 unless the request says UTF-8 JSON in the one spelling every parser reads the same way."""
    if _JSON_CONTENT_TYPE.fullmatch(value.strip()):
        return
    kind = value.split(";", 1)[0].strip().lower()
    if kind != "application/json":
        raise Refusal(415, "unsupported_content_type", f"The body must be application/json, not {kind or 'unspecified'!r}.")
    raise Refusal(415, "unsupported_content_type", f"The Content-Type {value[:100]!r} is not read: send "
                  "'application/json' or 'application/json; charset=utf-8' (the body must be UTF-8).")


def _too_large(max_bytes: int) -> Refusal:
    return Refusal(413, "request_too_large", f"The request body is larger than {max_bytes} bytes; send a smaller request.")


def _incomplete() -> Refusal:
    return Refusal(400, "incomplete_body", "The body ended before its Content-Length or its last chunk, or its "
                   "chunked encoding is broken; send the whole request.")


def read_body(environ: dict, max_bytes: int) -> bytes:
    """The whole body, by Content-Length or, for a chunked request, to its end; 413 past `max_bytes`, 400 when
    the server cannot read it to its end."""
    try:
        return _read_body(environ, max_bytes)
    except OSError:
        # mod_wsgi raises OSError ("request data read error") when Apache gives up on the body: a broken chunk,
        # a client gone before the bytes it promised. The client's doing: a 4xx, logged like any other request.
        raise _incomplete() from None


def _read_body(environ: dict, max_bytes: int) -> bytes:
    stream = environ["wsgi.input"]
    length_text = environ.get("CONTENT_LENGTH", "").strip()
    if length_text:
        if not length_text.isdigit():
            raise Refusal(400, "invalid_content_length", "The Content-Length header is not a number.")
        length = int(length_text)
        if length > max_bytes:
            raise _too_large(max_bytes)
        body = stream.read(length) if length else b""
        if len(body) != length:
            raise _incomplete()
        return body
    # No Content-Length: a chunked body. The server marks the input as terminated (mod_wsgi with
    # WSGIChunkedRequest On), so reading to the end is safe; anything else has no body.
    if not environ.get("wsgi.input_terminated"):
        if "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
            raise Refusal(411, "length_required", "This server cannot read a chunked body; send a Content-Length.")
        return b""
    parts, size = [], 0
    while True:
        part = stream.read(_READ_CHUNK)
        if not part:
            return b"".join(parts)
        size += len(part)
        if size > max_bytes:
            raise _too_large(max_bytes)
        parts.append(part)


def decode_body(raw: bytes, content_encoding: str, max_bytes: int) -> bytes:
    """Undo gzip or deflate (one layer) with a cap on the inflated size; refuse every other coding with 415."""
    codings = [coding.strip().lower() for coding in content_encoding.split(",") if coding.strip()]
    codings = [coding for coding in codings if coding != "identity"]
    if not codings:
        return raw
    if len(codings) > 1 or codings[0] not in ("gzip", "x-gzip", "deflate"):
        raise Refusal(
            415, "unsupported_content_encoding",
            f"Content-Encoding {content_encoding!r} is not supported; send the body plain, gzip or deflate (one layer).",
        )
    # wbits 47 reads gzip or zlib headers; deflate without a zlib header (as some clients send) needs -15. Any
    # valid zlib header (RFC 1950: not only 0x78, smaller windows too) is read as zlib, as a provider following
    # the RFC reads it: guessing raw deflate there would scan other bytes than the provider inflates.
    wbits = 47 if codings[0] != "deflate" or _zlib_header(raw) else -15
    try:
        inflated = _inflate(raw, wbits, max_bytes)
    except zlib.error:
        raise Refusal(400, "invalid_content_encoding", f"The body is not valid {codings[0]} data.") from None
    return inflated


def _zlib_header(raw: bytes) -> bool:
    return (len(raw) >= 2 and raw[0] & 0x0F == 8 and raw[0] >> 4 <= 7 and not raw[1] & 0x20
            and (raw[0] << 8 | raw[1]) % 31 == 0)


def _inflate(raw: bytes, wbits: int, max_bytes: int) -> bytes:
    out, size = [], 0
    while raw:
        inflater = zlib.decompressobj(wbits)
        while raw:
            part = inflater.decompress(raw, max_bytes + 1 - size)
            size += len(part)
            if size > max_bytes:
                raise _too_large(max_bytes)
            out.append(part)
            raw = inflater.unconsumed_tail
        if not inflater.eof:
            raise zlib.error("truncated")
        raw = inflater.unused_data  # gzip allows several members one after the other
    return b"".join(out)


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict:
    document = {}
    for key, value in pairs:
        if key in document:
            # Parsers disagree on which duplicate wins: the scanner and the provider could read different text.
            raise Refusal(400, "duplicate_json_key", f"The JSON body repeats the key {key!r}; send each key once.")
        document[key] = value
    return document


def _reject_constant(name: str) -> Any:
    raise Refusal(400, "invalid_json", f"The JSON body contains {name}, which JSON does not allow.")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise Refusal(400, "invalid_json", f"The JSON body contains the number {text[:40]}, too large for a float.")
    return value


# One decoder with the rules above for every request (json.loads with hooks builds a new one, and its scanner, per
# call); like json's own default decoder, it is shared by every thread.
_DECODER = json.JSONDecoder(object_pairs_hook=_reject_duplicates, parse_constant=_reject_constant,
                            parse_float=_finite_float)


def parse_json(body: bytes, max_depth: int) -> dict:
    """A JSON object from strict UTF-8, with no duplicate keys, NaN, infinities, lone surrogates or deep nesting."""
    if not body:
        raise Refusal(400, "empty_body", "The request has no body; send a JSON object.")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise Refusal(400, "invalid_utf8", f"The body is not valid UTF-8 (byte {error.start}); send UTF-8 JSON.") from None
    try:
        document = _DECODER.decode(text)
    except RecursionError:
        raise Refusal(400, "json_too_deep", f"The JSON body nests deeper than {max_depth} levels.") from None
    except ValueError as error:  # JSONDecodeError, and int() refusing a number of thousands of digits
        raise Refusal(400, "invalid_json", f"The body is not valid JSON: {str(error)[:200]}.") from None
    if not isinstance(document, dict):
        raise Refusal(400, "invalid_json", "The JSON body must be an object ({...}).")
    # The walk over every value is skipped where the text shows it cannot fail: strict UTF-8 holds no surrogate,
    # so only a \uD800-\uDFFF escape can make one, and no value nests deeper than the body has brackets.
    if _SURROGATE_ESCAPE.search(text) or text.count("{") + text.count("[") > max_depth:
        _check_depth_and_text(document, max_depth)
    return document


def _check_depth_and_text(document: dict, max_depth: int) -> None:
    stack: list[tuple[Any, int]] = [(document, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str):
            _check_text(value)
            continue
        if not isinstance(value, (dict, list)):
            continue
        if depth > max_depth:
            raise Refusal(400, "json_too_deep", f"The JSON body nests deeper than {max_depth} levels.")
        if isinstance(value, dict):
            for key, item in value.items():
                _check_text(key)
                stack.append((item, depth + 1))
        else:
            stack.extend((item, depth + 1) for item in value)


def _check_text(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise Refusal(400, "invalid_json", "The JSON body contains a lone surrogate escape (\\ud800-\\udfff).") from None
