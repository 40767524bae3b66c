"""Where a cache miss's time goes, phase by phase: the call loop of callloop.py on fresh texts, with the scan
client's steps timestamped (the request thread hands the text to a scan worker, which looks the verdict cache up,
sends the scan call through the requests session and hands the verdict back), and the same again with the
verdict cache's writes dropped, to show what the writer thread's work costs the requests around it, and a cache
hit's phases beside them (one text repeated: no scan worker, no call). A closed loop by default; `--pause-ms N`
leaves N ms between requests, as callloop.py does::

    /opt/lockllm-venv/bin/python benchmarks/miss_phases.py [--count 600] [--pause-ms 3]

Medians over the requests after the first 100; same run, same fakes.
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import statistics
import sys
import time
from contextlib import contextmanager
from math import isnan, nan

import requests

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._harness import Stack, chat_body, make_app, table  # noqa: E402
from benchmarks.callloop import call  # noqa: E402
from lockllm_wsgi import scan, verdict_cache  # noqa: E402

PHASES = [
    ("request start", "scan asked", "body read, parsed, texts extracted"),
    ("scan asked", "worker starts", "hand-off to a scan worker"),
    ("worker starts", "scan call sent", "cache key, SQLite lookup, request prepared"),
    ("scan call sent", "verdict received", "the scan call (requests session, fake scanner)"),
    ("verdict received", "worker ends", "verdict parsed, held for the writer, memoised"),
    ("worker ends", "scan returns", "hand-off back to the request thread"),
    ("scan returns", "request end", "policy, relay, request log line, metrics"),
]
SKIPPED = 100


@contextmanager
def timestamped(marks: dict[str, list[float]]):
    """Wrap the scan client's steps so each appends its start and end time to `marks`."""
    wrapped = [(scan.LockLLMScanner, "scan", "scan asked", "scan returns"),
               (scan.LockLLMScanner, "_scan_piece", "worker starts", "worker ends"),
               (requests.Session, "send", "scan call sent", "verdict received")]
    originals = []
    for owner, name, before, after in wrapped:
        original = getattr(owner, name)
        originals.append((owner, name, original))

        def timed(*args, _original=original, _before=before, _after=after, **kwargs):
            marks[_before].append(time.perf_counter())
            try:
                return _original(*args, **kwargs)
            finally:
                marks[_after].append(time.perf_counter())

        setattr(owner, name, timed)
    try:
        yield
    finally:
        for owner, name, original in originals:
            setattr(owner, name, original)


def phases(stack: Stack, count: int, writes: bool, pause: float, fresh: bool = True) -> dict[str, float]:
    """Median time of each phase; with `fresh` False every request repeats one text (a cache hit after the first),
    which has only the first and the last phase."""
    marks: dict[str, list[float]] = {name: [] for phase in PHASES for name in phase[:2]}
    run = secrets.token_hex(4)
    submit = verdict_cache.BackgroundWriter.submit
    if not writes:
        verdict_cache.BackgroundWriter.submit = lambda self, *writes: None
    try:
        with timestamped(marks):
            app = make_app("gateway", stack.config())  # built inside: the scan client binds its steps at start
            for index in range(count):
                marks["request start"].append(time.perf_counter())
                call(app, chat_body(f"Unique prompt {run} {index if fresh else 0}: summarise this."))
                marks["request end"].append(time.perf_counter())
                if pause:
                    time.sleep(pause)
    finally:
        verdict_cache.BackgroundWriter.submit = submit
    spans = [*PHASES, ("request start", "request end", "whole request")]
    return {label: statistics.median([b - a for a, b in zip(marks[start][SKIPPED:], marks[end][SKIPPED:])] or [nan])
            for start, end, label in spans}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=600)
    parser.add_argument("--pause-ms", type=float, default=0.0, help="between requests (default: a closed loop)")
    args = parser.parse_args()
    pause = args.pause_ms / 1000
    with Stack() as stack:
        logging.getLogger("lockllm_wsgi.requests").addHandler(logging.NullHandler())  # log cost stays, no tty
        runs = (phases(stack, args.count, writes=True, pause=pause),
                phases(stack, args.count, writes=False, pause=pause),
                phases(stack, args.count, writes=True, pause=pause, fresh=False))
    rows = [[label, *("-" if isnan(run[label]) else f"{run[label] * 1000:.3f}" for run in runs)]
            for label in runs[0]]
    print(table(["phase of a miss", "median ms", "writes dropped, ms", "a cache hit, ms"], rows))


if __name__ == "__main__":
    main()
