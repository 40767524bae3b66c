"""Against a scanner that takes as long as LockLLM does (150 ms a call): time in scanner round trips, and calls.

Three loads, each counted at the fake scanner: the first turn of a long chat (64 fresh texts in one request), a
50-turn chat that resends its history (time per turn should stay flat: only the turn's new texts are scanned), and
50 clients at once, each sending a fresh text (the scan pool and the server's threads, not a queue, set the
time). Goal: p50 within 1.5 round trips where one scan is due, 2 for the 64 texts of a first turn. The first turn
and the burst are also sent against a scanner answering at once: that floor is their own CPU (gateway, fakes and
clients share the cores), and what the slow scanner adds above it is the scan pool's part; under express the burst
is sent again with threads enough for every client (2 x 15 leaves 20 of 50 waiting for a thread, an Apache
setting)::

    python benchmarks/concurrency.py [--delay-ms 150] [--clients 50] [--turns 50] [--modes werkzeug,express]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import secrets
import sys
import threading
import time
from typing import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._harness import CHAT_PATH, Stack, chat_body, median, pct, post, table  # noqa: E402
from benchmarks.conversation import SYSTEM, user_message  # noqa: E402
from benchmarks.first_turn import first_turn  # noqa: E402


def timed_post(url: str, body: bytes, headers: dict | None = None) -> tuple[float, bytes]:
    started = time.perf_counter()
    status, data = post(url, body, headers)
    assert status == 200, data
    return time.perf_counter() - started, data


def burst(stack: Stack, url: str, clients: int, rounds: int) -> tuple[list[float], float]:
    """Latencies of `rounds` bursts of `clients` requests sent at once, each with a fresh text, and the scan
    calls per request."""
    latencies: list[float] = []
    calls_before = stack.scanner_stats()["calls"]
    for _ in range(rounds):
        run = secrets.token_hex(4)
        gate = threading.Barrier(clients)
        lock = threading.Lock()

        def client(index: int) -> None:
            body = chat_body(f"Client {index} of round {run}: please summarise the attached notes.")
            gate.wait()
            took = timed_post(url, body)[0]
            with lock:
                latencies.append(took)

        threads = [threading.Thread(target=client, args=(index,)) for index in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    return latencies, (stack.scanner_stats()["calls"] - calls_before) / max(1, len(latencies))


def first_turns(stack: Stack, url: str, texts: int) -> tuple[list[float], float]:
    """Latencies of three first turns of `texts` fresh texts each, and the scan calls per request."""
    latencies = []
    calls_before = stack.scanner_stats()["calls"]
    for _ in range(3):
        latencies.append(timed_post(url, first_turn(texts))[0])
    return latencies, (stack.scanner_stats()["calls"] - calls_before) / len(latencies)


def latency_row(served: str, label: str, latencies: list[float], per_request: float, trip: float) -> list[object]:
    return [served, label, len(latencies), f"{per_request:g}",
            f"{pct(latencies, 50) * 1000:.0f} (p99 {pct(latencies, 99) * 1000:.0f})", f"{max(latencies) * 1000:.0f}",
            f"{pct(latencies, 50) / trip:.2f}"]


def against_floor(stack: Stack, served: str, trip: float,
                  loads: list[tuple[float, str, Callable[[], tuple[list[float], float]]]]) -> list[list[object]]:
    """Each load (scanner delay, label, measure) in turn, and the difference of their p50s: what the scanner taking
    `trip` added over the one answering at once (the floor), in its round trips. The scanner is left slow."""
    rows, p50s = [], {}
    for delay, label, measure in loads:
        stack.scanner_delay(delay * 1000)
        latencies, per_request = measure()
        p50s[delay] = pct(latencies, 50)
        rows.append(latency_row(served, label, latencies, per_request, trip))
    stack.scanner_delay(trip * 1000)
    added = p50s[trip] - p50s[0.0]
    rows.append([served, "  added by the slow scanner (p50 - floor p50)", "", "", f"{added * 1000:.0f}", "",
                 f"{added / trip:.2f}"])
    return rows


def burst_rows(stack: Stack, served: str, url: str, clients: int, rounds: int, trip: float) -> list[list[object]]:
    """The burst against a scanner answering at once (the floor), then against one taking `trip`."""
    measure = functools.partial(burst, stack, url, clients, rounds)
    loads = [(0.0, f"{clients} clients at once, scanner answering at once (floor)", measure),
             (trip, f"{clients} clients at once, 1 fresh text each", measure)]
    return against_floor(stack, served, trip, loads)


def first_turn_rows(stack: Stack, served: str, url: str, texts: int, trip: float) -> list[list[object]]:
    """Three first turns against the scanner taking `trip`, then three against one answering at once (the floor:
    the calls' own CPU, which one process's GIL runs one at a time). The slow scanner goes first, so its turns are
    the ones that start the scan pool's threads and open its connections: the difference errs high, not low."""
    measure = functools.partial(first_turns, stack, url, texts)
    loads = [(trip, f"first turn, {texts} fresh texts", measure),
             (0.0, f"first turn, {texts} fresh texts, scanner answering at once (floor)", measure)]
    return against_floor(stack, served, trip, loads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--delay-ms", type=float, default=150.0)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the concurrent load (default 3)")
    parser.add_argument("--turns", type=int, default=50)
    parser.add_argument("--texts", type=int, default=64)
    parser.add_argument("--modes", default="werkzeug,express")
    args = parser.parse_args()
    trip = args.delay_ms / 1000
    print(f"fake scanner answering after {args.delay_ms:g} ms; 'trips' = time / that delay; calls counted at the "
          f"scanner; mod_wsgi-express is 2 processes x 15 threads")
    rows = []
    with Stack(scanner_delay_ms=args.delay_ms) as stack:
        for mode in args.modes.split(","):
            gateway = stack.serve("gateway", mode)
            url = gateway.url + CHAT_PATH
            timed_post(url, chat_body(f"warm up {secrets.token_hex(4)}"))  # imports, pools, connections

            # 0. The server's first burst: whatever the server starts on demand (Apache's front threads, the scan
            # pool's threads and connections) is started by it.
            latencies, per_request = burst(stack, url, args.clients, 1)
            rows.append(latency_row(mode, f"{args.clients} clients at once, the server's first burst", latencies,
                                    per_request, trip))

            # 1. First turn: 64 fresh texts in one request, against the slow scanner, then the floor.
            rows += first_turn_rows(stack, mode, url, args.texts, trip)

            # 2. A conversation that resends its history: per-turn time stays flat.
            messages = [{"role": "system", "content": SYSTEM + secrets.token_hex(4)}]
            turn_times, turn_calls = [], []
            for turn in range(1, args.turns + 1):
                messages.append({"role": "user", "content": user_message(turn)})
                before = stack.scanner_stats()["calls"]
                took, data = timed_post(url, json.dumps({"model": "bench", "messages": messages}).encode(),
                                        {"X-Bench-Reply-Chars": "600"})
                turn_calls.append(stack.scanner_stats()["calls"] - before)
                turn_times.append(took)
                messages.append({"role": "assistant",
                                 "content": json.loads(data)["choices"][0]["message"]["content"] + f" ({turn})"})
            later = turn_times[1:]
            rows.append([mode, f"{args.turns}-turn chat, every turn", args.turns, f"{median(turn_calls):g}",
                         f"{median(turn_times) * 1000:.0f}", f"{max(turn_times) * 1000:.0f}",
                         f"{median(turn_times) / trip:.2f}"])
            first10, last10 = later[:10], later[-10:]
            rows.append([mode, "  turns 2-11 / last 10", f"{len(first10)} / {len(last10)}",
                         f"{median(turn_calls[1:11]):g} / {median(turn_calls[-10:]):g}",
                         f"{median(first10) * 1000:.0f} / {median(last10) * 1000:.0f}",
                         f"{max(first10) * 1000:.0f} / {max(last10) * 1000:.0f}",
                         f"{median(first10) / trip:.2f} / {median(last10) / trip:.2f}"])

            # 3. Many clients at once, each with a fresh text: first against a scanner that answers at once (the
            # floor: the burst's own CPU, gateway, fakes and clients on the same cores), then against the slow one.
            # What the slow scanner adds over the floor is the scan pool's share: one round trip when it is no queue.
            rows += burst_rows(stack, mode, url, args.clients, args.rounds, trip)
            gateway.stop()
            if mode == "express" and args.clients > 30:
                threads = -(-args.clients // 2)
                gateway = stack.serve("gateway", mode, threads=threads)
                timed_post(gateway.url + CHAT_PATH, chat_body(f"warm up {secrets.token_hex(4)}"))
                rows += burst_rows(stack, f"express 2 x {threads}", gateway.url + CHAT_PATH, args.clients,
                                   args.rounds, trip)
            gateway.stop()
    print(table(["served", "load", "requests", "scan calls / request", "p50 ms", "max ms", "trips (p50)"], rows))


if __name__ == "__main__":
    main()
