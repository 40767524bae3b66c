"""The output guard's cost on a streamed answer: time to first byte (audit) and time per event (enforce), against
the gateway with the guard off (a plain relay of the same judged request).

A fake provider streams an OpenAI chat answer of `--events` events of `--chars` characters each, at once; the
gateway (in-process, werkzeug, the offline scanner) relays it with `[output] mode` off, audit and enforce::

    /opt/lockllm-venv/bin/python benchmarks/output_guard.py [--events 400] [--chars 20] [--runs 20]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time

import httpx
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lockllm_wsgi import create_app  # noqa: E402
from lockllm_wsgi.config import load_settings  # noqa: E402


def serve(app) -> tuple[str, object]:
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()
    return f"http://127.0.0.1:{server.server_port}", server


def provider_app(events: int, chars: int):
    word = ("lorem ipsum dolor sit amet " * (chars // 10 + 1))[:chars]
    chunk = lambda text: ("data: " + json.dumps({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",  # noqa: E731
                          "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}) + "\n\n").encode()
    body = [chunk(word) for _ in range(events)] + [b"data: [DONE]\n\n"]

    @Request.application
    def app(_request):
        return Response(iter(body), content_type="text/event-stream")
    return app


def gateway(upstream: str, mode: str, folder: str):
    path = os.path.join(folder, f"{mode}.ini")
    with open(path, "w") as handle:
        handle.write(f"[scanner]\nbackend = offline\n[output]\nmode = {mode}\n"
                     f"[route:openai]\nprefix = /openai\nupstream = {upstream}\nformat = openai\n")
    return serve(create_app(load_settings(path)))


def measure(url: str, runs: int) -> tuple[list[float], list[float]]:
    body = {"model": "m", "stream": True, "messages": [{"role": "system", "content": "Be brief."},
                                                       {"role": "user", "content": "Write a poem."}]}
    first, total = [], []
    with httpx.Client(timeout=30) as http:
        for _ in range(runs + 2):
            time.sleep(0.2)  # audit mode judges the previous answer after it ended: not this request's cost
            started = time.perf_counter()
            with http.stream("POST", f"{url}/openai/v1/chat/completions", json=body) as answer:
                chunks = answer.iter_raw()
                next(chunks)
                first.append(time.perf_counter() - started)
                for _ in chunks:
                    pass
                total.append(time.perf_counter() - started)
    return first[2:], total[2:]  # the first two warm up connections and caches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=400)
    parser.add_argument("--chars", type=int, default=20)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    upstream, _ = serve(provider_app(args.events, args.chars))
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        for mode in ("off", "audit", "enforce"):
            url, _ = gateway(upstream, mode, folder)
            results[mode] = measure(url, args.runs)
    base_first, base_total = (statistics.median(values) for values in results["off"])
    print(f"{args.events} events of {args.chars} characters, {args.runs} runs, medians; offline scanner")
    print(f"{'mode':8} {'first byte ms':>14} {'added ms':>9} {'total ms':>9} {'added us/event':>15}")
    for mode, (first, total) in results.items():
        first_ms, total_ms = statistics.median(first) * 1000, statistics.median(total) * 1000
        print(f"{mode:8} {first_ms:14.2f} {first_ms - base_first * 1000:9.2f} {total_ms:9.2f} "
              f"{(total_ms - base_total * 1000) * 1000 / args.events:15.1f}")


if __name__ == "__main__":
    main()
