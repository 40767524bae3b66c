"""Raw HTTP/1.1 over a socket (TLS for an https:// gateway), for what requests and http.client refuse to send:
conflicting framing headers, obs-fold, pipelined requests, absolute-form targets.

    answer = exchange(gateway.base, b"POST /llm/openai/v1/chat/completions HTTP/1.1\\r\\n...")
    statuses(answer)  # [400]
"""

from __future__ import annotations

import http.client
import io
import json
import socket
import ssl
import time
from urllib.parse import urlsplit



class _Unclosable(io.BytesIO):
    def close(self) -> None:  # HTTPResponse closes its file after each response; the next one follows
        pass


class _Replay:
    """What http.client.HTTPResponse reads from: one buffer shared by consecutive responses."""

    def __init__(self, data: bytes) -> None:
        self.file = _Unclosable(data)

    def makefile(self, *_args, **_kwargs) -> io.BytesIO:
        return self.file

def connect(base: str, ca_file: str | None, timeout: float = 15) -> socket.socket:
    """A connected socket to the gateway at `base` (http:// or https://)."""
    parts = urlsplit(base)
    plain = socket.create_connection((parts.hostname, parts.port), timeout=timeout)
    if parts.scheme != "https":
        return plain
    context = ssl.create_default_context(cafile=ca_file)
    return context.wrap_socket(plain, server_hostname=parts.hostname)


def mount(base: str) -> str:
    """The path prefix the gateway is mounted at ("" for a whole site)."""
    return urlsplit(base).path.rstrip("/")


def authority(base: str) -> str:
    parts = urlsplit(base)
    return f"{parts.hostname}:{parts.port}"


def exchange(base: str, ca_file: str | None, raw: bytes, timeout: float = 15) -> bytes:
    """Send `raw` as is and read everything the server sends until it closes the connection (or `timeout`)."""
    received = b""
    deadline = time.monotonic() + timeout
    with connect(base, ca_file, timeout) as connection:
        connection.sendall(raw)
        while time.monotonic() < deadline:
            try:
                part = connection.recv(65536)
            except (ConnectionResetError, ssl.SSLError, socket.timeout):
                break
            if not part:
                break
            received += part
    return received


def responses(received: bytes) -> list[tuple[int, bytes]]:
    """(status, body) of every response in `received`, in order, framed as HTTP/1.1 frames them."""
    replay, out = _Replay(received), []
    while replay.file.tell() < len(received):
        response = http.client.HTTPResponse(replay)  # type: ignore[arg-type]
        try:
            response.begin()
            body = response.read()
        except (http.client.HTTPException, ValueError):
            break  # a partial response: the server cut it
        out.append((response.status, body))
    return out


def statuses(received: bytes) -> list[int]:
    """The status codes of every response in `received`, in order."""
    return [status for status, _ in responses(received)]


def error_codes(received: bytes) -> list[str | None]:
    """The `error.code` of every JSON error response (None for others), in order."""
    codes = []
    for _, body in responses(received):
        try:
            codes.append(json.loads(body)["error"]["code"])
        except (ValueError, KeyError, TypeError):
            codes.append(None)
    return codes


def request(method: str, target: str, headers: list[tuple[str, str]] | list[str], body: bytes = b"") -> bytes:
    """A request head (headers as pairs, or as raw lines for malformed ones) followed by `body`, byte for byte."""
    lines = [f"{method} {target} HTTP/1.1"]
    lines += [line if isinstance(line, str) else f"{line[0]}: {line[1]}" for line in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def chunked(body: bytes, size: int = 64) -> bytes:
    """`body` in chunked transfer coding, ending with the terminating chunk."""
    out = b""
    for start in range(0, len(body), size):
        piece = body[start:start + size]
        out += f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    return out + b"0\r\n\r\n"
