"""The application of a daemon that could not build the gateway: every request gets a JSON 503 naming the problem.

A bad INI file put in place before `apachectl -k graceful` would otherwise fail the `.wsgi` script's import, and
every client would get Apache's HTML 500 page, which no SDK can read, while the cause sits in the error log next to
a traceback per request. Instead the problem is logged once, at start, and each request (the operator endpoints
included: nothing here is ready or healthy) is answered in the OpenAI error shape the gateway uses where it knows
no route, with the gateway's request id. Not for errors in a request: those are the gateway's own refusals::

    application = UnavailableApp(ConfigError("/etc/lockllm/lockllm.ini: [scanner] timeout must be ..."))
"""

from __future__ import annotations

import secrets
from http import HTTPStatus
from typing import TYPE_CHECKING, Iterable

from .audit import ensure_handler, log_event
from .config import ConfigError
from .formats.openai import OpenAIFormat
from .refusal import Refusal

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

STATUS = 503


def describe(error: BaseException) -> str:
    """What the client and the log are told: a ConfigError's message is written for people and names the file,
    section and key (never a secret's value); anything else only by its type, since its text may quote a URL
    with a password."""
    if isinstance(error, ConfigError):
        return str(error)
    return f"{type(error).__name__} while building the gateway (the traceback is in the error log)"


class UnavailableApp:
    """Answers every request 503 `gateway_misconfigured`; logs the problem once, when it is made."""

    def __init__(self, error: BaseException):
        self.problem = describe(error)
        self.refusal = Refusal(STATUS, "gateway_misconfigured", f"The gateway cannot start: {self.problem}. The "
                               "request was not sent; the operator must fix the configuration and reload Apache.")
        ensure_handler()
        log_event("unavailable", problem=self.problem,
                  effect="every request is answered 503 gateway_misconfigured until the configuration is fixed "
                         "and Apache reloaded")

    def __call__(self, environ: "WSGIEnvironment", start_response: "StartResponse") -> Iterable[bytes]:
        request_id = f"req_{secrets.token_hex(12)}"
        headers, body = OpenAIFormat().error_body(self.refusal, request_id)
        start_response(f"{STATUS} {HTTPStatus(STATUS).phrase}", headers + [
            ("Content-Length", str(len(body))), ("Cache-Control", "no-store"), ("X-Request-Id", request_id),
            ("X-LockLLM-Request-Id", request_id)])
        return [b""] if environ.get("REQUEST_METHOD") == "HEAD" else [body]
