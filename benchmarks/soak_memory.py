"""Where a daemon's memory goes under a long mixed load, before it levels off.

The gateway app runs in this process (as in one mod_wsgi daemon: 15 request threads, its scan pool), against
the local fake scanner and provider, with the README's SQLite verdict cache. Every request carries a fresh text
(a miss: scanned, memoised, written to the cache) and a text repeated across requests (a hit). At each checkpoint
the table shows the process's resident size, what Python's own allocations hold (tracemalloc), and the
bounded structures that fill up; then the lines that grew most. Resident growth that tracemalloc does not see
is C memory: SQLite's page caches (one read connection per thread that looked a verdict up), OpenSSL and
glibc's per-thread malloc arenas::

    python benchmarks/soak_memory.py [--requests 6000] [--threads 15]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import tracemalloc

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from werkzeug.test import Client  # noqa: E402

from benchmarks._harness import CHAT_PATH, Stack, table  # noqa: E402


def resident_mib() -> dict[str, float]:
    """VmRSS and its parts: anonymous (heaps, arenas, SQLite's caches) and file-backed (mapped files)."""
    sizes = {}
    with open("/proc/self/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "RssAnon", "RssFile"):
                sizes[name] = int(value.split()[0]) / 1024
    return sizes


def body(index: int) -> bytes:
    return json.dumps({"model": "m", "messages": [
        {"role": "system", "content": "You are a helpful assistant for the support team."},
        {"role": "user", "content": f"Question {index}: how do I reset my password on device {index * 7}?"}]}).encode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=6000)
    parser.add_argument("--threads", type=int, default=15)
    parser.add_argument("--checkpoints", type=int, default=8)
    parser.add_argument("--memo-entries", type=int, default=None,
                        help="the scan client's in-process memo size (default: the gateway's own)")
    parser.add_argument("--no-trace", action="store_true", help="resident sizes only (tracemalloc costs memory too)")
    args = parser.parse_args()
    if args.memo_entries is not None:
        import lockllm_wsgi.scan

        lockllm_wsgi.scan.DEFAULT_MEMO_ENTRIES = args.memo_entries
    from benchmarks._harness import make_app

    # The request log's lines are not what is measured (a handler of the host application's: the gateway adds none).
    logging.getLogger("lockllm_wsgi.requests").addHandler(logging.NullHandler())
    with Stack() as stack:
        app = make_app("gateway", stack.config())
        scanner = app.current.scanner if hasattr(app, "current") else app.scanner
        counter = iter(range(10 ** 9))
        lock = threading.Lock()

        def work(count: int) -> None:
            client = Client(app)
            for _ in range(count):
                with lock:
                    index = next(counter)
                response = client.post("/openai" + CHAT_PATH, data=body(index), content_type="application/json")
                assert response.status_code == 200, response.get_data()
                response.close()

        def load(total: int) -> None:
            threads = [threading.Thread(target=work, args=(total // args.threads,)) for _ in range(args.threads)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()

        load(args.threads * 20)  # warm up: imports, connections, every thread's first allocations
        scanner.flush()
        if not args.no_trace:
            tracemalloc.start(1)
        start = tracemalloc.take_snapshot() if not args.no_trace else None
        rows, done, base = [], 0, resident_mib()
        step = args.requests // args.checkpoints
        for _ in range(args.checkpoints):
            load(step)
            scanner.flush()
            done += step
            current, _peak = tracemalloc.get_traced_memory()
            memo = len(scanner._memo) if scanner._memo is not None else 0
            now = resident_mib()
            rows.append([str(done), f"{now['VmRSS']:.1f}", f"{now['RssAnon'] - base['RssAnon']:+.1f}",
                         f"{now['RssFile'] - base['RssFile']:+.1f}", f"{current / 2 ** 20:.1f}", str(memo),
                         str(threading.active_count())])
        print(table(["requests", "RSS MiB", "anon growth", "file growth", "traced (Python) MiB", "memo entries",
                     "threads"], rows))
        grown = tracemalloc.take_snapshot().compare_to(start, "lineno") if start is not None else []
        print("\nPython allocations that grew most since the warm-up:" if grown else "")
        for stat in grown[:10]:
            frame = stat.traceback[0]
            print(f"  {stat.size_diff / 2 ** 20:+7.2f} MiB  {stat.count_diff:+7d} blocks  "
                  f"{os.path.relpath(frame.filename)}:{frame.lineno}")
        app.close()


if __name__ == "__main__":
    main()
