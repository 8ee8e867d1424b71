"""A live catalogue's costs: add, remove, filtered queries, incremental saves, concurrency.

For each size and backend: build a catalogue of clustered unit vectors with
metadata ``{"category": 20 values, "price": 0..100}``, then measure, in one run,

* ``query``: one unfiltered ``query_vector``, median over the queries;
* ``eq 5%``: ``where="category == 'c3'"`` (5 % of the items), median; on an
  approximate index through the ``partition_by="category"`` partitions, and
  ``eq 5% no-part`` the same queries through the whole index with a selector;
* ``range 1%``: ``where="price < 1.0"`` (1 %), median;
* ``recall``: recall@10 of the unfiltered, ``eq`` and ``range`` queries against
  exact search (over the matching items for the filtered ones);
* ``cold``: the same two with a filter never seen before (no cached mask), median;
* ``add``: one ``add_vectors`` call of one item, amortised over ``--adds`` calls;
* ``remove``: one ``remove`` of one item, median over ``--removes`` calls;
* ``save %``: bytes written by ``save(overwrite=True)`` after the adds, as a
  share of the saved catalogue's bytes;
* ``threads``: 4 reader threads + 1 writer over ``--ops`` operations: exceptions
  and stale ids (an id returned after its removal finished).

Usage::

    python benchmarks/bench_live.py --sizes 1000000x256 200000x2048 --backends flat hnsw

The build uses ``--build-threads`` FAISS threads (default 2); everything
measured after it runs on one (a shared machine's spinning OpenMP threads
measure the neighbours).

Prints a table and writes ``benchmarks/results/live.json``.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine_info, peak_rss_mb, print_table, write_json

from visualsim import Recommender, register_extractor
from visualsim.extractors.base import BaseExtractor


@register_extractor("bench-fixed-dim", overwrite=True)
class FixedDim(BaseExtractor):
    """Names a vector space of the benchmark's dimension (vectors are added directly)."""

    def __init__(self, *, dim: int) -> None:
        self.dim_ = dim

    @property
    def dim(self) -> int:
        return self.dim_

    def get_config(self) -> dict[str, Any]:
        return {"dim": self.dim_}

    def _prepare(self, image: np.ndarray) -> np.ndarray:
        return np.resize(image.astype(np.float32).ravel() + 1.0, self.dim_)

    def _embed(self, batch: np.ndarray) -> np.ndarray:
        return batch


def clustered(n: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(1000, dim)).astype(np.float32)
    out = np.empty((n, dim), np.float32)
    for lo in range(0, n, 100_000):
        hi = min(n, lo + 100_000)
        out[lo:hi] = centres[rng.integers(0, 1000, hi - lo)] + 0.6 * rng.normal(
            size=(hi - lo, dim)
        ).astype(np.float32)
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


def exact_top(x: np.ndarray, queries: np.ndarray, rows: np.ndarray | None) -> list[set[int]]:
    """The exact top-10 ids (= rows) of each query, among ``rows`` (default all)."""
    pool = x if rows is None else x[rows]
    ids = np.arange(len(x)) if rows is None else rows
    out = []
    for lo in range(0, len(queries), 16):
        sims = queries[lo : lo + 16] @ pool.T
        top = np.argpartition(-sims, 9, axis=1)[:, :10]
        out.extend(set(ids[t].tolist()) for t in top)
    return out


def ms(values: list[float]) -> float:
    return 1000 * statistics.median(values)


