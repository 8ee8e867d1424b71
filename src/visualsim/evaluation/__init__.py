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

One module each: :mod:`~visualsim.evaluation.metrics` (the metric functions and
:class:`EvaluationReport`), :mod:`~visualsim.evaluation.leave_one_out` and
:mod:`~visualsim.evaluation.holdout`; every name is importable from here.

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

from .holdout import (
    HOLDOUT_MODES,
    HoldoutBy,
    HoldoutSplit,
    evaluate_holdout,
    holdout_split,
)
from .leave_one_out import LabelsLike, evaluate, evaluate_embeddings
from .metrics import (
    EvaluationReport,
    RecallMode,
    Reduce,
    average_precision_at_k,
    mean_average_precision_at_k,
    precision_at_k,
    recall_at_k,
)

__all__ = [
    "HOLDOUT_MODES",
    "EvaluationReport",
    "HoldoutBy",
    "HoldoutSplit",
    "LabelsLike",
    "RecallMode",
    "Reduce",
    "average_precision_at_k",
    "evaluate",
    "evaluate_embeddings",
    "evaluate_holdout",
    "holdout_split",
    "mean_average_precision_at_k",
    "precision_at_k",
    "recall_at_k",
]
