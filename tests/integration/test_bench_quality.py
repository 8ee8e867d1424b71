"""Smoke test of benchmarks/bench_quality.py: the quick mode runs and writes sane JSON."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from benchmark_scripts import load_benchmark


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    """The benchmark script, imported as a module."""
    return load_benchmark("bench_quality")


def test_quick_run_writes_metrics_in_unit_interval(
    bench: ModuleType, tmp_path: Path, fashion_mnist_dir: Callable[..., Path]
) -> None:
    fashion_mnist_dir(300)  # a stand-in test split where Debian's goes; the real one is CI's
    out = tmp_path / "quality.json"
    args = ["--quick", "--configs", "color,resnet50-tiny", "--no-cache", "--output", str(out)]
    assert bench.main(args) == 0

    payload = json.loads(out.read_text(encoding="utf-8"))
    results = payload["results"]
    configs = {r["config"] for r in results}
    assert {"color", "resnet50-tiny-avg", "resnet50-tiny-gem", "color +pcaw"} <= configs
    labels = {(r["dataset"], r["label"]) for r in results}
    assert labels == {
        ("fmnist", "class"),
        ("synthetic", "category"),
        ("synthetic", "color"),
        ("synthetic", "pattern"),
        ("synthetic", "category+color"),
    }
    for r in results:
        assert r["n_items"] == 200
        for key in ("precision@10", "recall@1", "recall@5", "recall@10", "map@10"):
            assert 0.0 <= r[key] <= 1.0 and math.isfinite(r[key]), (r["config"], key)
        assert r["recall@1"] <= r["recall@5"] <= r["recall@10"]
    by = {(r["config"], r["label"]): r for r in results}
    # colour histograms find same-colour products far above chance
    assert by[("color", "color")]["precision@10"] > 3 * by[("color", "color")]["chance_precision"]


def test_concat_rows_match_the_concat_extractor(bench: ModuleType) -> None:
    from visualsim.extractors import ColorHistogramExtractor, ConcatExtractor

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (40, 48, 3), dtype=np.uint8) for _ in range(5)]
    coarse, fine = ColorHistogramExtractor(bins=(4, 2, 2)), ColorHistogramExtractor()
    ours = bench.concat_vectors([coarse.extract(images), fine.extract(images)], (2.0, 1.0))
    theirs = ConcatExtractor([coarse, fine], weights=[2, 1]).extract(images)
    np.testing.assert_allclose(ours, theirs, atol=1e-6)


def test_pca_whitening_returns_unit_rows(bench: ModuleType) -> None:
    x = np.random.default_rng(1).normal(size=(50, 20)).astype(np.float32)
    out = bench.pca_whiten(x, 8)
    assert out.shape == (50, 8)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


def test_protocol_run_scores_only_held_out_items_and_writes_every_part(
    bench: ModuleType, tmp_path: Path, fashion_mnist_dir: Callable[..., Path]
) -> None:
    fashion_mnist_dir(100)
    fashion_mnist_dir(200, split="train")
    out = tmp_path / "protocol.json"
    args = ["--protocol", "--n-fmnist", "100", "--n-fmnist-train", "200", "--n-crop", "20"]
    args += ["--n-dup-grey", "8", "--n-dup-colour", "8", "--n-dup-copies", "4"]
    assert bench.main([*args, "--no-cache", "--output", str(out)]) == 0
    payload = json.loads(out.read_text(encoding="utf-8"))
    adapt = payload["adapt"]
    for key in ("items", "labels"):
        for when in ("before", "after"):
            assert 0.0 <= adapt[key][when]["precision@10"] <= 1.0
    assert not set(adapt["labels"]["train_classes"]) & set(adapt["labels"]["test_classes"])
    assert {(r["crop"], r["dataset"]) for r in payload["crop"]} == {
        (c, d) for c in (None, "auto") for d in ("synthetic", "synthetic-padded")
    }
    for name, r in payload["duplicates"]["extractors"].items():
        assert r["documented"] in bench.DUPLICATE_THRESHOLDS, name
        assert all(0.0 <= t["recall"] <= 1.0 for t in r["thresholds"])
    assert payload["cpu"]


def test_duplicate_precision_counts_pairs_of_the_same_product(bench: ModuleType) -> None:
    x = np.array([[1, 0], [1, 0.001], [0, 1], [0.001, 1]], dtype=np.float32)
    rows = bench.duplicate_precision(x, np.array([0, 0, 1, 2]))
    at = {r["threshold"]: r for r in rows}
    assert at[0.999]["pairs"] == 2 and at[0.999]["true_pairs"] == 1
    assert at[0.999]["precision"] == 0.5 and at[0.999]["recall"] == 1.0
