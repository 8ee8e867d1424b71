"""benchmarks/bench_shopper.py: its scene builder, and a tiny end-to-end run on generated photos."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from PIL import Image, ImageDraw

from benchmark_scripts import load_benchmark


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load_benchmark("bench_shopper")


def _photo(rng: np.random.Generator, side: int = 64) -> np.ndarray:
    img = Image.new("RGB", (side, side), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    fill = tuple(int(c) for c in rng.integers(0, 200, 3))
    x, y = (int(v) for v in rng.integers(4, 14, 2))
    draw.rectangle((x, y, side - x, side - y), fill=fill)
    draw.line((x, side // 2, side - x, side // 2), fill=(0, 0, 0), width=3)
    return np.asarray(img)


def test_a_scene_is_twice_the_photo_with_the_product_at_its_box(bench: ModuleType) -> None:
    rng = np.random.default_rng(0)
    photo = _photo(rng)
    clutter = [_photo(rng) for _ in range(16)]
    scene, (left, top, right, bottom) = bench.make_scene(photo, clutter, rng)
    assert scene.shape == (128, 128, 3)
    assert 0 <= left < right <= 128 and 0 <= top < bottom <= 128
    # the product (about 48 px) at 50-60 %
    assert 0.45 * 48 <= right - left <= 0.65 * 56
    assert bench.make_scene(np.full((64, 64, 3), 255, np.uint8), clutter, rng) is None


def test_tiny_run_writes_the_table(bench: ModuleType, tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    (tmp_path / "images").mkdir()
    with (tmp_path / "labels.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "articleType"])
        for i in range(30):
            Image.fromarray(_photo(rng)).save(tmp_path / "images" / f"{i}.jpg", quality=95)
            writer.writerow([i, "x"])
    out = tmp_path / "shopper.json"
    assert bench.main(["--data", str(tmp_path), "--queries", "4", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    rows = {r["query"]: r for r in doc["results"]}
    assert set(rows) == {"full", "box given", "located", "packshot", "packshot located"}
    assert all(r["n"] == 4 for r in rows.values())
    assert rows["packshot"]["top-5"] == 1.0
    assert doc["locate_ms_median"] >= 0 and doc["machine"]["cpu_lscpu"]
