"""Smoke test of benchmarks/bench_milvus.py: a tiny run finishes and writes sane JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_tiny_benchmark_run_writes_both_backends(tmp_path: Path) -> None:
    out = tmp_path / "milvus.json"
    args = ["--n", "400", "--dim", "16", "--queries", "8", "--singles", "2", "--churn", "5"]
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_milvus.py"), *args, "--out", str(out)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| milvus lite hnsw" in done.stdout and "| faiss hnsw" in done.stdout
    payload = json.loads(out.read_text())
    assert payload["n"] == 400 and payload["faiss_threads"] == 1
    assert [r["index"] for r in payload["results"]] == ["faiss hnsw", "milvus lite hnsw"]
    for row in payload["results"]:
        assert 0.5 <= row["recall@10"] <= 1.0 and 0.5 <= row["filtered_recall@10"] <= 1.0
        assert row["build_s"] > 0 and row["single_ms_median"] > 0
    assert set(payload["milvus_over_faiss"]) >= {"build_s", "single_ms_median"}
