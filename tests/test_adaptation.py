"""Adaptation: a projection learned on frozen vectors, scored on items it never saw."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from visualsim import Recommender
from visualsim.adaptation import AdaptationReport, ProjectionAdapter, adapt_recommender
from visualsim.errors import (
    CatalogError,
    ConfigError,
    InvalidVectorsError,
    NotFittedError,
)
from visualsim.evaluation import evaluate_holdout, holdout_split
from visualsim.extractors.color import ColorHistogramExtractor


def clustered(n_labels: int = 8, per: int = 60, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Vectors whose label lives in 8 weak dimensions and whose cosine is dominated by 24 loud
    nuisance dimensions: raw kNN is poor, a learned projection can drop the nuisance."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_labels, 8)) * 1.5
    labels = np.repeat(np.arange(n_labels), per)
    signal = centres[labels] + rng.normal(scale=0.6, size=(len(labels), 8))
    nuisance = rng.normal(scale=3.0, size=(len(labels), 24))
    return np.concatenate([signal, nuisance], axis=1).astype(np.float32), labels


SMALL = {
    "dim": 16,
    "hidden": 32,
    "epochs": 15,
    "batch_size": 64,
    "learning_rate": 1e-2,
    "min_steps": 300,
}


@pytest.fixture(scope="module")
def trained() -> tuple[ProjectionAdapter, np.ndarray, np.ndarray, object]:
    x, y = clustered()
    split = holdout_split(y, by="items", test_size=0.3, seed=1)
    adapter = ProjectionAdapter(mix=1.0, seed=0, **SMALL).fit(x[split.train], y[split.train])
    return adapter, x, y, split


def test_adaptation_improves_held_out_items(trained: tuple) -> None:
    adapter, x, y, split = trained
    before = evaluate_holdout(x, y, split)["precision@10"]
    after = evaluate_holdout(adapter.transform(x[split.test]), y, split)["precision@10"]
    assert after > before + 0.15, (before, after)
    assert adapter.history_[-1] < adapter.history_[0]


def test_transform_gives_unit_float32_rows_of_dim(trained: tuple) -> None:
    adapter, x, _, _ = trained
    z = adapter.transform(x[:7])
    assert z.shape == (7, adapter.dim) == (7, 16) and z.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1.0, atol=1e-5)
    assert adapter.transform(np.zeros((0, 32), np.float32)).shape == (0, 16)


def test_mix_blends_learned_and_original_similarity(trained: tuple) -> None:
    adapter, x, _, _ = trained
    half = ProjectionAdapter.from_config({**adapter.get_config(), "mix": 0.25})
    half.arrays_, half.n_features_in_, half.mix_ = adapter.arrays_, 32, 0.25
    a, b = x[:5], x[5:10]
    learned = np.einsum("ij,ij->i", adapter.transform(a), adapter.transform(b))
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    original = np.einsum("ij,ij->i", unit[:5], unit[5:10])
    blended = np.einsum("ij,ij->i", half.transform(a), half.transform(b))
    np.testing.assert_allclose(blended, 0.25 * learned + 0.75 * original, atol=1e-5)
    assert half.dim == 16 + 32


def test_save_load_round_trip_without_pickle(trained: tuple, tmp_path: Path) -> None:
    adapter, x, _, _ = trained
    adapter.save(tmp_path / "adapter")
    manifest = json.loads((tmp_path / "adapter" / "manifest.json").read_text())
    assert manifest["format"] == "visualsim-adapter" and manifest["mix"] == 1.0
    for name in ("mean", "w1", "b1", "w2", "b2"):
        np.load(tmp_path / "adapter" / f"{name}.npy", allow_pickle=False)
    again = ProjectionAdapter.load(tmp_path / "adapter")
    assert again.get_config() == adapter.get_config()
    np.testing.assert_array_equal(again.transform(x[:20]), adapter.transform(x[:20]))


def test_a_damaged_save_is_refused_naming_the_file(trained: tuple, tmp_path: Path) -> None:
    adapter, _, _, _ = trained
    folder = tmp_path / "adapter"
    adapter.save(folder)
    np.save(folder / "w1.npy", np.zeros((3, 3), np.float32))
    with pytest.raises(CatalogError, match="w1.npy"):
        ProjectionAdapter.load(folder)
    with pytest.raises(CatalogError, match="w1.npy"):
        ProjectionAdapter.load(folder, verify=False)  # shape check still catches it
    with pytest.raises(CatalogError):
        ProjectionAdapter.load(tmp_path / "nothing-here")


def test_linear_adapter_and_validation_choose_mix() -> None:
    x, y = clustered(seed=3)
    adapter = ProjectionAdapter(
        dim=8, hidden=0, epochs=10, batch_size=64, learning_rate=1e-2, seed=0
    )
    adapter.fit(x, y)
    assert adapter.mix_ in (0.0, 0.25, 0.5, 0.75, 0.9, 1.0)
    assert adapter.validation_["by"] == "items"
    scores = adapter.validation_["precision@10"]
    assert scores[str(adapter.mix_)] == max(scores.values())
    assert scores[str(adapter.mix_)] > scores["0.0"]  # it learned something worth keeping


def test_bad_inputs_are_refused_with_a_clear_error(trained: tuple) -> None:
    adapter, x, y, _ = trained
    with pytest.raises(NotFittedError, match="fit"):
        ProjectionAdapter().transform(x)
    with pytest.raises(NotFittedError):
        ProjectionAdapter().save("/nonexistent-never-written")
    with pytest.raises(InvalidVectorsError, match="dimension 5"):
        adapter.transform(np.ones((2, 5), np.float32))
    bad = x[:40].copy()
    bad[3, 0] = np.nan
    with pytest.raises(InvalidVectorsError, match="row 3"):
        ProjectionAdapter(mix=1.0).fit(bad, y[:40])
    with pytest.raises(ConfigError, match="labels has 3 entries"):
        ProjectionAdapter(mix=1.0).fit(x[:10], y[:3])
    with pytest.raises(ConfigError, match="two labels"):
        ProjectionAdapter(mix=1.0).fit(x[:10], ["a"] * 10)
    with pytest.raises(InvalidVectorsError):
        ProjectionAdapter(mix=1.0).fit(np.ones(5), [1, 2, 3, 4, 5])
    for kwargs in (
        {"dim": 0},
        {"hidden": -1},
        {"epochs": 1.5},
        {"mix": 2},
        {"mix": "all"},
        {"validation": "time"},
        {"learning_rate": 0},
        {"validation_size": 0.9},
    ):
        with pytest.raises(ConfigError):
            ProjectionAdapter(**kwargs)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="invalid adapter config"):
        ProjectionAdapter.from_config({"layers": 3})


@settings(max_examples=40)
@given(
    labels=st.lists(st.sampled_from("abcdef"), min_size=2, max_size=80),
    by=st.sampled_from(["items", "labels"]),
    seed=st.integers(0, 1000),
    test_size=st.floats(0.1, 0.6),
)
def test_holdout_split_is_disjoint_seeded_and_honest(
    labels: list[str], by: str, seed: int, test_size: float
) -> None:
    if by == "labels" and len(set(labels)) < 2:
        with pytest.raises(ConfigError, match="two distinct labels"):
            holdout_split(labels, by=by, seed=seed)
        return
    split = holdout_split(labels, by=by, test_size=test_size, seed=seed)  # type: ignore[arg-type]
    again = holdout_split(labels, by=by, test_size=test_size, seed=seed)  # type: ignore[arg-type]
    assert np.array_equal(split.train, again.train) and np.array_equal(split.test, again.test)
    assert not set(split.train) & set(split.test)
    assert len(split.train) + len(split.test) == len(labels)
    train_labels = {labels[i] for i in split.train}
    test_labels = {labels[i] for i in split.test}
    if by == "labels":
        assert not train_labels & test_labels and train_labels
    else:
        for lab in set(labels):
            if labels.count(lab) >= 2:  # each side sees it
                assert lab in train_labels and lab in test_labels


def test_holdout_split_keeps_a_product_group_on_one_side() -> None:
    labels = ["shoe"] * 12 + ["bag"] * 12
    groups = [f"p{i // 3}" for i in range(24)]  # three photos per product
    split = holdout_split(labels, by="items", groups=groups, test_size=0.5, seed=4)
    assert not {groups[i] for i in split.train} & {groups[i] for i in split.test}
    with pytest.raises(ConfigError, match="groups has 2"):
        holdout_split(labels, groups=["a", "b"])
    with pytest.raises(ConfigError, match="test_size"):
        holdout_split(labels, test_size=1.5)


def test_evaluate_holdout_never_scores_a_training_item() -> None:
    x, y = clustered(n_labels=3, per=10)
    split = holdout_split(y, by="items", test_size=0.3, seed=0)
    poisoned = x.copy()
    poisoned[split.train] = np.nan  # a training item touched would break the scoring
    report = evaluate_holdout(np.nan_to_num(poisoned, nan=0.0) + 0 * x, y, split)
    assert report.n_items == split.test.size
    assert report.n_queries == split.test.size


def test_adapt_recommender_returns_an_adapted_catalogue_and_a_report(tmp_path: Path) -> None:
    x, y = clustered(n_labels=6, per=40, seed=5)
    ids = [f"item-{i}" for i in range(len(x))]
    meta = [{"category": f"c{lab}"} for lab in y]
    meta[0] = {}  # an unlabelled item is kept, just not trained on
    extractor = ColorHistogramExtractor(bins=(2, 2, 2), grey_bins=24, layout=0)  # a 32-d extractor
    rec = Recommender(extractor=extractor, index="flat").add_vectors(
        x / np.linalg.norm(x, axis=1, keepdims=True), ids, meta
    )
    adapter = ProjectionAdapter(mix=1.0, seed=0, **SMALL)
    adapted, report = adapt_recommender(rec, "category", adapter=adapter, test_size=0.25, seed=2)
    assert isinstance(report, AdaptationReport)
    assert report.after["precision@10"] > report.before["precision@10"] + 0.1
    assert report.split.test.size + report.split.train.size == len(x) - 1
    assert "before" in str(report) and json.dumps(report.to_dict())
    assert len(adapted) == len(rec) and adapted.dim == 16
    assert adapted.ids_ == rec.ids_ and adapted.metadata_of("item-5") == rec.metadata_of("item-5")
    # a query in the original space goes through the adapter
    hits = adapted.query_vector(x[10], k=5)
    assert hits[0].id == "item-10"
    adapted.save(tmp_path / "cat")
    back = Recommender.load(tmp_path / "cat")
    assert back.dim == 16
    assert [h.id for h in back.query_vector(x[10], k=5)] == [h.id for h in hits]
    with pytest.raises(ConfigError, match="no catalogue item has metadata field 'colour'"):
        adapt_recommender(rec, "colour")
    with pytest.raises(ConfigError, match="holdout"):
        adapt_recommender(rec, "category", holdout="time")


def test_visualsim_adapt_writes_an_adapted_catalogue(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from visualsim.cli import main

    x, y = clustered(n_labels=5, per=30, seed=7)
    extractor = ColorHistogramExtractor(bins=(2, 2, 2), grey_bins=24, layout=0)
    rec = Recommender(extractor=extractor, index="flat").add_vectors(
        x, [f"i{i}" for i in range(len(x))], [{"kind": f"k{lab}"} for lab in y]
    )
    rec.save(tmp_path / "cat")
    out = tmp_path / "adapted"
    argv = ["adapt", str(tmp_path / "cat"), "--label", "kind", "-o", str(out), "--json"]
    assert main([*argv, "--epochs", "2"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["label"] == "kind" and report["split"]["by"] == "items"
    assert set(report["before"]) == set(report["after"]) >= {"precision@10", "recall@1"}
    back = Recommender.load(out)
    assert back.transform_ is not None and len(back) == len(x)
    assert main(argv) != 0  # exists: refuses without --overwrite
    assert "--overwrite" in capsys.readouterr().err
    assert (
        main(["adapt", str(tmp_path / "cat"), "--label", "nope", "-o", str(tmp_path / "o2")]) != 0
    )
    assert "nope" in capsys.readouterr().err


def test_labels_that_carry_no_signal_leave_the_vectors_alone() -> None:
    """Validation keeps mix=0 (the original vectors) when the projection does not earn its keep."""
    x, _ = clustered(n_labels=6, per=40, seed=9)
    noise = np.random.default_rng(0).integers(0, 6, size=len(x))  # labels unrelated to x
    adapter = ProjectionAdapter(validation="labels", seed=0, **SMALL).fit(x, noise)
    assert adapter.mix_ == 0.0 and adapter.dim == 32
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    np.testing.assert_allclose(adapter.transform(x), unit, atol=1e-6)
