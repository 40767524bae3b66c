"""Peak resident size of the mod_wsgi daemon processes while relaying 20 concurrent large requests or streams.

A fresh mod_wsgi-express (2 x 15) per scenario; VmHWM of each daemon process is read after warm-up and after
the load, so the growth is what the load cost. Streams of two sizes show whether memory follows response size::

    /opt/lockllm-venv/bin/python benchmarks/memory.py [--concurrency 20]
"""

from __future__ import annotations

import argparse
import os
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._harness import CHAT_PATH, Stack, chat_body, post, stream_timing, table, vm_kib  # noqa: E402

MIB = 1024 * 1024


def concurrently(count: int, job) -> None:
    threads = [threading.Thread(target=job, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--concurrency", type=int, default=20)
    args = parser.parse_args()
    n = args.concurrency
    words = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor "

    def big_request(index: int) -> None:
        text = (f"{index} " + words * (MIB // len(words) + 1))[:MIB]
        status, _ = post(url + CHAT_PATH, chat_body(text))
        assert status == 200, status

    def stream(size_mib: int):
        chunk = 8192
        headers = {"X-Bench-Chunks": str(size_mib * MIB // chunk), "X-Bench-Interval-Ms": "0",
                   "X-Bench-Chunk-Bytes": str(chunk)}
        return lambda index: stream_timing(url + CHAT_PATH, chat_body("Tell me a long story.", stream=True), headers)

    scenarios = [
        (f"{n} x 1 MiB request (unique, scanned)", big_request),
        (f"{n} x 8 MiB SSE stream", stream(8)),
        (f"{n} x 32 MiB SSE stream", stream(32)),
    ]
    rows = []
    with Stack() as stack:
        for kind in ("relay", "gateway"):
            for name, job in scenarios:
                served = stack.serve(kind, "express")
                url = served.url
                concurrently(2 * n, lambda index: post(url + CHAT_PATH, chat_body("warm up")))
                pids = served.daemon_pids()
                before = {pid: vm_kib(pid) for pid in pids}
                concurrently(n, job)
                after = {pid: vm_kib(pid) for pid in pids}
                growth = sum(after[pid] - before[pid] for pid in pids) / 1024
                rows.append([kind, name, " + ".join(f"{before[p] / 1024:.0f}" for p in pids),
                             " + ".join(f"{after[p] / 1024:.0f}" for p in pids), f"{growth:.1f}",
                             f"{growth / n:.2f}"])
                served.stop()
    print(table(["served", "load", "VmHWM before MiB", "VmHWM after MiB", "growth MiB", "per request MiB"], rows))


if __name__ == "__main__":
    main()
