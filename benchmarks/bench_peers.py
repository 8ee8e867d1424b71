"""visualsim side by side with raw FAISS HNSW and the vector stores a shop would pick (issue 26).

One protocol for every system, on clustered unit vectors with shop metadata:

* data: ``n x dim`` unit vectors drawn around 256 Gaussian cluster centres (seed 0),
  metadata ``category`` (20 values, ``c0``..``c19``, so one value is a 5 % filter),
  ``price`` (float) and ``stock`` (bool); 500 queries are data rows plus a little noise;
* HNSW where it applies, ``M=32``, ``ef_construction=80``, ``ef_search=64`` (fixed, not
  tuned: the recall each system gets is reported); ground truth is exact (numpy);
* each system runs in two fresh CHILD processes, so that each peak RAM is its own:
  ``build`` (load the vectors, build, save) and ``serve`` (reopen, one query at a time,
  filtered queries, single adds, then 4 reader threads + 1 writer thread for N s).
  Peak RAM is the child's ``VmHWM``; the issue's "peak RAM" row is the serving
  process's (after reopen and the queries), the build child's is reported beside it.

Rows: query p50 ms (k=10) and recall@10; 5 % filter (``category == one value``, the
value cycles over the 20 with the query) p50 ms and recall@10 against the exact
filtered top 10; add one (amortised ms over ``--adds`` single adds); peak RAM MB;
disk MB (bytes of the saved folder or file); build s; reopen s (and the first query
after it, which is where lazy stores pay); 4 readers + 1 writer: ops / errors.

How each system is driven (the obvious public way, what a user would write):

* visualsim: ``Recommender.from_vectors(..., index=make_index("hnsw", M=32, ...))``,
  ``save``/``load``, ``query_vector(v, 10)`` and ``where="category == 'c3'"``,
  ``add_vectors`` of one row; its own locks for the concurrency run;
* raw FAISS: ``IndexHNSWFlat`` (inner product), the filter an ``IDSelectorBitmap``
  built per query from a category array (as a filter arriving with a request must be)
  in ``SearchParametersHNSW``; ``write_index``/``read_index``; labels are rows, no
  metadata stored; a phase-fair readers-writer lock around it for the concurrency run
  (FAISS is not safe to add to while searching);
* hnswlib: ``space="ip"``, the filter a Python predicate on the label; the same lock;
* usearch: ``metric="ip"``, its default storage type (bf16: half-size vectors); its
  Python API has no predicate, so the filter fetches 40 x k and widens until k pass;
  the same lock;
* Chroma (``PersistentClient``), LanceDB (``IVF_HNSW_SQ`` index plus a ``BITMAP`` scalar
  index on category, prefilter) and Qdrant local mode (``QdrantClient(path=...)``),
  filters in their own syntax, no lock of ours.

A peer whose import fails is reported as "not installed" and skipped, so the script
runs with only visualsim and faiss installed. Query sets stop early after
``--query-budget`` seconds (the JSON says how many were timed), so a store that takes
seconds per query does not hold the run for an hour.

Run it (``--docs`` writes the Markdown page; without it only the JSON is written)::

    python benchmarks/bench_peers.py --docs docs/peers.md
    python benchmarks/bench_peers.py --n 1000000 --dim 256 --systems visualsim,faiss
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"

SYSTEMS = (
    "visualsim",
    "visualsim-part",
    "faiss",
    "hnswlib",
    "usearch",
    "chromadb",
    "lancedb",
    "qdrant",
)
LABELS = {
    "visualsim": "visualsim",
    "visualsim-part": "visualsim, partition_by category",
    "faiss": "raw FAISS HNSW",
    "hnswlib": "hnswlib",
    "usearch": "usearch",
    "chromadb": "Chroma",
    "lancedb": "LanceDB",
    "qdrant": "Qdrant local",
}
MODULES = {
    "visualsim": "visualsim",
    "visualsim-part": "visualsim",
    "faiss": "faiss",
    "hnswlib": "hnswlib",
    "usearch": "usearch",
    "chromadb": "chromadb",
    "lancedb": "lancedb",
    "qdrant": "qdrant_client",
}
CATEGORIES = 20
CLUSTERS = 256
M, EF_CONSTRUCTION, EF_SEARCH = 32, 80, 64
K = 10
SEED = 0
EXTRA = 5000  # distinct vectors for the adds (cycled, with fresh ids)


# -- data ----------------------------------------------------------------------------
def make_data(n: int, dim: int, queries: int, seed: int = SEED) -> dict[str, np.ndarray]:
    """Return the clustered unit vectors, their metadata columns, queries and add vectors.

    Points are a cluster centre plus Gaussian noise of norm about ``spread`` (0.75),
    normalised; queries are random rows plus noise of norm about 0.05, normalised.
    """
    rng = np.random.default_rng(seed)
    centres = _unit(rng.standard_normal((CLUSTERS, dim), dtype=np.float32))
    spread = np.float32(0.75 / np.sqrt(dim))

    def draw(count: int) -> np.ndarray:
        out = np.empty((count, dim), np.float32)
        for start in range(0, count, 65536):
            stop = min(count, start + 65536)
            which = rng.integers(0, CLUSTERS, stop - start)
            noise = rng.standard_normal((stop - start, dim), dtype=np.float32) * spread
            out[start:stop] = _unit(centres[which] + noise)
        return out

    vectors = draw(n)
    rows = rng.choice(n, size=queries, replace=queries > n)
    noise = rng.standard_normal((queries, dim), dtype=np.float32) * np.float32(0.05 / np.sqrt(dim))
    return {
        "vectors": vectors,
        "category": rng.integers(0, CATEGORIES, n).astype(np.uint8),
        "price": rng.uniform(1, 500, n).astype(np.float32),
        "stock": rng.random(n) < 0.8,
        "queries": _unit(vectors[rows] + noise),
        "query_category": (np.arange(queries) % CATEGORIES).astype(np.uint8),
        "extra": draw(EXTRA),
    }


def _unit(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.asarray(x / np.maximum(norms, 1e-12), dtype=np.float32)


def ground_truth(
    vectors: np.ndarray, queries: np.ndarray, category: np.ndarray, query_category: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Return the exact top ``K`` rows of each query, unfiltered and within its category.

    Queries go 32 at a time, so memory stays ``32 x n`` scores at a million rows.
    """
    exact = np.empty((len(queries), K), np.int64)
    filtered = np.empty((len(queries), K), np.int64)
    for lo in range(0, len(queries), 32):
        hi = min(len(queries), lo + 32)
        scores = queries[lo:hi] @ vectors.T
        exact[lo:hi] = _top(scores)
        same = category[None, :] == query_category[lo:hi, None]
        filtered[lo:hi] = _top(np.where(same, scores, -np.inf))
    return exact, filtered


