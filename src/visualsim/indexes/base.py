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
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeAlias, TypeVar, runtime_checkable

import numpy as np
from numpy.typing import ArrayLike

from .. import persistence as P
from ..errors import (
    CatalogError,
    ConfigError,
    DuplicateIdError,
    InvalidVectorsError,
    NotFittedError,
    UnknownIdError,
    VisualsimError,
)
from ..ids import Id, check_ids
from ..ids import preview as _preview
from ..registry import Registry
from ..validation import check_int, check_k, check_vectors

PathLike: TypeAlias = "str | os.PathLike[str]"

FORMAT_VERSION = P.format_of("index").version
"""Version of the on-disk layout written by :meth:`BaseIndex.save`."""

MANIFEST_NAME = P.format_of("index").name
_IDS_FILE = "ids.json"
_LABELS_FILE = "labels.npy"

_Self = TypeVar("_Self", bound="BaseIndex")
_T = TypeVar("_T")


INDEXES: Registry[type] = Registry(
    "index",
    builtins={
        "flat": "visualsim.indexes.faiss:FlatIndex",
        "ivf": "visualsim.indexes.faiss:IVFIndex",
        "hnsw": "visualsim.indexes.faiss:HNSWIndex",
        "ivfpq": "visualsim.indexes.faiss:IVFPQIndex",
        "sklearn": "visualsim.indexes.sklearn:SklearnIndex",
        "sharded": "visualsim.indexes.sharded:ShardedIndex",
        "milvus": "visualsim.indexes.milvus:MilvusIndex",
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
    is_exact: ClassVar[bool]
    """``True`` promises that :meth:`search` equals brute-force cosine search.

    A catalogue then scores its own stored vectors exactly and keeps no copy
    in the index (the index object only names the backend).
    """
    retrains: ClassVar[bool]
    """``True``: a fresh index built over the same vectors is better than an
    updated one (it learns from them, as IVF's k-means does), so a catalogue's
    ``compact`` rebuilds it even when nothing was removed."""
    filters_natively: ClassVar[bool]
    """``True`` promises filtering inside the backend: ``add(vectors, ids,
    metadata=[...])`` stores each item's fields and ``search(queries, k,
    where=expr)`` returns only matching items. A catalogue then hands it every
    item, update and filter instead of keeping its own sealed/delta segments."""

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

    def save(self, path: PathLike, *, vectors: bool = True) -> None:
        """Write the index to the directory ``path``."""
        ...


# --------------------------------------------------------------------------- ids


class IdMap:
    """Caller ids ↔ internal ``int64`` labels, in insertion order.

    Labels are handed out increasing from 0 and never reused, so sorting by
    label is sorting by insertion order (how every index breaks score ties).
    An id removed and added back gets a new label: it counts as the newest.

    While the ids are exactly the labels ``0, 1, 2, ...`` (a catalogue's rows)
    the map keeps no dictionaries, only their count: two dictionaries of a
    million entries are about 200 MB. The first other id or a removal builds them.
    """

    def __init__(self) -> None:
        self._label_of: dict[Id, int] | None = None  # None: ids are labels 0..n-1
        self._id_at: dict[int, Id] | None = None  # sparse: removed labels leave no hole
        self._next = 0

    def _dicts(self) -> tuple[dict[Id, int], dict[int, Id]]:
        """The two dictionaries, built from the count while ids were labels."""
        if self._label_of is None or self._id_at is None:
            ids: list[int] = list(range(self._next))
            label_of: dict[Id, int] = dict(zip(ids, ids, strict=True))
            id_at: dict[int, Id] = dict(zip(ids, ids, strict=True))
            self._label_of, self._id_at = label_of, id_at
        return self._label_of, self._id_at

    @property
    def rows_mode(self) -> bool:
        """Whether the ids are exactly the labels ``0..len-1`` (no dictionaries kept)."""
        return self._label_of is None

    def __len__(self) -> int:
        return self._next if self._label_of is None else len(self._label_of)

    def __contains__(self, id_: object) -> bool:
        if isinstance(id_, (bool, np.bool_)):
            return False  # never an id (True == 1 would find label 1)
        if self._label_of is None:
            return _is_int(id_) and 0 <= int(id_) < self._next  # type: ignore[call-overload]
        try:
            return id_ in self._label_of
        except TypeError:
            return False

    @property
    def ids(self) -> list[Id]:
        """Stored ids in insertion order."""
        if self._label_of is None:
            return list(range(self._next))
        return list(self._label_of)

    @property
    def labels(self) -> np.ndarray:
        """Labels of the stored ids, in insertion (= increasing) order, ``int64``."""
        if self._label_of is None:
            return np.arange(self._next, dtype=np.int64)
        return np.fromiter(self._label_of.values(), dtype=np.int64, count=len(self._label_of))

    @property
    def next_label(self) -> int:
        """The label the next added id will get."""
        return self._next

    def check_new(self, ids: Sequence[Id]) -> None:
        """Raise :class:`DuplicateIdError` if any of ``ids`` is already stored."""
        stored = [i for i in ids if i in self]
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
        if self._label_of is None and _are_labels(ids, self._next):
            self._next += len(ids)  # still ids == labels: nothing to store
            return labels
        label_of, id_at = self._dicts()
        for id_, label in zip(ids, labels.tolist(), strict=True):
            label_of[id_] = label
            id_at[label] = id_
        self._next += len(ids)
        return labels

    def labels_of(self, ids: Sequence[Id]) -> np.ndarray:
        """Return the labels of stored ``ids``.

        Raises
        ------
        UnknownIdError
            Naming every id that is not stored.
        """
        missing = [i for i in ids if i not in self]
        if missing:
            raise UnknownIdError(
                f"id(s) {_preview(missing)} are not in the index; nothing was removed. "
                "Check `index.ids` for what is stored"
            )
        if self._label_of is None:
            return np.fromiter((int(i) for i in ids), dtype=np.int64, count=len(ids))
        label_of = self._label_of
        return np.fromiter((label_of[i] for i in ids), dtype=np.int64, count=len(ids))

    def discard(self, ids: Sequence[Id]) -> None:
        """Forget stored ``ids`` (their labels are never reused)."""
        if not len(ids):
            return
        label_of, id_at = self._dicts()
        for id_ in ids:
            label = label_of.pop(id_)
            del id_at[label]

    def lookup(self, labels: np.ndarray) -> list[list[Id]]:
        """Return the caller ids for a 2-d array of labels, row by row."""
        if self._label_of is None:
            return [list(row) for row in labels.tolist()]
        id_at = self._id_at
        assert id_at is not None
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
        if isinstance(next_label, bool) or not isinstance(next_label, numbers.Integral):
            raise CatalogError(f"stored next_label {next_label!r} is not an integer")
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
        out._next = int(next_label)
        n = len(clean)
        if next_label == n and _are_labels(clean, 0):
            return out  # labels are increasing in 0..n-1: they are exactly 0..n-1, as the ids
        label_list = labels.tolist()
        out._label_of = dict(zip(clean, label_list, strict=True))
        out._id_at = dict(zip(label_list, clean, strict=True))
        return out


def _are_labels(ids: Sequence[Any], start: int) -> bool:
    """Whether ``ids`` are exactly the ints ``start, start + 1, ...`` (not bools)."""
    n = len(ids)
    if not n:
        return True
    first, last = ids[0], ids[-1]
    if type(first) is not int or type(last) is not int or first != start or last != start + n - 1:
        return False
    if isinstance(ids, range):
        return ids.step == 1
    seq = ids if isinstance(ids, list) else list(ids)
    return seq == list(range(start, start + n)) and all(type(i) is int for i in seq)


def _is_int(value: object) -> bool:
    """An integer id (Python or NumPy), not a boolean: what equals a label as a dict key."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


# --------------------------------------------------------------------------- locking


class ReadWriteLock:
    """Many readers or one writer, phase-fair: writers and readers take turns.

    A waiting writer holds back readers that come after it, so a stream of
    readers never starves a writer; and when a writer lets go, every reader
    that was waiting goes in before the next writer, so a stream of writers
    (one item added after another) never starves the readers either.

    Not reentrant: a holder must not acquire it again.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0
        self._readers_waiting = 0
        self._admit = 0  # readers let in ahead of waiting writers (those waiting at a release)

    @contextlib.contextmanager
    def read(self) -> Iterator[None]:
        """Hold the lock shared for the ``with`` block."""
        with self._cond:
            self._readers_waiting += 1
            try:
                while self._writer or (self._writers_waiting and not self._admit):
                    self._cond.wait()
            finally:
                self._readers_waiting -= 1
                if not self._readers_waiting:
                    self._cond.notify_all()  # a writer may wait on the last admitted reader
            if self._admit:
                self._admit -= 1
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
                while self._writer or self._readers or (self._admit and self._readers_waiting):
                    self._cond.wait()
            finally:
                self._writers_waiting -= 1
            self._writer, self._admit = True, 0
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._admit = self._readers_waiting  # their turn, before the next writer
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
    is_exact: ClassVar[bool] = False
    """Whether search results are guaranteed to equal brute force (see :class:`Index`)."""
    retrains: ClassVar[bool] = False
    """Whether rebuilding over the same vectors improves the index (see :class:`Index`)."""
    filters_natively: ClassVar[bool] = False
    """Whether ``add`` takes ``metadata=`` and ``search`` takes ``where=`` (see :class:`Index`)."""
    exact: ClassVar[bool] = False
    """The same as :attr:`is_exact` (its earlier name); setting either sets both."""
    can_save_without_vectors: ClassVar[bool] = False
    """Whether ``save(path, vectors=False)`` leaves the vectors out (HNSW: its graph alone)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # one flag under two names: a subclass that sets either one sets both
        if "is_exact" in vars(cls):
            cls.exact = bool(cls.is_exact)
        elif "exact" in vars(cls):
            cls.is_exact = bool(cls.exact)
        if "supports_where" in vars(cls) and "filters_natively" not in vars(cls):
            cls.filters_natively = bool(vars(cls)["supports_where"])

    def __init__(self, *, dim: int | None = None) -> None:
        check_int("dim", dim, minimum=1, maximum=P.MAX_DIM, allow_none=True)
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

    @property
    def next_label(self) -> int:
        """The internal ``int64`` label the next added vector will get.

        Labels count every vector ever added (removed ones included), from 0;
        :meth:`search_labels` answers in them.
        """
        return self._ids.next_label

    @property
    def labels(self) -> np.ndarray:
        """The internal ``int64`` labels of the stored vectors, in insertion (= increasing) order.

        What a backend's ``_load_state`` pairs with the rows it saved in that order.
        """
        return self._ids.labels

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
        return self._when_ready(lambda: self._search_locked(q, k))

    def _when_ready(self, read: Callable[[], _T]) -> _T:
        """Run ``read`` under the read lock once the index is trained (training it if needed)."""
        while True:
            with self._lock.read():
                if self._is_ready():
                    return read()
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

        def read() -> tuple[np.ndarray, np.ndarray]:
            kk = min(k, len(self._ids))
            if not len(q):
                return np.empty((0, kk), np.float32), np.empty((0, kk), np.int64)
            if allowed is None:
                scores, labels = self._search(q, kk)
            else:
                scores, labels = self._search_allowed(q, kk, np.asarray(allowed, bool))
            return _sorted_padded(scores, labels, len(q), kk)

        return self._when_ready(read)

    def stored_vectors(self, ids: Sequence[Id]) -> np.ndarray | None:
        """Return the unit vectors stored under ``ids``, or ``None`` if the backend keeps none.

        A ``(len(ids), dim)`` ``float32`` array from backends that keep the
        vectors (flat, HNSW, scikit-learn); ``None`` from those that keep only
        codes or lists, and for no ids. :func:`verify_index` compares them
        with a catalogue's.

        Raises
        ------
        UnknownIdError
            Naming the ids that are not stored.
        """
        wanted = check_ids(ids, unique=False)
        with self._lock.read():
            missing = [i for i in wanted if i not in self._ids]
            if missing:
                raise UnknownIdError(
                    f"id(s) {_preview(missing)} are not in the index; check `index.ids` "
                    "for what is stored"
                )
            return self._stored_rows(self._ids.labels_of(wanted))

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

    def save(self, path: PathLike, *, vectors: bool = True) -> None:
        """Write the index to the directory ``path``, atomically.

        The directory holds ``manifest.json`` (format version, class name,
        config, dim, count, SHA-256 of every file), ``ids.json``,
        ``labels.npy`` and the backend's own files. It is written to a
        temporary sibling and renamed into place, so a crash never leaves a
        half-written index at ``path``. An existing index at ``path`` is
        replaced; any other existing file or non-empty directory is refused.

        ``vectors=False`` asks a backend that can (:attr:`can_save_without_vectors`)
        to leave its copy of the vectors out, for a caller that keeps them
        itself (a catalogue: its chunks hold them already); loaded back, such
        an index answers only once ``attach_vectors`` has given them back.
        Other backends save everything.

        Raises
        ------
        ConfigError
            The class is not registered (see :func:`register_index`).
        CatalogError
            ``path`` exists and is not a saved index.
        """
        spec = INDEXES.to_spec(self)
        target = Path(path)
        with P.atomic_dir(target, kind="index") as tmp:
            with self._lock.read():
                if not vectors and self.can_save_without_vectors:
                    state = self._save_without_vectors(tmp)
                else:
                    state = self._save_state(tmp)
                ids, labels, next_label = self._ids.state()
                count = len(ids)
                dim = self._dim
            P.write_text(tmp / _IDS_FILE, json.dumps(ids))
            P.write_npy(tmp / _LABELS_FILE, labels)
            P.write_manifest(
                tmp,
                "index",
                {
                    "name": spec["name"],
                    "config": spec["config"],
                    "dim": dim,
                    "count": count,
                    "next_label": next_label,
                    "state": state,
                },
            )

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
        return P.read_consistent(
            Path(path),
            lambda d: cls._from_manifest(d, read_manifest(d, verify=verify)),
            kind="index",
        )

    @classmethod
    def _from_manifest(cls: type[_Self], directory: Path, manifest: Mapping[str, Any]) -> _Self:
        registered = _registered_class(manifest["name"], directory)
        if not issubclass(registered, cls):
            raise CatalogError(
                f"{directory} holds a {manifest['name']!r} index ({registered.__qualname__}), "
                f"not a {cls.__qualname__}; use visualsim.indexes.load_index to load it"
            )
        try:
            index = registered.from_config(manifest["config"])
        except ConfigError as exc:
            raise CatalogError(
                f"{directory / MANIFEST_NAME}: field 'config' is not valid for a "
                f"{manifest['name']!r} index: {exc}"
            ) from None
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

    def _stored_rows(self, labels: np.ndarray) -> np.ndarray | None:
        """Return the unit vectors stored under ``labels``, or ``None`` if not kept.

        What :meth:`stored_vectors` returns (read lock held); backends that
        keep the vectors (flat, HNSW, scikit-learn) return them.
        """
        return None

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

    def _save_without_vectors(self, directory: Path) -> dict[str, Any]:
        """``_save_state`` without the vectors (where ``can_save_without_vectors``)."""
        return self._save_state(directory)

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
        where = str(directory / MANIFEST_NAME)
        count = int(manifest["count"])
        ids = P.read_json(P.safe_child(directory, _IDS_FILE))
        if not isinstance(ids, list) or len(ids) != count:
            raise CatalogError(
                f"{directory / _IDS_FILE} must be a list of {count} ids (the manifest's count); "
                "the index is corrupt"
            )
        labels = P.load_npy(
            P.safe_child(directory, _LABELS_FILE), dtypes=("int64",), shape=(count,)
        )
        self._ids = IdMap.from_state(ids, labels, int(manifest["next_label"]))
        dim = manifest["dim"]
        if dim is None and count:
            raise CatalogError(f"{where}: field 'dim' is null but {count} vectors are stored")
        self._dim = P.field_int(where, "dim", dim, minimum=1, maximum=P.MAX_DIM, allow_none=True)
        try:
            self._load_state(directory, manifest["state"])
        except VisualsimError:
            raise
        except (OSError, ValueError, RuntimeError, KeyError, TypeError, IndexError) as exc:
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
    if s.shape[1] == k and (lab >= 0).all() and (np.diff(s, axis=1) < 0).all():
        return s, lab  # full, best first and no ties: already in the promised order
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
    A load that races a save to the same path is retried, so it returns the
    old or the new index, complete.

    Raises
    ------
    FormatVersionError
        Written by a newer (or unknown) format version.
    CatalogError
        Missing, corrupt or truncated files, a field of the wrong type or out
        of range, a name outside the folder, or a class name that is not
        registered (register it with :func:`register_index` before loading).
    """

    def read(directory: Path) -> Index:
        manifest = read_manifest(directory, verify=verify)  # read and hashed once
        cls = _registered_class(manifest["name"], directory)
        index: Index = cls._from_manifest(directory, manifest)
        return index

    return P.read_consistent(Path(path), read, kind="index")


MAX_LABEL_GAP = 1 << 24
"""How far ``next_label`` may run past the stored count in a saved index (removed labels)."""


def read_manifest(directory: Path, *, verify: bool = True) -> dict[str, Any]:
    """Return the manifest of a saved index after checking every field and file.

    ``verify=False`` checks that every listed file exists inside the folder
    but not its checksum.

    Raises
    ------
    FormatVersionError
        The manifest's format version is newer than this library reads.
    CatalogError
        Naming the file and field: the manifest is missing or malformed, a
        field has the wrong type or is out of range, a listed file is outside
        the folder, missing, or does not match its checksum.
    """
    root = Path(directory)
    if not os.path.lexists(root / MANIFEST_NAME) and os.path.isdir(root):
        raise CatalogError(
            f"{root} is not a saved index: {MANIFEST_NAME} is missing; "
            "pass the directory written by index.save(path)"
        )
    manifest = P.read_manifest(
        root,
        "index",
        verify=False,  # fields first; checksums (reading every byte) once they make sense
        required=("name", "config", "count", "next_label"),
    )
    where = str(root / MANIFEST_NAME)
    P.field_str(where, "name", manifest["name"], max_len=200)
    P.field_dict(where, "config", manifest["config"])
    count = P.field_int(where, "count", manifest["count"], minimum=0, maximum=P.MAX_COUNT)
    assert count is not None
    P.field_int(
        where,
        "next_label",
        manifest["next_label"],
        minimum=count,
        maximum=min(P.MAX_COUNT, count * 64 + MAX_LABEL_GAP),
    )
    P.field_int(where, "dim", manifest.get("dim"), minimum=1, maximum=P.MAX_DIM, allow_none=True)
    manifest.setdefault("dim", None)
    manifest["state"] = P.field_dict(where, "state", manifest.get("state") or {})
    if verify:
        P.check_files(root, manifest["files"], verify=True, source=where)
    return manifest


def load_array(
    path: Path,
    *,
    dtypes: Sequence[str] = P.NUMERIC_DTYPES,
    shape: Sequence[int | None] | None = None,
    finite: bool = False,
) -> np.ndarray:
    """Return the ``.npy`` array at ``path`` (see :func:`visualsim.persistence.load_npy`).

    Raises
    ------
    CatalogError
        Missing, truncated, a header that does not match the file, an object
        or structured array, another dtype or shape than asked for.
    """
    return P.load_npy(path, dtypes=dtypes, shape=shape, finite=finite)


def save_array(path: Path, array: np.ndarray) -> None:
    """Write ``array`` to ``path`` as ``.npy`` without pickling, fsynced."""
    P.write_npy(path, array)


def verify_index(
    index: Index,
    vectors: ArrayLike,
    ids: Sequence[Id],
    *,
    sample: int = 64,
    seed: int = 0,
    source: str = "the index",
    read_rows: Callable[[np.ndarray], np.ndarray] | None = None,
) -> None:
    """Check that ``index`` holds exactly ``ids`` and finds their ``vectors``.

    The check a catalogue runs on load (``verify=True``): the index stores
    the same ids (as a set) and dimension; for a sample of rows, an exact
    index returns the row's own id at rank 1 (or an id tied with it: a
    duplicate vector), and an approximate one finds at least 80% of the
    sampled ids in its top 10. A stored copy of the vectors, where the index
    keeps one, must equal them. A rotated or shuffled id map, an index built
    from other vectors or ids, or a truncated one fails.

    Parameters
    ----------
    index
        The loaded index.
    vectors
        ``(len(ids), dim)`` stored vectors, aligned with ``ids`` (float16 is fine).
    ids
        The catalogue's ids.
    sample
        How many rows to check by search (all when fewer).
    seed
        Seed of the sample.
    source
        What to call the index in messages (its folder).
    read_rows
        Return the vectors of the given (increasing) rows of ``vectors``, read
        another way than indexing it (a catalogue reads its files, so a memory
        map of them is left untouched).

    Raises
    ------
    CatalogError
        Naming what disagrees.
    """
    x = np.asarray(vectors)
    wanted = check_ids(ids, unique=False)
    if x.ndim != 2 or len(x) != len(wanted):
        raise CatalogError(
            f"{source}: {len(wanted)} ids but vectors of shape {x.shape}; the catalogue is corrupt"
        )
    stored = index.ids
    if len(stored) != len(wanted) or set(stored) != set(wanted):
        have = set(stored)
        missing = [i for i in wanted if i not in have][:5]
        extra = sorted(have - set(wanted), key=repr)[:5]
        raise CatalogError(
            f"{source} holds {len(stored)} ids, the catalogue {len(wanted)}; missing from the "
            f"index: {missing}, not in the catalogue: {extra}; rebuild the index"
        )
    if not len(wanted):
        return
    if index.dim is not None and index.dim != x.shape[1]:
        raise CatalogError(
            f"{source} holds {index.dim}-dimensional vectors, the catalogue {x.shape[1]}"
        )
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(wanted), size=min(int(sample), len(wanted)), replace=False))
    picked = x[rows] if read_rows is None else read_rows(rows)
    q = check_vectors(np.asarray(picked, dtype=np.float32), name="stored vectors")
    own = [wanted[r] for r in rows.tolist()]
    stored_vectors = getattr(index, "stored_vectors", None)
    if callable(stored_vectors):
        got = stored_vectors(own)
        if got is not None and not np.allclose(got, q, atol=2e-3):
            bad = int(np.flatnonzero(~np.isclose(got, q, atol=2e-3).all(axis=1))[0])
            raise CatalogError(
                f"{source} stores another vector for id {own[bad]!r} than the catalogue; "
                "the index does not belong to these vectors: rebuild it"
            )
    exact = bool(getattr(index, "is_exact", False))
    scores, found = index.search(q, k=1 if exact else min(10, len(wanted)))
    row_of: dict[Id, int] | None = None

    def same_vector(candidate: Id, n: int) -> bool:
        """Whether ``candidate``'s catalogue vector equals query ``n`` (a duplicate item)."""
        nonlocal row_of
        if row_of is None:
            row_of = {id_: r for r, id_ in enumerate(wanted)}
        r = row_of.get(candidate)
        if r is None:
            return False
        one = x[r] if read_rows is None else read_rows(np.array([r]))[0]
        other = np.asarray(one, dtype=np.float64)
        norm = float(np.linalg.norm(other))
        return norm > 0 and bool(np.allclose(other / norm, q[n], atol=2e-3))

    hits = 0
    for n, (target, row) in enumerate(zip(own, found, strict=True)):
        if exact:
            if row[0] != target and not same_vector(row[0], n):
                raise CatalogError(
                    f"{source}: searching id {target!r}'s own vector returns {row[0]!r} first "
                    f"(score {float(scores[n][0]):.4f}); the index's ids do not match its "
                    "vectors (a damaged or swapped id map): rebuild the index"
                )
            hits += 1
        elif target in row or any(same_vector(c, n) for c in row[:1]):
            hits += 1
    if not exact and hits < 0.8 * len(own):
        raise CatalogError(
            f"{source}: only {hits} of {len(own)} sampled items are found by their own vector; "
            "the index's ids do not match its vectors: rebuild the index"
        )


def _registered_class(name: Any, directory: Path) -> Any:
    if not isinstance(name, str):
        raise CatalogError(f"{directory}: index name {name!r} is not a string")
    try:
        return INDEXES.get(name)
    except ConfigError as exc:
        raise CatalogError(f"cannot load {directory}: {exc}") from exc


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
    "verify_index",
]
