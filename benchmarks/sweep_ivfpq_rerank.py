"""Sweep IVF-PQ's ``rerank`` and ``nprobe`` on a catalogue built by ``bench_scale.py``.

Reuses ``bench_scale.py``'s work directory (``reduced.npy``, queries and exact
ground truth), builds one ``IVFPQIndex`` on the reduced vectors, then searches it
with each setting. Prints a table and writes JSON.

    python benchmarks/bench_scale.py --n 1000000 --backends ivfpq-pca --work-dir W
    python benchmarks/sweep_ivfpq_rerank.py --work-dir W
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from visualsim.indexes.faiss import IVFPQIndex


def recall(found: list[list[Any]], truth: np.ndarray) -> float:
    """Mean share of each query's exact top-k found."""
    return float(
        np.mean([len(set(f) & set(t.tolist())) / len(t) for f, t in zip(found, truth, strict=True)])
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", type=Path, required=True)
    parser.add_argument("--train-size", type=int, default=100_000)
    parser.add_argument("--rerank", type=int, nargs="+", default=[4, 16, 32])
    parser.add_argument("--nprobe", type=int, nargs="+", default=[0, 64, 512], help="0: default")
    parser.add_argument(
        "--out", type=Path, default=Path("benchmarks/results/ivfpq-rerank-sweep.json")
    )
    args = parser.parse_args()

    work = args.work_dir
    x = np.load(work / "reduced.npy", mmap_mode="r")
    queries = np.load(work / "queries_reduced.npy")
    truth, truth_reduced = np.load(work / "truth.npy"), np.load(work / "truth_reduced.npy")
    n, step = x.shape[0], 100_000
    index = IVFPQIndex()
    start = time.perf_counter()
    for s in range(0, n, step):
        index.add(np.asarray(x[s : s + step]), list(range(s, min(n, s + step))))
        if not index.is_trained and s + step >= args.train_size:
            index.train()
    build_s = time.perf_counter() - start
    rows = []
    for nprobe in args.nprobe:
        for rerank in args.rerank:
            index.nprobe, index.rerank = (nprobe or None), rerank
            start = time.perf_counter()
            _, found = index.search(queries, 10)
            elapsed = time.perf_counter() - start
            rows.append(
                {
                    "nprobe": index.nprobe_,
                    "rerank": rerank,
                    "qps_batch": len(queries) / elapsed,
                    "recall_at_10": recall(found, truth),
                    "recall_at_10_in_space": recall(found, truth_reduced),
                }
            )
            r = rows[-1]
            print(
                f"nprobe {r['nprobe']:>4}  rerank {rerank:>3}  {r['qps_batch']:>8,.0f} q/s  "
                f"recall@10 {r['recall_at_10']:.3f}  in-space {r['recall_at_10_in_space']:.3f}"
            )
    result = {
        "n": n,
        "dim": int(x.shape[1]),
        "nlist": index.nlist_,
        "build_s": build_s,
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
