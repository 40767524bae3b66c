"""The output guard: judging what the model answers, streams included, without buffering them.

Each answer's texts (per choice, content block or tool call, read by the route's format: formats/answers.py) are
judged twice: by the configured scanner, as the request's texts are, and locally for system-prompt leakage (the
answer reproduces `[output] leak_min_chars` characters in a row of the request's system or developer text).

- `AuditedBody` (audit mode) relays every chunk as it arrives and only reads along; the answer is judged once it
  has ended, off the request thread (`judge_later`), so the client waits for nothing.
- `EnforcedStream` (enforce mode, streams in any framing: formats/answers.py) holds back at most `holdback_chars`
  of text not yet judged, judges it with the tail of what came before (so a phrase split across events is judged
  whole before any of it is sent), and on a finding closes the upstream and ends the stream with the provider's
  own error event.
- `judge_answer` (enforce mode, plain JSON) judges a whole answer before it is sent.

Not for answers a format cannot read (WireFormat.answer_kind "unread"): the app relays those unjudged in audit
mode and refuses the call in enforce mode::

    judge = Judge(scanner, settings, system_texts=("You are ...",))
    framing = fmt.stream_framing(path, "text/event-stream")
    body = EnforcedStream(upstream_body, framing, fmt.stream_reader(path), judge, outcome, 300, False, error,
                          fmt.stream_cut_ending(path))
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Sequence

from .config import OutputSettings, ScannerSettings
from .formats.answers import Framing, Piece, StreamReader, json_or_none, unreadable
from .normalize import collapse_whitespace, scan_copy
from .policy import unsafe_reasons_for
from .verdict import ScannerUnavailable

if TYPE_CHECKING:
    from .formats.answers import CutEnding

log = logging.getLogger(__name__)

LEAK = "system_prompt_leak"
OUTPUT_BLOCKED = "output_blocked"
# Characters of a channel's judged text judged again with the next window: a phrase cut at a window's edge is
# seen whole, and a leaked run of leak_min_chars is never split between two windows.
MIN_OVERLAP_CHARS = 300
# A plain answer larger than this is not read whole in enforce mode (it is refused as not judgeable): answers are
# kilobytes; a gateway thread must not hold hundreds of megabytes for one.
MAX_JUDGED_ANSWER_BYTES = 32 * 1024 * 1024
# Threads that judge audited answers after they end: the request's thread is free at once; the scan client's own
# pool does the scanning, so a few threads suffice.
AUDIT_JUDGE_THREADS = 4


@dataclass
class Outcome:
    """What the output guard found, for the request record (log line, audit record, metrics)."""

    decision: str | None = None  # pass, flagged (audit), blocked, fail_open, fail_closed, unjudged
    findings: list[str] = field(default_factory=list)
    trigger: str | None = None  # the channel that held the finding: "choices[0]", "content[1]"
    scans: int = 0
    ms: float = 0.0
    chars: int = 0


class Judge:
    """Judges answer texts with the request's scanner settings and threshold, and for leakage of its system texts."""

    def __init__(self, scanner: Any, settings: OutputSettings, scanner_settings: ScannerSettings,
                 threshold: float | None, system_texts: Sequence[str], timeout: float):
        self.scanner = scanner
        self.settings = settings
        self.scanner_settings = scanner_settings
        self.threshold = threshold
        self.timeout = timeout
        self.leak_min = settings.leak_min_chars
        self._system = [collapse_whitespace(text) for text in system_texts
                        if len(collapse_whitespace(text)) >= self.leak_min]

    @property
    def overlap(self) -> int:
        return max(MIN_OVERLAP_CHARS, self.leak_min)

    def findings(self, texts: dict[str, str], outcome: Outcome) -> list[str]:
        """The findings of one judgement of each channel's text; raises ScannerUnavailable."""
        started = time.monotonic()
        found: list[str] = []
        channels = [channel for channel, text in texts.items() if text.strip()]
        try:
            for channel in channels:
                if self._system and leaked(texts[channel], self._system, self.leak_min):
                    found.append(LEAK)
                    outcome.trigger = outcome.trigger or channel
            scanned = []
            for channel in channels:
                visible, hidden = scan_copy(texts[channel])
                if visible.strip() or hidden:
                    scanned.append((channel, f"{visible}\n{hidden}" if hidden else visible))
            if scanned:
                verdicts = self.scanner.scan([text for _, text in scanned], deadline=time.monotonic() + self.timeout,
                                             settings=self.scanner_settings)
                outcome.scans += len(verdicts)
                for (channel, _), verdict in zip(scanned, verdicts):
                    reasons = unsafe_reasons_for(verdict, self.threshold, self.scanner_settings)
                    if reasons:
                        found += [reason for reason in reasons if reason not in found]
                        outcome.trigger = outcome.trigger or channel
        finally:
            outcome.ms = round(outcome.ms + (time.monotonic() - started) * 1000, 2)
        return found


