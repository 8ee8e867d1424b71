"""benchmarks/bench_real.py: its pure functions, and a tiny end-to-end run on generated photos."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from PIL import Image, ImageDraw

from benchmark_scripts import load_benchmark
from visualsim.datasets.fashion_products import STYLE_COLUMNS

COLOURS = {"Red": (210, 30, 30), "Blue": (30, 60, 200), "Green": (40, 160, 60)}
COLUMNS = ["id", *STYLE_COLUMNS[:-1]]  # labels.csv: styles.csv without productDisplayName
TYPES = {  # articleType -> (subCategory, shape)
    "Tshirts": ("Topwear", "rectangle"),
    "Shirts": ("Topwear", "ellipse"),
    "Casual Shoes": ("Shoes", "polygon"),
}


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    """The benchmark script, imported as a module."""
    return load_benchmark("bench_real")


def _make_dataset(folder: Path, per_pair: int = 3) -> Path:
    """Write a labels.csv and images/<id>.jpg: each articleType a shape, each colour a fill."""
    images = folder / "images"
    images.mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    next_id = 100
    for article, (sub, shape) in TYPES.items():
        for colour, rgb in COLOURS.items():
            for _ in range(per_pair):
                img = Image.new("RGB", (64, 64), (255, 255, 255))
                draw = ImageDraw.Draw(img)
                x, y = (int(v) for v in rng.integers(4, 12, size=2))
                fill = tuple(
                    int(c) for c in np.clip(np.array(rgb) + rng.integers(-15, 16, 3), 0, 255)
                )
                if shape == "rectangle":
                    draw.rectangle((x, y, 60 - x // 2, 60 - y // 2), fill=fill)
                elif shape == "ellipse":
                    draw.ellipse((x, y, 60 - x // 2, 60 - y // 2), fill=fill)
                else:
                    draw.polygon([(x, 56), (32, y), (60 - x // 2, 56)], fill=fill)
                img.save(images / f"{next_id}.jpg", quality=90)
                rows.append([next_id, "Men", "Apparel", sub, article, colour, "Summer", 2012, "x"])
                next_id += 1
    with (folder / "labels.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        writer.writerows(rows)
    return folder


def test_relevance_labels_join_columns_and_drop_missing(bench: ModuleType) -> None:
    labels = {"articleType": ["Shirts", "Shirts", ""], "baseColour": ["Red", "", "Blue"]}
    assert bench.relevance_labels(labels, ("articleType",)) == ["Shirts", "Shirts", None]
    assert bench.relevance_labels(labels, ("articleType", "baseColour")) == [
        "Shirts/Red",
        None,
        None,
    ]


def test_precision_upper_bound_caps_rare_labels(bench: ModuleType) -> None:
    # "a": 12 photos (11 others each: bound 1); "b": 3 (2 others: 0.2); "c": alone, not scored
    labels = ["a"] * 12 + ["b"] * 3 + ["c", None]
    expected = (12 * 1.0 + 3 * 0.2) / 15
    assert bench.precision_upper_bound(labels, 10) == pytest.approx(expected)
    assert math.isnan(bench.precision_upper_bound(["x", "y", None], 10))


def test_nearest_leaves_the_query_out_and_breaks_ties_by_row(bench: ModuleType) -> None:
    x = np.array([[1, 0], [1, 0], [0.8, 0.6], [0, 1]], dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    found = bench.nearest(x, [0, 1, 3], 2)
    assert found.tolist() == [[1, 2], [0, 2], [2, 0]]


def test_title_colour_says_how_a_result_matches(bench: ModuleType) -> None:
    q = {"articleType": "Shirts", "baseColour": "Red"}
    same = bench.title_colour(q, {"articleType": "Shirts", "baseColour": "Red"})
    same_type = bench.title_colour(q, {"articleType": "Shirts", "baseColour": "Blue"})
    other = bench.title_colour(q, {"articleType": "Tshirts", "baseColour": "Red"})
    assert (same, same_type, other) == (bench.GREEN, bench.BLUE, bench.RED)


def test_slug_and_cache_key(bench: ModuleType, tmp_path: Path) -> None:
    assert bench.slug("squeezenet+colour 4:1") == "squeezenet+colour-4-1"
    data = bench.Data(tmp_path, ["1", "2"], ["a", "b"], {})
    fewer = bench.Data(tmp_path, ["1"], ["a"], {})
    key = bench.cache_key({"config": {"bins": 8}}, data)
    assert key == bench.cache_key({"config": {"bins": 8}}, data)
    assert key != bench.cache_key({"config": {"bins": 4}}, data)
    assert key != bench.cache_key({"config": {"bins": 8}}, fewer)


def test_configs_build_the_library_extractors(bench: ModuleType) -> None:
    import visualsim
    from visualsim.extractors import ConcatExtractor

    assert set(bench.FULL_CONFIGS) <= set(bench.CONFIGS)
    mix = bench.CONFIGS["squeezenet+colour 4:1"]()
    assert isinstance(mix, ConcatExtractor) and mix.weights == [4.0, 1.0]
    default = bench.CONFIGS["default"]()
    if hasattr(visualsim, "auto_extractor"):  # the library's own default, not a copy of it
        assert bench.extractor_config(default) == bench.extractor_config(
            visualsim.auto_extractor()[0]
        )
    else:
        assert default.get_config() == mix.get_config()


def test_missing_data_folder_is_a_clear_error(bench: ModuleType, tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="does not exist"):
        bench.main(["--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r.json")])


def test_tiny_run_writes_metrics_grid_latency_and_reuses_its_cache(
    bench: ModuleType, tmp_path: Path
) -> None:
    data = _make_dataset(tmp_path / "data")
    out, grids, cache = tmp_path / "real.json", tmp_path / "grids", tmp_path / "cache"
    args = ["--data", str(data), "--configs", "pixels32,colour", "--out", str(out)]
    args += ["--grids", str(grids), "--grid-config", "colour", "--latency-config", "colour"]
    args += ["--latency-queries", "5", "--cache-dir", str(cache)]
    assert bench.main(args) == 0

    payload = json.loads(out.read_text(encoding="utf-8"))
    assert payload["data"]["n_images"] == 27
    results = payload["results"]
    assert {(r["config"], r["relevance"]) for r in results} == {
        (c, rel) for c in ("pixels32", "colour") for rel in ("type", "type+colour", "subCategory")
    }
    for r in results:
        for key in ("P@10", "R@1", "mAP@10", "P@10 bound"):
            assert 0.0 <= r[key] <= 1.0, (r["config"], r["relevance"], key)
        assert r["P@10"] <= r["P@10 bound"] + 1e-9
        assert r["n_queries"] == 27
    by = {(r["config"], r["relevance"]): r for r in results}
    # 2 other photos share each type+colour: P@10 can reach 0.2 at best
    assert by[("colour", "type+colour")]["P@10 bound"] == pytest.approx(0.2)
    # the colour histogram puts a photo's own colour first far above chance (2 in 26)
    assert by[("colour", "type+colour")]["R@1"] > 0.5
    for name in ("pixels32", "colour"):
        ext = payload["configs"][name]["extraction"]
        assert ext["images"] == 27 and ext["img_per_s"] > 0 and not ext["cached"]
    assert payload["configs"]["colour"]["class"] == "ColorHistogramExtractor"
    assert payload["latency"]["config"] == "colour" and payload["latency"]["p50_ms"] > 0
    grid = grids / "real-grid-colour.png"
    assert grid.is_file() and grid.stat().st_size < 400_000
    assert payload["machine"]["cpu_lscpu"]

    # a rerun reads the vectors from the cache and scores the same
    assert bench.main([*args, "--no-latency", "--no-grid"]) == 0
    again = json.loads(out.read_text(encoding="utf-8"))
    assert again["results"] == results
    assert all(c["extraction"]["cached"] for c in again["configs"].values())
