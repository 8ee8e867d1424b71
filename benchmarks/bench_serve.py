"""HTTP serving cost: `/items/{id}/similar` and `/query` on loopback vs the same work in-process.

A catalogue of ``--n`` items (default 100,000; colour-histogram vectors added with
``add_vectors``, so no images need decoding to build it) is saved once to
``benchmarks/results/.cache/`` and served by ``python -m visualsim.serve`` in a
subprocess on 127.0.0.1. The HTTP client is a third process (this file run with
``--client``, standard library only): N threads, each with one keep-alive
``http.client.HTTPConnection``, at 1, 4 and 16 at once, so the client's own Python
never shares a GIL with the in-process rows' process. ``/query`` uploads real JPEG
product photos (400x400) that the server decodes and embeds with the catalogue's
extractor. The in-process rows do the same work from the same number of threads in
the benchmark's process while the server idles: ``similar_to`` + ``to_dict`` of
each result; decode the same JPEG bytes + extract + ``query_vector`` + ``to_dict``.
The two sides alternate in ``--rounds`` rounds per cell (in-process, then HTTP, on
the same slice of items and photos), and each side's percentiles pool its rounds: on
a shared VM the same work drifts 20-30 % in speed from minute to minute, which two
back-to-back blocks would read as HTTP cost. The JSON keeps each round's p50 ratio.

FAISS runs one OpenMP thread per search on both sides (``OMP_NUM_THREADS=1``
unless already set; the server inherits it): a single 10-nearest search gains
nothing from a second thread, and on a busy box the team's spin-wait costs more.

Usage::

    python benchmarks/bench_serve.py [--n 100000] [--index hnsw] [--requests 500]
        [--workers 1] [--rounds 5]

``--workers N`` serves with ``visualsim serve --workers N`` (N uvicorn worker
processes on one socket); the in-process rows stay one process.

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

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before FAISS loads, here and in the server

RESULTS = Path(__file__).resolve().parent / "results"
CATEGORIES = ("t-shirt", "trousers", "shoes", "bag", "hat")
CLIENT_KIND = "http.client keep-alive (one HTTPConnection per client thread), in its own process"


def client_main(spec: dict[str, Any]) -> dict[str, Any]:
    """The HTTP client process: time ``requests`` calls from ``clients`` threads.

    Standard library only, so it starts fast and its own work stays small. Every
    thread connects (and sends one ``/health``) before the clock starts.
    """
    import http.client

    port, op, clients, n = spec["port"], spec["endpoint"], spec["clients"], spec["requests"]
    picks: list[str] = spec.get("picks", [])
    photos = [Path(p).read_bytes() for p in spec.get("photos", [])]
    lat: list[float] = []
    errors = 0
    lock = threading.Lock()
    first = int(spec.get("offset", 0))
    counter = iter(range(first, first + n))
    ready = threading.Barrier(clients + 1)

    def call(conn: http.client.HTTPConnection, i: int) -> bool:
        if op == "similar":
            conn.request("GET", f"/items/{picks[i % len(picks)]}/similar?k=10")
        else:
            body = photos[i % len(photos)]
            conn.request("POST", "/query?k=10", body=body, headers={"content-type": "image/jpeg"})
        r = conn.getresponse()
        data = r.read()
        return r.status == 200 and len(json.loads(data)["results"]) == 10

    def worker() -> None:
        nonlocal errors
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        conn.request("GET", "/health")
        conn.getresponse().read()
        ready.wait()
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                break
            t0 = time.perf_counter()
            try:
                ok = call(conn, i)
            except Exception:
                ok = False
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            dt = time.perf_counter() - t0
            with lock:
                lat.append(dt)
                errors += not ok
        conn.close()

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    ready.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return {"latencies": lat, "wall_s": wall, "errors": errors}


def similar_work(rec: Any, key: str) -> list[dict[str, Any]]:
    """What ``/items/{id}/similar`` does, in-process: search, then JSON-ready dicts."""
    return [r.to_dict() for r in rec.similar_to(key, 10)]


def query_work(rec: Any, data: bytes) -> list[dict[str, Any]]:
    """What ``/query`` does, in-process: decode the bytes, extract, search, dicts."""
    from visualsim.images import load_image
    from visualsim.serve.app import MAX_PIXELS

    vec = rec.extractor_.extract([load_image(data, max_pixels=MAX_PIXELS)], progress=False)[0]
    return [r.to_dict() for r in rec.query_vector(vec, 10)]


def bare_main(folder: str, port: int) -> None:
    """The reference server (``--bare-server``): the same work behind a bare ASGI app.

    No framework, no middleware, no access log, no validation: the request body is
    read, the work runs on a ``ThreadPoolExecutor`` as large as visualsim's default
    pool, the result dicts go out as JSON. Served by the same uvicorn (httptools,
    uvloop) on its own socket, it is the floor an HTTP server in Python on this
    machine starts from: what it costs over in-process is the HTTP round trip, the
    upload and the thread hand-off, not visualsim's app.
    """
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    import uvicorn

    from visualsim import Recommender
    from visualsim.serve.app import default_threads

    rec = Recommender.load(folder)
    pool = ThreadPoolExecutor(default_threads())

    def similar(key: str) -> bytes:
        return json.dumps({"results": similar_work(rec, key)}).encode()

    def query(data: bytes) -> bytes:
        return json.dumps({"results": query_work(rec, data)}).encode()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        path: str = scope["path"]
        loop = asyncio.get_running_loop()
        if path == "/health":
            body = b'{"status": "ok", "warm": true}'
        elif path.endswith("/similar"):
            body = await loop.run_in_executor(pool, similar, path.split("/")[2])
        else:
            chunks = []
            while True:
                message = await receive()
                chunks.append(message.get("body", b""))
                if not message.get("more_body"):
                    break
            body = await loop.run_in_executor(pool, query, b"".join(chunks))
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    import numpy as np

    warm = np.full((96, 96, 3), 200, np.uint8)
    rec.query_vector(rec.extractor_.extract([warm], progress=False)[0], 1)
    uvicorn.run(app, host="127.0.0.1", port=port, log_config=None, access_log=False)


class BareServer:
    """``bare_main`` in a subprocess on a free loopback port."""

    def __init__(self, folder: Path) -> None:
        import socket
        import urllib.request

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--bare-server", str(folder), "--port", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=5):
                    return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError("the bare reference server exited") from None
                time.sleep(0.3)
        raise RuntimeError("the bare reference server never became ready")

    def stop(self) -> int:
        self.proc.terminate()
        return self.proc.wait(timeout=60)


def run_client(spec: dict[str, Any]) -> dict[str, Any]:
    """Run :func:`client_main` in a fresh process (this file with ``--client``)."""
    out = subprocess.run(
        [sys.executable, __file__, "--client"],
        input=json.dumps(spec),
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"the client process failed: {out.stderr[-2000:]}")
    res: dict[str, Any] = json.loads(out.stdout)
    return res


def server_stack() -> dict[str, str]:
    """What uvicorn picks in the server (``auto``): httptools and uvloop when installed."""
    import importlib.metadata as md
    import importlib.util

    out = {"uvicorn": md.version("uvicorn")}
    for name, fallback in (("httptools", "h11"), ("uvloop", "asyncio")):
        found = importlib.util.find_spec(name) is not None
        out["http" if name == "httptools" else "loop"] = (
            f"{name} {md.version(name)}" if found else f"{fallback} {_version(fallback)}"
        )
    return out


def _version(name: str) -> str:
    import importlib.metadata as md

    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return "(stdlib)"


def build_catalogue(n: int, index: str, cache: Path) -> Path:
    """Save (once) an ``n``-item catalogue of random colour-histogram-like vectors."""
    import numpy as np

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
    import numpy as np

    a = np.asarray(lat) * 1000
    return {
        "p50_ms": float(np.percentile(a, 50)),
        "p95_ms": float(np.percentile(a, 95)),
        "p99_ms": float(np.percentile(a, 99)),
    }


def drive(
    clients: int, requests: int, call: Callable[[int], bool], offset: int = 0
) -> dict[str, Any]:
    """Run ``requests`` calls (numbered from ``offset``) from ``clients`` threads.

    Returns the same raw shape as the HTTP client: latencies, wall time, errors.
    """
    lat: list[float] = []
    errors = 0
    lock = threading.Lock()
    counter = iter(range(offset, offset + requests))

    def worker() -> None:
        nonlocal errors
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            t0 = time.perf_counter()
            try:
                ok = call(i)
            except Exception:
                ok = False
            dt = time.perf_counter() - t0
            with lock:
                lat.append(dt)
                errors += not ok

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for f in [pool.submit(worker) for _ in range(clients)]:
            f.result()
    wall = time.perf_counter() - t0
    return {"latencies": lat, "wall_s": wall, "errors": errors}


def summarise(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Pool the rounds of one side of a cell: percentiles of all latencies, overall rate."""
    lat = [x for p in parts for x in p["latencies"]]
    wall = sum(p["wall_s"] for p in parts)
    return {
        **percentiles(lat),
        "req_per_s": len(lat) / wall,
        "errors": sum(p["errors"] for p in parts),
        "n": len(lat),
    }


