"""Make a catalogue match a feed: add what is new, re-extract what changed, drop what left.

The daily update of a shop. A *feed* lists every product the catalogue should
hold (an id, an image, metadata). :func:`sync` compares it with the catalogue:

* an id the catalogue does not hold is **added** (its image extracted);
* an id whose image bytes changed (by SHA-256, as the catalogue recorded it
  when the item was added) gets its image **re-extracted** (``upsert``);
* an id whose image is the same but whose metadata changed gets its
  **metadata replaced**, the vector untouched;
* an id the feed no longer lists is **removed** (``remove_missing=True``);
* everything else is **unchanged** and costs one hash of its file.

An input that cannot be read (a listed image file that does not exist, a file
that is not an image) is reported in :attr:`SyncReport.failed` with the reason
and leaves its item as it was; it never stops the job, unless
``on_error="raise"``.

The module works on any catalogue with the :class:`SyncTarget` methods (the
:class:`~visualsim.Recommender`'s public ones); :meth:`Recommender.sync
<visualsim.Recommender.sync>`, ``visualsim sync`` and the HTTP ``POST /sync``
call it.

Examples
--------
>>> import io
>>> from PIL import Image
>>> from visualsim import ColorHistogramExtractor, Recommender
>>> def png(colour):
...     out = io.BytesIO()
...     Image.new("RGB", (8, 8), colour).save(out, "PNG")
...     return out.getvalue()
>>> rec = Recommender(ColorHistogramExtractor()).fit(
...     [("r", png("red"), {"price": 5}), ("b", png("blue"), {"price": 9})], progress=False)
>>> report = rec.sync([("r", png("red"), {"price": 4}), ("g", png("green"))], progress=False)
>>> report.added, report.updated_metadata, report.removed, report.unchanged
(['g'], ['r'], ['b'], 0)
>>> report.counts()
{'added': 1, 'updated': 1, 'removed': 1, 'unchanged': 0, 'failed': 0}
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, TypedDict

from .errors import ConfigError
from .ids import Id
from .ingest import FailedInput
from .inputs import Entry, iter_entries

MISSING_REASON = "the source lists it, but its image file does not exist; left as it was"
"""Why a listed item whose image file is missing was not synced."""

MISSING_SOURCE = "<missing file>"
"""The :attr:`~visualsim.FailedInput.source` of such an item."""


@dataclass(frozen=True)
class SyncReport:
    """What :func:`sync` did (or, with ``dry_run``, would do).

    Attributes
    ----------
    added
        Ids added (their images extracted).
    updated_images
        Ids whose image changed: re-extracted, with the feed's metadata.
    updated_metadata
        Ids whose metadata alone changed (the vector kept).
    removed
        Ids the feed no longer lists, removed (empty with ``remove_missing=False``).
    unchanged
        How many listed items were already as the feed describes them.
    failed
        Items that could not be synced, each a :class:`~visualsim.FailedInput`
        with its reason; left as they were.
    dry_run
        Whether nothing was changed (the lists say what would have been).
    """

    added: list[Id] = field(default_factory=list)
    updated_images: list[Id] = field(default_factory=list)
    updated_metadata: list[Id] = field(default_factory=list)
    removed: list[Id] = field(default_factory=list)
    unchanged: int = 0
    failed: list[FailedInput] = field(default_factory=list)
    dry_run: bool = False

    @property
    def changed(self) -> bool:
        """Whether the catalogue changed (something added, updated or removed)."""
        return not self.dry_run and bool(
            self.added or self.updated_images or self.updated_metadata or self.removed
        )

    def counts(self) -> dict[str, int]:
        """``{"added", "updated", "removed", "unchanged", "failed"}``: how many of each.

        ``updated`` counts image and metadata updates together (what
        ``visualsim sync`` prints).
        """
        return {
            "added": len(self.added),
            "updated": len(self.updated_images) + len(self.updated_metadata),
            "removed": len(self.removed),
            "unchanged": self.unchanged,
            "failed": len(self.failed),
        }

    def to_dict(self) -> dict[str, Any]:
        """The report as plain JSON: the id lists, the counts and the failures."""
        return {
            "added": list(self.added),
            "updated_images": list(self.updated_images),
            "updated_metadata": list(self.updated_metadata),
            "removed": list(self.removed),
            "unchanged": self.unchanged,
            "failed": [asdict(f) for f in self.failed],
            "dry_run": self.dry_run,
            "counts": self.counts(),
        }


class SyncTarget(Protocol):
    """What :func:`sync` needs of a catalogue (the :class:`~visualsim.Recommender` has it)."""

    @property
    def ids_(self) -> list[Id]: ...  # pragma: no cover - protocol

    @property
    def fields_(self) -> dict[str, str]: ...  # pragma: no cover - protocol

    @property
    def failed_(self) -> Sequence[FailedInput]: ...  # pragma: no cover - protocol

    def __contains__(self, item_id: object) -> bool: ...  # pragma: no cover - protocol

    def source_hash_of(self, item_id: Id) -> str | None: ...  # pragma: no cover - protocol

    def metadata_of(self, item_id: Id) -> dict[str, Any]: ...  # pragma: no cover - protocol

    def add(
        self,
        images: Iterable[Any],
        *,
        batch_size: int | None,
        on_error: Literal["skip", "raise"],
        progress: bool,
        checkpoint_dir: str | os.PathLike[str] | None,
    ) -> Any: ...  # pragma: no cover - protocol

    def upsert(
        self,
        images: Iterable[Any],
        *,
        batch_size: int | None,
        on_error: Literal["skip", "raise"],
        progress: bool,
    ) -> Any: ...  # pragma: no cover - protocol

    def update_metadata(
        self, item_id: Id, fields: Mapping[str, Any], *, replace: bool = False
    ) -> Any: ...  # pragma: no cover - protocol

    def remove(self, ids: Iterable[Id]) -> Any: ...  # pragma: no cover - protocol


def read_feed(
    feed: Any,
    known_fields: Mapping[str, str] | None = None,
    *,
    id_column: str = "id",
    image_column: str = "image",
    allow_outside: bool = False,
) -> tuple[list[Entry], list[Id]]:
    """Return a feed's entries and the ids it lists whose image file is missing.

    Parameters
    ----------
    feed
        A feed file (``.csv``, ``.tsv``, ``.jsonl``, ``.parquet``: a
        :class:`~visualsim.ProductFeed` with an ``id`` and an ``image``
        column), a folder of images (an :class:`~visualsim.ImageFolder`), a
        dataset (a ``ProductFeed`` built with other columns, ...), or an
        iterable of records: dataset items, ``(id, image[, metadata])`` tuples,
        or dicts with ``"id"`` and ``"image"`` keys (the other keys are the
        metadata).
    known_fields
        The catalogue's ``fields_``: a feed file's columns are read as the
        catalogue stores them (a price column stays a float).
    id_column, image_column
        The columns of a feed file holding the ids and the image paths.
    allow_outside
        Read a feed file's image paths that lie outside its folder (absolute,
        ``..``, a symlink out); refused by default (:class:`~visualsim.ProductFeed`).

    Returns
    -------
    (entries, missing)
        One :class:`~visualsim.inputs.Entry` per listed item that can be
        synced, and the ids whose image file does not exist (a feed file's
        ``missing``).

    Raises
    ------
    DatasetError
        For an unreadable feed file (see :class:`~visualsim.ProductFeed`).
    ConfigError
        For a feed that is none of the above, a record without an id, or
        ``id_column``/``image_column`` given with a feed that is not a file.
    DuplicateIdError
        When the feed lists an id twice.
    """
    if isinstance(feed, (bytes, bytearray)):
        raise ConfigError(f"feed must be a path or an iterable of records, got {feed!r:.60}")
    if isinstance(feed, (str, os.PathLike)):
        path = Path(os.fspath(feed))
        feed = _open(
            path,
            known_fields or {},
            id_column=id_column,
            image_column=image_column,
            allow_outside=allow_outside,
        )
    elif (id_column, image_column) != ("id", "image"):
        raise ConfigError(
            "id_column and image_column name the columns of a feed file; pass a feed file's "
            f"path, not a {type(feed).__name__}"
        )
    elif isinstance(feed, Mapping) or not isinstance(feed, Iterable):
        raise ConfigError(
            "feed must be a feed file, a folder, or an iterable of records (dataset items, "
            f"(id, image[, metadata]) tuples or dicts with 'id' and 'image'), got "
            f"{type(feed).__name__}"
        )
    missing = list(getattr(feed, "missing", []) or [])
    records = (_record(position, r) for position, r in enumerate(feed))
    return list(iter_entries(records, add_path=False)), missing


def _plan(target: SyncTarget, entries: Sequence[Entry], missing: Sequence[Id]) -> _Plan:
    """Sort a feed's entries into new, changed image, changed metadata and unchanged."""
    new: list[Entry] = []
    changed: list[Entry] = []
    meta_only: list[Entry] = []
    unchanged = 0
    for entry in entries:
        if entry.id not in target:
            new.append(entry)
            continue
        digest = digest_of(entry.image)
        if digest is None or digest != target.source_hash_of(entry.id):
            changed.append(entry)
        elif _present(entry.metadata) != _present(target.metadata_of(entry.id)):
            meta_only.append(entry)
        else:
            unchanged += 1
    listed = {e.id for e in entries} | set(missing)
    return _Plan(new, changed, meta_only, unchanged, listed)


