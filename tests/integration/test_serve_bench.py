"""benchmarks/bench_serve.py runs end to end on a tiny catalogue and writes its JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_serve_small_run_writes_rows_for_every_cell(tmp_path: Path) -> None:
    out = tmp_path / "serve.json"
    cmd = [
        sys.executable,
        str(ROOT / "benchmarks" / "bench_serve.py"),
        "--n",
        "300",
        "--index",
        "flat",
        "--requests",
        "8",
        "--clients",
        "1",
        "2",
        "--cache",
        str(tmp_path / "cache"),
        "--out",
        str(out),
        "--workers",
        "2",
    ]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    doc = json.loads(out.read_text())
    cells = {(r["endpoint"], r["clients"], r["where"]) for r in doc["rows"]}
    assert cells == {
        (e, c, w)
        for e in ("similar", "query")
        for c in (1, 2)
        for w in ("in-process", "bare-asgi", "http")
    }
    assert all(r["errors"] == 0 and r["n"] == 8 for r in doc["rows"])
    assert doc["rounds_per_cell"] == 5  # the two sides alternate
    assert all(len(r["p50_ratio_by_round"]) == 5 for r in doc["rows"] if r["where"] == "http")
    assert doc["server_exit_code"] == 0
    assert doc["bare_asgi_reference"] and doc["bare_exit_code"] is not None
    assert doc["server_workers"] == 2
    assert doc["client"].startswith("http.client keep-alive")
    assert doc["omp_num_threads"] is not None
    assert doc["server_http"]["http"]
    assert "| endpoint |" in run.stdout
