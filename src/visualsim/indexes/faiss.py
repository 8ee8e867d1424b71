"""FAISS indexes: exact flat, IVF, HNSW and IVF-PQ, all under one contract.

FAISS is imported inside the methods that need it, never when this module is
imported, so ``import visualsim`` stays light. Every index here scores with the
inner product of unit vectors (cosine similarity); see :mod:`visualsim.indexes.base`
for the contract and ``docs/indexes.md`` for choosing one.
"""

from __future__ import annotations

import math
import mmap
import re
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .. import persistence as P
from ..errors import CatalogError, ConfigError, NotFittedError
from ..validation import check_int
from .base import BaseIndex, load_array, register_index, save_array

_INDEX_FILE = "index.faiss"
_GRAPH_FILE = "graph.faiss"
_ATTACH_BLOCK = 16_384
_PENDING_FILE = "pending.faiss"
_VECTORS_FILE = "vectors.npy"
_VECTOR_LABELS_FILE = "vector_labels.npy"

MAX_FILTERED_EF = 4096
"""Largest ``efSearch`` a filtered HNSW search raises itself to (rarer matches search wider)."""

MIN_POINTS_PER_CENTROID = 39
"""Training vectors FAISS wants per k-means centroid; fewer gives poor centroids."""


def _faiss() -> Any:
    import faiss

    return faiss


MAX_LISTS = 1 << 22
"""Upper bound of ``nlist`` and ``nprobe`` (4M lists)."""

MAX_EF = 1 << 16
"""Upper bound of HNSW ``ef_search`` and ``ef_construction`` (FAISS allocates per candidate)."""

MAX_M = 1024
"""Upper bound of HNSW ``M`` (links per node)."""

MAX_RERANK = 1024
"""Upper bound of IVF-PQ ``rerank`` (candidates re-scored per result)."""


def _check_int(
    name: str, value: Any, *, minimum: int, maximum: int, allow_none: bool = False
) -> None:
    check_int(name, value, minimum=minimum, maximum=maximum, allow_none=allow_none)


def _new_flat(dim: int) -> Any:
    """Return an empty exact inner-product index taking caller labels."""
    faiss = _faiss()
    return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))


def _flat_contents(index: Any) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(vectors, labels)`` of an ``IndexIDMap2`` over a flat-storage index."""
    faiss = _faiss()
    inner = faiss.downcast_index(index.index)
    storage = faiss.downcast_index(inner.storage) if hasattr(inner, "storage") else inner
    n = int(storage.ntotal)
    x = storage.reconstruct_n(0, n) if n else np.empty((0, index.d), dtype=np.float32)
    return np.ascontiguousarray(x, dtype=np.float32), faiss.vector_to_array(index.id_map)


def _selector(allowed: np.ndarray) -> tuple[Any, np.ndarray]:
    """Return a FAISS bitmap selector over labels, and the bitmap it points into.

    Keep the bitmap alive for as long as the selector is used.
    """
    faiss = _faiss()
    packed = np.packbits(np.ascontiguousarray(allowed, dtype=bool), bitorder="little")
    return faiss.IDSelectorBitmap(len(allowed), faiss.swig_ptr(packed)), packed


def _write(index: Any, path: Path) -> None:
    _faiss().write_index(index, str(path))


_READ_LOCK = threading.Lock()


def _has_index(directory: Path, state: Mapping[str, Any], count: int) -> bool:
    has = P.field_bool(str(directory / "manifest.json"), "state.has_index", state.get("has_index"))
    if count and not has:
        raise CatalogError(
            f"{directory}: {count} vectors are stored but the manifest says there is no "
            f"{_INDEX_FILE}; the index is incomplete"
        )
    return has


def _reconstruct(index: Any, labels: np.ndarray) -> np.ndarray | None:
    """Return the vectors an ``IndexIDMap2`` stores under ``labels`` (``None`` if empty)."""
    if index is None or not len(labels):
        return None
    return np.stack([index.reconstruct(int(label)) for label in labels]).astype(np.float32)


def _read(
    directory: Path,
    name: str,
    expected: tuple[str, ...],
    dim: int | None,
    labels: np.ndarray,
) -> Any:
    """Read a FAISS file, checking its type, dimension, size and labels.

    FAISS is told to allocate no vector larger than the file could hold, so
    a damaged header is a ``CatalogError``, never a huge allocation; the ids
    FAISS holds must be exactly ``labels`` (the stored labels), and an HNSW
    graph or IVF quantizer must be consistent, so no search can index out of
    range.

    FAISS is also told not to rebuild an IVF-PQ index's precomputed table
    (``IO_FLAG_SKIP_PRECOMPUTE_TABLE``). That table is never written: FAISS
    recomputes it on read at ``nlist * m * 2**nbits`` floats, a size the file
    does not grow with, and since 1.15 refuses the read when that size passes
    the vector limit above, so a sound, searched IVF-PQ catalogue of a few
    thousand 2048-d items could not be loaded back. Scoring by inner product
    FAISS never uses the table (it builds one for L2 only), so skipping it
    changes no result, and nothing is allocated from those header fields.
    """
    path = P.safe_child(directory, name)
    index = _read_file(path)
    return _check_read(path, index, expected, dim, labels)


def _read_file(path: Path, flags: int = 0) -> Any:
    """Read a FAISS file with allocations bounded by its size (see :func:`_read`)."""
    faiss = _faiss()
    size = path.stat().st_size
    _refuse_external_lists(path)
    with _READ_LOCK:
        limit = faiss.get_deserialization_vector_byte_limit()
        loops = faiss.get_deserialization_loop_limit()
        faiss.set_deserialization_vector_byte_limit(8 * size + (1 << 20))
        faiss.set_deserialization_loop_limit(size + (1 << 16))
        try:
            return faiss.read_index(str(path), faiss.IO_FLAG_SKIP_PRECOMPUTE_TABLE | flags)
        except (RuntimeError, MemoryError) as exc:
            raise CatalogError(
                f"cannot read FAISS index {path}: {str(exc)[:300]}; the file is damaged"
            ) from None
        finally:
            faiss.set_deserialization_vector_byte_limit(limit)
            faiss.set_deserialization_loop_limit(loops)


def _check_read(
    path: Path, index: Any, expected: tuple[str, ...], dim: int | None, labels: np.ndarray
) -> Any:
    """Check a FAISS index read from ``path`` (see :func:`_read`); return it."""
    faiss = _faiss()
    kind = type(index).__name__
    if kind not in expected:
        raise CatalogError(f"{path} holds a FAISS {kind}, expected {' or '.join(expected)}")
    if dim is not None and index.d != dim:
        raise CatalogError(f"{path} holds {index.d}-dimensional vectors, manifest says {dim}")
    count = len(labels)
    if index.ntotal != count:
        raise CatalogError(f"{path} holds {index.ntotal} vectors, manifest says {count}")
    if kind == "IndexIDMap2":
        held = faiss.vector_to_array(index.id_map)
        inner = faiss.downcast_index(index.index)
        if inner.ntotal != count or inner.d != index.d:
            raise CatalogError(f"{path}: the id map and the index it wraps disagree in size")
        if type(inner).__name__ not in ("IndexFlatIP", "IndexHNSWFlat"):
            raise CatalogError(
                f"{path}: the id map wraps a FAISS {type(inner).__name__}; visualsim writes "
                "IndexFlatIP or IndexHNSWFlat there"
            )
        if isinstance(inner, faiss.IndexHNSWFlat):
            _check_hnsw(path, inner)
    else:
        held = _ivf_labels(path, index)
    if index.metric_type != faiss.METRIC_INNER_PRODUCT:
        raise CatalogError(f"{path}: the FAISS index does not score by inner product (cosine)")
    if len(held) != count or not np.array_equal(np.sort(held), labels):
        raise CatalogError(
            f"{path}: the labels FAISS holds are not the {count} stored labels (out of range, "
            "repeated or missing); the index is damaged: rebuild it"
        )
    return index


_ON_DISK_LISTS = re.compile(rb"ilod.{6}\x00\x00", re.DOTALL)
"""FAISS's on-disk inverted lists: fourcc ``ilod``, then ``nlist`` (uint64, < 2**48 to be read).

