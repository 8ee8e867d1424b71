"""The extraction benchmark runs end to end in its quick mode (no timing asserts)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_extract.py"


@pytest.mark.slow
def test_quick_run_prints_the_table_and_writes_the_json(tmp_path: Path) -> None:
    out = tmp_path / "extract.json"
    args = ["--quick", "--n", "3", "--images-dir", str(tmp_path / "jpg"), "--out", str(out)]
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| method" in done.stdout and "FP32 bound" in done.stdout

    report = json.loads(out.read_text())
    methods = [row["method"] for row in report["rows"]]
    assert methods[0] == "notebook baseline (predict per image)"
    assert any(m.startswith("ResNet50Extractor runtime=keras") for m in methods)
    assert any(m.startswith("decode only") for m in methods)
    assert all(row["img/s"] > 0 for row in report["rows"])
    assert report["flop_bound"]["resnet50_img_per_s"] > 0
    assert report["peak_rss"]["images"] == report["peak_rss"]["batch_size"] * 2
    assert len(list((tmp_path / "jpg").glob("*.jpg"))) == 3
