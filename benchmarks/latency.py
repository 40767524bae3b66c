"""Added latency of the gateway, cache hit and cache miss, against a direct call and a bare relay.

Open loop: requests are fired on a fixed schedule well below saturation and each latency runs from its scheduled
send time, so queueing is not hidden. The four targets are measured in interleaved rounds in the same run, served
in-process (werkzeug, threaded) and under mod_wsgi-express (2 processes x 15 threads)::

    /opt/lockllm-venv/bin/python benchmarks/latency.py [--rate 50] [--count 200] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._harness import CHAT_PATH, Stack, chat_body, ms, open_loop, pct, table  # noqa: E402

HIT_PROMPT = "What is the capital of France? Answer in one word."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=50.0, help="requests per second (default 50)")
    parser.add_argument("--count", type=int, default=200, help="requests per target per round (default 200)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--modes", default="werkzeug,express")
    args = parser.parse_args()
    run = secrets.token_hex(4)
    hit = lambda index: chat_body(HIT_PROMPT)  # noqa: E731
    print(f"open loop, {args.rate:g} req/s, {args.count} requests x {args.rounds} rounds per target; "
          f"fake scanner and provider answer at once; ms from scheduled send time")
    with Stack() as stack:
        for mode in args.modes.split(","):
            relay = stack.serve("relay", mode)
            gateway = stack.serve("gateway", mode)
            counter = iter(range(10**9))
            miss = lambda index: chat_body(f"Unique prompt {run} {mode} {next(counter)}: summarise this.")  # noqa: E731
            targets = {
                "direct": (stack.provider_url + CHAT_PATH, hit),
                "bare relay": (relay.url + CHAT_PATH, hit),
                "gateway, cache hit": (gateway.url + CHAT_PATH, hit),
                "gateway, cache miss": (gateway.url + CHAT_PATH, miss),
            }
            for url, body in targets.values():  # warm connections, pools, imports and the hit prompt's verdict
                open_loop(url, body, rate=200, count=40)
            samples: dict[str, list[float]] = {name: [] for name in targets}
            for _ in range(args.rounds):
                for name, (url, body) in targets.items():
                    samples[name] += open_loop(url, body, rate=args.rate, count=args.count)
            base = {key: (pct(samples[key], 50), pct(samples[key], 99)) for key in ("direct", "bare relay")}
            rows = []
            for name, values in samples.items():
                p50, p99 = pct(values, 50), pct(values, 99)
                rows.append([name, len(values), ms(p50), ms(p99),
                             f"{(p50 - base['direct'][0]) * 1000:+.2f}", f"{(p99 - base['direct'][1]) * 1000:+.2f}",
                             f"{(p50 - base['bare relay'][0]) * 1000:+.2f}",
                             f"{(p99 - base['bare relay'][1]) * 1000:+.2f}"])
            label = "in-process (werkzeug threaded)" if mode == "werkzeug" else "mod_wsgi-express 2 x 15"
            print(f"\n{label}")
            print(table(["target", "n", "p50 ms", "p99 ms", "p50 vs direct", "p99 vs direct", "p50 vs relay",
                         "p99 vs relay"], rows))
            relay.stop()
            gateway.stop()


if __name__ == "__main__":
    main()
