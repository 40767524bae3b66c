"""The output guard's cost on a streamed answer, in every answer format: the added time to first byte in audit mode
(goal: none measurable) and the added time per event in enforce mode, each against the guard off in the same run.

A fake provider streams each format's answer (tests/support/answer_streams.py, the streams the tests use, plus
OpenAI's legacy completions) of `--events` deltas of `--chars` characters, at once; one in-process gateway per
mode (werkzeug, the offline scanner judging) relays it with `[output] mode` off, audit and enforce. The three
gateways are asked in turn, run after run, so a load change on the machine hits the three alike. Audit mode
reads each chunk along after relaying it, so that reading delays the next chunk, never the first; enforce mode
relays what it held in one write per judged window (fewer writes than the relay's one per event), and its
figures include the offline scanner's judging of every `holdback_chars` of text (benchmarks/output_formats.py
gives the guard's own CPU with a scanner that answers at once)::

    /opt/lockllm-venv/bin/python benchmarks/output_guard.py [--events 400] [--chars 20] [--runs 20]
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import replace

import httpx
from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))  # the fake streams the tests use

from support.answer_streams import WIRES, Wire, filler, sse  # noqa: E402

from lockllm_wsgi import create_app  # noqa: E402
from lockllm_wsgi.config import load_settings  # noqa: E402

MODES = ("off", "audit", "enforce")


def completions_events(texts: list[str]) -> list[bytes]:
    """OpenAI's legacy /v1/completions stream."""
    chunk = lambda text: sse(None, {"id": "cmpl-1", "object": "text_completion", "created": 1,  # noqa: E731
                                    "model": "m", "choices": [{"index": 0, "text": text, "finish_reason": None}]})
    return [*(chunk(text) for text in texts), b"data: [DONE]\n\n"]


COMPLETIONS = replace(WIRES["openai-chat"], name="openai-completions", path="/v1/completions",
                      events=completions_events, request={"model": "m", "prompt": "Write a poem."})
FORMATS = {"openai-chat": WIRES["openai-chat"], "openai-completions": COMPLETIONS,
           **{name: wire for name, wire in WIRES.items() if name != "openai-chat"}}


class NoDelayHandler(WSGIRequestHandler):
    """Writes go out at once, as Apache's do (TCP_NODELAY): werkzeug writes a chunk's size, data and line end
    separately, and Nagle's algorithm with delayed acknowledgements would add up to 40 ms to some of them."""

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def serve(app) -> str:
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=NoDelayHandler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()
    return f"http://127.0.0.1:{server.server_port}"


def provider_app(events: int, chars: int):
    """Answers each wire's streaming path (and query: Gemini streams SSE with alt=sse, a JSON array without)."""
    word = filler(chars)
    streams = {(wire.stream_path or wire.path, wire.stream_query.lstrip("?")): (
        wire.events([word] * events), wire.content_type) for wire in FORMATS.values()}

    @Request.application
    def app(request):
        events, content_type = streams[request.path, request.query_string.decode()]
        return Response(iter(events), content_type=content_type)  # one write per event
    return app


def gateway(upstream: str, mode: str, folder: str) -> str:
    path = os.path.join(folder, f"{mode}.ini")
    routes = {wire.route: wire.route_keys for wire in FORMATS.values()}
    with open(path, "w") as handle:
        handle.write(f"[scanner]\nbackend = offline\n[output]\nmode = {mode}\n" + "".join(
            f"[route:{name}]\nprefix = /{name}\nupstream = {upstream}\nformat = {name}\n{keys}\n"
            for name, keys in routes.items()))
    return serve(create_app(load_settings(path)))


def timed(http: httpx.Client, url: str, wire: Wire) -> tuple[float, float]:
    """Seconds to the first byte and to the end of one streamed answer."""
    started = time.perf_counter()
    with http.stream("POST", f"{url}/{wire.route}{wire.stream_path or wire.path}{wire.stream_query}",
                     json=wire.stream_request(), headers={"Authorization": "Bearer sk-bench"}) as answer:
        chunks = answer.iter_raw()
        next(chunks)
        first = time.perf_counter() - started
        for _ in chunks:
            pass
    return first, time.perf_counter() - started


def measure(urls: dict[str, str], wire: Wire, runs: int) -> dict[str, tuple[list[float], list[float]]]:
    results: dict[str, tuple[list[float], list[float]]] = {mode: ([], []) for mode in MODES}
    with httpx.Client(timeout=60) as http:
        for run in range(runs + 2):
            for mode in MODES:
                time.sleep(0.2)  # audit mode judges the previous answer after it ended: not this request's cost
                first, total = timed(http, urls[mode], wire)
                if run >= 2:  # the first two warm up connections and caches
                    results[mode][0].append(first)
                    results[mode][1].append(total)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=400)
    parser.add_argument("--chars", type=int, default=20)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    # Bedrock routes sign with the gateway's own AWS identity, from its environment.
    os.environ.update(AWS_ACCESS_KEY_ID="AKIABENCHBENCHBENCH1", AWS_SECRET_ACCESS_KEY="bench",
                      AWS_EC2_METADATA_DISABLED="true")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # the test servers' access log: not the gateway's cost
    upstream = serve(provider_app(args.events, args.chars))
    with tempfile.TemporaryDirectory() as folder:
        urls = {mode: gateway(upstream, mode, folder) for mode in MODES}
        print(f"{args.events} events of {args.chars} characters, {args.runs} runs, medians (ms; us per event); "
              "offline scanner; the three modes asked in turn")
        print(f"{'format':20} {'off first':>9} {'audit first':>11} {'added':>6} {'enforce first':>13} "
              f"{'off total':>9} {'audit total':>11} {'enforce total':>13} {'added us/event: audit':>21} "
              f"{'enforce':>7}")
        for name, wire in FORMATS.items():
            medians = {mode: [statistics.median(values) * 1000 for values in timings]
                       for mode, timings in measure(urls, wire, args.runs).items()}
            (off_first, off_total), (audit_first, audit_total), (enforce_first, enforce_total) = (
                medians[mode] for mode in MODES)
            print(f"{name:20} {off_first:9.2f} {audit_first:11.2f} {audit_first - off_first:6.2f} "
                  f"{enforce_first:13.2f} {off_total:9.2f} {audit_total:11.2f} {enforce_total:13.2f} "
                  f"{(audit_total - off_total) * 1000 / args.events:21.1f} "
                  f"{(enforce_total - off_total) * 1000 / args.events:7.1f}")


if __name__ == "__main__":
    main()
