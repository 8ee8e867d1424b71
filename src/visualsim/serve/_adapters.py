"""The few places where the HTTP layer touches the :class:`~visualsim.Recommender`.

Ids from URLs, the public (JSON-safe, no server paths) view of metadata, the
fields a page can filter on, the image file an item may serve, the one parse of
a request's ``where`` and the one-item writes.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import UnknownIdError, WhereError
from ..filters import Expr, parse_filter
from ..ids import Id
from ..persistence import json_safe

if TYPE_CHECKING:
    from ..recommender import Recommender

MAX_CHOICES = 60
"""A text field with at most this many distinct values gets a drop-down on the page."""


# -- ids --------------------------------------------------------------------------------
def resolve_id(rec: Recommender, raw: str) -> Id:
    """Map an id from a URL (always text) to the stored id, or raise UnknownIdError."""
    if raw in rec:
        return raw
    if re.fullmatch(r"-?\d{1,18}", raw) and int(raw) in rec:
        return int(raw)
    raise UnknownIdError(f"no item with id {raw!r} in the catalogue")


def new_id(rec: Recommender, raw: str) -> Id:
    """The id a new item posted as text gets: an int when the catalogue's ids are ints."""
    if re.fullmatch(r"-?\d{1,18}", raw):
        ids = rec.ids_[:1] if len(rec) else []
        if ids and isinstance(ids[0], int):
            return int(raw)
    return raw


def json_id(item_id: Any) -> Id:
    """An id as JSON: numpy integers become ints."""
    if isinstance(item_id, (int, np.integer)) and not isinstance(item_id, bool):
        return int(item_id)
    return str(item_id)


# -- metadata and fields ----------------------------------------------------------------
def public_metadata(meta: Mapping[str, Any]) -> dict[str, Any]:
    """A plain, JSON-safe copy of an item's metadata without the server's file paths.

    An absolute path under ``"path"`` never leaves the server (the image itself
    is served by ``GET /items/{id}/image``).
    """
    return {
        str(key): json_safe(value, where=f"metadata field {key!r}")
        for key, value in meta.items()
        if not (key == "path" and isinstance(value, str) and os.path.isabs(value))
    }


def metadata_of(rec: Recommender, item_id: Id) -> dict[str, Any]:
    """The item's public metadata (raises UnknownIdError)."""
    return public_metadata(rec.metadata_of(item_id))


def field_types(rec: Recommender) -> dict[str, str]:
    """Metadata field -> ``"str" | "int" | "float" | "bool" | "json"``, without ``"path"``."""
    return {k: v for k, v in rec.fields_.items() if k != "path"}


def describe_fields(rec: Recommender) -> dict[str, dict[str, Any]]:
    """For each field: its type and what the page needs to build a filter control.

    Text and bool fields list their distinct values when there are at most
    :data:`MAX_CHOICES`; numeric fields give their ``min`` and ``max``.
    """
    types = field_types(rec)
    values: dict[str, set[Any]] = {k: set() for k in types}
    lows: dict[str, float] = {}
    highs: dict[str, float] = {}
    for meta in rec.metadata_:
        for key, kind in types.items():
            value = meta.get(key)
            if value is None or isinstance(value, (list, dict)):
                continue
            if kind in ("int", "float") and isinstance(value, (int, float)):
                v = float(value)
                if math.isfinite(v):
                    lows[key] = min(lows.get(key, v), v)
                    highs[key] = max(highs.get(key, v), v)
            elif kind in ("str", "bool") and len(values[key]) <= MAX_CHOICES:
                values[key].add(value)
    out: dict[str, dict[str, Any]] = {}
    for key, kind in sorted(types.items()):
        info: dict[str, Any] = {"type": kind}
        if kind in ("int", "float"):
            if key in lows:
                info["min"], info["max"] = lows[key], highs[key]
        elif kind in ("str", "bool") and len(values[key]) <= MAX_CHOICES:
            info["values"] = sorted(values[key], key=lambda v: (str(type(v)), v))
        out[key] = info
    return out


# -- images -----------------------------------------------------------------------------
def image_root_of(rec: Recommender, configured: str | os.PathLike[str] | None) -> Path | None:
    """The folder images are served from: the one configured, else the catalogue's own."""
    if configured is not None:
        return Path(configured)
    return rec.image_root_