class Server:
    def __init__(self, folder: Path, workers: int = 1) -> None:
        command = [sys.executable, "-m", "visualsim.serve", str(folder), "--port", "0"]
        self.proc = subprocess.Popen(
            [*command, "--workers", str(workers)],
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
                if doc.get("event") == "listening":  # the server's structured fields
                    lines.put(json.dumps({"port": doc["port"]}))
                elif "error" in message.lower():
                    print("server:", line.strip(), file=sys.stderr, flush=True)

        threading.Thread(target=pump, daemon=True).start()
        message = lines.get(timeout=600)
        self.port = int(json.loads(message)["port"])
        self.url = f"http://127.0.0.1:{self.port}"
        import urllib.request

        deadline = time.monotonic() + 600
        warm: set[Any] = set()  # every worker answers warm (fresh connections reach each)
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=60) as r:
                    doc = json.loads(r.read())
                    if doc.get("warm"):
                        warm.add(doc.get("worker"))
                        if len(warm) >= workers:
                            return
                        continue
            except (OSError, ValueError):
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
    parser.add_argument("--requests", type=int, default=500, help="per (endpoint, clients)")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--cache", type=Path, default=RESULTS / ".cache")
    parser.add_argument("--out", type=Path, default=RESULTS / "serve.json")
    parser.add_argument("--workers", type=int, default=1, help="server worker processes")
    parser.add_argument(
        "--rounds", type=int, default=5, help="in-process and HTTP alternate this many times"
    )
    parser.add_argument(
        "--no-bare",
        action="store_true",
        help="skip the bare-ASGI reference server (the same work with no framework)",
    )
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--bare-server", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:  # the HTTP client process: a JSON spec on stdin, results on stdout
        print(json.dumps(client_main(json.loads(sys.stdin.read()))))
        return
    if args.bare_server:  # the reference server process
        bare_main(args.bare_server, args.port)
        return

    import numpy as np

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import machine_info, make_jpegs, print_table, write_json

    from visualsim import Recommender

    folder = build_catalogue(args.n, args.index, args.cache)
    photo_paths = [str(p) for p in make_jpegs(args.cache / "photos", 32, size=(400, 400))]
    photos = [Path(p).read_bytes() for p in photo_paths]
    rng = np.random.default_rng(1)
    picks = [f"item-{int(i):06d}" for i in rng.integers(0, args.n, size=args.requests)]

    rec = Recommender.load(folder)

    # the same work as the server's handlers, results built into JSON-ready dicts
    def similar_local(i: int) -> bool:
        return len(similar_work(rec, picks[i % len(picks)])) == 10

    def query_local(i: int) -> bool:
        return len(query_work(rec, photos[i % len(photos)])) == 10

    for i in range(10):  # warm both paths
        similar_local(i)
        query_local(i)

    rows: list[dict[str, Any]] = []
    load_before = os.getloadavg()[0]
    server = Server(folder, args.workers)
    bare = None if args.no_bare else BareServer(folder)
    bare_rc = None
    try:
        for op in ("similar", "query"):
            for port in (server.port, *([] if bare is None else [bare.port])):
                spec = {"port": port, "endpoint": op, "clients": 4, "requests": 20}
                spec.update(picks=picks, photos=photo_paths)
                run_client(spec)  # warm the server's path
        for op, local in (("similar", similar_local), ("query", query_local)):
            for clients in args.clients:
                # in-process and HTTP alternate in rounds, so both sides see the same
                # machine: on a shared VM the speed of the same work drifts by 20-30 %
                # from one minute to the next, more than the HTTP cost being measured
                base_parts: list[dict[str, Any]] = []
                http_parts: list[dict[str, Any]] = []
                bare_parts: list[dict[str, Any]] = []
                before = len(server.access)
                rounds_n = min(args.rounds, args.requests)
                sizes = [
                    args.requests // rounds_n + (r < args.requests % rounds_n)
                    for r in range(rounds_n)
                ]
                for r, chunk in enumerate(sizes):
                    offset = sum(sizes[:r])
                    base_parts.append(drive(clients, chunk, local, offset))
                    spec = {
                        "port": server.port,
                        "endpoint": op,
                        "clients": clients,
                        "requests": chunk,
                        "offset": offset,
                        "picks": picks,
                        "photos": photo_paths,
                    }
                    http_parts.append(run_client(spec))
                    if bare is not None:
                        bare_parts.append(run_client({**spec, "port": bare.port}))
                base, served = summarise(base_parts), summarise(http_parts)
                time.sleep(0.5)  # let the last access-log lines arrive
                inside = server.access[before:]
                served["server_p50_ms"] = float(np.median(inside)) if inside else float("nan")
                rounds = [
                    float(np.median(h["latencies"]) / np.median(b["latencies"]))
                    for b, h in zip(base_parts, http_parts, strict=True)
                ]
                sides = [("in-process", base)]
                if bare_parts:
                    sides.append(("bare-asgi", summarise(bare_parts)))
                sides.append(("http", served))
                for where, res in sides:
                    row = {"endpoint": op, "clients": clients, "where": where, **res}
                    if where != "in-process":
                        row["p50_vs_in_process"] = res["p50_ms"] / base["p50_ms"]
                        row["rate_vs_in_process"] = res["req_per_s"] / base["req_per_s"]
                    rows.append(row)
                rows[-1]["p50_ratio_by_round"] = [round(x, 3) for x in rounds]
                print(f"  {op} x{clients}: done", flush=True)
    finally:
        rc = server.stop()
        if bare is not None:
            bare_rc = bare.stop()

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
    info["loadavg_1m_before"] = load_before
    print(
        f"CPU: {info['cpu']} ({info['cores']} cores, load {load_before:.1f} before, "
        f"{info['loadavg_1m']:.1f} after); {args.n} items ({int(rec.dim)}-d), index "
        f"{args.index}; server workers: {args.workers}; "
        f"client: {CLIENT_KIND}; server: {server_stack()}; exit code {rc}"
    )
    write_json(
        args.out,
        {
            "benchmark": "serve",
            "machine": info,
            "n_items": args.n,
            "index": args.index,
            "extractor": "color",
            "dim": int(rec.dim),
            "requests_per_cell": args.requests,
            "rounds_per_cell": args.rounds,
            "photo": "400x400 JPEG",
            "client": CLIENT_KIND,
            "server_http": server_stack(),
            "server_workers": args.workers,
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "in_process_work": {
                "similar": "similar_to(id, 10) + to_dict() of each result",
                "query": "load_image(JPEG bytes) + extract + query_vector(v, 10) + to_dict()",
            },
            "server_exit_code": rc,
            "bare_asgi_reference": None
            if args.no_bare
            else "the same work in a bare ASGI app (no framework, middleware or log) on the "
            "same uvicorn, a ThreadPoolExecutor of default_threads() threads",
            "bare_exit_code": bare_rc,
            "rows": rows,
            "table": table,
        },
    )


if __name__ == "__main__":
    main()
