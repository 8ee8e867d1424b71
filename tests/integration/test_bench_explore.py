"""explore_real.py helpers and bench_default_speed.py (benchmarks/), on generated photos."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from test_bench_real import _make_dataset

from benchmark_scripts import load_benchmark


@pytest.fixture(scope="module")
def explore() -> ModuleType:
    return load_benchmark("explore_real")


def test_whitening_is_unit_rows_of_at_most_the_asked_dimension(explore: ModuleType) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 12)).astype(np.float32)
    w = explore.whiten(x, dim=8)
    assert w.shape == (40, 8)
    np.testing.assert_allclose(np.linalg.norm(w, axis=1), 1.0, rtol=1e-5)
    # whitened (shrink 1) components are uncorrelated with equal variance
    full = explore.whiten(x, dim=8, shrink=1.0)
    assert np.isfinite(full).all()


def test_database_augmentation_pulls_a_row_towards_its_neighbours(explore: ModuleType) -> None:
    x = np.array([[1, 0], [0.9, 0.1], [0.8, 0.2], [0, 1]], dtype=np.float32)
    out = explore.database_augment(x, k=2)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)
    assert out[0] @ x[1] / np.linalg.norm(x[1]) > x[0] @ x[1] / np.linalg.norm(x[1])


def test_colour_within_type_ranks_only_the_query_type(explore: ModuleType, tmp_path: Path) -> None:
    bench = load_benchmark("bench_real")
    data = bench.load_data(_make_dataset(tmp_path / "d", per_pair=6))
    colours = sorted(set(data.labels["baseColour"]))
    # a perfect colour part: one-hot of the true colour
    perfect = np.eye(len(colours), dtype=np.float32)[
        [colours.index(c) for c in data.labels["baseColour"]]
    ]
    # 18 photos a type, 5 others of the same colour: a perfect colour part finds all 5
    assert explore.colour_within_type(perfect, data) == pytest.approx(0.5)
    rng = np.random.default_rng(1)
    noise = rng.normal(size=perfect.shape).astype(np.float32)
    assert explore.colour_within_type(noise, data) < 0.45


def test_default_speed_quick_run_writes_its_table(tmp_path: Path) -> None:
    speed = load_benchmark("bench_default_speed")
    out = tmp_path / "speed.json"
    assert speed.main(["--quick", "--generated", "--n", "8", "--out", str(out)]) == 0
    payload = json.loads(out.read_text())
    names = [r["config"] for r in payload["results"]]
    assert names == ["squeezenet+colour 4:1", "squeezenet", "default (product_extractor)"]
    assert payload["results"][0]["ratio"] == 1.0
    assert all(r["img/s"] > 0 for r in payload["results"])


def test_supervised_splits_keep_a_label_or_a_product_on_one_side() -> None:
    sup = load_benchmark("explore_supervised")
    labels = ["a"] * 6 + ["b"] * 4 + ["c"] * 2 + ["d"] * 2
    halves = sup.stratified_halves(labels)
    for value in set(labels):  # products: every type on both sides, half each
        rows = [h for h, lab in zip(halves, labels, strict=True) if lab == value]
        assert sum(rows) == len(rows) // 2
    by_type = sup.label_halves(labels)
    for value in set(labels):  # types: all of a type's products on one side
        assert len({h for h, lab in zip(by_type, labels, strict=True) if lab == value}) == 1
    assert set(by_type) == {0, 1}


def test_supervised_head_learns_the_labels_it_is_given(tmp_path: Path) -> None:
    sup = load_benchmark("explore_supervised")
    rng = np.random.default_rng(0)
    types = ["shoe", "bag", "shirt"] * 20
    colours = ["red", "blue"] * 30
    centres = {t: rng.normal(size=16) for t in set(types)}
    features = np.stack([centres[t] + 0.3 * rng.normal(size=16) for t in types]).astype(np.float32)
    model = sup.train_head(features, types, colours, epochs=30, seed=0)
    default = np.asarray(rng.normal(size=(60, 8)), np.float32)
    vectors = sup.mixes(model, features, default)
    assert set(vectors) >= {"learned embeddings alone"}
    for v in vectors.values():
        assert v.shape[0] == 60 and np.isfinite(v).all()
    mix = next(v for name, v in vectors.items() if name.startswith("probabilities 0.6"))
    # rows are unit vectors and the type part separates the three types
    np.testing.assert_allclose(np.linalg.norm(mix, axis=1), 1.0, rtol=1e-4)
    sims = mix @ mix.T
    same = np.equal.outer(np.array(types), np.array(types))
    assert sims[same].mean() > sims[~same].mean() + 0.3
