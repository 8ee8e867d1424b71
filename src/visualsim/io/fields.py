"""Checks of a manifest's fields: type and range, each refusal naming the file and the field.

Part of :mod:`visualsim.io`; :mod:`visualsim.persistence` re-exports every public name.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import CatalogError
from .paths import MAX_COUNT, PathLike, _err_path

# --------------------------------------------------------------------------- manifest fields


def _shown(value: Any) -> str:
    text = repr(value) if not isinstance(value, int) or abs(value) < 10**30 else "a huge integer"
    return text if len(text) <= 80 else text[:77] + "..."


def field_int(
    source: PathLike | str,
    field: str,
    value: Any,
    *,
    minimum: int = 0,
    maximum: int = MAX_COUNT,
    allow_none: bool = False,
) -> int | None:
    """Return ``value`` if it is an ``int`` (not a ``bool``) in ``[minimum, maximum]``.

    Raises
    ------
    CatalogError
        ``"<source>: field '<field>' must be an integer from <min> to <max>, got ..."``.
    """
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        none = " or null" if allow_none else ""
        raise CatalogError(
            f"{_src(source)}: field {field!r} must be an integer from {minimum:,} to "
            f"{maximum:,}{none}, got {_shown(value)}; the file is damaged"
        )
    return int(value)


def field_float(
    source: PathLike | str,
    field: str,
    value: Any,
    *,
    minimum: float = -math.inf,
    maximum: float = math.inf,
) -> float:
    """Return ``value`` as a finite ``float`` in ``[minimum, maximum]`` (ints accepted)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(float(value))
        or not minimum <= value <= maximum
    ):
        raise CatalogError(
            f"{_src(source)}: field {field!r} must be a number from {minimum} to {maximum}, "
            f"got {_shown(value)}; the file is damaged"
        )
    return float(value)


def field_bool(source: PathLike | str, field: str, value: Any) -> bool:
    """Return ``value`` if it is ``true`` or ``false``."""
    if not isinstance(value, bool):
        raise CatalogError(
            f"{_src(source)}: field {field!r} must be true or false, got {_shown(value)}"
        )
    return value


def field_str(
    source: PathLike | str,
    field: str,
    value: Any,
    *,
    choices: Sequence[str] | None = None,
    max_len: int = 4096,
) -> str:
    """Return ``value`` if it is a string of at most ``max_len`` characters (one of ``choices``)."""
    if not isinstance(value, str) or len(value) > max_len:
        raise CatalogError(f"{_src(source)}: field {field!r} must be a string, got {_shown(value)}")
    if choices is not None and value not in choices:
        raise CatalogError(
            f"{_src(source)}: field {field!r} must be one of {', '.join(map(repr, choices))}, "
            f"got {_shown(value)}"
        )
    return value


def field_dict(source: PathLike | str, field: str, value: Any) -> dict[str, Any]:
    """Return ``value`` if it is a JSON object."""
    if not isinstance(value, dict):
        raise CatalogError(
            f"{_src(source)}: field {field!r} must be a JSON object, got "
            f"{type(value).__name__} {_shown(value)}"
        )
    return value


def field_list(
    source: PathLike | str, field: str, value: Any, *, max_len: int = MAX_COUNT
) -> list[Any]:
    """Return ``value`` if it is a JSON array of at most ``max_len`` items."""
    if not isinstance(value, list) or len(value) > max_len:
        raise CatalogError(
            f"{_src(source)}: field {field!r} must be a list of at most {max_len:,} items, "
            f"got {type(value).__name__} {_shown(value)}"
        )
    return value


def require(source: PathLike | str, manifest: Mapping[str, Any], field: str) -> Any:
    """Return ``manifest[field]``, or a :class:`CatalogError` naming the file and the field."""
    if field not in manifest:
        raise CatalogError(f"{_src(source)} lacks the field {field!r}; the file is damaged")
    return manifest[field]


def _src(source: PathLike | str) -> str:
    return source if isinstance(source, str) else _err_path(source)
