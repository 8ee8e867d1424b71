"""Retrieval quality: Recall@K, Precision@K and mAP@K, and leave-one-out evaluation.

Two layers, usable separately:

* **Metric functions over arrays** — :func:`recall_at_k`, :func:`precision_at_k`,
  :func:`average_precision_at_k` and :func:`mean_average_precision_at_k`. They take
  a boolean ``relevant`` matrix of shape ``(n_queries, n_ranked)``: row ``i``,
  column ``j`` says whether the ``j``-th result of query ``i`` is relevant. They
  know nothing about images, indexes or recommenders.
* **Leave-one-out over a labelled catalogue** — :func:`evaluate` (a fitted
  :class:`~visualsim.Recommender`, searched through its own index) and
  :func:`evaluate_embeddings` (a plain array, exact brute-force kNN with numpy).
  Every labelled item is a query, the item itself is left out of its own
  results, and the results with the same label are the relevant ones. Both
  return an :class:`EvaluationReport`.
* **The held-out protocol**, for anything learned from the labels (an
  adapter, see :mod:`visualsim.adaptation`) — :func:`holdout_split` (seeded;
  held-out *items*: new products of known labels, or held-out *labels*: classes
  never seen in training) and :func:`evaluate_holdout`, which scores the test
  part against itself only, so no training item is ever scored.

Definitions (``rel_j`` is 1 when the ``j``-th result is relevant, ``R`` the number
of relevant items that exist for the query, ``K`` the cut-off):

* ``precision@K = (1/K) * sum_{j<=K} rel_j`` — missing results (fewer than
  ``K`` ranked) count as not relevant.
* ``recall@K``, ``mode="hit"`` (deep-metric-learning convention, as reported on
  Stanford Online Products, CUB, In-Shop): 1 if at least one of the top ``K`` is
  relevant, else 0. This is what :func:`evaluate` reports as ``recall@K``.
* ``recall@K``, ``mode="fraction"`` (information-retrieval convention):
  ``(1/R) * sum_{j<=K} rel_j``, the share of all relevant items found in the top ``K``.
* ``AP@K = (1/min(K, R)) * sum_{j<=K} P@j * rel_j``; ``mAP@K`` is its mean over
  queries. A query with ``R = 0`` scores 0 for fraction-recall and AP.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, Protocol, overload

import numpy as np
from numpy.typing import ArrayLike

from .errors import CatalogError, ConfigError, InvalidVectorsError, NotFittedError, UnknownIdError
from .validation import check_choice, check_float, check_k, check_positive_int

logger = logging.getLogger(__name__)

RecallMode = Literal["hit", "fraction"]
Reduce = Literal["mean", "none"]
LabelsLike = str | Sequence[Any] | Mapping[Any, Any] | np.ndarray
"""A metadata key (str), a sequence aligned with the ids, or a mapping id → label."""

_MAX_SCORE_CELLS = 1 << 25
"""Largest (queries x catalogue) float32 score block :func:`evaluate_embeddings`
holds at once (128 MiB); the query chunk shrinks for big catalogues."""


# ---------------------------------------------------------------------------
# metric functions over a relevance matrix
# ---------------------------------------------------------------------------
@overload
def recall_at_k(
    relevant: ArrayLike,
    k: int,
    n_relevant: ArrayLike | None = ...,
    *,
    mode: RecallMode = ...,
    reduce: Literal["mean"] = ...,
) -> float: ...
@overload
def recall_at_k(
    relevant: ArrayLike,
    k: int,
    n_relevant: ArrayLike | None = ...,
    *,
    mode: RecallMode = ...,
    reduce: Literal["none"],
) -> np.ndarray: ...
def recall_at_k(
    relevant: ArrayLike,
    k: int,
    n_relevant: ArrayLike | None = None,
    *,
    mode: RecallMode = "hit",
    reduce: Reduce = "mean",
) -> float | np.ndarray:
    """Return Recall@K of ranked results, averaged over queries or per query.

    Parameters
    ----------
    relevant
        Boolean (or 0/1) array of shape ``(n_queries, n_ranked)``, results in rank
        order; a 1-D array is one query.
    k
        Cut-off, ``>= 1``. ``k`` may exceed ``n_ranked``.
    n_relevant
        ``(n_queries,)`` number of relevant items that exist for each query,
        ranked or not. Only ``mode="fraction"`` uses it; when ``None`` every
        relevant item is assumed to appear somewhere in ``relevant``'s row.
    mode
        ``"hit"``: 1 if any of the top ``k`` is relevant, else 0 (the
        deep-metric-learning Recall@K, e.g. Stanford Online Products; what
        :func:`evaluate` reports). ``"fraction"``: relevant items in the top
        ``k`` divided by ``n_relevant`` (the information-retrieval recall; 0
        for a query with nothing to find).
    reduce
        ``"mean"`` returns the mean over queries as a ``float``; ``"none"``
        returns the ``(n_queries,)`` float64 per-query values.

    Returns
    -------
    float or numpy.ndarray
        A value in ``[0, 1]``, or one per query.

    Examples
    --------
    >>> rel = [[False, True, False], [False, False, False]]
    >>> recall_at_k(rel, 1), recall_at_k(rel, 2)
    (0.0, 0.5)
    >>> recall_at_k(rel, 2, [4, 1], mode="fraction", reduce="none").tolist()
    [0.25, 0.0]
    """
    rel = _relevance(relevant)
    k = check_k(k)
    check_choice("reduce", reduce, ("mean", "none"))
    check_choice("mode", mode, ("hit", "fraction"))
    hits = rel[:, :k].sum(axis=1)
    if mode == "hit":
        per = (hits > 0).astype(np.float64)
    else:
        total = _n_relevant(rel, n_relevant)
        per = np.divide(hits, total, out=np.zeros(len(rel)), where=total > 0)
    return _reduce(per, reduce)


@overload
def precision_at_k(relevant: ArrayLike, k: int, *, reduce: Literal["mean"] = ...) -> float: ...
@overload
def precision_at_k(relevant: ArrayLike, k: int, *, reduce: Literal["none"]) -> np.ndarray: ...
def precision_at_k(relevant: ArrayLike, k: int, *, reduce: Reduce = "mean") -> float | np.ndarray:
    """Return Precision@K: the share of the top ``k`` results that are relevant.

    Parameters
    ----------
    relevant
        Boolean (or 0/1) array of shape ``(n_queries, n_ranked)``; 1-D is one query.
    k
        Cut-off, ``>= 1``. When fewer than ``k`` results are ranked the missing
        ones count as not relevant (the denominator stays ``k``).
    reduce
        ``"mean"`` (a ``float``) or ``"none"`` (per-query float64 array).

    Returns
    -------
    float or numpy.ndarray
        A value in ``[0, 1]``, or one per query.

    Examples
    --------
    >>> precision_at_k([[True, False, True, True]], 4)
    0.75
    """
    rel = _relevance(relevant)
    k = check_k(k)
    check_choice("reduce", reduce, ("mean", "none"))
    return _reduce(rel[:, :k].sum(axis=1) / k, reduce)


@overload
def average_precision_at_k(
    relevant: ArrayLike,
    k: int,
    n_relevant: ArrayLike | None = ...,
    *,
    reduce: Literal["mean"] = ...,
) -> float: ...
@overload
def average_precision_at_k(
    relevant: ArrayLike,
    k: int,
    n_relevant: ArrayLike | None = ...,
    *,
    reduce: Literal["none"],
) -> np.ndarray: ...
def average_precision_at_k(
    relevant: ArrayLike,
    k: int,
    n_relevant: ArrayLike | None = None,
    *,
    reduce: Reduce = "mean",
) -> float | np.ndarray:
    """Return AP@K, ``sum_{j<=K} P@j * rel_j / min(K, R)``, per query or its mean (mAP@K).

    Parameters
    ----------
    relevant
        Boolean (or 0/1) array of shape ``(n_queries, n_ranked)``; 1-D is one query.
    k
        Cut-off, ``>= 1``.
    n_relevant
        ``(n_queries,)`` number ``R`` of relevant items that exist per query.
        When ``None`` every relevant item is assumed to appear in ``relevant``'s
        row (``R`` = the row's sum). A query with ``R = 0`` scores 0.
    reduce
        ``"mean"`` (mAP@K as a ``float``) or ``"none"`` (per-query AP@K).

    Returns
    -------
    float or numpy.ndarray
        A value in ``[0, 1]``, or one per query. It is 1 exactly when the first
        ``min(K, R)`` results are all relevant.

    Examples
    --------
    >>> # relevant at ranks 1 and 3, 2 relevant in all: (1/1 + 2/3) / 2
    >>> round(average_precision_at_k([[True, False, True]], 3), 4)
    0.8333
    """
    rel = _relevance(relevant)
    k = check_k(k)
    check_choice("reduce", reduce, ("mean", "none"))
    total = _n_relevant(rel, n_relevant)
    top = rel[:, :k]
    precision_at_j = np.cumsum(top, axis=1) / np.arange(1, top.shape[1] + 1)
    summed = (precision_at_j * top).sum(axis=1)
    denom = np.minimum(total, k)
    per = np.divide(summed, denom, out=np.zeros(len(rel)), where=denom > 0)
    return _reduce(per, reduce)


def mean_average_precision_at_k(
    relevant: ArrayLike, k: int, n_relevant: ArrayLike | None = None
) -> float:
    """Return mAP@K, the mean over queries of :func:`average_precision_at_k`.

    Examples
    --------
    >>> # AP 1 (relevant first) and AP 1/2 (relevant second), one relevant each
    >>> mean_average_precision_at_k([[True, False], [False, True]], 2)
    0.75
    """
    return average_precision_at_k(relevant, k, n_relevant, reduce="mean")


def _relevance(relevant: ArrayLike) -> np.ndarray:
    arr = np.asarray(relevant)
    if arr.ndim == 1:
        arr = arr[np.newaxis, :]
    if arr.ndim != 2:
        raise ConfigError(f"relevant must be a (n_queries, n_ranked) array, got shape {arr.shape}")
    if arr.dtype != np.bool_:
        if arr.size and not (np.issubdtype(arr.dtype, np.number) and np.isin(arr, (0, 1)).all()):
            raise ConfigError(
                "relevant must hold booleans (or 0/1): is result j of query i relevant"
            )
        arr = arr.astype(bool)
    return arr


def _n_relevant(rel: np.ndarray, n_relevant: ArrayLike | None) -> np.ndarray:
    ranked = rel.sum(axis=1)
    if n_relevant is None:
        return ranked
    total = np.asarray(n_relevant)
    if total.ndim == 0:
        total = np.full(len(rel), total)
    if total.shape != (len(rel),):
        raise ConfigError(
            f"n_relevant must have one entry per query ({len(rel)}), got shape {total.shape}"
        )
    if not np.issubdtype(total.dtype, np.number) or (total != np.round(total)).any():
        raise ConfigError("n_relevant must hold whole numbers (counts of relevant items)")
    total = total.astype(np.int64)
    short = np.flatnonzero(total < ranked)
    if short.size:
        i = int(short[0])
        raise ConfigError(
            f"n_relevant[{i}] = {int(total[i])} but query {i} already ranks "
            f"{int(ranked[i])} relevant results; n_relevant counts every relevant item"
        )
    return total


def _check_ks(k: int | Iterable[int]) -> tuple[int, ...]:
    values = [k] if isinstance(k, (int, np.integer)) else list(k)
    if not values:
        raise ConfigError("k must name at least one cut-off, e.g. k=(1, 5, 10)")
    return tuple(sorted({check_k(v) for v in values}))


def _reduce(per: np.ndarray, reduce: Reduce) -> float | np.ndarray:
    per = np.asarray(per, dtype=np.float64)
    if reduce == "none":
        return per
    return float(per.mean()) if per.size else math.nan


# ---------------------------------------------------------------------------
# the report
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class EvaluationReport:
    """Leave-one-out retrieval quality of a catalogue, as returned by :func:`evaluate`.

    ``str(report)`` is an aligned table; :meth:`to_dict` is JSON-safe.

    Attributes
    ----------
    metrics
        ``{"recall@1": ..., "precision@1": ..., "map@1": ..., "recall@5": ...}``:
        hit-rate Recall@K (at least one relevant in the top K), Precision@K and
        mAP@K, averaged over the evaluated queries, for every K in :attr:`k`.
    k
        The cut-offs, ascending.
    n_queries
        Queries that were evaluated.
    n_items
        Items in the catalogue (the candidates every query ranks, minus itself).
    n_unlabelled
        Requested queries skipped because they have no label.
    n_singleton
        Requested queries skipped because no other item shares their label.
    label
        What the labels are (the metadata key), or ``None``.
    per_label
        ``label -> metrics`` (same keys as :attr:`metrics`) over that label's queries:
        which categories the embedding serves well, and which it confuses.
    label_sizes
        ``label -> number of evaluated queries`` with that label.
    chance_precision
        Expected Precision@K of a random ranking (mean over queries of
        ``(R) / (n_items - 1)``), the floor to compare against.
    """

    metrics: Mapping[str, float] = field(hash=False)
    k: tuple[int, ...]
    n_queries: int
    n_items: int
    n_unlabelled: int = 0
    n_singleton: int = 0
    label: str | None = None
    per_label: Mapping[Hashable, Mapping[str, float]] = field(
        default_factory=dict, hash=False, repr=False
    )
    label_sizes: Mapping[Hashable, int] = field(default_factory=dict, hash=False, repr=False)
    chance_precision: float = math.nan

    @property
    def n_skipped(self) -> int:
        """Requested queries that were not evaluated (unlabelled + singleton)."""
        return self.n_unlabelled + self.n_singleton

    def __getitem__(self, key: str) -> float:
        """Return one metric, e.g. ``report["recall@1"]``."""
        return self.metrics[key]

    def to_dict(self) -> dict[str, Any]:
        """Return the report as plain JSON-safe types (labels become strings)."""
        return {
            "label": self.label,
            "k": list(self.k),
            "n_queries": self.n_queries,
            "n_items": self.n_items,
            "n_skipped": self.n_skipped,
            "n_unlabelled": self.n_unlabelled,
            "n_singleton": self.n_singleton,
            "chance_precision": _json_float(self.chance_precision),
            "metrics": {name: _json_float(v) for name, v in self.metrics.items()},
            "per_label": {
                str(lab): {name: _json_float(v) for name, v in m.items()}
                for lab, m in self.per_label.items()
            },
            "label_sizes": {str(lab): int(n) for lab, n in self.label_sizes.items()},
        }

    def __str__(self) -> str:
        by = f" by {self.label!r}" if self.label else ""
        lines = [
            f"Leave-one-out retrieval{by}: {self.n_queries:,} queries over {self.n_items:,} items",
        ]
        if self.n_skipped:
            lines.append(
                f"skipped {self.n_skipped:,} {'query' if self.n_skipped == 1 else 'queries'}: "
                f"{self.n_unlabelled:,} unlabelled, "
                f"{self.n_singleton:,} alone in their label"
            )
        header = f"{'k':>5}  {'recall@k':>9}  {'precision@k':>11}  {'mAP@k':>7}"
        lines += [header, "-" * len(header)]
        for k in self.k:
            lines.append(
                f"{k:>5}  {self.metrics[f'recall@{k}']:>9.4f}  "
                f"{self.metrics[f'precision@{k}']:>11.4f}  {self.metrics[f'map@{k}']:>7.4f}"
            )
        lines.append(f"chance precision (random ranking): {self.chance_precision:.4f}")
        lines.append("recall@k = share of queries with at least one same-label item in the top k")
        return "\n".join(lines)


def _json_float(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


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
    if exact:
        return _evaluate(
            _as_vectors(embeddings),
            codes,
            values,
            ids,
            k,
            queries,
            label=name,
            batch_size=batch_size,
            progress=progress,
            neighbours_of=None,
        )

    def neighbours_of(query_pos: np.ndarray, n_neighbours: int) -> np.ndarray:
        return _index_neighbours(
            index, embeddings, ids, query_pos, n_neighbours, batch_size, progress
        )

    return _evaluate(
        embeddings,
        codes,
        values,
        ids,
        k,
        queries,
        label=name,
        batch_size=batch_size,
        progress=progress,
        neighbours_of=neighbours_of,
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
    x = np.asarray(embeddings, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise InvalidVectorsError(f"embeddings must be a non-empty (n, dim) array, got {x.shape}")
    if not np.isfinite(x).all():
        raise InvalidVectorsError("embeddings contain NaN or infinite values")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.where(norms > 0, norms, 1.0), dtype=np.float32)


def _chunks(n: int, size: int, progress: bool) -> Iterator[slice]:
    from .extractors.base import _progress_bar

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


# ---------------------------------------------------------------------------
# the held-out protocol: train on one part, score on another, never mixed
# ---------------------------------------------------------------------------
HoldoutBy = Literal["items", "labels"]
HOLDOUT_MODES: tuple[str, ...] = ("items", "labels")


@dataclass(frozen=True)
class HoldoutSplit:
    """Which items a learned step may see (``train``) and which it is scored on (``test``).

    Attributes
    ----------
    train, test
        Sorted row positions, disjoint. Unlabelled rows are in neither.
    by
        ``"items"``: every label has items on both sides (new products of known
        labels, the shop's daily case); ``"labels"``: the test labels never
        occur in ``train`` (classes never seen in training, the Stanford Online
        Products protocol).
    seed
        The seed the split was drawn with.
    test_labels
        With ``by="labels"``: the labels held out.
    """

    train: np.ndarray = field(hash=False)
    test: np.ndarray = field(hash=False)
    by: str
    seed: int
    test_labels: tuple[Hashable, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Return counts and settings as JSON-safe values (not the positions)."""
        return {
            "by": self.by,
            "seed": self.seed,
            "n_train": int(self.train.size),
            "n_test": int(self.test.size),
            "test_labels": [str(lab) for lab in self.test_labels],
        }


def holdout_split(
    labels: Sequence[Any] | np.ndarray,
    *,
    by: HoldoutBy | str = "items",
    test_size: float = 0.2,
    groups: Sequence[Any] | np.ndarray | None = None,
    seed: int = 0,
) -> HoldoutSplit:
    """Split labelled rows into a training part and a held-out test part, seeded.

    Parameters
    ----------
    labels
        One label per row (``None``/NaN: unlabelled, left out of both parts).
    by
        ``"items"``: within every label, a ``test_size`` share of its items (at
        least 2 when it has 4 or more, so each test query has a relevant item)
        goes to ``test``. ``"labels"``: a ``test_size`` share of the distinct
        labels (at least two when there are three or more, so a test query can
        be confused; at least one left for training) goes to ``test`` with all
        their items.
    test_size
        Share held out, in ``(0, 1)``.
    groups
        Optional product ids aligned with ``labels`` (several photos of one
        product): with ``by="items"`` a group's rows stay on one side, so a
        photo is never scored against its own product's training photos.
    seed
        Seed of the draw; the same inputs and seed give the same split.

    Returns
    -------
    HoldoutSplit

    Raises
    ------
    ConfigError
        A bad ``by`` or ``test_size``, ``groups`` of another length, or fewer
        than two labels with ``by="labels"``.

    Examples
    --------
    >>> split = holdout_split(["a"] * 5 + ["b"] * 5, test_size=0.4, seed=0)
    >>> split.train.size, split.test.size
    (6, 4)
    """
    check_choice("by", by, HOLDOUT_MODES)
    test_size = check_float(
        "test_size", test_size, minimum=0.0, maximum=1.0, open_minimum=True, open_maximum=True
    )
    values = list(labels)
    n = len(values)
    codes, names = _encode_labels(values, n)
    rng = np.random.default_rng(seed)
    test = np.zeros(n, dtype=bool)
    held: tuple[Hashable, ...] = ()
    if by == "labels":
        if len(names) < 2:
            raise ConfigError(
                f"by='labels' needs at least two distinct labels, found {len(names)}; "
                "hold out items instead (by='items')"
            )
        least = 2 if len(names) >= 3 else 1  # two labels, so a test query can be wrong
        n_test = min(len(names) - 1, max(least, round(test_size * len(names))))
        chosen = np.sort(rng.permutation(len(names))[:n_test])
        test = np.isin(codes, chosen)
        held = tuple(names[c] for c in chosen)
    else:
        if groups is not None:
            group_list = list(groups)
            if len(group_list) != n:
                raise ConfigError(f"groups has {len(group_list)} entries for {n} labels")
            unit, _ = _encode_labels(group_list, n)
            unit = np.where(unit >= 0, unit, n + np.arange(n))  # no group: its own unit
        else:
            unit = np.arange(n)
        for c in range(len(names)):
            rows = np.flatnonzero(codes == c)
            units = np.unique(unit[rows])
            if units.size < 2:
                continue
            want = round(test_size * units.size)
            if units.size >= 4:
                want = max(want, 2)
            want = min(max(want, 1), units.size - 1)
            picked = rng.permutation(units)[:want]
            test[rows[np.isin(unit[rows], picked)]] = True
    labelled = codes >= 0
    return HoldoutSplit(
        train=np.flatnonzero(labelled & ~test),
        test=np.flatnonzero(labelled & test),
        by=by,
        seed=int(seed),
        test_labels=held,
    )


def evaluate_holdout(
    embeddings: ArrayLike,
    labels: Sequence[Any] | np.ndarray,
    split: HoldoutSplit,
    k: int | Iterable[int] = (1, 5, 10),
    *,
    label_name: str | None = None,
    batch_size: int = 1024,
) -> EvaluationReport:
    """Return leave-one-out quality over the held-out items only.

    Queries and candidates are both ``split.test``: no training item is ever
    a query or a result, so a step fitted on ``split.train`` is scored on
    items (and, with ``by="labels"``, on labels) it never saw.

    Parameters
    ----------
    embeddings
        ``(n, dim)`` vectors of every row (or only of the test rows, in
        ``split.test`` order, when it has ``len(split.test)`` rows).
    labels
        The labels the split was made from.
    split
        From :func:`holdout_split`.
    k, label_name, batch_size
        As :func:`evaluate_embeddings`.
    """
    x = np.asarray(embeddings)
    values = list(labels)
    test = split.test
    if x.ndim == 2 and x.shape[0] == test.size and test.size != len(values):
        rows = x
    else:
        if x.ndim != 2 or x.shape[0] != len(values):
            raise ConfigError(
                f"embeddings has {x.shape[0] if x.ndim else 0} rows; give one per label "
                f"({len(values)}) or one per test item ({test.size})"
            )
        rows = x[test]
    return evaluate_embeddings(
        rows,
        [values[i] for i in test],
        k,
        label_name=label_name,
        batch_size=batch_size,
    )


__all__ = [
    "HOLDOUT_MODES",
    "EvaluationReport",
    "HoldoutSplit",
    "average_precision_at_k",
    "evaluate",
    "evaluate_embeddings",
    "evaluate_holdout",
    "holdout_split",
    "mean_average_precision_at_k",
    "precision_at_k",
    "recall_at_k",
]