A larger ``nlist`` makes FAISS fail allocating the lists before it opens the
file they name; a smaller one is caught here. By chance in vector data the
pattern occurs once in 2**48 byte positions.
"""


def _refuse_external_lists(path: Path) -> None:
    """Refuse a FAISS file with on-disk inverted lists: FAISS would open the file they name.

    ``OnDiskInvertedLists`` store a file name, which ``faiss.read_index``
    opens (read-write) wherever it points; visualsim never writes them, so
    a saved index holding one is refused before FAISS sees it.
    """
    if not path.stat().st_size:
        return
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
        if _ON_DISK_LISTS.search(data):
            raise CatalogError(
                f"{path} holds FAISS on-disk inverted lists, which name a file outside "
                "the folder; visualsim does not write or read them: rebuild the index"
            )


def _check_hnsw(path: Path, index: Any) -> None:
    """Refuse an HNSW graph whose links or levels point outside the index."""
    faiss = _faiss()
    hnsw = index.hnsw
    n = int(index.ntotal)
    if index.storage is None:
        raise CatalogError(f"{path}: the HNSW graph has no vectors; the index is incomplete")
    storage = faiss.downcast_index(index.storage)
    levels = faiss.vector_to_array(hnsw.levels)
    offsets = faiss.vector_to_array(hnsw.offsets).astype(np.int64)
    neighbors = faiss.vector_to_array(hnsw.neighbors)
    cum = faiss.vector_to_array(hnsw.cum_nneighbor_per_level).astype(np.int64)
    ok = (
        isinstance(storage, faiss.IndexFlat)
        and storage.d == index.d
        and storage.ntotal == n
        and len(levels) == n
        and len(offsets) == n + 1
        and (n == 0 or (levels.min() >= 1 and levels.max() < len(cum)))
        and offsets[0] == 0
        and offsets[-1] == len(neighbors)
        and (n == 0 or np.array_equal(np.diff(offsets), cum[levels]))
        and (len(neighbors) == 0 or (neighbors.min() >= -1 and neighbors.max() < n))
        and -1 <= int(hnsw.entry_point) < max(n, 1)
        and (n == 0 or int(hnsw.max_level) == int(levels.max()) - 1)
    )
    if not ok:
        raise CatalogError(
            f"{path}: the HNSW graph is inconsistent (links or levels out of range); "
            "the index is damaged: rebuild it"
        )


def _ivf_labels(path: Path, index: Any) -> np.ndarray:
    """Return every label held in an IVF index's lists, checking the quantizer and lists."""
    faiss = _faiss()
    quantizer = faiss.downcast_index(index.quantizer)
    invlists = index.invlists
    if not isinstance(quantizer, faiss.IndexFlat):
        raise CatalogError(f"{path}: the IVF quantizer is a {type(quantizer).__name__}, not flat")
    if (
        quantizer.ntotal != index.nlist
        or quantizer.d != index.d
        or invlists is None
        or invlists.nlist != index.nlist
        or invlists.code_size != index.code_size
    ):
        raise CatalogError(f"{path}: the IVF quantizer or lists do not match the index")
    if isinstance(index, faiss.IndexIVFPQ):
        pq = index.pq
        if (
            pq.d != index.d
            or pq.M * pq.nbits > 8 * index.code_size
            or len(faiss.vector_to_array(pq.centroids)) != pq.d * pq.ksub
        ):
            raise CatalogError(f"{path}: the product quantizer does not match the index")
    parts = []
    for i in range(index.nlist):
        n = invlists.list_size(i)
        if n:
            ids = faiss.rev_swig_ptr(invlists.get_ids(i), n)
            parts.append(np.array(ids, dtype=np.int64))
    return np.concatenate(parts) if parts else np.empty(0, np.int64)


