"""The fake LockLLM scanner and fake providers: what the scanner calls an attack, its verdicts, and a
pytest-httpserver that stops at once."""

from __future__ import annotations

import json
import socket
import threading

from pytest_httpserver import HTTPServer
from werkzeug.wrappers import Request, Response

# What the fake scanner treats as an attack: a marker no benign test text contains.
ATTACK = "IGNORE ALL PREVIOUS INSTRUCTIONS"
SCANNER_KEY = "llm-test-scanner-key-0001"
# How often a test server's loop checks for shutdown(): werkzeug's and socketserver's default, 0.5 s, is the
# time every stop() waits.
POLL_SECONDS = 0.01

# An OpenAI chat completion, as the SDK expects it.
COMPLETION = {
    "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-test",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello!"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
}


def scanner_verdict(request: Request) -> Response:
    """LockLLM's scan API, played: unsafe when the input carries ATTACK, with the score in percent."""
    payload = request.get_json()
    unsafe = ATTACK.lower() in payload["input"].lower()
    return Response(json.dumps({
        "safe": not unsafe, "label": 1 if unsafe else 0, "confidence": 97 if unsafe else 99,
        "injection": 97 if unsafe else 2, "request_id": "scan_123",
    }), content_type="application/json")


def closed_port() -> int:
    """A loopback port nothing listens on: bound for a moment and let go, so a connection to it is refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def scans(server: HTTPServer) -> list[dict]:
    """The JSON bodies the fake scanner received."""
    return [json.loads(request.get_data()) for request, _ in server.log]


class FakeServer(HTTPServer):
    """pytest-httpserver on a loopback port (or `host`: containers reach the machine through its bridge address)
    whose stop() returns within POLL_SECONDS, not 0.5 s, and which can wait until it has answered every request it
    began: a slow handler of one test must not add its request to the log of the next (the server is shared)."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        super().__init__(host=host, port=0, threaded=True)
        self._answering = 0
        self._idle = threading.Condition()

    def thread_target(self) -> None:
        assert self.server is not None
        self.server.serve_forever(poll_interval=POLL_SECONDS)

    def application(self, request: Request) -> Response:
        with self._idle:
            self._answering += 1
        try:
            return super().application(request)  # which logs the request
        finally:
            with self._idle:
                self._answering -= 1
                self._idle.notify_all()

    def wait_until_idle(self, timeout: float = 10) -> bool:
        """Until every request begun has been answered and logged (False if one is still running after `timeout`)."""
        with self._idle:
            return self._idle.wait_for(lambda: self._answering == 0, timeout)
