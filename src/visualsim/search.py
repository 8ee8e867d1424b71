"""Query planning: filters, tombstones and the delta segment, pushed into the index.

A catalogue's vectors live in its :class:`~visualsim.store.Store`. Exact
catalogues (``"flat"``, ``"sklearn"``) are searched straight from the store;
approximate ones keep an index over rows ``[0, indexed_upto)`` (the sealed
segment, whose internal labels are the store's rows) and search newer rows
(the delta segment) exactly, merging the two. Removed items are tombstones:
the index never rebuilds on a remove, the search skips them. A filter
becomes a boolean row mask (one vectorised pass over typed columns, cached
per catalogue version) and is pushed into the index as a selector, so an
exact index returns exactly the top ``k`` allowed items at any selectivity
and an approximate one falls back to exact scoring when it finds too few.
Few allowed rows (:func:`exact_is_cheaper`) are scored exactly in place, and
a catalogue with ``partition_by`` answers a filter that pins that field from
small per-value indexes (:class:`Partitions`) instead of the whole graph.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from typing import Any

import numpy as np

from .filters import Expr
from .filters.plan import implied_values
from .store import Store, _Grow

logger = logging.getLogger(__name__)

DELTA_LIMIT = 50_000
"""Rows the exact delta segment may hold before they are added to the index."""
EXACT_LIMIT = 4096
"""Allowed rows at or below which a filtered query is scored exactly from the store."""
EXACT_WORK = 1 << 22
"""Allowed rows x dimensions at or below which a filtered query is scored exactly too.

Scoring ``m`` scattered rows of ``d`` floats costs about what an HNSW walk
costs when ``m * d`` is near this (about 16,000 rows of 256-d, 2,000 of 2,048-d).
"""
PARTITION_KINDS = ("str", "int", "bool")
"""Field kinds a catalogue can be partitioned by (``partition_by``)."""
MAX_QUERY_PARTITIONS = 16
"""A filter naming more partition values than this is searched in the main index."""
_BLOCK = 65_536


def is_exact(index: Any) -> bool:
    """Whether a catalogue with this index is searched straight from its store.

    The index's own promise, its ``is_exact`` class attribute (see
    :class:`~visualsim.indexes.Index`); an index without one is approximate.
    """
    return bool(getattr(index, "is_exact", False))


def filters_natively(index: Any) -> bool:
    """Whether the index filters by metadata itself (its ``filters_natively`` attribute)."""
    return bool(getattr(index, "filters_natively", False))


def exact_is_cheaper(m: int, dim: int) -> bool:
    """Whether ``m`` allowed rows of ``dim`` floats are best scored exactly."""
    return m <= EXACT_LIMIT or m * dim <= EXACT_WORK


def score_rows(
    store: Store,
    queries: np.ndarray,
    k: int,
    rows: np.ndarray,
    vectors: np.ndarray | None = None,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Score ``queries`` exactly against the given ``rows``; best ``k`` each.

    For a few float32 queries the rows are read in place (FAISS's
    ``fvec_inner_products_by_idx``: no gathered copy of the vectors), which
    is about three times as fast as gathering them; otherwise as
    :func:`brute_force`. ``vectors`` reads the rows from there instead of the
    store (the index's own copy of the sealed rows: see :meth:`Segments.sealed`).
    """
    if vectors is not None and len(rows) and int(np.max(rows)) >= len(vectors):
        vectors = None  # a row past the index's copy: read the store
    elsewhere = vectors is not None
    if vectors is None:
        vectors = store.vectors.view
    nq, m = len(queries), len(rows)
    if (
        m == 0
        or nq > 8
        or vectors.dtype != np.float32
        or not vectors.flags.c_contiguous
        or queries.shape[1] != vectors.shape[1]
    ):
        if elsewhere and m:
            sims = (vectors[rows] @ np.ascontiguousarray(queries.T, np.float32)).T
            best = _TopK(nq, k)
            best.fold(sims, np.asarray(rows, np.int64))
            return best.result()
        return brute_force(store, queries, k, rows)
    import faiss

    q = np.ascontiguousarray(queries, dtype=np.float32)
    ids = np.ascontiguousarray(np.broadcast_to(np.asarray(rows, np.int64), (nq, m)))
    if int(ids.min()) < 0 or int(ids.max()) >= len(vectors):
        raise IndexError("rows outside the store")  # never read past the buffer
    out = np.empty((nq, m), dtype=np.float32)
    faiss.fvec_inner_products_by_idx(  # type: ignore[attr-defined]
        faiss.swig_ptr(out),
        faiss.swig_ptr(q),
        faiss.swig_ptr(vectors),
        faiss.swig_ptr(ids),
        vectors.shape[1],
        nq,
        m,
    )
    rows64 = ids[0]
    return [top_k(out[j], rows64, k) for j in range(nq)]