class SyncOptions(TypedDict, total=False):
    """The keyword options of :func:`sync` and :meth:`visualsim.Recommender.sync`."""

    remove_missing: bool
    dry_run: bool
    id_column: str
    image_column: str
    batch_size: int | None
    on_error: Literal["skip", "raise"]
    progress: bool
    checkpoint_dir: str | os.PathLike[str] | None
    allow_outside: bool


def sync(
    target: SyncTarget,
    feed: Any,
    *,
    remove_missing: bool = True,
    dry_run: bool = False,
    id_column: str = "id",
    image_column: str = "image",
    batch_size: int | None = None,
    on_error: Literal["skip", "raise"] = "skip",
    progress: bool = True,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    allow_outside: bool = False,
) -> SyncReport:
    """Make ``target`` match ``feed``; return what was done.

    See :meth:`visualsim.Recommender.sync` for the parameters.
    """
    if not isinstance(remove_missing, bool):
        raise ConfigError(f"remove_missing must be True or False, got {remove_missing!r}")
    if not isinstance(dry_run, bool):
        raise ConfigError(f"dry_run must be True or False, got {dry_run!r}")
    if on_error not in ("skip", "raise"):
        raise ConfigError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
    for name, column in (("id_column", id_column), ("image_column", image_column)):
        if not isinstance(column, str) or not column:
            raise ConfigError(f"{name} must be a column name (a non-empty string), got {column!r}")
    entries, missing = read_feed(
        feed,
        target.fields_,
        id_column=id_column,
        image_column=image_column,
        allow_outside=allow_outside,
    )
    todo = _plan(target, entries, missing)
    gone = [i for i in target.ids_ if i not in todo.listed] if remove_missing else []
    failed = [FailedInput(i, MISSING_SOURCE, MISSING_REASON) for i in missing]
    if dry_run:
        return SyncReport(
            added=[e.id for e in todo.new],
            updated_images=[e.id for e in todo.changed],
            updated_metadata=[e.id for e in todo.meta_only],
            removed=gone,
            unchanged=todo.unchanged,
            failed=failed,
            dry_run=True,
        )
    options: dict[str, Any] = {"batch_size": batch_size, "on_error": on_error, "progress": progress}
    added: list[Id] = []
    if todo.new:
        target.add(todo.new, checkpoint_dir=checkpoint_dir, **options)
        failed += target.failed_
        added = [e.id for e in todo.new if e.id in target]
    updated: list[Id] = []
    if todo.changed:
        target.upsert(todo.changed, **options)
        bad = {f.id for f in target.failed_}
        failed += target.failed_
        updated = [e.id for e in todo.changed if e.id not in bad]
    for entry in todo.meta_only:
        target.update_metadata(entry.id, dict(entry.metadata), replace=True)
    if gone:
        target.remove(gone)
    return SyncReport(
        added=added,
        updated_images=updated,
        updated_metadata=[e.id for e in todo.meta_only],
        removed=gone,
        unchanged=todo.unchanged,
        failed=failed,
    )


