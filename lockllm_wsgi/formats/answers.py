"""Answers: what a model wrote, read from a provider's reply, for the output guard.

A format that can read its answers returns, for a plain JSON answer, the list of `Piece`s it holds and, for a
stream, a `Framing` that cuts the bytes into events (server-sent events, the elements of a JSON array, JSON
lines, AWS event-stream messages) and a `StreamReader` that turns each event into the pieces it adds. A piece is
a run of text on a `channel` (one choice's text, one tool call's name and arguments, one content block), so text
that arrives in many deltas is judged as the one text it is::

    framing = SSEEvents()
    for event in framing.feed(chunk):
        pieces = reader.feed(event.name, event.data)  # [Piece("choices[0]", "Hel"), ...]

Nothing here decides anything: the output guard (output.py) judges the pieces.
"""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

# An event ends at a blank line; the three line ends SSE allows.
_EVENT_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")


@dataclass(frozen=True)
class Piece:
    channel: str  # where the text goes: "choices[0]", "choices[0].tool_calls[1]", "content[2]"
    text: str
    tool: bool = False  # a tool call's name or arguments, rather than text shown to a person


@dataclass(frozen=True)
class Event:
    """One complete event of a stream: its bytes as they came (relayed untouched), its name where the framing has
    one (SSE's `event:`, an event-stream message's `:event-type`) and its data as text (what a reader reads)."""

    raw: bytes
    name: str | None
    data: str


class Framing(ABC):
    """How one stream's bytes are cut into events: SSE, the elements of one JSON array, JSON lines, AWS
    event-stream messages. A format picks the framing by the answer's Content-Type (WireFormat.stream_framing);
    the output guard relays and judges event by event, whatever the framing."""

    @abstractmethod
    def feed(self, chunk: bytes) -> Iterator[Event]:
        """The events this chunk completes."""

    @abstractmethod
    def rest(self) -> Event | None:
        """Bytes after the last complete event (a stream cut mid-event, a closing bracket), as one event whose
        data is judged as it is; None when nothing is left."""

    @abstractmethod
    def error_event(self, name: str | None, payload: bytes, opened: bool) -> bytes:
        """An error event in this framing, sent after the events already relayed (`opened`: at least one was);
        `name` is the event's name or exception type where the framing has one."""


