"""Pixel bombs against ``visualsim serve``: memory and time per upload, a search under fire.

The catalogue of :mod:`bench_serve_hostile` (``--n`` colour-histogram vectors, saved once
to ``benchmarks/results/.cache/``) is served by ``python -m visualsim.serve CATALOG
--port 0`` (default settings: 4 MP pixel budget, 20 MiB uploads) in a subprocess on
127.0.0.1. The uploads, each posted as a raw body to ``POST /query?k=10``:

- ``png-25mp``: a 5,000 x 5,000 black PNG (about 71 KiB) claiming 25 megapixels: the
  bomb of issue 27;
- ``jpeg-huge``: a small JPEG whose header claims 65,000 x 65,000 pixels;
- ``png-chunks``: an 8 x 8 PNG with 200,000 empty chunks before its pixels (2.3 MiB): no
  pixel to speak of, but seconds of header parsing for a decoder that follows them all;
- ``png-4mp-black``: a 2,000 x 2,000 black PNG (about 10 KiB): the largest bomb the
  default budget lets through to the decoder;
- ``png-4mp-noise``: a 2,000 x 2,000 PNG of noise (about 12 MiB), the largest image the
  default budget allows, and the slowest kind to decode;
- ``jpeg-64mp``: an 8,000 x 8,000 JPEG, allowed because it is decoded reduced (draft mode,
  1/8 scale, so 1 MP) for the model;
- ``photo``: the normal search, a 400 x 400 product-like JPEG;
- ``empty-body`` (under fire only): an empty ``POST /query``, refused (422) before any
  image work: a flood of requests with no pixel in them, for comparison.

For each upload, ``--repeat`` requests one after the other: the status, the time from
connect to the answer's last byte, the server's CPU time (all threads) per request, and
the server process's memory growth: its peak
resident set (``VmHWM``, reset before each request through ``/proc/PID/clear_refs``)
less its resident set just before the request, in MiB.

Then for each upload but ``photo``: ``--clients`` client processes (a raw socket each, one
request a connection, so the clients cost the shared CPUs little; each from its own
loopback address, 127.1.0.2 on, fresh ones each phase, as separate clients would be) post
it in a loop while this process times ``--queries`` normal searches; their p50 against the
p50 of as many searches just before with no load (the ratio is the issue's "<= 2x"
target). The uploads take turns for ``--rounds`` rounds (drift on a shared machine hits
them all alike), and each one's searches are pooled over its rounds. Every answer's status
is counted (500s especially), and the server's log is scanned for status 500 and
tracebacks.

``--before-src DIR`` serves the same uploads from a second server running another
visualsim source tree (``PYTHONPATH=DIR``), the servers taking turns, for "before" rows;
``--also-serve-args ARGS`` from one more with those options added (a rate limit, say).

Usage::

    python benchmarks/bench_serve_bombs.py [--n 10000] [--repeat 5] [--clients 4]
        [--queries 40] [--rounds 3] [--before-src DIR] [--also-serve-args ARGS]
        [--out benchmarks/results/serve-bombs.json]

Prints a table and writes ``benchmarks/results/serve-bombs.json``.
"""

from __future__ import annotations

import argparse
import io
import itertools
import multiprocessing
import os
import resource
import socket
import struct
import sys
import time
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine_info, make_jpegs, median, print_table, write_json
from bench_serve_hostile import Server, build_catalogue, lscpu_model, request

RESULTS = Path(__file__).resolve().parent / "results"
TIMEOUT_S = 30.0
TARGET_MIB = 50.0
TARGET_MS = 100.0
TARGET_RATIO = 2.0
BOMBS = ("png-25mp", "jpeg-huge", "png-chunks", "png-4mp-black")
CONTROL = "empty-body"  # a flood of requests refused before any image work, for comparison


# -- the uploads ----------------------------------------------------------------------------
def png_black(width: int, height: int) -> bytes:
    """A black RGB PNG, compressed as hard as zlib can: a few KiB per megapixel."""
    buf = io.BytesIO()
    Image.new("RGB", (width, height)).save(buf, format="PNG", optimize=True, compress_level=9)
    return buf.getvalue()


