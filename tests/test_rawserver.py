"""tests/support/rawserver.py's read_request: a whole request however the bytes are split, and no hang on an early
close."""

from __future__ import annotations

import queue
import socket

import pytest

from support.rawserver import PeerClosed, RawServer, read_request, request_body

BODY = b'{"model": "m", "max_tokens": 3}'
HEAD = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"


def chunked(body: bytes, size: int = 7) -> bytes:
    pieces = [body[start:start + size] for start in range(0, len(body), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces) + b"0\r\n\r\n"


@pytest.fixture
def server():
    """RawServer whose behaviour puts on a queue what read_request returned (or the error it raised)."""
    results: queue.Queue = queue.Queue()

    def behave(conn: socket.socket) -> None:
        try:
            results.put(read_request(conn))
        except OSError as error:
            results.put(error)
            raise

    raw = RawServer(behave)
    yield raw, results
    raw.close()


def send_in_pieces(port: int, pieces: list[bytes]) -> socket.socket:
    """Each piece in its own send, TCP_NODELAY; the caller closes the socket."""
    client = socket.create_connection(("127.0.0.1", port), timeout=10)
    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for piece in pieces:
        client.sendall(piece)
    return client


CONTENT_LENGTH = HEAD + b"Content-Length: %d\r\n\r\n" % len(BODY) + BODY
CHUNKED = HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + chunked(BODY)


@pytest.mark.parametrize("request_bytes", [CONTENT_LENGTH, CHUNKED], ids=["content-length", "chunked"])
@pytest.mark.parametrize("split", [None, 1, 5], ids=["one-send", "byte-by-byte", "five-byte-pieces"])
def test_the_whole_request_is_returned_however_it_is_split(server, request_bytes, split):
    raw, results = server
    size = split or len(request_bytes)
    pieces = [request_bytes[start:start + size] for start in range(0, len(request_bytes), size)]
    with send_in_pieces(raw.port, pieces + [b"GET /next HTTP/1.1\r\n\r\n"]):
        got = results.get(timeout=10)
    assert got == request_bytes  # and nothing of the pipelined request after it
    assert request_body(got) == BODY


def test_a_head_and_a_body_sent_apart_are_both_returned(server):
    """The original bug: the body, in a later recv than the head, was read but not returned."""
    raw, results = server
    head, _, body = CONTENT_LENGTH.partition(b"\r\n\r\n")
    client = send_in_pieces(raw.port, [head + b"\r\n\r\n"])
    with client:
        with pytest.raises(queue.Empty):
            results.get(timeout=0.2)  # still waiting for the body, not returned early
        client.sendall(body)
        assert results.get(timeout=10) == CONTENT_LENGTH


@pytest.mark.parametrize("cut", [10, len(CONTENT_LENGTH) - 5], ids=["in-the-head", "in-the-body"])
def test_a_peer_that_closes_early_ends_the_read(server, cut):
    raw, results = server
    send_in_pieces(raw.port, [CONTENT_LENGTH[:cut]]).close()
    error = results.get(timeout=10)
    assert isinstance(error, PeerClosed) and error.received == CONTENT_LENGTH[:cut]
    assert raw.closed_by_peer.wait(5)


def test_a_closed_server_accepts_no_more_connections():
    raw = RawServer(lambda conn: None)
    raw.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", raw.port), timeout=5).close()
