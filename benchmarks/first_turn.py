"""First turn of a long chat: 64 fresh texts against a scanner that takes 150 ms, the round trip LockLLM needs.

Every text is new (no verdict cached), so the request costs the scan calls themselves; with the scan pool judging
a request's texts in parallel, the goal is two scanner round trips at most. The last column is the time in round
trips of the scanner's delay::

    /opt/lockllm-venv/bin/python benchmarks/first_turn.py [--texts 64] [--delay-ms 150] [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._harness import CHAT_PATH, Stack, median, post, table  # noqa: E402


def first_turn(texts: int) -> bytes:
    run = secrets.token_hex(4)  # fresh texts every run: nothing is in the verdict cache
    messages = [{"role": "user" if index % 2 else "assistant",
                 "content": f"Run {run}, message {index}: notes on the quarterly plan, item {index}."}
                for index in range(texts)]
    return json.dumps({"model": "bench", "messages": messages}).encode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--texts", type=int, default=64)
    parser.add_argument("--delay-ms", type=float, default=150.0)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    rows = []
    with Stack(scanner_delay_ms=args.delay_ms) as stack:
        gateway = stack.serve("gateway", "werkzeug")
        times, calls = [], []
        for _ in range(args.runs):
            before = stack.scanner_stats()["calls"]
            started = time.perf_counter()
            status, data = post(gateway.url + CHAT_PATH, first_turn(args.texts))
            times.append(time.perf_counter() - started)
            assert status == 200, data
            calls.append(stack.scanner_stats()["calls"] - before)
        rows.append([args.texts, f"{args.delay_ms:g}", median(calls), f"{median(times) * 1000:.0f}",
                     f"{max(times) * 1000:.0f}", f"{median(times) * 1000 / args.delay_ms:.2f}"])
    print(table(["fresh texts", "scanner ms", "scan calls", "p50 ms", "max ms", "round trips (p50)"], rows))


if __name__ == "__main__":
    main()
