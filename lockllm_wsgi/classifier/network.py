"""NanoGuard's transformer in numpy: 4 bidirectional layers (rotary positions, RMS norms, ReLU² MLP), mean
pooling over the real tokens, a two-class head. A float32 port of nanoguard/model.py (0.1.0), batch-first::

    network = Network(weights, config)
    network.injection_scores(ids, lengths)  # ids (B, 512) padded, lengths (B,) real tokens -> (B,) in 0..1

Its quirks are kept, because they are what the weights were trained with: the padding takes part in attention
(only the pooling skips it), the rotary tables are rounded to bfloat16, and every RMS norm has no weight and
float32's machine epsilon. Weights are stored pre-transposed, q/k/v as one matrix, so each layer costs four
matrix products over the whole batch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

_EPS = np.finfo(np.float32).eps  # torch's rms_norm with eps=None
_LAYER_NORM_EPS = 1e-5  # torch.nn.LayerNorm's default
_ROTARY_BASE = 10_000


def _rms_norm(x: np.ndarray) -> np.ndarray:
    return x / np.sqrt(np.mean(np.square(x), axis=-1, keepdims=True) + _EPS)


def _to_bfloat16(x: np.ndarray) -> np.ndarray:
    """Round float32 to bfloat16 precision (nearest, ties to even), as torch's .bfloat16() does; kept as float32."""
    bits = x.astype(np.float32).view(np.uint32)
    rounded = (bits + np.uint32(0x7FFF) + ((bits >> 16) & np.uint32(1))) & np.uint32(0xFFFF0000)
    return rounded.view(np.float32)


def _rotary_tables(length: int, head_dim: int) -> tuple[np.ndarray, np.ndarray]:
    channels = np.arange(0, head_dim, 2, dtype=np.float32)
    inverse = (np.float32(1.0) / (np.float32(_ROTARY_BASE) ** (channels / np.float32(head_dim)))).astype(np.float32)
    angles = np.outer(np.arange(length, dtype=np.float32), inverse).astype(np.float32)
    # (T, 1, head_dim / 2): broadcast over the heads of (B, T, H, head_dim / 2)
    return _to_bfloat16(np.cos(angles))[:, None, :], _to_bfloat16(np.sin(angles))[:, None, :]