def images_outside(rec: Recommender, root: str | os.PathLike[str] | None) -> tuple[list[Any], int]:
    """Return ``(ids, n)``: the items whose recorded image lies outside ``root``, of ``n``
    items that record an image at all.

    ``GET /items/{id}/image`` answers 404 for those ids, so ``visualsim index``/``add``/
    ``sync`` and ``visualsim serve`` warn about them. Decided from the paths' text
    (an absolute path not under ``root``, a relative one climbing out with ``..``;
    every path when ``root`` is ``None``): nothing is opened, so it is quick on a big
    catalogue. A missing file is not counted (that is another problem).
    """
    base = None if root is None else os.path.normpath(os.path.abspath(os.fspath(root)))
    outside: list[Any] = []
    n = 0
    for item_id in rec.ids_:
        src = source_of(rec, item_id)
        if src is None:
            continue
        n += 1
        if base is None:
            outside.append(item_id)
            continue
        path = os.path.normpath(os.path.join(base, src))  # an absolute src replaces base
        if path != base and not path.startswith(base.rstrip(os.sep) + os.sep):
            outside.append(item_id)
    return outside, n


def outside_warning(rec: Recommender, root: str | os.PathLike[str] | None, fix: str) -> str | None:
    """One line saying how many items' images cannot be served from ``root``, or ``None``.

    ``fix`` ends the line with what to do about it.
    """
    ids, n = images_outside(rec, root)
    if not ids:
        return None
    example = source_of(rec, ids[0])
    where = (
        "no image root is recorded"
        if root is None
        else f"the image root is {str(root)!r} and their paths lie outside it"
    )
    return (
        f"{len(ids)} of {n} items' images cannot be served: {where} (e.g. {example!r}), "
        f"so GET /items/{{id}}/image answers 404 for them; {fix}"
    )


def source_of(rec: Recommender, item_id: Id) -> str | None:
    """The item's image path as stored (relative to the image root, or absolute), or None."""
    src = rec.source_of(item_id)
    return None if src is None else str(src)


def image_file(rec: Recommender, item_id: Id, root: Path | None) -> Path | None:
    """The item's image file, only if it lies inside ``root``; else None.

    Both paths are resolved (symlinks followed) before the containment check,
    so neither ``..`` nor a symlink pointing out of the root can reach a file
    outside it. Only regular files qualify.
    """
    if root is None:
        return None
    src = source_of(rec, item_id)
    if src is None or "\x00" in src:
        return None
    try:
        base = root.resolve(strict=True)
        path = (base / src).resolve(strict=True)  # an absolute src replaces base
    except (OSError, RuntimeError):
        return None
    if path != base and base not in path.parents:
        return None
    if not path.is_file():
        return None
    return path


# -- filters ----------------------------------------------------------------------------
def parse_where(text: str, fields: Mapping[str, str]) -> Expr:
    """Parse a request's ``where`` once and return the tree the recommender searches with.

    The tree is passed down as it is (``rec.query(where=tree)`` does not parse
    again), so an HTTP query parses its filter text exactly once.

    Raises
    ------
    WhereError
        Naming the problem: empty text, a syntax error, or a field the catalogue
        does not have (``fields``: :func:`field_types`, which leaves out ``"path"``).
    """
    if not text.strip():
        raise WhereError("where is empty; leave it out to search the whole catalogue")
    try:
        expr = parse_filter(text)
    except WhereError as exc:
        raise WhereError(f"bad where {text!r}: {exc}") from None
    unknown = sorted(expr.fields() - set(fields))
    if unknown:
        known = ", ".join(sorted(fields)) or "none"
        raise WhereError(
            f"where names unknown field(s) {', '.join(map(repr, unknown))}; "
            f"the catalogue's fields are: {known}"
        )
    return expr


# -- writes -----------------------------------------------------------------------------
def add_vector(rec: Recommender, vector: np.ndarray, item_id: Id, metadata: dict[str, Any]) -> None:
    """Add one extracted vector (DuplicateIdError when the id exists)."""
    rec.add_vectors(vector.reshape(1, -1), [item_id], [metadata])


def upsert_vector(
    rec: Recommender, vector: np.ndarray, item_id: Id, metadata: dict[str, Any]
) -> bool:
    """Insert or replace one item; return True when it replaced one."""
    existed = item_id in rec
    rec.upsert_vectors(vector.reshape(1, -1), [item_id], [metadata])
    return existed


def update_metadata(rec: Recommender, item_id: Id, metadata: dict[str, Any]) -> None:
    """Replace one item's metadata, keeping its vector."""
    rec.update_metadata(item_id, metadata, replace=True)


def remove(rec: Recommender, item_id: Id) -> None:
    """Remove one item (UnknownIdError when absent)."""
    rec.remove([item_id])
