"""Approximate indexes reach recall@10 >= 0.95 with their default parameters.

20,000 clustered vectors in 256 dimensions (the generator of tests/contract/test_indexes.py
and benchmarks/bench_indexes.py), 300 queries from the same distribution.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_indexes import clustered

from visualsim.indexes import make_index

N, DIM, NQ, K = 20_000, 256, 300, 10


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = clustered(N + NQ, DIM, seed=3)
    base, queries = x[:N], x[N:]
    truth = np.argsort(-(queries @ base.T), axis=1)[:, :K]
    return base, queries, truth


@pytest.mark.parametrize("name", ["ivf", "hnsw", "ivfpq"])
def test_default_parameters_reach_recall_095(name: str, data) -> None:
    base, queries, truth = data
    index = make_index(name)
    index.add(base, list(range(N)))
    _, got = index.search(queries, K)
    recall = np.mean([len(set(g) & set(t.tolist())) / K for g, t in zip(got, truth, strict=True)])
    assert recall >= 0.95, f"{name}: recall@10 {recall:.3f}"


def test_ivfpq_without_rerank_scores_estimate_the_cosine(data) -> None:
    base, queries, _ = data
    index = make_index("ivfpq", rerank=0)
    index.add(base[:10_000], list(range(10_000)))  # enough to train (39 * 256)
    scores, got = index.search(queries, K)
    true = np.einsum("qd,qkd->qk", queries, base[np.array(got)])
    assert np.abs(scores - true).mean() < 0.05
