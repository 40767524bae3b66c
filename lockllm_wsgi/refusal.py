"""Refusal: the one exception the request path raises when it answers the client itself.

Every refusal carries what was wrong and what to do, plus a stable `code` for programs; the route's wire format
turns it into its provider's own error shape and vocabulary, so the client's SDK raises its native error::

    raise Refusal(413, "request_too_large", "The body is larger than 10485760 bytes; send a smaller request.")
"""

from __future__ import annotations

class Refusal(Exception):
    """The gateway answers the request itself with `status`, never relaying it."""

    def __init__(self, status: int, code: str, message: str, headers: tuple[tuple[str, str], ...] = ()):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers
