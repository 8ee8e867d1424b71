"""Benchmark every index on clustered unit vectors: build time, speed, recall, memory.

Usage::

    python benchmarks/bench_indexes.py            # N=100k, d=2048, 1,000 queries
    python benchmarks/bench_indexes.py --quick    # N=20k, d=256
    python benchmarks/bench_indexes.py --n 50000 --dim 2048

Prints a table and writes ``benchmarks/results/indexes.json``. Recall@10 is
measured against exact search (``FlatIndex``). "one q/s" times queries one at
a time (the latency a web request sees), "batch q/s" all queries in one call.
"MB" is the size of the saved index directory, which is what the index holds
in memory apart from Python's id map. The data: ``n // 50`` cluster centres in
a 64-d subspace, each cluster spread over its own random 32-d subspace plus
small isotropic noise, L2-normalised, seeded.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np

from visualsim.indexes import IdMap, make_index

BACKENDS: dict[str, tuple[str, dict[str, Any]]] = {
    "sklearn brute": ("sklearn", {"algorithm": "brute"}),
    "flat": ("flat", {}),
    "ivf": ("ivf", {}),
    "hnsw": ("hnsw", {}),
    "ivfpq (rerank=16)": ("ivfpq", {}),
    "ivfpq (rerank=0)": ("ivfpq", {"rerank": 0}),
}


def clustered(n: int, d: int, *, seed: int = 0) -> np.ndarray:
    """Return ``n`` clustered unit vectors in ``d`` dimensions (float32)."""
    rng = np.random.default_rng(seed)
    n_clusters = max(10, n // 50)
    centers = (rng.standard_normal((n_clusters, 64), dtype=np.float32)) @ rng.standard_normal(
        (64, d), dtype=np.float32
    )
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    assign = rng.integers(0, n_clusters, n)
    x = centers[assign] + 0.5 * rng.standard_normal((n, d), dtype=np.float32) / np.sqrt(d)
    for c in range(n_clusters):
        rows = np.flatnonzero(assign == c)
        basis = rng.standard_normal((32, d), dtype=np.float32) / np.sqrt(d)
        x[rows] += 2.0 * (rng.standard_normal((len(rows), 32), dtype=np.float32) @ basis) / 32**0.5
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32)


def recall_at(got: list[list[Any]], truth: list[list[Any]], k: int) -> float:
    """Mean fraction of the true top-k found in the returned top-k."""
    return float(
        np.mean([len(set(g[:k]) & set(t[:k])) / k for g, t in zip(got, truth, strict=True)])
    )


def dir_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6


def idmap_bytes_per_id(n: int = 100_000) -> float:
    """Python memory of the id map per (string) id, measured."""
    tracemalloc.start()
    ids = [f"sku-{i:09d}" for i in range(n)]
    IdMap().assign(ids)
    current, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return current / n


def ivfpq_million_estimate(dim: int = 2048, n: int = 1_000_000) -> dict[str, float]:
    """Memory of IVFPQIndex(rerank=0) with default m, nlist for n vectors, in MB."""
    index = make_index("ivfpq", rerank=0)
    m = index.m_for(dim)
    nlist = index.nlist_for(n)
    parts = {
        "codes": n * m * index.nbits / 8,
        "faiss ids": n * 8,
        "centroids": nlist * dim * 4,
        "codebooks": dim * 2**index.nbits * 4,
        "id map (Python)": n * idmap_bytes_per_id(),
    }
    out = {k: v / 1e6 for k, v in parts.items()}
    out["total"] = sum(out.values())
    out["m"], out["nlist"] = m, nlist
    return out


def bench(
    name: str,
    kind: str,
    params: dict[str, Any],
    x: np.ndarray,
    q: np.ndarray,
    *,
    truth: list[list[Any]] | None,
    k: int,
    n_single: int,
    tmp: Path,
) -> dict[str, Any]:
    ids = list(range(len(x)))
    index = make_index(kind, **params)
    t0 = time.perf_counter()
    index.add(x, ids)
    train = getattr(index, "train", None)
    if train is not None and len(x) >= index.min_train_size(len(x)):
        train()
    index.search(q[:1], k)  # fits sklearn's model; no-op for the others
    build_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    _, got = index.search(q, k)
    batch_qps = len(q) / (time.perf_counter() - t0)

    single = q[:n_single]
    t0 = time.perf_counter()
    for row in single:
        index.search(row, k)
    single_s = (time.perf_counter() - t0) / len(single)

    index.save(tmp / name.replace(" ", "_"))
    mb = dir_mb(tmp / name.replace(" ", "_"))
    shutil.rmtree(tmp / name.replace(" ", "_"))
    return {
        "name": name,
        "kind": kind,
        "params": params,
        "config": index.get_config(),
        "build_s": build_s,
        "batch_qps": batch_qps,
        "single_ms": single_s * 1e3,
        "single_qps": 1 / single_s,
        "recall@10": None if truth is None else recall_at(got, truth, k),
        "memory_mb": mb,
        "ids": got,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=None, help="stored vectors (default 100,000)")
    parser.add_argument("--dim", type=int, default=None, help="dimension (default 2048)")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--single", type=int, default=200, help="queries timed one at a time")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="N=20k, d=256")
    parser.add_argument("--backends", nargs="*", default=list(BACKENDS), choices=list(BACKENDS))
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "indexes.json"
    )
    args = parser.parse_args(argv)
    n = args.n or (20_000 if args.quick else 100_000)
    dim = args.dim or (256 if args.quick else 2048)

    t0 = time.perf_counter()
    data = clustered(n + args.queries, dim, seed=args.seed)
    x, q = data[:n], data[n:]
    print(
        f"data: {n} x {dim} clustered, {args.queries} queries, k={args.k} "
        f"({time.perf_counter() - t0:.1f}s)",
        flush=True,
    )

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmpdir:
        exact = bench(
            "flat", "flat", {}, x, q, truth=None, k=args.k, n_single=args.single, tmp=Path(tmpdir)
        )
        truth = exact["ids"]
        exact["recall@10"] = 1.0
        for name in args.backends:
            if name == "flat":
                row = exact
            else:
                kind, params = BACKENDS[name]
                row = bench(
                    name,
                    kind,
                    params,
                    x,
                    q,
                    truth=truth,
                    k=args.k,
                    n_single=args.single,
                    tmp=Path(tmpdir),
                )
            rows.append(row)
            print(
                f"  {name}: build {row['build_s']:.1f}s, recall {row['recall@10']:.3f}", flush=True
            )

    flat_single = exact["single_ms"]
    header = (
        "| index | build s | batch q/s | one-at-a-time ms | speed-up vs flat (one) "
        "| recall@10 | MB |"
    )
    lines = [header, "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        r["speedup_single_vs_flat"] = flat_single / r["single_ms"]
        lines.append(
            f"| {r['name']} | {r['build_s']:.1f} | {r['batch_qps']:.0f} | {r['single_ms']:.2f} | "
            f"{r['speedup_single_vs_flat']:.1f}x | {r['recall@10']:.3f} | {r['memory_mb']:.0f} |"
        )
    table = "\n".join(lines)
    million = ivfpq_million_estimate(dim=2048)
    print()
    print(table)
    print()
    print(
        f"IVF-PQ (rerank=0, m={million['m']:.0f}, nlist={million['nlist']:.0f}) for 1M x 2048: "
        + ", ".join(f"{k} {v:.0f} MB" for k, v in million.items() if k not in ("m", "nlist"))
    )

    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "command": " ".join(
            ["python", "benchmarks/bench_indexes.py", *(argv if argv is not None else sys.argv[1:])]
        ),
        "n": n,
        "dim": dim,
        "queries": args.queries,
        "single_queries": args.single,
        "k": args.k,
        "seed": args.seed,
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        },
        "results": [{k: v for k, v in r.items() if k != "ids"} for r in rows],
        "ivfpq_1M_x_2048_rerank0_mb": million,
        "table": table,
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
