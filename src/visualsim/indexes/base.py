"""The index protocol and what every backend shares.

An index maps caller ids (``str`` or ``int``) to unit vectors and answers
"which stored vectors are closest to these queries?". Every backend follows one
contract, spelled out by :class:`Index`:

* scores are cosine similarities, highest first, ties broken by insertion order;
* vectors and queries are validated by :func:`check_vectors` and L2-normalised
  on the way in, so raw (unnormalised) input still gets cosine scores;
* caller ids are mapped to internal ``int64`` labels by one :class:`IdMap`;
* ``search`` never returns a missing (``-1``) neighbour: asking for more than
  the index holds returns what there is;
* ``save(path)`` writes a directory (``manifest.json`` with a format version
  and checksums, ``.npy`` arrays, FAISS's own files), atomically; nothing is
  pickled, and :func:`load_index` rebuilds the right class through the
  registry, a user's own registered class included.

Backends subclass :class:`BaseIndex` and fill in a handful of ``_``-prefixed
hooks; they never re-implement validation, id mapping, locking or the on-disk
layout.
"""

from __future__ import annotations

import contextlib
import json
import math
import numbers
import os
import shutil
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeAlias, TypeVar, runtime_checkable

import numpy as np
from numpy.typing import ArrayLike

from ..errors import (
    CatalogError,
    ConfigError,
    DimensionMismatch,
    DuplicateIdError,
    FormatVersionError,
    InvalidVectorsError,
    NotFittedError,
    UnknownIdError,
    VisualsimError,
)
from ..ids import Id, check_ids
from ..ids import preview as _preview
from ..registry import Registry
from ..storage import replace_dir, sha256_file

PathLike: TypeAlias = "str | os.PathLike[str]"

FORMAT_VERSION = 1
"""Version of the on-disk layout written by :meth:`BaseIndex.save`."""

MANIFEST_NAME = "manifest.json"
_FORMAT_TAG = "visualsim.index"
_IDS_FILE = "ids.json"
_LABELS_FILE = "labels.npy"

_Self = TypeVar("_Self", bound="BaseIndex")


INDEXES: Registry[type] = Registry(
    "index",
    builtins={
        "flat": "visualsim.indexes.faiss:FlatIndex",
        "ivf": "visualsim.indexes.faiss:IVFIndex",
        "hnsw": "visualsim.indexes.faiss:HNSWIndex",
        "ivfpq": "visualsim.indexes.faiss:IVFPQIndex",
        "sklearn": "visualsim.indexes.sklearn:SklearnIndex",
        "sharded": "visualsim.indexes.sharded:ShardedIndex",
    },
)
"""The index registry: config names (``"flat"``, ``"hnsw"``, ...) to classes."""

register_index = INDEXES.register
"""Class decorator registering a user index under a name, so it can be saved and loaded.

Examples
--------
>>> from visualsim.indexes import BaseIndex, register_index
>>> @register_index("doc-example", overwrite=True)
... class MyIndex(BaseIndex):
...     pass
>>> MyIndex.name
'doc-example'
"""


def make_index(name: str, **params: Any) -> Index:
    """Return a new, empty index of the registered kind ``name``.

    Parameters
    ----------
    name
        ``"flat"``, ``"ivf"``, ``"hnsw"``, ``"ivfpq"``, ``"sklearn"``,
        ``"sharded"``, or a name registered with :func:`register_index`.
    **params
        Keyword configuration passed to the class (for example ``nlist=1024``).

    Raises
    ------
    ConfigError
        If ``name`` is unknown or a parameter is not valid for it.

    Examples
    --------
    >>> make_index("hnsw", M=16).get_config()["M"]
    16
    """
    index: Index = INDEXES.build(name, params)
    return index