def leaked(answer: str, system_texts: Sequence[str], min_chars: int) -> bool:
    """Whether `answer` holds a run of at least `min_chars` characters of one of `system_texts` (whitespace
    collapsed in both). Any such run contains a whole block of min_chars // 2 characters aligned in the system
    text, so only those blocks are looked for, and each hit is extended both ways to measure the run."""
    answer = collapse_whitespace(answer)
    if len(answer) < min_chars:
        return False
    size = max(1, min_chars // 2)
    for system in system_texts:
        for start in range(0, len(system) - size + 1, size):
            block = system[start:start + size]
            at = answer.find(block)
            while at != -1:
                left = 0
                while left < min(at, start) and answer[at - left - 1] == system[start - left - 1]:
                    left += 1
                right = size
                while at + right < len(answer) and start + right < len(system) and \
                        answer[at + right] == system[start + right]:
                    right += 1
                if left + right >= min_chars:
                    return True
                at = answer.find(block, at + 1)
    return False


def answer_texts(pieces: Iterable[Piece]) -> dict[str, str]:
    """Each channel's whole text, in order of first appearance."""
    texts: dict[str, str] = {}
    for piece in pieces:
        texts[piece.channel] = texts.get(piece.channel, "") + piece.text
    return texts


def read_json_answer(fmt: Any, path: str, body: bytes) -> dict[str, str]:
    """The channels of a plain answer; a body that is not the JSON the format knows is judged as it is."""
    answer = json_or_none(body)
    if answer is None:
        return answer_texts(unreadable(body.decode("utf-8", "replace")))
    return answer_texts(fmt.answer_pieces(path, answer))


def judge_answer(judge: Judge, texts: dict[str, str], outcome: Outcome, fail_open: bool) -> bool:
    """Judge a whole answer; True when it may be sent. Fills `outcome` (the fail mode applies to an outage)."""
    outcome.chars = sum(len(text) for text in texts.values())
    try:
        outcome.findings = judge.findings(texts, outcome)
    except ScannerUnavailable as problem:
        log.debug("output judging failed: %s", problem)
        relay = problem.fails_open(fail_open)
        outcome.decision = "fail_open" if relay else "fail_closed"
        return relay
    outcome.decision = "blocked" if outcome.findings else "pass"
    return not outcome.findings


class AuditedBody:
    """Relays the answer's chunks as they arrive and reads along (a stream's events, cut by its framing, or a JSON
    body); `texts()` gives what was read once the answer has ended. The relayed bytes are the upstream's,
    untouched."""

    def __init__(self, body: Any, fmt: Any, path: str, framing: Framing | None):
        self._body = body
        self._fmt = fmt
        self._path = path
        self._framing = framing
        self._reader: StreamReader | None = fmt.stream_reader(path) if framing is not None else None
        self._pieces: list[Piece] = []
        self._raw: list[bytes] = []
        self._raw_size = 0

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._body:
            yield chunk
            if self._framing is not None and self._reader is not None:
                for event in self._framing.feed(chunk):
                    self._pieces += self._reader.feed(event.name, event.data)
            elif self._raw_size <= MAX_JUDGED_ANSWER_BYTES:
                self._raw.append(chunk)
                self._raw_size += len(chunk)

    def texts(self) -> dict[str, str] | None:
        """The answer's channels; None when it was too large to read whole."""
        if self._framing is not None and self._reader is not None:
            rest = self._framing.rest()
            return answer_texts(self._pieces + (self._reader.feed(rest.name, rest.data) if rest else []))
        if self._raw_size > MAX_JUDGED_ANSWER_BYTES:
            return None
        return read_json_answer(self._fmt, self._path, b"".join(self._raw))

    def close(self) -> None:
        close = getattr(self._body, "close", None)
        if close is not None:
            close()


_audit_pool: ThreadPoolExecutor | None = None


def judge_later(work: Callable[[], None]) -> None:
    """Run an audited answer's judgement (and the request's log line after it) off the request thread."""
    global _audit_pool
    if _audit_pool is None:
        _audit_pool = ThreadPoolExecutor(max_workers=AUDIT_JUDGE_THREADS, thread_name_prefix="lockllm-output")
    _audit_pool.submit(work)


class StreamCut(ConnectionAbortedError):
    """Raised to the WSGI server after a cut stream's error event where the format's SDK raises only on a broken
    stream (CutEnding.drop_connection): the server ends the response without its terminating chunk. A
    ConnectionError, which servers such as werkzeug's treat as a dropped connection rather than an app failure."""


class EnforcedStream:
    """A streamed answer relayed event by event once judged: at most `holdback_chars` of unjudged text is held;
    on a finding (or a scanner outage with fail_mode = closed) the upstream is closed and the stream ends with
    the provider's own mid-stream error, `error(code, message)` -> (name, payload), in the stream's framing, then
    what the format's SDK needs to raise on it (`ending`: formats/answers.py). No end marker is ever invented."""

    def __init__(self, body: Any, framing: Framing, reader: StreamReader, judge: Judge, outcome: Outcome,
                 holdback_chars: int, fail_open: bool, error: Callable[[str, str], tuple[str | None, bytes]],
                 ending: CutEnding):
        self._body = body
        self._framing = framing
        self._reader = reader
        self._judge = judge
        self._outcome = outcome
        self._holdback = holdback_chars
        self._fail_open = fail_open
        self._error = error
        self._ending = ending
        self._pending: dict[str, str] = {}
        self._tails: dict[str, str] = {}
        self._judging = True  # False after a fail-open: the rest is relayed unjudged
        self._opened = False  # whether an event has been relayed

    def __iter__(self) -> Iterator[bytes]:
        held: list[bytes] = []
        pending_chars = 0
        self._outcome.decision = "pass"
        for chunk in self._body:
            if not self._judging:
                yield chunk
                continue
            for event in self._framing.feed(chunk):
                if not self._judging:  # failed open on this chunk's earlier event
                    yield event.raw
                    continue
                held.append(event.raw)
                pending_chars += self._add(self._reader.feed(event.name, event.data))
                if pending_chars >= self._holdback or (held and not pending_chars):
                    if pending_chars and not self._judged():
                        yield from self._cut()
                        return
                    pending_chars = 0
                    self._opened = True
                    yield b"".join(held)
                    held = []
            if not self._judging:  # failed open within this chunk: its unfinished event goes too, then all as is
                rest = self._framing.rest()
                yield rest.raw if rest is not None else b""
        rest = self._framing.rest()
        if rest is not None and self._judging:
            held.append(rest.raw)
            pending_chars += self._add(self._reader.feed(rest.name, rest.data))
        if pending_chars and self._judging and not self._judged():
            yield from self._cut()
            return
        if held:
            yield b"".join(held)

    def _add(self, pieces: list[Piece]) -> int:
        added = 0
        for piece in pieces:
            self._pending[piece.channel] = self._pending.get(piece.channel, "") + piece.text
            added += len(piece.text)
        self._outcome.chars += added
        return added

    def _judged(self) -> bool:
        """Judge the pending text of every channel with its tail; True when it may be sent."""
        windows = {channel: self._tails.get(channel, "") + text for channel, text in self._pending.items()}
        self._pending = {}
        overlap = self._judge.overlap
        self._tails.update((channel, window[-overlap:]) for channel, window in windows.items())
        try:
            found = self._judge.findings(windows, self._outcome)
        except ScannerUnavailable as problem:
            log.debug("output judging failed mid-stream: %s", problem)
            relay = problem.fails_open(self._fail_open)
            self._outcome.decision = "fail_open" if relay else "fail_closed"
            self._judging = False
            return relay
        if found:
            self._outcome.findings = found
            self._outcome.decision = "blocked"
            return False
        return True

    def _cut(self) -> Iterator[bytes]:
        self.close()  # nothing more is read from the provider
        if self._outcome.decision == "fail_closed":
            error = self._error("scanner_unavailable", "The answer could not be judged (the prompt scanner is "
                                "unavailable), so the rest of it was not sent; try again shortly.")
        else:
            error = self._error(OUTPUT_BLOCKED, "The model's answer was stopped by the gateway's output guard ("
                                f"{', '.join(self._outcome.findings)}); the part already sent had been judged safe.")
        yield self._framing.error_event(*error, opened=self._opened) + self._ending.trailer
        if self._ending.drop_connection:
            raise StreamCut("the output guard cut this stream after its error event and drops the connection on "
                            "purpose, so that the client's SDK raises")

    def close(self) -> None:
        close = getattr(self._body, "close", None)
        if close is not None:
            close()

