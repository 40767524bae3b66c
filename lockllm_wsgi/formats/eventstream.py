"""AWS event-stream framing (Bedrock's ConverseStream and InvokeModelWithResponseStream), for the output guard.

Messages are parsed by botocore's own parser (`EventStreamBuffer`: prelude, headers, payload and both CRCs
checked), so the gateway reads what boto3 will read; the `aws` extra brings botocore, and without it these
streams are not read (`available()` is False and the format calls them unread). An error is written as an
exception message, with its prelude and CRCs, which boto3 raises as `EventStreamError` while iterating::

    framing = EventStreamMessages()
    for event in framing.feed(chunk):  # Event(raw, "contentBlockDelta", '{"delta": {"text": "Hel"}, ...}')
        ...
"""

from __future__ import annotations

import struct
import zlib
from typing import Iterator

from .answers import Event, Framing

# Header value type 7: a string, its length in two bytes (the encoding boto3 and Bedrock use for every header).
_STRING = 7


def available() -> bool:
    """Whether botocore, which parses these streams, is installed."""
    try:
        import botocore.eventstream  # noqa: F401 - the aws extra
    except ImportError:
        return False
    return True


def encode_message(headers: dict[str, str], payload: bytes) -> bytes:
    """One event-stream message: prelude (total and headers length, and its CRC-32), headers, payload, CRC-32."""
    encoded = b"".join(struct.pack("B", len(name)) + name.encode() + struct.pack(">BH", _STRING, len(value.encode()))
                       + value.encode() for name, value in headers.items())
    prelude = struct.pack(">II", 16 + len(encoded) + len(payload), len(encoded))
    message = prelude + struct.pack(">I", zlib.crc32(prelude)) + encoded + payload
    return message + struct.pack(">I", zlib.crc32(message))


class EventStreamMessages(Framing):
    """Binary event-stream messages; an event's name is its `:event-type`, or `exception:TYPE` for the
    provider's own exceptions and errors. Bytes that do not parse (a bad CRC) end the reading: they and all that
    follows are one event at the end, judged as text, never relayed as if read."""

    def __init__(self) -> None:
        from botocore.eventstream import EventStreamBuffer

        self._parser = EventStreamBuffer()
        self._raw = b""
        self._broken = False

    def feed(self, chunk: bytes) -> Iterator[Event]:
        from botocore.eventstream import ParserError

        self._raw += chunk
        if self._broken:
            return
        self._parser.add_data(chunk)
        try:
            for message in self._parser:
                size = message.prelude.total_length
                raw, self._raw = self._raw[:size], self._raw[size:]
                headers = message.headers
                kind = headers.get(":message-type", "event")
                name = headers.get(":event-type") if kind == "event" else \
                    f"exception:{headers.get(':exception-type') or headers.get(':error-code')}"
                yield Event(raw, name, message.payload.decode("utf-8", "replace"))
        except ParserError:
            self._broken = True

    def rest(self) -> Event | None:
        rest, self._raw = self._raw, b""
        return Event(rest, None, rest.decode("utf-8", "replace")) if rest else None

    def error_event(self, name: str | None, payload: bytes, opened: bool) -> bytes:
        return encode_message({":message-type": "exception", ":exception-type": name or "internalServerException",
                               ":content-type": "application/json"}, payload)
