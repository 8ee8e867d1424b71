"""The item every dataset yields, and the small base class the adapters share.

A dataset is anything iterable over :class:`DatasetItem` — ``(id, image,
metadata)`` triples that :meth:`visualsim.Recommender.fit` consumes as a stream.
The adapters in :mod:`visualsim.datasets` also know their length, give random
access by position, and describe their metadata as a pandas DataFrame through
:meth:`BaseDataset.to_frame`, without decoding a single image.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias, runtime_checkable

from ..errors import describe_source

if TYPE_CHECKING:  # pragma: no cover - typing only; images.py is imported lazily
    import pandas as pd

    from ..images import ImageLike

logger = logging.getLogger(__name__)

ItemId: TypeAlias = str | int
"""An item's id: a string (paths, prefixed names) or an integer (catalogue ids)."""


@dataclass(frozen=True)
class DatasetItem:
    """One catalogue entry: an id, an image-like source and its metadata.

    Unpacks like a 3-tuple, so ``id, image, metadata = item`` works.

    Parameters
    ----------
    id
        The item's id, unique within its dataset (``str`` or ``int``).
    image
        Anything :func:`visualsim.load_image` accepts: a path, bytes, a binary
        file, a PIL image or an ``HxW`` / ``HxWx3`` uint8 array. Adapters give
        paths or arrays made on demand, so holding an item is cheap.
    metadata
        JSON-safe facts about the item (``label``, ``gender``, ``year`` ...);
        what ``Recommender.query(..., where=...)`` filters on.

    Examples
    --------
    >>> item = DatasetItem("shirt-1", "images/shirt-1.jpg", {"color": "red"})
    >>> item_id, image, meta = item
    >>> item_id, meta["color"]
    ('shirt-1', 'red')
    """

    id: ItemId
    image: ImageLike
    metadata: dict[str, Any] = field(default_factory=dict)

    def __iter__(self) -> Iterator[Any]:
        """Yield ``id``, ``image`` and ``metadata``, in that order."""
        yield self.id
        yield self.image
        yield self.metadata

    def __repr__(self) -> str:
        return (
            f"DatasetItem(id={self.id!r}, image={describe_source(self.image)}, "
            f"metadata={self.metadata!r})"
        )


@runtime_checkable
class Dataset(Protocol):
    """What :meth:`Recommender.fit` needs from a dataset: an iterable of items.

    Any object with ``__iter__`` yielding :class:`DatasetItem` qualifies — a
    list, a generator function's result, or a :class:`BaseDataset` subclass.
    """

    def __iter__(self) -> Iterator[DatasetItem]:
        """Yield the dataset's items."""
        ...


class BaseDataset:
    """A finite, indexable dataset whose items are made on demand.

    Subclasses implement :meth:`__len__` and the three per-position hooks
    ``_item_id``, ``_item_image`` and ``_item_metadata``; they get iteration,
    ``dataset[i]``, :meth:`ids`, :meth:`to_frame` and a ``repr`` for free.
    :meth:`to_frame` and :meth:`ids` never touch the images.
    """

    def __len__(self) -> int:
        raise NotImplementedError

    def _item_id(self, index: int) -> ItemId:
        raise NotImplementedError

    def _item_image(self, index: int) -> ImageLike:
        raise NotImplementedError

    def _item_metadata(self, index: int) -> dict[str, Any]:
        raise NotImplementedError

    def __getitem__(self, index: int) -> DatasetItem:
        """Return the item at position ``index`` (negative positions count from the end)."""
        if not isinstance(index, int) or isinstance(index, bool):
            raise TypeError(
                f"{type(self).__name__} indices must be integers, not {type(index).__name__}"
            )
        n = len(self)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"{type(self).__name__} index {index} out of range for {n} items")
        return DatasetItem(
            self._item_id(index), self._item_image(index), self._item_metadata(index)
        )

    def __iter__(self) -> Iterator[DatasetItem]:
        """Yield every item in order; images are produced one at a time."""
        for index in range(len(self)):
            yield DatasetItem(
                self._item_id(index), self._item_image(index), self._item_metadata(index)
            )

    def ids(self) -> list[ItemId]:
        """Return the ids of all items, in order, without loading any image."""
        return [self._item_id(index) for index in range(len(self))]

    def metadata(self) -> list[dict[str, Any]]:
        """Return the metadata of all items, in order, without loading any image."""
        return [self._item_metadata(index) for index in range(len(self))]

    def to_frame(self) -> pd.DataFrame:
        """Return a pandas DataFrame with an ``id`` column and one column per metadata key.

        Requires pandas (``pip install pandas``); images are not loaded.
        """
        return records_to_frame(self.ids(), self.metadata())

    def _describe(self) -> str:
        """Return the constructor-like part of the ``repr`` (overridden by subclasses)."""
        return ""

    def __repr__(self) -> str:
        described = self._describe()
        sep = ", " if described else ""
        return f"{type(self).__name__}({described}{sep}n={len(self)})"


