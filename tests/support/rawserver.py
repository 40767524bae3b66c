"""A tiny loopback TCP server whose behaviour is a function of the accepted socket: for the faults an HTTP
library cannot play (slow drip, reset mid-response, hang after headers)."""

from __future__ import annotations

import socket
import threading
from typing import Callable


class RawServer:
    def __init__(self, behave: Callable[[socket.socket], None]):
        self.behave = behave
        # Listening before the accept thread starts: a client may connect as soon as the constructor returns.
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.connections = 0
        self.closed_by_peer = threading.Event()
        self._stop = False
        self._open: set[socket.socket] = set()  # connections a behaviour is still serving
        self._open_lock = threading.Lock()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._run, args=(conn,), daemon=True).start()

    def _run(self, conn: socket.socket) -> None:
        with self._open_lock:
            self._open.add(conn)
        with conn:
            try:
                self.behave(conn)
            except OSError:  # PeerClosed included: the peer went away before or while we answered
                if not self._stop:  # else close() cut it
                    self.closed_by_peer.set()
            finally:
                with self._open_lock:
                    self._open.discard(conn)

    def close(self) -> None:
        """Stop accepting, and cut the connections still being served, so a behaviour that drips or streams for
        many seconds ends now and the client reading it (a gateway's scan thread, which its close() waits for) sees
        the end at once. On Linux a bare close() leaves a blocked accept() running (and accepting), so shut the
        sockets down first, which wakes whoever waits on them."""
        self._stop = True
        with self._open_lock:
            sockets = [self.listener, *self._open]
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.listener.close()
        self._thread.join(5)


class PeerClosed(ConnectionError):
    """The peer closed the connection before a whole request arrived; `received` is what it did send."""

    def __init__(self, received: bytes):
        super().__init__(f"the peer closed the connection after {len(received)} bytes of a request")
        self.received = received


class _Reader:
    """Buffered reads from a socket, to a delimiter or a byte count: one recv() is never assumed to be a message."""

    def __init__(self, conn: socket.socket):
        self.conn = conn
        self.buffer = bytearray()
        self.consumed = bytearray()  # everything handed out so far, for PeerClosed

    def _fill(self) -> None:
        chunk = self.conn.recv(65536)
        if not chunk:
            raise PeerClosed(bytes(self.consumed + self.buffer))
        self.buffer += chunk

    def _take(self, count: int) -> bytes:
        out = bytes(self.buffer[:count])
        del self.buffer[:count]
        self.consumed += out
        return out

    def until(self, delimiter: bytes) -> bytes:
        """Up to and including the first `delimiter`."""
        searched = 0
        while (end := self.buffer.find(delimiter, searched)) < 0:
            searched = max(0, len(self.buffer) - len(delimiter) + 1)
            self._fill()
        return self._take(end + len(delimiter))

    def exactly(self, count: int) -> bytes:
        while len(self.buffer) < count:
            self._fill()
        return self._take(count)


def _headers(head: bytes) -> dict[bytes, bytes]:
    """Lower-cased header names to values (repeated headers joined with commas, as HTTP allows)."""
    headers: dict[bytes, bytes] = {}
    for line in head.split(b"\r\n")[1:]:
        name, colon, value = line.partition(b":")
        if colon:
            name = name.strip().lower()
            headers[name] = headers[name] + b", " + value.strip() if name in headers else value.strip()
    return headers


def _is_chunked(headers: dict[bytes, bytes]) -> bool:
    codings = [coding.strip().lower() for coding in headers.get(b"transfer-encoding", b"").split(b",")]
    return codings[-1:] == [b"chunked"]


def _read_chunked(reader: _Reader) -> bytes:
    """A chunked body as sent, through the terminating 0-chunk and the (possibly empty) trailer section."""
    body = b""
    while True:
        size_line = reader.until(b"\r\n")
        body += size_line
        size = int(size_line.split(b";", 1)[0].strip(), 16)
        if size == 0:
            while True:  # trailer fields, each a line, then the empty line
                line = reader.until(b"\r\n")
                body += line
                if line == b"\r\n":
                    return body
        body += reader.exactly(size + 2)  # the data and its CRLF


def read_request(conn: socket.socket) -> bytes:
    """Read one whole HTTP request: the head, then the body as its framing says (a chunked body up to its
    terminating 0-chunk and trailers, else Content-Length bytes, else none). The bytes are returned as they came
    on the wire, nothing after the request. Raises PeerClosed (an OSError, which RawServer reads as "the peer went
    away") if the connection is closed before the request is complete."""
    reader = _Reader(conn)
    head = reader.until(b"\r\n\r\n")
    headers = _headers(head[:-4])
    if _is_chunked(headers):
        return head + _read_chunked(reader)
    length = int(headers.get(b"content-length", b"0").split(b",")[0].strip() or 0)
    return head + reader.exactly(length)


def request_body(request: bytes) -> bytes:
    """The body of a request read by read_request, with any chunked framing removed."""
    head, _, body = request.partition(b"\r\n\r\n")
    if not _is_chunked(_headers(head)):
        return body
    data, position = b"", 0
    while True:
        line_end = body.index(b"\r\n", position)
        size = int(body[position:line_end].split(b";", 1)[0].strip(), 16)
        if size == 0:
            return data
        data += body[line_end + 2:line_end + 2 + size]
        position = line_end + 2 + size + 2
