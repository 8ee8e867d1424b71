"""The arithmetic of adapted vectors: segment weights, weighted segments and blends."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..validation import check_float


def _check_weights(weights: Any) -> tuple[float, ...]:
    """``weights`` as floats >= 0 summing to 1 (normalised), or a :class:`ConfigError`."""
    if isinstance(weights, (str, bytes, Mapping)) or not isinstance(weights, Sequence):
        raise ConfigError(f"weights must be a list of numbers >= 0, got {weights!r}")
    values = [check_float("weights", w, minimum=0.0, maximum=1e6) for w in weights]
    total = sum(values)
    if not values or total <= 0:
        raise ConfigError(f"weights needs a positive number among its entries, got {weights!r}")
    return tuple(v / total for v in values)


def _first_weighted(first: float, n: int) -> tuple[float, ...]:
    """Segment weights: ``first`` for the first, the rest shared equally (``n >= 2``)."""
    if n == 1:
        return (1.0,)
    return (first, *([(1.0 - first) / (n - 1)] * (n - 1)))


def _weigh(segments: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """Unit segments, each scaled by the root of its weight and concatenated (those of
    weight 0 left out): a unit vector whose cosine is the weighted sum of the segments'
    cosines."""
    used = [(seg, w) for seg, w in zip(segments, weights, strict=True) if w > 0]
    if len(used) == 1:
        return used[0][0]
    return np.ascontiguousarray(
        np.concatenate([seg * np.float32(math.sqrt(w)) for seg, w in used], axis=1),
        dtype=np.float32,
    )


def _blend(learned: np.ndarray, original: np.ndarray, mix: float) -> np.ndarray:
    """Unit rows whose cosine is ``mix * cos(learned) + (1 - mix) * cos(original)``."""
    if mix >= 1.0:
        return learned
    if mix <= 0.0:
        return original
    return np.ascontiguousarray(
        np.concatenate(
            [learned * np.float32(math.sqrt(mix)), original * np.float32(math.sqrt(1 - mix))],
            axis=1,
        ),
        dtype=np.float32,
    )