class SSEEvents(Framing):
    """Server-sent events: each ends at a blank line."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> Iterator[Event]:
        self._buffer += chunk
        while True:
            end = _EVENT_END.search(self._buffer)
            if end is None:
                return
            raw, self._buffer = self._buffer[:end.end()], self._buffer[end.end():]
            yield Event(raw, *parse_event(raw))

    def rest(self) -> Event | None:
        rest, self._buffer = self._buffer, b""
        return Event(rest, *parse_event(rest)) if rest else None

    def error_event(self, name: str | None, payload: bytes, opened: bool) -> bytes:
        return (f"event: {name}\n".encode() if name else b"") + b"data: " + payload + b"\n\n"


class JSONLines(Framing):
    """One JSON object a line (Cohere's v1 streams)."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> Iterator[Event]:
        self._buffer += chunk
        while b"\n" in self._buffer:
            raw, self._buffer = self._buffer.split(b"\n", 1)
            yield Event(raw + b"\n", None, raw.decode("utf-8", "replace"))

    def rest(self) -> Event | None:
        rest, self._buffer = self._buffer, b""
        return Event(rest, None, rest.decode("utf-8", "replace")) if rest else None

    def error_event(self, name: str | None, payload: bytes, opened: bool) -> bytes:
        return payload + b"\n"


# In a JSON array, outside strings: the characters that open or close a value, and a string's start.
_JSON_STRUCTURE = re.compile(rb'[\[\]{}"]')
_JSON_STRING_END = re.compile(rb'["\\]')


class JSONArrayElements(Framing):
    """The elements of one JSON array that arrives bit by bit (Gemini's streamGenerateContent without alt=sse):
    an event is an object or array element whole, with the `[` or `,` and the blanks before it. Read as JSON is
    read: brackets inside strings (escapes included) do not count."""

    def __init__(self) -> None:
        self._buffer = b""
        self._at = 0  # how far the buffer has been read
        self._depth = 0
        self._in_string = False
        # The depth at which a value closes into an event: 1 in the array, 0 when the answer is one object (a
        # plain answer or an error where a stream was asked for), which is then one event, whole.
        self._event_depth = 1

    def feed(self, chunk: bytes) -> Iterator[Event]:
        self._buffer += chunk
        while self._at < len(self._buffer):
            if self._in_string:
                found = _JSON_STRING_END.search(self._buffer, self._at)
                if found is None:
                    self._at = len(self._buffer)
                    return
                if found.group() == b"\\":
                    if found.end() >= len(self._buffer):  # the escaped character has not arrived yet
                        self._at = found.start()
                        return
                    self._at = found.end() + 1
                    continue
                self._in_string = False
                self._at = found.end()
                continue
            found = _JSON_STRUCTURE.search(self._buffer, self._at)
            if found is None:
                self._at = len(self._buffer)
                return
            self._at = found.end()
            mark = found.group()
            if mark == b'"':
                self._in_string = True
            elif mark in (b"[", b"{"):
                if self._depth == 0:
                    self._event_depth = 1 if mark == b"[" else 0
                self._depth += 1
            else:
                self._depth -= 1
                if self._depth == self._event_depth:  # an element of the array (or the one object) just closed
                    raw, self._buffer = self._buffer[:self._at], self._buffer[self._at:]
                    self._at = 0
                    yield Event(raw, None, raw.decode("utf-8", "replace").lstrip(" \t\r\n[,"))

    def rest(self) -> Event | None:
        rest, self._buffer = self._buffer, b""
        return Event(rest, None, rest.decode("utf-8", "replace").strip(" \t\r\n,]")) if rest else None

    def error_event(self, name: str | None, payload: bytes, opened: bool) -> bytes:
        return (b"," if opened else b"[") + payload + b"]"


@dataclass(frozen=True)
class CutEnding:
    """What follows the error event of a cut stream, for an SDK that yields its provider's error event as an ordinary
    one and raises only when the stream itself breaks (cohere's): `trailer` bytes sent right after the event, and
    `drop_connection`, to end the response without its terminating chunk so the client's HTTP library raises. The
    error event stays the last event a client reads either way. Nothing, for SDKs that raise on the event."""

    trailer: bytes = b""
    drop_connection: bool = False


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


# A whole text of an answer, as an event that repeats it gives it: its channel, the field it came in (a tool call's
# `name` and `arguments` share one channel), the text, and whether it goes to a tool.
Fact = tuple[str, str, str, bool]


class Transcript:
    """What each channel of a stream has received so far, for providers whose closing events repeat the whole
    text their deltas carried (Responses' `*.done`, Cohere v1's `stream-end`): a repeated text adds only what the
    deltas did not carry, so the end of a stream is not judged twice, yet a provider cannot show an SDK's final
    object a text its deltas never held."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str], str] = {}

    def delta(self, channel: str, field: str, text: str, tool: bool = False) -> Piece:
        self._seen[channel, field] = self._seen.get((channel, field), "") + text
        return Piece(channel, text, tool)

    def settle(self, facts: Iterable[Fact]) -> list[Piece]:
        """The rest of each whole text whose beginning the deltas carried; the whole text, on a channel of its own
        (`.final`), when it says something else."""
        pieces = []
        for channel, field, text, tool in facts:
            seen = self._seen.get((channel, field), "")
            if text == seen:
                continue
            self._seen[channel, field] = text
            if text.startswith(seen):
                pieces.append(Piece(channel, text[len(seen):], tool))
            else:
                pieces.append(Piece(f"{channel}.final", text, tool))
        return pieces


class JSONStreamReader(StreamReader):
    """A reader of events whose data is one JSON object each; data that is not one is judged as it is."""

    def feed(self, event: str | None, data: str) -> list[Piece]:
        if not data.strip():
            return []
        payload = json_or_none(data)
        return self.read(event, payload, data) if isinstance(payload, dict) else unreadable(data)

    def read(self, event: str | None, payload: dict, data: str) -> list[Piece]:
        """The pieces of one event's JSON object (`data` is its text, for what the reader does not know)."""
        raise NotImplementedError


def json_or_none(data: str | bytes) -> Any:
    try:
        return json.loads(data)
    except (ValueError, TypeError):
        return None


def unreadable(data: str) -> list[Piece]:
    """Event data a reader does not understand: judged as it is, never skipped."""
    return [Piece("unreadable", data)] if data.strip() else []
