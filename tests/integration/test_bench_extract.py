"""The extraction benchmark runs end to end in its quick mode (no timing asserts)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_extract.py"


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


@pytest.mark.slow
def test_openvino_mode_writes_rows_quality_and_starts(tmp_path: Path) -> None:
    out = tmp_path / "extract-openvino.json"
    args = ["--openvino", "--n", "8", "--repeats", "1", "--networks", "squeezenet"]
    args += ["--precisions", "f32,int8", "--guard-n", "4", "--fmnist-n", "0", "--ov-batch", "2"]
    args += ["--latency-n", "1", "--images-dir", str(tmp_path / "jpg"), "--out", str(out)]
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| network" in done.stdout and "First start" in done.stdout
    report = json.loads(out.read_text())
    assert [(r["runtime"], r["precision"]) for r in report["rows"]] == [
        ("keras", "f32"),
        ("openvino", "f32"),
        ("openvino", "int8"),
    ]
    assert all(row["model img/s"] > 0 and row["one image ms"] > 0 for row in report["rows"])
    assert all(q["min_cos_photos"] >= q["guard"] for q in report["quality"])
    phases = [(s["spec"], s["phase"]) for s in report["first_start"]]
    assert ("squeezenet:openvino:int8", "warm") in phases
    warm = next(
        s for s in report["first_start"] if s["spec"].endswith("int8") and s["phase"] == "warm"
    )
    assert warm["cache_hits"] == ["base", "int8"] and not warm["tensorflow_imported"]


@pytest.mark.slow
def test_latency_mode_writes_stage_rows(tmp_path: Path) -> None:
    out = tmp_path / "extract-latency.json"
    args = ["--latency", "--networks", "squeezenet", "--precisions", "f32,int8"]
    args += ["--latency-n", "2", "--ov-batch", "2", "--images-dir", str(tmp_path / "jpg")]
    args += ["--out", str(out)]
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| network" in done.stdout and "ONEDNN_MAX_CPU_ISA=None" in done.stdout
    report = json.loads(out.read_text())
    assert [(r["network"], r["precision"]) for r in report["rows"]] == [
        ("squeezenet", "f32"),
        ("squeezenet", "int8"),
    ]
    for row in report["rows"]:
        assert set(row["stages"]) == {
            "e2e",
            "e2e_cpu",
            "decode",
            "resize",
            "model",
            "model_1thread",
            "post",
        }
        assert row["one image ms (median)"] > 0 and row["batch 2 img/s"] > 0
        assert row["compiled as"] in ("f32", "bf16", "f16")
    assert report["onednn_max_cpu_isa"] is None