def digest_of(image: Any) -> str | None:
    """Return the SHA-256 of a path's file or of bytes (as the catalogue records it).

    ``None`` for other image-likes (arrays, PIL images) and unreadable files:
    such an item is always re-extracted.
    """
    if isinstance(image, (bytes, bytearray, memoryview)):
        return hashlib.sha256(image).hexdigest()
    if isinstance(image, (str, os.PathLike)):
        from .feeds import sha256_of

        return sha256_of(image)
    return None


@dataclass
class _Plan:
    new: list[Entry]
    changed: list[Entry]
    meta_only: list[Entry]
    unchanged: int
    listed: set[Id]


def _open(
    path: Path,
    known_fields: Mapping[str, str],
    *,
    id_column: str = "id",
    image_column: str = "image",
    allow_outside: bool = False,
) -> Any:
    """A feed file as a :class:`ProductFeed`, a folder as an :class:`ImageFolder`."""
    from .datasets.csv import KINDS
    from .datasets.folder import ImageFolder
    from .feeds import ProductFeed, is_feed

    if path.is_dir():
        if (id_column, image_column) != ("id", "image"):
            raise ConfigError(
                f"id_column and image_column name the columns of a feed file; "
                f"{os.fspath(path)!r} is a folder"
            )
        return ImageFolder(path)
    if not is_feed(path):
        raise ConfigError(
            f"feed {os.fspath(path)!r} is neither a folder nor a feed file (.csv, .tsv, .jsonl, "
            ".ndjson, .parquet)"
        )
    inherited = {k: v for k, v in known_fields.items() if v in KINDS}
    return ProductFeed(
        path,
        id_column=id_column,
        image_column=image_column,
        known_dtypes=inherited,
        check_files=True,
        allow_outside=allow_outside,
    )


def _record(position: int, record: Any) -> Any:
    """A dict record ``{"id", "image", ...}`` as an ``(id, image, metadata)`` tuple."""
    if not isinstance(record, Mapping):
        return record
    if "id" not in record or "image" not in record:
        raise ConfigError(
            f"record {position} of the feed needs an 'id' and an 'image' key, got "
            f"{sorted(map(str, record))[:8]}"
        )
    rest = {str(k): v for k, v in record.items() if k not in ("id", "image")}
    return (record["id"], record["image"], rest)


def _present(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """Metadata without its empty fields (a missing value and ``None`` are the same)."""
    return {k: v for k, v in metadata.items() if v is not None}


__all__ = [
    "MISSING_REASON",
    "MISSING_SOURCE",
    "SyncOptions",
    "SyncReport",
    "SyncTarget",
    "read_feed",
    "sync",
]