class Network:
    def __init__(self, weights: Mapping[str, np.ndarray], config: Mapping[str, Any]):
        self.length = int(config["sequence_len"])
        self.heads = int(config["n_head"])
        if int(config["n_kv_head"]) != self.heads:
            raise ValueError("grouped key/value heads are not supported (NanoGuard 0.1.0 has none)")
        width = int(config["n_embd"])
        self.head_dim = width // self.heads
        self.embedding = np.ascontiguousarray(weights["transformer.wte.weight"], dtype=np.float32)
        self.resid = [float(v) for v in weights["resid_lambdas"]]
        self.x0 = [float(v) for v in weights["x0_lambdas"]]

        def matrix(name: str) -> np.ndarray:
            return np.ascontiguousarray(weights[name].T, dtype=np.float32)  # x @ W.T becomes x @ matrix

        self.layers = []
        for i in range(int(config["n_layer"])):
            prefix = f"transformer.h.{i}."
            qkv = np.concatenate([matrix(prefix + f"attn.c_{part}.weight") for part in "qkv"], axis=1)
            self.layers.append((qkv, matrix(prefix + "attn.c_proj.weight"), matrix(prefix + "mlp.c_fc.weight"),
                                matrix(prefix + "mlp.c_proj.weight")))
        self.norm_weight = weights["cls_norm.weight"].astype(np.float32)
        self.norm_bias = weights["cls_norm.bias"].astype(np.float32)
        self.head = matrix("cls_head.weight")
        self.head_bias = weights["cls_head.bias"].astype(np.float32)
        self.cos, self.sin = _rotary_tables(self.length, self.head_dim)
        self.scale = np.float32(1.0 / np.sqrt(self.head_dim))

    def injection_scores(self, ids: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """Probability of the injection class for each row of `ids` (B, T), of which the first `lengths` are real."""
        batch, length = ids.shape
        # Only the real tokens' final states are pooled, and they are the first `kept` of each row: the last layer
        # computes queries, attention output and MLP for those alone (keys and values still for every position),
        # which saves ~20% of a short text's work and changes no result.
        kept = int(lengths.max())
        x = _rms_norm(self.embedding[ids].reshape(batch * length, -1))
        x0 = x
        for number, (resid, x0_weight, layer) in enumerate(zip(self.resid, self.x0, self.layers)):
            x = np.float32(resid) * x + np.float32(x0_weight) * x0
            queries = kept if number == len(self.layers) - 1 else length
            x = _first(x, batch, length, queries) + self._attention(_rms_norm(x), layer, batch, length, queries)
            hidden = np.maximum(_rms_norm(x) @ layer[2], 0)
            x = x + np.square(hidden, out=hidden) @ layer[3]
        x = _rms_norm(x).reshape(batch, kept, -1)
        mask = (np.arange(kept)[None, :] < lengths[:, None]).astype(np.float32)
        pooled = np.einsum("btc,bt->bc", x, mask) / np.maximum(mask.sum(axis=1), 1)[:, None]
        centred = pooled - pooled.mean(axis=-1, keepdims=True)
        pooled = centred / np.sqrt(np.mean(np.square(centred), axis=-1, keepdims=True) + _LAYER_NORM_EPS)
        logits = (pooled * self.norm_weight + self.norm_bias) @ self.head + self.head_bias
        logits = logits - logits.max(axis=-1, keepdims=True)
        probabilities = np.exp(logits)
        return probabilities[:, 1] / probabilities.sum(axis=-1)

    def _attention(self, x: np.ndarray, layer: tuple[np.ndarray, ...], batch: int, length: int,
                   queries: int) -> np.ndarray:
        """Attention output (B * queries, C) of the first `queries` positions of each row over all `length`."""
        heads, head_dim, half = self.heads, self.head_dim, self.head_dim // 2
        width = heads * head_dim
        if queries == length:
            q, k, v = np.split((x @ layer[0]).reshape(batch, length, 3, heads, head_dim), 3, axis=2)
            q, k, v = q[:, :, 0], k[:, :, 0], v[:, :, 0]
        else:
            k, v = np.split((x @ layer[0][:, width:]).reshape(batch, length, 2, heads, head_dim), 2, axis=2)
            k, v = k[:, :, 0], v[:, :, 0]
            q = (_first(x, batch, length, queries) @ layer[0][:, :width]).reshape(batch, queries, heads, head_dim)

        def rotate(t: np.ndarray) -> np.ndarray:
            cos, sin = self.cos[:t.shape[1]], self.sin[:t.shape[1]]
            t1, t2 = t[..., :half], t[..., half:]
            return _rms_norm(np.concatenate([t1 * cos + t2 * sin, t2 * cos - t1 * sin], axis=-1))

        q = np.ascontiguousarray(rotate(q).transpose(0, 2, 1, 3)) * self.scale  # (B, H, queries, D)
        k = np.ascontiguousarray(rotate(k).transpose(0, 2, 3, 1))  # (B, H, D, T)
        v = np.ascontiguousarray(v.transpose(0, 2, 1, 3))  # (B, H, T, D)
        scores = q @ k  # (B, H, queries, T)
        scores -= scores.max(axis=-1, keepdims=True)
        np.exp(scores, out=scores)
        scores /= scores.sum(axis=-1, keepdims=True)
        y = (scores @ v).transpose(0, 2, 1, 3).reshape(batch * queries, width)
        return y @ layer[1]


def _first(x: np.ndarray, batch: int, length: int, count: int) -> np.ndarray:
    """The rows of the first `count` positions of each of the `batch` sequences in `x` (B * length, C)."""
    if count == length:
        return x
    return x.reshape(batch, length, -1)[:, :count].reshape(batch * count, -1)
