"""A real uvicorn server on 127.0.0.1: concurrent reads during writes, the event loop stays free,
413 over a socket, JSON logs, SIGTERM shutdown."""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from support import uvicorn_in_thread
from visualsim import ColorHistogramExtractor, Recommender, SyntheticProducts
from visualsim.serve import create_app

KEY = "live-test-key-42424242"
AUTH = {"Authorization": f"Bearer {KEY}"}
N = 40


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    root = tmp_path_factory.mktemp("live")
    ds = SyntheticProducts(N, size=48)
    paths = ds.write_folder(root / "images", format="png")
    rec = Recommender(ColorHistogramExtractor()).fit(
        [str(p) for p in paths],
        ids=[ds[i].id for i in range(N)],
        metadata=[dict(ds[i].metadata, price=i) for i in range(N)],
        progress=False,
    )
    return rec.save(root / "cat"), paths


class Server:
    """``python -m visualsim.serve`` in a subprocess, its stderr collected line by line."""

    def __init__(self, folder: Path, *args: str, cli: bool = False) -> None:
        env = {**os.environ, "VS_TEST_KEY": KEY, "PYTHONUNBUFFERED": "1"}
        command = (
            [sys.executable, "-m", "visualsim.cli", "serve"]
            if cli
            else [sys.executable, "-m", "visualsim.serve"]
        )
        self.proc = subprocess.Popen(
            [*command, str(folder), "--port", "0", *args],
            stderr=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.log: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()
        self.port = self._wait_listening()
        self.url = f"http://127.0.0.1:{self.port}"
        self._wait_ready()

    def _pump(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.put(line)

    def _next(self, timeout: float) -> str:
        line = self.lines.get(timeout=timeout)
        self.log.append(line)
        return line

    def _wait_listening(self) -> int:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited: {''.join(self.log)}")
            try:
                line = self._next(1.0)
            except queue.Empty:
                continue
            doc = json.loads(line)
            if doc.get("event") == "listening":  # structured fields, not JSON in a string
                assert doc["message"] == f"listening on {doc['url']}"
                return int(doc["port"])
        raise AssertionError("server did not start: " + "".join(self.log))

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/health", timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        raise AssertionError("server never answered /health")

    def drain(self) -> list[str]:
        while True:
            try:
                self._next(0.2)
            except queue.Empty:
                return self.log

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self.drain()
        return rc


@pytest.fixture()
def server(catalogue: tuple[Path, list[Path]]) -> Iterator[Server]:
    srv = Server(catalogue[0], "--api-key-env", "VS_TEST_KEY", "--max-upload-mb", "1")
    try:
        yield srv
    finally:
        srv.stop()


def check_results(body: dict[str, Any], k: int, *, exclude: str | None = None) -> None:
    results = body["results"]
    assert 1 <= len(results) <= k
    assert [r["rank"] for r in results] == list(range(1, len(results) + 1))
    ids = [r["id"] for r in results]
    assert len(set(ids)) == len(ids)
    assert exclude not in ids
    scores = [r["score"] for r in results]
    assert scores == sorted(scores, reverse=True)
    assert all(-1.0 <= s <= 1.0 for s in scores)


def test_parallel_queries_while_items_are_added_and_removed(
    server: Server, catalogue: tuple[Path, list[Path]]
) -> None:
    photos = [p.read_bytes() for p in catalogue[1][:8]]
    stable = [f"synthetic-{i:06d}" for i in range(N)]
    stop = threading.Event()
    problems: list[str] = []
    writes = 0

    def writer() -> None:
        nonlocal writes
        with httpx.Client(base_url=server.url, headers=AUTH, timeout=30) as c:
            i = 0
            while not stop.is_set() and i < 60:
                item = f"extra-{i}"
                r = c.post(
                    "/items",
                    data={"id": item, "metadata": json.dumps({"price": i})},
                    files={"image": ("p.png", photos[i % 8], "image/png")},
                )
                if r.status_code != 201:
                    problems.append(f"POST {item}: {r.status_code} {r.text}")
                if i % 2:
                    r = c.delete(f"/items/extra-{i - 1}")
                    if r.status_code != 200:
                        problems.append(f"DELETE: {r.status_code} {r.text}")
                writes += 1
                i += 1

    def reader(n: int) -> None:
        with httpx.Client(base_url=server.url, timeout=30) as c:
            for j in range(25):
                if (n + j) % 2:
                    item = stable[(n * 7 + j) % N]
                    r = c.get(f"/items/{item}/similar", params={"k": 5})
                    ok = r.status_code == 200
                    if ok:
                        check_results(r.json(), 5, exclude=item)
                else:
                    r = c.post(
                        "/query",
                        params={"k": 5, "where": "price >= 0"},
                        content=photos[(n + j) % 8],
                    )
                    ok = r.status_code == 200
                    if ok:
                        check_results(r.json(), 5)
                if not ok:
                    problems.append(f"reader {n}: {r.status_code} {r.text}")

    w = threading.Thread(target=writer)
    w.start()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(reader, range(8)))
    stop.set()
    w.join(60)
    assert not problems, problems[:5]
    assert writes > 0
    health = httpx.get(server.url + "/health").json()
    assert health["items"] >= N


def test_reload_under_load_drops_no_request(server: Server) -> None:
    problems: list[str] = []
    done = threading.Event()

    def reader(n: int) -> int:
        count = 0
        with httpx.Client(base_url=server.url, timeout=30) as c:
            while not done.is_set() or count < 5:
                item = f"synthetic-{(n * 5 + count) % N:06d}"
                r = c.get(f"/items/{item}/similar", params={"k": 3})
                if r.status_code != 200:
                    problems.append(f"{r.status_code} {r.text}")
                else:
                    check_results(r.json(), 3, exclude=item)
                count += 1
        return count

    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(reader, n) for n in range(4)]
        with httpx.Client(base_url=server.url, headers=AUTH, timeout=60) as c:
            for _ in range(3):
                r = c.post("/reload")
                assert r.status_code == 200 and r.json()["items"] == N, r.text
        done.set()
        served = sum(f.result() for f in futures)
    assert not problems, problems[:5]
    assert served >= 20


