"""Images in, rows out: what ``fit``/``add``/``upsert`` do between the inputs and the store.

The :class:`~visualsim.recommender.Recommender` holds the lock and calls,
in order: :func:`read_images` (inputs to entries through
:mod:`visualsim.inputs`, extraction in batches with unreadable inputs
collected as :class:`FailedInput`, each photo's SHA-256 and duplicate
fingerprint, an optional resumable checkpoint, the reducer and transform
through :func:`visualsim.pipeline.project`), then, for ``add(duplicates=...)``,
:func:`stored_matches` and :func:`duplicates_of` with :func:`apply_policy`,
and last :func:`write_rows` into the :class:`~visualsim.store.Store` and its
:class:`~visualsim.search.Segments`. Vectors computed elsewhere go through
:func:`check_rows` instead of :func:`read_images`. Nothing here imports the
recommender.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import logging
import os
import threading
from collections.abc import Callable, Container, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .errors import (
    ConfigError,
    DimensionMismatch,
    InvalidVectorsError,
    VisualsimError,
)
from .ids import Id, check_ids
from .inputs import Entry, iter_entries
from .search import Segments
from .store import Store

logger = logging.getLogger(__name__)

Match = tuple[Id, Id, float]
"""``(new_id, earlier_id, score)``: a new photo and the photo it duplicates."""


@dataclass(frozen=True)
class FailedInput:
    """An input that could not be read during ``fit``/``add``.

    Attributes
    ----------
    id
        The id it would have had.
    source
        A short description of the input (a path, ``<N bytes>``, ...).
    reason
        Why it failed.
    """

    id: Id
    source: str
    reason: str


@dataclass(frozen=True)
class Rows:
    """New rows ready for the store, aligned: vectors (stored space), ids, metadata, origins.

    ``sources`` are image paths (relative to the image root when inside it),
    ``hashes`` the SHA-256 of the file or bytes, ``prints`` the duplicate
    detector's fingerprints and which rows have one; ``None`` where unknown
    (vectors computed elsewhere).
    """

    vectors: np.ndarray
    ids: list[Id]
    metadata: list[dict[str, Any]]
    sources: list[str | None] | None = None
    hashes: list[str | None] | None = None
    prints: tuple[np.ndarray, np.ndarray] | None = None

    def without(self, drop: Container[Id]) -> Rows:
        """These rows less those whose id is in ``drop``."""
        keep = [j for j, i in enumerate(self.ids) if i not in drop]
        return Rows(
            self.vectors[keep],
            [self.ids[j] for j in keep],
            [self.metadata[j] for j in keep],
            None if self.sources is None else [self.sources[j] for j in keep],
            None if self.hashes is None else [self.hashes[j] for j in keep],
            None if self.prints is None else (self.prints[0][keep], self.prints[1][keep]),
        )


def read_images(
    images: Iterable[Any],
    ids: Iterable[Any] | None,
    metadata: Iterable[Mapping[str, Any] | None] | None,
    *,
    extractor: Any,
    to_stored: Callable[[np.ndarray], np.ndarray],
    start: int = 0,
    taken: Container[Id] = frozenset(),
    image_root: Path | None = None,
    batch_size: int | None = None,
    on_error: Literal["skip", "raise"] = "skip",
    progress: bool = True,
    checkpoint_dir: str | os.PathLike[str] | None = None,
) -> tuple[Rows, list[FailedInput]]:
    """Extract ``images`` into :class:`Rows` and return them with the inputs that failed.

    ``to_stored`` maps the extractor's vectors to the stored space
    (:func:`visualsim.pipeline.project`).

    ``start`` and ``taken`` are as for :func:`~visualsim.inputs.iter_entries`;
    ``checkpoint_dir`` makes the run resumable
    (:class:`~visualsim.checkpoint.ExtractionCheckpoint`, cleared once read back).
    """
    sources: dict[Id, str | None] = {}
    hashes: dict[Id, str] = {}
    prints: dict[Id, np.ndarray] = {}
    entries: Iterable[Entry] = _tracked(
        iter_entries(images, ids, metadata, start=start, taken=taken, add_path=False), sources
    )
    total = len(images) if hasattr(images, "__len__") else None  # type: ignore[arg-type]
    checkpoint = None
    if checkpoint_dir is not None:
        from .checkpoint import ExtractionCheckpoint
        from .extractors.base import extractor_spec

        checkpoint = ExtractionCheckpoint(checkpoint_dir, extractor_spec(extractor))
        if checkpoint.consumed:
            logger.info(
                "resuming from %s: %d inputs already done", checkpoint_dir, checkpoint.consumed
            )
            entries = itertools.islice(entries, checkpoint.consumed, None)
            total = None if total is None else max(0, total - checkpoint.consumed)
    chunks: list[np.ndarray] = []
    new_ids: list[Id] = []
    new_meta: list[dict[str, Any]] = []
    failed: list[FailedInput] = []
    for batch in extractor.iter_batches(
        entries,
        batch_size=batch_size,
        image_of=lambda e: hashing_image(e, hashes, prints),
        on_error=on_error,
        progress=progress,
        total=total,
    ):
        batch_failed = [FailedInput(e.id, err.source, err.reason) for e, err in batch.failed]
        if checkpoint is not None:
            checkpoint.write(
                batch.vectors,
                [e.id for e in batch.items],
                [e.metadata for e in batch.items],
                [asdict(f) for f in batch_failed],
                len(batch.items) + len(batch.failed),
            )
        else:
            chunks.append(batch.vectors)
            new_ids.extend(e.id for e in batch.items)
            new_meta.extend(e.metadata for e in batch.items)
        failed.extend(batch_failed)
    if checkpoint is not None:
        stacked, new_ids, new_meta, failed_rows = checkpoint.read(extractor.dim)
        failed = [FailedInput(**row) for row in failed_rows]
    elif chunks:
        stacked = np.concatenate(chunks)
    else:
        stacked = np.zeros((0, extractor.dim), dtype=np.float32)
    projected = to_stored(stacked)
    if checkpoint is not None:
        checkpoint.clear()
    rows = Rows(
        projected,
        new_ids,
        new_meta,
        [relative_to(sources.get(i), image_root) for i in new_ids],
        [hashes.get(i) for i in new_ids],
        stack_prints(prints, new_ids),
    )
    return rows, failed


def _tracked(entries: Iterable[Entry], sources: dict[Id, str | None]) -> Iterator[Entry]:
    for e in entries:
        image = e.image
        sources[e.id] = (
            os.path.abspath(os.fspath(image)) if isinstance(image, (str, os.PathLike)) else None
        )
        yield e


def id_list(ids: Any) -> list[Id]:
    """The distinct ids of ``remove(ids)``, in order (a single id is a ``ConfigError``)."""
    if isinstance(ids, (str, bytes)) or not isinstance(ids, Iterable):
        raise ConfigError(f"ids must be a list of ids, got {ids!r}; pass [{ids!r}]")
    return list(dict.fromkeys(ids))


def relative_to(source: str | None, root: Path | None) -> str | None:
    """``source`` relative to ``root`` (forward slashes) when inside it, else unchanged."""
    if source is None or root is None:
        return source
    try:
        rel = Path(source).resolve().relative_to(root.resolve())
    except (ValueError, OSError):
        return source
    return rel.as_posix()


def check_rows(
    vectors: np.ndarray,
    ids: Sequence[Any],
    metadata: Sequence[Mapping[str, Any] | None] | None,
) -> tuple[np.ndarray, list[Id], list[dict[str, Any]]]:
    """Vectors computed elsewhere checked (2-d, finite, L2-normalised) with their ids and metadata.

    Raises
    ------
    InvalidVectorsError
        Vectors that are not a finite 2-d array, or ids given as one string.
    ConfigError
        Metadata that is not dicts, or vectors, ids and metadata of different lengths.
    """
    from .indexes.base import check_vectors

    if isinstance(ids, (str, bytes)):
        raise InvalidVectorsError(
            f"ids must be a list of ids, got the single string {ids!r}; pass [{ids!r}]"
        )
    checked = check_ids(ids, unique=True)
    arr = np.asarray(vectors)
    if arr.ndim != 2:
        raise InvalidVectorsError(f"vectors must be 2-d (n, dim), got shape {arr.shape}")
    x = check_vectors(arr, name="vectors") if len(arr) else arr.astype(np.float32)
    meta_in = metadata if metadata is not None else [None] * len(x)
    meta = []
    for position, m in enumerate(meta_in):
        if m is not None and not isinstance(m, Mapping):
            raise ConfigError(f"metadata of item {position} must be a dict, got {type(m).__name__}")
        meta.append(dict(m or {}))
    if not (len(checked) == len(meta) == len(x)):
        raise ConfigError(
            f"{len(x)} vectors, {len(checked)} ids and {len(meta)} metadata rows do not align"
        )
    return x, checked, meta


def vector_dim(vectors: Any) -> int:
    """The ``dim`` of an ``(n, dim)`` array of vectors (``InvalidVectorsError`` for any other)."""
    shape = getattr(vectors, "shape", None)
    if shape is None or len(shape) != 2:
        raise InvalidVectorsError(
            f"vectors must be a 2-d array (n, dim), got {type(vectors).__name__} of shape {shape}"
        )
    return int(shape[1])


def shard_extractor(path: str | os.PathLike[str]) -> Any:
    """The extractor a shard folder's manifest names (:mod:`visualsim.shards`), rebuilt."""
    from .extractors.base import extractor_from_config
    from .shards import read_manifest

    return extractor_from_config(read_manifest(path)["extractor"])


