"""A catalogue of vectors you bring yourself: Recommender.from_vectors, no model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from visualsim import PrecomputedVectors, Recommender
from visualsim.errors import ConfigError, InvalidVectorsError


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(1, 40),
    dim=st.integers(1, 12),
    k=st.integers(1, 10),
    seed=st.integers(0, 2**16),
)
def test_query_vector_is_brute_force(n: int, dim: int, k: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(n, dim)).astype(np.float32) + 0.01
    q = rng.normal(size=dim).astype(np.float32)
    rec = Recommender.from_vectors(emb, list(range(n)))
    got = rec.query_vector(q, k=k)
    scores = _unit(emb) @ (q / np.linalg.norm(q))
    assert [r.score for r in got] == pytest.approx(sorted(scores, reverse=True)[:k], abs=1e-5)


def test_saved_and_loaded_like_any_catalogue(tmp_path: Path) -> None:
    emb = np.random.default_rng(1).random((30, 8)).astype(np.float32)
    meta = [{"colour": ["red", "blue", "green"][i % 3]} for i in range(30)]
    rec = Recommender.from_vectors(emb, [f"p{i}" for i in range(30)], meta, source="our model")
    want = [r.id for r in rec.query_vector(emb[4], k=5, where="colour == 'blue'")]
    rec.save(tmp_path / "emb.catalog")
    manifest = json.loads((tmp_path / "emb.catalog" / "manifest.json").read_text())
    assert manifest["extractor"] == {
        "name": "precomputed",
        "config": {"dim": 8, "source": "our model"},
    }
    back = Recommender.load(tmp_path / "emb.catalog")
    assert [r.id for r in back.query_vector(emb[4], k=5, where="colour == 'blue'")] == want
    assert want[0] == "p4"
    assert [r.id for r in back.similar_to("p4", k=2, where="colour == 'blue'")] == want[1:3]
    back.add_vectors(emb[:1] * 2, ["p-new"])
    assert "p-new" in back


def test_images_are_refused_with_what_to_call_instead() -> None:
    rec = Recommender.from_vectors(np.eye(3, dtype=np.float32), ["a", "b", "c"], source="x")
    image = np.zeros((8, 8, 3), np.uint8)
    for call in (
        lambda: rec.query(image),
        lambda: rec.add([image], ids=["d"]),
        lambda: rec.query_batch([image]),
    ):
        refused = r"3-d vectors computed elsewhere \(x\).*query_vector"
        with pytest.raises(ConfigError, match=refused):
            call()
    assert len(rec) == 3


def test_bad_arguments() -> None:
    with pytest.raises(InvalidVectorsError, match="2-d"):
        Recommender.from_vectors(np.ones(3, np.float32), ["a"])
    with pytest.raises(ConfigError, match="dim"):
        PrecomputedVectors(0)
    with pytest.raises(ConfigError, match="source"):
        PrecomputedVectors(3, source="x" * 500)
    with pytest.raises(InvalidVectorsError):
        Recommender.from_vectors(np.full((2, 3), np.nan, np.float32), ["a", "b"])
