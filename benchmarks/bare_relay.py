"""The baseline: a WSGI app that only forwards, with the gateway's own HTTP client and nothing else.

It reads the body, strips the route prefix and sends the request upstream with `lockllm_wsgi.relay.Relay` (a
urllib3 pool, preload_content=False, the same read1 loop), streaming the answer back. No body parsing, extraction,
scanning, policy or request log: the difference between it and the gateway is what the filter costs::

    application = BareRelay("/var/tmp/lockllm-bench/x/lockllm.ini")
"""

from __future__ import annotations

from lockllm_wsgi.config import load_settings
from lockllm_wsgi.relay import Relay, request_headers


class BareRelay:
    def __init__(self, config_path: str):
        settings = load_settings(config_path)
        route = settings.routes[0]
        self.prefix, self.upstream = route.prefix, route.upstream
        self.relay = Relay(settings.upstream)

    def __call__(self, environ, start_response):
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        path = environ.get("PATH_INFO", "/")[len(self.prefix):] or "/"
        status, reason, headers, upstream_body = self.relay.send(
            environ["REQUEST_METHOD"], self.upstream + path, request_headers(environ), body)
        start_response(f"{status} {reason}", headers)
        return upstream_body
