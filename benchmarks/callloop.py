"""A WSGI call loop (no server): per-request time of the gateway and the bare relay, optionally profiled.

Calls the app directly with a built environ, against the fake scanner and provider, so what it shows is the
application's own cost per request::

    /opt/lockllm-venv/bin/python benchmarks/callloop.py [--count 2000] [--profile hit|miss|relay]
"""

from __future__ import annotations

import argparse
import io
import os
import secrets
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._harness import CHAT_PATH, Stack, chat_body, make_app, median, table  # noqa: E402


def environ_for(body: bytes) -> dict:
    return {
        "REQUEST_METHOD": "POST", "PATH_INFO": CHAT_PATH, "REQUEST_URI": CHAT_PATH, "QUERY_STRING": "",
        "CONTENT_TYPE": "application/json", "CONTENT_LENGTH": str(len(body)), "HTTP_AUTHORIZATION": "Bearer sk-x",
        "REMOTE_ADDR": "127.0.0.1", "wsgi.input": io.BytesIO(body), "wsgi.url_scheme": "http",
    }


def call(app, body: bytes) -> None:
    result = app(environ_for(body), lambda status, headers, exc_info=None: None)
    try:
        for _ in result:
            pass
    finally:
        getattr(result, "close", lambda: None)()


def loop(app, bodies) -> list[float]:
    times = []
    for body in bodies:
        started = time.perf_counter()
        call(app, body)
        times.append(time.perf_counter() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--profile", choices=("hit", "miss", "relay"))
    args = parser.parse_args()
    run = secrets.token_hex(4)
    with Stack() as stack:
        import logging
        logging.getLogger("lockllm_wsgi.requests").addHandler(logging.NullHandler())  # log cost stays, no tty
        gateway, relay = make_app("gateway", stack.config()), make_app("relay", stack.config())
        hit = [chat_body("What is the capital of France? Answer in one word.")] * args.count
        miss = [chat_body(f"Unique prompt {run} {index}: summarise this.") for index in range(args.count)]
        cases = {"relay": (relay, hit), "hit": (gateway, hit), "miss": (gateway, miss)}
        loop(relay, hit[:50]), loop(gateway, hit[:50])
        if args.profile:
            from pyinstrument import Profiler

            app, bodies = cases[args.profile]
            with Profiler(interval=0.0002) as profiler:
                loop(app, bodies)
            print(profiler.output_text(unicode=False, color=False, show_all=False))
            return
        results = {name: median(loop(app, bodies)) for name, (app, bodies) in cases.items()}
        rows = [[name, f"{value * 1000:.3f}", f"{(value - results['relay']) * 1000:+.3f}"]
                for name, value in results.items()]
        print(table(["case", "median ms", "vs relay ms"], rows))


if __name__ == "__main__":
    main()