@runtime_checkable
class Index(Protocol):
    """What every visualsim index provides.

    Build one with :func:`make_index` or a class such as ``FlatIndex()``; write
    your own by subclassing :class:`BaseIndex` (or implementing these methods)
    and decorating it with :func:`register_index`.
    """

    name: ClassVar[str]

    @property
    def dim(self) -> int | None:
        """Dimension of the stored vectors, ``None`` until known."""
        ...

    @property
    def ids(self) -> list[Id]:
        """Stored ids, in insertion order."""
        ...

    def __len__(self) -> int:
        """Number of stored vectors."""
        ...

    def add(self, vectors: ArrayLike, ids: Sequence[Id]) -> None:
        """Store ``vectors`` (``(n, dim)``) under the caller's ``ids``."""
        ...

    def search(self, queries: ArrayLike, k: int) -> tuple[np.ndarray, list[list[Id]]]:
        """Return ``(scores, ids)`` of the ``k`` most similar stored vectors per query."""
        ...

    def remove(self, ids: Sequence[Id]) -> None:
        """Remove the vectors stored under ``ids``."""
        ...

    def get_config(self) -> dict[str, Any]:
        """Return the constructor parameters, JSON-safe."""
        ...

    def save(self, path: PathLike) -> None:
        """Write the index to the directory ``path``."""
        ...


# --------------------------------------------------------------------------- validation


