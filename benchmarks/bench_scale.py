"""A million vectors on one machine: IVF-PQ and HNSW build time, memory, disk, QPS, recall.

Data
----
``--n`` (default 1,000,000) clustered, L2-normalised vectors of ``--dim``
(default 2048) dimensions, generated in chunks of 25,000 rows, each chunk
from its own seeded stream (so a smaller ``--n`` is a prefix of the larger
set, and a chunk can be generated again instead of being kept). The shape
imitates CNN features: a common mean direction, 1,000 clusters in a
128-dimensional latent space with a decaying spectrum, plus uniform noise in
every dimension (about 10% of the variance). ``--queries`` (1,000) more
vectors from the same clusters, not in the index, are the queries.

Stages (each backend runs in a fresh subprocess, so peak RSS is its own)
------------------------------------------------------------------------
``truth``
    One pass over the data: exact top-10 by brute force (chunked numpy
    matmul) in float32 — the reference for every recall — and in float16
    (the stored copy rounded to float16, queries float32). A
    ``PCAReducer(--reduced-dim)`` (visualsim.reduction; 20,000-row sample
    of the first 100,000 vectors) reduces every chunk into a memory-mapped
    ``(n, 256)`` float32 file in the work directory, and exact top-10 in
    the reduced space is computed from it. The vectors are PCA-reduced, not
    generated at 256 dimensions.
``ivfpq``
    ``visualsim.indexes.IVFPQIndex(rerank=0)`` at the full ``--dim``:
    trained on the first ``--train-size`` (100,000) vectors (``nlist`` by the
    class's rule for that many: ``4 * sqrt(n)``), then fed chunk by chunk;
    the float vectors are never all in memory. ``rerank=0`` because the
    re-ranking copy would be ``4 * dim`` bytes per item (8 GB at 1M x 2048).
``ivfpq-pca``
    ``IVFPQIndex()`` with its defaults (``rerank=16``: keeps the float32
    reduced vectors and re-scores 40 candidates) on the PCA-reduced vectors.
``hnsw-pca``
    ``visualsim.indexes.HNSWIndex()`` (``M=32, ef_construction=80,
    ef_search=64``) on the PCA-reduced vectors (HNSW at 1M x 2048 is too slow
    to build on 2 cores).

Recall@10 is against exact search over the original ``--dim`` vectors
(end to end) and, for the PCA backends, also against exact search in the
reduced space (the index's own loss). QPS: all queries in one ``search``
call (batched) and the first 200 one at a time (single), through the
visualsim API (validation, id mapping included). Build time excludes data
generation. On-disk size is what ``index.save`` writes.

Usage::

    .venv/bin/python benchmarks/bench_scale.py                # 1M x 2048 (long)
    .venv/bin/python benchmarks/bench_scale.py --quick        # 50,000 x 512, 200 queries
    .venv/bin/python benchmarks/bench_scale.py --n 200000 --backends ivfpq,hnsw-pca

Prints a table and writes ``benchmarks/results/scale.json`` (``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

CHUNK = 25_000
LATENT = 128
CLUSTERS = 1_000
K = 10
SINGLE_QUERIES = 200
PCA_FIT_ROWS = 100_000
BACKENDS = ("ivfpq", "ivfpq-pca", "hnsw-pca")
RESULTS = Path(__file__).resolve().parent / "results" / "scale.json"


# --------------------------------------------------------------------------- data


class Generator:
    """Chunk ``i`` of the clustered data set, the same every time it is asked for."""

    def __init__(self, dim: int, seed: int) -> None:
        rng = np.random.default_rng([seed, 0])
        self.dim = dim
        self.seed = seed
        spectrum = (np.arange(1, LATENT + 1) ** -0.5).astype(np.float32)
        self.spectrum = spectrum
        self.basis = (rng.standard_normal((LATENT, dim), dtype=np.float32) * 3) / np.sqrt(dim)
        self.centres = rng.standard_normal((CLUSTERS, LATENT), dtype=np.float32) * spectrum
        self.mean = np.abs(rng.standard_normal(dim, dtype=np.float32)) * (6 / np.sqrt(dim))

    def _rows(self, rng: np.random.Generator, n: int) -> np.ndarray:
        labels = rng.integers(0, CLUSTERS, n)
        latent = self.centres[labels]
        latent += 0.5 * rng.standard_normal((n, LATENT), dtype=np.float32) * self.spectrum
        x = latent @ self.basis
        x += self.mean
        noise = np.frombuffer(rng.bytes(n * self.dim), dtype=np.int8).reshape(n, self.dim)
        x += noise.astype(np.float32) * np.float32(0.05 / 73.9)  # uniform, std 0.05
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        return x

    def chunk(self, i: int, n_total: int) -> np.ndarray:
        """Rows ``[i * CHUNK, min((i + 1) * CHUNK, n_total))``."""
        rows = min(CHUNK, n_total - i * CHUNK)
        return self._rows(np.random.default_rng([self.seed, 1, i]), CHUNK)[:rows]

    def chunks(self, n_total: int, start: int = 0) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(first_row, rows)`` for every chunk from row ``start`` (a multiple of CHUNK)."""
        for i in range(start // CHUNK, -(-n_total // CHUNK)):
            yield i * CHUNK, self.chunk(i, n_total)

    def queries(self, n: int) -> np.ndarray:
        """``n`` query vectors from the same clusters, not in the data set."""
        return self._rows(np.random.default_rng([self.seed, 2]), n)


class TopK:
    """Running exact top-k (by inner product) over chunks of the data."""

    def __init__(self, nq: int, k: int = K) -> None:
        self.k = k
        self.scores = np.full((nq, k), -np.inf, dtype=np.float32)
        self.ids = np.full((nq, k), -1, dtype=np.int64)

    def update(self, scores: np.ndarray, first_row: int) -> None:
        k = min(self.k, scores.shape[1])
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        s = np.concatenate([self.scores, np.take_along_axis(scores, part, axis=1)], axis=1)
        i = np.concatenate([self.ids, part + first_row], axis=1)
        order = np.argsort(-s, axis=1, kind="stable")[:, : self.k]
        self.scores = np.take_along_axis(s, order, axis=1)
        self.ids = np.take_along_axis(i, order, axis=1)


def recall(found: Any, truth: np.ndarray) -> float:
    """Mean share of each query's true top-k that ``found`` contains."""
    return float(
        np.mean([len(set(f) & set(t.tolist())) / len(t) for f, t in zip(found, truth, strict=True)])
    )


# --------------------------------------------------------------------------- stages


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def dir_size_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def stage_truth(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from visualsim.reduction import PCAReducer

    gen = Generator(args.dim, args.seed)
    q = gen.queries(args.queries)
    t0 = time.perf_counter()
    fit_rows = min(args.n, PCA_FIT_ROWS)
    first = np.concatenate([x for _, x in gen.chunks(fit_rows)])
    reducer = PCAReducer(args.reduced_dim, seed=args.seed).fit(first)
    del first
    pca_fit_s = time.perf_counter() - t0
    reducer.save(work / "reducer")

    reduced = np.lib.format.open_memmap(
        work / "reduced.npy", mode="w+", dtype=np.float32, shape=(args.n, args.reduced_dim)
    )
    exact, exact16 = TopK(len(q)), TopK(len(q))
    transform_s = 0.0
    for first_row, x in gen.chunks(args.n):
        exact.update(q @ x.T, first_row)
        exact16.update(q @ x.astype(np.float16).astype(np.float32).T, first_row)
        t = time.perf_counter()
        reduced[first_row : first_row + len(x)] = reducer.transform(x)
        transform_s += time.perf_counter() - t
    reduced.flush()

    q_reduced = reducer.transform(q)
    exact_reduced, exact_reduced16 = TopK(len(q)), TopK(len(q))
    for start in range(0, args.n, 4 * CHUNK):
        part = np.asarray(reduced[start : start + 4 * CHUNK])
        exact_reduced.update(q_reduced @ part.T, start)
        exact_reduced16.update(q_reduced @ part.astype(np.float16).astype(np.float32).T, start)
    np.save(work / "queries.npy", q, allow_pickle=False)
    np.save(work / "queries_reduced.npy", q_reduced, allow_pickle=False)
    np.save(work / "truth.npy", exact.ids, allow_pickle=False)
    np.save(work / "truth_reduced.npy", exact_reduced.ids, allow_pickle=False)
    return {
        "pca_fit_s": pca_fit_s,
        "pca_transform_s": transform_s,
        "pca_explained_variance": float(reducer.explained_variance_ratio_.sum()),  # type: ignore[union-attr]
        "recall_float16": recall(exact16.ids, exact.ids),
        "recall_pca_exact": recall(exact_reduced.ids, exact.ids),
        "recall_pca16_exact": recall(exact_reduced16.ids, exact.ids),
        "peak_rss_mb": peak_rss_mb(),
    }


def _measure(index: Any, queries: np.ndarray, truths: dict[str, np.ndarray]) -> dict[str, Any]:
    index.search(queries[:1], K)  # first search trains / consolidates; not timed as a query
    t = time.perf_counter()
    _, found = index.search(queries, K)
    batched = len(queries) / (time.perf_counter() - t)
    single_q = queries[:SINGLE_QUERIES]
    t = time.perf_counter()
    for row in single_q:
        index.search(row, K)
    single = len(single_q) / (time.perf_counter() - t)
    out: dict[str, Any] = {"qps_batched": batched, "qps_single": single}
    for name, truth in truths.items():
        out[name] = recall(found, truth)
    return out


def _save_size(index: Any, work: Path, name: str) -> float:
    target = work / f"index-{name}"
    index.save(target)
    size = dir_size_mb(target)
    shutil.rmtree(target, ignore_errors=True)
    return size


def stage_ivfpq(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from visualsim.indexes import IVFPQIndex

    gen = Generator(args.dim, args.seed)
    index = IVFPQIndex(rerank=0)
    train_rows = min(args.n, args.train_size)
    build_s = 0.0
    for first_row, x in gen.chunks(args.n):
        t = time.perf_counter()
        index.add(x, np.arange(first_row, first_row + len(x)).tolist())
        if not index.is_trained and first_row + len(x) >= train_rows:
            index.train()
        build_s += time.perf_counter() - t
    truths = {"recall_at_10": np.load(work / "truth.npy")}
    result = _measure(index, np.load(work / "queries.npy"), truths)
    return {
        "backend": "ivfpq",
        "index": "IVFPQIndex(rerank=0)",
        "dim": args.dim,
        "nlist": index.nlist_,
        "nprobe": index.nprobe_,
        "m": index.m_for(args.dim),
        "build_s": build_s,
        "disk_mb": _save_size(index, work, "ivfpq"),
        **result,
        "peak_rss_mb": peak_rss_mb(),
    }


def stage_reduced(args: argparse.Namespace, work: Path, backend: str) -> dict[str, Any]:
    from visualsim.indexes import HNSWIndex, IVFPQIndex

    reduced = np.load(work / "reduced.npy", mmap_mode="r")
    index: Any = HNSWIndex() if backend == "hnsw-pca" else IVFPQIndex()
    train_rows = min(args.n, args.train_size)
    build_s = 0.0
    step = 4 * CHUNK
    for start in range(0, args.n, step):
        x = np.array(reduced[start : start + step])
        t = time.perf_counter()
        index.add(x, np.arange(start, start + len(x)))
        if backend == "ivfpq-pca" and not index.is_trained and start + len(x) >= train_rows:
            index.train()
        build_s += time.perf_counter() - t
    truths = {
        "recall_at_10": np.load(work / "truth.npy"),
        "recall_at_10_vs_reduced_exact": np.load(work / "truth_reduced.npy"),
    }
    result = _measure(index, np.load(work / "queries_reduced.npy"), truths)
    info: dict[str, Any] = {"backend": backend, "dim": args.reduced_dim}
    if backend == "hnsw-pca":
        info.update(index="HNSWIndex()", M=index.M, ef_search=index.ef_search)
    else:
        info.update(
            index="IVFPQIndex()",
            nlist=index.nlist_,
            nprobe=index.nprobe_,
            m=index.m_for(args.reduced_dim),
            rerank=index.rerank,
        )
    return {
        **info,
        "build_s": build_s,
        "disk_mb": _save_size(index, work, backend),
        **result,
        "peak_rss_mb": peak_rss_mb(),
    }


def run_stage(args: argparse.Namespace) -> None:
    work = Path(args.work_dir)
    if args.stage == "truth":
        result = stage_truth(args, work)
    elif args.stage == "ivfpq":
        result = stage_ivfpq(args, work)
    else:
        result = stage_reduced(args, work, args.stage)
    (work / f"{args.stage}.json").write_text(json.dumps(result), encoding="utf-8")


# --------------------------------------------------------------------------- driver


def spawn(args: argparse.Namespace, stage: str, work: Path) -> dict[str, Any]:
    cmd = [
        sys.executable,
        __file__,
        "--stage",
        stage,
        "--work-dir",
        str(work),
        "--n",
        str(args.n),
        "--dim",
        str(args.dim),
        "--reduced-dim",
        str(args.reduced_dim),
        "--queries",
        str(args.queries),
        "--train-size",
        str(args.train_size),
        "--seed",
        str(args.seed),
    ]
    t = time.perf_counter()
    subprocess.run(cmd, check=True)
    result: dict[str, Any] = json.loads((work / f"{stage}.json").read_text(encoding="utf-8"))
    result["stage_wall_s"] = time.perf_counter() - t
    print(f"  {stage}: done in {result['stage_wall_s']:.0f} s", flush=True)
    return result


def storage_rows(args: argparse.Namespace, truth: dict[str, Any]) -> list[dict[str, Any]]:
    d, r = args.dim, args.reduced_dim
    return [
        {"storage": f"float32 x {d}", "bytes_per_item": 4 * d, "recall_at_10": 1.0},
        {
            "storage": f"float16 x {d}",
            "bytes_per_item": 2 * d,
            "recall_at_10": truth["recall_float16"],
        },
        {
            "storage": f"PCA {r}, float32",
            "bytes_per_item": 4 * r,
            "recall_at_10": truth["recall_pca_exact"],
        },
        {
            "storage": f"PCA {r}, float16",
            "bytes_per_item": 2 * r,
            "recall_at_10": truth["recall_pca16_exact"],
        },
    ]


def print_tables(report: dict[str, Any]) -> None:
    cfg = report["config"]
    print(f"\nn={cfg['n']:,}  dim={cfg['dim']}  queries={cfg['queries']}  k={K}")
    print(
        f"PCA {cfg['reduced_dim']}: explained variance {report['pca']['explained_variance']:.3f}, "
        f"fit {report['pca']['fit_s']:.1f} s, transform {report['pca']['transform_s']:.1f} s"
    )
    print(f"\n{'storage (exact search)':<24}{'bytes/item':>11}{'recall@10':>11}")
    for row in report["storage"]:
        rec = "-" if row["recall_at_10"] is None else f"{row['recall_at_10']:.3f}"
        print(f"{row['storage']:<24}{row['bytes_per_item']:>11,}{rec:>11}")
    head = (
        f"\n{'backend':<11}{'dim':>5}{'build s':>9}{'peak RSS MB':>13}{'disk MB':>9}"
        f"{'QPS batch':>11}{'QPS single':>12}{'recall@10':>11}{'(in-space)':>11}"
    )
    print(head)
    for row in report["backends"]:
        own = row.get("recall_at_10_vs_reduced_exact")
        print(
            f"{row['backend']:<11}{row['dim']:>5}{row['build_s']:>9.0f}{row['peak_rss_mb']:>13,.0f}"
            f"{row['disk_mb']:>9,.0f}{row['qps_batched']:>11,.0f}{row['qps_single']:>12,.0f}"
            f"{row['recall_at_10']:>11.3f}{'-' if own is None else f'{own:.3f}':>11}"
        )
    print(f"(truth stage peak RSS {report['truth_peak_rss_mb']:,.0f} MB)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="vectors in the index")
    parser.add_argument(
        "--quick", action="store_true", help="50,000 x 512 (unless --dim), 200 queries"
    )
    parser.add_argument("--dim", type=int, default=2048, help="generated dimension")
    parser.add_argument("--reduced-dim", type=int, default=256, help="PCA output dimension")
    parser.add_argument("--queries", type=int, default=1_000, help="queries for recall / QPS")
    parser.add_argument("--train-size", type=int, default=100_000, help="IVF training rows")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backends", default=",".join(BACKENDS), help="comma-separated")
    parser.add_argument("--out", type=Path, default=RESULTS, help="JSON results path")
    parser.add_argument("--work-dir", help="scratch directory (default: a temporary one)")
    parser.add_argument("--stage", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.stage:
        run_stage(args)
        return 0
    if args.quick:
        args.n, args.queries, args.train_size = 50_000, 200, 10_000
        if "--dim" not in " ".join(sys.argv if argv is None else argv):
            args.dim = 512
    backends = [b for b in args.backends.split(",") if b]
    unknown = set(backends) - set(BACKENDS)
    if unknown:
        parser.error(f"unknown backends {sorted(unknown)}; choose from {BACKENDS}")

    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="bench-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    try:
        print(f"bench_scale: n={args.n:,} dim={args.dim} work={work}", flush=True)
        truth = spawn(args, "truth", work)
        rows = [spawn(args, b, work) for b in backends]
    finally:
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)
    import faiss

    report = {
        "config": {
            "n": args.n,
            "dim": args.dim,
            "reduced_dim": args.reduced_dim,
            "queries": args.queries,
            "single_queries": min(SINGLE_QUERIES, args.queries),
            "k": K,
            "train_size": min(args.n, args.train_size),
            "seed": args.seed,
            "data": "generated (Generator in bench_scale.py); PCA-reduced for the *-pca rows",
        },
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "faiss": faiss.__version__,
            "load_average_at_end": os.getloadavg()[0],
        },
        "pca": {
            "explained_variance": truth["pca_explained_variance"],
            "fit_s": truth["pca_fit_s"],
            "transform_s": truth["pca_transform_s"],
        },
        "truth_peak_rss_mb": truth["peak_rss_mb"],
        "storage": storage_rows(args, truth),
        "backends": rows,
        "total_s": time.perf_counter() - started,
    }
    print_tables(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
