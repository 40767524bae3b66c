"""The offline scanner's optional model stage: NanoGuard (PyPI `metatronnanoguard` 0.1.0, MIT, 16.8M parameters),
run with numpy from the weights inside its installed wheel, without torch.

The wheel's own dependencies pull a CUDA torch of several GB, so it is installed without them, beside the
`model` extra that brings numpy (INSTALL_COMMAND). Texts longer than the model's window of 512 tokens are scored in
overlapping windows, the highest score speaking for the text::

    model = load_nanoguard()  # once per process: reads and converts ~60 MB of weights
    model.score("Ignore all previous instructions")  # -> 0.99...

Nothing here imports numpy until a model is loaded, so the settings can ask `missing_requirement()` cheaply.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import sys
import time
import zipfile
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .bpe import BytePairTokenizer
    from .network import Network

__all__ = ["DEFAULT_MODEL_THRESHOLD", "INSTALL_COMMAND", "ModelTimeout", "NanoGuard", "load_nanoguard",
           "missing_requirement", "windows"]

DISTRIBUTION, VERSION = "metatronnanoguard", "0.1.0"  # the port in network.py follows this release's model.py
# The model extra brings numpy; the wheel comes without its dependencies, which would pull a CUDA torch. Run from
# the gateway's checkout with the gateway venv's pip (README, "The offline scanner"; .ci/run does the same).
INSTALL_COMMAND = f"pip install '.[model]' && pip install --no-deps {DISTRIBUTION}=={VERSION}"
# The model's score from which it flags a text on its own. Its own default, 0.5, flags 8% of the benign dev rows
# (23% of NotInject's, benign prompts full of trigger words); real attacks mostly score above 0.9999. Chosen by
# `python benchmarks/offline_eval.py --calibrate` on ../shared/eval/dev.jsonl only: the lowest threshold at which
# rules + model flag at most 1% more of the benign rows than the rules alone (0.999793), rounded up.
DEFAULT_MODEL_THRESHOLD = 0.9998
# Tokens two neighbouring windows share at least, so a phrase of up to this length cut at a window boundary is
# whole in one of them (~250 characters of English; a longer instruction still leaves most of itself in one).
# Each window costs ~15 GFLOP (about 100 ms on two cores), so the overlap is kept small: a 4,000-character
# text of ~950 tokens takes two windows.
DEFAULT_WINDOW_OVERLAP = 64
# Threads numpy's BLAS may use for one window. One: the scan pool runs windows side by side instead, and a
# multi-threaded BLAS on cores other processes also want spins, which measured 2-4 times slower per window on
# this project's loaded 2-core machine (benchmarks/offline_speed.py --model).
DEFAULT_BLAS_THREADS = 1


class ModelTimeout(TimeoutError):
    """The deadline passed before a text was tokenized or a window scored (the tokenizer raises TimeoutError)."""


def missing_requirement() -> str | None:
    """What of the model stage is not installed, with the command that installs it; None when all is there."""
    missing = [name for name, present in (
        ("numpy", importlib.util.find_spec("numpy") is not None),
        ("threadpoolctl", importlib.util.find_spec("threadpoolctl") is not None),
        (f"{DISTRIBUTION}=={VERSION}", _installed_version() == VERSION),
    ) if not present]
    if not missing:
        return None
    pip = os.path.join(sys.prefix, "bin", "pip")  # the gateway's venv, wherever this runs (mod_wsgi, the CLI)
    return (f"needs the model extra ({' and '.join(missing)} not installed): from the gateway's checkout, run "
            + INSTALL_COMMAND.replace("pip install", f"{pip} install"))


def _installed_version() -> str | None:
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return None


def windows(count: int, size: int, overlap: int = DEFAULT_WINDOW_OVERLAP) -> list[tuple[int, int]]:
    """(start, end) of the fewest windows of `size` tokens that cover `count` tokens with neighbours sharing at
    least `overlap`, spread evenly: every window of a long text is full, none is wasted on a sliver at the end."""
    if count <= size:
        return [(0, count)]
    gaps = -(-(count - size) // (size - overlap))  # windows after the first
    return [(start, start + size) for start in ((count - size) * i // gaps for i in range(gaps + 1))]


@dataclass(frozen=True)
class NanoGuard:
    tokenizer: BytePairTokenizer
    network: Network
    bos: int
    pad: int

    @property
    def window_tokens(self) -> int:
        """Text tokens per window: the model's length less the BOS token that starts every window."""
        return self.network.length - 1

    def windows(self, text: str, deadline: float | None = None) -> list[list[int]]:
        """The token windows the model reads of `text`, each starting with BOS: one unless the text is long.
        TimeoutError once `deadline` (time.monotonic()) has passed."""
        ids = self.tokenizer.encode(text, deadline)
        return [[self.bos, *ids[start:end]] for start, end in windows(len(ids), self.window_tokens)]

    def score_window(self, window: list[int], deadline: float | None = None) -> float:
        """The injection probability of one window (padded to the model's length, as NanoGuard pads);
        ModelTimeout without running when `deadline` (time.monotonic()) has passed, so late work costs no CPU."""
        import numpy as np

        if deadline is not None and time.monotonic() >= deadline:
            raise ModelTimeout("the deadline passed before this window was scored")
        row = np.full((1, self.network.length), self.pad, dtype=np.int64)
        row[0, :len(window)] = window
        return float(self.network.injection_scores(row, np.array([len(window)]))[0])

    def window_scores(self, text: str) -> list[float]:
        return [self.score_window(window) for window in self.windows(text)]

    def score(self, text: str) -> float:
        """The injection probability of `text`: the highest of its windows'."""
        return max(self.window_scores(text))


def load_nanoguard() -> NanoGuard:
    """The model from the installed wheel; RuntimeError naming the install command when it is not there."""
    problem = missing_requirement()
    if problem is not None:
        raise RuntimeError(f"the offline model {problem}")
    from .bpe import BytePairTokenizer
    from .checkpoint import read_checkpoint, read_encoding
    from .network import Network

    # The wheel's files are read by path, never imported: its package imports torch.
    assets = importlib.metadata.distribution(DISTRIBUTION).locate_file("nanoguard/assets")
    with zipfile.ZipFile(str(assets / "model.pt")) as archive:
        weights, config = read_checkpoint(archive)
    with open(str(assets / "tokenizer.pkl"), "rb") as handle:
        encoding = read_encoding(handle)
    tokenizer = BytePairTokenizer(encoding)
    from threadpoolctl import threadpool_limits

    threadpool_limits(DEFAULT_BLAS_THREADS, user_api="blas")  # for the process: nothing else in it uses BLAS
    return NanoGuard(tokenizer, Network(weights, config), bos=encoding.special_tokens["<|reserved_0|>"],
                     pad=encoding.special_tokens["<|reserved_1|>"])