def check_vectors(
    x: ArrayLike, *, dim: int | None = None, name: str = "vectors", normalize: bool = True
) -> np.ndarray:
    """Return ``x`` as a C-contiguous float32 ``(n, dim)`` array of unit rows.

    The one validation helper every index uses, so every backend refuses the
    same inputs with the same messages.

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
    if dim is not None and arr.shape[1] != dim:
        raise DimensionMismatch(
            f"{name} have dimension {arr.shape[1]}, but the index holds {dim}-dimensional "
            "vectors; use the same extractor for queries and catalogue, or a new index"
        )
    out = np.ascontiguousarray(arr, dtype=np.float32)
    finite = np.isfinite(out).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise InvalidVectorsError(
            f"{name} contain NaN or infinite values (as float32) in row(s) "
            f"{_preview(bad.tolist())}; drop or repair those rows"
        )
    if normalize and len(out):
        norms = np.linalg.norm(out.astype(np.float64), axis=1)
        zero = norms == 0
        if zero.any():
            raise InvalidVectorsError(
                f"{name} row(s) {_preview(np.flatnonzero(zero).tolist())} are all zeros and "
                "have no direction, so no cosine similarity; drop those rows"
            )
        out = np.ascontiguousarray(out / norms[:, None], dtype=np.float32)
    return out


def check_k(k: Any) -> int:
    """Return ``k`` as an ``int`` if it is a whole number of at least 1.

    Raises
    ------
    ConfigError
        If ``k`` is not an integer or is smaller than 1.
    """
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise ConfigError(f"k must be a positive integer, got {k!r}")
    if k < 1:
        raise ConfigError(f"k must be at least 1, got {k}")
    return int(k)


class IdMap:
    """Caller ids ↔ internal ``int64`` labels, in insertion order.

    Labels are handed out increasing from 0 and never reused, so sorting by
    label is sorting by insertion order (how every index breaks score ties).
    An id removed and added back gets a new label: it counts as the newest.
    """

    def __init__(self) -> None:
        self._label_of: dict[Id, int] = {}
        self._id_at: list[Id | None] = []

    def __len__(self) -> int:
        return len(self._label_of)

    def __contains__(self, id_: object) -> bool:
        return id_ in self._label_of

    @property
    def ids(self) -> list[Id]:
        """Stored ids in insertion order."""
        return list(self._label_of)

    @property
    def labels(self) -> np.ndarray:
        """Labels of the stored ids, in insertion (= increasing) order, ``int64``."""
        return np.fromiter(self._label_of.values(), dtype=np.int64, count=len(self._label_of))

    @property
    def next_label(self) -> int:
        """The label the next added id will get."""
        return len(self._id_at)

    def check_new(self, ids: Sequence[Id]) -> None:
        """Raise :class:`DuplicateIdError` if any of ``ids`` is already stored."""
        stored = [i for i in ids if i in self._label_of]
        if stored:
            raise DuplicateIdError(
                f"id(s) {_preview(stored)} are already in the index; remove them first "
                "to replace their vectors"
            )

    def reserve(self, n: int) -> np.ndarray:
        """Return the labels the next ``n`` ids will get, without storing anything."""
        return np.arange(self.next_label, self.next_label + n, dtype=np.int64)

    def assign(self, ids: Sequence[Id]) -> np.ndarray:
        """Store new ``ids`` and return their labels (see :meth:`reserve`)."""
        self.check_new(ids)
        labels = self.reserve(len(ids))
        for id_, label in zip(ids, labels.tolist(), strict=True):
            self._label_of[id_] = label
        self._id_at.extend(ids)
        return labels

    def labels_of(self, ids: Sequence[Id]) -> np.ndarray:
        """Return the labels of stored ``ids``.

        Raises
        ------
        UnknownIdError
            Naming every id that is not stored.
        """
        missing = [i for i in ids if i not in self._label_of]
        if missing:
            raise UnknownIdError(
                f"id(s) {_preview(missing)} are not in the index; nothing was removed. "
                "Check `index.ids` for what is stored"
            )
        return np.fromiter((self._label_of[i] for i in ids), dtype=np.int64, count=len(ids))

    def discard(self, ids: Sequence[Id]) -> None:
        """Forget stored ``ids`` (their labels are never reused)."""
        for id_ in ids:
            label = self._label_of.pop(id_)
            self._id_at[label] = None

    def lookup(self, labels: np.ndarray) -> list[list[Id]]:
        """Return the caller ids for a 2-d array of labels, row by row."""
        id_at = self._id_at
        return [[id_at[label] for label in row] for row in labels.tolist()]

    def state(self) -> tuple[list[Id], np.ndarray, int]:
        """Return ``(ids, labels, next_label)``, what :meth:`from_state` needs."""
        return self.ids, self.labels, self.next_label

    @classmethod
    def from_state(cls, ids: Sequence[Any], labels: np.ndarray, next_label: int) -> IdMap:
        """Rebuild a map saved by :meth:`state`, checking it is consistent.

        Raises
        ------
        CatalogError
            If the ids and labels disagree in length, repeat, or are out of order.
        """
        try:
            clean = check_ids(ids)
        except VisualsimError as exc:
            raise CatalogError(f"stored ids are invalid: {exc}") from exc
        labels = np.asarray(labels)
        if (
            labels.ndim != 1
            or labels.dtype != np.int64
            or len(labels) != len(clean)
            or (len(labels) and (labels[0] < 0 or labels[-1] >= next_label))
            or (len(labels) > 1 and not (np.diff(labels) > 0).all())
        ):
            raise CatalogError(
                f"stored labels do not match the {len(clean)} stored ids "
                "(wrong length, type or order); the saved index is corrupt"
            )
        out = cls()
        out._id_at = [None] * int(next_label)
        for id_, label in zip(clean, labels.tolist(), strict=True):
            out._label_of[id_] = label
            out._id_at[label] = id_
        return out


# --------------------------------------------------------------------------- locking


class ReadWriteLock:
    """Many readers or one writer; waiting writers go first.

    Not reentrant: a holder must not acquire it again.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0

    @contextlib.contextmanager
    def read(self) -> Iterator[None]:
        """Hold the lock shared for the ``with`` block."""
        with self._cond:
            while self._writer or self._writers_waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextlib.contextmanager
    def write(self) -> Iterator[None]:
        """Hold the lock exclusively for the ``with`` block."""
        with self._cond:
            self._writers_waiting += 1
            try:
                while self._writer or self._readers:
                    self._cond.wait()
            finally:
                self._writers_waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


# --------------------------------------------------------------------------- base class


