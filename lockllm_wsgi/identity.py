"""Who is calling: the identity a rate limit counts against and an audit record names.

Apache's authenticated user (REMOTE_USER) when there is one; else the client's key, hashed (a key is never kept),
as the route's wire format finds it (`WireFormat.client_key`; by default `provider_key`, the headers where the
provider SDKs put their API key); else the client address::

    client_identity({"REMOTE_USER": "alice"})  # -> "user:alice"
    client_identity({"HTTP_AUTHORIZATION": "Bearer sk-..."})  # -> "key:3f2a..."
"""

from __future__ import annotations

import hashlib
from typing import Mapping
from urllib.parse import parse_qs

# The places provider SDKs put their key: OpenAI (Authorization: Bearer), Anthropic (x-api-key), Azure OpenAI
# (api-key); Gemini also takes `?key=` in the query.
_KEY_HEADERS = ("HTTP_AUTHORIZATION", "HTTP_X_API_KEY", "HTTP_API_KEY", "HTTP_X_GOOG_API_KEY")
# Hex digits of the key's sha256 kept in the identity: enough to tell keys apart, too few to matter if leaked.
KEY_DIGEST_CHARS = 32


def provider_key(environ: Mapping[str, object]) -> str | None:
    for name in _KEY_HEADERS:
        value = str(environ.get(name) or "").strip()
        if value:
            scheme, _, token = value.partition(" ")
            return token.strip() if scheme.lower() == "bearer" and token.strip() else value
    keys = parse_qs(str(environ.get("QUERY_STRING") or "")).get("key")
    return keys[0] if keys else None


def client_identity(environ: Mapping[str, object], key: str | None = None) -> str:
    """`key` is the client's key as its format reads it; when None, the provider-key headers are read."""
    user = environ.get("REMOTE_USER")
    if user:
        return f"user:{user}"
    key = key or provider_key(environ)
    if key:
        return "key:" + hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:KEY_DIGEST_CHARS]
    return f"addr:{environ.get('REMOTE_ADDR') or 'unknown'}"
