"""Property: however the provider splits an answer into events and its bytes into chunks, in every answer format,
the enforced stream never delivers a flagged phrase, relays the provider's events intact, and ends with the
format's own error event; a phrase that falls within the first holdback window is not delivered at all."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lockllm_wsgi.config import OutputSettings, ScannerSettings
from lockllm_wsgi.formats import FORMATS
from lockllm_wsgi.formats.answers import CutEnding
from lockllm_wsgi.output import EnforcedStream, Judge, Outcome, StreamCut, answer_texts, judge_answer
from lockllm_wsgi.refusal import Refusal
from lockllm_wsgi.verdict import ScannerUnavailable, Verdict
from support.answer_streams import WIRES
from support.fakes import ATTACK

HOLDBACK = 120


class PhraseScanner:
    """Calls a text unsafe when it holds ATTACK, as the fake LockLLM does."""

    def scan(self, texts, deadline, settings):
        return [Verdict(safe=ATTACK not in text, score=0.97 if ATTACK in text else 0.02) for text in texts]


def enforce(wire, chunks: list[bytes]) -> list[bytes]:
    """What the enforced stream yields, write by write, up to the end or the dropped connection of a format whose
    SDK needs one to raise (cohere v1)."""
    fmt = FORMATS[wire.route]
    path = wire.stream_path or wire.path
    judge = Judge(PhraseScanner(), OutputSettings(mode="enforce"), ScannerSettings(), None, (), 5.0)

    def error(code: str, message: str) -> tuple[str | None, bytes]:
        return fmt.stream_error(path, Refusal(422, code, message), "req_1")

    written: list[bytes] = []
    try:  # += keeps what it took before a raise
        written += EnforcedStream(iter(chunks), fmt.stream_framing(path, wire.content_type), fmt.stream_reader(path),
                                  judge, Outcome(), HOLDBACK, False, error, fmt.stream_cut_ending(path))
    except StreamCut:
        assert fmt.stream_cut_ending(path).drop_connection
    return written


def delivered_text(wire, received: bytes) -> str:
    """The answer's text as the format's own framing and reader read what the client received."""
    fmt = FORMATS[wire.route]
    path = wire.stream_path or wire.path
    framing, reader = fmt.stream_framing(path, wire.content_type), fmt.stream_reader(path)
    pieces = [piece for event in framing.feed(received) for piece in reader.feed(event.name, event.data)]
    return "".join(answer_texts(piece for piece in pieces if piece.channel != "unreadable").values())


@st.composite
def split_answers(draw):
    wire = draw(st.sampled_from(sorted(WIRES.values(), key=lambda wire: wire.name)))
    safe = draw(st.text(alphabet="abc xyz.,", max_size=3 * HOLDBACK))
    cuts = sorted(draw(st.sets(st.integers(1, len(ATTACK) - 1), max_size=4)))
    attack = [ATTACK[start:end] for start, end in zip([0, *cuts], [*cuts, len(ATTACK)])]
    safe_parts = [safe[index:index + 37] for index in range(0, len(safe), 37)]
    texts = [*safe_parts, *attack, draw(st.text(alphabet="abc ", max_size=20))]
    stream = b"".join(wire.events([text for text in texts if text]))
    positions = sorted(draw(st.sets(st.integers(1, max(1, len(stream) - 1)), max_size=12)))
    chunks = [stream[start:end] for start, end in zip([0, *positions], [*positions, len(stream)])]
    return wire, safe, stream, chunks


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(split_answers())
def test_no_flagged_phrase_reaches_the_client_however_the_answer_is_split(case):
    wire, safe, stream, chunks = case
    *relayed, error = enforce(wire, chunks)
    assert stream.startswith(b"".join(relayed))  # whole events as the provider sent them, nothing rewritten
    assert b"output guard" in error
    text = delivered_text(wire, b"".join(relayed))
    assert ATTACK not in text
    if len(safe) + len(ATTACK) < HOLDBACK:
        assert safe.startswith(text)  # within the first window: nothing of the phrase was sent


class DownScanner:
    def scan(self, texts, deadline, settings):
        raise ScannerUnavailable("the scanner is down")


def failing_judgement(scanner, name: str, positions: set[int]) -> tuple[bytes, bytes, Outcome]:
    """(the stream, what an enforced stream with fail_mode = open wrote of it, the outcome) when every judgement
    fails as `scanner` does; the stream's bytes split at `positions`."""
    wire = WIRES[name]
    fmt, path = FORMATS[wire.route], wire.stream_path or wire.path
    stream = b"".join(wire.events([f"part {number} of a long and harmless answer. " * 3 for number in range(12)]))
    cuts = sorted(position for position in positions if position < len(stream))
    chunks = [stream[start:end] for start, end in zip([0, *cuts], [*cuts, len(stream)])]
    judge = Judge(scanner, OutputSettings(mode="enforce"), ScannerSettings(), None, (), 5.0)
    outcome = Outcome()
    relayed = EnforcedStream(iter(chunks), fmt.stream_framing(path, wire.content_type), fmt.stream_reader(path),
                             judge, outcome, HOLDBACK, True, lambda code, message: (None, b"cut"), CutEnding())
    written = b""
    try:
        for chunk in relayed:
            written += chunk
    except StreamCut:
        pass
    return stream, written, outcome


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(sorted(WIRES)), st.sets(st.integers(1, 4000), max_size=12))
def test_a_stream_that_fails_open_is_relayed_byte_for_byte_however_it_is_split(name, positions):
    stream, written, outcome = failing_judgement(DownScanner(), name, positions)
    assert written == stream and outcome.decision == "fail_open"


class ClientCausedFailure:
    """Judging that fails on the client's account: the answer's text refused by the scanner, a flood, a very long
    text timed out (scan.py marks these caused by the request)."""

    def scan(self, texts, deadline, settings):
        raise ScannerUnavailable("scanner answered 400: input refused", caused_by_request=True)


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(sorted(WIRES)), st.sets(st.integers(1, 4000), max_size=12))
def test_a_judgement_failed_on_the_clients_account_never_relays_the_stream_unjudged(name, positions):
    """fail_mode = open is for a sick scanner: as on the request path, what a client can cause is never a
    fail-open, so the stream is cut however it is split."""
    _, written, outcome = failing_judgement(ClientCausedFailure(), name, positions)
    assert outcome.decision == "fail_closed" and b"part 11 of a long" not in written


def test_a_plain_answer_judged_on_the_clients_account_is_not_sent():
    judge = Judge(ClientCausedFailure(), OutputSettings(mode="enforce"), ScannerSettings(), None, (), 5.0)
    outcome = Outcome()
    assert not judge_answer(judge, {"choices[0]": "a harmless answer"}, outcome, fail_open=True)
    assert outcome.decision == "fail_closed"
