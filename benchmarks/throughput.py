"""Throughput at saturation under mod_wsgi-express: the default 2 processes x 15 threads, then other shapes.

Closed loop: --concurrency clients send back to back for --seconds; gateway requests are cache hits, and the
bare relay is measured with the default shape for comparison::

    /opt/lockllm-venv/bin/python benchmarks/throughput.py [--seconds 5] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._harness import CHAT_PATH, Stack, chat_body, closed_loop, ms, pct, table  # noqa: E402

SHAPES = ((2, 15, "relay"), (2, 15, "gateway"), (1, 15, "gateway"), (4, 15, "gateway"), (2, 5, "gateway"),
          (2, 30, "gateway"), (4, 5, "gateway"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--default-only", action="store_true", help="only the bare relay and gateway at 2 x 15")
    args = parser.parse_args()
    body = chat_body("What is the capital of France? Answer in one word.")
    make = lambda index: body  # noqa: E731
    print(f"closed loop, {args.concurrency} clients, {args.seconds:g} s per shape, 2-core machine shared with "
          f"the load generator and the fakes")
    rows = []
    with Stack() as stack:
        direct, _ = closed_loop(stack.provider_url + CHAT_PATH, make, args.concurrency, args.seconds)
        rows.append(["direct (fake provider)", "-", "-", f"{direct:.0f}", "-", "-", 0])
        for processes, threads, kind in (SHAPES[:2] if args.default_only else SHAPES):
            served = stack.serve(kind, "express", processes=processes, threads=threads)
            closed_loop(served.url + CHAT_PATH, make, args.concurrency, 1.0)  # warm every process
            latencies: list[float] = []
            rate, failed = closed_loop(served.url + CHAT_PATH, make, args.concurrency, args.seconds, latencies)
            rows.append([kind + (" (default)" if (processes, threads) == (2, 15) else ""), processes, threads,
                         f"{rate:.0f}", ms(pct(latencies, 50)), ms(pct(latencies, 99)), failed])
            served.stop()
    print(table(["served", "processes", "threads", "req/s", "p50 ms", "p99 ms", "failed"], rows))


if __name__ == "__main__":
    main()
