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

from .classifier import DEFAULT_MODEL_THRESHOLD, NanoGuard, load_nanoguard
from .config import ScannerSettings
from .offline import DEFAULT_THRESHOLD, Detection, OfflineDetector, parse_signal
from .verdict import ScannerUnavailable, Verdict

# The family a verdict names when the model's own score reached its threshold (beside the rule families).
MODEL_FAMILY = "nanoguard"
# Windows scored at once per process, each on one core (classifier.DEFAULT_BLAS_THREADS): the cores of this
# project's 2-core machines. Several daemons share the cores the same way.
DEFAULT_MODEL_WORKERS = 2
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

    def __init__(self, settings: ScannerSettings):
        self.settings = settings
        self.detector = OfflineDetector(
            extra_signals=[parse_signal(line) for line in settings.offline_signals],
            allow_phrases=settings.offline_allow,
        )
        self.model: NanoGuard | None = load_nanoguard() if settings.offline_model == "nanoguard" else None
        self._pool = (ThreadPoolExecutor(max_workers=DEFAULT_MODEL_WORKERS, thread_name_prefix="offline-model")
                      if self.model is not None else None)
        self._memo: OrderedDict[bytes, float] = OrderedDict()
        self._memo_lock = threading.Lock()
        self.retries_total = 0

    def scan(self, texts: Sequence[str], deadline: float, settings: ScannerSettings | None = None,
             after_answer: list | None = None) -> list[Verdict]:
        """One verdict per text; ScannerUnavailable (never a fail-open: the load is the clients') when the model
        cannot score every fresh text before `deadline`. Nothing is written per verdict, so nothing is added to
        `after_answer` (LockLLMScanner.scan)."""
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
        """The model's score of each text: remembered, or the highest of its windows, which the pool's workers
        score side by side (one core each), so a long text takes both cores."""
        keys = [hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest() for text in texts]
        known: dict[bytes, float] = {}
        running: dict[bytes, list[Future]] = {}
        try:
            for key, text in zip(keys, texts):
                if key in known or key in running:
                    continue  # a text repeated within the request is scored once
                remembered = self._recall(key)
                if remembered is not None:
                    known[key] = remembered
                    continue
                running[key] = [self._pool.submit(self.model.score_window, window, deadline)
                                for window in self.model.windows(text, deadline)]
        except TimeoutError:
            self._cancel(running)
            raise self._late(len(running) + 1) from None
        futures = [future for text_futures in running.values() for future in text_futures]
        finished, pending = wait(futures, timeout=max(0.0, deadline - time.monotonic()), return_when=FIRST_EXCEPTION)
        failure = next((future.exception() for future in finished if future.exception() is not None), None)
        if pending or failure is not None:
            self._cancel(running)
            if pending or isinstance(failure, TimeoutError):
                raise self._late(len(running))
            raise ScannerUnavailable(f"the offline model failed: {type(failure).__name__}") from failure
        for key, text_futures in running.items():
            known[key] = max(future.result() for future in text_futures)
            self._remember(key, known[key])
        return [known[key] for key in keys]

    def _late(self, fresh: int) -> ScannerUnavailable:
        # Never a fail-open: what the model could not finish is the clients' load.
        return ScannerUnavailable(
            f"the offline model could not score {fresh} fresh texts within the scan deadline of "
            f"{self.settings.timeout:g}s (about 0.2 s of one core per 512 tokens); raise [scanner] timeout for long "
            "prompts", caused_by_request=True)

    @staticmethod
    def _cancel(running: dict[bytes, list[Future]]) -> None:
        for text_futures in running.values():
            for future in text_futures:
                future.cancel()

    def _remember(self, key: bytes, score: float) -> None:
        with self._memo_lock:
            self._memo[key] = score
            self._memo.move_to_end(key)
            while len(self._memo) > DEFAULT_MEMO_ENTRIES:
                self._memo.popitem(last=False)

    def _recall(self, key: bytes) -> float | None:
        with self._memo_lock:
            score = self._memo.get(key)
            if score is not None:
                self._memo.move_to_end(key)
            return score

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
