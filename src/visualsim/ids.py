"""Ids: the caller's own strings or integers, checked in one place."""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any, TypeAlias

import numpy as np

from .errors import DuplicateIdError, InvalidIdError

Id: TypeAlias = "str | int"
"""An item id: a string or an integer (NumPy integers become ``int``)."""


def check_ids(ids: Any, *, name: str = "ids", unique: bool = True) -> list[Id]:
    """Return ``ids`` as a list of ``str``/``int``, refusing repeats if ``unique``.

    NumPy integers and strings are converted to their Python types, so
    ``np.int64(3)`` and ``3`` are the same id; ``"3"`` and ``3`` are not.

    Raises
    ------
    InvalidIdError
        ``ids`` is a bare string or not a sequence, or an id is neither a
        string nor an integer (``bool`` and ``float`` are refused).
    DuplicateIdError
        ``unique`` and an id occurs twice.
    """
    if isinstance(ids, (str, bytes)) or not hasattr(ids, "__iter__"):
        raise InvalidIdError(
            f"{name} must be a sequence of ids (str or int), got {type(ids).__name__} "
            f"{short_repr(ids)}; wrap a single id in a list"
        )
    raw = ids.tolist() if isinstance(ids, np.ndarray) else list(ids)
    kinds = set(map(type, raw))
    if kinds <= {str} or kinds <= {int}:  # plain ids (not bool, not subclasses): as they are
        out: list[Id] = raw
    else:
        out = [_converted(item, name) for item in raw]
    if unique and len(set(out)) != len(out):
        counts: dict[Id, int] = {}
        for i in out:
            counts[i] = counts.get(i, 0) + 1
        repeated = [i for i, c in counts.items() if c > 1]
        raise DuplicateIdError(
            f"{name} contain duplicates: {preview(repeated)}; every stored vector needs its own id"
        )
    return out


def _converted(item: Any, name: str) -> Id:
    """One id as a plain ``str``/``int`` (NumPy and subclasses converted), or refused."""
    if isinstance(item, str):
        return str(item)
    if isinstance(item, numbers.Integral) and not isinstance(item, (bool, np.bool_)):
        return int(item)
    raise InvalidIdError(
        f"{name} must be strings or integers, got {short_repr(item)} ({type(item).__name__})"
    )


def short_repr(obj: Any, limit: int = 60) -> str:
    """Return ``repr(obj)`` cut to ``limit`` characters, for error messages."""
    text = repr(obj)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def preview(items: Sequence[Any], limit: int = 5) -> str:
    """Return the first ``limit`` items' reprs joined, with a count of the rest."""
    shown = ", ".join(repr(i) for i in items[:limit])
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return f"[{shown}]{more}"


__all__ = ["Id", "check_ids", "preview", "short_repr"]