def _top(scores: np.ndarray) -> np.ndarray:
    part = np.argpartition(-scores, K, axis=1)[:, :K]
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1)
    return np.take_along_axis(part, order, axis=1)


def meta_of(row: int, category: int, price: float, stock: bool) -> dict[str, Any]:
    """The metadata of one item, as the stores take it."""
    return {"category": f"c{category}", "price": float(price), "stock": bool(stock)}


# -- a readers-writer lock for the raw libraries ---------------------------------------
class RWLock:
    """visualsim's phase-fair ``ReadWriteLock`` with acquire/release calls, for the raw libraries.

    A reader that arrives while a writer holds or waits for the lock queues; when the
    writer releases, every queued reader is let in before the next writer. So a writer
    adding back to back alternates with batches of readers. The same lock a catalogue
    takes, so both sides of the comparison wait by one rule.
    """

    def __init__(self) -> None:
        from visualsim.indexes.base import ReadWriteLock

        self._lock = ReadWriteLock()
        self._held = threading.local()  # the context each thread entered

    def _enter(self, context: Any) -> None:
        context.__enter__()
        self._held.context = context

    def _exit(self) -> None:
        context, self._held.context = self._held.context, None
        context.__exit__(None, None, None)

    def acquire_read(self) -> None:
        self._enter(self._lock.read())

    def release_read(self) -> None:
        self._exit()

    def acquire_write(self) -> None:
        self._enter(self._lock.write())

    def release_write(self) -> None:
        self._exit()


