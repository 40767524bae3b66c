"""Reads NanoGuard's bundled files without torch or tiktoken: the checkpoint (a torch.save zip) as numpy arrays,
and the tokenizer (a pickled tiktoken Encoding) as its split pattern and merge ranks.

Both are pickles, and unpickling runs whatever callables a file names. The unpicklers here accept only the few
names these two files use, mapped to our own harmless functions, so a tampered file fails to load instead of
running code::

    weights, config = read_checkpoint(zipfile.ZipFile("model.pt"))
    weights["cls_head.bias"].shape  # -> (2,)
"""

from __future__ import annotations

import pickle
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np

# torch's storage classes -> how their bytes read; bfloat16 is the top half of a float32.
_STORAGE_DTYPES = {"FloatStorage": "float32", "BFloat16Storage": "bfloat16"}


def _rebuild_tensor(storage: np.ndarray, offset: int, size: tuple[int, ...], stride: tuple[int, ...],
                    *_ignored: Any) -> np.ndarray:
    """torch._utils._rebuild_tensor_v2: a view of `storage` (counted in elements), copied to a fresh array."""
    view = np.lib.stride_tricks.as_strided(storage[offset:], shape=size,
                                           strides=tuple(step * storage.itemsize for step in stride))
    return np.array(view, dtype=np.float32)


class _CheckpointUnpickler(pickle.Unpickler):
    def __init__(self, handle: BinaryIO, archive: zipfile.ZipFile, folder: str):
        super().__init__(handle)
        self.archive, self.folder = archive, folder

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if module == "torch" and name in _STORAGE_DTYPES:
            return _STORAGE_DTYPES[name]
        raise pickle.UnpicklingError(f"{module}.{name} has no place in a NanoGuard checkpoint")

    def persistent_load(self, pid: Any) -> np.ndarray:
        _kind, dtype, key, _device, count = pid
        raw = self.archive.read(f"{self.folder}/data/{key}")
        if dtype == "bfloat16":
            return (np.frombuffer(raw, dtype="<u2", count=count).astype(np.uint32) << 16).view(np.float32)
        return np.frombuffer(raw, dtype="<f4", count=count)


def read_checkpoint(archive: zipfile.ZipFile) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(weights by parameter name as float32 arrays, the model config) of a torch.save zip."""
    pickle_name = next(name for name in archive.namelist() if name.endswith("/data.pkl"))
    folder = pickle_name.rsplit("/", 1)[0]
    if archive.read(f"{folder}/byteorder").strip() != b"little":
        raise ValueError("the checkpoint was saved big-endian; NanoGuard 0.1.0 ships it little-endian")
    with archive.open(pickle_name) as handle:
        checkpoint = _CheckpointUnpickler(handle, archive, folder).load()
    return dict(checkpoint["model_state_dict"]), dict(checkpoint["config"])


@dataclass(frozen=True)
class EncodingFile:
    """What tiktoken pickles of an Encoding: the pre-split pattern, byte sequences -> token ids, special tokens."""

    pat_str: str
    mergeable_ranks: dict[bytes, int]
    special_tokens: dict[str, int]


class _EncodingState:
    """Stands in for tiktoken.core.Encoding while unpickling: the pickle's BUILD step fills its __dict__."""


class _TokenizerUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("tiktoken.core", "Encoding"):
            return _EncodingState
        raise pickle.UnpicklingError(f"{module}.{name} has no place in a NanoGuard tokenizer")


def read_encoding(handle: BinaryIO) -> EncodingFile:
    state = _TokenizerUnpickler(handle).load()
    if not isinstance(state, _EncodingState):
        raise pickle.UnpicklingError("the tokenizer file does not hold a tiktoken Encoding")
    fields = vars(state)
    return EncodingFile(str(fields["pat_str"]), dict(fields["mergeable_ranks"]), dict(fields["special_tokens"]))
