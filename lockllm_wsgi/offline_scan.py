"""The offline scanner: the rules (offline/) on every text and, with `[scanner] offline_model = nanoguard`, the
NanoGuard model (classifier/) on every text it has not scored before, in a pool of its own, within the scan deadline.

A text is flagged when the rules fire OR the model is sure: the verdict's score is the higher of the rules' score
and the model's score rescaled so that the model's calibrated threshold falls on the rules' threshold (0.5), so
`[policy] threshold` keeps one meaning for both::

    scanner = OfflineScanner(settings.scanner)  # loads the model here, once per process
    scanner.scan(["Hello"], deadline=time.monotonic() + 5)[0].score
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait

from .classifier import DEFAULT_MODEL_THRESHOLD, ModelTimeout, NanoGuard, load_nanoguard
from .config import ScannerSettings
from .offline import DEFAULT_THRESHOLD, Detection, OfflineDetector, parse_signal
from .verdict import ScannerUnavailable, Verdict

# The family a verdict names when the model's own score reached its threshold (beside the rule families).
MODEL_FAMILY = "nanoguard"
# One model run at a time per process: numpy's BLAS already spreads each over the cores, and a second run at once
# would only share them, making both late.
DEFAULT_MODEL_WORKERS = 1
# Model scores kept per process, by the text's SHA-256 (never the text): a resent chat history costs no model run.
# ~200 bytes an entry.
DEFAULT_MEMO_ENTRIES = 16_384


def combined_score(rules: float, model: float | None, model_threshold: float = DEFAULT_MODEL_THRESHOLD) -> float:
    """The higher of the rules' score and the model's, the model's mapped linearly on each side of its threshold
    so that `model_threshold` lands on the rules' DEFAULT_THRESHOLD."""
    if model is None:
        return rules
    if model < model_threshold:
        mapped = DEFAULT_THRESHOLD * model / model_threshold
    else:
        mapped = DEFAULT_THRESHOLD + (1.0 - DEFAULT_THRESHOLD) * (model - model_threshold) / (1.0 - model_threshold)
    # Four decimals like the rules' score, rounded down: a model score under its threshold never rounds up to it.
    return max(rules, math.floor(mapped * 10_000) / 10_000)


class OfflineScanner:
    """The in-process scanner behind the same interface as the LockLLM client; thread-safe, one per process."""

    def __init__(self, settings: ScannerSettings, model: NanoGuard | None = None):
        self.settings = settings
        self.detector = OfflineDetector(
            extra_signals=[parse_signal(line) for line in settings.offline_signals],
            allow_phrases=settings.offline_allow,
        )
        if model is None and settings.offline_model == "nanoguard":
            model = load_nanoguard()
        self.model = model
        self._pool = (ThreadPoolExecutor(max_workers=DEFAULT_MODEL_WORKERS, thread_name_prefix="offline-model")
                      if model is not None else None)
        self._memo: OrderedDict[bytes, float] = OrderedDict()
        self._memo_lock = threading.Lock()
        self.retries_total = 0

    def scan(self, texts: Sequence[str], deadline: float, settings: ScannerSettings | None = None) -> list[Verdict]:
        """One verdict per text; ScannerUnavailable (never a fail-open: the load is the clients') when the model
        cannot score every fresh text before `deadline`."""
        model_scores = self._model_scores(texts, deadline) if self.model is not None else [None] * len(texts)
        return [self._verdict(self.detector.detect(text), score) for text, score in zip(texts, model_scores)]

    @staticmethod
    def _verdict(detection: Detection, model_score: float | None) -> Verdict:
        families = detection.families
        if model_score is not None and model_score >= DEFAULT_MODEL_THRESHOLD:
            families += (MODEL_FAMILY,)
        # No safe flag: the policy threshold alone judges the score, as it does for the API's.
        return Verdict(safe=None, score=combined_score(detection.score, model_score), label="offline",
                       families=families, model_score=model_score)

    def _model_scores(self, texts: Sequence[str], deadline: float) -> list[float | None]:
        keys = [hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest() for text in texts]
        futures: dict[bytes, Future] = {}
        for key, text in zip(keys, texts):
            if key in futures:
                continue  # a text repeated within the request is scored once
            known = self._recall(key)
            if known is None:
                futures[key] = self._pool.submit(self._score, key, text, deadline)
            else:
                futures[key] = done = Future()
                done.set_result(known)
        finished, pending = wait(list(futures.values()), timeout=max(0.0, deadline - time.monotonic()),
                                 return_when=FIRST_EXCEPTION)
        for future in pending:
            future.cancel()
        failure = next((future.exception() for future in finished if future.exception() is not None), None)
        if pending or isinstance(failure, ModelTimeout):
            raise ScannerUnavailable(
                f"the offline model could not score the request's {len(futures)} distinct texts within the scan "
                f"deadline of {self.settings.timeout:g}s (about 0.1 s of CPU per 512 tokens); raise [scanner] timeout "
                "for long prompts", caused_by_request=True)
        if failure is not None:
            raise ScannerUnavailable(f"the offline model failed: {type(failure).__name__}") from failure
        return [futures[key].result() for key in keys]

    def _score(self, key: bytes, text: str, deadline: float) -> float:
        score = self.model.score(text, deadline)
        with self._memo_lock:
            self._memo[key] = score
            while len(self._memo) > DEFAULT_MEMO_ENTRIES:
                self._memo.popitem(last=False)
        return score

    def _recall(self, key: bytes) -> float | None:
        with self._memo_lock:
            score = self._memo.get(key)
            if score is not None:
                self._memo.move_to_end(key)
            return score

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