def png_noise(width: int, height: int, seed: int = 0) -> bytes:
    """An RGB PNG of noise: incompressible, so every byte has to be inflated and unfiltered."""
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def jpeg_claiming(width: int, height: int) -> bytes:
    """A small real JPEG whose start-of-frame header is rewritten to claim ``width x height``."""
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(buf, format="JPEG", quality=80)
    data = bytearray(buf.getvalue())
    i = 2
    while i < len(data) - 9:
        marker, length = data[i + 1], struct.unpack(">H", data[i + 2 : i + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2):  # SOFn: length, precision, height, width
            data[i + 5 : i + 9] = struct.pack(">HH", height, width)
            return bytes(data)
        i += 2 + length
    raise RuntimeError("no start-of-frame marker in the JPEG")


def jpeg_smooth(width: int, height: int) -> bytes:
    """A smooth (gradient) JPEG of ``width x height``: big in pixels, a few MiB on disk."""
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    pixels = np.empty((height, width, 3), dtype=np.uint8)
    pixels[..., 0] = x.astype(np.uint8)
    pixels[..., 1] = y.astype(np.uint8)
    pixels[..., 2] = ((x + y) / 2).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def png_chunks(n: int) -> bytes:
    """A valid 8x8 PNG with ``n`` empty ancillary chunks (12 bytes each) before its pixels."""
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(buf, format="PNG")
    data = buf.getvalue()
    empty = struct.pack(">I", 0) + b"zzZz" + struct.pack(">I", zlib.crc32(b"zzZz"))
    return data[:33] + empty * n + data[33:]  # after the signature and the IHDR chunk


def uploads(cache: Path, scale: float) -> dict[str, bytes]:
    """The uploads by name; ``scale`` < 1 shrinks the allowed big ones (for a quick run)."""
    side = max(64, int(2000 * scale))
    big = max(64, int(8000 * scale))
    photo = make_jpegs(cache / "serve-hostile-photos", 1, size=(400, 400))[0]
    return {
        "png-25mp": png_black(5000, 5000),
        "jpeg-huge": jpeg_claiming(65000, 65000),
        "png-chunks": png_chunks(max(2000, int(200_000 * scale))),
        "png-4mp-black": png_black(side, side),
        "png-4mp-noise": png_noise(side, side),
        "jpeg-64mp": jpeg_smooth(big, big),
        "photo": photo.read_bytes(),
    }


# -- the server's memory --------------------------------------------------------------------
def _status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {key} in /proc/{pid}/status")


def cpu_s(pid: int) -> float:
    """The process's user + system CPU seconds so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def reset_peak(pid: int) -> bool:
    """Reset the process's peak resident set to its current one (Linux 4.0+)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


# -- requests -------------------------------------------------------------------------------
def post(port: int, body: bytes, ctype: str = "application/octet-stream") -> tuple[Any, float]:
    """(status or the exception's name, seconds from connect to the answer's last byte)."""
    return request(port, "POST", "/query?k=10", body, ctype, TIMEOUT_S)


def one_by_one(server: Server, name: str, body: bytes, repeat: int) -> dict[str, Any]:
    pid = server.proc.pid
    growth, times, statuses = [], [], []
    cpu0 = cpu_s(pid)
    for _ in range(repeat):
        before = _status_kib(pid, "VmRSS")
        exact = reset_peak(pid)
        status, seconds = post(server.port, body)
        peak = _status_kib(pid, "VmHWM") if exact else _status_kib(pid, "VmRSS")
        growth.append(max(0, peak - before) / 1024)
        times.append(seconds * 1000)
        statuses.append(status)
    cpu = cpu_s(pid) - cpu0
    return {
        "upload": name,
        "kib": round(len(body) / 1024, 1),
        "status": sorted({str(s) for s in statuses}),
        "ms_p50": round(median(times), 1),
        "ms_max": round(max(times), 1),
        "mib_max": round(max(growth), 1),
        "mib_first": round(growth[0], 1),
        "server_cpu_ms": round(1000 * cpu / repeat, 1),
        "ms": [round(t, 1) for t in times],
        "mib": [round(g, 1) for g in growth],
    }


def searches(port: int, photo: bytes, n: int) -> tuple[list[float], Counter[str]]:
    times, statuses = [], Counter[str]()
    for _ in range(n):
        status, seconds = post(port, photo, "image/jpeg")
        statuses[str(status)] += 1
        if status == 200:
            times.append(seconds * 1000)
    return times, statuses


def bomber(port: int, body: bytes, stop: Any, counts: Any, source: str) -> None:
    """A client process: post ``body`` over and over from address ``source``; count the
    statuses (index 0: errors)."""
    head = (
        b"POST /query?k=10 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        b"Content-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n" % len(body)
    )
    while not stop.is_set():
        try:
            address = ("127.0.0.1", port)
            with socket.create_connection(address, TIMEOUT_S, (source, 0)) as s:
                s.sendall(head + body)
                got = b""
                while chunk := s.recv(65536):
                    got += chunk
            status = int(got[9:12]) if got.startswith(b"HTTP/1.1 ") else 0
        except (OSError, ValueError):
            status = 0
        with counts.get_lock():
            counts[min(status, 599)] += 1


_PHASES = itertools.count()


def under_fire(
    server: Server, name: str, body: bytes, photo: bytes, clients: int, queries: int
) -> dict[str, Any]:
    # each phase's clients post from addresses no earlier phase used, so what a server
    # remembers of an address (its refusal back-off) starts afresh every phase
    phase = next(_PHASES)
    idle, idle_statuses = searches(server.port, photo, queries)
    ctx = multiprocessing.get_context("fork")
    stop = ctx.Event()
    counts = ctx.Array("q", 600)
    procs = [
        ctx.Process(
            target=bomber,
            args=(server.port, body, stop, counts, f"127.{1 + phase // 250}.{phase % 250}.{i + 2}"),
            daemon=True,
        )
        for i in range(clients)
    ]
    for proc in procs:
        proc.start()
    time.sleep(0.5)  # the clients are posting
    cpu0, posts0 = cpu_s(server.proc.pid), sum(counts[:])
    loaded, loaded_statuses = searches(server.port, photo, queries)
    cpu, posts = cpu_s(server.proc.pid) - cpu0, sum(counts[:]) - posts0
    stop.set()
    for proc in procs:
        proc.join(timeout=TIMEOUT_S + 5)
    fired = Counter({("error" if i == 0 else str(i)): n for i, n in enumerate(counts[:]) if n})
    return {
        "upload": name,
        "idle": idle,
        "loaded": loaded,
        "query_statuses": idle_statuses + loaded_statuses,
        "bomb_statuses": fired,
        "cpu_s": cpu,
        "requests": posts + len(loaded),
    }


def pooled(name: str, rounds: list[dict[str, Any]], clients: int) -> dict[str, Any]:
    """One upload's rounds under fire, pooled: p50s over all rounds, and each round's ratio."""
    idle = [t for r in rounds for t in r["idle"]]
    loaded = [t for r in rounds for t in r["loaded"]]
    statuses: Counter[str] = sum((r["query_statuses"] for r in rounds), Counter())
    fired: Counter[str] = sum((r["bomb_statuses"] for r in rounds), Counter())
    by_round = [
        round(median(r["loaded"]) / median(r["idle"]), 2)
        for r in rounds
        if r["idle"] and r["loaded"]
    ]
    cpu, requests = sum(r["cpu_s"] for r in rounds), sum(r["requests"] for r in rounds)
    return {
        "upload": name,
        "clients": clients,
        "rounds": len(rounds),
        "query_idle_ms_p50": round(median(idle), 1),
        "query_loaded_ms_p50": round(median(loaded), 1),
        "query_loaded_ms_max": round(max(loaded), 1) if loaded else None,
        "ratio": round(median(loaded) / median(idle), 2) if idle and loaded else None,
        "ratio_by_round": by_round,
        "query_statuses": dict(statuses),
        "bomb_posts": sum(fired.values()),
        "server_cpu_ms_per_request": round(1000 * cpu / max(1, requests), 2),
        "bomb_statuses": dict(fired),
        "status_500": statuses["500"] + fired["500"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=10_000, help="catalogue items (default 10,000)")
    p.add_argument("--repeat", type=int, default=5, help="requests per upload, one by one (5)")
    p.add_argument("--clients", type=int, default=4, help="clients posting an upload (4)")
    p.add_argument("--queries", type=int, default=40, help="searches timed per phase (40)")
    p.add_argument("--rounds", type=int, default=3, help="rounds under fire, pooled (3)")
    p.add_argument(
        "--scale", type=float, default=1.0, help="shrink the allowed big images (1; tests)"
    )
    p.add_argument("--cache", type=Path, default=RESULTS / ".cache", help="catalogue cache")
    p.add_argument("--out", type=Path, default=RESULTS / "serve-bombs.json")
    p.add_argument(
        "--serve-args", default="", help="more `visualsim serve` options, space separated"
    )
    p.add_argument(
        "--before-src",
        type=Path,
        help="a visualsim source tree (its src/ folder) to serve the same uploads from too, "
        "rounds taking turns with this one: the 'before' rows (e.g. `git archive REV src | "
        "tar -x -C /tmp/before`, then --before-src /tmp/before/src)",
    )
    p.add_argument(
        "--also-serve-args",
        default="",
        help="serve the same uploads from a third server with these options added too "
        "(e.g. '--rate-limit 100 --burst 200'), rounds taking turns",
    )
    args = p.parse_args()
    folder = build_catalogue(args.n, args.cache)
    bodies = uploads(args.cache, args.scale)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # the server keeps this process's
    sides: list[tuple[str, dict[str, str] | None, list[str]]] = [
        ("after", None, args.serve_args.split())
    ]
    if args.before_src is not None:
        env = {"PYTHONPATH": str(args.before_src.resolve())}
        sides.append(("before", env, args.serve_args.split()))
    if args.also_serve_args:
        more = args.also_serve_args.split()
        sides.append(("after " + args.also_serve_args, None, args.serve_args.split() + more))
    servers: dict[str, Server] = {}
    try:
        for side, env, options in sides:
            servers[side] = Server(folder, soft, hard, False, options, env)
        rows, fire = [], []
        for side, server in servers.items():
            post(server.port, bodies["photo"], "image/jpeg")  # the model is warm
            for name, body in bodies.items():
                rows.append({"server": side} | one_by_one(server, name, body, args.repeat))
        fired = [(name, body) for name, body in bodies.items() if name != "photo"]
        fired.append((CONTROL, b""))
        runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for _ in range(args.rounds):  # all take turns: drift on a shared box hits them alike
            for name, body in fired:
                for side, server in servers.items():
                    runs.setdefault((side, name), []).append(
                        under_fire(server, name, body, bodies["photo"], args.clients, args.queries)
                    )
        for (side, name), done in runs.items():
            fire.append({"server": side} | pooled(name, done, args.clients))
    finally:
        for server in servers.values():
            server.stop()
    for row in rows:
        if row["upload"] in BOMBS:
            row["target_met"] = row["mib_max"] <= TARGET_MIB and row["ms_max"] <= TARGET_MS
    for row in fire:
        met = row["ratio"] is not None and row["ratio"] <= TARGET_RATIO and not row["status_500"]
        row["target_met"] = None if row["upload"] == CONTROL else met
    print_table(
        rows,
        [
            "server",
            "upload",
            "kib",
            "status",
            "ms_p50",
            "ms_max",
            "server_cpu_ms",
            "mib_max",
            "mib_first",
            "target_met",
        ],
    )
    print_table(
        fire,
        [
            "server",
            "upload",
            "clients",
            "query_idle_ms_p50",
            "query_loaded_ms_p50",
            "ratio",
            "ratio_by_round",
            "bomb_posts",
            "server_cpu_ms_per_request",
            "status_500",
            "target_met",
        ],
    )
    status_500 = sum(server.status_500 for server in servers.values())
    tracebacks = sum(server.tracebacks for server in servers.values())
    print(f"server logs: status 500 x {status_500}, tracebacks x {tracebacks}")
    info = machine_info()
    info["lscpu_model"] = lscpu_model()
    print(f"CPU (lscpu): {info['lscpu_model']}, {os.cpu_count()} cores")
    out = write_json(
        args.out,
        {
            "machine": info,
            "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "targets": {"mib": TARGET_MIB, "ms": TARGET_MS, "query_p50_ratio": TARGET_RATIO},
            "uploads": rows,
            "under_fire": fire,
            "server_log_status_500": status_500,
            "server_log_tracebacks": tracebacks,
        },
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
