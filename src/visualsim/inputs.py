"""What ``fit``-style calls accept, normalised to ``(id, image, metadata)`` entries.

One place decides how ids default, how dataset items and tuples unpack, and
how misaligned ``ids``/``metadata`` or repeated ids are refused, so the
recommender and the distributed extractor treat their inputs alike.
"""

from __future__ import annotations

import os
from collections.abc import Container, Iterable, Iterator, Mapping
from typing import Any, NamedTuple

from .errors import ConfigError, DuplicateIdError
from .ids import Id, check_ids


class Entry(NamedTuple):
    """One input: its id, its image-like, and its metadata (a fresh dict)."""

    id: Id
    image: Any
    metadata: dict[str, Any]


_END = object()


def iter_entries(
    images: Iterable[Any],
    ids: Iterable[Any] | None = None,
    metadata: Iterable[Mapping[str, Any] | None] | None = None,
    *,
    start: int = 0,
    taken: Container[Id] = frozenset(),
    add_path: bool = True,
) -> Iterator[Entry]:
    """Yield an :class:`Entry` per input, lazily.

    Parameters
    ----------
    images
        Image-likes, dataset items (with ``id``, ``image``, ``metadata``
        attributes) or ``(id, image[, metadata])`` tuples.
    ids, metadata
        Iterables aligned with ``images``; they override the items' own.
    start
        Default ids of non-path inputs are ``start + position``.
    taken
        Ids already in use (e.g. in the catalogue being added to).
    add_path
        Add a path input's absolute path to its metadata as ``"path"`` (the
        catalogue keeps paths apart from metadata and passes ``False``).

    Notes
    -----
    A path input's id defaults to the path, and its absolute path is added to
    the metadata as ``"path"`` unless present (plots and the CLI use it).

    Raises
    ------
    ConfigError
        When ``ids`` or ``metadata`` do not align with ``images``.
    DuplicateIdError
        When an id repeats or is in ``taken``.
    """
    id_iter = iter(ids) if ids is not None else None
    meta_iter = iter(metadata) if metadata is not None else None
    seen: set[Id] = set()
    position = -1
    for position, item in enumerate(images):
        item_id, image, meta = _unpack(item)
        if id_iter is not None:
            item_id = _next_or_fail(id_iter, "ids", position)
        if meta_iter is not None:
            meta = _next_or_fail(meta_iter, "metadata", position)
        if item_id is None:
            item_id = (
                os.fspath(image) if isinstance(image, (str, os.PathLike)) else start + position
            )
        (item_id,) = check_ids([item_id], unique=False)
        if item_id in seen or item_id in taken:
            where = "in this batch" if item_id in seen else "in the catalogue"
            raise DuplicateIdError(
                f"id {item_id!r} (input {position}) is already {where}; ids must be unique"
            )
        seen.add(item_id)
        if meta is not None and not isinstance(meta, Mapping):
            raise ConfigError(
                f"metadata of input {position} must be a dict, got {type(meta).__name__}"
            )
        meta = dict(meta or {})
        if add_path and isinstance(image, (str, os.PathLike)) and "path" not in meta:
            meta["path"] = os.path.abspath(os.fspath(image))
        yield Entry(item_id, image, meta)
    for name, rest in (("ids", id_iter), ("metadata", meta_iter)):
        if rest is not None and next(rest, _END) is not _END:
            raise ConfigError(f"{name} has more entries than images ({position + 1})")


def _unpack(item: Any) -> tuple[Any, Any, Mapping[str, Any] | None]:
    if hasattr(item, "image") and hasattr(item, "id"):
        return item.id, item.image, getattr(item, "metadata", None)
    if isinstance(item, tuple) and len(item) in (2, 3):
        return item[0], item[1], item[2] if len(item) == 3 else None
    return None, item, None


def _next_or_fail(it: Iterator[Any], name: str, position: int) -> Any:
    value = next(it, _END)
    if value is _END:
        raise ConfigError(f"{name} ran out at input {position}: it must align with the images")
    return value


__all__ = ["Entry", "iter_entries"]
