"""The scripts in examples/ run, offline, and do what they say (the docs: test_docs.py)."""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}


def run_python(args: list[str], cwd: Path) -> str:
    """Run ``python ARGS`` in ``cwd``; fail with its output unless it exits 0; return stdout."""
    done = subprocess.run(
        [sys.executable, *args], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr[-3000:]}"
    return done.stdout


def run_example(name: str, out: Path, *args: str) -> str:
    return run_python([str(EXAMPLES / name), "--out", str(out), *args], cwd=out.parent)


def result_lines(stdout: str, after: str) -> list[str]:
    """The indented lines printed right after the line starting with ``after``."""
    lines = stdout.splitlines()
    start = next(n for n, line in enumerate(lines) if line.startswith(after)) + 1
    return list(itertools.takewhile(lambda line: line.startswith("  "), lines[start:]))


def test_quickstart_indexes_queries_saves_and_reloads(tmp_path: Path) -> None:
    out = tmp_path / "out"
    stdout = run_example("quickstart.py", out, "-n", "40")

    assert "indexed: Recommender(extractor=squeezenet, index=flat, items=40, dim=512)" in stdout
    shoes = result_lines(stdout, "query: new-arrival.jpg")
    assert len(shoes) == 5
    assert all(line.endswith("label=shoes") for line in shoes)
    assert "loaded: Recommender(extractor=squeezenet, index=flat, items=40" in stdout
    assert len(result_lines(stdout, "similar to ")) == 3
    assert (out / "shop.catalog" / "manifest.json").is_file()


def test_filters_and_duplicates_resumes_filters_and_finds_the_copies(tmp_path: Path) -> None:
    out = tmp_path / "out"
    stdout = run_example("filters_and_duplicates.py", out, "-n", "100")

    assert "fit interrupted (crashed after 50 inputs)" in stdout
    assert "resumed and finished: 100 items; checkpoint removed: True" in stdout
    bags = result_lines(stdout, "only bags:")
    assert len(bags) == 3 and all(" bag/" in line for line in bags)
    warm = result_lines(stdout, "red or orange:")
    assert all(re.search(r"/(red|orange)/", line) for line in warm)
    assert all("/solid" not in line for line in result_lines(stdout, "no solids:"))
    pairs = json.loads((out / "duplicates.json").read_text())
    paired = {p["a"] for p in pairs} | {p["b"] for p in pairs}
    for original in ("synthetic-000003", "synthetic-000010", "synthetic-000042"):
        assert {original, f"{original}-jpeg95", f"{original}-enlarged"} <= paired
    assert paired == {
        f"{o}{tail}"
        for o in ("synthetic-000003", "synthetic-000010", "synthetic-000042")
        for tail in ("", "-jpeg95", "-enlarged")
    }  # the copies, and no look-alike
    assert all(p["score"] >= 0.9 for p in pairs)
    assert "keep synthetic-000003, drop synthetic-000003-jpeg95, synthetic-000003-enlarged" in (
        stdout
    )
    assert "removed the 6 copies: 100 items left" in stdout


def test_custom_extractor_saves_and_reloads_through_the_registry(tmp_path: Path) -> None:
    out = tmp_path / "out"
    stdout = run_example("custom_extractor.py", out, "-n", "150")

    manifest = json.loads((out / "outline.catalog" / "manifest.json").read_text())
    assert manifest["extractor"] == {
        "name": "outline",
        "config": {"side": 16, "batch_size": None, "num_workers": None},
    }
    assert "same top 5: True" in stdout
    assert "Register your own class with visualsim.register_extractor('outline')" in stdout
    recall = re.search(r"outline: recall@1 by category ([\d.]+)", stdout)
    assert recall is not None and float(recall.group(1)) > 0.5


def test_fashion_kaggle_runs_the_whole_workflow_on_a_synthetic_kaggle_folder(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    stdout = run_example(
        "fashion_kaggle.py", out, "--synthetic", "--limit", "60", "--extractor", "color"
    )

    styles = out / "kaggle-synthetic" / "myntradataset" / "styles.csv"
    assert styles.read_text().splitlines()[0] == (
        "id,gender,masterCategory,subCategory,articleType,baseColour,season,year,usage,"
        "productDisplayName"
    )
    assert "60 products with images, 1 rows repaired or skipped" in stdout
    assert "1 ids without an image [39425]" in stdout
    assert "indexed: Recommender(extractor=color, index=flat, items=60" in stdout
    women = result_lines(stdout, "query: catalogue item")
    assert len(women) == 5 and all(" Women " in line for line in women)
    assert (out / "recommendations.png").stat().st_size > 1000
    assert (out / "fashion.catalog" / "manifest.json").is_file()
    assert "Leave-one-out retrieval by 'articleType': 60 queries" in stdout


# The README's code blocks (and every other page's) run in tests/integration/test_docs.py.
