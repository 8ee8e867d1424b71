"""Retrieval metrics and leave-one-out evaluation (visualsim.evaluation)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from visualsim.errors import (
    ConfigError,
    InvalidVectorsError,
    NotFittedError,
    UnknownIdError,
)
from visualsim.evaluation import (
    EvaluationReport,
    average_precision_at_k,
    evaluate,
    evaluate_embeddings,
    mean_average_precision_at_k,
    precision_at_k,
    recall_at_k,
)

# Three queries, five ranked results each; n_relevant says how many relevant items exist.
REL = np.array(
    [
        [1, 0, 1, 0, 0],  # relevant at ranks 1 and 3 (3 exist)
        [0, 0, 0, 1, 1],  # relevant at ranks 4 and 5 (2 exist)
        [0, 0, 0, 0, 0],  # nothing relevant ranked (1 exists)
    ],
    dtype=bool,
)
N_REL = np.array([3, 2, 1])


# ---------------------------------------------------------------------------
# hand-computed metric values
# ---------------------------------------------------------------------------
def test_precision_at_k_counts_relevant_in_top_k_over_k() -> None:
    assert precision_at_k(REL, 1) == pytest.approx((1 + 0 + 0) / 3)
    assert precision_at_k(REL, 3) == pytest.approx((2 / 3 + 0 + 0) / 3)  # 2/9
    assert precision_at_k(REL, 5) == pytest.approx((2 / 5 + 2 / 5 + 0) / 3)  # 4/15


def test_precision_at_k_beyond_the_ranking_counts_missing_results_as_irrelevant() -> None:
    # k=10 with 5 ranked: denominators stay 10 -> (2/10 + 2/10 + 0) / 3 = 2/15
    assert precision_at_k(REL, 10) == pytest.approx(2 / 15)


def test_recall_hit_mode_is_share_of_queries_with_a_relevant_in_top_k() -> None:
    assert recall_at_k(REL, 1) == pytest.approx(1 / 3)  # only query 0 hits at rank 1
    assert recall_at_k(REL, 3) == pytest.approx(1 / 3)  # query 1's first hit is rank 4
    assert recall_at_k(REL, 4) == pytest.approx(2 / 3)  # queries 0 and 1
    assert recall_at_k(REL, 4, reduce="none").tolist() == [1.0, 1.0, 0.0]


def test_recall_fraction_mode_divides_by_all_relevant_items() -> None:
    # k=3: query 0 found 2 of 3, query 1 0 of 2, query 2 0 of 1 -> (2/3 + 0 + 0) / 3 = 2/9
    assert recall_at_k(REL, 3, N_REL, mode="fraction") == pytest.approx(2 / 9)
    # k=5: 2/3, 2/2, 0/1 -> (2/3 + 1 + 0) / 3 = 5/9
    assert recall_at_k(REL, 5, N_REL, mode="fraction") == pytest.approx(5 / 9)


def test_recall_fraction_without_n_relevant_assumes_all_relevant_are_ranked() -> None:
    # R = row sums (2, 2, 0): k=3 -> (2/2 + 0/2 + 0) / 3 = 1/3; R = 0 scores 0
    per = recall_at_k(REL, 3, mode="fraction", reduce="none")
    assert per.tolist() == pytest.approx([1.0, 0.0, 0.0])


def test_average_precision_hand_computed() -> None:
    # query 0: (P@1 * 1 + P@3 * 1) / min(5, 3) = (1/1 + 2/3) / 3 = 5/9
    # query 1: (P@4 + P@5) / min(5, 2)        = (1/4 + 2/5) / 2 = 13/40
    # query 2: nothing relevant ranked        = 0
    per = average_precision_at_k(REL, 5, N_REL, reduce="none")
    assert per.tolist() == pytest.approx([5 / 9, 13 / 40, 0.0])
    assert average_precision_at_k(REL, 5, N_REL) == pytest.approx((5 / 9 + 13 / 40) / 3)


def test_average_precision_divides_by_min_of_k_and_n_relevant() -> None:
    # k=2: query 0 has P@1 * 1 = 1, divided by min(2, 3) = 2 -> 1/2; others 0 -> mean 1/6
    assert average_precision_at_k(REL, 2, N_REL) == pytest.approx(1 / 6)


def test_average_precision_defaults_n_relevant_to_the_row_sum() -> None:
    # query 0 with R = 2: (1/1 + 2/3) / 2 = 5/6
    assert average_precision_at_k(REL[:1], 5) == pytest.approx(5 / 6)


def test_mean_average_precision_is_the_mean_of_ap() -> None:
    # AP 1 (hit at rank 1) and AP 1/2 (hit at rank 2) -> 3/4
    assert mean_average_precision_at_k([[1, 0], [0, 1]], 2) == pytest.approx(0.75)
    assert mean_average_precision_at_k(REL, 5, N_REL) == pytest.approx(
        average_precision_at_k(REL, 5, N_REL)
    )


def test_a_one_dimensional_relevance_array_is_one_query() -> None:
    assert precision_at_k([True, False], 2, reduce="none").shape == (1,)
    assert recall_at_k([False, True], 2) == 1.0


def test_metric_inputs_are_validated() -> None:
    with pytest.raises(ConfigError, match="k must be an integer >= 1"):
        precision_at_k(REL, 0)
    with pytest.raises(ConfigError, match="k must be"):
        recall_at_k(REL, 1.5)  # type: ignore[call-overload]
    with pytest.raises(ConfigError, match="k must be"):
        recall_at_k(REL, True)
    with pytest.raises(ConfigError, match="mode"):
        recall_at_k(REL, 1, mode="ir")  # type: ignore[call-overload]
    with pytest.raises(ConfigError, match="reduce"):
        precision_at_k(REL, 1, reduce="sum")  # type: ignore[call-overload]
    with pytest.raises(ConfigError, match="booleans"):
        precision_at_k([[0.5, 1.0]], 1)
    with pytest.raises(ConfigError, match="shape"):
        precision_at_k(np.zeros((2, 2, 2), bool), 1)
    with pytest.raises(ConfigError, match="one entry per query"):
        average_precision_at_k(REL, 2, [1, 2])
    with pytest.raises(ConfigError, match=r"n_relevant\[0\] = 1"):
        average_precision_at_k(REL, 2, [1, 2, 1])  # query 0 already ranks 2 relevant


# ---------------------------------------------------------------------------
# properties
# ---------------------------------------------------------------------------
relevance = hnp.arrays(
    bool, hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=12), elements=st.booleans()
)


@settings(deadline=None, max_examples=60)
@given(rel=relevance, extra=st.integers(0, 5), k=st.integers(1, 14))
def test_recall_is_monotone_non_decreasing_in_k(rel: np.ndarray, extra: int, k: int) -> None:
    n_rel = rel.sum(axis=1) + extra
    for mode in ("hit", "fraction"):
        lower = recall_at_k(rel, k, n_rel, mode=mode, reduce="none")
        upper = recall_at_k(rel, k + 1, n_rel, mode=mode, reduce="none")
        assert np.all(upper >= lower)


@settings(deadline=None, max_examples=60)
@given(rel=relevance, extra=st.integers(0, 5), k=st.integers(1, 14))
def test_metrics_stay_between_zero_and_one(rel: np.ndarray, extra: int, k: int) -> None:
    n_rel = rel.sum(axis=1) + extra
    for values in (
        average_precision_at_k(rel, k, n_rel, reduce="none"),
        precision_at_k(rel, k, reduce="none"),
        recall_at_k(rel, k, n_rel, mode="fraction", reduce="none"),
        recall_at_k(rel, k, reduce="none"),
    ):
        assert np.all((values >= 0) & (values <= 1 + 1e-12))


@settings(deadline=None, max_examples=60)
@given(n_relevant=st.integers(1, 10), n_ranked=st.integers(1, 12), k=st.integers(1, 12))
def test_a_perfect_ranking_scores_one(n_relevant: int, n_ranked: int, k: int) -> None:
    rel = np.zeros((1, max(n_ranked, n_relevant)), bool)
    rel[0, :n_relevant] = True  # every relevant item first
    assert recall_at_k(rel, k) == 1.0
    assert recall_at_k(rel, k, [n_relevant], mode="fraction") == pytest.approx(
        min(k, n_relevant) / n_relevant
    )
    assert average_precision_at_k(rel, k, [n_relevant]) == pytest.approx(1.0)
    if k <= n_relevant:  # enough relevant items to fill the top k
        assert precision_at_k(rel, k) == 1.0
    if k >= n_relevant:
        assert recall_at_k(rel, k, [n_relevant], mode="fraction") == 1.0


@settings(deadline=None, max_examples=40)
@given(shape=st.tuples(st.integers(1, 6), st.integers(1, 10)), k=st.integers(1, 12))
def test_a_ranking_with_nothing_relevant_scores_zero(shape: tuple[int, int], k: int) -> None:
    rel = np.zeros(shape, bool)
    n_rel = np.full(shape[0], 3)
    assert recall_at_k(rel, k) == 0.0
    assert recall_at_k(rel, k, n_rel, mode="fraction") == 0.0
    assert precision_at_k(rel, k) == 0.0
    assert average_precision_at_k(rel, k, n_rel) == 0.0


@settings(deadline=None, max_examples=40)
@given(rel=relevance, k=st.integers(1, 14))
def test_hit_recall_is_at_least_precision_and_ap(rel: np.ndarray, k: int) -> None:
    hit = recall_at_k(rel, k, reduce="none")
    assert np.all(hit >= precision_at_k(rel, k, reduce="none"))
    assert np.all(hit >= average_precision_at_k(rel, k, reduce="none") - 1e-12)


# ---------------------------------------------------------------------------
# leave-one-out evaluation
# ---------------------------------------------------------------------------
def _circle(degrees: Sequence[float]) -> np.ndarray:
    rad = np.deg2rad(np.asarray(degrees, dtype=np.float64))
    return np.stack([np.cos(rad), np.sin(rad)], axis=1).astype(np.float32)


# Five items on the unit circle; cosine order = angular order, no ties.
ANGLES = [0, 10, 25, 90, 105]
LABELS = ["a", "a", "b", "b", "a"]
# Rankings (self excluded) and relevance:
#   q0 (a,   0°): 1a 2b 3b 4a -> 1 0 0 1, R = 2
#   q1 (a,  10°): 0a 2b 3b 4a -> 1 0 0 1, R = 2
#   q2 (b,  25°): 1a 0a 3b 4a -> 0 0 1 0, R = 1
#   q3 (b,  90°): 4a 2b 1a 0a -> 0 1 0 0, R = 1
#   q4 (a, 105°): 3b 2b 1a 0a -> 0 0 1 1, R = 2


def test_evaluate_embeddings_matches_hand_computed_leave_one_out() -> None:
    report = evaluate_embeddings(_circle(ANGLES), LABELS, k=(1, 2, 4))
    expected = {
        "recall@1": (1 + 1 + 0 + 0 + 0) / 5,
        "precision@1": (1 + 1 + 0 + 0 + 0) / 5,
        "map@1": (1 + 1 + 0 + 0 + 0) / 5,
        "recall@2": (1 + 1 + 0 + 1 + 0) / 5,
        "precision@2": (0.5 + 0.5 + 0 + 0.5 + 0) / 5,
        # AP@2: q0, q1: 1/min(2,2); q3: P@2 / min(2,1) = 1/2
        "map@2": (0.5 + 0.5 + 0 + 0.5 + 0) / 5,
        "recall@4": 1.0,
        "precision@4": (2 / 4 + 2 / 4 + 1 / 4 + 1 / 4 + 2 / 4) / 5,
        # AP@4: q0, q1: (1/1 + 2/4)/2; q2: (1/3)/1; q3: (1/2)/1; q4: (1/3 + 2/4)/2
        "map@4": (0.75 + 0.75 + 1 / 3 + 0.5 + (1 / 3 + 0.5) / 2) / 5,
    }
    assert set(report.metrics) == set(expected)
    for name, value in expected.items():
        assert report[name] == pytest.approx(value), name
    assert report.n_queries == 5
    assert report.n_items == 5
    assert report.n_skipped == 0
    assert report.k == (1, 2, 4)
    assert report.chance_precision == pytest.approx((2 + 2 + 1 + 1 + 2) / 5 / 4)
    # per label: a = q0, q1, q4; b = q2, q3
    assert report.per_label["a"]["recall@1"] == pytest.approx(2 / 3)
    assert report.per_label["b"]["recall@1"] == 0.0
    assert report.per_label["b"]["recall@2"] == pytest.approx(1 / 2)
    assert dict(report.label_sizes) == {"a": 3, "b": 2}


def test_evaluate_embeddings_chunked_equals_unchunked() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 8)).astype(np.float32)
    labels = rng.integers(0, 4, size=60).tolist()
    whole = evaluate_embeddings(x, labels, k=(1, 5))
    chunked = evaluate_embeddings(x, labels, k=(1, 5), batch_size=7)
    assert whole.metrics == chunked.metrics


class FakeIndex:
    """Brute-force cosine index over caller ids; ties go to the lower position first."""

    def __init__(self, vectors: np.ndarray, ids: list[Any], *, hide_self: bool = False) -> None:
        self.vectors = vectors
        self.ids = ids
        self.hide_self = hide_self
        self.calls: list[tuple[int, int]] = []

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, list[list[Any]]]:
        self.calls.append((len(queries), k))
        scores = queries @ self.vectors.T
        out_scores, out_ids = [], []
        for q, row in zip(queries, scores, strict=True):
            ranked = np.lexsort((np.arange(len(row)), -row)).tolist()
            if self.hide_self:  # an approximate index that misses the query itself
                ranked = [i for i in ranked if not np.array_equal(self.vectors[i], q)]
            order = ranked[:k]
            out_scores.append(row[order])
            out_ids.append([self.ids[i] for i in order])
        return np.asarray(out_scores, dtype=np.float32), out_ids


class FakeRecommender:
    """The attributes evaluate() reads from a fitted Recommender."""

    def __init__(
        self,
        vectors: np.ndarray,
        ids: list[Any] | None = None,
        metadata: list[dict[str, Any]] | None = None,
        *,
        hide_self: bool = False,
    ) -> None:
        self.ids_ = list(range(len(vectors))) if ids is None else ids
        self.embeddings_ = vectors
        self.embeddings_.flags.writeable = False
        self.metadata_ = metadata if metadata is not None else [{} for _ in self.ids_]
        self.index_ = FakeIndex(vectors, self.ids_, hide_self=hide_self)

    def __len__(self) -> int:
        return len(self.ids_)


def _clustered(n_per: int, n_labels: int, dim: int, spread: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = np.eye(dim)[:n_labels] * 10
    x = np.repeat(centres, n_per, axis=0) + rng.normal(scale=spread, size=(n_per * n_labels, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_evaluate_on_label_clusters_scores_perfectly() -> None:
    vectors = _clustered(n_per=12, n_labels=4, dim=8, spread=0.3, seed=1)
    ids = [f"item-{i}" for i in range(len(vectors))]
    meta = [{"articleType": f"type{i // 12}"} for i in range(len(vectors))]
    report = evaluate(FakeRecommender(vectors, ids, meta), "articleType", k=(1, 5, 10))
    for k in (1, 5, 10):
        assert report[f"recall@{k}"] == 1.0
        assert report[f"precision@{k}"] == 1.0  # 11 same-label neighbours >= 10
        assert report[f"map@{k}"] == pytest.approx(1.0)
    assert report.label == "articleType"
    assert report.n_queries == 48


def test_evaluate_on_random_vectors_is_near_chance() -> None:
    rng = np.random.default_rng(2)
    vectors = rng.normal(size=(400, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    labels = rng.integers(0, 4, size=400).tolist()
    report = evaluate(FakeRecommender(vectors), labels, k=10)
    assert report.chance_precision == pytest.approx(0.25, abs=0.03)
    assert report["precision@10"] == pytest.approx(report.chance_precision, abs=0.05)
    assert report["recall@10"] < 1.0


def test_evaluate_through_the_index_agrees_with_exact_evaluation() -> None:
    rng = np.random.default_rng(3)
    vectors = _clustered(n_per=10, n_labels=3, dim=6, spread=3.0, seed=3)
    labels = rng.permutation([i // 10 for i in range(30)]).tolist()
    rec = FakeRecommender(vectors)
    via_index = evaluate(rec, labels, k=(1, 3, 5))
    exact = evaluate(rec, labels, k=(1, 3, 5), exact=True)
    plain = evaluate_embeddings(vectors, labels, k=(1, 3, 5))
    for name, value in plain.metrics.items():
        assert via_index[name] == pytest.approx(value)
        assert exact[name] == pytest.approx(value)


def test_evaluate_searches_k_plus_one_in_batches() -> None:
    rec = FakeRecommender(_clustered(n_per=5, n_labels=2, dim=4, spread=0.1, seed=4))
    evaluate(rec, [i // 5 for i in range(10)], k=(1, 3), batch_size=4)
    assert rec.index_.calls == [(4, 4), (4, 4), (2, 4)]


def test_self_is_dropped_by_id_even_when_a_duplicate_outranks_it() -> None:
    # items 0 and 1 are the same image with different labels; the index puts
    # item 0 first when item 1 is the query (tie broken by position).
    vectors = _circle([0, 0, 50, 130])
    labels = ["a", "b", "b", "a"]
    rec = FakeRecommender(vectors)
    report = evaluate(rec, labels, k=1)
    # nearest other: q0 -> 1b (miss); q1 -> 0a (miss; dropping the first result
    # instead would keep q1 itself and count a hit); q2 -> 0a and 1b tie, the
    # lower position wins -> 0a (miss); q3 -> 2b (miss)
    assert report["recall@1"] == 0.0
    assert report.per_label["b"]["recall@1"] == 0.0
    exact = evaluate_embeddings(vectors, labels, k=1)
    assert exact["recall@1"] == 0.0


def test_an_index_that_misses_the_query_still_returns_k_neighbours() -> None:
    vectors = _clustered(n_per=4, n_labels=2, dim=4, spread=0.2, seed=5)
    labels = [i // 4 for i in range(8)]
    report = evaluate(FakeRecommender(vectors, hide_self=True), labels, k=3)
    assert report["precision@3"] == 1.0  # 3 same-label others, self never counted


def test_unlabelled_and_singleton_queries_are_skipped_and_counted() -> None:
    vectors = _circle([0, 5, 10, 50, 55, 120])
    labels = ["a", None, "a", float("nan"), "c", "a"]  # "c" has no other member
    report = evaluate_embeddings(vectors, labels, k=1)
    assert report.n_queries == 3
    assert report.n_unlabelled == 2
    assert report.n_singleton == 1
    assert report.n_skipped == 3
    # q0's nearest is item 1 (unlabelled: never relevant) -> miss; q2 -> item 1 -> miss;
    # q5 (120°) -> item 4 "c" -> miss
    assert report["recall@1"] == 0.0
    assert set(report.per_label) == {"a"}


def test_queries_restricts_evaluation_to_the_given_ids() -> None:
    ids = ["p0", "p1", "p2", "p3", "p4"]
    rec = FakeRecommender(_circle(ANGLES), ids)
    report = evaluate(rec, LABELS, k=1, queries=["p0", "p3"])
    # q0 hits (1a), q3 misses (4a) -> 1/2; candidates are still the whole catalogue
    assert report.n_queries == 2
    assert report["recall@1"] == 0.5
    assert report.n_items == 5
    with pytest.raises(UnknownIdError, match="'p9'"):
        evaluate(rec, LABELS, k=1, queries=["p9"])


def test_labels_can_be_a_metadata_key_a_sequence_or_a_mapping() -> None:
    ids = ["p0", "p1", "p2", "p3", "p4"]
    meta = [{"category": lab, "colour": "red"} for lab in LABELS]
    rec = FakeRecommender(_circle(ANGLES), ids, meta)
    by_key = evaluate(rec, "category", k=(1, 2))
    by_list = evaluate(rec, LABELS, k=(1, 2))
    by_map = evaluate(rec, dict(zip(ids, LABELS, strict=True)), k=(1, 2))
    by_array = evaluate(rec, np.array(LABELS), k=(1, 2))
    assert by_key.metrics == by_list.metrics == by_map.metrics == by_array.metrics
    assert by_key.label == "category"
    assert by_list.label is None


def test_a_mapping_missing_some_ids_leaves_them_unlabelled() -> None:
    report = evaluate_embeddings(_circle(ANGLES), {0: "a", 1: "a", 4: "a"}, k=1)
    assert report.n_unlabelled == 2
    assert report.n_queries == 3


def test_items_missing_the_metadata_key_are_unlabelled() -> None:
    meta: list[dict[str, Any]] = [{"t": "a"}, {"t": "a"}, {}, {"t": "b"}, {"t": "b"}]
    report = evaluate(FakeRecommender(_circle(ANGLES), metadata=meta), "t", k=1)
    assert report.n_unlabelled == 1
    assert report.n_queries == 4


def test_bad_inputs_raise_clear_errors() -> None:
    meta = [{"category": lab} for lab in LABELS]
    rec = FakeRecommender(_circle(ANGLES), metadata=meta)
    with pytest.raises(ConfigError, match=r"'articleType'.*keys present: category"):
        evaluate(rec, "articleType")
    with pytest.raises(ConfigError, match="labels has 3 entries but the catalogue has 5"):
        evaluate(rec, ["a", "b", "a"])
    with pytest.raises(ConfigError, match="k must be an integer >= 1"):
        evaluate(rec, LABELS, k=0)
    with pytest.raises(ConfigError, match="k must be an integer >= 1"):
        evaluate(rec, LABELS, k=(1, -5))
    with pytest.raises(ConfigError, match="at least one cut-off"):
        evaluate(rec, LABELS, k=())
    with pytest.raises(ConfigError, match="nothing to evaluate"):
        evaluate(rec, ["a", "b", "c", "d", None])
    with pytest.raises(ConfigError, match="batch_size"):
        evaluate(rec, LABELS, batch_size=0)
    with pytest.raises(ConfigError, match="metadata key"):
        evaluate_embeddings(_circle(ANGLES), "category")
    with pytest.raises(InvalidVectorsError, match="NaN"):
        evaluate_embeddings(np.array([[np.nan, 1.0], [1.0, 0.0]]), ["a", "a"])
    with pytest.raises(InvalidVectorsError, match=r"\(n, dim\)"):
        evaluate_embeddings(np.zeros(4), ["a"] * 4)
    with pytest.raises(ConfigError, match="ids has 2 entries"):
        evaluate_embeddings(_circle(ANGLES), LABELS, ids=["x", "y"])
    with pytest.raises(NotFittedError, match="fit"):
        evaluate(object(), LABELS)


def test_errors_are_value_errors_for_callers_that_catch_builtins() -> None:
    with pytest.raises(ValueError):
        recall_at_k(REL, 0)


# ---------------------------------------------------------------------------
# the report
# ---------------------------------------------------------------------------
def test_report_prints_an_aligned_table() -> None:
    vectors = _circle([*ANGLES, 200])
    report = evaluate_embeddings(vectors, [*LABELS, None], k=(1, 2), label_name="category")
    text = str(report)
    lines = text.splitlines()
    assert "by 'category'" in lines[0]
    assert "5 queries over 6 items" in lines[0]
    assert "1 unlabelled" in text
    header = next(line for line in lines if "recall@k" in line)
    rows = [line for line in lines if line.strip().split(" ")[0] in ("1", "2")]
    assert len(rows) == 2
    assert all(len(row) == len(header) for row in rows)
    assert f"{report['precision@2']:.4f}" in rows[1]


def test_report_to_dict_is_json_safe_and_complete() -> None:
    report = evaluate_embeddings(_circle(ANGLES), [1, 1, 2, 2, 1], k=(1, 4))
    data = json.loads(json.dumps(report.to_dict()))
    assert data["metrics"]["recall@4"] == 1.0
    assert data["k"] == [1, 4]
    assert data["n_queries"] == 5
    assert data["n_skipped"] == 0
    assert set(data["per_label"]) == {"1", "2"}  # int labels become strings
    assert data["label_sizes"] == {"1": 3, "2": 2}
    assert math.isclose(data["chance_precision"], 0.4)


def test_report_is_immutable() -> None:
    report = evaluate_embeddings(_circle(ANGLES), LABELS, k=1)
    assert isinstance(report, EvaluationReport)
    with pytest.raises(AttributeError):
        report.n_queries = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        report.metrics["recall@1"] = 0.0  # type: ignore[index]


def test_a_tuple_of_keys_is_relevant_when_every_one_matches() -> None:
    """'The same type in the same colour': the combined label, as the issue measures it."""
    from visualsim import Recommender

    rng = np.random.default_rng(4)
    emb = rng.random((60, 8)).astype(np.float32)
    meta = [{"t": "abc"[i % 3], "c": "xy"[i % 2]} for i in range(60)]
    meta[5] = {"t": "a"}  # no colour: unlabelled for the pair, still a candidate
    rec = Recommender.from_vectors(emb, list(range(60)), meta)
    combined = evaluate(rec, ("t", "c"), k=(1, 5))
    joined = [f"{m['t']} / {m['c']}" if "c" in m else None for m in meta]
    by_hand = evaluate(rec, joined, k=(1, 5))
    assert combined.metrics == by_hand.metrics
    assert combined.label == "t+c"
    assert combined.metrics["precision@5"] < evaluate(rec, "t", k=(1, 5)).metrics["precision@5"]
    # a tuple that names no metadata keys is still labels aligned with the ids
    aligned = tuple(m["t"] for m in meta)
    assert evaluate(rec, aligned, k=(5,)).metrics == evaluate(rec, "t", k=(5,)).metrics


def test_cli_evaluate_on_several_labels(tmp_path: Any, capsys: Any) -> None:
    import json

    from visualsim import Recommender
    from visualsim.cli import main

    emb = np.random.default_rng(5).random((40, 6)).astype(np.float32)
    meta = [{"t": "ab"[i % 2], "c": "xyz"[i % 3]} for i in range(40)]
    Recommender.from_vectors(emb, list(range(40)), meta).save(tmp_path / "c")
    assert main(["evaluate", str(tmp_path / "c"), "--label", "t,c", "-k", "5", "--json"]) == 0
    both = json.loads(capsys.readouterr().out)
    assert main(["evaluate", str(tmp_path / "c"), "--label", "t", "-k", "5", "--json"]) == 0
    one = json.loads(capsys.readouterr().out)
    assert both["label"] == "t+c" and both["metrics"]["precision@5"] < one["metrics"]["precision@5"]
    assert main(["evaluate", str(tmp_path / "c"), "--label", "t,colour"]) == 2
    assert "'colour'" in capsys.readouterr().err