def test_over_the_limit_upload_gets_413_before_the_body_is_sent(server: Server) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        s.sendall(
            b"POST /query HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
            b"Content-Length: 1000000000\r\n\r\n" + b"\x89PNG" + b"0" * 1000
        )
        data = b""
        while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        reply = data.decode("latin-1")
    assert reply.startswith("HTTP/1.1 413"), reply[:200]
    assert "larger than the limit" in reply


def test_logs_are_json_lines_and_never_show_the_key(server: Server) -> None:
    httpx.get(server.url + "/items/synthetic-000001/similar?k=2")
    httpx.delete(server.url + "/items/nope", headers=AUTH)
    httpx.delete(server.url + "/items/nope", headers={"Authorization": "Bearer " + "x" * 20})
    assert server.stop() == 0
    docs = [json.loads(line) for line in server.log]
    access = [d for d in docs if "method" in d]
    assert {(d["method"], d["status"]) for d in access} >= {
        ("GET", 200),
        ("DELETE", 404),
        ("DELETE", 401),
    }
    assert all(KEY not in line for line in server.log)


@pytest.mark.parametrize("cli", [False, True], ids=["python-m", "visualsim-serve"])
def test_sigterm_shuts_down_cleanly(catalogue: tuple[Path, list[Path]], cli: bool) -> None:
    srv = Server(catalogue[0], cli=cli)
    assert httpx.get(srv.url + "/health").json()["read_only"] is True
    assert srv.stop() == 0
    messages = [json.loads(line).get("message", "") for line in srv.log]
    assert "stopped" in messages
    with pytest.raises(httpx.TransportError):
        httpx.get(srv.url + "/health", timeout=2)


