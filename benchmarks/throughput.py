"""Throughput at saturation under mod_wsgi-express: the default 2 processes x 15 threads, then other shapes.

Closed loop: --concurrency clients send back to back for --seconds; gateway requests are cache hits. The bare
relay and the gateway, both at the default shape, are measured in alternating rounds and compared round by round;
the other shapes follow, once each::

    /opt/lockllm-venv/bin/python benchmarks/throughput.py [--seconds 5] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._harness import CHAT_PATH, Stack, chat_body, closed_loop, median, ms, pct, table  # noqa: E402

# Shapes beside the default 2 x 15, each measured once after the paired default rounds.
OTHER_SHAPES = ((1, 15), (4, 15), (2, 5), (2, 30), (4, 5))


def measure(url: str, make, concurrency: int, seconds: float) -> tuple[float, int, list[float]]:
    latencies: list[float] = []
    rate, failed = closed_loop(url, make, concurrency, seconds, latencies)
    return rate, failed, latencies


def measure_served(served, make, concurrency: int, seconds: float) -> tuple[float, int, list[float], float]:
    """`measure` of a served app, with the CPU its daemons spent per request (ms): the steadier figure on a
    machine whose load generator and fakes share the cores."""
    before = served.daemon_cpu_seconds()
    rate, failed, latencies = measure(served.url + CHAT_PATH, make, concurrency, seconds)
    return rate, failed, latencies, (served.daemon_cpu_seconds() - before) * 1000 / max(1, len(latencies))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=5, help="paired relay/gateway rounds at 2 x 15 (default 5)")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--default-only", action="store_true", help="only the bare relay and gateway at 2 x 15")
    args = parser.parse_args()
    body = chat_body("What is the capital of France? Answer in one word.")
    make = lambda index: body  # noqa: E731
    print(f"closed loop, {args.concurrency} clients, {args.seconds:g} s per measure, 2-core machine shared with "
          f"the load generator and the fakes; relay and gateway at 2 x 15 alternate for {args.rounds} rounds")
    rows = []
    with Stack() as stack:
        direct, _, _ = measure(stack.provider_url + CHAT_PATH, make, args.concurrency, args.seconds)
        rows.append(["direct (fake provider)", "-", "-", f"{direct:.0f}", "-", "-", "-", 0])
        # The relay and the gateway are served side by side and measured in turn, so a slow spell of this noisy
        # machine falls on both: the ratio of each round's pair is the figure, not either rate alone.
        pair = {kind: stack.serve(kind, "express") for kind in ("relay", "gateway")}
        for served in pair.values():
            closed_loop(served.url + CHAT_PATH, make, args.concurrency, 1.0)  # warm every process
        results: dict[str, list[tuple[float, int, list[float], float]]] = {kind: [] for kind in pair}
        for _ in range(args.rounds):
            for kind, served in pair.items():
                results[kind].append(measure_served(served, make, args.concurrency, args.seconds))
        for kind, runs in results.items():
            latencies = [value for run in runs for value in run[2]]
            rows.append([f"{kind} (default)", 2, 15, f"{median([run[0] for run in runs]):.0f}",
                         ms(pct(latencies, 50)), ms(pct(latencies, 99)), f"{median([run[3] for run in runs]):.2f}",
                         sum(run[1] for run in runs)])
            pair[kind].stop()
        ratios = sorted(g[0] / r[0] for r, g in zip(results["relay"], results["gateway"]))
        added = sorted(g[3] - r[3] for r, g in zip(results["relay"], results["gateway"]))
        rows.append(["gateway / relay, per round", "", "",
                     f"{median(ratios):.0%} (min {ratios[0]:.0%}, max {ratios[-1]:.0%})", "", "",
                     f"+{median(added):.2f} (+{added[0]:.2f} to +{added[-1]:.2f})", ""])
        for processes, threads in ([] if args.default_only else OTHER_SHAPES):
            served = stack.serve("gateway", "express", processes=processes, threads=threads)
            closed_loop(served.url + CHAT_PATH, make, args.concurrency, 1.0)
            rate, failed, latencies, cpu = measure_served(served, make, args.concurrency, args.seconds)
            rows.append(["gateway", processes, threads, f"{rate:.0f}", ms(pct(latencies, 50)),
                         ms(pct(latencies, 99)), f"{cpu:.2f}", failed])
            served.stop()
    print(table(["served", "processes", "threads", "req/s", "p50 ms", "p99 ms", "daemon CPU ms / request", "failed"],
                rows))


if __name__ == "__main__":
    main()
