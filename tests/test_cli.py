"""The `visualsim` command end to end, in subprocesses, on generated images."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from visualsim.datasets.synthetic import SyntheticProducts


def run(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run(
        [sys.executable, "-m", "visualsim.cli", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=600,
    )


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("shop")
    SyntheticProducts(40, seed=3, size=64).write_folder(root / "images", label="color")
    (root / "images" / "broken.jpg").write_bytes(b"not an image at all")
    return root


@pytest.fixture(scope="module")
def catalog(shop: Path) -> Path:
    out = shop / "catalog"
    result = run(
        "index", shop / "images", "-o", out, "--extractor", "color", "--index", "hnsw", "-q"
    )
    assert result.returncode == 0, result.stderr
    assert "indexed 40 images" in result.stdout
    assert "broken.jpg" in result.stderr  # reported, not fatal
    return out


def test_info_describes_the_catalogue(catalog: Path) -> None:
    result = run("info", catalog)
    assert result.returncode == 0, result.stderr
    assert "items      40" in result.stdout and "color" in result.stdout
    manifest = json.loads(run("info", catalog, "--json").stdout)
    assert manifest["count"] == 40 and manifest["index"]["name"] == "hnsw"


def test_query_prints_ranked_results_and_json(catalog: Path, shop: Path) -> None:
    red = sorted((shop / "images" / "red").iterdir())[0]
    text = run("query", catalog, red, "-k", "3")
    assert text.returncode == 0, text.stderr
    lines = [line for line in text.stdout.splitlines() if line.strip()[:2] in ("1.", "2.", "3.")]
    assert len(lines) == 3
    data = json.loads(run("query", catalog, red, "-k", "3", "--json").stdout)
    assert [r["rank"] for r in data["results"]] == [1, 2, 3]
    assert data["results"][0]["id"] == f"red/{red.name}"  # the image itself is the best match
    assert data["results"][0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert all(r["metadata"]["label"] == "red" for r in data["results"][:2])


def test_query_where_filter_and_plot(catalog: Path, shop: Path, tmp_path: Path) -> None:
    red = sorted((shop / "images" / "red").iterdir())[0]
    out = tmp_path / "plot.png"
    result = run("query", catalog, red, "-k", "4", "--where", "label=blue", "--json", "--plot", out)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["results"] and all(r["metadata"]["label"] == "blue" for r in data["results"])
    with Image.open(out) as img:
        assert img.format == "PNG" and img.size[0] > img.size[1] > 100


def test_similar_excludes_the_item(catalog: Path) -> None:
    ids = json.loads((catalog / "ids.json").read_text())
    result = run("similar", catalog, ids[0], "-k", "5", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert len(data["results"]) == 5 and ids[0] not in [r["id"] for r in data["results"]]


def test_evaluate_and_duplicates(catalog: Path) -> None:
    result = run("evaluate", catalog, "--label", "label", "-k", "1", "5", "--json")
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)["metrics"]
    assert metrics["recall@5"] >= metrics["recall@1"] > 0.5  # colour labels, colour extractor
    dup = run("duplicates", catalog, "--min-score", "0.9999")
    assert dup.returncode == 0 and "pairs with score" in dup.stdout


def test_missing_paths_give_one_line_and_exit_2(tmp_path: Path, catalog: Path) -> None:
    for args in (
        ("index", tmp_path / "nope", "-o", tmp_path / "c"),
        ("query", tmp_path / "nope", tmp_path / "x.jpg"),
        ("query", catalog, tmp_path / "x.jpg"),
        ("info", tmp_path / "nope"),
        ("similar", catalog, "no-such-id"),
    ):
        result = run(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1
        assert result.stderr.startswith("visualsim ")


def test_index_refuses_to_overwrite_and_bad_catalogue_exits_1(
    catalog: Path, shop: Path, tmp_path: Path
) -> None:
    again = run("index", shop / "images", "-o", catalog, "--extractor", "color", "-q")
    assert again.returncode == 2 and "--overwrite" in again.stderr
    broken = tmp_path / "broken-cat"
    broken.mkdir()
    (broken / "manifest.json").write_text("{not json")
    result = run("info", broken)
    assert result.returncode == 1 and "corrupt" in result.stderr


def test_info_verify_detects_a_tampered_catalogue(catalog: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(catalog, copy)
    assert run("info", copy, "--verify").returncode == 0
    ids = copy / "ids.json"
    ids.write_text(ids.read_text().replace("red", "rod", 1))
    result = run("info", copy, "--verify")
    assert result.returncode == 1 and "ids.json" in result.stderr


def test_index_with_pca_and_float16(shop: Path, tmp_path: Path) -> None:
    out = tmp_path / "small"
    args = ("--extractor", "color", "--reduce-dim", "24", "--storage", "float16", "-q")
    result = run("index", shop / "images", "-o", out, *args)
    assert result.returncode == 0, result.stderr
    manifest = json.loads(run("info", out, "--json").stdout)
    assert manifest["dim"] == 24 and manifest["storage"] == "float16"
    assert manifest["reducer"]["dim"] == 24
    red = sorted((shop / "images" / "red").iterdir())[0]
    data = json.loads(run("query", out, red, "-k", "1", "--json").stdout)
    assert data["results"][0]["id"] == f"red/{red.name}"


def test_runtime_flag_only_for_keras_extractors(shop: Path, tmp_path: Path) -> None:
    result = run(
        "index",
        shop / "images",
        "-o",
        tmp_path / "c",
        "--extractor",
        "color",
        "--runtime",
        "frozen",
    )
    assert result.returncode == 2 and "--runtime applies" in result.stderr


def test_bad_arguments_exit_2(catalog: Path) -> None:
    assert run("query", catalog).returncode == 2
    assert run("frobnicate").returncode == 2
    assert run("index", catalog, "-o", catalog.parent / "x", "--index", "magic").returncode == 2


def test_demo_runs_offline_on_generated_products(tmp_path: Path) -> None:
    result = run(
        "demo",
        "--data",
        "synthetic",
        "-n",
        "120",
        "--extractor",
        "color",
        "--out",
        "out",
        "-q",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "Recall@5 =" in result.stdout
    assert "extractor: color" in result.stdout
    png = tmp_path / "out" / "recommendations.png"
    with Image.open(png) as img:
        assert img.format == "PNG"
        pixels = np.asarray(img.convert("RGB"))
    assert pixels.std() > 10  # a real picture, not a blank canvas
    assert (tmp_path / "out" / "catalog" / "manifest.json").is_file()
