"""Answers: what a model wrote, read from a provider's reply, for the output guard.

A format that can read its answers returns, for a plain JSON answer, the list of `Piece`s it holds and, for a
stream, a `StreamReader` that turns each server-sent event into the pieces it adds. A piece is a run of text on
a `channel` (one choice's text, one tool call's name and arguments, one content block), so text that arrives in
many deltas is judged as the one text it is. The SSE framing is the same for every provider that streams SSE::

    events = SSEEvents()
    for raw, name, data in events.feed(chunk):
        pieces = reader.feed(name, data)  # [Piece("choices[0]", "Hel"), ...]

Nothing here decides anything: the output guard (output.py) judges the pieces.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Iterator

# An event ends at a blank line; the three line ends SSE allows.
_EVENT_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")


@dataclass(frozen=True)
class Piece:
    channel: str  # where the text goes: "choices[0]", "choices[0].tool_calls[1]", "content[2]"
    text: str
    tool: bool = False  # a tool call's name or arguments, rather than text shown to a person


class SSEEvents:
    """Splits a byte stream into complete server-sent events, each with its raw bytes (relayed as they are)."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> Iterator[tuple[bytes, str | None, str]]:
        self._buffer += chunk
        while True:
            end = _EVENT_END.search(self._buffer)
            if end is None:
                return
            raw, self._buffer = self._buffer[:end.end()], self._buffer[end.end():]
            yield (raw, *parse_event(raw))

    def rest(self) -> bytes:
        """Bytes after the last complete event (a stream cut mid-event)."""
        rest, self._buffer = self._buffer, b""
        return rest


def parse_event(raw: bytes) -> tuple[str | None, str]:
    """The event's name (None when it has none) and its data lines joined, as the SSE spec reads them."""
    name, data = None, []
    for line in raw.decode("utf-8", "replace").splitlines():
        if not line or line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "event":
            name = value
        elif field == "data":
            data.append(value)
    return name, "\n".join(data)


class StreamReader:
    """Turns one stream's events into pieces; a subclass per format. Data it cannot read is judged as text."""

    def feed(self, event: str | None, data: str) -> list[Piece]:
        raise NotImplementedError


def json_or_none(data: str | bytes) -> Any:
    try:
        return json.loads(data)
    except (ValueError, TypeError):
        return None


def unreadable(data: str) -> list[Piece]:
    """Event data a reader does not understand: judged as it is, never skipped."""
    return [Piece("unreadable", data)] if data.strip() else []
