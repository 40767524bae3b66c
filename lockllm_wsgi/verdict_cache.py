"""The verdict cache: a requests-cache session on SQLite that keeps verdicts and nothing else.

requests-cache by default pickles whole responses with their requests, so the cache file would hold the prompt
(the request body) and the key (a header). Here the stored entry is scrubbed to the verdict fields, the cache key
is a hash of what changes a verdict (scanner URL, the key's identity, the body: text and sensitivity), the
serializer is JSON (a tampered entry cannot run code), and any cache error is a miss::

    session = open_cached_session(settings.scanner, key_identity="3f2a...")
    session.post(url, json={"input": "...", "sensitivity": "medium"}).from_cache
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3

import requests
from requests_cache import CachedSession, SQLiteCache
from requests_cache.serializers.pipeline import SerializerPipeline, Stage
from requests_cache.serializers.preconf import json_preconf_stage

from .config import ScannerSettings

log = logging.getLogger(__name__)

# Fields of a scan answer worth keeping; everything else (an echoed input, say) is dropped before storing.
VERDICT_FIELDS = ("safe", "label", "confidence", "injection", "request_id")
# Milliseconds a process waits for another's write before treating the cache as unavailable (a miss).
DEFAULT_BUSY_TIMEOUT_MS = 2000


def _scrub(entry: dict) -> dict:
    """Drop the prompt and the key from a response about to be stored: keep status, expiry and verdict."""
    request = entry.get("request") or {}
    entry["request"] = {**request, "body": None, "headers": {}}
    entry["headers"] = {"Content-Type": "application/json"}
    content = entry.pop("_decoded_content", None)
    entry.pop("_content", None)
    if isinstance(content, dict):
        entry["_decoded_content"] = {key: content[key] for key in VERDICT_FIELDS if key in content}
    else:
        entry["_decoded_content"] = {}
    return entry


_SCRUBBING_JSON = SerializerPipeline(
    [
        json_preconf_stage,
        Stage(dumps=_scrub, loads=lambda entry: entry),
        Stage(json),
    ],
    name="scrubbed-json",
    is_binary=False,
)


class ForgivingSQLiteCache(SQLiteCache):
    """SQLite storage whose every failure ("database is locked", a corrupted row) is logged and read as a miss."""

    def get_response(self, key, default=None):
        try:
            return super().get_response(key, default)
        except Exception as error:  # noqa: BLE001 - any broken entry must be a miss, never a scanner error
            log.warning('{"event": "cache_error", "operation": "read", "error": "%s"}', type(error).__name__)
            return default

    def save_response(self, response, cache_key=None, expires=None):
        try:
            super().save_response(response, cache_key, expires)
        except Exception as error:  # noqa: BLE001
            log.warning('{"event": "cache_error", "operation": "write", "error": "%s"}', type(error).__name__)

    def delete(self, *args, **kwargs):
        try:
            super().delete(*args, **kwargs)
        except Exception as error:  # noqa: BLE001
            log.warning('{"event": "cache_error", "operation": "delete", "error": "%s"}', type(error).__name__)


def _is_usable_verdict(response: requests.Response) -> bool:
    """Only a 200 whose JSON holds a verdict is stored: errors and unusable answers are never cached."""
    try:
        data = response.json()
    except ValueError:
        return False
    return isinstance(data, dict) and (isinstance(data.get("safe"), bool) or isinstance(data.get("injection"), (int, float)))


def _prepare_file(path: str) -> None:
    """Create the cache file 0600 (SQLite gives its -wal and -shm files the same mode) in a 0700 folder."""
    folder = os.path.dirname(path)
    if not os.path.isdir(folder):
        os.makedirs(folder, mode=0o700, exist_ok=True)
    os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))


def open_cached_session(settings: ScannerSettings, key_identity: str) -> requests.Session:
    """A CachedSession for `settings.cache`; if the file cannot be opened, a plain session (logged)."""
    path = settings.cache_path
    assert path is not None

    def cache_key(request, **_kwargs) -> str:
        digest = hashlib.sha256()
        for part in (request.method.encode(), request.url.encode(), key_identity.encode(), request.body or b""):
            digest.update(part if isinstance(part, bytes) else part.encode())
            digest.update(b"\0")
        return digest.hexdigest()

    try:
        _prepare_file(path)
        backend = ForgivingSQLiteCache(
            path, serializer=_SCRUBBING_JSON, decode_content=True, wal=True, busy_timeout=DEFAULT_BUSY_TIMEOUT_MS,
            timeout=DEFAULT_BUSY_TIMEOUT_MS / 1000,
        )
        return CachedSession(
            backend=backend,
            expire_after=settings.cache_ttl,
            allowable_methods=("POST",),
            allowable_codes=(200,),
            key_fn=cache_key,
            filter_fn=_is_usable_verdict,
            stale_if_error=False,
        )
    except (OSError, sqlite3.Error) as error:
        log.error(
            '{"event": "cache_unavailable", "path": "%s", "error": "%s", "effect": "scanning without a cache"}',
            path, str(error).replace('"', "'"),
        )
        return requests.Session()