def test_sigterm_lets_a_running_request_finish(catalogue: tuple[Path, list[Path]]) -> None:
    srv = Server(catalogue[0])
    body = catalogue[1][3].read_bytes()
    with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as s:
        s.sendall(
            b"POST /query?k=2 HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body[:100]
        )
        time.sleep(0.5)  # the request is under way: headers and part of the body are in
        srv.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        s.sendall(body[100:])
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, payload = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), data[:300]
    assert json.loads(payload)["results"][0]["id"] == "synthetic-000003"
    assert srv.stop() == 0


def test_missing_key_variable_is_an_error_that_names_it(
    catalogue: tuple[Path, list[Path]],
) -> None:
    env = {k: v for k, v in os.environ.items() if k != "VS_UNSET_KEY"}
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "visualsim.serve",
            str(catalogue[0]),
            "--port",
            "0",
            "--api-key-env",
            "VS_UNSET_KEY",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert out.returncode == 1
    assert "VS_UNSET_KEY" in out.stderr and "not set" in out.stderr


class BlockingExtractor(ColorHistogramExtractor):
    """Colour histograms that wait for a signal: a stand-in for a slow model."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()
        self.blocking = False

    def _embed(self, batch: np.ndarray) -> np.ndarray:
        if self.blocking:
            self.entered.set()
            assert self.release.wait(60), "never released"
        return super()._embed(batch)


def test_health_answers_while_a_query_extracts(catalogue: tuple[Path, list[Path]]) -> None:
    ext = BlockingExtractor()
    rec = Recommender(ext).fit([str(p) for p in catalogue[1]], progress=False)
    try:
        with uvicorn_in_thread(create_app(rec)) as url:
            ext.blocking = True
            with ThreadPoolExecutor(1) as pool:
                pending = pool.submit(
                    httpx.post,
                    url + "/query?k=3",
                    content=catalogue[1][0].read_bytes(),
                    timeout=60,
                )
                assert ext.entered.wait(30)
                health = httpx.get(url + "/health", timeout=10)  # the loop is free
                assert health.status_code == 200
                assert not pending.done()
                ext.release.set()
                assert pending.result().status_code == 200
    finally:
        ext.release.set()


class CountingExtractor(ColorHistogramExtractor):
    """Colour histograms that record which threads extract and how many at once."""

    def __init__(self, gate: int) -> None:
        super().__init__()
        self.lock = threading.Lock()
        self.running = 0
        self.peak = 0
        self.threads: set[str] = set()
        self.gate: threading.Barrier | None = None
        self.group = gate

    def _embed(self, batch: np.ndarray) -> np.ndarray:
        with self.lock:
            self.running += 1
            self.peak = max(self.peak, self.running)
            self.threads.add(threading.current_thread().name)
            gate = self.gate
        try:
            if gate is not None:
                gate.wait()  # passes only when `group` extractions run at once
            return super()._embed(batch)
        finally:
            with self.lock:
                self.running -= 1


@pytest.mark.parametrize("threads", [1, 3])
def test_extraction_runs_on_the_apps_own_pool_of_threads(
    catalogue: tuple[Path, list[Path]], threads: int
) -> None:
    ext = CountingExtractor(threads)
    rec = Recommender(ext).fit([str(p) for p in catalogue[1]], progress=False)
    photos = [p.read_bytes() for p in catalogue[1][:4]]
    try:
        with uvicorn_in_thread(create_app(rec, threads=threads)) as url:
            with ext.lock:
                ext.peak, ext.threads = 0, set()
                # with 3 threads, every group of 3 must overlap to pass the barrier (bounded)
                ext.gate = threading.Barrier(threads, timeout=60) if threads > 1 else None
            requests = 4 * threads  # whole groups, more than the pool holds at once

            def one(i: int) -> httpx.Response:
                return httpx.post(url + "/query?k=3", content=photos[i % 4], timeout=120)

            with ThreadPoolExecutor(requests) as pool:
                answers = list(pool.map(one, range(requests)))
    finally:
        if ext.gate is not None:
            ext.gate.abort()
    assert [r.status_code for r in answers] == [200] * requests
    assert all(len(r.json()["results"]) == 3 for r in answers)
    assert ext.peak == threads  # never more than the pool, and the pool is used in full
    assert ext.threads and all(name.startswith("visualsim") for name in ext.threads)
    assert len(ext.threads) <= threads


# -- several worker processes -------------------------------------------------------------
def _children(pid: int) -> set[int]:
    """Process ids whose parent is ``pid`` (Linux /proc)."""
    out = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                out.add(int(entry.name))
    return out


def _workers_answering(url: str, want: dict[str, Any], workers: set[int], deadline: float) -> bool:
    """Fresh connections until every worker in ``workers`` reports ``want`` in ``/health``."""
    seen: set[int] = set()
    while time.monotonic() < deadline:
        body = httpx.get(url + "/health", timeout=10).json()  # a new connection each time
        if all(body.get(key) == value for key, value in want.items()):
            seen.add(body["worker"])
            if seen == workers:
                return True
        else:
            seen.clear()  # a worker still on the old catalogue: start the round again
        time.sleep(0.02)
    return False


def test_two_workers_share_one_socket_and_all_follow_a_reload(
    catalogue: tuple[Path, list[Path]], tmp_path: Path
) -> None:
    folder = tmp_path / "cat"
    rec = Recommender.load(catalogue[0])
    rec.save(folder)
    srv = Server(folder, "--workers", "2", "--threads", "3", "--api-key-env", "VS_TEST_KEY")
    try:
        workers = _children(srv.proc.pid)
        deadline = time.monotonic() + 60
        pids: set[int] = set()
        while len(pids) < 2 and time.monotonic() < deadline:
            pids.add(httpx.get(srv.url + "/health", timeout=10).json()["worker"])
        assert len(pids) == 2 and pids <= workers  # two processes answer on the one port

        photo = catalogue[1][5].read_bytes()
        first = httpx.post(srv.url + "/query?k=3", content=photo, timeout=30)
        assert first.status_code == 200
        assert first.json()["results"][0]["id"] == "synthetic-000005"

        # writes cannot stay consistent across independent copies: refused, naming --workers
        refused = httpx.delete(srv.url + "/items/synthetic-000001", headers=AUTH)
        assert refused.status_code == 405 and "--workers" in refused.json()["detail"]
        assert httpx.post(srv.url + "/reload").status_code == 401

        # a new catalogue on disk; one POST /reload reaches every worker
        seven = "synthetic-000007"
        rec.add_vectors(rec.vector_of(seven)[None], ["new-arrival"], [rec.metadata_of(seven)])
        rec.remove(["synthetic-000005"])
        rec.save(folder, overwrite=True)
        assert _workers_answering(srv.url, {"reload": None}, pids, time.monotonic() + 60)
        reloaded = httpx.post(srv.url + "/reload", headers=AUTH, timeout=60)
        assert reloaded.status_code == 200 and reloaded.json()["items"] == N
        token = reloaded.json()["reload"]
        assert isinstance(token, str) and token  # what every worker reports once it follows
        # (same size as before: one added, one removed, so only the token tells them apart)
        want = {"items": N, "reload": token}
        assert _workers_answering(srv.url, want, pids, time.monotonic() + 60)
        for _ in range(6):  # several connections, every one on the new catalogue
            with httpx.Client(base_url=srv.url, timeout=30) as c:
                assert c.get("/items/new-arrival").status_code == 200
                assert c.get("/items/synthetic-000005").status_code == 404
                top = c.post("/query?k=3", content=photo).json()["results"]
                assert "synthetic-000005" not in [r["id"] for r in top]
    finally:
        rc = srv.stop()
    assert rc == 0
    messages = [json.loads(line).get("message", "") for line in srv.log]
    assert "stopped" in messages
    assert sum("a reload sent to another worker" in m for m in messages) == 1
    assert sum("threads: 3)" in m for m in messages) == 2  # --threads reached both workers
    assert all(KEY not in line for line in srv.log)
    # no worker (nor multiprocessing's resource tracker) outlives the supervisor
    deadline = time.monotonic() + 30
    while any(Path(f"/proc/{pid}").exists() for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in workers if Path(f"/proc/{pid}").exists()]