@dataclass(frozen=True)
class RowIssue:
    """A problem found (and, where possible, repaired) in one row of a metadata file.

    Parameters
    ----------
    path
        The file the row came from.
    line
        The 1-based line number in that file (the header is line 1).
    id
        The row's id as written, or ``None`` when it had none.
    problem
        What was wrong and what was done about it.
    """

    path: str
    line: int
    id: str | None
    problem: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line} (id {self.id}): {self.problem}"


def records_to_frame(ids: Sequence[ItemId], metadata: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Return a DataFrame of ``id`` plus one column per metadata key (first-seen order).

    Parameters
    ----------
    ids
        One id per row.
    metadata
        One mapping per row; keys missing from a row become ``None``.
    """
    try:
        import pandas as pd
    except ImportError as exc:  # pragma: no cover - pandas ships with the dev/kaggle extras
        raise ImportError(
            "to_frame() needs pandas: pip install pandas (or 'visualsim[kaggle]')"
        ) from exc
    columns: dict[str, None] = {}
    for row in metadata:
        for key in row:
            if key != "id":
                columns.setdefault(key, None)
    data: dict[str, list[Any]] = {"id": list(ids)}
    for key in columns:
        data[key] = [row.get(key) for row in metadata]
    return pd.DataFrame(data, columns=["id", *columns])


def existing_dir(root: str | os.PathLike[str], what: str) -> Path:
    """Return ``root`` as an absolute :class:`Path`, or raise if it is not a directory.

    Parameters
    ----------
    root
        The directory to check.
    what
        What the directory should hold, for the error message.
    """
    from ..errors import DatasetError

    path = Path(root).expanduser()
    if not path.exists():
        raise DatasetError(f"{what} directory {os.fspath(path)!r} does not exist")
    if not path.is_dir():
        raise DatasetError(f"{what} path {os.fspath(path)!r} is not a directory")
    return path.resolve()


def report_missing(dataset: str, missing: Sequence[ItemId], total: int, where: str) -> None:
    """Warn (once, briefly) that some listed items have no image file.

    Parameters
    ----------
    dataset
        The dataset's name, for the message.
    missing
        Ids whose image file does not exist.
    total
        How many items were listed in all.
    where
        Where the images were expected (a directory), for the message.
    """
    if not missing:
        return
    shown = ", ".join(str(m) for m in list(missing)[:5])
    more = ", ..." if len(missing) > 5 else ""
    message = (
        f"{dataset}: {len(missing)} of {total} listed items have no image file under "
        f"{where} (ids {shown}{more}); they are skipped and listed in `.missing`"
    )
    logger.warning(message)
    warnings.warn(message, MissingImagesWarning, stacklevel=3)


class MissingImagesWarning(UserWarning):
    """Some items listed in a dataset's metadata have no image file; they are skipped."""


def iter_items(items: Iterable[DatasetItem]) -> Iterator[DatasetItem]:
    """Yield items from any iterable of :class:`DatasetItem` or ``(id, image, metadata)`` triples.

    Parameters
    ----------
    items
        Items, or plain 3-tuples, as a custom adapter may yield them.
    """
    for item in items:
        if isinstance(item, DatasetItem):
            yield item
        else:
            item_id, image, meta = item
            yield DatasetItem(item_id, image, dict(meta or {}))


__all__ = [
    "BaseDataset",
    "Dataset",
    "DatasetItem",
    "ItemId",
    "MissingImagesWarning",
    "RowIssue",
    "existing_dir",
    "iter_items",
    "records_to_frame",
    "report_missing",
]