class BaseIndex:
    """Shared machinery of every built-in index; subclass it for your own.

    It validates input, maps ids, sorts and ties results, locks, and saves and
    loads. A backend implements ``_add``, ``_remove``, ``_search``,
    ``_save_state`` and ``_load_state`` (and, if it must train or refit before
    searching, ``_is_ready`` and ``_prepare``); its ``__init__`` takes only
    keyword configuration, stores each parameter under its own name, and
    calls ``super().__init__(dim=dim)``.

    Thread safety: every public method takes an internal read/write lock, so
    concurrent ``search`` calls run in parallel and give the same answers as
    serial ones, and ``add``/``remove``/``save`` may be called from other
    threads at any time (they wait for running searches and block new ones).

    Parameters
    ----------
    dim
        Dimension of the vectors, if known in advance; otherwise the first
        :meth:`add` sets it.
    """

    name: ClassVar[str]
    exact: ClassVar[bool] = False
    """Whether search results are guaranteed to equal brute force."""

    def __init__(self, *, dim: int | None = None) -> None:
        if dim is not None and (
            isinstance(dim, bool) or not isinstance(dim, numbers.Integral) or dim < 1
        ):
            raise ConfigError(f"dim must be a positive integer or None, got {dim!r}")
        self._dim: int | None = None if dim is None else int(dim)
        self._ids = IdMap()
        self._lock = ReadWriteLock()

    # ----------------------------------------------------------------- public API

    @property
    def dim(self) -> int | None:
        """Dimension of the stored vectors: as configured, or set by the first ``add``."""
        return self._dim

    @property
    def ids(self) -> list[Id]:
        """Stored ids, in insertion order."""
        with self._lock.read():
            return self._ids.ids

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, id_: object) -> bool:
        return id_ in self._ids

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({params})"

    def add(self, vectors: ArrayLike, ids: Sequence[Id]) -> None:
        """Store ``vectors`` under the caller's ``ids``.

        Parameters
        ----------
        vectors
            Array-like ``(n, dim)`` (or one 1-d vector); rows are L2-normalised.
        ids
            ``n`` distinct ids (``str`` or ``int``) not already stored.

        Raises
        ------
        InvalidVectorsError
            Bad shape, NaN/inf, a zero row, a bad id type, or a count that
            differs from the number of rows.
        DimensionMismatch
            Rows of another dimension than the index holds.
        DuplicateIdError
            An id repeated within ``ids`` or already stored; nothing is added.
        """
        ids = check_ids(ids)
        x = check_vectors(vectors, dim=self._dim, name="vectors")
        if len(ids) != len(x):
            raise InvalidVectorsError(
                f"vectors have {len(x)} row(s) but {len(ids)} id(s) were given; pass one id per row"
            )
        with self._lock.write():
            x = check_vectors(x, dim=self._dim, name="vectors", normalize=False)
            self._ids.check_new(ids)
            if self._dim is None:
                self._dim = int(x.shape[1])
            if not len(x):
                return
            self._add(x, self._ids.reserve(len(ids)))
            self._ids.assign(ids)

    def search(self, queries: ArrayLike, k: int) -> tuple[np.ndarray, list[list[Id]]]:
        """Return the ``k`` stored vectors most similar to each query.

        Parameters
        ----------
        queries
            Array-like ``(nq, dim)``, or one 1-d vector (still answered as a
            row of a 2-d result). Rows are L2-normalised.
        k
            How many neighbours per query; more than the index holds returns
            all of them.

        Returns
        -------
        scores : numpy.ndarray
            ``float32`` of shape ``(nq, min(k, len(self)))``: cosine
            similarities, highest first, ties in insertion order.
        ids : list of list
            The caller ids matching ``scores``, row by row; never a missing id.

        Raises
        ------
        ConfigError
            ``k`` is not an integer of at least 1.
        NotFittedError
            The index is empty.
        InvalidVectorsError, DimensionMismatch
            The queries are malformed or of the wrong dimension.
        """
        k = check_k(k)
        if not len(self._ids):
            raise self._empty_error()
        q = check_vectors(queries, dim=self._dim, name="queries")
        while True:
            with self._lock.read():
                if self._is_ready():
                    return self._search_locked(q, k)
            with self._lock.write():
                if not self._is_ready():
                    self._prepare()

    def search_labels(
        self, queries: ArrayLike, k: int, *, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(scores, labels)`` of the best ``k`` stored vectors, optionally filtered.

        The catalogue's fast path: internal ``int64`` labels instead of caller
        ids, and a filter pushed into the search. ``allowed`` is a boolean
        mask over labels (``allowed[label]`` true = may be returned; labels
        past its end are not allowed). Rows are ``(nq, min(k, len(self)))``,
        best first; where fewer than that many allowed vectors are found the
        row ends in label ``-1`` with score ``-inf``. An approximate backend
        may find fewer allowed neighbours than exist; the caller decides what
        to do then (the catalogue answers such queries exactly).
        """
        k = check_k(k)
        if not len(self._ids):
            raise self._empty_error()
        q = check_vectors(queries, dim=self._dim, name="queries")
        while True:
            with self._lock.read():
                if self._is_ready():
                    kk = min(k, len(self._ids))
                    if not len(q):
                        return np.empty((0, kk), np.float32), np.empty((0, kk), np.int64)
                    if allowed is None:
                        scores, labels = self._search(q, kk)
                    else:
                        scores, labels = self._search_allowed(q, kk, np.asarray(allowed, bool))
                    return _sorted_padded(scores, labels, len(q), kk)
            with self._lock.write():
                if not self._is_ready():
                    self._prepare()

    def remove(self, ids: Sequence[Id]) -> None:
        """Remove the vectors stored under ``ids`` (repeats are ignored).

        Raises
        ------
        UnknownIdError
            Naming the ids that are not stored; nothing is removed.
        """
        wanted = list(dict.fromkeys(check_ids(ids, unique=False)))
        with self._lock.write():
            labels = self._ids.labels_of(wanted)
            if len(labels):
                self._remove(labels)
                self._ids.discard(wanted)

    def get_config(self) -> dict[str, Any]:
        """Return the constructor parameters (JSON-safe), as ``from_config`` takes them.

        ``dim`` is the configured dimension, or the one learned from the first
        ``add``.
        """
        import inspect

        config: dict[str, Any] = {}
        for param in inspect.signature(type(self).__init__).parameters.values():
            if param.name == "self" or param.kind in (param.VAR_KEYWORD, param.VAR_POSITIONAL):
                continue
            config[param.name] = getattr(self, param.name)
        return config

    @classmethod
    def from_config(cls: type[_Self], config: Mapping[str, Any]) -> _Self:
        """Return a new, empty index built from ``get_config()`` output.

        Raises
        ------
        ConfigError
            If ``config`` has unknown or invalid parameters.
        """
        try:
            return cls(**dict(config))
        except TypeError as exc:
            raise ConfigError(f"invalid config for {cls.__qualname__}: {exc}") from exc

    def save(self, path: PathLike) -> None:
        """Write the index to the directory ``path``, atomically.

        The directory holds ``manifest.json`` (format version, class name,
        config, dim, count, SHA-256 of every file), ``ids.json``,
        ``labels.npy`` and the backend's own files. It is written to a
        temporary sibling and renamed into place, so a crash never leaves a
        half-written index at ``path``. An existing index at ``path`` is
        replaced; any other existing file or non-empty directory is refused.

        Raises
        ------
        ConfigError
            The class is not registered (see :func:`register_index`).
        CatalogError
            ``path`` exists and is not a saved index.
        """
        spec = INDEXES.to_spec(self)
        target = Path(path)
        _check_replaceable(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:12]}"
        tmp.mkdir()
        try:
            with self._lock.read():
                state = self._save_state(tmp)
                ids, labels, next_label = self._ids.state()
                count = len(ids)
                dim = self._dim
            (tmp / _IDS_FILE).write_text(json.dumps(ids), encoding="utf-8")
            np.save(tmp / _LABELS_FILE, labels, allow_pickle=False)
            from .. import __version__

            manifest = {
                "format": _FORMAT_TAG,
                "format_version": FORMAT_VERSION,
                "library_version": __version__,
                "name": spec["name"],
                "config": spec["config"],
                "dim": dim,
                "count": count,
                "next_label": next_label,
                "state": state,
                "files": {
                    p.relative_to(tmp).as_posix(): sha256_file(p)
                    for p in sorted(tmp.rglob("*"))
                    if p.is_file()
                },
            }
            (tmp / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
            replace_dir(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    @classmethod
    def load(cls: type[_Self], path: PathLike, *, verify: bool = True) -> _Self:
        """Return the index saved at ``path`` by :meth:`save`.

        ``verify=False`` skips the files' checksums (for a caller that has
        already checked them, such as a catalogue); shapes are still checked.

        Raises
        ------
        FormatVersionError
            Written by a newer (or unknown) format version.
        CatalogError
            Missing, corrupt or truncated files, or an index of another class
            (use :func:`load_index` to load whatever is there).
        """
        directory = Path(path)
        return cls._from_manifest(directory, read_manifest(directory, verify=verify))

    @classmethod
    def _from_manifest(cls: type[_Self], directory: Path, manifest: Mapping[str, Any]) -> _Self:
        registered = _registered_class(manifest["name"], directory)
        if not issubclass(registered, cls):
            raise CatalogError(
                f"{directory} holds a {manifest['name']!r} index ({registered.__qualname__}), "
                f"not a {cls.__qualname__}; use visualsim.indexes.load_index to load it"
            )
        index = registered.from_config(manifest["config"])
        index._restore(directory, manifest)
        return index

    # ----------------------------------------------------------------- backend hooks

    def _add(self, x: np.ndarray, labels: np.ndarray) -> None:
        """Store unit rows ``x`` under new, increasing ``labels`` (write lock held)."""
        raise NotImplementedError

    def _remove(self, labels: np.ndarray) -> None:
        """Drop the stored ``labels`` (all known to be stored; write lock held)."""
        raise NotImplementedError

    def _search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(scores, labels)``, each ``(nq, k)``, for unit queries (read lock held).

        ``1 <= k <= len(self)``; every row must be complete (no ``-1``).
        Order within a row does not matter: the caller sorts.
        """
        raise NotImplementedError

    def _search_allowed(
        self, q: np.ndarray, k: int, allowed: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Like ``_search`` but only labels with ``allowed[label]``; ``-1`` pads (read lock held).

        The default searches deeper until ``k`` allowed labels are found or
        everything was seen; FAISS backends override it with a selector.
        """
        n = len(self._ids)
        frac = max(float(allowed.sum()) / max(n, 1), 1.0 / max(n, 1))
        depth = min(n, max(2 * k, math.ceil(2 * k / frac)))
        while True:
            scores, labels = self._search(q, depth)
            labels = np.asarray(labels, dtype=np.int64)
            scores = np.asarray(scores, dtype=np.float32)
            ok = (labels >= 0) & (labels < len(allowed))
            ok[ok] = allowed[labels[ok]]
            if depth >= n or (ok.sum(axis=1) >= k).all():
                break
            depth = min(n, depth * 2)
        return _keep(scores, labels, ok, k)

    def _is_ready(self) -> bool:
        """Whether ``_search`` can run now without training or refitting."""
        return True

    def _prepare(self) -> None:
        """Train or refit so that ``_is_ready()`` holds (write lock held)."""

    def _save_state(self, directory: Path) -> dict[str, Any]:
        """Write backend files into ``directory``; return JSON-safe manifest extras."""
        raise NotImplementedError

    def _load_state(self, directory: Path, state: Mapping[str, Any]) -> None:
        """Restore what ``_save_state`` wrote (ids and dim are already restored)."""
        raise NotImplementedError

    # ----------------------------------------------------------------- internals

    def _empty_error(self) -> NotFittedError:
        return NotFittedError(
            f"{type(self).__name__} is empty; add vectors with .add(vectors, ids) before searching"
        )

    def _search_locked(self, q: np.ndarray, k: int) -> tuple[np.ndarray, list[list[Id]]]:
        n = len(self._ids)
        if not n:
            raise self._empty_error()
        kk = min(k, n)
        if not len(q):
            return np.empty((0, kk), dtype=np.float32), []
        scores, labels = self._search(q, kk)
        scores = np.asarray(scores, dtype=np.float32).reshape(len(q), kk)
        labels = np.asarray(labels, dtype=np.int64).reshape(len(q), kk)
        if (labels < 0).any():
            raise RuntimeError(
                f"{type(self).__name__} returned missing neighbours; please report this bug"
            )
        order = np.lexsort((labels, -scores), axis=-1)
        scores = np.take_along_axis(scores, order, axis=1)
        labels = np.take_along_axis(labels, order, axis=1)
        return scores, self._ids.lookup(labels)

    def _restore(self, directory: Path, manifest: Mapping[str, Any]) -> None:
        try:
            ids = json.loads((directory / _IDS_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise CatalogError(f"cannot read {directory / _IDS_FILE}: {exc}") from exc
        labels = load_array(directory / _LABELS_FILE)
        next_label = manifest["next_label"]
        if not isinstance(ids, list) or not isinstance(next_label, int):
            raise CatalogError(f"{directory}: ids or next_label malformed; the index is corrupt")
        self._ids = IdMap.from_state(ids, labels, next_label)
        if len(self._ids) != manifest["count"]:
            raise CatalogError(
                f"{directory}: manifest says {manifest['count']} vectors but "
                f"{len(self._ids)} ids are stored; the index is corrupt"
            )
        dim = manifest["dim"]
        if dim is not None and (not isinstance(dim, int) or dim < 1):
            raise CatalogError(f"{directory}: dim {dim!r} in the manifest is not valid")
        self._dim = dim
        try:
            self._load_state(directory, manifest.get("state") or {})
        except VisualsimError:
            raise
        except (OSError, ValueError, RuntimeError, KeyError, TypeError) as exc:
            raise CatalogError(f"cannot load the index in {directory}: {exc}") from exc


def _keep(
    scores: np.ndarray, labels: np.ndarray, ok: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Keep the ``ok`` entries of each row (best first), padded to ``k`` with ``-1``/``-inf``."""
    s = np.where(ok, scores, -np.inf).astype(np.float32)
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    s = np.take_along_axis(s, order, axis=1)
    lab = np.where(np.isfinite(s), np.take_along_axis(labels, order, axis=1), -1)
    if s.shape[1] < k:
        pad = k - s.shape[1]
        s = np.pad(s, ((0, 0), (0, pad)), constant_values=-np.inf)
        lab = np.pad(lab, ((0, 0), (0, pad)), constant_values=-1)
    return s, lab


def _sorted_padded(scores: Any, labels: Any, nq: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float32).reshape(nq, -1)
    lab = np.asarray(labels, dtype=np.int64).reshape(nq, -1)
    s = np.where(lab < 0, -np.inf, s).astype(np.float32)
    order = np.lexsort((np.where(lab < 0, np.iinfo(np.int64).max, lab), -s), axis=-1)
    return _keep(
        np.take_along_axis(s, order, axis=1),
        np.take_along_axis(lab, order, axis=1),
        np.take_along_axis(lab, order, axis=1) >= 0,
        k,
    )


# --------------------------------------------------------------------------- on disk


def load_index(path: PathLike, *, verify: bool = True) -> Index:
    """Return the index saved at ``path``, whatever its registered class.

    ``verify=False`` skips the files' checksums, as in :meth:`BaseIndex.load`.

    Raises
    ------
    FormatVersionError
        Written by a newer (or unknown) format version.
    CatalogError
        Missing, corrupt or truncated files, or a class name that is not
        registered (register it with :func:`register_index` before loading).
    """
    directory = Path(path)
    manifest = read_manifest(directory, verify=verify)  # read and hashed once
    cls = _registered_class(manifest["name"], directory)
    index: Index = cls._from_manifest(directory, manifest)
    return index


def read_manifest(directory: Path, *, verify: bool = True) -> dict[str, Any]:
    """Return the manifest of a saved index after checking version and checksums.

    ``verify=False`` checks that every listed file exists but not its checksum.

    Raises
    ------
    FormatVersionError
        The manifest's format version is newer than this library reads.
    CatalogError
        The manifest is missing or malformed, or a file is missing or does not
        match its checksum.
    """
    manifest_path = directory / MANIFEST_NAME
    if not manifest_path.is_file():
        raise CatalogError(
            f"{directory} is not a saved index: {MANIFEST_NAME} is missing; "
            "pass the directory written by index.save(path)"
        )
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CatalogError(
            f"{manifest_path} is not valid JSON ({exc}); the index is corrupt"
        ) from exc
    if not isinstance(manifest, dict) or manifest.get("format") != _FORMAT_TAG:
        raise CatalogError(f"{manifest_path} is not a visualsim index manifest")
    version = manifest.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise FormatVersionError(
            f"{manifest_path} has an unknown format version {version!r}; the index is corrupt"
        )
    if version > FORMAT_VERSION:
        raise FormatVersionError(
            f"{directory} was written in index format version {version}, but this visualsim "
            f"reads versions up to {FORMAT_VERSION}; upgrade visualsim to load it"
        )
    for key in ("name", "config", "count", "next_label", "files"):
        if key not in manifest:
            raise CatalogError(f"{manifest_path} lacks {key!r}; the index is corrupt")
    files = manifest["files"]
    if not isinstance(files, dict):
        raise CatalogError(f"{manifest_path}: 'files' is not a mapping; the index is corrupt")
    for rel, digest in files.items():
        file = directory / rel
        if not file.is_file():
            raise CatalogError(f"{directory}: {rel} is missing; the index is incomplete")
        if verify and sha256_file(file) != digest:
            raise CatalogError(
                f"{file} does not match its checksum (truncated or modified); "
                "save the index again from its source"
            )
    return manifest


def load_array(path: Path) -> np.ndarray:
    """Return the ``.npy`` array at ``path``, never unpickling.

    Raises
    ------
    CatalogError
        Missing, truncated, or an object array.
    """
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise CatalogError(f"cannot read {path}: {exc}") from exc


def save_array(path: Path, array: np.ndarray) -> None:
    """Write ``array`` to ``path`` as ``.npy`` without pickling."""
    np.save(path, np.ascontiguousarray(array), allow_pickle=False)


def _registered_class(name: Any, directory: Path) -> Any:
    if not isinstance(name, str):
        raise CatalogError(f"{directory}: index name {name!r} is not a string")
    try:
        return INDEXES.get(name)
    except ConfigError as exc:
        raise CatalogError(f"cannot load {directory}: {exc}") from exc


def _check_replaceable(target: Path) -> None:
    if not target.exists() and not target.is_symlink():
        return
    if target.is_dir() and ((target / MANIFEST_NAME).is_file() or not any(target.iterdir())):
        return
    raise CatalogError(
        f"refusing to overwrite {target}: it exists and is not a saved index; "
        "choose another path or remove it"
    )


__all__ = [
    "FORMAT_VERSION",
    "INDEXES",
    "BaseIndex",
    "Id",
    "IdMap",
    "Index",
    "ReadWriteLock",
    "check_ids",
    "check_k",
    "check_vectors",
    "load_array",
    "load_index",
    "make_index",
    "read_manifest",
    "register_index",
    "save_array",
]
