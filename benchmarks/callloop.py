"""A WSGI call loop (no server): per-request time of the gateway and the bare relay, optionally profiled.

Calls the app directly with a built environ, against the fake scanner and provider, so what it shows is the
application's own cost per request. A miss cannot cost less than its scan call, so the same run also times that
call alone, one fresh text posted to the fake scanner: with a bare urllib3 pool (the least any HTTP client pays)
and with a requests session as the gateway sends it (the client the product card names), and prints what a miss
adds beyond it.

By default the loop is closed (the next request as soon as one ends): the process's CPU per request. With
`--pause-ms N` each request starts N ms after the last one ended, as for a client below saturation: work the
gateway leaves until after the answer (a miss's verdict cache write) runs in the pause, as it does in service::

    /opt/lockllm-venv/bin/python benchmarks/callloop.py [--count 2000] [--pause-ms 3] [--profile hit|miss|relay]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import secrets
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._harness import (  # noqa: E402
    CHAT_PATH, SCANNER_KEY, Stack, chat_body, make_app, median, table,
)


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


def timed(send, items, pause: float = 0.0) -> list[float]:
    """Seconds each `send(item)` took, with `pause` seconds after each."""
    times = []
    for item in items:
        started = time.perf_counter()
        send(item)
        times.append(time.perf_counter() - started)
        if pause:
            time.sleep(pause)
    return times


def loop(app, bodies, pause: float = 0.0) -> list[float]:
    return timed(lambda body: call(app, body), bodies, pause)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--pause-ms", type=float, default=0.0, help="between requests (default: a closed loop)")
    parser.add_argument("--profile", choices=("hit", "miss", "relay"))
    args = parser.parse_args()
    pause = args.pause_ms / 1000
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
        results = {name: median(loop(app, bodies, pause)) for name, (app, bodies) in cases.items()}
        rows = [[name, f"{value * 1000:.3f}", f"{(value - results['relay']) * 1000:+.3f}"]
                for name, value in results.items()]
        print(table(["case", "median ms", "vs relay ms"], rows))
        scan_url = stack.scanner_url + "/v1/scan"
        floors = {name: median(scan_calls(post, scan_url, run, args.count, pause))
                  for name, post in (("urllib3", urllib3_post()), ("requests", requests_post()))}
        added = results["miss"] - results["relay"]
        print(table(["a miss's scan call alone", "median ms", "miss over relay, beyond it, ms"],
                    [[name, f"{value * 1000:.3f}", f"{(added - value) * 1000:+.3f}"]
                     for name, value in floors.items()]))


def scan_calls(post, url: str, run: str, count: int, pause: float = 0.0) -> list[float]:
    """Times `count` scan calls of fresh texts shaped as the gateway's (JSON input, key), the first 50 unmeasured."""
    headers = {"Authorization": f"Bearer {SCANNER_KEY}", "Content-Type": "application/json"}
    bodies = [json.dumps({"input": f"Unique floor {run} {index}: summarise this."}).encode()
              for index in range(count + 50)]
    return timed(lambda body: post(url, body, headers), bodies, pause)[50:]


def urllib3_post():
    import urllib3

    pool = urllib3.PoolManager(retries=False)
    return lambda url, body, headers: pool.request("POST", url, body=body, headers=headers).data


def requests_post():
    import requests

    session = requests.Session()
    session.trust_env = False  # as the gateway's scan session, which sends prepared requests (scan.py)

    def post(url, body, headers):
        prepared = requests.Request("POST", url, data=body, headers=headers).prepare()
        return session.send(prepared, timeout=(5, 5), allow_redirects=False).content

    return post


if __name__ == "__main__":
    main()
