"""HTTP serving cost: `/items/{id}/similar` and `/query` on loopback vs the same work in-process.

A catalogue of ``--n`` items (default 100,000; colour-histogram vectors added with
``add_vectors``, so no images need decoding to build it) is saved once to
``benchmarks/results/.cache/`` and served by ``python -m visualsim.serve`` in a
subprocess on 127.0.0.1. Clients are threads with one keep-alive ``httpx.Client``
each, at 1, 4 and 16 at once; ``/query`` uploads real JPEG product photos
(400x400) that the server decodes and embeds with the catalogue's extractor.
The in-process rows run the same work (``similar_to``; decode + extract +
``query_vector``) from the same number of threads, in the benchmark's process.

Usage::

    python benchmarks/bench_serve.py [--n 100000] [--index hnsw] [--requests 200]

Prints a table and writes ``benchmarks/results/serve.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_info, make_jpegs, print_table, write_json

RESULTS = Path(__file__).resolve().parent / "results"
CATEGORIES = ("t-shirt", "trousers", "shoes", "bag", "hat")


def build_catalogue(n: int, index: str, cache: Path) -> Path:
    """Save (once) an ``n``-item catalogue of random colour-histogram-like vectors."""
    from visualsim import ColorHistogramExtractor, Recommender

    folder = cache / f"serve-{n}-{index}"
    if (folder / "manifest.json").is_file():
        return folder
    ext = ColorHistogramExtractor()
    rng = np.random.default_rng(0)
    vectors = np.sqrt(rng.gamma(0.3, size=(n, ext.dim))).astype(np.float32)
    ids = [f"item-{i:06d}" for i in range(n)]
    meta = [{"category": CATEGORIES[i % 5], "price": int(i % 200)} for i in range(n)]
    t0 = time.perf_counter()
    rec = Recommender(ext, index).add_vectors(vectors, ids, meta)
    rec.save(folder, overwrite=True)
    print(f"built and saved {n} items ({index}) in {time.perf_counter() - t0:.0f} s", flush=True)
    return folder


def percentiles(lat: list[float]) -> dict[str, float]:
    a = np.asarray(lat) * 1000
    return {
        "p50_ms": float(np.percentile(a, 50)),
        "p95_ms": float(np.percentile(a, 95)),
        "p99_ms": float(np.percentile(a, 99)),
    }


def drive(clients: int, requests: int, call: Callable[[int, int], bool]) -> dict[str, Any]:
    """Run ``requests`` calls from ``clients`` threads; latency per call and overall rate."""
    lat: list[float] = []
    errors = 0
    lock = threading.Lock()
    counter = iter(range(requests))

    def worker(w: int) -> None:
        nonlocal errors
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            t0 = time.perf_counter()
            try:
                ok = call(i, w)
            except Exception:
                ok = False
            dt = time.perf_counter() - t0
            with lock:
                lat.append(dt)
                errors += not ok

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for f in [pool.submit(worker, w) for w in range(clients)]:
            f.result()
    wall = time.perf_counter() - t0
    return {**percentiles(lat), "req_per_s": requests / wall, "errors": errors, "n": requests}


class Server:
    def __init__(self, folder: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "visualsim.serve", str(folder), "--port", "0"],
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        lines: queue.Queue[str] = queue.Queue()
        self.access: list[float] = []  # the server's own time per request (its access log)

        def pump() -> None:
            assert self.proc.stderr is not None
            for line in self.proc.stderr:
                try:
                    doc = json.loads(line)
                except ValueError:
                    doc = {"message": line}
                if "ms" in doc and "method" in doc:
                    self.access.append(float(doc["ms"]))
                    continue
                message = str(doc.get("message", ""))
                if '"listening"' in message:
                    lines.put(message)
                elif "error" in message.lower():
                    print("server:", line.strip(), file=sys.stderr, flush=True)

        threading.Thread(target=pump, daemon=True).start()
        message = lines.get(timeout=600)
        self.port = int(json.loads(message)["port"])
        self.url = f"http://127.0.0.1:{self.port}"
        import httpx

        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/health", timeout=60).json().get("warm"):
                    return
            except (httpx.TransportError, ValueError):
                pass
            time.sleep(0.5)
        raise RuntimeError("the server never became ready")

    def stop(self) -> int:
        self.proc.terminate()
        return self.proc.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--index", default="hnsw")
    parser.add_argument("--requests", type=int, default=200, help="per (endpoint, clients)")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--cache", type=Path, default=RESULTS / ".cache")
    parser.add_argument("--out", type=Path, default=RESULTS / "serve.json")
    args = parser.parse_args()

    import httpx

    from visualsim import Recommender
    from visualsim.images import load_image
    from visualsim.serve.app import MAX_PIXELS

    folder = build_catalogue(args.n, args.index, args.cache)
    photos = [p.read_bytes() for p in make_jpegs(args.cache / "photos", 32, size=(400, 400))]
    rng = np.random.default_rng(1)
    picks = [f"item-{int(i):06d}" for i in rng.integers(0, args.n, size=args.requests)]

    rec = Recommender.load(folder)
    ext = rec.extractor_

    def similar_local(i: int, w: int = 0) -> bool:
        return len(rec.similar_to(picks[i % len(picks)], 10)) == 10

    def query_local(i: int, w: int = 0) -> bool:
        vec = ext.extract([load_image(photos[i % 32], max_pixels=MAX_PIXELS)])[0]
        return len(rec.query_vector(vec, 10)) == 10

    for i in range(5):  # warm both paths
        similar_local(i)
        query_local(i)

    rows: list[dict[str, Any]] = []
    server = Server(folder)
    # one keep-alive client per concurrent caller, made and connected before any timing
    pool = [httpx.Client(base_url=server.url, timeout=60) for _ in range(max(args.clients))]
    for c in pool:
        c.get("/health")

    def similar_http(i: int, w: int = 0) -> bool:
        r = pool[w].get(f"/items/{picks[i % len(picks)]}/similar", params={"k": 10})
        return r.status_code == 200 and len(r.json()["results"]) == 10

    def query_http(i: int, w: int = 0) -> bool:
        r = pool[w].post(
            "/query",
            params={"k": 10},
            content=photos[i % 32],
            headers={"content-type": "image/jpeg"},
        )
        return r.status_code == 200 and len(r.json()["results"]) == 10

    try:
        for i in range(10):
            similar_http(i, i % len(pool))
            query_http(i, i % len(pool))
        for op, local, http in (
            ("similar", similar_local, similar_http),
            ("query", query_local, query_http),
        ):
            for clients in args.clients:
                base = drive(clients, args.requests, local)
                before = len(server.access)
                served = drive(clients, args.requests, http)
                time.sleep(0.5)  # let the last access-log lines arrive
                inside = server.access[before:]
                served["server_p50_ms"] = float(np.median(inside)) if inside else float("nan")
                for where, res in (("in-process", base), ("http", served)):
                    rows.append({"endpoint": op, "clients": clients, "where": where, **res})
                rows[-1]["p50_vs_in_process"] = served["p50_ms"] / base["p50_ms"]
                rows[-1]["rate_vs_in_process"] = served["req_per_s"] / base["req_per_s"]
                print(f"  {op} x{clients}: done", flush=True)
    finally:
        for c in pool:
            c.close()
        rc = server.stop()

    columns = [
        "endpoint",
        "clients",
        "where",
        "p50_ms",
        "p95_ms",
        "p99_ms",
        "req_per_s",
        "errors",
        "server_p50_ms",
        "p50_vs_in_process",
        "rate_vs_in_process",
    ]
    table = print_table(rows, columns)
    info = machine_info()
    print(
        f"CPU: {info['cpu']} ({info['cores']} cores, load {info['loadavg_1m']:.1f}); "
        f"{args.n} items, index {args.index}; server exit code {rc}"
    )
    write_json(
        args.out,
        {
            "benchmark": "serve",
            "machine": info,
            "n_items": args.n,
            "index": args.index,
            "extractor": "color",
            "requests_per_cell": args.requests,
            "photo": "400x400 JPEG",
            "server_exit_code": rc,
            "rows": rows,
            "table": table,
        },
    )


if __name__ == "__main__":
    main()
