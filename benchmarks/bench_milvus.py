"""Milvus Lite next to FAISS HNSW: build, batched and single queries, filtered queries,
recall@10, add and remove cost.

Both sides hold the same clustered unit vectors with two metadata fields
(``cat``: 10 values, ``price``: 0-99). FAISS HNSW is visualsim's ``HNSWIndex``
(filters pushed in as a label mask, as the catalogue does); Milvus Lite runs
the Milvus engine in this process through ``MilvusIndex`` (filters translated
to a Milvus expression). Both HNSW graphs use ``M=32, efConstruction=80,
ef=64``. Recall is against exact numpy search; the filtered recall is against
exact search over the matching items only. The FAISS side is built as a
visualsim catalogue (``Recommender.add_vectors``), so its add and remove costs
are the catalogue's (one item per call: an exact delta and tombstones), and so
are its filtered queries (``query_vector(where=...)``, one query per call; the
raw index with a bitmap selector is reported beside them); Milvus Lite's are
``MilvusIndex.add``/``remove`` of the whole batch and ``search(where=...)``.

Usage::

    python benchmarks/bench_milvus.py                  # 200,000 x 256
    python benchmarks/bench_milvus.py --n 20000        # a quick look

Writes ``benchmarks/results/milvus.json`` (``--out``) and prints a table.
FAISS (in visualsim and inside Milvus Lite) runs single-threaded unless
``--threads`` says otherwise: on a shared machine OpenMP's spinning threads
measure the neighbours' load, not the index.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import machine_info, median, print_table, write_json
from bench_indexes import clustered, recall_at
from bench_live import FixedDim

from visualsim import Recommender
from visualsim.indexes import HNSWIndex
from visualsim.indexes.milvus import MilvusIndex

WHERE = "cat == 'c3' and price < 50"  # 5% of the items
HNSW = {"M": 32, "ef_construction": 80, "ef_search": 64}


def exact_top(x: np.ndarray, q: np.ndarray, k: int, rows: np.ndarray | None = None) -> list[list]:
    """Exact top-k row numbers by numpy (optionally among ``rows`` only)."""
    pool = x if rows is None else x[rows]
    out = []
    for start in range(0, len(q), 64):
        sims = q[start : start + 64] @ pool.T
        top = np.argsort(-sims, axis=1, kind="stable")[:, :k]
        out.extend((top if rows is None else rows[top]).tolist())
    return out


def measure(
    name: str,
    index: Any,
    x: np.ndarray,
    meta: list[dict[str, Any]],
    q: np.ndarray,
    extra: np.ndarray,
    *,
    k: int,
    mask: np.ndarray,
    truth: list[list],
    truth_f: list[list],
    singles: int,
) -> dict[str, Any]:
    n = len(x)
    ids = list(range(n))
    milvus = isinstance(index, MilvusIndex)
    t, c = time.perf_counter(), time.process_time()
    if milvus:
        index.add(x, ids, metadata=meta)
        client = index._connect()
        client.flush(index.collection)  # seal the segments so the HNSW graph is built
        index.search(q[:1], k)  # and loaded
    else:
        # visualsim's catalogue over FAISS HNSW: its index is searched raw below
        # (labels are rows, here equal to the ids); add/remove go through the
        # catalogue, as a shop's would (new rows in the exact delta, removals as
        # tombstones: the raw HNSWIndex rebuilds its graph on a remove)
        catalogue = Recommender(FixedDim(dim=x.shape[1]), index).add_vectors(x, ids, meta)
        segments = catalogue._segments_
        segments.flush(catalogue._store_)  # index every row (below the delta's size too)
        index = segments.index
        index.search(q[:1], k)
    build, build_cpu = time.perf_counter() - t, time.process_time() - c
    print(f"  {name}: built in {build:.1f}s", flush=True)

    t = time.perf_counter()
    _, got = index.search(q, k)
    batched = time.perf_counter() - t
    lat, lat_cpu = [], []
    for i in range(singles):
        t, c = time.perf_counter(), time.process_time()
        index.search(q[i], k)
        lat.append(time.perf_counter() - t)
        lat_cpu.append(time.process_time() - c)

    flat, flat_cpu = [], []
    raw_sel: dict[str, float] = {}
    t = time.perf_counter()
    if milvus:
        _, got_f = index.search(q, k, where=WHERE)
    else:
        # what a shop gets: the catalogue plans the filter (here 5 %: few enough
        # rows to score exactly); the raw index with a selector is kept for reference
        got_f = [[h.id for h in catalogue.query_vector(v, k, where=WHERE)] for v in q]
    filtered = time.perf_counter() - t
    for i in range(singles):
        t, c = time.perf_counter(), time.process_time()
        if milvus:
            index.search(q[i], k, where=WHERE)
        else:
            catalogue.query_vector(q[i], k, where=WHERE)
        flat.append(time.perf_counter() - t)
        flat_cpu.append(time.process_time() - c)
    if not milvus:
        _, labels = index.search_labels(q, k, allowed=mask)
        raw_got = [[int(v) for v in row if v >= 0] for row in labels.tolist()]
        lat_sel = []
        for i in range(singles):
            t = time.perf_counter()
            index.search_labels(q[i], k, allowed=mask)
            lat_sel.append(time.perf_counter() - t)
        raw_sel = {
            "raw_selector_filtered_single_ms_median": 1000 * median(lat_sel),
            "raw_selector_filtered_recall@10": recall_at(raw_got, truth_f, k),
        }

    new_ids = list(range(n, n + len(extra)))
    new_meta = [{"cat": "c0", "price": 1.0} for _ in new_ids]
    t = time.perf_counter()
    if milvus:
        index.add(extra, new_ids, metadata=new_meta)
    else:
        for j, item in enumerate(new_ids):  # one item per call, as a daily feed adds them
            catalogue.add_vectors(extra[j : j + 1], [item], [new_meta[j]])
    add_s = time.perf_counter() - t
    t = time.perf_counter()
    if milvus:
        index.remove(new_ids)
    else:
        for item in new_ids:
            catalogue.remove([item])
    remove_s = time.perf_counter() - t
    return {
        "index": name,
        "n": n,
        "build_s": build,
        "build_cpu_s": build_cpu,
        "build_per_s": n / build,
        "batched_ms_per_query": 1000 * batched / len(q),
        "single_ms_median": 1000 * median(lat),
        "single_cpu_ms_median": 1000 * median(lat_cpu),
        "filtered_batched_ms_per_query": 1000 * filtered / len(q),
        "filtered_single_ms_median": 1000 * median(flat),
        "filtered_single_cpu_ms_median": 1000 * median(flat_cpu),
        "recall@10": recall_at(got, truth, k),
        "filtered_recall@10": recall_at(got_f, truth_f, k),
        "add_us_per_item": 1e6 * add_s / len(extra),
        "remove_us_per_item": 1e6 * remove_s / len(extra),
        **raw_sel,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--singles", type=int, default=50, help="single queries timed")
    parser.add_argument("--churn", type=int, default=1000, help="items added then removed")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="FAISS OpenMP threads")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "milvus.json"))
    args = parser.parse_args(argv)

    n, k = args.n, args.k
    import faiss

    faiss.omp_set_num_threads(args.threads)
    data = clustered(n + args.queries + args.churn, args.dim, seed=args.seed)
    x, q, extra = data[:n], data[n : n + args.queries], data[n + args.queries :]
    meta = [{"cat": f"c{i % 10}", "price": float(i % 100)} for i in range(n)]
    rows = np.array([i for i in range(n) if i % 10 == 3 and i % 100 < 50], dtype=np.int64)
    mask = np.zeros(n, dtype=bool)
    mask[rows] = True
    print(
        f"data: {n} x {args.dim} clustered, {args.queries} queries, filter {WHERE!r} "
        f"({len(rows) / n:.0%} of items)",
        flush=True,
    )
    truth = exact_top(x, q, k)
    truth_f = exact_top(x, q, k, rows)

    results = []
    with tempfile.TemporaryDirectory(prefix="bench-milvus-") as tmp:
        backends = {
            "faiss hnsw": lambda: HNSWIndex(**HNSW),
            "milvus lite hnsw": lambda: MilvusIndex(
                uri=str(Path(tmp) / "bench.db"),
                collection="hnsw",
                index_type="HNSW",
                M=HNSW["M"],
                efConstruction=HNSW["ef_construction"],
                ef=HNSW["ef_search"],
            ),
        }
        for name, make in backends.items():
            index = make()
            row = measure(
                name,
                index,
                x,
                meta,
                q,
                extra,
                k=k,
                mask=mask,
                truth=truth,
                truth_f=truth_f,
                singles=args.singles,
            )
            results.append(row)
            if isinstance(index, MilvusIndex):
                index.drop()
            del index

    faiss_row, milvus_row = results
    ratios = {
        key: milvus_row[key] / faiss_row[key]
        for key in (
            "build_s",
            "batched_ms_per_query",
            "single_ms_median",
            "single_cpu_ms_median",
            "filtered_batched_ms_per_query",
            "filtered_single_ms_median",
            "filtered_single_cpu_ms_median",
            "add_us_per_item",
            "remove_us_per_item",
        )
    }
    columns = [
        "index",
        "build_s",
        "batched_ms_per_query",
        "single_ms_median",
        "single_cpu_ms_median",
        "filtered_single_ms_median",
        "recall@10",
        "filtered_recall@10",
        "add_us_per_item",
        "remove_us_per_item",
    ]
    table = print_table(results, columns)
    print("milvus lite / faiss: " + ", ".join(f"{k} {v:.1f}x" for k, v in ratios.items()))
    import pymilvus

    payload = {
        "benchmark": "bench_milvus",
        "command": "python benchmarks/bench_milvus.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": machine_info(),
        "pymilvus": pymilvus.__version__,
        "milvus_lite": __import__("milvus_lite").__version__,
        "n": n,
        "dim": args.dim,
        "queries": args.queries,
        "k": k,
        "filter": WHERE,
        "filter_selectivity": len(rows) / n,
        "hnsw": HNSW,
        "churn": {
            "faiss hnsw": "visualsim catalogue: add_vectors/remove one item per call",
            "milvus lite hnsw": "MilvusIndex.add/remove of the batch",
        },
        "faiss_threads": args.threads,
        "results": results,
        "milvus_over_faiss": ratios,
        "table": table,
    }
    print(f"wrote {write_json(args.out, payload)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
