"""Checks of arguments and configuration, with one wording for each.

Modules check constructor parameters and call arguments here instead of
writing their own ``isinstance`` tests, so "must be an integer from 1 to
65,536" reads the same everywhere and huge values (``2**31`` for a FAISS
parameter, ``10**8`` shards) are refused before anything is allocated.
Manifest fields read from disk are checked by the ``field_*`` helpers of
:mod:`visualsim.persistence`, which raise :class:`~visualsim.errors.CatalogError`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from .errors import ConfigError, DimensionMismatch, InvalidVectorsError, VisualsimError
from .ids import preview, short_repr

MAX_INT = 2**62
"""Default upper bound of :func:`check_int` (fits every C ``int64``)."""


def check_int(
    name: str,
    value: Any,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
    allow_none: bool = False,
    error: type[VisualsimError] = ConfigError,
) -> Any:
    """Return ``value`` as an ``int`` if it is a whole number in ``[minimum, maximum]``.

    ``bool`` is refused (``True`` is not a count); NumPy integers are accepted.

    Parameters
    ----------
    name
        What the value is called in the message (``"ef_search"``).
    value
        The value to check.
    minimum, maximum
        Inclusive bounds (``maximum`` defaults to ``2**62``).
    allow_none
        Accept ``None`` (returned as is).
    error
        The exception class raised (default :class:`ConfigError`).

    Raises
    ------
    ConfigError
        (or ``error``) ``"<name> must be an integer from <min> to <max>, got <value>"``.

    Examples
    --------
    >>> check_int("nprobe", 8, minimum=1, maximum=65_536)
    8
    """
    if value is None and allow_none:
        return None
    hi = MAX_INT if maximum is None else maximum
    ok = isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))
    if ok:
        as_int = int(value)
        ok = (minimum is None or as_int >= minimum) and as_int <= hi
    if not ok:
        if minimum is None:
            bounds = f"of at most {hi:,}"
        elif maximum is None and minimum == 1:
            bounds = "of at least 1 (a positive integer)"
        elif maximum is None:
            bounds = f"of at least {minimum:,}"
        else:
            bounds = f"from {minimum:,} to {hi:,}"
        none = " or None" if allow_none else ""
        raise error(f"{name} must be an integer {bounds}{none}, got {_shown(value)}")
    return int(value)


def check_positive_int(
    name: str,
    value: Any,
    *,
    maximum: int | None = None,
    allow_none: bool = False,
    error: type[VisualsimError] = ConfigError,
) -> Any:
    """Return ``value`` if it is an integer >= 1 (and <= ``maximum``); see :func:`check_int`."""
    return check_int(name, value, minimum=1, maximum=maximum, allow_none=allow_none, error=error)


def check_bool(name: str, value: Any, *, error: type[VisualsimError] = ConfigError) -> bool:
    """Return ``value`` if it is ``True`` or ``False`` (NumPy booleans accepted)."""
    if not isinstance(value, (bool, np.bool_)):
        raise error(f"{name} must be True or False, got {_shown(value)}")
    return bool(value)


def check_choice(
    name: str, value: Any, choices: Sequence[str], *, error: type[VisualsimError] = ConfigError
) -> str:
    """Return ``value`` if it is one of ``choices`` (case-sensitive), naming them otherwise."""
    if not isinstance(value, str) or value not in choices:
        raise error(f"{name} must be one of {', '.join(map(repr, choices))}, got {_shown(value)}")
    return value


def check_float(
    name: str,
    value: Any,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    open_minimum: bool = False,
    open_maximum: bool = False,
    allow_none: bool = False,
    error: type[VisualsimError] = ConfigError,
) -> Any:
    """Return ``value`` as a ``float`` if it is a finite real number within the bounds.

    ``bool`` and text (``"0.5"``) are refused; Python and NumPy integers and
    floats are accepted; NaN and infinities are always refused.

    Parameters
    ----------
    name
        What the value is called in the message (``"queue_timeout"``).
    value
        The value to check.
    minimum, maximum
        The bounds; ``None`` leaves that side open.
    open_minimum, open_maximum
        Refuse the bound itself (``minimum=0, open_minimum=True``: a positive number).
    allow_none
        Accept ``None`` (returned as is).
    error
        The exception class raised (default :class:`ConfigError`).

    Raises
    ------
    ConfigError
        (or ``error``) ``"<name> must be a number in [<min>, <max>], got <value>"``;
        with one bound ``"... a finite number >= <min>"``, and for
        ``minimum=0, open_minimum=True`` ``"... a positive, finite number"``.

    Examples
    --------
    >>> check_float("min_score", 0.5, minimum=-1.0, maximum=1.0)
    0.5
    >>> check_float("queue_timeout", 0, minimum=0, open_minimum=True)
    Traceback (most recent call last):
    ...
    visualsim.errors.ConfigError: queue_timeout must be a positive, finite number, got 0
    """
    if value is None and allow_none:
        return None
    ok = isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
    if ok:
        v = float(value)
        ok = math.isfinite(v)
        if ok and minimum is not None:
            ok = v > minimum if open_minimum else v >= minimum
        if ok and maximum is not None:
            ok = v < maximum if open_maximum else v <= maximum
    if not ok:
        raise error(
            f"{name} must be {_float_bounds(minimum, maximum, open_minimum, open_maximum)}"
            f"{' or None' if allow_none else ''}, got {_shown(value)}"
        )
    return float(value)


def _float_bounds(lo: float | None, hi: float | None, open_lo: bool, open_hi: bool) -> str:
    if lo is not None and hi is not None:
        return f"a number in {'(' if open_lo else '['}{lo:g}, {hi:g}{')' if open_hi else ']'}"
    if lo == 0 and open_lo:
        return "a positive, finite number"
    if lo is not None:
        return f"a finite number {'>' if open_lo else '>='} {lo:g}"
    if hi is not None:
        return f"a finite number {'<' if open_hi else '<='} {hi:g}"
    return "a finite number"


def check_k(k: Any, *, maximum: int | None = None) -> int:
    """Return ``k`` (how many results) as an ``int`` if it is a whole number >= 1.

    The one check of ``k`` and its one wording: the recommender, every index,
    the evaluation, the duplicate search, the HTTP app and the CLI call it.

    Parameters
    ----------
    k
        The value to check; ``bool`` is refused, NumPy integers are accepted.
    maximum
        The largest ``k`` allowed (the HTTP app's ``max_k``); ``None``: no limit
        but :data:`MAX_INT`.

    Raises
    ------
    ConfigError
        ``"k must be an integer >= 1, got <k>"`` (``... from 1 to <maximum>`` with a
        ``maximum``).

    Examples
    --------
    >>> check_k(5)
    5
    >>> check_k(0)
    Traceback (most recent call last):
    ...
    visualsim.errors.ConfigError: k must be an integer >= 1, got 0
    """
    ok = isinstance(k, numbers.Integral) and not isinstance(k, (bool, np.bool_))
    if ok:
        ok = 1 <= int(k) <= (MAX_INT if maximum is None else maximum)
    if not ok:
        bounds = ">= 1" if maximum is None else f"from 1 to {maximum:,}"
        raise ConfigError(f"k must be an integer {bounds}, got {_shown(k)}")
    return int(k)


def check_rows(x: ArrayLike, *, name: str = "vectors") -> np.ndarray:
    """Return ``x`` as a 2-d array of real numbers, without copying it.

    The shape and type half of :func:`check_vectors`, for code that streams a
    big array in chunks (the PCA reducer) and checks each chunk's values itself.

    Parameters
    ----------
    x
        Array-like of shape ``(n, d)``; a 1-d array is taken as one row.
    name
        What ``x`` is called in error messages.

    Raises
    ------
    InvalidVectorsError
        Not numeric, not 1-d or 2-d, or zero columns.

    Examples
    --------
    >>> check_rows([1, 2, 3]).shape
    (1, 3)
    """
    try:
        arr = np.asarray(x)
    except (TypeError, ValueError) as exc:
        raise InvalidVectorsError(f"{name} must be a numeric array, got {exc}") from exc
    if arr.dtype.kind not in "biuf":
        raise InvalidVectorsError(
            f"{name} must be real numbers, got dtype {arr.dtype}; "
            "pass a float array of shape (n, dim)"
        )
    if arr.ndim == 1:
        arr = arr.reshape(1, -1)
    if arr.ndim != 2:
        raise InvalidVectorsError(
            f"{name} must be 2-d (n, dim) or a single 1-d vector, got shape {arr.shape}"
        )
    if arr.shape[1] == 0:
        raise InvalidVectorsError(f"{name} have zero columns (shape {arr.shape})")
    return arr


def check_vectors(
    x: ArrayLike, *, dim: int | None = None, name: str = "vectors", normalize: bool = True
) -> np.ndarray:
    """Return ``x`` as a C-contiguous float32 ``(n, dim)`` array of unit rows.

    The one validation of vectors every index (and the store) uses, so every
    backend refuses the same inputs with the same messages; a zero row is
    always refused when normalising (it has no direction, so no cosine).

    Parameters
    ----------
    x
        Array-like of shape ``(n, d)``; a 1-d array is taken as one row.
    dim
        The dimension the caller expects; ``None`` accepts any.
    name
        What ``x`` is called in error messages (``"vectors"``, ``"queries"``).
    normalize
        Divide every row by its L2 norm (a zero row is then an error).

    Raises
    ------
    InvalidVectorsError
        Not numeric, not 1-d or 2-d, zero columns, NaN or infinite values, or
        a zero row when normalising.
    DimensionMismatch
        ``dim`` is given and the rows have another length.

    Examples
    --------
    >>> check_vectors([3.0, 4.0])
    array([[0.6, 0.8]], dtype=float32)
    """
    arr = check_rows(x, name=name)
    if dim is not None and arr.shape[1] != dim:
        raise DimensionMismatch(
            f"{name} have dimension {arr.shape[1]}, but the index holds {dim}-dimensional "
            "vectors; use the same extractor for queries and catalogue, or a new index"
        )
    out = np.ascontiguousarray(arr, dtype=np.float32)
    n = len(out)
    step = _block_rows(out.shape[1])
    # in blocks of rows: the float64 and boolean temporaries stay small for a big array
    finite = np.empty(n, dtype=bool)
    for lo in range(0, n, step):
        finite[lo : lo + step] = np.isfinite(out[lo : lo + step]).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise InvalidVectorsError(
            f"{name} contain NaN or infinite values (as float32) in row(s) "
            f"{preview(bad.tolist())}; drop or repair those rows"
        )
    if normalize and n:
        norms = np.empty(n, dtype=np.float64)
        for lo in range(0, n, step):
            norms[lo : lo + step] = np.linalg.norm(out[lo : lo + step].astype(np.float64), axis=1)
        zero = norms == 0
        if zero.any():
            raise InvalidVectorsError(
                f"{name} row(s) {preview(np.flatnonzero(zero).tolist())} are all zeros and "
                "have no direction, so no cosine similarity; drop those rows"
            )
        unit = np.empty_like(out)
        for lo in range(0, n, step):  # float64 division rounded once to float32, as before
            unit[lo : lo + step] = out[lo : lo + step] / norms[lo : lo + step, None]
        out = unit
    return out


def _block_rows(dim: int) -> int:
    """Rows per block so a float64 temporary of them is about 8 MiB."""
    return max(1, (1 << 20) // max(dim, 1))


def normalize_rows(x: np.ndarray) -> np.ndarray:
    """Return the rows of ``x`` divided by their L2 norm, as contiguous float32.

    A zero row stays zero, so it adds nothing to a cosine or to a blend of
    cosines (the policy of the evaluation and the adapter). Compare
    :func:`check_vectors`, which refuses a zero row, and
    :func:`visualsim.extractors.base.l2_normalize`, which makes it a constant
    unit row. No checks: see :func:`unit_rows`.

    Examples
    --------
    >>> normalize_rows(np.array([[3.0, 4.0], [0.0, 0.0]])).tolist()
    [[0.6000000238418579, 0.800000011920929], [0.0, 0.0]]
    """
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.where(norms > 0, norms, 1.0), dtype=np.float32)


def unit_rows(x: ArrayLike, *, name: str = "vectors", allow_empty: bool = False) -> np.ndarray:
    """Return ``x``, an ``(n, dim)`` array of finite numbers, as float32 unit rows.

    A zero row stays zero (:func:`normalize_rows`).

    Parameters
    ----------
    x
        The vectors, one per row (a 1-d array is refused).
    name
        What ``x`` is called in error messages.
    allow_empty
        Accept ``n == 0``.

    Raises
    ------
    InvalidVectorsError
        Not numeric, not 2-d, no columns, no rows (unless ``allow_empty``), or a
        NaN or infinite value (as float32; the first such row is named).

    Examples
    --------
    >>> unit_rows([[0.0, 2.0]], name="embeddings")
    array([[0., 1.]], dtype=float32)
    """
    try:
        arr = np.asarray(x, dtype=np.float32)
    except (TypeError, ValueError):
        raise InvalidVectorsError(f"{name} must be a numeric (n, dim) array") from None
    if arr.ndim != 2 or arr.shape[1] == 0 or (arr.shape[0] == 0 and not allow_empty):
        raise InvalidVectorsError(f"{name} must be a non-empty (n, dim) array, got {arr.shape}")
    finite = np.isfinite(arr).all(axis=1)
    if not finite.all():
        bad = int(np.flatnonzero(~finite)[0])
        raise InvalidVectorsError(f"{name} row {bad} holds NaN or infinite values")
    return normalize_rows(arr)


def _shown(value: Any) -> str:
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        v = int(value)
        if abs(v) >= 10**30:
            return f"an integer of about {int(abs(v).bit_length() * 0.30103) + 1} digits"
        return f"{v:,}" if abs(v) >= 10_000 else str(v)
    return short_repr(value)


__all__ = [
    "MAX_INT",
    "check_bool",
    "check_choice",
    "check_float",
    "check_int",
    "check_k",
    "check_positive_int",
    "check_rows",
    "check_vectors",
    "normalize_rows",
    "unit_rows",
]