def top_k(scores: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Return the ``k`` best ``(scores, rows)`` of one query, ties by row."""
    if len(scores) > k:
        part = np.argpartition(-scores, k - 1)[:k]
        if np.count_nonzero(scores >= scores[part].min()) > k:  # a tie at the k-th place
            part = np.lexsort((rows, -scores))[:k]  # decided by row, as exact search promises
        scores, rows = scores[part], rows[part]
    order = np.lexsort((rows, -scores))
    return scores[order], rows[order]


def _best(scores: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per line of ``(nq, m)`` scores and rows: the ``k`` best by score then row, in order.

    A partial sort finds them; a line where scores tie at the ``k``-th place
    (more candidates share its score than fit) is sorted whole, so the lower
    rows win the tie, as an exact search promises.
    """
    if scores.shape[1] > k:
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        s = np.take_along_axis(scores, part, axis=1)
        r = np.take_along_axis(rows, part, axis=1)
        kth = s.min(axis=1, keepdims=True)
        tied = np.flatnonzero((scores >= kth).sum(axis=1) > k)
        for j in tied.tolist():  # rare: the boundary's ties go by row (top_k's rule)
            s[j], r[j] = top_k(scores[j], rows[j], k)
        scores, rows = s, r
    order = np.lexsort((rows, -scores), axis=-1)
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(rows, order, axis=1)


def brute_force(
    store: Store,
    queries: np.ndarray,
    k: int,
    rows: np.ndarray | None = None,
    *,
    mask: np.ndarray | None = None,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Score ``queries`` against ``rows`` (default every row) exactly; best ``k`` each.

    ``mask`` (a boolean row mask) instead of ``rows``: when most rows are
    allowed, every row is scored in place (no copy) and the others dropped.
    """
    nq = len(queries)
    if mask is not None:
        allowed_share = float(mask.mean()) if len(mask) else 0.0
        if allowed_share < 0.3:
            rows = np.flatnonzero(mask).astype(np.int64)
        else:
            return _masked_scan(store, queries, k, mask)
    if rows is None:
        rows = np.arange(store.n_rows, dtype=np.int64)
    best = _TopK(nq, k)
    qt = np.ascontiguousarray(queries.T, dtype=np.float32)
    contiguous = len(rows) > 0 and int(rows[-1] - rows[0]) + 1 == len(rows)
    block_size = max(1024, min(_BLOCK, (1 << 24) // max(nq, 1)))
    for start in range(0, len(rows), block_size):
        block = rows[start : start + block_size]
        if contiguous:
            vecs = store.vectors.view[int(block[0]) : int(block[-1]) + 1]
        else:
            vecs = store.vectors.view[block]
        sims = (vecs.astype(np.float32, copy=False) @ qt).T  # (nq, m)
        best.fold(sims, block)
    return best.result()


class _TopK:
    """The best ``k`` (score, row) pairs of each query, folded in block by block."""

    def __init__(self, nq: int, k: int) -> None:
        self.k = k
        self.scores = np.full((nq, 0), -np.inf, dtype=np.float32)
        self.rows = np.full((nq, 0), -1, dtype=np.int64)

    def fold(self, sims: np.ndarray, block: np.ndarray) -> None:
        """Add a block's ``(nq, m)`` scores of the rows ``block``."""
        cand_s = np.concatenate([self.scores, sims], axis=1)
        cand_r = np.concatenate([self.rows, np.broadcast_to(block, sims.shape)], axis=1)
        if cand_s.shape[1] > self.k:
            cand_s, cand_r = _best(cand_s, cand_r, self.k)
        self.scores, self.rows = cand_s, cand_r

    def result(self, *, drop_excluded: bool = False) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per query, best first (ties by row); ``drop_excluded`` drops ``-inf`` entries."""
        order = np.lexsort((self.rows, -self.scores), axis=-1)
        scores = np.take_along_axis(self.scores, order, axis=1)
        rows = np.take_along_axis(self.rows, order, axis=1)
        out = []
        for s_row, r_row in zip(scores, rows, strict=True):
            keep = np.isfinite(s_row) if drop_excluded else slice(None)
            out.append((s_row[keep], r_row[keep]))
        return out


def _masked_scan(
    store: Store, queries: np.ndarray, k: int, mask: np.ndarray
) -> list[tuple[np.ndarray, np.ndarray]]:
    nq = len(queries)
    best = _TopK(nq, k)
    qt = np.ascontiguousarray(queries.T, dtype=np.float32)
    n = len(mask)
    block_size = max(1024, min(_BLOCK, (1 << 24) // max(nq, 1)))
    for lo in range(0, n, block_size):
        hi = min(n, lo + block_size)
        sims = (store.vectors.view[lo:hi].astype(np.float32, copy=False) @ qt).T
        sims[:, ~mask[lo:hi]] = -np.inf
        block = np.arange(lo, hi, dtype=np.int64)
        best.fold(sims, block)
    return best.result(drop_excluded=True)


def merge(parts: list[tuple[np.ndarray, np.ndarray]], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Merge several ``(scores, rows)`` candidate lists of one query into the best ``k``."""
    scores = np.concatenate([p[0] for p in parts]) if parts else np.empty(0, np.float32)
    rows = np.concatenate([p[1] for p in parts]) if parts else np.empty(0, np.int64)
    keep = rows >= 0
    return top_k(scores[keep].astype(np.float32), rows[keep], k)


class _Part:
    """One partition: its own index over the sealed rows holding one value."""

    __slots__ = ("index", "key", "number", "rows")

    def __init__(self, key: Any, number: int, index: Any) -> None:
        self.key = key
        self.number = number
        self.index = index  # labels 0..len-1: positions in ``rows``
        self.rows = _Grow(np.int64)  # label -> store row


class Partitions:
    """Per-value indexes over a field's values: equality filters search one small index.

    A filter implying ``field == v`` (or ``field in [...]``) is answered from
    the partitions of those values instead of the whole index with a
    selector, so a 5 % category filter costs about an unfiltered query on a
    twentieth of the catalogue. Each sealed row is in the partition of the
    value it had when it was indexed; a row whose value changed since
    (``moved``) is scored exactly until the next :meth:`Segments.rebuild`.
    The main index stays complete, so any other query (and any field kind
    that cannot partition) is searched there.

    Parameters
    ----------
    field
        The metadata field.
    template
        An index whose configuration each partition's index copies.
    """

    def __init__(self, field: str, template: Any) -> None:
        self.field = field
        self.template = template
        self.parts: dict[Any, _Part] = {}
        self.order: list[_Part] = []
        self.part_of = _Grow(np.int32, fill=-1)  # sealed row -> partition number (-1: none)
        self.moved: set[int] = set()
        self.usable = True  # false once the field's kind cannot partition

    def __len__(self) -> int:
        return len(self.order)

    def _new_index(self) -> Any:
        from .indexes.base import INDEXES

        cls: Any = INDEXES.get(INDEXES.to_spec(self.template)["name"])
        return cls.from_config(self.template.get_config())

    def part(self, key: Any, index: Any = None) -> _Part:
        """Return the partition of ``key``, creating it (with ``index`` or a fresh one)."""
        found = self.parts.get(key)
        if found is None:
            found = _Part(key, len(self.order), self._new_index() if index is None else index)
            self.parts[key] = found
            self.order.append(found)
        return found

    def keys_of(self, store: Store, start: int, stop: int) -> tuple[np.ndarray, list[Any]]:
        """Return each row's key number in ``[start, stop)`` (-1: no value) and the keys."""
        n = stop - start
        col = store.columns.get(self.field)
        if col is None:
            return np.full(n, -1, np.int64), []
        if col.kind not in PARTITION_KINDS:
            raise TypeError(col.kind)
        present = col.present.view[start:stop]
        raw = col.values.view[start:stop]
        uniq, inverse = np.unique(raw[present], return_inverse=True)
        codes = np.full(n, -1, np.int64)
        codes[present] = inverse
        if col.kind == "str":
            keys: list[Any] = [col.categories[int(c)] for c in uniq]
        else:
            keys = [v.item() for v in uniq]
        return codes, keys

    def add_rows(self, store: Store, start: int, stop: int) -> None:
        """Index the newly sealed rows ``[start, stop)`` in their values' partitions."""
        if not self.usable or stop <= start:
            self.part_of.pad(max(0, stop - len(self.part_of.view)))
            return
        try:
            codes, keys = self.keys_of(store, start, stop)
        except TypeError:
            self._give_up(store)
            return
        numbers = np.full(stop - start, -1, np.int32)
        for code, key in enumerate(keys):
            local = np.flatnonzero(codes == code)
            rows = (local + start).astype(np.int64)
            part = self.part(key)
            first = len(part.rows.view)
            for lo in range(0, len(rows), _BLOCK):
                block = rows[lo : lo + _BLOCK]
                part.index.add(
                    store.vectors_f32(block), list(range(first + lo, first + lo + len(block)))
                )
            part.rows.append(rows)
            numbers[local] = part.number
        self.part_of.append(numbers)

    def _give_up(self, store: Store) -> None:
        logger.warning(
            "partition_by=%r: the field now holds %s values, which cannot partition; "
            "filters on it search the main index",
            self.field,
            store.columns[self.field].kind,
        )
        self.usable = False

    def number_of(self, store: Store, row: int) -> int:
        """The partition number a row's current value belongs in (-1 none, -2 not made yet)."""
        col = store.columns.get(self.field)
        if col is None or not col.present.view[row]:
            return -1
        part = self.parts.get(col.get(row))
        return -2 if part is None else part.number

    def updated(self, store: Store, row: int) -> None:
        """A sealed row's metadata changed: track it if its value left its partition."""
        if row >= len(self.part_of.view):
            return
        col = store.columns.get(self.field)
        if col is not None and col.kind not in PARTITION_KINDS:
            if self.usable:
                self._give_up(store)
            return
        if self.number_of(store, row) != int(self.part_of.view[row]):
            self.moved.add(row)
        else:
            self.moved.discard(row)

    def recompute_moved(self, store: Store, upto: int) -> None:
        """Find the sealed rows whose value differs from their partition's (after a load)."""
        self.moved = set()
        if not upto:
            return
        try:
            codes, keys = self.keys_of(store, 0, upto)
        except TypeError:
            self._give_up(store)
            return
        lookup = np.array([self.parts[k].number if k in self.parts else -2 for k in keys] + [-1])
        current = lookup[codes]  # code -1 picks the trailing -1
        self.moved = set(np.flatnonzero(current != self.part_of.view[:upto]).tolist())

    def plan(self, store: Store, expr: Expr | None) -> list[_Part] | None:
        """The partitions that hold every sealed row ``expr`` can match, or ``None``."""
        if expr is None or not self.usable:
            return None
        col = store.columns.get(self.field)
        if col is None or col.kind not in PARTITION_KINDS:
            return None
        values = implied_values(expr, self.field)
        if values is None or len(values) > MAX_QUERY_PARTITIONS:
            return None
        out = []
        for value in values:
            if isinstance(value, bool) != (col.kind == "bool"):
                continue  # the mask already holds no row of that value
            part = self.parts.get(value)
            if part is not None:
                out.append(part)
        return sorted(out, key=lambda part: part.number)


class Segments:
    """The index side of a catalogue: a sealed, indexed segment and an exact delta.

    Parameters
    ----------
    index
        An empty index object (the catalogue's backend), or any index when
        ``is_exact(index)`` (then it only names the backend).
    partition_by
        A metadata field (str, int or bool) to keep per-value indexes of
        (:class:`Partitions`), for approximate backends; exact and native
        (Milvus) backends need none and ignore it.
    """

    def __init__(self, index: Any, partition_by: str | None = None) -> None:
        self.index = index
        self.exact = is_exact(index)
        self.native = filters_natively(index)
        self.indexed_upto = 0
        self.dirty = True  # the index differs from its last saved copy
        self.delta_limit = DELTA_LIMIT
        self.partition_by = partition_by
        self.partitions: Partitions | None = None
        if partition_by is not None and not self.exact and not self.native:
            self.partitions = Partitions(partition_by, index)
        self.use_partitions = True  # benchmarks compare with and without
        self._masks: OrderedDict[tuple[str, int], np.ndarray] = OrderedDict()
        self._counts: OrderedDict[int, tuple[np.ndarray, int, np.ndarray]] = OrderedDict()

    # ----------------------------------------------------------------- writes
    def added(self, store: Store, rows: np.ndarray) -> None:
        """New rows were appended to ``store``."""
        if self.native:
            self.index.add(
                store.vectors_f32(rows),
                [store.ids[r] for r in rows.tolist()],
                metadata=[store.metadata(int(r)) for r in rows],
            )
            self.indexed_upto = store.n_rows
            self.dirty = True
        elif not self.exact and store.n_rows - self.indexed_upto >= self.delta_limit:
            self.flush(store)

    def removed(self, store: Store, rows: np.ndarray, ids: list[Any]) -> None:
        """Rows were tombstoned in ``store``."""
        if self.native and ids:
            self.index.remove(ids)
            self.dirty = True

    def updated(self, store: Store, row: int) -> None:
        """A row's metadata changed."""
        if self.partitions is not None and row < self.indexed_upto:
            self.partitions.updated(store, row)
        if self.native:
            item_id = store.ids[row]
            vector = store.vectors_f32(slice(row, row + 1))
            if hasattr(self.index, "upsert"):
                self.index.upsert(vector, [item_id], metadata=[store.metadata(row)])
            else:
                self.index.remove([item_id])
                self.index.add(vector, [item_id], metadata=[store.metadata(row)])
            self.dirty = True

    def flush(self, store: Store) -> None:
        """Add the delta segment's rows to the index (labels stay equal to rows)."""
        if self.exact or self.native or self.indexed_upto >= store.n_rows:
            return
        start, stop = self.indexed_upto, store.n_rows
        next_label = getattr(self.index, "next_label", start)
        if next_label != start:
            raise RuntimeError(
                f"index labels ({next_label}) out of step with the store ({start}); "
                "please report this bug"
            )
        for lo in range(start, stop, _BLOCK):
            hi = min(stop, lo + _BLOCK)
            self.index.add(store.vectors_f32(slice(lo, hi)), list(range(lo, hi)))
        if self.partitions is not None:
            self.partitions.add_rows(store, start, stop)
        self.indexed_upto = stop
        self.dirty = True

    def rebuild(self, store: Store) -> None:
        """Index every row of a freshly compacted store from scratch."""
        if self.native:
            # the backend keys items by id and reclaims deletions itself: keep it
            self.indexed_upto = store.n_rows
        elif not self.exact:
            from .indexes.base import INDEXES

            cls: Any = INDEXES.get(INDEXES.to_spec(self.index)["name"])
            fresh = cls.from_config(self.index.get_config())
            self.index = fresh
            self.indexed_upto = 0
            if self.partitions is not None:
                self.partitions = Partitions(self.partitions.field, fresh)
            self.flush(store)
        self.dirty = True
        self._masks.clear()
        self._counts.clear()

    def retrains(self) -> bool:
        """Whether :meth:`rebuild` retrains the index (IVF), so is worth it without removals.

        The index's ``retrains`` class attribute (see :class:`~visualsim.indexes.Index`).
        """
        return bool(getattr(self.index, "retrains", False))

    # ----------------------------------------------------------------- filters
    def _cached(self, key: tuple[str, int], make: Any) -> np.ndarray:
        """Return the mask cached under ``key``, or ``make()`` it (the last 64 are kept)."""
        mask = self._masks.get(key)
        if mask is None:
            mask = self._masks[key] = make()
            while len(self._masks) > 64:
                self._masks.popitem(last=False)
        else:
            self._masks.move_to_end(key)
        return mask

    def cached_mask(self, store: Store, expr: Expr, version: int) -> np.ndarray:
        """Return ``store.mask(expr)``, cached for this catalogue version."""
        return self._cached((str(expr), version), lambda: store.mask(expr))

    def cached_allowed(self, store: Store, expr: Expr, version: int) -> np.ndarray:
        """Return the live rows matching ``expr`` (read-only), cached for this version."""

        def make() -> np.ndarray:
            mask = store.alive.view & self.cached_mask(store, expr, version)
            mask.flags.writeable = False
            return mask

        return self._cached((f"live & {expr}", version), make)

    def _facts(self, allowed: np.ndarray) -> tuple[int, np.ndarray]:
        """``(count, rows)`` of a mask, remembered for the cached ones (one pass a version)."""
        key = id(allowed)
        hit = self._counts.get(key)
        if hit is not None and hit[0] is allowed:
            return hit[1], hit[2]
        rows = _rows_of(allowed)
        if not allowed.flags.writeable and any(allowed is m for m in self._masks.values()):
            self._counts[key] = (allowed, len(rows), rows)
            while len(self._counts) > 64:
                self._counts.popitem(last=False)
        return len(rows), rows

    # ----------------------------------------------------------------- search
    def sealed(self) -> np.ndarray | None:
        """The sealed rows' vectors as the index keeps them (a view), or ``None``.

        Exact scoring of sealed rows reads them there, so a catalogue whose own
        copy is memory-mapped (:meth:`visualsim.Recommender.load`) leaves that
        map untouched. Valid under the catalogue's read lock only.
        """
        if self.exact or self.native or not self.indexed_upto:
            return None
        positional = getattr(self.index, "positional_vectors", None)
        view = positional() if callable(positional) else None
        if view is None or len(view) != self.indexed_upto:
            return None
        return view

    def vectors_of(self, store: Store, rows: np.ndarray) -> np.ndarray:
        """A float32 copy of the given rows' vectors (sealed ones from the index's copy)."""
        rows = np.asarray(rows, dtype=np.int64)
        view = self.sealed()
        if view is None or not len(rows) or int(rows.max()) >= len(view):
            return np.array(store.vectors_f32(rows), dtype=np.float32)
        return np.array(view[rows], dtype=np.float32)

    def search(
        self,
        store: Store,
        queries: np.ndarray,
        k: int,
        allowed: np.ndarray | None,
        expr: Expr | None = None,
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Return, per query, the best ``k`` live allowed ``(scores, rows)``.

        ``allowed`` is a row mask already combined with the tombstones, or
        ``None`` when every row is live and allowed.
        """
        k = min(k, max(len(store), 1))
        if self.native:
            return self._search_native(store, queries, k, allowed, expr)
        if self.exact:
            return brute_force(store, queries, k, mask=allowed)
        n, upto = store.n_rows, self.indexed_upto
        delta_rows = np.arange(upto, n, dtype=np.int64)
        if allowed is not None:
            delta_rows = delta_rows[allowed[upto:n]]
        delta = brute_force(store, queries, k, delta_rows) if len(delta_rows) else None
        main: list[tuple[np.ndarray, np.ndarray]] | None = None
        plan = None
        if upto and allowed is not None and self.partitions is not None and self.use_partitions:
            plan = self.partitions.plan(store, expr)
        if upto and plan is not None and allowed is not None:
            main = self._search_parts(store, queries, k, allowed[:upto], plan)
        elif upto:
            main = self._search_main(store, queries, k, None if allowed is None else allowed)
        out = []
        for j in range(len(queries)):
            parts = [p[j] for p in (main, delta) if p is not None]
            if len(parts) == 1 and len(parts[0][0]) <= k:
                out.append(parts[0])  # one list, already best first and without padding
            else:
                out.append(merge(parts, k))
        return out

    def _search_main(
        self, store: Store, queries: np.ndarray, k: int, allowed: np.ndarray | None
    ) -> list[tuple[np.ndarray, np.ndarray]] | None:
        """Search the sealed rows; ``allowed`` may run past them (the delta's rows)."""
        upto = self.indexed_upto
        if allowed is not None:
            if len(allowed) == upto:
                m, rows_allowed = self._facts(allowed)
            else:
                allowed = allowed[:upto]
                rows_allowed = _rows_of(allowed)
                m = len(rows_allowed)
            if m == 0:
                return None
            if exact_is_cheaper(m, store.dim):
                return score_rows(store, queries, k, rows_allowed, self.sealed())
        want = k if allowed is None else min(k, m)
        if hasattr(self.index, "search_labels"):
            scores, labels = self.index.search_labels(queries, k, allowed=allowed)
        else:
            scores, labels = _generic_search(self.index, queries, k, allowed, len(store))
        return _keep_found(
            store, queries, k, scores, labels, want, allowed, None, upto, self.sealed()
        )

    def _search_parts(
        self, store: Store, queries: np.ndarray, k: int, allowed: np.ndarray, parts: list[_Part]
    ) -> list[tuple[np.ndarray, np.ndarray]] | None:
        """Search the sealed rows through the partitions holding every allowed one."""
        assert self.partitions is not None
        moved = [r for r in self.partitions.moved if allowed[r]]
        if moved:  # their partition's copy is stale: score them exactly, not twice
            allowed = allowed.copy()
            allowed[moved] = False
        found: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in range(len(queries))]
        for part in parts:
            rows = part.rows.view
            local = allowed[rows]
            m = int(np.count_nonzero(local))
            if m == 0:
                continue
            if exact_is_cheaper(m, store.dim):
                res = score_rows(store, queries, k, rows[local], self.sealed())
            else:
                sel = None if m == len(rows) else local
                scores, labels = part.index.search_labels(queries, k, allowed=sel)
                mapped = np.where(labels >= 0, rows[np.maximum(labels, 0)], -1)
                res = _keep_found(
                    store, queries, k, scores, mapped, min(k, m), local, rows, len(rows)
                )
            for j, r in enumerate(res):
                found[j].append(r)
        if moved:
            moved_rows = np.array(sorted(moved))
            for j, r in enumerate(score_rows(store, queries, k, moved_rows, self.sealed())):
                found[j].append(r)
        if not any(found):
            return None
        return [merge(f, k) for f in found]

    def _search_native(
        self,
        store: Store,
        queries: np.ndarray,
        k: int,
        allowed: np.ndarray | None,
        expr: Expr | None,
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        # the backend filters by the expression itself; other exclusions (ids) are
        # dropped afterwards, searching deeper for them
        depth = k
        while True:
            scores, ids = self.index.search(queries, depth, where=expr)
            out, done = [], True
            for s_row, id_row in zip(scores, ids, strict=True):
                rows = np.array([store.rows.get(i, -1) for i in id_row], dtype=np.int64)
                ok = rows >= 0
                if allowed is not None:
                    ok[ok] = allowed[rows[ok]]
                out.append(top_k(np.asarray(s_row, np.float32)[ok], rows[ok], k))
                if ok.sum() < k and len(id_row) >= depth:
                    done = False
            if done or depth >= len(store):
                return out
            depth = min(len(store), depth * 4)


def _keep_found(
    store: Store,
    queries: np.ndarray,
    k: int,
    scores: np.ndarray,
    rows_found: np.ndarray,
    want: int,
    allowed: np.ndarray | None,
    rows: np.ndarray | None,
    n: int,
    vectors: np.ndarray | None = None,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Drop the ``-1`` padding; queries the index answered short are scored exactly.

    ``rows`` are the ``n`` candidates of the search (store rows; ``None``: rows
    ``0..n-1``, made only when a query was answered short, so a query costs
    nothing per catalogue row); ``allowed`` masks them, or is ``None`` when
    every one of them is allowed.
    """
    out = []
    short = []
    for j in range(len(queries)):
        keep = rows_found[j] >= 0
        out.append((scores[j][keep].astype(np.float32), rows_found[j][keep].astype(np.int64)))
        if keep.sum() < want:
            short.append(j)
    if short:  # the approximate index found too few: answer those exactly
        if rows is None:
            pool = np.arange(n) if allowed is None else np.flatnonzero(allowed[:n])
        else:
            pool = rows if allowed is None else rows[allowed]
        exact = score_rows(store, queries[short], k, np.asarray(pool, np.int64), vectors)
        for j, res in zip(short, exact, strict=True):
            out[j] = res
    return out


def _rows_of(mask: np.ndarray) -> np.ndarray:
    return np.flatnonzero(mask).astype(np.int64)


def _generic_search(
    index: Any, queries: np.ndarray, k: int, allowed: np.ndarray | None, n_live: int
) -> tuple[np.ndarray, np.ndarray]:
    """Search an index that only has the protocol's ``search`` (ids are rows)."""
    n = len(index)
    depth = min(n, k if allowed is None else max(2 * k, math.ceil(2 * k * n / max(n_live, 1))))
    while True:
        scores, ids = index.search(queries, depth)
        labels = np.asarray(ids, dtype=np.int64).reshape(len(queries), -1)
        scores = np.asarray(scores, dtype=np.float32).reshape(len(queries), -1)
        ok = np.ones_like(labels, dtype=bool)
        if allowed is not None:
            ok = (labels < len(allowed)) & (labels >= 0)
            ok[ok] = allowed[labels[ok]]
        if allowed is None or depth >= n or (ok.sum(axis=1) >= k).all():
            break
        depth = min(n, depth * 2)
    labels = np.where(ok, labels, -1)
    return scores, labels


__all__ = [
    "DELTA_LIMIT",
    "EXACT_LIMIT",
    "EXACT_WORK",
    "MAX_QUERY_PARTITIONS",
    "PARTITION_KINDS",
    "Partitions",
    "Segments",
    "brute_force",
    "exact_is_cheaper",
    "filters_natively",
    "implied_values",
    "is_exact",
    "merge",
    "score_rows",
    "top_k",
]
