"""benchmarks/bench_serve_bombs.py runs end to end on a tiny catalogue and writes its JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_serve_bombs_small_run_refuses_the_bombs_and_writes_every_row(
    tmp_path: Path,
) -> None:
    out = tmp_path / "bombs.json"
    cmd = [
        sys.executable,
        str(ROOT / "benchmarks" / "bench_serve_bombs.py"),
        "--n",
        "200",
        "--repeat",
        "2",
        "--clients",
        "2",
        "--queries",
        "5",
        "--rounds",
        "1",
        "--scale",
        "0.1",
        "--cache",
        str(tmp_path / "cache"),
        "--out",
        str(out),
    ]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    doc = json.loads(out.read_text())
    rows = {r["upload"]: r for r in doc["uploads"]}
    assert set(rows) == {
        "png-25mp",
        "jpeg-huge",
        "png-chunks",
        "png-4mp-black",
        "png-4mp-noise",
        "jpeg-64mp",
        "photo",
    }
    for bomb in ("png-25mp", "jpeg-huge", "png-chunks"):  # refused from the header: nothing decoded
        assert rows[bomb]["status"] == ["422"] and len(rows[bomb]["ms"]) == 2
    for allowed in ("png-4mp-black", "png-4mp-noise", "jpeg-64mp", "photo"):
        assert rows[allowed]["status"] == ["200"]
    assert rows["png-25mp"]["kib"] < 200  # the bomb of issue 27: tiny on the wire
    assert {r["upload"] for r in doc["under_fire"]} == set(rows) - {"photo"} | {"empty-body"}
    assert all(r["status_500"] == 0 and r["bomb_posts"] > 0 for r in doc["under_fire"])
    assert all(len(r["ratio_by_round"]) == 1 for r in doc["under_fire"])
    assert doc["server_log_status_500"] == 0 and doc["server_log_tracebacks"] == 0
    assert "lscpu_model" in doc["machine"]
    assert "| upload" in run.stdout
