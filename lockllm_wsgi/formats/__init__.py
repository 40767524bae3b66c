"""Wire formats: one module per provider API, each knowing where the text is and how its errors look.

A format is a `WireFormat`: a table of the endpoints whose bodies it reads (a path pattern and a function that
walks the body into a `Collector`), and `error_body`, which renders a `Refusal` in that provider's error shape so
its SDK raises its native exception::

    fmt = FORMATS["openai"]
    collector = fmt.extract("/v1/chat/completions", body)
"""

from __future__ import annotations

import json
import re
from typing import Any, Callable, Mapping

from ..extract import Collector, UnknownShape
from ..refusal import Refusal

Walker = Callable[[dict, Collector], None]


class WireFormat:
    """Base: subclasses fill `name`, `endpoints` and `error_body`."""

    name = ""
    # (compiled path pattern, walker): the first pattern that matches the path after the route prefix wins.
    endpoints: tuple[tuple[re.Pattern, Walker], ...] = ()

    def extract(self, path: str, body: dict) -> Collector:
        for pattern, walk in self.endpoints:
            if pattern.search(path):
                collector = Collector()
                walk(body, collector)
                return collector
        raise UnknownShape("path", f"{path} is not an endpoint the {self.name} format knows how to scan")

    def is_stream(self, path: str, body: Mapping[str, Any]) -> bool:
        return body.get("stream") is True

    def error_body(self, refusal: Refusal, request_id: str) -> tuple[list[tuple[str, str]], bytes]:
        raise NotImplementedError


def json_bytes(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode("utf-8")


def _registry() -> dict[str, WireFormat]:
    from .openai import OpenAIFormat

    return {fmt.name: fmt for fmt in (OpenAIFormat(),)}


FORMATS: dict[str, WireFormat] = _registry()
