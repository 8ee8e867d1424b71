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
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any

import numpy as np

from .filters import Expr
from .store import Store

DELTA_LIMIT = 50_000
"""Rows the exact delta segment may hold before they are added to the index."""
EXACT_LIMIT = 4096
"""Allowed rows at or below which a filtered query is scored exactly from the store."""
_BLOCK = 65_536


def is_exact(index: Any) -> bool:
    """Whether a catalogue with this index is searched straight from its store."""
    from .indexes.faiss import FlatIndex
    from .indexes.sklearn import SklearnIndex

    return type(index) in (FlatIndex, SklearnIndex)


def top_k(scores: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Return the ``k`` best ``(scores, rows)`` of one query, ties by row."""
    if len(scores) > k:
        part = np.argpartition(-scores, k - 1)[:k]
        scores, rows = scores[part], rows[part]
    order = np.lexsort((rows, -scores))
    return scores[order], rows[order]


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
            part = np.argpartition(-cand_s, self.k - 1, axis=1)[:, : self.k]
            cand_s = np.take_along_axis(cand_s, part, axis=1)
            cand_r = np.take_along_axis(cand_r, part, axis=1)
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


class Segments:
    """The index side of a catalogue: a sealed, indexed segment and an exact delta.

    Parameters
    ----------
    index
        An empty index object (the catalogue's backend), or any index when
        ``is_exact(index)`` (then it only names the backend).
    """

    def __init__(self, index: Any) -> None:
        self.index = index
        self.exact = is_exact(index)
        self.native = bool(getattr(index, "supports_where", False))
        self.indexed_upto = 0
        self.dirty = True  # the index differs from its last saved copy
        self.delta_limit = DELTA_LIMIT
        self._masks: OrderedDict[tuple[str, int], np.ndarray] = OrderedDict()

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
        next_label = getattr(getattr(self.index, "_ids", None), "next_label", start)
        if next_label != start:
            raise RuntimeError(
                f"index labels ({next_label}) out of step with the store ({start}); "
                "please report this bug"
            )
        for lo in range(start, stop, _BLOCK):
            hi = min(stop, lo + _BLOCK)
            self.index.add(store.vectors_f32(slice(lo, hi)), list(range(lo, hi)))
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
            self.flush(store)
        self.dirty = True
        self._masks.clear()

    # ----------------------------------------------------------------- filters
    def cached_mask(self, store: Store, expr: Expr, version: int) -> np.ndarray:
        """Return ``store.mask(expr)``, cached for this catalogue version."""
        key = (str(expr), version)
        mask = self._masks.get(key)
        if mask is None:
            mask = store.mask(expr)
            self._masks[key] = mask
            while len(self._masks) > 64:
                self._masks.popitem(last=False)
        else:
            self._masks.move_to_end(key)
        return mask

    # ----------------------------------------------------------------- search
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
        if upto:
            main = self._search_main(store, queries, k, None if allowed is None else allowed[:upto])
        out = []
        for j in range(len(queries)):
            parts = [p[j] for p in (main, delta) if p is not None]
            out.append(merge(parts, k))
        return out

    def _search_main(
        self, store: Store, queries: np.ndarray, k: int, allowed: np.ndarray | None
    ) -> list[tuple[np.ndarray, np.ndarray]] | None:
        if allowed is not None:
            m = int(allowed.sum())
            if m == 0:
                return None
            if m <= EXACT_LIMIT:
                return brute_force(store, queries, k, _rows_of(allowed))
        want = k if allowed is None else min(k, m)
        if hasattr(self.index, "search_labels"):
            scores, labels = self.index.search_labels(queries, k, allowed=allowed)
        else:
            scores, labels = _generic_search(self.index, queries, k, allowed, len(store))
        out = []
        short = []
        for j in range(len(queries)):
            keep = labels[j] >= 0
            out.append((scores[j][keep].astype(np.float32), labels[j][keep]))
            if keep.sum() < want:
                short.append(j)
        if short:  # the approximate index found too few: answer those exactly
            rows = None if allowed is None else _rows_of(allowed)
            if rows is None:
                rows = np.arange(self.indexed_upto, dtype=np.int64)
            exact = brute_force(store, queries[short], k, rows)
            for j, res in zip(short, exact, strict=True):
                out[j] = res
        return out

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


__all__ = ["DELTA_LIMIT", "EXACT_LIMIT", "Segments", "brute_force", "is_exact", "merge", "top_k"]