class _VectorStore:
    """Float rows with their (increasing) labels; appends are cheap until the next read."""

    def __init__(self, dim: int) -> None:
        self.x = np.empty((0, dim), dtype=np.float32)
        self.labels = np.empty(0, dtype=np.int64)
        self._chunks: list[tuple[np.ndarray, np.ndarray]] = []

    @property
    def fresh(self) -> bool:
        return not self._chunks

    @property
    def nbytes(self) -> int:
        return int(self.x.nbytes + self.labels.nbytes + sum(c[0].nbytes for c in self._chunks))

    def append(self, x: np.ndarray, labels: np.ndarray) -> None:
        self._chunks.append((x, labels))

    def consolidate(self) -> None:
        if self._chunks:
            self.x = np.concatenate([self.x, *(c[0] for c in self._chunks)])
            self.labels = np.concatenate([self.labels, *(c[1] for c in self._chunks)])
            self._chunks = []

    def remove(self, labels: np.ndarray) -> None:
        self.consolidate()
        keep = ~np.isin(self.labels, labels)
        self.x, self.labels = self.x[keep], self.labels[keep]

    def rows(self, labels: np.ndarray) -> np.ndarray:
        """Return the rows stored under ``labels`` (any shape; needs ``fresh``)."""
        return self.x[np.searchsorted(self.labels, labels)]


