"""Relaying a scanned request to the provider and its answer back, streaming, with header hygiene.

The body sent upstream is exactly the bytes that were scanned; the answer's bytes come back undecoded, chunk by
chunk as they arrive (server-sent events reach the client token by token), and the upstream connection is closed
when the client goes away. Connection failures become `UpstreamError` (502, or 504 for a timeout)::

    relay = Relay(settings.upstream)
    status, headers, body_iter = relay.send("POST", "https://api.openai.com/v1/chat/completions", headers, body)
"""

from __future__ import annotations

import logging
import re
from typing import Iterable, Iterator, Mapping

import certifi
import urllib3
from urllib3.exceptions import HTTPError, NewConnectionError, TimeoutError as Urllib3Timeout

from .config import UpstreamSettings

log = logging.getLogger(__name__)

# RFC 9110 7.6.1 hop-by-hop headers, plus the proxy ones clients still send: they describe one connection and
# are never forwarded, in either direction.
HOP_BY_HOP = frozenset(
    """connection keep-alive proxy-authenticate proxy-authorization proxy-connection te trailer trailers
    transfer-encoding upgrade""".split()
)
# Request headers the gateway sets or must not pass on: Host and Content-Length are computed for the upstream,
# forwarding headers would tell the provider about internal hosts (and could steer a provider's proxy).
_NOT_FORWARDED = frozenset(
    """host content-length forwarded x-forwarded-for x-forwarded-host x-forwarded-proto x-forwarded-port
    x-forwarded-prefix x-original-url x-rewrite-url x-real-ip via""".split()
)
# LockLLM Proxy Mode's request headers (X-LockLLM-Key, -Scan-Action, ...) are for the scanner, never the provider:
# a client's LockLLM key must not reach OpenAI.
_LOCKLLM_PREFIX = "x-lockllm-"
# Bytes read per upstream read; read1 returns whatever has arrived, so small events are not held back.
STREAM_READ_BYTES = 64 * 1024
DEFAULT_POOL_SIZE = 32


class UpstreamError(Exception):
    """The provider could not be reached or did not answer in time: `str()` is for the client, `cause` (the
    underlying error, any query string cut out since it may hold a key) for the operator's log only."""

    def __init__(self, status: int, message: str, cause: BaseException | None = None):
        super().__init__(message)
        self.status = status
        self.cause = _QUERY.sub("?<redacted>", f"{type(cause).__name__}: {cause}")[:300] if cause else None


_QUERY = re.compile(r"\?[^\s'\")]*")


def is_hop_by_hop(name: str, connection_tokens: frozenset[str]) -> bool:
    lowered = name.lower()
    return lowered in HOP_BY_HOP or lowered in connection_tokens


def connection_tokens(value: str | None) -> frozenset[str]:
    """Header names listed in a Connection header: hop-by-hop for this message too."""
    return frozenset(token.strip().lower() for token in (value or "").split(",") if token.strip())


def request_headers(environ: Mapping[str, object]) -> dict[str, str]:
    """The client's end-to-end headers, from the WSGI environ, as they go upstream."""
    tokens = connection_tokens(environ.get("HTTP_CONNECTION"))  # type: ignore[arg-type]
    headers = {}
    if environ.get("CONTENT_TYPE"):
        headers["Content-Type"] = str(environ["CONTENT_TYPE"])
    for key, value in environ.items():
        if not key.startswith("HTTP_"):
            continue
        name = key[5:].replace("_", "-").title()
        if is_hop_by_hop(name, tokens) or name.lower() in _NOT_FORWARDED or name.lower().startswith(_LOCKLLM_PREFIX):
            continue
        headers[name] = str(value)
    return headers


def response_headers(raw_headers: Iterable[tuple[str, str]], connection: str | None) -> list[tuple[str, str]]:
    tokens = connection_tokens(connection)
    return [(name, value) for name, value in raw_headers if not is_hop_by_hop(name, tokens)]


class UpstreamBody:
    """The upstream answer as a WSGI iterable: raw bytes as they arrive; close() closes the connection."""

    def __init__(self, response: urllib3.BaseHTTPResponse):
        self._response = response

    def __iter__(self) -> Iterator[bytes]:
        raw = self._response
        while True:
            # A reset mid-stream raises here; the WSGI server then aborts the response, so the client sees the
            # stream cut rather than a clean end (no [DONE] is ever invented).
            chunk = raw.read1(STREAM_READ_BYTES, decode_content=False)
            if not chunk:
                return
            yield chunk

    def close(self) -> None:
        # Unread (the client went away): the connection is closed, not reused. Read to the end: it is already back
        # in the pool, and this does nothing.
        self._response.close()
        self._response.release_conn()


class Relay:
    """Forwards requests upstream; thread-safe, one per process."""

    def __init__(self, settings: UpstreamSettings):
        self.settings = settings
        # urllib3 itself, not a requests session: requests' request preparation cost 0.2 ms per relayed request
        # (benchmarks/latency.py) and gave nothing here. No default headers (the provider sees the client's),
        # no proxies (ambient proxy variables must not reroute provider traffic), no redirects, no retries, and
        # the certificates requests would verify against (certifi's bundle).
        self.pool = urllib3.PoolManager(num_pools=8, maxsize=DEFAULT_POOL_SIZE, retries=False,
                                        cert_reqs="CERT_REQUIRED", ca_certs=certifi.where())
        self._timeout = urllib3.Timeout(connect=settings.connect_timeout, read=settings.read_timeout)

    def send(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes,
    ) -> tuple[int, str, list[tuple[str, str]], UpstreamBody]:
        """Send the request as it is and return, once the provider's headers are in: its status, reason, headers
        (hop-by-hop ones removed) and the body, streamed as it arrives (closing it frees the connection).
        UpstreamError (502 or 504) when the provider cannot be reached or does not answer in time."""
        try:
            response = self.pool.urlopen(
                method, url, body=body or None, headers=dict(headers), preload_content=False, decode_content=False,
                redirect=False, retries=False, timeout=self._timeout,
            )
        except NewConnectionError as error:  # a refused connection, though urllib3 files it under timeouts
            log.debug("upstream connection failed: %s", type(error).__name__)
            raise UpstreamError(502, "The provider could not be reached; try again later.", error) from None
        except Urllib3Timeout as error:
            raise UpstreamError(504, "The provider did not answer in time; try again.", error) from None
        except (HTTPError, OSError, ValueError) as error:
            log.debug("upstream connection failed: %s", type(error).__name__)
            raise UpstreamError(502, "The provider could not be reached; try again later.", error) from None
        headers_out = response_headers(response.headers.items(), response.headers.get("Connection"))
        return response.status, response.reason or "", headers_out, UpstreamBody(response)

    def close(self) -> None:
        self.pool.clear()
