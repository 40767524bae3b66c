"""Refusal: the one exception the request path raises when it answers the client itself.

Every refusal carries what was wrong and what to do, plus a stable `code` for programs; the route's wire format
turns it into its provider's own error shape, so the client's SDK raises its native error::

    raise Refusal(413, "request_too_large", "The body is larger than 10485760 bytes; send a smaller request.")
"""

from __future__ import annotations

# The kind of a refusal, by status, for formats whose error shape names one (OpenAI `type`, Anthropic
# `error.type`, Gemini `status`).
KIND_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    415: "invalid_request_error",
    429: "rate_limit_error",
    502: "api_error",
    503: "api_error",
    504: "api_error",
}


class Refusal(Exception):
    """The gateway answers the request itself with `status`, never relaying it."""

    def __init__(self, status: int, code: str, message: str, headers: tuple[tuple[str, str], ...] = ()):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers

    @property
    def kind(self) -> str:
        return KIND_BY_STATUS.get(self.status, "invalid_request_error" if self.status < 500 else "api_error")
