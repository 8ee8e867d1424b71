"""benchmarks/bench_peers.py: its data and measures, and a tiny side-by-side run (issue 26).

The project's environment has visualsim and faiss only, so the tiny run compares those
two and checks that a peer that is missing is reported as such, not as a failure.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from benchmark_scripts import load_benchmark

ROWS = (
    "reopen_s",
    "first_query_ms",
    "query_p50_ms",
    "filter_p50_ms",
    "add_one_ms",
    "build_s",
    "serve_peak_mb",
    "build_peak_mb",
)


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load_benchmark("bench_peers")


def test_the_data_is_unit_vectors_with_twenty_categories(bench: ModuleType) -> None:
    data = bench.make_data(600, 16, 30)
    assert data["vectors"].shape == (600, 16) and data["vectors"].dtype == np.float32
    assert np.allclose(np.linalg.norm(data["vectors"], axis=1), 1, atol=1e-5)
    assert np.allclose(np.linalg.norm(data["queries"], axis=1), 1, atol=1e-5)
    assert set(np.unique(data["category"])) == set(range(20))
    assert data["price"].shape == (600,) and data["stock"].dtype == bool
    again = bench.make_data(600, 16, 30)
    assert np.array_equal(again["vectors"], data["vectors"])  # seeded


def test_ground_truth_is_the_exact_top_ten_within_the_category(bench: ModuleType) -> None:
    data = bench.make_data(500, 8, 20)
    exact, filtered = bench.ground_truth(
        data["vectors"], data["queries"], data["category"], data["query_category"]
    )
    scores = data["queries"] @ data["vectors"].T
    for i in range(20):
        assert list(exact[i]) == list(np.argsort(-scores[i])[:10])
        rows = np.flatnonzero(data["category"] == data["query_category"][i])
        assert list(filtered[i]) == list(rows[np.argsort(-scores[i, rows])[:10]])
    assert bench.recall([list(exact[0]), list(exact[1][:5])], exact) == pytest.approx(0.75)


def test_a_waiting_writer_gets_the_lock_before_new_readers(bench: ModuleType) -> None:
    lock = bench.RWLock()
    lock.acquire_read()
    order: list[str] = []
    writer = threading.Thread(
        target=lambda: (lock.acquire_write(), order.append("w"), lock.release_write())
    )
    writer.start()
    time.sleep(0.05)
    reader = threading.Thread(
        target=lambda: (lock.acquire_read(), order.append("r"), lock.release_read())
    )
    reader.start()
    time.sleep(0.05)
    assert order == []  # the writer waits for the first reader, the new reader for the writer
    lock.release_read()
    writer.join(5)
    reader.join(5)
    assert order == ["w", "r"]


def test_readers_queued_behind_a_writer_go_before_its_next_write(bench: ModuleType) -> None:
    lock = bench.RWLock()
    lock.acquire_write()
    order: list[str] = []

    def read() -> None:
        lock.acquire_read()
        order.append("r")
        time.sleep(0.05)
        lock.release_read()

    reader = threading.Thread(target=read)
    reader.start()
    time.sleep(0.05)
    lock.release_write()
    lock.acquire_write()  # at once, as a writer adding back to back does
    order.append("w")
    lock.release_write()
    reader.join(5)
    assert order == ["r", "w"]


def test_tiny_run_writes_every_row_and_the_page(bench: ModuleType, tmp_path: Path) -> None:
    out, page = tmp_path / "peers.json", tmp_path / "peers.md"
    argv = [
        "--n", "2000", "--dim", "32", "--queries", "60", "--adds", "30",
        "--systems", "visualsim,visualsim-part,faiss,qdrant",
        "--concurrency-seconds", "0.5", "--threads", "1",
        "--out", str(out), "--docs", str(page),
    ]  # fmt: skip
    assert bench.main(argv) == 0
    doc = json.loads(out.read_text())
    assert doc["config"]["n"] == 2000 and doc["config"]["omp_threads"] == 1
    assert doc["machine"]["cpu_lscpu"] and doc["machine"]["loadavg_1m_start"] >= 0
    assert len(doc["visualsim_commit"] or "0" * 40) == 40
    systems = doc["systems"]
    for name in ("visualsim", "visualsim-part", "faiss"):
        result = systems[name]
        assert result["status"] == "ok", result
        assert all(result[row] > 0 for row in ROWS), result
        assert 0.9 <= result["recall_at_10"] <= 1 and 0.5 <= result["filter_recall_at_10"] <= 1
        assert result["queries_timed"] == result["filter_queries_timed"] == 60
        assert result["adds_timed"] == 30 and result["disk_bytes"] > 2000 * 32 * 4
        assert result["serve_peak_mb"] >= result["serve_baseline_mb"] > 10
        conc = result["concurrency"]
        assert conc["errors"] == 0 and conc["reads"] > 0 and conc["writes"] > 0
        assert conc["ops"] == conc["reads"] + conc["writes"]
    assert systems["qdrant"]["status"] in {"ok", "not installed"}
    text = page.read_text()
    assert "| query p50, ms (recall@10) |" in text and "raw FAISS HNSW" in text
    assert doc["table"] in text and "python benchmarks/bench_peers.py --n 2000" in text
    again = tmp_path / "again.md"  # the page again, from the JSON alone
    assert bench.main(["--render", str(out), "--docs", str(again)]) == 0
    assert again.read_text() == text


def test_an_unknown_system_is_refused(bench: ModuleType) -> None:
    with pytest.raises(SystemExit, match="pinecone"):
        bench.main(["--systems", "faiss,pinecone"])
