"""Slow and idle clients against ``visualsim serve``: 1,100 half-sent requests, then a new client.

A catalogue of ``--n`` items (colour-histogram vectors, no images to decode) is saved
once to ``benchmarks/results/.cache/`` and served by ``python -m visualsim.serve
CATALOG --port 0`` (default settings) in a subprocess on 127.0.0.1, started with an
open-file limit of ``--fd-limit`` (default 1,024, as on the box of issue 27; the hard
limit is ``--fd-hard``, by default the same, so the server cannot raise it; several
values give a row each). This process then:

1. opens ``--idle`` (default 1,100) connections that each send half a request head
   (``GET /health HTTP/1.1`` and one header, no blank line) and nothing more;
2. ``--rounds`` times: re-opens every one the server closed (so ``--idle`` half-sent
   requests are open again, as a hostile client would keep them), then times a fresh
   client's ``GET /health`` and ``POST /query`` (a 400x400 JPEG) from connect to the
   last byte of the answer (``http.client``, 5 s timeout: a timeout or a dropped
   connection counts as a failure);
3. stops re-opening and times how long the server takes to close all of them (the
   header timeout), and what each got (408 or a silent close).

``--baseline`` serves the same app with plain uvicorn (as ``visualsim serve`` did before
the connection guard) for the "before" row. The server's access log is scanned for
status 500 and tracebacks.

Usage::

    python benchmarks/bench_serve_hostile.py [--idle 1100] [--rounds 7] [--fd-limit 1024]
        [--fd-hard N [N ...]] [--baseline]

Prints a table and writes ``benchmarks/results/serve-hostile.json``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import queue
import resource
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine_info, make_jpegs, median, print_table, write_json

RESULTS = Path(__file__).resolve().parent / "results"
HALF = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n"  # no blank line: the head never ends
TIMEOUT_S = 5.0

BASELINE = """
import sys, uvicorn
from visualsim.serve import create_app
from visualsim.serve.server import configure_logging
configure_logging()
sock = __import__("socket").socket()
sock.bind(("127.0.0.1", 0)); sock.listen(2048)
print('{"event": "listening", "port": %d}' % sock.getsockname()[1], file=sys.stderr, flush=True)
config = uvicorn.Config(create_app(sys.argv[1]), log_config=None, access_log=False)
uvicorn.Server(config).run(sockets=[sock])
"""


def build_catalogue(n: int, cache: Path) -> Path:
    import numpy as np

    from visualsim import ColorHistogramExtractor, Recommender

    folder = cache / f"serve-hostile-{n}"
    if (folder / "manifest.json").is_file():
        return folder
    ext = ColorHistogramExtractor()
    vectors = np.random.default_rng(0).random((n, ext.dim)).astype(np.float32)
    ids = [f"item-{i:06d}" for i in range(n)]
    Recommender(ext).add_vectors(vectors, ids, [{"n": i} for i in range(n)]).save(
        folder, overwrite=True
    )
    return folder


class Server:
    """The server subprocess with an fd limit; its stderr scanned for 500s and tracebacks."""

    def __init__(
        self,
        folder: Path,
        fd_limit: int,
        fd_hard: int,
        baseline: bool,
        extra: Sequence[str] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        if baseline:
            command = [sys.executable, "-c", BASELINE, str(folder)]
        else:
            command = [sys.executable, "-m", "visualsim.serve", str(folder), "--port", "0"]
            command += list(extra)  # more `visualsim serve` options

        def limit() -> None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (fd_limit, max(fd_limit, fd_hard)))

        self.proc = subprocess.Popen(
            command,
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **(env or {})},
            preexec_fn=limit,
        )
        self.status_500 = 0
        self.tracebacks = 0
        self.emfile = 0  # accept() failed: "too many open files" (asyncio waits 1 s)
        self.events: list[dict[str, Any]] = []
        ready: queue.Queue[dict[str, Any]] = queue.Queue()

        def pump() -> None:
            assert self.proc.stderr is not None
            for line in self.proc.stderr:
                try:
                    doc = json.loads(line)
                except ValueError:
                    doc = {"message": line}
                if doc.get("status") == 500:
                    self.status_500 += 1
                if "Traceback" in line:
                    self.tracebacks += 1
                if "Too many open files" in line or "out of system resource" in line:
                    self.emfile += 1
                if "event" in doc:  # the server's structured fields (or the baseline's line)
                    self.events.append(doc)
                    if doc.get("event") == "listening":
                        ready.put(doc)

        threading.Thread(target=pump, daemon=True).start()
        self.port = int(ready.get(timeout=300)["port"])
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            status, _ = request(self.port, "GET", "/health")
            if status == 200:
                return
            time.sleep(0.3)
        raise RuntimeError("the server never answered /health")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def request(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    ctype: str = "image/jpeg",
    timeout: float = TIMEOUT_S,
) -> tuple[Any, float]:
    """(status or the exception's name, seconds from connect to the answer's last byte)."""
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = {"content-type": ctype} if body is not None else {}
        conn.request(method, path, body=body, headers=headers)
        r = conn.getresponse()
        r.read()
        status: Any = r.status
    except (OSError, http.client.HTTPException) as exc:
        status = type(exc).__name__
    finally:
        conn.close()
    return status, time.perf_counter() - t0


def open_half(port: int) -> socket.socket | None:
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S)
        s.sendall(HALF)
        s.setblocking(False)
        return s
    except OSError:
        return None


def closed(s: socket.socket) -> bytes | None:
    """What the server sent on ``s`` before closing it; None while it is open."""
    got = b""
    try:
        while True:
            chunk = s.recv(4096)
            if not chunk:
                return got
            got += chunk
    except BlockingIOError:
        return None
    except OSError:
        return got


def refill(port: int, socks: list[socket.socket | None]) -> int:
    """Re-open every half-sent connection the server closed; return how many."""
    reopened = 0
    for i, s in enumerate(socks):
        if s is None or closed(s) is not None:
            if s is not None:
                s.close()
            socks[i] = open_half(port)
            reopened += 1
    return reopened


def run(args: argparse.Namespace, baseline: bool, fd_hard: int) -> dict[str, Any]:
    folder = build_catalogue(args.n, RESULTS / ".cache")
    photo = make_jpegs(RESULTS / ".cache" / "serve-hostile-photos", 1, size=(400, 400))[0]
    body = photo.read_bytes()
    server = Server(folder, args.fd_limit, fd_hard, baseline)
    label = "plain uvicorn (before)" if baseline else "visualsim serve (defaults)"
    try:
        idle_status, idle_s = request(server.port, "GET", "/health")
        t0 = time.perf_counter()
        socks = [open_half(server.port) for _ in range(args.idle)]
        opened_s = time.perf_counter() - t0
        health: list[tuple[Any, float]] = []
        query: list[tuple[Any, float]] = []
        reopened = 0
        for _ in range(args.rounds):
            reopened += refill(server.port, socks)
            time.sleep(0.2)
            health.append(request(server.port, "GET", "/health"))
            query.append(request(server.port, "POST", "/query?k=10", body))
        # stop re-opening: how long until the server has closed every half-sent request
        t0 = time.perf_counter()
        got: list[bytes | None] = [None if s is not None else b"" for s in socks]
        while time.perf_counter() - t0 < args.wait:
            for i, s in enumerate(socks):
                if s is not None and got[i] is None:
                    got[i] = closed(s)
            if all(g is not None for g in got):
                break
            time.sleep(0.25)
        all_closed_s = time.perf_counter() - t0
        for s in socks:
            if s is not None:
                s.close()
        after = request(server.port, "GET", "/health")
    finally:
        server.stop()
        time.sleep(0.5)
    statuses = [s for s, _ in health + query] + [after[0]]
    ok = [t for s, t in health if s == 200]
    okq = [t for s, t in query if s == 200]
    closes = [e for e in server.events if e.get("event") == "connections_closed"]
    return {
        "server": label,
        "fd_limit": args.fd_limit,
        "fd_hard": max(args.fd_limit, fd_hard),
        "max_connections": next(
            (e.get("max_connections") for e in server.events if e.get("event") == "listening"),
            None,
        ),
        "idle": args.idle,
        "opened_s": round(opened_s, 2),
        "health_idle_ms": round(idle_s * 1000, 1) if idle_status == 200 else None,
        "health_ms_p50": round(median(ok) * 1000, 1) if ok else None,
        "health_ms_max": round(max(ok) * 1000, 1) if ok else None,
        "query_ms_p50": round(median(okq) * 1000, 1) if okq else None,
        "query_ms_max": round(max(okq) * 1000, 1) if okq else None,
        "answered": f"{len(ok) + len(okq)}/{len(health) + len(query)}",
        "failures": sorted({str(s) for s in statuses if s != 200}),
        "status_500": server.status_500 + sum(s == 500 for s in statuses),
        "tracebacks": server.tracebacks,
        "emfile": server.emfile,
        "reopened": reopened,
        "closed_408": sum(1 for g in got if g and g.startswith(b"HTTP/1.1 408 ")),
        "closed_silent": sum(1 for g in got if g == b""),
        "still_open": sum(1 for g in got if g is None),
        "all_closed_s": round(all_closed_s, 1),
        "after_status": after[0],
        "server_close_log": closes,
        "health": health,
        "query": query,
    }


def lscpu_model() -> str | None:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=10_000, help="catalogue items (default 10,000)")
    p.add_argument("--idle", type=int, default=1100, help="half-sent connections (1,100)")
    p.add_argument("--rounds", type=int, default=7, help="timed requests of each kind (7)")
    p.add_argument("--fd-limit", type=int, default=1024, help="server's RLIMIT_NOFILE (1,024)")
    p.add_argument(
        "--fd-hard",
        type=int,
        nargs="+",
        default=[0],
        help="server's hard RLIMIT_NOFILE, one row each (default: the soft one, so the "
        "server cannot raise it)",
    )
    p.add_argument("--wait", type=float, default=25.0, help="seconds to wait for closes (25)")
    p.add_argument("--baseline", action="store_true", help="also run plain uvicorn (before)")
    p.add_argument("--out", type=Path, default=RESULTS / "serve-hostile.json", help="the JSON")
    args = p.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < args.idle + 200 <= hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    rows = [run(args, baseline=True, fd_hard=0)] if args.baseline else []
    rows += [run(args, baseline=False, fd_hard=hard) for hard in args.fd_hard]
    print_table(
        rows,
        [
            "server",
            "fd_hard",
            "max_connections",
            "idle",
            "health_idle_ms",
            "health_ms_p50",
            "health_ms_max",
            "query_ms_p50",
            "query_ms_max",
            "answered",
            "status_500",
            "emfile",
            "reopened",
            "closed_408",
            "closed_silent",
            "still_open",
            "all_closed_s",
        ],
    )
    for row in rows:
        print(row["server"], "failures:", row["failures"], "after:", row["after_status"])
    info = machine_info()
    info["lscpu_model"] = lscpu_model()
    out = write_json(
        args.out,
        {"machine": info, "settings": {**vars(args), "out": str(args.out)}, "rows": rows},
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