# -- the systems -----------------------------------------------------------------------
class System:
    """One system under test: build + save, reopen, query, filtered query, add one."""

    locked = False  # wrap reads and writes in an RWLock for the concurrency run

    def __init__(self, path: Path, dim: int) -> None:
        self.path = path
        self.dim = dim

    def build(self, data: dict[str, np.ndarray]) -> float:
        """Build from ``data`` in memory; return seconds (``save`` is timed apart)."""
        raise NotImplementedError

    def save(self) -> None:
        raise NotImplementedError

    def open(self, category: np.ndarray) -> None:
        raise NotImplementedError

    def search(self, q: np.ndarray) -> list[int]:
        raise NotImplementedError

    def search_filtered(self, q: np.ndarray, category: int) -> list[int]:
        raise NotImplementedError

    def add(self, row: int, v: np.ndarray, meta: dict[str, Any]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Release what the system holds (clients, files)."""


class Visualsim(System):
    partition_by: str | None = None  # a field to keep a small index per value of

    def build(self, data: dict[str, np.ndarray]) -> float:
        import visualsim

        vectors = data["vectors"]
        metadata = [
            meta_of(i, int(c), float(p), bool(s))
            for i, (c, p, s) in enumerate(
                zip(data["category"], data["price"], data["stock"], strict=True)
            )
        ]
        ids = list(range(len(vectors)))
        t0 = time.perf_counter()
        index = visualsim.make_index(
            "hnsw", M=M, ef_construction=EF_CONSTRUCTION, ef_search=EF_SEARCH
        )
        self.rec = visualsim.Recommender.from_vectors(
            vectors, ids, metadata, index=index, partition_by=self.partition_by
        )
        return time.perf_counter() - t0

    def save(self) -> None:
        self.rec.save(self.path)

    def open(self, category: np.ndarray) -> None:
        import visualsim

        self.rec = visualsim.Recommender.load(self.path)

    def search(self, q: np.ndarray) -> list[int]:
        return [int(r.id) for r in self.rec.query_vector(q, K)]

    def search_filtered(self, q: np.ndarray, category: int) -> list[int]:
        return [int(r.id) for r in self.rec.query_vector(q, K, where=f"category == 'c{category}'")]

    def add(self, row: int, v: np.ndarray, meta: dict[str, Any]) -> None:
        self.rec.add_vectors(v[None], [row], [meta])


class VisualsimPartitioned(Visualsim):
    """visualsim with one small HNSW index per category beside the main one
    (``partition_by="category"``): a filter that pins the category searches only its own."""

    partition_by = "category"


class Faiss(System):
    locked = True

    def build(self, data: dict[str, np.ndarray]) -> float:
        import faiss

        t0 = time.perf_counter()
        self.index = faiss.IndexHNSWFlat(self.dim, M, faiss.METRIC_INNER_PRODUCT)
        self.index.hnsw.efConstruction = EF_CONSTRUCTION
        self.index.add(data["vectors"])
        self.index.hnsw.efSearch = EF_SEARCH
        return time.perf_counter() - t0

    def save(self) -> None:
        import faiss

        faiss.write_index(self.index, str(self.path))

    def open(self, category: np.ndarray) -> None:
        import faiss

        self.index = faiss.read_index(str(self.path))
        self.index.hnsw.efSearch = EF_SEARCH
        self.category = np.zeros(max(2 * len(category), 1024), np.uint8)
        self.category[: len(category)] = category
        self.params: dict[int, Any] = {}

    def search(self, q: np.ndarray) -> list[int]:
        _, labels = self.index.search(q[None], K)
        return [int(x) for x in labels[0] if x >= 0]

    def search_filtered(self, q: np.ndarray, category: int) -> list[int]:
        import faiss

        n = self.index.ntotal
        bitmap = np.packbits(self.category[:n] == category, bitorder="little")
        selector = faiss.IDSelectorBitmap(n, faiss.swig_ptr(bitmap))
        params = faiss.SearchParametersHNSW(sel=selector, efSearch=EF_SEARCH)
        _, labels = self.index.search(q[None], K, params=params)
        return [int(x) for x in labels[0] if x >= 0]

    def add(self, row: int, v: np.ndarray, meta: dict[str, Any]) -> None:
        n = self.index.ntotal
        if n >= len(self.category):
            self.category = np.concatenate([self.category, np.zeros_like(self.category)])
        self.category[n] = int(meta["category"][1:])
        self.index.add(v[None])


class Hnswlib(System):
    locked = True

    def build(self, data: dict[str, np.ndarray]) -> float:
        import hnswlib

        n = len(data["vectors"])
        t0 = time.perf_counter()
        self.index = hnswlib.Index(space="ip", dim=self.dim)
        self.index.init_index(max_elements=n, ef_construction=EF_CONSTRUCTION, M=M)
        self.index.add_items(data["vectors"], np.arange(n))
        self.index.set_ef(EF_SEARCH)
        return time.perf_counter() - t0

    def save(self) -> None:
        self.index.save_index(str(self.path))

    def open(self, category: np.ndarray) -> None:
        import hnswlib

        self.index = hnswlib.Index(space="ip", dim=self.dim)
        self.index.load_index(str(self.path), max_elements=len(category) + 1024)
        self.index.set_ef(EF_SEARCH)
        self.category = np.zeros(max(2 * len(category), 1024), np.uint8)
        self.category[: len(category)] = category

    def search(self, q: np.ndarray) -> list[int]:
        labels, _ = self.index.knn_query(q, k=K)
        return [int(x) for x in labels[0]]

    def search_filtered(self, q: np.ndarray, category: int) -> list[int]:
        cats = self.category
        labels, _ = self.index.knn_query(q, k=K, filter=lambda label: cats[label] == category)
        return [int(x) for x in labels[0]]

    def add(self, row: int, v: np.ndarray, meta: dict[str, Any]) -> None:
        if self.index.get_current_count() >= self.index.get_max_elements():
            self.index.resize_index(2 * self.index.get_max_elements())
        if row >= len(self.category):
            self.category = np.concatenate([self.category, np.zeros_like(self.category)])
        self.category[row] = int(meta["category"][1:])
        self.index.add_items(v[None], [row])


class Usearch(System):
    locked = True
    overfetch = 40

    def build(self, data: dict[str, np.ndarray]) -> float:
        from usearch.index import Index

        n = len(data["vectors"])
        t0 = time.perf_counter()
        self.index = Index(
            ndim=self.dim,
            metric="ip",
            connectivity=M,
            expansion_add=EF_CONSTRUCTION,
            expansion_search=EF_SEARCH,
        )
        self.index.add(np.arange(n), data["vectors"])
        return time.perf_counter() - t0

    def save(self) -> None:
        self.index.save(str(self.path))

    def open(self, category: np.ndarray) -> None:
        from usearch.index import Index

        self.index = Index.restore(str(self.path))
        self.index.expansion_search = EF_SEARCH
        self.category = np.zeros(max(2 * len(category), 1024), np.uint8)
        self.category[: len(category)] = category

    def search(self, q: np.ndarray) -> list[int]:
        return [int(x) for x in self.index.search(q, K).keys]

    def search_filtered(self, q: np.ndarray, category: int) -> list[int]:
        count = K * self.overfetch
        while True:
            keys = np.asarray(self.index.search(q, count).keys)
            hits = keys[self.category[keys] == category]
            if len(hits) >= K or count >= len(self.index):
                return [int(x) for x in hits[:K]]
            count *= 4

    def add(self, row: int, v: np.ndarray, meta: dict[str, Any]) -> None:
        if row >= len(self.category):
            self.category = np.concatenate([self.category, np.zeros_like(self.category)])
        self.category[row] = int(meta["category"][1:])
        self.index.add(row, v)


class Chroma(System):
    def _client(self) -> Any:
        import chromadb

        return chromadb.PersistentClient(
            path=str(self.path), settings=chromadb.Settings(anonymized_telemetry=False)
        )

    def build(self, data: dict[str, np.ndarray]) -> float:
        t0 = time.perf_counter()
        self.client = self._client()
        self.col = self.client.create_collection(
            "bench",
            metadata={
                "hnsw:space": "ip",
                "hnsw:M": M,
                "hnsw:construction_ef": EF_CONSTRUCTION,
                "hnsw:search_ef": EF_SEARCH,
            },
        )
        batch = int(self.client.get_max_batch_size())
        vectors = data["vectors"]
        for start in range(0, len(vectors), batch):
            stop = min(len(vectors), start + batch)
            self.col.add(
                ids=[str(i) for i in range(start, stop)],
                embeddings=vectors[start:stop],
                metadatas=[
                    meta_of(i, int(data["category"][i]), data["price"][i], data["stock"][i])
                    for i in range(start, stop)
                ],
            )
        return time.perf_counter() - t0

    def save(self) -> None:
        """Chroma persists as it adds; nothing more to write."""

    def open(self, category: np.ndarray) -> None:
        self.client = self._client()
        self.col = self.client.get_collection("bench")

    def search(self, q: np.ndarray) -> list[int]:
        out = self.col.query(query_embeddings=[q], n_results=K, include=[])
        return [int(x) for x in out["ids"][0]]

    def search_filtered(self, q: np.ndarray, category: int) -> list[int]:
        out = self.col.query(
            query_embeddings=[q], n_results=K, where={"category": f"c{category}"}, include=[]
        )
        return [int(x) for x in out["ids"][0]]

    def add(self, row: int, v: np.ndarray, meta: dict[str, Any]) -> None:
        self.col.add(ids=[str(row)], embeddings=v[None], metadatas=[meta])


class Lance(System):
    def _table(self, vectors: np.ndarray, rows: np.ndarray, metas: list[dict[str, Any]]) -> Any:
        import pyarrow as pa

        flat = pa.array(np.ascontiguousarray(vectors, np.float32).reshape(-1))
        return pa.table(
            {
                "id": pa.array(rows, pa.int64()),
                "vector": pa.FixedSizeListArray.from_arrays(flat, self.dim),
                "category": pa.array([m["category"] for m in metas], pa.string()),
                "price": pa.array([m["price"] for m in metas], pa.float32()),
                "stock": pa.array([m["stock"] for m in metas], pa.bool_()),
            }
        )

    def build(self, data: dict[str, np.ndarray]) -> float:
        import lancedb

        n = len(data["vectors"])
        metas = [
            meta_of(i, int(data["category"][i]), data["price"][i], data["stock"][i])
            for i in range(n)
        ]
        t0 = time.perf_counter()
        self.db = lancedb.connect(str(self.path))
        self.table = self.db.create_table(
            "bench", data=self._table(data["vectors"], np.arange(n), metas)
        )
        self.table.create_index(
            metric="dot",
            vector_column_name="vector",
            index_type="IVF_HNSW_SQ",
            m=M,
            ef_construction=EF_CONSTRUCTION,
        )
        self.table.create_scalar_index("category", index_type="BITMAP")
        return time.perf_counter() - t0

    def save(self) -> None:
        """LanceDB writes as it builds; nothing more to write."""

    def open(self, category: np.ndarray) -> None:
        import lancedb

        self.db = lancedb.connect(str(self.path))
        self.table = self.db.open_table("bench")

    def _ids(self, query: Any) -> list[int]:
        return [int(x) for x in query.select(["id"]).to_arrow()["id"].to_pylist()]

    def search(self, q: np.ndarray) -> list[int]:
        return self._ids(self.table.search(q).metric("dot").ef(EF_SEARCH).limit(K))

    def search_filtered(self, q: np.ndarray, category: int) -> list[int]:
        query = self.table.search(q).metric("dot").ef(EF_SEARCH).limit(K)
        return self._ids(query.where(f"category = 'c{category}'", prefilter=True))

    def add(self, row: int, v: np.ndarray, meta: dict[str, Any]) -> None:
        self.table.add(self._table(v[None], np.array([row]), [meta]))


class Qdrant(System):
    name = "bench"

    def _client(self) -> Any:
        from qdrant_client import QdrantClient

        return QdrantClient(path=str(self.path))

    def build(self, data: dict[str, np.ndarray]) -> float:
        from qdrant_client import models

        vectors = data["vectors"]
        t0 = time.perf_counter()
        self.client = self._client()
        self.client.create_collection(
            self.name,
            vectors_config=models.VectorParams(size=self.dim, distance=models.Distance.DOT),
            hnsw_config=models.HnswConfigDiff(m=M, ef_construct=EF_CONSTRUCTION),
        )
        for start in range(0, len(vectors), 2000):
            stop = min(len(vectors), start + 2000)
            self.client.upsert(
                self.name,
                points=models.Batch(
                    ids=list(range(start, stop)),
                    vectors=vectors[start:stop].tolist(),
                    payloads=[
                        meta_of(i, int(data["category"][i]), data["price"][i], data["stock"][i])
                        for i in range(start, stop)
                    ],
                ),
                wait=True,
            )
        return time.perf_counter() - t0

    def save(self) -> None:
        """Qdrant local mode persists as it upserts; closing flushes it."""
        self.client.close()

    def open(self, category: np.ndarray) -> None:
        self.client = self._client()

    def _query(self, q: np.ndarray, where: Any = None) -> list[int]:
        from qdrant_client import models

        out = self.client.query_points(
            self.name,
            query=q.tolist(),
            limit=K,
            query_filter=where,
            search_params=models.SearchParams(hnsw_ef=EF_SEARCH),
        )
        return [int(p.id) for p in out.points]

    def search(self, q: np.ndarray) -> list[int]:
        return self._query(q)

    def search_filtered(self, q: np.ndarray, category: int) -> list[int]:
        from qdrant_client import models

        return self._query(
            q,
            models.Filter(
                must=[
                    models.FieldCondition(
                        key="category", match=models.MatchValue(value=f"c{category}")
                    )
                ]
            ),
        )

    def add(self, row: int, v: np.ndarray, meta: dict[str, Any]) -> None:
        from qdrant_client import models

        self.client.upsert(
            self.name, points=[models.PointStruct(id=row, vector=v.tolist(), payload=meta)]
        )

    def close(self) -> None:
        self.client.close()


CLASSES: dict[str, type[System]] = {
    "visualsim": Visualsim,
    "visualsim-part": VisualsimPartitioned,
    "faiss": Faiss,
    "hnswlib": Hnswlib,
    "usearch": Usearch,
    "chromadb": Chroma,
    "lancedb": Lance,
    "qdrant": Qdrant,
}
FILE_STORES = {"faiss", "hnswlib", "usearch"}  # saved as one file, not a folder


# -- measuring (in the child) ----------------------------------------------------------
def peak_mb() -> float:
    """This process's peak RSS (``VmHWM``; ``ru_maxrss`` where there is no /proc)."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def disk_bytes(path: Path) -> int:
    """Bytes of the file, or of every file under the folder, at ``path``."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def timed_queries(
    fn: Callable[[int], list[int]], count: int, budget_s: float
) -> tuple[list[float], list[list[int]]]:
    """Run ``fn(i)`` for i < count, one at a time, until the budget is spent (at least 5)."""
    times: list[float] = []
    found: list[list[int]] = []
    start = time.perf_counter()
    for i in range(count):
        t0 = time.perf_counter()
        out = fn(i)
        times.append(1000 * (time.perf_counter() - t0))
        found.append(out)
        if i >= 4 and time.perf_counter() - start > budget_s:
            break
    return times, found


def recall(found: Sequence[Sequence[int]], truth: np.ndarray) -> float:
    """Mean recall@K of ``found`` against the exact rows of ``truth``."""
    if not found:
        return float("nan")
    hits = [len(set(f[:K]) & set(int(t) for t in truth[i])) / K for i, f in enumerate(found)]
    return float(np.mean(hits))


def concurrency(
    system: System,
    queries: np.ndarray,
    extra: np.ndarray,
    first_row: int,
    seconds: float,
    readers: int = 4,
) -> dict[str, Any]:
    """``readers`` threads query and one thread adds single items for ``seconds``."""
    lock = RWLock() if system.locked else None
    stop = threading.Event()
    counts = {"reads": 0, "writes": 0, "errors": 0}
    errors: list[str] = []
    guard = threading.Lock()

    def record(key: str, error: BaseException | None = None) -> None:
        with guard:
            counts[key] += 1
            if error is not None and len(errors) < 5:
                errors.append(f"{type(error).__name__}: {error}"[:300])

    def reader(t: int) -> None:
        i = t
        while not stop.is_set():
            q = queries[i % len(queries)]
            i += readers
            try:
                if lock:
                    lock.acquire_read()
                try:
                    system.search(q)
                finally:
                    if lock:
                        lock.release_read()
                record("reads")
            except Exception as exc:  # errors are what is counted
                record("errors", exc)

    def writer() -> None:
        j = 0
        while not stop.is_set():
            row = first_row + j
            meta = meta_of(row, row % CATEGORIES, 9.5, True)
            try:
                if lock:
                    lock.acquire_write()
                try:
                    system.add(row, extra[j % len(extra)], meta)
                finally:
                    if lock:
                        lock.release_write()
                record("writes")
            except Exception as exc:  # counted too
                record("errors", exc)
            j += 1

    threads = [threading.Thread(target=reader, args=(t,)) for t in range(readers)]
    threads.append(threading.Thread(target=writer))
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return {
        **counts,
        "ops": counts["reads"] + counts["writes"],
        "seconds": wall,
        "error_samples": errors,
    }


def child_build(system_name: str, work: Path, store: Path) -> dict[str, Any]:
    """Build and save one system; its own process, so its peak RAM is its own."""
    data = {key: np.load(work / f"{key}.npy") for key in ("vectors", "category", "price", "stock")}
    baseline = peak_mb()
    dim = int(data["vectors"].shape[1])
    system = CLASSES[system_name](store, dim)
    build_s = system.build(data)
    t0 = time.perf_counter()
    system.save()
    save_s = time.perf_counter() - t0
    system.close()
    return {
        "build_s": build_s,
        "save_s": save_s,
        "disk_bytes": disk_bytes(store),
        "build_peak_mb": peak_mb(),
        "build_baseline_mb": baseline,
        "build_loadavg_1m": os.getloadavg()[0],
    }


def child_serve(
    system_name: str,
    work: Path,
    store: Path,
    *,
    adds: int,
    seconds: float,
    budget_s: float,
) -> dict[str, Any]:
    """Reopen one system, time its queries, filtered queries, adds and a concurrency run."""
    category = np.load(work / "category.npy")
    queries = np.load(work / "queries.npy")
    query_category = np.load(work / "query_category.npy")
    exact = np.load(work / "exact.npy")
    exact_filtered = np.load(work / "exact_filtered.npy")
    extra = np.load(work / "extra.npy")
    n = len(category)
    baseline = peak_mb()
    system = CLASSES[system_name](store, int(queries.shape[1]))
    t0 = time.perf_counter()
    system.open(category)
    reopen_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    system.search(queries[0])
    first_ms = 1000 * (time.perf_counter() - t0)
    open_peak = peak_mb()

    times, found = timed_queries(lambda i: system.search(queries[i]), len(queries), budget_s)
    ftimes, ffound = timed_queries(
        lambda i: system.search_filtered(queries[i], int(query_category[i])),
        len(queries),
        budget_s,
    )
    serve_peak = peak_mb()

    add_times: list[float] = []
    start = time.perf_counter()
    for j in range(adds):
        row = n + j
        v = extra[j % len(extra)]
        meta = meta_of(row, row % CATEGORIES, 9.5, True)
        t1 = time.perf_counter()
        system.add(row, v, meta)
        add_times.append(time.perf_counter() - t1)
        if j >= 9 and time.perf_counter() - start > budget_s:
            break
    conc = concurrency(system, queries, extra, n + adds, seconds) if seconds > 0 else None
    system.close()
    return {
        "reopen_s": reopen_s,
        "first_query_ms": first_ms,
        "query_p50_ms": float(np.median(times)),
        "query_p99_ms": float(np.percentile(times, 99)),
        "queries_timed": len(times),
        "recall_at_10": recall(found, exact),
        "filter_p50_ms": float(np.median(ftimes)),
        "filter_p99_ms": float(np.percentile(ftimes, 99)),
        "filter_queries_timed": len(ftimes),
        "filter_recall_at_10": recall(ffound, exact_filtered),
        "add_one_ms": 1000 * float(np.mean(add_times)),
        "adds_timed": len(add_times),
        "serve_baseline_mb": baseline,
        "open_peak_mb": open_peak,
        "serve_peak_mb": serve_peak,
        "end_peak_mb": peak_mb(),
        "concurrency": conc,
        "serve_loadavg_1m": os.getloadavg()[0],
    }


# -- orchestration (in the parent) -----------------------------------------------------
def installed(system: str) -> bool:
    """Whether ``system``'s module imports in this interpreter (checked in a child)."""
    if importlib.util.find_spec(MODULES[system].split(".")[0]) is None:
        return False
    probe = subprocess.run(
        [sys.executable, "-c", f"import {MODULES[system]}"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    return probe.returncode == 0


def run_child(args: list[str], timeout: float, threads: int | None = None) -> dict[str, Any]:
    """Run this script as a child with ``args``; return its RESULT line, or an error.

    ``threads``: the child's ``OMP_NUM_THREADS`` (and BLAS's); ``None`` leaves the
    libraries' defaults (every core).
    """
    cmd = [sys.executable, str(Path(__file__).resolve()), *args]
    env = dict(os.environ)
    if threads is not None:
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env[var] = str(threads)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("RESULT "):
            result: dict[str, Any] = json.loads(line[len("RESULT ") :])
            return result
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-8:]
    return {"error": f"exit {proc.returncode}: " + " | ".join(tail)[-1500:]}


def cpu_model() -> str:
    """The CPU model as ``lscpu`` names it (``/proc/cpuinfo``'s, or the platform's)."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "Model name":
            return value.strip()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                return value.strip()
    import platform

    return platform.processor() or platform.machine()


def versions(systems: Sequence[str]) -> dict[str, str]:
    """Installed versions of the systems' distributions (what the figures depend on)."""
    from importlib import metadata

    names = {
        "visualsim": "visualsim",
        "visualsim-part": "visualsim",
        "faiss": "faiss-cpu",
        "hnswlib": "hnswlib",
        "usearch": "usearch",
        "chromadb": "chromadb",
        "lancedb": "lancedb",
        "qdrant": "qdrant-client",
    }
    out = {"numpy": np.__version__}
    for system in systems:
        try:
            out[system] = metadata.version(names[system])
        except metadata.PackageNotFoundError:
            out[system] = "source tree" if system.startswith("visualsim") else "unknown"
    return out


def visualsim_commit() -> str | None:
    """The git commit of the visualsim source this interpreter imports, if it is a checkout."""
    spec = importlib.util.find_spec("visualsim")
    if spec is None or spec.origin is None:
        return None
    try:
        out = subprocess.run(
            ["git", "-C", str(Path(spec.origin).parent), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def visualsim_edits() -> list[str]:
    """Files of visualsim's source with uncommitted edits (what ran beyond the commit)."""
    spec = importlib.util.find_spec("visualsim")
    if spec is None or spec.origin is None:
        return []
    folder = str(Path(spec.origin).parent)
    try:
        out = subprocess.run(
            ["git", "-C", folder, "status", "--porcelain", "--", "."],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return []
    return [line[3:] for line in out.stdout.splitlines() if line.strip()]


def fmt(value: Any, digits: int = 3) -> str:
    """A figure as the table shows it: 3 significant digits, thousands separated."""
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    if isinstance(value, int):
        return f"{value:,}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


ROWS: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
    ("query p50, ms (recall@10)", lambda r: f"{fmt(r['query_p50_ms'])} ({r['recall_at_10']:.3f})"),
    (
        "5 % filter p50, ms (recall@10)",
        lambda r: f"{fmt(r['filter_p50_ms'])} ({r['filter_recall_at_10']:.3f})",
    ),
    ("add one, ms (amortised)", lambda r: fmt(r["add_one_ms"])),
    ("peak RAM serving, MB", lambda r: fmt(r["serve_peak_mb"])),
    ("peak RAM build + save, MB", lambda r: fmt(r["build_peak_mb"])),
    ("disk, MB", lambda r: fmt(r["disk_bytes"] / 2**20)),
    ("build, s (+ save)", lambda r: f"{fmt(r['build_s'])} (+{fmt(r['save_s'])})"),
    ("reopen, s", lambda r: fmt(r["reopen_s"])),
    ("first query after reopen, ms", lambda r: fmt(r["first_query_ms"])),
    (
        "4 readers + 1 writer: ops / errors",
        lambda r: (
            "-"
            if not r.get("concurrency")
            else f"{r['concurrency']['ops']:,} / {r['concurrency']['errors']:,}"
        ),
    ),
    (
        "of which reads + writes",
        lambda r: (
            "-"
            if not r.get("concurrency")
            else f"{r['concurrency']['reads']:,} + {r['concurrency']['writes']:,}"
        ),
    ),
]


def table(results: dict[str, dict[str, Any]], seconds: float) -> str:
    """The side-by-side Markdown table of ``results`` (a column per system)."""
    names = list(results)
    lines = [
        "| | " + " | ".join(LABELS[s] for s in names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    for label, cell in ROWS:
        label = label.replace("4 readers + 1 writer", f"4 readers + 1 writer, {seconds:g} s")
        cells = []
        for s in names:
            r = results[s]
            if r.get("status") != "ok":
                cells.append(str(r.get("status", "-")))
                continue
            try:
                cells.append(cell(r))
            except (KeyError, TypeError):
                cells.append("-")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _notes(doc: dict[str, Any]) -> str:
    """The lines under a table: what was cut short, what failed, the first errors."""
    cfg = doc["config"]
    notes = []
    for s, r in doc["systems"].items():
        if r.get("status") == "ok":
            partial = []
            if r["queries_timed"] < cfg["queries"]:
                partial.append(f"{r['queries_timed']} queries timed")
            if r["filter_queries_timed"] < cfg["queries"]:
                partial.append(f"{r['filter_queries_timed']} filtered queries timed")
            if r["adds_timed"] < cfg["adds"]:
                partial.append(f"{r['adds_timed']} adds timed")
            conc = r.get("concurrency") or {}
            if conc.get("error_samples"):
                partial.append(f"first concurrency error: `{conc['error_samples'][0][:160]}`")
            if partial:
                notes.append(f"- {LABELS[s]}: " + "; ".join(partial) + ".")
        elif r.get("error"):
            notes.append(f"- {LABELS[s]}: failed: `{r['error'][:300]}`")
    return "\n".join(notes)


def _title(doc: dict[str, Any]) -> str:
    """A section's heading: the size, and what sets the run apart (threads, commit)."""
    cfg = doc["config"]
    title = f"{cfg['n']:,} x {cfg['dim']}"
    if cfg.get("omp_threads"):
        title += f", OMP_NUM_THREADS={cfg['omp_threads']}"
    if doc.get("visualsim_commit"):
        title += f", visualsim {doc['visualsim_commit'][:7]}"
    return title


def _provenance(doc: dict[str, Any]) -> str:
    """Where and on what code a run's figures were measured."""
    cfg, machine = doc["config"], doc["machine"]
    start = machine.get("loadavg_1m_start")
    load_start = "unrecorded" if start is None else f"{start:.1f}"
    edits = doc.get("visualsim_uncommitted") or []
    dirty = f" plus uncommitted edits to {len(edits)} files" if edits else ""
    versions_text = ", ".join(f"{k} {v}" for k, v in doc["versions"].items())
    return f"""Machine: {machine["cpu_lscpu"]}, {machine["cores"]} cores (lscpu); load average
{load_start} at the start, {machine["loadavg_1m"]:.1f} at the end (other
work shared the machine: one run's timings, not a quiet box's); Python {machine["python"]};
OpenMP threads: {cfg.get("omp_threads") or "the libraries' default (every core)"}.
visualsim commit `{doc["visualsim_commit"]}`{dirty}. Versions: {versions_text}."""


def markdown(doc: dict[str, Any], *more: dict[str, Any], render: str | None = None) -> str:
    """The page ``--docs`` writes: what was measured, how, on what, and the table.

    ``more``: other runs (another size, say), each a section of its own after the first;
    ``render``: the ``--render`` command that put them together, shown with the runs'.
    """
    cfg = doc["config"]
    commands = "\n".join(f"$ {d['command']}" for d in (doc, *more))
    if render:
        commands += f"\n$ {render}"
    sections = "".join(
        f"""
## {_title(d)}

{_provenance(d)}

{d["table"]}

{_notes(d)}
"""
        for d in more
    )
    return f"""# visualsim side by side with its peers

Generated by `benchmarks/bench_peers.py` (issue 26); do not edit by hand, re-run:

```console
{commands}
```

{cfg["n"]:,} x {cfg["dim"]} clustered unit vectors ({CLUSTERS} Gaussian clusters, seed {SEED}),
metadata `category` (20 values), `price`, `stock`; {cfg["queries"]} queries (data rows plus a little
noise), k = 10, one at a time. HNSW where it applies: M = {M}, ef_construction =
{EF_CONSTRUCTION}, ef_search = {EF_SEARCH} (fixed, not tuned: the recall each gets is shown),
against exact (numpy) top 10s. The filter is `category == one value` (5 %), the value
changing with the query; its recall is against the exact top 10 within that category.

{_provenance(doc)}

{doc["table"]}

How to read it:

- Each system runs in two fresh processes: build + save, then reopen + serve. "peak RAM
  serving" is the serving process's peak RSS (`VmHWM`) after reopen and the query runs (the
  issue's "peak RAM"); it includes Python, the imports and the 500 queries, about
  {fmt(doc["baseline_mb"])} MB before any system opens. "peak RAM build + save" includes the
  input vectors ({fmt(cfg["n"] * cfg["dim"] * 4 / 2**20)} MB as float32).
- Raw FAISS, hnswlib and usearch store no metadata: their filter reads a category array
  kept beside the index (FAISS: an `IDSelectorBitmap` built per query; hnswlib: a Python
  predicate; usearch: over-fetch 40 x k and widen), their disk is the index file alone
  (the metadata columns are {fmt(doc["metadata_bytes"] / 2**20)} MB as numpy), and the
  concurrency run puts a phase-fair readers-writer lock around them (they are not safe to
  add to while searching). visualsim, Chroma, LanceDB and Qdrant use their own locking.
- usearch keeps its default storage type, bf16: its disk and RAM hold half-size vectors.
- "add one" is the mean of single adds (new ids, with metadata) after the queries;
  "first query after reopen" is where lazily-loading stores pay for their reopen.
- A query set stops after {cfg["query_budget_s"]:g} s; where fewer than all were timed, it
  says so below.

{_notes(doc)}
{sections}"""


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated")
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--adds", type=int, default=1000, help="single adds to time")
    parser.add_argument("--concurrency-seconds", type=float, default=20.0)
    parser.add_argument(
        "--query-budget", type=float, default=60.0, help="seconds at most per query set"
    )
    parser.add_argument("--child-timeout", type=float, default=3600.0)
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="OMP_NUM_THREADS for the systems' processes (default: the libraries' own)",
    )
    parser.add_argument("--out", default=None, help="JSON (benchmarks/results/peers-NxDIM.json)")
    parser.add_argument("--docs", default=None, help="also write the Markdown page here")
    parser.add_argument("--work", default=None, help="scratch folder (a temporary one)")
    parser.add_argument(
        "--render",
        default=None,
        help="write --docs from earlier runs' JSON (comma-separated: a section each); run nothing",
    )
    parser.add_argument("--child", choices=("build", "serve"), help=argparse.SUPPRESS)
    parser.add_argument("--system", help=argparse.SUPPRESS)
    parser.add_argument("--store", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    if args.child:
        work, store = Path(args.work), Path(args.store)
        if args.child == "build":
            result = child_build(args.system, work, store)
        else:
            result = child_serve(
                args.system,
                work,
                store,
                adds=args.adds,
                seconds=args.concurrency_seconds,
                budget_s=args.query_budget,
            )
        print("RESULT " + json.dumps(result), flush=True)
        return 0

    if args.render:
        if not args.docs:
            raise SystemExit("--render needs --docs (where to write the page)")
        runs = [json.loads(Path(p).read_text()) for p in args.render.split(",") if p]
        again = "python benchmarks/bench_peers.py " + shlex.join(
            list(argv) if argv is not None else sys.argv[1:]
        )
        Path(args.docs).write_text(
            markdown(*runs, render=again if len(runs) > 1 else None).rstrip() + "\n"
        )
        print(f"wrote {args.docs}", flush=True)
        return 0
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = sorted(set(systems) - set(SYSTEMS))
    if unknown:
        raise SystemExit(f"--systems: unknown {unknown}; known: {', '.join(SYSTEMS)}")
    out = Path(args.out) if args.out else RESULTS / f"peers-{args.n}x{args.dim}.json"
    command = "python benchmarks/bench_peers.py " + shlex.join(
        list(argv) if argv is not None else sys.argv[1:]
    )
    commit, edits = visualsim_commit(), visualsim_edits()
    load_start = os.getloadavg()[0]
    print(f"CPU (lscpu): {cpu_model()}, {os.cpu_count()} cores; visualsim {commit}", flush=True)

    scratch = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bench-peers-"))
    scratch.mkdir(parents=True, exist_ok=True)
    try:
        t0 = time.perf_counter()
        data = make_data(args.n, args.dim, args.queries)
        exact, exact_filtered = ground_truth(
            data["vectors"], data["queries"], data["category"], data["query_category"]
        )
        for key, value in {**data, "exact": exact, "exact_filtered": exact_filtered}.items():
            np.save(scratch / f"{key}.npy", value)
        metadata_bytes = sum(data[k].nbytes for k in ("category", "price", "stock"))
        del data
        print(f"data and ground truth: {time.perf_counter() - t0:.1f} s", flush=True)

        results: dict[str, dict[str, Any]] = {}
        for system in systems:
            if not installed(system):
                results[system] = {"status": "not installed"}
                print(f"{system}: not installed, skipped", flush=True)
                continue
            store = scratch / (f"{system}.index" if system in FILE_STORES else system)
            common = ["--work", str(scratch), "--system", system, "--store", str(store)]
            built = run_child(["--child", "build", *common], args.child_timeout, args.threads)
            print(f"{system} build: {built}", flush=True)
            if "error" in built:
                results[system] = {"status": "failed", **built}
                continue
            served = run_child(
                [
                    "--child",
                    "serve",
                    *common,
                    "--adds",
                    str(args.adds),
                    "--concurrency-seconds",
                    str(args.concurrency_seconds),
                    "--query-budget",
                    str(args.query_budget),
                ],
                args.child_timeout,
                args.threads,
            )
            print(f"{system} serve: {served}", flush=True)
            status = "failed" if "error" in served else "ok"
            results[system] = {"status": status, **built, **served}
            shutil.rmtree(store, ignore_errors=True) if store.is_dir() else store.unlink(
                missing_ok=True
            )
    finally:
        if not args.work:
            shutil.rmtree(scratch, ignore_errors=True)

    baselines = [r["serve_baseline_mb"] for r in results.values() if r.get("status") == "ok"]
    text = table(results, args.concurrency_seconds)
    print(text, flush=True)
    doc: dict[str, Any] = {
        "benchmark": "peers",
        "issue": 26,
        "command": command,
        "visualsim_commit": commit,
        "visualsim_uncommitted": edits,
        "machine": {
            "cpu_lscpu": cpu_model(),
            "cores": os.cpu_count(),
            "python": sys.version.split()[0],
            "loadavg_1m_start": load_start,
            "loadavg_1m": os.getloadavg()[0],
        },
        "versions": versions([s for s in systems if results[s]["status"] != "not installed"]),
        "config": {
            "n": args.n,
            "dim": args.dim,
            "queries": args.queries,
            "adds": args.adds,
            "clusters": CLUSTERS,
            "categories": CATEGORIES,
            "seed": SEED,
            "M": M,
            "ef_construction": EF_CONSTRUCTION,
            "ef_search": EF_SEARCH,
            "k": K,
            "concurrency_seconds": args.concurrency_seconds,
            "readers": 4,
            "writers": 1,
            "query_budget_s": args.query_budget,
            "omp_threads": args.threads,
        },
        "metadata_bytes": int(metadata_bytes),
        "baseline_mb": float(np.median(baselines)) if baselines else float("nan"),
        "systems": results,
        "table": text,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {out}", flush=True)
    if args.docs:
        Path(args.docs).write_text(markdown(doc).rstrip() + "\n")
        print(f"wrote {args.docs}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