@register_index("flat")
class FlatIndex(BaseIndex):
    """Exact search: FAISS ``IndexFlatIP`` (every query against every vector).

    Results equal numpy brute force. Memory is ``4 * dim`` bytes per vector
    plus about 40 bytes of id mapping; a query costs ``n * dim`` multiply-adds,
    batched through BLAS when several queries come together.

    Parameters
    ----------
    dim
        Dimension, if known before the first ``add``.

    Examples
    --------
    >>> import numpy as np
    >>> index = FlatIndex()
    >>> index.add(np.eye(3), ["a", "b", "c"])
    >>> scores, ids = index.search([1.0, 0.2, 0.0], k=2)
    >>> ids
    [['a', 'b']]
    """

    is_exact = True
    retrains = False
    filters_natively = False

    def __init__(self, *, dim: int | None = None) -> None:
        super().__init__(dim=dim)
        self.index_: Any = None

    def _add(self, x: np.ndarray, labels: np.ndarray) -> None:
        if self.index_ is None:
            self.index_ = _new_flat(x.shape[1])
        self.index_.add_with_ids(x, labels)

    def _remove(self, labels: np.ndarray) -> None:
        self.index_.remove_ids(labels)

    def _search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores, labels = self.index_.search(q, k)
        return scores, labels

    def _search_allowed(
        self, q: np.ndarray, k: int, allowed: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        sel, _bitmap = _selector(allowed)
        scores, labels = self.index_.search(q, k, params=_faiss().SearchParameters(sel=sel))
        return scores, labels

    def _save_state(self, directory: Path) -> dict[str, Any]:
        if self.index_ is not None:
            _write(self.index_, directory / _INDEX_FILE)
        return {"has_index": self.index_ is not None}

    def _load_state(self, directory: Path, state: Mapping[str, Any]) -> None:
        if _has_index(directory, state, len(self)):
            self.index_ = _read(
                directory, _INDEX_FILE, ("IndexIDMap2",), self.dim, self._ids.labels
            )

    def _stored_rows(self, labels: np.ndarray) -> np.ndarray | None:
        return _reconstruct(self.index_, labels)


class _TrainedIVF(BaseIndex):
    """Shared by IVF and IVF-PQ: buffer until trained, then a trained FAISS IVF index.

    Until there are enough vectors to train (``min_train_size``), vectors sit in
    an exact flat buffer and searches are exact. The first search (or
    :meth:`train`) with enough vectors trains k-means on everything stored and
    moves it into the IVF index; later ``add`` calls go straight into it.
    """

    is_exact = False  # exact until trained, approximate after
    retrains = True  # k-means learns from the vectors: rebuilding re-clusters them
    filters_natively = False

    def __init__(self, *, nlist: int | None, nprobe: int | None, dim: int | None) -> None:
        _check_int("nlist", nlist, minimum=1, maximum=MAX_LISTS, allow_none=True)
        _check_int("nprobe", nprobe, minimum=1, maximum=MAX_LISTS, allow_none=True)
        super().__init__(dim=dim)
        self.nlist = nlist
        self.nprobe = nprobe
        self.index_: Any = None
        self.nlist_: int | None = None
        self._pending: Any = None

    # ---------------------------------------------------------------- public extras

    @property
    def is_trained(self) -> bool:
        """Whether k-means has run and searches use the inverted lists."""
        return self.index_ is not None

    def nlist_for(self, n: int) -> int:
        """Return the number of lists used when training on ``n`` vectors.

        ``nlist`` if configured; otherwise about ``4 * sqrt(n)``, at most
        ``n / 39`` (so every centroid has its 39 training points) and at least 16.
        """
        if self.nlist is not None:
            return int(self.nlist)
        return max(16, min(round(4 * math.sqrt(n)), n // MIN_POINTS_PER_CENTROID))

    def min_train_size(self, n: int) -> int:
        """Return how many vectors training needs when the index would hold ``n``."""
        return MIN_POINTS_PER_CENTROID * self.nlist_for(n)

    @property
    def nprobe_(self) -> int:
        """Lists scanned per query: ``nprobe`` if set, else ``max(8, nlist_ // 16)``."""
        if self.nlist_ is None:
            raise NotFittedError(f"{type(self).__name__} is not trained yet")
        if self.nprobe is not None:
            return min(int(self.nprobe), self.nlist_)
        return min(self.nlist_, max(8, self.nlist_ // 16))

    def train(self) -> None:
        """Train on the stored vectors now, instead of at the first search.

        Raises
        ------
        NotFittedError
            Fewer vectors are stored than :meth:`min_train_size` asks for; add
            more, lower ``nlist``, or keep searching (exactly) until there are.
        """
        with self._lock.write():
            if self.index_ is not None:
                return
            n = len(self)
            if n < self.min_train_size(n):
                raise NotFittedError(
                    f"{type(self).__name__} needs at least {self.min_train_size(n)} vectors "
                    f"to train (nlist={self.nlist_for(n)}) but holds {n}; add "
                    "more vectors or lower nlist. Until then searches are exact"
                )
            self._train_now()

    # ---------------------------------------------------------------- hooks

    def _make_ivf(self, dim: int, nlist: int, train_x: np.ndarray) -> Any:
        raise NotImplementedError

    def _after_add(self, x: np.ndarray, labels: np.ndarray) -> None:
        """Keep anything else a subclass stores (IVF-PQ's float copy for re-ranking)."""

    def _add(self, x: np.ndarray, labels: np.ndarray) -> None:
        if self.index_ is not None:
            self.index_.add_with_ids(x, labels)
        else:
            if self._pending is None:
                self._pending = _new_flat(x.shape[1])
            self._pending.add_with_ids(x, labels)
        self._after_add(x, labels)

    def _remove(self, labels: np.ndarray) -> None:
        target = self.index_ if self.index_ is not None else self._pending
        target.remove_ids(labels)

    def _is_ready(self) -> bool:
        n = len(self)
        return self.index_ is not None or n < self.min_train_size(n)

    def _prepare(self) -> None:
        if self.index_ is None and len(self) >= self.min_train_size(len(self)):
            self._train_now()

    def _train_now(self) -> None:
        x, labels = _flat_contents(self._pending)
        nlist = self.nlist_for(len(x))
        index = self._make_ivf(x.shape[1], nlist, x)
        index.add_with_ids(x, labels)
        self.index_, self.nlist_, self._pending = index, nlist, None

    def _ivf_search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Search the trained index; rows it leaves short are redone over every list."""
        faiss = _faiss()
        scores, labels = self.index_.search(
            q, k, params=faiss.SearchParametersIVF(nprobe=self.nprobe_)
        )
        short = np.flatnonzero((labels < 0).any(axis=1))
        if len(short):
            everything = faiss.SearchParametersIVF(nprobe=self.nlist_)
            scores[short], labels[short] = self.index_.search(q[short], k, params=everything)
        return scores, labels

    def _search_allowed(
        self, q: np.ndarray, k: int, allowed: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        faiss = _faiss()
        sel, _bitmap = _selector(allowed)
        if self.index_ is None:
            scores, labels = self._pending.search(q, k, params=faiss.SearchParameters(sel=sel))
            return scores, labels
        frac = max(float(allowed.sum()) / max(len(self), 1), 1e-6)
        nlist = int(self.nlist_ or 1)
        nprobe = min(nlist, max(self.nprobe_, math.ceil(self.nprobe_ / frac)))
        scores, labels = self.index_.search(
            q, k, params=faiss.SearchParametersIVF(nprobe=nprobe, sel=sel)
        )
        return scores, labels

    def _save_state(self, directory: Path) -> dict[str, Any]:
        if self.index_ is not None:
            _write(self.index_, directory / _INDEX_FILE)
        elif self._pending is not None:
            _write(self._pending, directory / _PENDING_FILE)
        return {"trained": self.index_ is not None, "nlist_": self.nlist_}

    def _load_state(self, directory: Path, state: Mapping[str, Any]) -> None:
        where = str(directory / "manifest.json")
        trained = P.field_bool(where, "state.trained", state.get("trained", False))
        if trained:
            self.index_ = _read(directory, _INDEX_FILE, self._ivf_types, self.dim, self._ids.labels)
            self.nlist_ = int(self.index_.nlist)
        elif P.safe_child(directory, _PENDING_FILE, must_exist=False).exists():
            self._pending = _read(
                directory, _PENDING_FILE, ("IndexIDMap2",), self.dim, self._ids.labels
            )
        elif len(self):
            raise CatalogError(
                f"{directory}: {len(self)} vectors are stored but neither {_INDEX_FILE} nor "
                f"{_PENDING_FILE} holds them; the index is incomplete"
            )

    _ivf_types: tuple[str, ...] = ()


@register_index("ivf")
class IVFIndex(_TrainedIVF):
    """Inverted-file search (FAISS ``IndexIVFFlat``): k-means lists, scan a few.

    Vectors are clustered into ``nlist`` lists; a query scans the ``nprobe``
    lists whose centroids are closest. Scores are exact for the vectors
    scanned; a neighbour in an unscanned list is missed.

    Training: k-means needs about 39 vectors per list, so the index trains at
    the first search (or :meth:`train`) once it holds ``39 * nlist`` vectors,
    on all of them. **Fallback:** with fewer, vectors stay in an exact flat
    buffer and searches are exact (and as slow as :class:`FlatIndex`). Vectors
    added after training go into the trained lists; the centroids are not
    re-learned, so retrain (a new index) if the data drifts far.

    Parameters
    ----------
    nlist
        Number of lists. More lists: smaller lists, faster queries at the same
        ``nprobe``, slower training, lower recall per probe. ``None`` picks
        ``4 * sqrt(n)`` at training time (capped at ``n / 39``, at least 16).
    nprobe
        Lists scanned per query. More: higher recall, proportionally slower.
        ``None`` uses ``max(8, nlist // 16)`` (about 6% of the data).
    dim
        Dimension, if known before the first ``add``.

    Notes
    -----
    Memory is that of :class:`FlatIndex` (``4 * dim`` bytes per vector) plus
    8 bytes of id per vector and the centroids (``4 * dim * nlist`` bytes).
    """

    _ivf_types = ("IndexIVFFlat",)

    def __init__(
        self, *, nlist: int | None = None, nprobe: int | None = None, dim: int | None = None
    ) -> None:
        super().__init__(nlist=nlist, nprobe=nprobe, dim=dim)

    def _make_ivf(self, dim: int, nlist: int, train_x: np.ndarray) -> Any:
        faiss = _faiss()
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.train(train_x)
        return index

    def _search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if self.index_ is None:
            scores, labels = self._pending.search(q, k)
            return scores, labels
        return self._ivf_search(q, k)


@register_index("ivfpq")
class IVFPQIndex(_TrainedIVF):
    """Compressed inverted-file search (FAISS ``IndexIVFPQ``), optionally re-ranked.

    Like :class:`IVFIndex`, but each vector is stored as ``m`` bytes of product
    quantisation codes (``nbits=8``) instead of ``4 * dim`` bytes of floats,
    so a million 2048-d vectors fit in a few hundred MB. Scores from codes are
    approximations of the cosine; with ``rerank`` the best ``rerank * k``
    candidates are re-scored exactly from a float copy, which restores exact
    scores and most of the recall but costs the float memory again.

    Training needs ``39 * nlist`` vectors and at least ``39 * 2**nbits`` (for
    the codebooks); with fewer, searches are exact over a flat buffer (the
    fallback of :class:`IVFIndex`).

    Parameters
    ----------
    nlist, nprobe
        As in :class:`IVFIndex`.
    m
        Sub-quantisers, i.e. bytes per vector at ``nbits=8``; must divide
        ``dim``. More: better scores and recall, more memory, slower
        training. ``None`` picks ``dim / 8`` (the largest divisor of ``dim``
        at most that).
    nbits
        Bits per sub-quantiser code (4 to 12); 8 is the fast, usual choice.
    rerank
        Re-score the top ``rerank * k`` candidates with exact cosine, keeping
        a float32 copy of every vector (``4 * dim`` bytes each). ``0`` turns it
        off: no float copy, scores are PQ estimates, recall lower. Default 16:
        re-scoring 160 candidates costs little next to the PQ scan, and at 1M
        items (PCA-256, ``m=32``) it lifted recall@10 against exact search in
        that space from 0.717 (``rerank=4``) to 0.967 at about the same speed.
    dim
        Dimension, if known before the first ``add``.

    Notes
    -----
    Memory per vector: ``m * nbits / 8`` bytes of code + 8 bytes of id (+
    ``4 * dim`` with ``rerank``); fixed: centroids ``4 * dim * nlist`` bytes
    and codebooks ``4 * dim * 2**nbits`` bytes. 1M x 2048-d with the defaults
    and ``rerank=0``: 256 MB codes + 8 MB ids + 32 MB centroids + 2 MB
    codebooks.
    """

    _ivf_types = ("IndexIVFPQ",)

    def __init__(
        self,
        *,
        nlist: int | None = None,
        m: int | None = None,
        nbits: int = 8,
        nprobe: int | None = None,
        rerank: int = 16,
        dim: int | None = None,
    ) -> None:
        _check_int("m", m, minimum=1, maximum=P.MAX_DIM, allow_none=True)
        _check_int("dim", dim, minimum=1, maximum=P.MAX_DIM, allow_none=True)  # before dim % m
        _check_int("nbits", nbits, minimum=4, maximum=12)
        _check_int("rerank", rerank, minimum=0, maximum=MAX_RERANK)
        if not 4 <= nbits <= 12:
            raise ConfigError(f"nbits must be between 4 and 12, got {nbits}")
        if m is not None and dim is not None and dim % m:
            raise ConfigError(f"m={m} must divide dim={dim}; pick a divisor of {dim}")
        super().__init__(nlist=nlist, nprobe=nprobe, dim=dim)
        self.m = m
        self.nbits = nbits
        self.rerank = rerank
        self._vectors: _VectorStore | None = None

    def m_for(self, dim: int) -> int:
        """Return the number of sub-quantisers used for ``dim``-dimensional vectors."""
        if self.m is not None:
            if dim % self.m:
                raise ConfigError(f"m={self.m} must divide dim={dim}; pick a divisor of {dim}")
            return int(self.m)
        return max(m for m in range(1, max(1, dim // 8) + 1) if dim % m == 0)

    def min_train_size(self, n: int) -> int:
        """Return how many vectors training needs: ``39 * max(nlist, 2**nbits)``."""
        return MIN_POINTS_PER_CENTROID * max(self.nlist_for(n), 2**self.nbits)

    def _make_ivf(self, dim: int, nlist: int, train_x: np.ndarray) -> Any:
        faiss = _faiss()
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFPQ(
            quantizer, dim, nlist, self.m_for(dim), self.nbits, faiss.METRIC_INNER_PRODUCT
        )
        index.train(train_x)
        return index

    def _after_add(self, x: np.ndarray, labels: np.ndarray) -> None:
        if self.rerank:
            if self._vectors is None:
                self._vectors = _VectorStore(x.shape[1])
            self._vectors.append(x, labels)

    def _remove(self, labels: np.ndarray) -> None:
        super()._remove(labels)
        if self._vectors is not None:
            self._vectors.remove(labels)

    def _is_ready(self) -> bool:
        return super()._is_ready() and (self._vectors is None or self._vectors.fresh)

    def _prepare(self) -> None:
        super()._prepare()
        if self._vectors is not None:
            self._vectors.consolidate()

    def _search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if self.index_ is None:
            scores, labels = self._pending.search(q, k)
            return scores, labels
        if not self.rerank or self._vectors is None:
            return self._ivf_search(q, k)
        candidates = min(len(self), k * self.rerank)
        _, labels = self._ivf_search(q, candidates)
        exact = np.einsum("qd,qkd->qk", q, self._vectors.rows(labels), dtype=np.float32)
        top = np.argsort(-exact, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(exact, top, axis=1), np.take_along_axis(labels, top, axis=1)

    def _save_state(self, directory: Path) -> dict[str, Any]:
        state = super()._save_state(directory)
        if self._vectors is not None:
            self._vectors.consolidate()
            save_array(directory / _VECTORS_FILE, self._vectors.x)
            save_array(directory / _VECTOR_LABELS_FILE, self._vectors.labels)
        return state

    def _load_state(self, directory: Path, state: Mapping[str, Any]) -> None:
        super()._load_state(directory, state)
        if self.rerank and len(self):
            x = load_array(
                P.safe_child(directory, _VECTORS_FILE),
                dtypes=("float32",),
                shape=(len(self), self.dim),
                finite=True,
            )
            labels = load_array(
                P.safe_child(directory, _VECTOR_LABELS_FILE), dtypes=("int64",), shape=(len(self),)
            )
            if not np.array_equal(labels, self._ids.labels):
                raise CatalogError(
                    f"{directory / _VECTOR_LABELS_FILE} does not hold the stored labels"
                )
            self._vectors = _VectorStore(self.dim or 0)
            self._vectors.x, self._vectors.labels = x, labels


@register_index("hnsw")
class HNSWIndex(BaseIndex):
    """Graph search (FAISS ``IndexHNSWFlat``): walk a small-world graph to the neighbours.

    Fast queries at high recall with no training; the price is memory for the
    graph and a slow build. HNSW cannot delete: :meth:`remove` rebuilds the
    graph from the remaining vectors (read back from the index, no second
    copy is kept), which costs as much as adding them all again; batch removals.

    Parameters
    ----------
    M
        Links per node. More: higher recall at the same ``ef_search``, more
        memory (about ``8 * M`` bytes per vector on top of the ``4 * dim``
        bytes of floats), slower build.
    ef_search
        Candidates kept while searching (raised to ``k`` when smaller). More:
        higher recall, slower queries. Default 64.
    ef_construction
        Candidates kept while inserting. More: a better graph (higher recall
        for the same ``ef_search``), slower ``add``. Default 80.
    dim
        Dimension, if known before the first ``add``.
    """

    is_exact = False
    retrains = False
    filters_natively = False

    def __init__(
        self,
        *,
        M: int = 32,
        ef_search: int = 64,
        ef_construction: int = 80,
        dim: int | None = None,
    ) -> None:
        _check_int("M", M, minimum=2, maximum=MAX_M)
        _check_int("ef_search", ef_search, minimum=1, maximum=MAX_EF)
        _check_int("ef_construction", ef_construction, minimum=1, maximum=MAX_EF)
        super().__init__(dim=dim)
        self.M = M
        self.ef_search = ef_search
        self.ef_construction = ef_construction
        self.index_: Any = None
        self._graph: Any = None  # a graph loaded without its vectors, until attach_vectors
        self._positional: tuple[Any, int, np.ndarray] | None = None  # positional_vectors' view
        self._inner: tuple[Any, Any, np.ndarray | None] | None = None  # _graph_and_map's
        self._cached_params: tuple[int, Any] | None = None

    can_save_without_vectors = True

    def _detached_error(self) -> CatalogError:
        return CatalogError(
            "this HNSW index was saved without its vectors (its catalogue keeps them): load "
            "the catalogue with Recommender.load, or give them back with attach_vectors()"
        )

    def _new_index(self, dim: int) -> Any:
        faiss = _faiss()
        hnsw = faiss.IndexHNSWFlat(dim, int(self.M), faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efConstruction = int(self.ef_construction)
        hnsw.hnsw.efSearch = int(self.ef_search)
        return faiss.IndexIDMap2(hnsw)

    def _add(self, x: np.ndarray, labels: np.ndarray) -> None:
        if self._graph is not None:
            raise self._detached_error()
        self._positional = self._inner = None  # FAISS may move them: views are stale
        if self.index_ is None:
            self.index_ = self._new_index(x.shape[1])
        self.index_.add_with_ids(x, labels)

    def _remove(self, labels: np.ndarray) -> None:
        if self._graph is not None:
            raise self._detached_error()
        self._positional = self._inner = None
        x, stored = _flat_contents(self.index_)
        keep = ~np.isin(stored, labels)
        rebuilt = self._new_index(x.shape[1])
        if keep.any():
            rebuilt.add_with_ids(np.ascontiguousarray(x[keep]), stored[keep])
        self.index_ = rebuilt

    def _params(self, ef: int) -> Any:
        """Search parameters for ``ef`` (reused: making them costs a tenth of a query)."""
        cached = self._cached_params
        if cached is None or cached[0] != ef:
            cached = self._cached_params = (ef, _faiss().SearchParametersHNSW(efSearch=ef))
        return cached[1]

    def _graph_and_map(self) -> tuple[Any, np.ndarray | None]:
        """The HNSW graph inside the id map, and the map as an array (``None``: labels are
        positions), kept until the next add or remove.

        Searching the graph directly, not through FAISS's id map: the id map's search
        opens an OpenMP parallel region for every call to translate its labels, and
        waking the other threads cost a single query milliseconds on a busy machine.
        """
        cached = self._inner
        if cached is not None and cached[0] is self.index_:
            return cached[1], cached[2]
        faiss = _faiss()
        inner = faiss.downcast_index(self.index_.index)
        held = faiss.vector_to_array(self.index_.id_map)
        id_map = None if np.array_equal(held, np.arange(len(held))) else held
        self._inner = (self.index_, inner, id_map)
        return inner, id_map

    @staticmethod
    def _labels(positions: np.ndarray, id_map: np.ndarray | None) -> np.ndarray:
        if id_map is None:
            return positions
        return np.where(positions >= 0, id_map[np.maximum(positions, 0)], -1)

    def _search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        faiss = _faiss()
        inner, id_map = self._graph_and_map()
        params = self._params(max(int(self.ef_search), k))
        scores, positions = inner.search(q, k, params=params)
        labels = self._labels(positions, id_map)
        short = np.flatnonzero((labels < 0).any(axis=1))
        if len(short):  # the graph missed some: answer those queries exactly
            storage = faiss.downcast_index(inner.storage)
            scores[short], exact = storage.search(q[short], k)
            labels[short] = self._labels(exact, id_map)
        return scores, labels

    def _search_allowed(
        self, q: np.ndarray, k: int, allowed: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        faiss = _faiss()
        inner, id_map = self._graph_and_map()
        if id_map is not None:  # the mask is over labels, the graph's nodes are positions
            ok = id_map < len(allowed)
            allowed = np.where(ok, allowed[np.where(ok, id_map, 0)], False)
        sel, _bitmap = _selector(allowed)
        frac = max(float(allowed.sum()) / max(len(self), 1), 1e-6)
        ef = min(MAX_FILTERED_EF, max(int(self.ef_search), k, math.ceil(2 * k / frac)))
        params = faiss.SearchParametersHNSW(efSearch=ef, sel=sel)
        scores, positions = inner.search(q, k, params=params)
        return scores, self._labels(positions, id_map)

    def _is_ready(self) -> bool:
        return self._graph is None

    def _prepare(self) -> None:
        raise self._detached_error()

    def _save_state(self, directory: Path) -> dict[str, Any]:
        if self._graph is not None:
            raise self._detached_error()
        if self.index_ is not None:
            _write(self.index_, directory / _INDEX_FILE)
        return {"has_index": self.index_ is not None}

    def _save_without_vectors(self, directory: Path) -> dict[str, Any]:
        """Write the graph alone (``IO_FLAG_SKIP_STORAGE``); its vectors stay with the caller."""
        if self._graph is not None or self.index_ is None:
            return self._save_state(directory)
        faiss = _faiss()
        held = faiss.vector_to_array(self.index_.id_map)
        if not np.array_equal(held, self._ids.labels):  # positions not in label order
            return self._save_state(directory)
        inner = faiss.downcast_index(self.index_.index)
        faiss.write_index(inner, str(directory / _GRAPH_FILE), faiss.IO_FLAG_SKIP_STORAGE)
        return {"has_index": True, "vectors": "outside"}

    @property
    def needs_vectors(self) -> bool:
        """Whether this index was loaded without its vectors (see :meth:`attach_vectors`)."""
        return self._graph is not None

    def attach_vectors(self, read: Callable[[np.ndarray], np.ndarray]) -> None:
        """Give an index saved with ``save(path, vectors=False)`` its vectors back.

        Parameters
        ----------
        read
            Called with blocks of internal labels (increasing, every stored one
            once); returns their vectors, ``float32`` ``(len(labels), dim)``,
            exactly as they were added (a catalogue reads its own files).

        Raises
        ------
        CatalogError
            ``read`` returned another shape, or the graph does not fit the vectors.
        """
        faiss = _faiss()
        with self._lock.write():
            graph = self._graph
            if graph is None:
                return
            labels = self._ids.labels
            n, d = len(labels), int(graph.d)
            flat = faiss.IndexFlatIP(d)
            flat.codes.resize(n * d * 4)  # one allocation, filled in place
            xb = faiss.rev_swig_ptr(flat.get_xb(), n * d).reshape(n, d) if n else None
            for lo in range(0, n, _ATTACH_BLOCK):
                want = labels[lo : lo + _ATTACH_BLOCK]
                block = np.asarray(read(want))
                if block.shape != (len(want), d):
                    raise CatalogError(
                        f"attach_vectors: read() returned shape {block.shape} for "
                        f"{len(want)} labels of {d}-d vectors"
                    )
                assert xb is not None
                xb[lo : lo + len(want)] = block
            flat.ntotal = n
            graph.storage = flat
            graph.own_fields = True
            flat.this.disown()  # the graph owns and frees it now
            _check_hnsw(Path("<attached>"), graph)
            wrapper = faiss.IndexIDMap2(
                faiss.IndexHNSWFlat(d, int(self.M), faiss.METRIC_INNER_PRODUCT)
            )
            wrapper.index = graph  # the id map's constructor takes only an empty index
            wrapper.referenced_objects = [graph]
            faiss.copy_array_to_vector(np.ascontiguousarray(labels, np.int64), wrapper.id_map)
            wrapper.ntotal = n
            wrapper.construct_rev_map()
            graph.hnsw.efSearch = int(self.ef_search)
            self.index_, self._graph = wrapper, None

    def _stored_rows(self, labels: np.ndarray) -> np.ndarray | None:
        if self._graph is not None:
            raise self._detached_error()
        return _reconstruct(self.index_, labels)

    def positional_vectors(self) -> np.ndarray | None:
        """The stored vectors as a read-only view of FAISS's memory (row ``i``: label ``i``).

        ``None`` unless the labels are exactly ``0..len-1`` (a catalogue's rows),
        or when nothing is stored. No copy: the view is valid only while the
        index does not change, so read it under a lock that keeps writers out
        (a catalogue's read lock), and never keep it.
        """
        cached = self._positional
        if cached is not None and cached[0] is self.index_ and cached[1] == len(self._ids):
            return cached[2]
        index = self.index_
        n = len(self._ids)
        if index is None or self._graph is not None or not n or self._ids.next_label != n:
            return None  # (labels are increasing and unique: 0..n-1 exactly when next is n)
        faiss = _faiss()
        storage = faiss.downcast_index(faiss.downcast_index(index.index).storage)
        if int(storage.ntotal) != n:
            return None
        d = int(storage.d)
        view = faiss.rev_swig_ptr(storage.get_xb(), n * d).reshape(n, d)
        view.flags.writeable = False
        self._positional = (index, n, view)  # until the next add or remove (see _add)
        return view

    def _load_state(self, directory: Path, state: Mapping[str, Any]) -> None:
        where = directory / "manifest.json"
        outside = state.get("vectors", "inside")
        if outside not in ("inside", "outside"):
            raise CatalogError(f"{where}: field 'state.vectors' must be 'inside' or 'outside'")
        if outside == "outside":
            if not _has_index(directory, state, len(self)):
                raise CatalogError(f"{where}: vectors outside but no graph")
            path = P.safe_child(directory, _GRAPH_FILE)
            graph = _read_file(path)
            faiss = _faiss()
            if not isinstance(graph, faiss.IndexHNSWFlat) or graph.storage is not None:
                raise CatalogError(f"{path} is not an HNSW graph saved without its vectors")
            if self.dim is not None and graph.d != self.dim:
                raise CatalogError(
                    f"{path} holds a {graph.d}-d graph, the manifest says {self.dim}"
                )
            if graph.ntotal != len(self) or graph.metric_type != faiss.METRIC_INNER_PRODUCT:
                raise CatalogError(
                    f"{path} links {graph.ntotal} vectors by {graph.metric_type}; the manifest "
                    f"says {len(self)} by inner product"
                )
            self.index_, self._graph = None, graph
            return
        if _has_index(directory, state, len(self)):
            self.index_ = _read(
                directory, _INDEX_FILE, ("IndexIDMap2",), self.dim, self._ids.labels
            )
            faiss = _faiss()
            hnsw = faiss.downcast_index(self.index_.index)
            if not isinstance(hnsw, faiss.IndexHNSWFlat):
                raise CatalogError(f"{directory / _INDEX_FILE} does not wrap an IndexHNSWFlat")
            hnsw.hnsw.efSearch = int(self.ef_search)


__all__ = ["FlatIndex", "HNSWIndex", "IVFIndex", "IVFPQIndex", "MIN_POINTS_PER_CENTROID"]
