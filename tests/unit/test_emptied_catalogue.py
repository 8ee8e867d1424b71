"""An emptied catalogue (all items removed) saves and loads (issue 28); a never-filled one not."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from visualsim import NotFittedError, Recommender


@pytest.mark.parametrize("index", ["flat", "hnsw", "ivf", "sklearn"])
@pytest.mark.parametrize("compact", [False, True])
def test_an_emptied_catalogue_saves_loads_and_fills_again(
    tmp_path: Path, index: str, compact: bool
) -> None:
    vectors = np.random.default_rng(0).normal(size=(300, 8))
    rec = Recommender.from_vectors(vectors, list(range(300)), index=index)
    rec.save(tmp_path / "cat")
    rec.remove(list(range(300)))
    if compact:
        rec.compact()
    rec.save(tmp_path / "cat", overwrite=True)  # the feed emptied the shop: that is a state
    back = Recommender.load(tmp_path / "cat")
    assert len(back) == 0 and back.ids_ == []
    with pytest.raises(NotFittedError):  # nothing to search, as before any fit
        back.query_vector(vectors[0], k=3)
    back.add_vectors(np.eye(8)[:2], ["x", "y"])
    assert [r.id for r in back.query_vector(np.eye(8)[1], k=1)] == ["y"]
    back.save(tmp_path / "cat", overwrite=True)
    assert Recommender.load(tmp_path / "cat").ids_ == ["x", "y"]


def test_a_catalogue_never_filled_still_cannot_be_saved(tmp_path: Path) -> None:
    with pytest.raises(NotFittedError, match="empty"):
        Recommender().save(tmp_path / "cat")
    assert not (tmp_path / "cat").exists()
