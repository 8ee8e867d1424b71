"""Leave-one-out over a labelled catalogue: every labelled item a query, left out of its
own results, the items with the same label the relevant ones.

:func:`evaluate` searches a fitted recommender through its own index;
:func:`evaluate_embeddings` a plain array, with exact brute-force kNN in numpy.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import Any, Protocol

import numpy as np
from numpy.typing import ArrayLike

from ..errors import CatalogError, ConfigError, NotFittedError, UnknownIdError
from ..validation import check_positive_int, unit_rows
from .metrics import (
    EvaluationReport,
    _check_ks,
    average_precision_at_k,
    precision_at_k,
    recall_at_k,
)

LabelsLike = str | Sequence[Any] | Mapping[Any, Any] | np.ndarray
"""A metadata key (str), a sequence aligned with the ids, or a mapping id → label."""

_MAX_SCORE_CELLS = 1 << 25
"""Largest (queries x catalogue) float32 score block :func:`evaluate_embeddings`
holds at once (128 MiB); the query chunk shrinks for big catalogues."""


# ---------------------------------------------------------------------------
# leave-one-out evaluation
# ---------------------------------------------------------------------------
class _SearchIndex(Protocol):
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, Sequence[Sequence[Any]]]:
        """Return ``(scores, ids)`` of the ``k`` nearest neighbours of each query."""


def evaluate(
    recommender: Any,
    labels: LabelsLike,
    k: int | Iterable[int] = (1, 5, 10),
    *,
    queries: Iterable[Any] | None = None,
    exact: bool = False,
    batch_size: int = 1024,
    progress: bool = False,
) -> EvaluationReport:
    """Return the leave-one-out retrieval quality of a fitted recommender's catalogue.

    Every labelled catalogue item (or each of ``queries``) is searched with its
    own stored vector, the item itself is removed from its results, and the
    results sharing its label count as relevant. Unlabelled items still take
    part as candidates (a user would see them) but are never relevant.

    Parameters
    ----------
    recommender
        A fitted :class:`~visualsim.Recommender`, or anything with ``ids_``,
        ``embeddings_``, ``metadata_`` (for a metadata key) and ``index_``
        (with ``search(queries, k) -> (scores, ids)``).
    labels
        A metadata key (``"articleType"``) read from ``recommender.metadata_``;
        a tuple of keys (``("articleType", "baseColour")``: relevant when every
        one matches, "the same type in the same colour"); a sequence aligned
        with ``recommender.ids_`` (a list); or a mapping id → label.
        ``None`` (or NaN, or a missing key or id) means unlabelled.
    k
        One cut-off or several; each ``>= 1``.
    queries
        Ids to evaluate; default every catalogue item.
    exact
        ``False`` searches the recommender's own index (the quality users get,
        including an approximate index's misses); ``True`` ranks by exact
        brute-force cosine over the stored vectors (the embedding's own quality).
    batch_size
        Queries per index search.
    progress
        Show a progress bar over the queries.

    Returns
    -------
    EvaluationReport
        Recall@K (hit rate), Precision@K and mAP@K for each K, counts of skipped
        queries, and a per-label breakdown.

    Raises
    ------
    ConfigError
        An unknown metadata key, labels of the wrong length, a bad ``k``, or no
        query left to evaluate.
    UnknownIdError
        A query id that is not in the catalogue.
    NotFittedError
        If ``recommender`` holds no catalogue yet.
    """
    ids, embeddings, index = _recommender_parts(recommender)
    name = labels if isinstance(labels, str) else None
    if _is_key_tuple(labels, recommender):
        name = "+".join(labels)
    codes, values = _encode_labels(_resolve_labels(labels, ids, recommender), len(ids))

    def neighbours_of(query_pos: np.ndarray, n_neighbours: int) -> np.ndarray:
        return _index_neighbours(
            index, embeddings, ids, query_pos, n_neighbours, batch_size, progress
        )

    return _evaluate(  # exact: brute force over the stored vectors, else the index
        _as_vectors(embeddings) if exact else embeddings,
        codes,
        values,
        ids,
        k,
        queries,
        label=name,
        batch_size=batch_size,
        progress=progress,
        neighbours_of=None if exact else neighbours_of,
    )


def evaluate_embeddings(
    embeddings: ArrayLike,
    labels: Sequence[Any] | Mapping[Any, Any] | np.ndarray,
    k: int | Iterable[int] = (1, 5, 10),
    *,
    ids: Sequence[Any] | None = None,
    queries: Iterable[Any] | None = None,
    label_name: str | None = None,
    batch_size: int = 1024,
    progress: bool = False,
) -> EvaluationReport:
    """Return the leave-one-out retrieval quality of raw vectors, by exact cosine kNN.

    No recommender or index needed: rows are L2-normalised and ranked by exact
    cosine similarity with numpy, in query chunks so memory stays bounded (at
    most about 128 MiB of scores at a time; 10k x 10k takes seconds).

    Parameters
    ----------
    embeddings
        ``(n, dim)`` vectors, one per item.
    labels
        A sequence aligned with the rows, or a mapping id → label (ids are
        ``ids``, or the row numbers). ``None`` or NaN means unlabelled.
    k
        One cut-off or several; each ``>= 1``.
    ids
        The items' ids, aligned with the rows; default ``0 .. n-1``.
    queries
        Ids to evaluate; default every row.
    label_name
        What the labels are, for the report.
    batch_size
        Largest number of queries scored at once.
    progress
        Show a progress bar over the queries.

    Returns
    -------
    EvaluationReport
        As :func:`evaluate`.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], dtype=np.float32)
    >>> report = evaluate_embeddings(x, ["a", "a", "b", "b"], k=1)
    >>> report["recall@1"], report.n_queries
    (1.0, 4)
    """
    vectors = _as_vectors(embeddings)
    n = len(vectors)
    item_ids: list[Any] = list(range(n)) if ids is None else list(ids)
    if len(item_ids) != n:
        raise ConfigError(f"ids has {len(item_ids)} entries but embeddings has {n} rows")
    codes, values = _encode_labels(_resolve_labels(labels, item_ids, None), n)
    return _evaluate(
        vectors,
        codes,
        values,
        item_ids,
        k,
        queries,
        label=label_name,
        batch_size=batch_size,
        progress=progress,
        neighbours_of=None,
    )


def _evaluate(
    vectors: np.ndarray,
    codes: np.ndarray,
    values: list[Hashable],
    ids: Sequence[Any],
    k: int | Iterable[int],
    queries: Iterable[Any] | None,
    *,
    label: str | None,
    batch_size: int,
    progress: bool,
    neighbours_of: Any,
) -> EvaluationReport:
    """Shared core: pick queries, find neighbours, score them."""
    ks = _check_ks(k)
    batch_size = check_positive_int("batch_size", batch_size)
    n = len(ids)
    counts = np.bincount(codes[codes >= 0], minlength=len(values))
    requested = np.arange(n) if queries is None else _positions_of(queries, ids)
    query_codes = codes[requested]
    unlabelled = query_codes < 0
    singleton = ~unlabelled & (counts[np.maximum(query_codes, 0)] < 2)
    keep = ~unlabelled & ~singleton
    query_pos = requested[keep]
    if query_pos.size == 0:
        raise ConfigError(
            f"nothing to evaluate: of {len(requested)} queries, {int(unlabelled.sum())} have "
            f"no label and {int(singleton.sum())} share their label with no other item"
        )
    max_k = ks[-1]
    if neighbours_of is None:
        neighbours = _exact_neighbours(vectors, query_pos, max_k, batch_size, progress)
    else:
        neighbours = neighbours_of(query_pos, max_k)
    qcodes = codes[query_pos]
    valid = neighbours >= 0
    relevant = valid & (codes[np.where(valid, neighbours, 0)] == qcodes[:, np.newaxis])
    n_relevant = counts[qcodes] - 1

    per_query: dict[str, np.ndarray] = {}
    for cut in ks:
        per_query[f"recall@{cut}"] = recall_at_k(relevant, cut, reduce="none")
        per_query[f"precision@{cut}"] = precision_at_k(relevant, cut, reduce="none")
        per_query[f"map@{cut}"] = average_precision_at_k(relevant, cut, n_relevant, reduce="none")
    order = [f"{m}@{cut}" for m in ("recall", "precision", "map") for cut in ks]
    metrics = {name: float(per_query[name].mean()) for name in order}

    sizes = np.bincount(qcodes, minlength=len(values))
    present = np.flatnonzero(sizes)
    sums = {
        name: np.bincount(qcodes, weights=per_query[name], minlength=len(values)) for name in order
    }
    per_label = {
        values[c]: MappingProxyType({name: float(sums[name][c] / sizes[c]) for name in order})
        for c in present
    }
    label_sizes = {values[c]: int(sizes[c]) for c in present}
    chance = float(np.mean(n_relevant / max(n - 1, 1)))
    return EvaluationReport(
        metrics=MappingProxyType(metrics),
        k=ks,
        n_queries=int(query_pos.size),
        n_items=n,
        n_unlabelled=int(unlabelled.sum()),
        n_singleton=int(singleton.sum()),
        label=label,
        per_label=MappingProxyType(per_label),
        label_sizes=MappingProxyType(label_sizes),
        chance_precision=chance,
    )


def _recommender_parts(recommender: Any) -> tuple[list[Any], np.ndarray, _SearchIndex]:
    missing = [a for a in ("ids_", "embeddings_", "index_") if not hasattr(recommender, a)]
    if missing:
        raise NotFittedError(
            f"evaluate needs a fitted Recommender; {type(recommender).__name__} has no "
            f"{', '.join(missing)}. Call fit() (or Recommender.load()) first"
        )
    ids = list(recommender.ids_)
    embeddings = np.asarray(recommender.embeddings_, dtype=np.float32)
    if embeddings.ndim != 2 or len(embeddings) != len(ids):
        raise CatalogError(
            f"recommender.embeddings_ has shape {embeddings.shape} but it holds {len(ids)} ids"
        )
    if not ids:
        raise NotFittedError("the recommender's catalogue is empty; nothing to evaluate")
    return ids, embeddings, recommender.index_


def _is_key_tuple(labels: Any, recommender: Any) -> bool:
    """A tuple of the catalogue's metadata keys (``("articleType", "baseColour")``).

    A tuple that is not (some value is no key of the catalogue) stays a sequence
    of labels aligned with the ids, as before.
    """
    if not (
        isinstance(labels, tuple)
        and 1 <= len(labels) <= 16
        and all(isinstance(x, str) and x for x in labels)
    ):
        return False
    fields = getattr(recommender, "fields_", None)
    if not isinstance(fields, Mapping):
        return False
    return all(x in fields for x in labels)


def _resolve_labels(labels: LabelsLike, ids: Sequence[Any], recommender: Any) -> list[Any]:
    n = len(ids)
    if _is_key_tuple(labels, recommender):
        # several metadata keys: relevant when every one matches ("type and colour")
        assert isinstance(labels, tuple)
        columns = [_resolve_labels(key, ids, recommender) for key in labels]
        return [
            None if any(_is_missing(v) for v in row) else " / ".join(str(v) for v in row)
            for row in zip(*columns, strict=True)
        ]
    if isinstance(labels, str):
        metadata = getattr(recommender, "metadata_", None) if recommender is not None else None
        if metadata is None:
            raise ConfigError(
                f"labels={labels!r} names a metadata key, but there is no metadata here; "
                "pass the labels as a sequence aligned with the ids or a mapping id -> label"
            )
        metadata = list(metadata)
        if len(metadata) != n:
            raise CatalogError(f"recommender.metadata_ has {len(metadata)} rows for {n} ids")
        out = [m.get(labels) if isinstance(m, Mapping) else None for m in metadata]
        if not any(isinstance(m, Mapping) and labels in m for m in metadata):
            known = sorted(
                {str(key) for m in metadata[:1000] if isinstance(m, Mapping) for key in m}
            )
            raise ConfigError(
                f"no catalogue item has metadata key {labels!r}; "
                f"keys present: {', '.join(known) or 'none (the catalogue has no metadata)'}"
            )
        return out
    if isinstance(labels, Mapping):
        return [labels.get(i) for i in ids]
    if isinstance(labels, (Sequence, np.ndarray)):
        out = list(labels)
        if len(out) != n:
            raise ConfigError(
                f"labels has {len(out)} entries but the catalogue has {n} items; give one "
                "label per item in catalogue order, or a mapping id -> label"
            )
        return out
    raise ConfigError(
        "labels must be a metadata key (str), a sequence aligned with the ids, or a "
        f"mapping id -> label, got {type(labels).__name__}"
    )


def _encode_labels(labels: list[Any], n: int) -> tuple[np.ndarray, list[Hashable]]:
    """Return integer codes (-1 = unlabelled) and the label of each code."""
    codes = np.full(n, -1, dtype=np.int64)
    lookup: dict[Hashable, int] = {}
    for i, lab in enumerate(labels):
        if _is_missing(lab):
            continue
        if isinstance(lab, np.generic):
            lab = lab.item()
        try:
            codes[i] = lookup.setdefault(lab, len(lookup))
        except TypeError:
            raise ConfigError(
                f"label of item {i} is not hashable: {lab!r}; labels must be str, int, ..."
            ) from None
    return codes, list(lookup)


def _is_missing(label: Any) -> bool:
    if label is None:
        return True
    try:
        return bool(isinstance(label, (float, np.floating)) and math.isnan(label))
    except TypeError:
        return False


def _positions_of(queries: Iterable[Any], ids: Sequence[Any]) -> np.ndarray:
    position = {i: p for p, i in enumerate(ids)}
    out = []
    for q in queries:
        try:
            out.append(position[q])
        except (KeyError, TypeError):
            raise UnknownIdError(
                f"query id {q!r} is not in the catalogue ({len(ids)} items)"
            ) from None
    return np.asarray(out, dtype=np.int64)


def _as_vectors(embeddings: ArrayLike) -> np.ndarray:
    """``embeddings`` as float32 unit rows (a zero row stays zero), or an error."""
    return unit_rows(embeddings, name="embeddings")


def _chunks(n: int, size: int, progress: bool) -> Iterator[slice]:
    from ..extractors.base import _progress_bar

    bar = _progress_bar(n, progress, desc="evaluate", unit="query")
    try:
        for start in range(0, n, size):
            stop = min(start + size, n)
            yield slice(start, stop)
            if bar is not None:
                bar.update(stop - start)
    finally:
        if bar is not None:
            bar.close()


def _exact_neighbours(
    vectors: np.ndarray, query_pos: np.ndarray, k: int, batch_size: int, progress: bool
) -> np.ndarray:
    """Return ``(len(query_pos), k)`` row numbers of each query's nearest others (-1 pads)."""
    n = len(vectors)
    found = min(k, n - 1)
    out = np.full((len(query_pos), k), -1, dtype=np.int64)
    if found == 0:
        return out
    rows = max(1, min(batch_size, _MAX_SCORE_CELLS // n))
    for sl in _chunks(len(query_pos), rows, progress):
        qp = query_pos[sl]
        scores = vectors[qp] @ vectors.T
        scores[np.arange(len(qp)), qp] = -np.inf  # leave the query itself out, by position
        top = np.argpartition(-scores, found - 1, axis=1)[:, :found]  # found < n always
        # ties at the cut-off (duplicates) go to the lower row number, as in the sort below
        cutoff = np.take_along_axis(scores, top, axis=1).min(axis=1)
        tied = np.flatnonzero((scores >= cutoff[:, np.newaxis]).sum(axis=1) > found)
        for r in tied:
            above = np.flatnonzero(scores[r] >= cutoff[r])
            top[r] = above[np.lexsort((above, -scores[r, above]))[:found]]
        top_scores = np.take_along_axis(scores, top, axis=1)
        order = np.lexsort((top, -top_scores), axis=1)  # by score, ties by row number
        out[sl, :found] = np.take_along_axis(top, order, axis=1)[:, :found]
    return out


def _index_neighbours(
    index: _SearchIndex,
    vectors: np.ndarray,
    ids: Sequence[Any],
    query_pos: np.ndarray,
    k: int,
    batch_size: int,
    progress: bool,
) -> np.ndarray:
    """Search ``index`` for ``k + 1`` neighbours and drop each query's own id."""
    position = {i: p for p, i in enumerate(ids)}
    out = np.full((len(query_pos), k), -1, dtype=np.int64)
    for sl in _chunks(len(query_pos), batch_size, progress):
        qp = query_pos[sl]
        _, found = index.search(np.ascontiguousarray(vectors[qp]), k + 1)
        if len(found) != len(qp):
            raise CatalogError(
                f"the index answered {len(found)} result lists for {len(qp)} queries"
            )
        for row, (own, hits) in enumerate(zip(qp, found, strict=True)):
            kept: list[int] = []
            for hit in hits:
                p = position.get(hit)
                if p is None:
                    raise CatalogError(
                        f"the index returned id {hit!r}, which the recommender does not hold; "
                        "the index and the catalogue are out of sync (rebuild the index)"
                    )
                if p != own:  # by id, not by rank: a duplicate image may outrank itself
                    kept.append(p)
            kept = kept[:k]
            out[sl.start + row, : len(kept)] = kept
    return out


__all__ = ["LabelsLike", "evaluate", "evaluate_embeddings"]
