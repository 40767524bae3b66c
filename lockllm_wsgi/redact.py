"""PII stripping (`[scanner] pii_action = strip`): the provider receives LockLLM's redacted text in place of each
text in which LockLLM found personal data, written back into the request's own JSON structure. The one
documented case where the relayed bytes differ from the client's (the audit record says `pii_stripped`)::

    body = strip_pii(document, [(segment, "My card is [CREDIT_CARD]")])  # -> the new body's bytes

A text that cannot be written back where it came from (inside a decoded file, decoded tool arguments, a key) is
not sent at all: the request is refused as `pii_detected`.
"""

from __future__ import annotations

import json
import re
from typing import Any, Sequence

from .extract import Segment
from .refusal import Refusal

_STEP = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def _steps(where: str) -> list[str | int] | None:
    """`messages[0].content[1].text` -> ["messages", 0, "content", 1, "text"]; None for a derived reading."""
    if "<" in where:
        return None
    return [int(index) if index else name for name, index in _STEP.findall(where)]


def _write(document: Any, where: str, expected: str, text: str) -> bool:
    steps = _steps(where)
    if not steps:
        return False
    target = document
    for step in steps[:-1]:
        try:
            target = target[step]
        except (KeyError, IndexError, TypeError):
            return False
    last = steps[-1]
    try:
        if target[last] != expected:  # the path must lead to exactly the text that was scanned
            return False
    except (KeyError, IndexError, TypeError):
        return False
    target[last] = text
    return True


def strip_pii(document: dict, redactions: Sequence[tuple[Segment, str]]) -> bytes:
    for segment, redacted in redactions:
        if not _write(document, segment.where, segment.text, redacted):
            raise Refusal(400, "pii_detected", f"The text at {segment.where} contains personal data, which this "
                          "gateway strips, but it cannot be rewritten where it is (a file, encoded arguments); send "
                          "it without the personal data.")
    return json.dumps(document, ensure_ascii=False).encode("utf-8")