def check_dim(vectors: np.ndarray, dim: int) -> None:
    """Refuse vectors of another length than the catalogue's ``dim`` (``DimensionMismatch``)."""
    if vectors.shape[1] != dim:
        raise DimensionMismatch(
            f"vectors have dimension {vectors.shape[1]}, but the catalogue stores "
            f"{dim}-d vectors (from its extractor); use the same extractor"
        )


def write_rows(store: Store, segments: Segments, rows: Rows, *, replace: bool) -> None:
    """Append ``rows`` to the store and its segments (the caller holds the write lock).

    With ``replace``, stored items with the same ids are tombstoned first
    (after their new metadata is checked, so a bad value leaves them in place).
    """
    check_dim(rows.vectors, store.dim)
    old = [i for i in rows.ids if i in store] if replace else []
    if old:
        store.clean_metadata(rows.metadata)  # a bad value must leave the old items in place
        segments.removed(store, store.kill(old), old)
    fps, printed = rows.prints if rows.prints is not None else (None, None)
    new = store.append(
        rows.vectors, rows.ids, rows.metadata, rows.sources, rows.hashes, fps, printed
    )
    segments.added(store, new)


def transformed(store: Store, transform: Any) -> Rows:
    """The live rows of ``store`` through ``transform`` (re-normalised), with all they carry."""
    rows = store.live_rows()
    x = np.asarray(transform.transform(store.vectors_f32(rows)), dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    listed = rows.tolist()
    return Rows(
        (x / np.where(norms == 0, 1, norms)).astype(np.float32),
        [store.ids[r] for r in listed],
        [store.metadata(int(r)) for r in rows],
        [store.sources[r] for r in listed],
        [store.hashes[r] for r in listed],
        (store.fingerprints.view[rows].copy(), store.printed.view[rows].copy()),
    )


def remove_ids(store: Store, segments: Segments, ids: list[Id]) -> None:
    """Tombstone ``ids`` (all stored, or ``UnknownIdError`` and nothing removed)."""
    rows = store.kill(ids)
    segments.removed(store, rows, ids)


def compact(store: Store, segments: Segments) -> Store | None:
    """Index every row; return the dense rewrite of ``store`` when one was needed, else ``None``.

    A rewrite happens when rows were removed, partitions moved, or the index
    retrains; ``segments`` are rebuilt over it.
    """
    moved = segments.partitions is not None and bool(segments.partitions.moved)
    if not store.n_dead and not moved and not segments.retrains():
        store.retype()  # a field loaded as json whose values are now all of one kind
        segments.flush(store)
        return None
    dense, _ = store.compacted()
    segments.rebuild(dense)
    return dense


def log_failed(failed: Sequence[FailedInput], n_ok: int) -> None:
    """Warn once how many inputs could not be read."""
    if failed:
        logger.warning(
            "%d of %d inputs could not be read and were skipped (see .failed_)",
            len(failed),
            len(failed) + n_ok,
        )


class SummaryCache:
    """The duplicate detector's candidate summaries of one store's rows, grown as it grows."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cached: tuple[Store, Any] | None = None

    def of(self, store: Store) -> np.ndarray:
        """The summaries of every row of ``store`` (a new store starts afresh)."""
        from .duplicates import Summaries

        with self._lock:
            cached = self._cached
            if cached is None or cached[0] is not store:
                cached = (store, Summaries())
                self._cached = cached
            return cached[1].update(store.fingerprints.view)


def stored_matches(
    store: Store | None, summaries: SummaryCache, rows: Rows, min_score: float
) -> dict[int, tuple[Id, float]]:
    """Position in ``rows`` -> ``(stored id, score)`` of its best stored duplicate.

    The caller holds the read lock; a hash match scores 1.0.
    """
    from .duplicates import match

    best: dict[int, tuple[Id, float]] = {}
    if store is None or not len(store) or rows.prints is None:
        return best
    fps, printed = rows.prints
    live = store.alive.view.copy()
    valid = live & store.printed.view
    by_hash = {h: r for r in np.flatnonzero(live).tolist() if (h := store.hashes[r])}
    for j, h in enumerate(rows.hashes or []):
        if h is not None and h in by_hash:
            best[j] = (store.ids[by_hash[h]], 1.0)
    positions = np.flatnonzero(printed)
    if len(positions) and valid.any():
        new_rows, cat_rows, scores = match(
            fps[positions],
            store.fingerprints.view,
            valid=valid,
            min_score=min_score,
            summaries=summaries.of(store),
        )
        pairs = (new_rows.tolist(), cat_rows.tolist(), scores.tolist())
        for a, b, sc in zip(*pairs, strict=True):
            j = int(positions[a])
            if j not in best or sc > best[j][1]:
                best[j] = (store.ids[b], float(sc))
    return best


def duplicates_of(rows: Rows, best: dict[int, tuple[Id, float]], min_score: float) -> list[Match]:
    """``(new_id, earlier_id, score)`` per new photo that duplicates an earlier one.

    ``best`` holds the stored matches (:func:`stored_matches`); among the new
    photos themselves the later of two copies is the duplicate.
    """
    from .duplicates import find_pairs

    if rows.prints is None:
        return [(rows.ids[j], best[j][0], best[j][1]) for j in sorted(best)]
    fps, printed = rows.prints
    hashes = rows.hashes or [None] * len(rows.ids)
    a_rows, b_rows, scores = find_pairs(fps, valid=printed, keys=hashes, min_score=min_score)
    for a, b, sc in zip(a_rows.tolist(), b_rows.tolist(), scores.tolist(), strict=True):
        if b not in best or sc > best[b][1]:
            best[b] = (rows.ids[a], float(sc))
    return [(rows.ids[j], best[j][0], best[j][1]) for j in sorted(best)]


def check_policy(duplicates: Any, min_score: Any) -> float:
    """Check ``add(duplicates=..., min_score=...)``; return the detector's threshold."""
    if duplicates not in (None, "report", "skip", "error"):
        raise ConfigError(
            f"duplicates must be None, 'report', 'skip' or 'error', got {duplicates!r}"
        )
    from .duplicates import check_min_score

    return check_min_score(min_score)


def apply_policy(
    rows: Rows, found: list[Match], policy: Literal["report", "skip", "error"], min_score: float
) -> Rows:
    """``rows`` under ``add(duplicates=policy)``: all (report), less ``found`` (skip), or raise.

    Raises
    ------
    DuplicateImageError
        With ``"error"`` when ``found`` is not empty, naming the first pairs.
    """
    if found and policy == "error":
        from .errors import DuplicateImageError

        shown = ", ".join(f"{a!r} ~ {b!r} ({s:.3f})" for a, b, s in found[:5])
        raise DuplicateImageError(
            f"{len(found)} new image(s) are duplicates of earlier photos (score >= "
            f"{min_score}): {shown}; nothing was added. Pass duplicates='skip' to "
            "leave them out or 'report' to add them anyway"
        )
    if found and policy == "skip":
        return rows.without({a for a, _, _ in found})
    return rows


def hashing_image(
    entry: Entry, hashes: dict[Id, str], prints: dict[Id, np.ndarray] | None = None
) -> Any:
    """Return the entry's image for the loader, recording what identifies the photo.

    The SHA-256 of file/bytes inputs goes to ``hashes``, the duplicate
    detector's fingerprint (:func:`visualsim.duplicates.fingerprint_of`) to
    ``prints``. A file is read once: its bytes are hashed and handed to the
    loader as a stream named after the path (so load errors still name the
    file). An input that cannot be fingerprinted gets none; the loader reports
    it if it cannot read it either.
    """
    image = entry.image
    if isinstance(image, (bytes, bytearray, memoryview)):
        hashes[entry.id] = hashlib.sha256(image).hexdigest()
        _fingerprint_into(prints, entry.id, bytes(image))
    elif isinstance(image, (str, os.PathLike)):
        try:
            with open(image, "rb") as fh:
                data = fh.read()
        except (OSError, ValueError):
            return image  # the loader reports it with the reason
        if not data:
            return image
        hashes[entry.id] = hashlib.sha256(data).hexdigest()
        _fingerprint_into(prints, entry.id, data)
        stream = io.BytesIO(data)
        stream.name = os.fspath(image)
        return stream
    elif hasattr(image, "read"):  # a file object: fingerprint it only if it can rewind
        try:
            position = image.tell()
            _fingerprint_into(prints, entry.id, image)
            image.seek(position)
        except (OSError, ValueError, AttributeError):
            if prints is not None:
                prints.pop(entry.id, None)
    else:
        _fingerprint_into(prints, entry.id, image)
    return image


def _fingerprint_into(prints: dict[Id, np.ndarray] | None, item_id: Id, image: Any) -> None:
    if prints is None:
        return
    from .duplicates import fingerprint_of

    try:
        prints[item_id] = fingerprint_of(image)
    except (VisualsimError, OSError, ValueError, TypeError):
        pass  # unreadable: the loader skips or raises it with the reason


def stack_prints(prints: dict[Id, np.ndarray], ids: list[Id]) -> tuple[np.ndarray, np.ndarray]:
    """The fingerprints of ``ids`` in order (zeros where none) and which ones are real."""
    from .duplicates import FINGERPRINT_BYTES

    fps = np.zeros((len(ids), FINGERPRINT_BYTES), np.uint8)
    printed = np.zeros(len(ids), bool)
    for j, item_id in enumerate(ids):
        fp = prints.get(item_id)
        if fp is not None:
            fps[j] = fp
            printed[j] = True
    return fps, printed


__all__ = [
    "FailedInput",
    "Rows",
    "SummaryCache",
    "apply_policy",
    "check_dim",
    "check_rows",
    "compact",
    "duplicates_of",
    "read_images",
    "remove_ids",
    "stored_matches",
    "transformed",
    "write_rows",
]
