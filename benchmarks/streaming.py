"""Time to the first streamed chunk and the gap between chunks, gateway vs bare relay vs direct.

The fake provider streams SSE events every --interval ms; each target gets --streams streams, in interleaved
rounds, under mod_wsgi-express (2 x 15) and in-process (werkzeug)::

    /opt/lockllm-venv/bin/python benchmarks/streaming.py [--streams 30] [--interval 20] [--chunks 20]
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._harness import CHAT_PATH, Stack, chat_body, ms, pct, stream_timing, table  # noqa: E402

PROMPT = "Write a haiku about streaming tokens."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--streams", type=int, default=30, help="streams per target (default 30)")
    parser.add_argument("--interval", type=float, default=20.0, help="ms between provider chunks (default 20)")
    parser.add_argument("--chunks", type=int, default=20)
    parser.add_argument("--modes", default="werkzeug,express")
    args = parser.parse_args()
    headers = {"X-Bench-Chunks": str(args.chunks), "X-Bench-Interval-Ms": str(args.interval)}
    body = chat_body(PROMPT, stream=True)
    print(f"{args.streams} streams per target, {args.chunks} SSE events {args.interval:g} ms apart; "
          f"gateway requests are cache hits; ms")
    with Stack() as stack:
        for mode in args.modes.split(","):
            relay, gateway = stack.serve("relay", mode), stack.serve("gateway", mode)
            targets = {"direct": stack.provider_url, "bare relay": relay.url, "gateway": gateway.url}
            first: dict[str, list[float]] = {name: [] for name in targets}
            gaps: dict[str, list[float]] = {name: [] for name in targets}
            for _ in range(10):  # warm every daemon process, thread and pooled connection
                for url in targets.values():
                    stream_timing(url + CHAT_PATH, body, {**headers, "X-Bench-Interval-Ms": "0"})
            for _ in range(args.streams):
                for name, url in targets.items():
                    ttfc, between, _size = stream_timing(url + CHAT_PATH, body, headers)
                    first[name].append(ttfc)
                    gaps[name] += between
            rows = []
            for name in targets:
                rows.append([name, ms(pct(first[name], 50)), ms(pct(first[name], 99)),
                             f"{(pct(first[name], 50) - pct(first['direct'], 50)) * 1000:+.2f}",
                             ms(pct(gaps[name], 50)), ms(pct(gaps[name], 99)), ms(max(gaps[name]))])
            label = "in-process (werkzeug threaded)" if mode == "werkzeug" else "mod_wsgi-express 2 x 15"
            print(f"\n{label}")
            print(table(["target", "first chunk p50", "first chunk p99", "p50 vs direct", "gap p50", "gap p99",
                         "gap max"], rows))
            relay.stop()
            gateway.stop()


if __name__ == "__main__":
    main()
