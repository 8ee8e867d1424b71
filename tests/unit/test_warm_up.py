"""``Recommender.warm_up()`` and ``load(..., warm=True)`` (issue 25, item 5): after them
the extractor's model is built and one search has run, so the first real query is fast.
Checked by flags, never by timing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from visualsim import ColorHistogramExtractor, Recommender


class _Lazy(ColorHistogramExtractor):
    """A colour extractor that, like a CNN, builds its 'model' on the first extraction."""

    builds = 0

    def extract(self, *args: Any, **kwargs: Any) -> np.ndarray:
        if not getattr(self, "built", False):
            type(self).builds += 1
            self.built = True
        return super().extract(*args, **kwargs)


def _catalogue(n: int = 4) -> Recommender:
    ext = _Lazy()
    vectors = np.random.default_rng(0).random((n, ext.dim), dtype=np.float32)
    return Recommender(ext).add_vectors(vectors, [f"p{i}" for i in range(n)])


def test_warm_up_builds_the_model_and_searches_once(monkeypatch: pytest.MonkeyPatch) -> None:
    rec = _catalogue()
    searched = []
    real = rec.query_vector
    monkeypatch.setattr(
        rec, "query_vector", lambda v, k=10, **kw: searched.append(k) or real(v, k, **kw)
    )
    assert rec.warm_ is False and not getattr(rec.extractor_, "built", False)
    assert rec.warm_up() is rec
    assert rec.warm_ is True and rec.extractor_.built
    assert searched == [1]
    assert len(rec) == 4  # nothing stored


def test_warm_up_on_an_empty_catalogue_builds_the_model_only() -> None:
    rec = Recommender(_Lazy())
    rec.warm_up()
    assert rec.warm_ and rec.extractor_.built and len(rec) == 0


def test_load_warm_true_warms(tmp_path: Path) -> None:
    ext = ColorHistogramExtractor()
    vectors = np.random.default_rng(0).random((4, ext.dim), dtype=np.float32)
    path = Recommender(ext).add_vectors(vectors, list("abcd")).save(tmp_path / "c")
    cold = Recommender.load(path)
    assert cold.warm_ is False
    rec = Recommender.load(path, warm=True)
    assert rec.warm_
    assert [r.id for r in rec.query_vector(rec.vector_of("c"), 1)] == ["c"]


def test_the_server_warms_through_warm_up() -> None:
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from visualsim.serve import create_app

    rec = _catalogue()
    with TestClient(create_app(rec)) as client:
        assert client.get("/health").json()["warm"] is True
    assert rec.warm_ and rec.extractor_.built
