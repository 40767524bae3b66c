"""The output guard's own cost per streamed event, in every answer format: framing (SSE, the JSON array, JSON
lines, AWS event-stream) and reading, with a scanner that answers at once, so the figure is the gateway's CPU and
not the scanner's latency.

Each format's fake stream (tests/support/answer_streams.py, the one the tests use) carries `--events` deltas of
`--chars` characters; it is cut into 1 KiB chunks, as a socket delivers it, and read in audit mode (AuditedBody,
read along) and in enforce mode (EnforcedStream, held back and judged every `holdback_chars`)::

    /opt/lockllm-venv/bin/python benchmarks/output_formats.py [--events 2000] [--chars 20] [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))  # the fake streams the tests use

from lockllm_wsgi.config import OutputSettings, ScannerSettings  # noqa: E402
from lockllm_wsgi.formats import FORMATS  # noqa: E402
from lockllm_wsgi.output import AuditedBody, EnforcedStream, Judge, Outcome  # noqa: E402
from lockllm_wsgi.verdict import Verdict  # noqa: E402
from support.answer_streams import WIRES, filler  # noqa: E402

CHUNK_BYTES = 1024


class InstantScanner:
    def __init__(self) -> None:
        self.calls = 0

    def scan(self, texts, deadline, settings):
        self.calls += 1
        return [Verdict(safe=True, score=0.0) for _ in texts]


def chunks(stream: bytes) -> list[bytes]:
    return [stream[at:at + CHUNK_BYTES] for at in range(0, len(stream), CHUNK_BYTES)]


def audit(wire, data: list[bytes]) -> None:
    fmt, path = FORMATS[wire.route], wire.stream_path or wire.path
    body = AuditedBody(iter(data), fmt, path, fmt.stream_framing(path, wire.content_type))
    for _ in body:
        pass
    body.texts()


def enforce(wire, data: list[bytes], scanner: InstantScanner) -> None:
    fmt, path = FORMATS[wire.route], wire.stream_path or wire.path
    judge = Judge(scanner, OutputSettings(mode="enforce"), ScannerSettings(), None, (), 5.0)
    for _ in EnforcedStream(iter(data), fmt.stream_framing(path, wire.content_type), fmt.stream_reader(path), judge,
                            Outcome(), OutputSettings().holdback_chars, False, lambda code, message: (None, b""),
                            fmt.stream_cut_ending(path)):
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--chars", type=int, default=20)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    word = filler(args.chars)
    print(f"{args.events} events of {args.chars} characters, {CHUNK_BYTES}-byte chunks, median of {args.runs} runs")
    print(f"{'format':18} {'bytes/event':>11} {'audit us/event':>15} {'enforce us/event':>17} {'scans':>6}")
    for name, wire in WIRES.items():
        stream = b"".join(wire.events([word] * args.events))
        data = chunks(stream)
        timings = {"audit": [], "enforce": []}
        scanner = InstantScanner()
        for _ in range(args.runs):
            started = time.perf_counter()
            audit(wire, data)
            timings["audit"].append(time.perf_counter() - started)
            scanner.calls = 0
            started = time.perf_counter()
            enforce(wire, data, scanner)
            timings["enforce"].append(time.perf_counter() - started)
        per_event = {mode: statistics.median(values) * 1e6 / args.events for mode, values in timings.items()}
        print(f"{name:18} {len(stream) // args.events:11d} {per_event['audit']:15.1f} {per_event['enforce']:17.1f} "
              f"{scanner.calls:6d}")


if __name__ == "__main__":
    main()
