"""Caller values as JSON (the one encoding of metadata and specs) and stored image paths.

Part of :mod:`visualsim.io`; :mod:`visualsim.persistence` re-exports every public name.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CatalogError
from .paths import PathLike


def json_safe(value: Any, *, where: str = "value") -> Any:
    """Return ``value`` converted to plain JSON types (numpy scalars, paths, dates).

    The one encoding of caller values (metadata, extractor specs, failure
    records) that catalogues, shard folders and checkpoints write.

    Parameters
    ----------
    value
        A value to store: ``None``, a bool, number, string, path, date, numpy
        scalar or array, or a mapping or sequence of those.
    where
        What the value is, for the error message (``"metadata of id 'a'"``).

    Returns
    -------
    Any
        ``value`` as ``None``, ``bool``, ``int``, ``float``, ``str``, ``list``
        or ``dict`` (with string keys); a non-finite float becomes ``None``.

    Raises
    ------
    CatalogError
        For values that have no faithful JSON form (arbitrary objects).

    Examples
    --------
    >>> import numpy as np
    >>> json_safe({"price": np.float32(2.5), "sizes": np.array([1, 2]), "n": np.int64(3)})
    {'price': 2.5, 'sizes': [1, 2], 'n': 3}
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        f = float(value)
        return f if math.isfinite(f) else None
    if isinstance(value, (os.PathLike,)):
        return os.fspath(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, np.ndarray):
        return [json_safe(v, where=where) for v in value.tolist()]
    if isinstance(value, Mapping):
        return {str(k): json_safe(v, where=f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [json_safe(v, where=where) for v in value]
    if isinstance(value, np.bool_):
        return bool(value)
    raise CatalogError(
        f"{where} has type {type(value).__name__}, which cannot be stored as JSON; "
        "store strings, numbers, booleans, lists or dicts in metadata"
    )


def resolve_source(root: PathLike | None, source: str | None) -> str | None:
    """Return a stored image path as a path on this machine: joined to ``root`` if relative.

    Examples
    --------
    >>> resolve_source("/photos", "shoes/a.jpg")
    '/photos/shoes/a.jpg'
    >>> resolve_source(None, "shoes/a.jpg"), resolve_source("/photos", None)
    ('shoes/a.jpg', None)
    """
    if source is None:
        return None
    return source if root is None or os.path.isabs(source) else str(Path(root) / source)