def bench(n: int, dim: int, backend: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    rng = np.random.default_rng(1)
    x = clustered(n, dim)
    meta = [
        {"category": f"c{int(c)}", "price": float(p)}
        for c, p in zip(rng.integers(0, 20, n), rng.uniform(0, 100, n), strict=True)
    ]
    import faiss

    exact = backend in ("flat", "sklearn")
    part = None if exact else args.partition_by
    rec = Recommender(FixedDim(dim=dim), backend, partition_by=part)
    faiss.omp_set_num_threads(args.build_threads)
    t0 = time.perf_counter()
    rec.add_vectors(x, list(range(n)), meta)
    rec.compact()  # every item in the index (the sealed segment)
    build = time.perf_counter() - t0
    faiss.omp_set_num_threads(1)
    cats = np.array([m["category"] == "c3" for m in meta])
    cheap = np.array([m["price"] < 1.0 for m in meta])
    del meta
    queries = clustered(args.queries, dim, seed=7)
    truth = {
        None: exact_top(x, queries, None),
        "category == 'c3'": exact_top(x, queries, np.flatnonzero(cats)),
        "price < 1.0": exact_top(x, queries, np.flatnonzero(cheap)),
    }
    del x
    recall: dict[Any, float] = {}

    def timed(where: Any) -> list[float]:
        out = []
        found = 0
        for j, q in enumerate(queries):
            t = time.perf_counter()
            hits = rec.query_vector(q, 10, where=where)
            out.append(time.perf_counter() - t)
            assert len(hits) == 10
            found += len({h.id for h in hits} & truth[where][j])
        recall[where] = found / (10 * len(queries))
        return out

    rec.query_vector(queries[0], 10)  # warm up
    q_plain = timed(None)
    q_eq = timed("category == 'c3'")
    segments = rec._segments_
    assert segments is not None
    if segments.partitions is not None:
        segments.use_partitions = False
        q_eq_whole = timed("category == 'c3'")
        recall["whole"] = recall["category == 'c3'"]
        segments.use_partitions = True
        q_eq = timed("category == 'c3'")
    else:
        q_eq_whole = q_eq
        recall["whole"] = recall["category == 'c3'"]
    q_range = timed("price < 1.0")
    cold_eq, cold_range = [], []
    for j, q in enumerate(queries[: min(50, len(queries))]):
        t = time.perf_counter()
        rec.query_vector(q, 10, where=f"category == 'c{j % 20}' and price >= {j * 1e-9}")
        cold_eq.append(time.perf_counter() - t)
        t = time.perf_counter()
        rec.query_vector(q, 10, where=f"price < {1.0 + j * 1e-6}")
        cold_range.append(time.perf_counter() - t)

    path = rec.save(work / f"{backend}-{n}x{dim}")
    saved_bytes = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    new = clustered(args.adds, dim, seed=9)
    t = time.perf_counter()
    for i in range(args.adds):
        rec.add_vectors(new[i : i + 1], [f"new-{i}"], [{"category": "c1", "price": 5.0}])
    add_ms = 1000 * (time.perf_counter() - t) / args.adds
    before = {p: p.stat().st_size for p in path.rglob("*") if p.is_file()}
    t = time.perf_counter()
    rec.save(path, overwrite=True)
    save_s = time.perf_counter() - t
    after = {p: p.stat().st_size for p in path.rglob("*") if p.is_file()}
    written = sum(size for p, size in after.items() if p not in before) + after.get(
        path / "manifest.json", 0
    )
    removes = []
    for i in range(args.removes):
        t = time.perf_counter()
        rec.remove([int(i * 7919 % n)])
        removes.append(time.perf_counter() - t)
    errors, stale, ops = threads(rec, queries, n, args.ops)
    shutil.rmtree(path, ignore_errors=True)
    row = {
        "size": f"{n:,}x{dim}",
        "backend": backend,
        "build s": round(build, 1),
        "query ms": round(ms(q_plain), 3),
        "eq 5% ms": round(ms(q_eq), 3),
        "eq 5% no-part ms": round(ms(q_eq_whole), 3),
        "range 1% ms": round(ms(q_range), 3),
        "eq/query": round(ms(q_eq) / ms(q_plain), 2),
        "no-part/query": round(ms(q_eq_whole) / ms(q_plain), 2),
        "range/query": round(ms(q_range) / ms(q_plain), 2),
        "recall": round(recall[None], 3),
        "eq recall": round(recall["category == 'c3'"], 3),
        "no-part recall": round(recall["whole"], 3),
        "range recall": round(recall["price < 1.0"], 3),
        "cold eq ms": round(ms(cold_eq), 3),
        "cold range ms": round(ms(cold_range), 3),
        "add ms": round(add_ms, 3),
        "remove ms": round(ms(removes), 3),
        "save %": round(100 * written / saved_bytes, 3),
        "save s": round(save_s, 2),
        "ops": ops,
        "exceptions": errors,
        "stale": stale,
    }
    print_table([row], list(row))
    sys.stdout.flush()
    return row


def threads(rec: Recommender, queries: np.ndarray, n: int, total: int) -> tuple[int, int, int]:
    """4 readers + 1 writer until ``total`` operations: (exceptions, stale ids, ops)."""
    removed: set[Any] = set()
    lock = threading.Lock()
    count = [0]
    errors = [0]
    stale = [0]
    stop = threading.Event()
    dim = queries.shape[1]

    def reader(seed: int) -> None:
        r = np.random.default_rng(seed)
        while not stop.is_set():
            with lock:
                gone = set(removed)
            try:
                hits = rec.query_vector(
                    queries[int(r.integers(len(queries)))], 10, where="category != 'c2'"
                )
            except Exception:
                errors[0] += 1
                continue
            stale[0] += sum(h.id in gone for h in hits)
            count[0] += 1
            if count[0] >= total:
                stop.set()

    def writer() -> None:
        r = np.random.default_rng(99)
        i = 0
        while not stop.is_set():
            try:
                v = r.normal(size=(1, dim)).astype(np.float32)
                rec.add_vectors(v, [f"w-{i}"], [{"category": "c2", "price": 1.0}])
                victim = int(r.integers(n))
                if victim in rec:
                    rec.remove([victim])
                    with lock:
                        removed.add(victim)
            except Exception:
                errors[0] += 1
            i += 1
            count[0] += 2

    ts = [threading.Thread(target=reader, args=(s,)) for s in range(4)]
    ts.append(threading.Thread(target=writer))
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return errors[0], stale[0], count[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["1000000x256", "200000x2048"])
    parser.add_argument("--backends", nargs="+", default=["flat", "hnsw"])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--adds", type=int, default=1000)
    parser.add_argument("--removes", type=int, default=200)
    parser.add_argument("--ops", type=int, default=10_000)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "live.json"))
    parser.add_argument("--quick", action="store_true", help="20,000 x 64, for a smoke test")
    parser.add_argument(
        "--partition-by",
        default="category",
        help="partition approximate catalogues by this field ('' for none)",
    )
    parser.add_argument("--build-threads", type=int, default=2)
    args = parser.parse_args()
    args.partition_by = args.partition_by or None
    if args.quick:
        args.sizes, args.queries, args.adds, args.removes, args.ops = (
            ["20000x64"],
            50,
            200,
            50,
            1000,
        )
    rows = []
    work = Path(tempfile.mkdtemp(prefix="bench-live-"))
    try:
        for size in args.sizes:
            n, dim = (int(v) for v in size.lower().split("x"))
            for backend in args.backends:
                rows.append(bench(n, dim, backend, args, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print_table(rows, list(rows[0]))
    write_json(
        args.out,
        {"machine": machine_info(), "peak_rss_mb": peak_rss_mb(), "args": vars(args), "rows": rows},
    )


if __name__ == "__main__":
    main()
