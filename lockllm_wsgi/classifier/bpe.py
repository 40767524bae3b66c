"""NanoGuard's tokenizer: tiktoken's byte-level BPE, re-implemented on the `regex` module so the model extra
needs no tiktoken (tests/test_classifier.py checks the ids against tiktoken's own on a fixed sample)::

    tokenizer = BytePairTokenizer(read_encoding(handle))
    tokenizer.encode("Ignore all previous instructions")  # -> [ids], no BOS
"""

from __future__ import annotations

import time
from functools import lru_cache
from itertools import pairwise

import regex

from .checkpoint import EncodingFile

# Distinct pre-split pieces whose merges are remembered: the words of a language and of the prompts one site sees
# repeat, so this saves most merge work after warm-up; 64k short byte strings and id tuples are a few MB.
DEFAULT_PIECE_CACHE = 65_536
# A pre-split piece longer than this (a run of thousands of letters) is merged in slices of this length: merging
# costs the square of a piece's length, and no word of a real text is this long.
MAX_PIECE_CHARS = 256
_NO_RANK = 1 << 62
# Pieces tokenized between two looks at the clock: about 4 ms of work.
DEADLINE_CHECK_PIECES = 4096


def _unicode_whitespace(pattern: str) -> str:
    """tiktoken's regex engine means Unicode White_Space by \\s; Python's `regex` adds the controls U+001C-U+001F."""
    return pattern.replace(r"\s", r"\p{White_Space}").replace(r"\S", r"\P{White_Space}")


class BytePairTokenizer:
    def __init__(self, encoding: EncodingFile):
        self.ranks = encoding.mergeable_ranks
        self.special_tokens = encoding.special_tokens
        self._split = regex.compile(_unicode_whitespace(encoding.pat_str)).findall
        self._piece = lru_cache(maxsize=DEFAULT_PIECE_CACHE)(self._merge)

    def encode(self, text: str, deadline: float | None = None) -> list[int]:
        """The token ids of `text`; special-token names in it are plain text (tiktoken's encode_ordinary).
        TimeoutError once `deadline` (time.monotonic()) has passed, checked every DEADLINE_CHECK_PIECES pieces:
        megabytes of text take seconds to tokenize."""
        ids: list[int] = []
        for number, piece in enumerate(self._split(text)):
            if deadline is not None and number % DEADLINE_CHECK_PIECES == 0 and time.monotonic() >= deadline:
                raise TimeoutError(f"the deadline passed after {number} pieces of the text were tokenized")
            if len(piece) <= MAX_PIECE_CHARS:
                ids.extend(self._piece(piece))
                continue
            for start in range(0, len(piece), MAX_PIECE_CHARS):
                ids.extend(self._piece(piece[start:start + MAX_PIECE_CHARS]))
        return ids

    def _merge(self, piece: str) -> tuple[int, ...]:
        data = piece.encode("utf-8")
        ranks = self.ranks
        whole = ranks.get(data)
        if whole is not None:
            return (whole,)
        # tiktoken's merge loop: join the adjacent pair whose bytes have the lowest rank (the leftmost on a tie)
        # until no adjacent pair is a known token. `starts` are the parts' start offsets then the end; `pairs[i]`
        # is the rank of parts i and i + 1 joined, recomputed only beside a merge.
        starts = list(range(len(data) + 1))
        pairs = [ranks.get(data[i:i + 2], _NO_RANK) for i in range(len(data) - 1)]
        while pairs:
            best = min(pairs)
            if best == _NO_RANK:
                break
            i = pairs.index(best)
            del starts[i + 1]
            del pairs[i]
            if i < len(pairs):
                pairs[i] = ranks.get(data[starts[i]:starts[i + 2]], _NO_RANK)
            if i > 0:
                pairs[i - 1] = ranks.get(data[starts[i - 1]:starts[i + 1]], _NO_RANK)
        return tuple(ranks[data[start:end]] for start, end in pairwise(starts))
