"""Label columns as integer codes: one column per label field, ``-1`` for a missing label."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import ConfigError

_DEFAULT_FIELD = "label"


def _label_columns(
    labels: Sequence[Any] | np.ndarray | Mapping[str, Sequence[Any] | np.ndarray], n: int
) -> tuple[tuple[str, ...], list[list[Any]]]:
    """``(field names, one list of labels per field)`` from one labelling or a field mapping."""
    if isinstance(labels, Mapping):
        if not labels:
            raise ConfigError("labels is an empty mapping; give at least one label field")
        names: list[str] = []
        columns: list[list[Any]] = []
        for name, column in labels.items():
            if not isinstance(name, str) or not name:
                raise ConfigError(f"label field names must be non-empty strings, got {name!r}")
            if isinstance(column, (str, bytes)):
                raise ConfigError(f"labels[{name!r}] must hold one label per row, not a string")
            values = list(column)
            if len(values) != n:
                raise ConfigError(f"labels[{name!r}] has {len(values)} entries for {n} vectors")
            names.append(name)
            columns.append(values)
        return tuple(names), columns
    if isinstance(labels, (str, bytes)):
        raise ConfigError("labels must hold one label per row (or map field names to those)")
    values = list(labels)
    if len(values) != n:
        raise ConfigError(f"labels has {len(values)} entries for {n} vectors")
    return (_DEFAULT_FIELD,), [values]


def _compact(codes: np.ndarray) -> np.ndarray:
    """Renumber the codes present to ``0 .. m-1`` (``-1`` stays: unlabelled)."""
    out = np.full(codes.shape, -1, dtype=np.int64)
    known = codes >= 0
    if known.any():
        _, out[known] = np.unique(codes[known], return_inverse=True)
    return out


def _compact_columns(codes: np.ndarray) -> np.ndarray:
    """:func:`_compact` every column of a ``(n, fields)`` code matrix."""
    return np.stack([_compact(codes[:, j]) for j in range(codes.shape[1])], axis=1)


def _joint(codes: np.ndarray) -> np.ndarray:
    """One code per combination of the columns' codes (``-1`` where any is missing)."""
    out = np.full(len(codes), -1, dtype=np.int64)
    known = (codes >= 0).all(axis=1)
    if known.any():
        _, inverse = np.unique(codes[known], axis=0, return_inverse=True)
        out[known] = inverse.reshape(-1)
    return out
