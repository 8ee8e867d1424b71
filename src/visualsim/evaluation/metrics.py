"""Recall@K, Precision@K and mAP@K over a relevance matrix, and the report of an evaluation.

The metric functions take a boolean ``relevant`` matrix of shape ``(n_queries, n_ranked)``
and know nothing about images, indexes or recommenders; the definitions are in
:mod:`visualsim.evaluation`.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, overload

import numpy as np
from numpy.typing import ArrayLike

from ..errors import ConfigError
from ..validation import check_choice, check_k

RecallMode = Literal["hit", "fraction"]
Reduce = Literal["mean", "none"]


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


__all__ = [
    "EvaluationReport",
    "RecallMode",
    "Reduce",
    "average_precision_at_k",
    "mean_average_precision_at_k",
    "precision_at_k",
    "recall_at_k",
]
