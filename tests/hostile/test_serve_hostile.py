"""The HTTP app against a hostile client: pixel bombs, deep JSON, route confusion, aborted
uploads, framing. Loopback only; each test bounded in requests and time."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from support import uvicorn_in_thread
from visualsim import ColorHistogramExtractor, Recommender
from visualsim.serve import create_app
from visualsim.serve.app import MAX_JSON_DEPTH, MAX_PIXELS, parse_json
from visualsim.serve.server import build_parser

KEY = "hostile-test-key-0123"
AUTH = {"Authorization": f"Bearer {KEY}"}


def make_rec(ids: list[Any]) -> Recommender:
    ext = ColorHistogramExtractor()
    vecs = np.random.default_rng(len(ids)).random((len(ids), ext.dim))
    return Recommender(ext).add_vectors(vecs, ids, [{"colour": "red"} for _ in ids])


def encoded(item_id: str) -> str:
    """An id as one path segment: every character but unreserved ones escaped, dots too."""
    return urllib.parse.quote(item_id, safe="").replace(".", "%2E")


def image_bytes(size: tuple[int, int], fmt: str, mode: str = "L") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, 200).save(buf, fmt)
    return buf.getvalue()


@contextlib.contextmanager
def live_client(app: Any) -> Iterator[httpx.Client]:
    """An httpx client of ``app`` served by uvicorn on loopback."""
    with uvicorn_in_thread(app) as url, httpx.Client(base_url=url, timeout=10) as client:
        yield client


class Records(logging.Handler):
    """Collects the records of the loggers it is attached to."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def collected(*names: str) -> Iterator[Records]:
    handler = Records()
    loggers = [logging.getLogger(n) for n in names]
    levels = [log.level for log in loggers]
    for log in loggers:
        log.addHandler(handler)
        log.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        for log, level in zip(loggers, levels, strict=True):
            log.removeHandler(handler)
            log.setLevel(level)


# -- 1. pixel budget, checked from the header ------------------------------------------------
def test_a_small_png_claiming_25_megapixels_is_refused_from_its_header() -> None:
    bomb = image_bytes((5000, 5000), "PNG")  # 25 MP of one grey: a few tens of KiB
    assert len(bomb) < 100_000
    with TestClient(create_app(make_rec(["a", "b"]), warm=False)) as c:
        r = c.post("/query", content=bomb, headers={"content-type": "image/png"})
        assert r.status_code == 422
        detail = r.json()["detail"]
        assert "5000x5000 = 25,000,000 pixels" in detail
        assert f"limit of {MAX_PIXELS:,}" in detail and "before decoding" in detail
        assert "Traceback" not in detail and "max_bytes" not in detail
        # the same as a multipart field; and a photo within the budget is searched
        files = {"image": ("b.png", bomb, "image/png")}
        assert c.post("/query", files=files).status_code == 422
        small = image_bytes((300, 200), "PNG", "RGB")
        assert c.post("/query?k=1", content=small).status_code == 200


def test_a_big_jpeg_counts_at_the_scale_draft_mode_decodes_it() -> None:
    photo = image_bytes((3000, 2000), "JPEG", "RGB")  # 6 MP: over 4 MP, but decoded at 1/8
    with TestClient(create_app(make_rec(["a", "b"]), warm=False)) as c:
        assert c.post("/query?k=1", content=photo).status_code == 200
    png = image_bytes((3000, 2000), "PNG")  # no draft mode for PNG: its 6 MP count
    with TestClient(create_app(make_rec(["a", "b"]), warm=False)) as c:
        assert c.post("/query?k=1", content=png).status_code == 422


def test_the_pixel_budget_is_configurable() -> None:
    img = image_bytes((1000, 1000), "PNG", "RGB")
    with TestClient(create_app(make_rec(["a"]), warm=False, max_pixels=500_000)) as c:
        r = c.post("/query", content=img)
        assert r.status_code == 422 and "limit of 500,000" in r.json()["detail"]
    args = build_parser().parse_args(["cat", "--max-megapixels", "2.5"])
    assert args.max_megapixels == 2.5
    assert build_parser().parse_args(["cat"]).max_megapixels == MAX_PIXELS / 1e6


def test_an_rgba_image_is_bounded_by_the_memory_its_mode_takes() -> None:
    # 16-bit greyscale takes more memory a pixel than RGBA: refused under the pixel budget
    img = image_bytes((1000, 900), "PNG", "I;16")
    with TestClient(create_app(make_rec(["a"]), warm=False, max_pixels=1_000_000)) as c:
        r = c.post("/query", content=img)
        assert r.status_code == 422 and "colour mode" in r.json()["detail"]
        rgba = image_bytes((1000, 900), "PNG", "RGBA")
        assert c.post("/query?k=1", content=rgba).status_code == 200


# -- 2. deeply nested JSON -------------------------------------------------------------------
def test_deeply_nested_json_is_a_400_not_a_500() -> None:
    with TestClient(
        create_app(make_rec(["a"]), api_key=KEY, warm=False), raise_server_exceptions=False
    ) as c:
        deep = "[" * 100_000 + "]" * 100_000
        body = '{"metadata": {"x": ' + deep + "}}"
        r = c.put("/items/a", content=body, headers={**AUTH, "content-type": "application/json"})
        assert r.status_code == 400
        assert f"deeper than {MAX_JSON_DEPTH} levels" in r.json()["detail"]
        meta = '{"x": ' + "[" * 20_000 + "]" * 20_000 + "}"
        files = {"image": ("a.png", image_bytes((8, 8), "PNG"), "image/png")}
        r = c.put("/items/a", data={"metadata": meta}, files=files, headers=AUTH)
        assert r.status_code == 400 and "'metadata' field" in r.json()["detail"]
        r = c.post("/items", data={"id": "n", "metadata": meta}, files=files, headers=AUTH)
        assert r.status_code == 400
        # just too deep for the limit (but not for Python's parser) is refused the same way
        meta = '{"x": ' + "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH + "}"
        r = c.put("/items/a", json={"metadata": json.loads(meta)}, headers=AUTH)
        assert r.status_code == 400
        ok = {"metadata": {"x": [[1, {"y": [2]}]]}}
        assert c.put("/items/a", json=ok, headers=AUTH).status_code == 200


def test_parse_json_counts_depth_without_recursion() -> None:
    assert parse_json("3", "x") == 3
    assert parse_json(b'{"a": [{"b": []}]}', "x", max_depth=4) == {"a": [{"b": []}]}
    with pytest.raises(Exception, match="deeper than 3 levels"):
        parse_json('{"a": [{"b": []}]}', "x", max_depth=3)


# -- 3. ids in URLs --------------------------------------------------------------------------
def test_an_encoded_slash_never_reaches_another_route() -> None:
    with live_client(create_app(make_rec(["s1", "s2", "x\ny"]), warm=False)) as c:
        r = c.get("/items/s1%2Fimage")
        assert r.status_code == 404 and r.json()["detail"] == (
            "no item with id 's1/image' in the catalogue"
        )
        r = c.get("/items/s2%2Fsimilar")
        assert r.status_code == 404 and "'s2/similar'" in r.json()["detail"]
        assert c.get("/items/x%0Ay").json()["id"] == "x\ny"
        r = c.get("/items/x%0Ay/similar", params={"k": 1})
        assert r.status_code == 200 and r.json()["id"] == "x\ny"
    with live_client(create_app(make_rec(["s1", "s1/image", "a%41"]), warm=False)) as c:
        assert c.get("/items/s1%2Fimage").json()["id"] == "s1/image"
        assert c.get("/items/s1%2Fimage/similar?k=1").json()["id"] == "s1/image"
        assert c.get("/items/a%2541").json()["id"] == "a%41"  # decoded once, not twice
        assert c.get("/items/s1/similar?k=1").json()["id"] == "s1"


def test_any_id_round_trips_through_its_url() -> None:
    rec = make_rec(["seed"])
    ext = rec.extractor_
    ids = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12)

    with live_client(create_app(rec, warm=False)) as c:

        @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
        @given(item_id=ids)
        def check(item_id: str) -> None:
            if item_id not in rec:
                rec.add_vectors(np.ones((1, ext.dim)), [item_id], [{"colour": "blue"}])
            r = c.get(f"/items/{encoded(item_id)}")
            assert r.status_code == 200, (item_id, r.text)
            assert r.json()["id"] == item_id
            r = c.get(f"/items/{encoded(item_id)}/similar", params={"k": 1})
            assert r.status_code == 200 and r.json()["id"] == item_id

        check()


def test_a_mounted_app_routes_encoded_ids_too() -> None:
    from fastapi import FastAPI

    shop = FastAPI()
    shop.mount("/visual", create_app(make_rec(["s1", "a/b"]), warm=False))
    with live_client(shop) as c:
        assert c.get("/visual/items/a%2Fb").json()["id"] == "a/b"
        assert c.get("/visual/items/s1%2Fimage").status_code == 404
        assert c.get("/visual/items/s1%2Fsimilar").status_code == 404
        assert c.get("/visual/items/s1/similar?k=1").json()["id"] == "s1"


# -- 4. aborted uploads ----------------------------------------------------------------------
def test_an_aborted_upload_is_one_line_not_a_500_with_tracebacks() -> None:
    names = ("visualsim.serve", "visualsim.serve.access", "uvicorn.error")
    with collected(*names) as log, uvicorn_in_thread(create_app(make_rec(["a"]))) as url:
        port = int(url.rsplit(":", 1)[1])
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(
                    b"POST /query HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                    b"Content-Length: 100000\r\n\r\n" + b"\x89PNG" + b"0" * 2000
                )
                time.sleep(0.05)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if sum("went away" in r.getMessage() for r in log.records) >= 3:
                break
            time.sleep(0.05)
        time.sleep(0.2)
        records = list(log.records)
    went = [r for r in records if "went away" in r.getMessage()]
    assert len(went) == 3 and all(r.levelno == logging.INFO for r in went)
    assert not [r for r in records if r.exc_info or r.levelno >= logging.ERROR]
    access = [json.loads(r.getMessage()) for r in records if r.name == "visualsim.serve.access"]
    assert access and all(a["status"] != 500 for a in access)


# -- 5. framing and the API docs -------------------------------------------------------------
def test_no_answer_may_be_framed_and_docs_load_no_third_party_script() -> None:
    with TestClient(create_app(make_rec(["a"]), warm=False)) as c:
        for path in ("/", "/health", "/items/a", "/docs", "/items/nope"):
            r = c.get(path)
            assert "frame-ancestors 'none'" in r.headers["content-security-policy"], path
            assert r.headers["x-frame-options"] == "DENY", path
        page = c.get("/docs")
        assert page.status_code == 200
        assert "https://" not in page.text and "cdn" not in page.text.lower()
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert '<script src="static/docs.js"' in page.text
        assert c.get("/static/docs.js").status_code == 200
        assert c.get("/redoc").status_code == 404
        assert "/items/{item_id}" in c.get("/openapi.json").json()["paths"]


# -- 6. bounded wait for the model -----------------------------------------------------------
class BlockingExtractor(ColorHistogramExtractor):
    """Colour histograms that wait for a signal: a stand-in for a slow model."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()

    def _embed(self, batch: np.ndarray) -> np.ndarray:
        self.entered.set()
        assert self.release.wait(30), "never released"
        return super()._embed(batch)


def test_a_request_that_waits_too_long_for_the_model_is_503_with_retry_after() -> None:
    ext = BlockingExtractor()
    rec = Recommender(ext).add_vectors(np.eye(2, ext.dim), ["a", "b"])
    photo = image_bytes((32, 32), "PNG", "RGB")
    app = create_app(rec, warm=False, threads=1, queue_timeout=0.3)
    with live_client(app) as c, ThreadPoolExecutor(1) as pool:
        first = pool.submit(c.post, "/query?k=1", content=photo)
        try:
            assert ext.entered.wait(10), "the first query never reached the model"
            t0 = time.monotonic()
            r = c.post("/query?k=1", content=photo, timeout=5)
            assert r.status_code == 503 and time.monotonic() - t0 < 4
            assert int(r.headers["retry-after"]) >= 1
            assert "busy" in r.json()["detail"]
            assert c.get("/health").status_code == 200  # not behind the model
        finally:
            ext.release.set()
        assert first.result(10).status_code == 200
        assert c.post("/query?k=1", content=photo).status_code == 200  # the slot came back
    with pytest.raises(Exception, match="queue_timeout"):
        create_app(rec, warm=False, queue_timeout=0)


# -- 6b. pixel bombs and big uploads cannot starve a normal search --------------------------
class GateExtractor(ColorHistogramExtractor):
    """Colour histograms that hold every image bigger than 64 px a side until released (a big
    upload arrives reduced towards the extractor's 96 px, about 100 px; a small one stays 32)."""

    def __init__(self) -> None:
        super().__init__()
        self.held = threading.Semaphore(0)
        self.release = threading.Event()

    def extract(self, images: Any, **kwargs: Any) -> np.ndarray:
        images = list(images)
        if any(getattr(im, "shape", (0,))[0] > 64 for im in images):
            self.held.release()
            assert self.release.wait(30), "never released"
        return super().extract(images, **kwargs)


def test_a_pixel_bomb_is_refused_without_waiting_for_a_model_thread() -> None:
    ext = BlockingExtractor()
    rec = Recommender(ext).add_vectors(np.eye(2, ext.dim), ["a", "b"])
    bomb = image_bytes((5000, 5000), "PNG", "RGB")  # 25 MP in a few KiB
    app = create_app(rec, warm=False, threads=1, queue_timeout=30)
    with live_client(app) as c, ThreadPoolExecutor(1) as pool:
        busy = pool.submit(c.post, "/query?k=1", content=image_bytes((32, 32), "PNG", "RGB"))
        try:
            assert ext.entered.wait(10), "the first query never reached the model"
            t0 = time.monotonic()  # the one model thread is taken: the bomb needs none
            r = c.post("/query?k=1", content=bomb, timeout=5)
            assert r.status_code == 422 and time.monotonic() - t0 < 3
            assert "refused from its header" in r.json()["detail"]
        finally:
            ext.release.set()
        assert busy.result(10).status_code == 200


def png_with_chunks(n: int) -> bytes:
    """A valid 8x8 PNG with ``n`` empty ancillary chunks between its header and pixels."""
    import struct
    import zlib

    data = image_bytes((8, 8), "PNG", "RGB")
    empty = struct.pack(">I", 0) + b"zzZz" + struct.pack(">I", zlib.crc32(b"zzZz"))
    return data[:33] + empty * n + data[33:]


def jpeg_with_segments(n: int) -> bytes:
    """A valid 8x8 JPEG with ``n`` short comment segments before its frame header."""
    data = image_bytes((8, 8), "JPEG", "RGB")
    return data[:2] + b"\xff\xfe\x00\x03x" * n + data[2:]


def test_an_image_header_of_endless_chunks_is_refused_at_once_without_blocking() -> None:
    from visualsim.serve.uploads import MAX_HEADER_SEGMENTS, header_size

    app = create_app(make_rec(["a"]), warm=False)
    flood = png_with_chunks(200_000)  # 2.3 MiB: seconds of header parsing in Pillow
    with live_client(app) as c:
        for bad in (flood, jpeg_with_segments(MAX_HEADER_SEGMENTS + 1)):
            t0 = time.monotonic()
            r = c.post("/query?k=1", content=bad)
            assert r.status_code == 422 and time.monotonic() - t0 < 1
            assert "before its pixels" in r.json()["detail"]
        for fine in (png_with_chunks(100), jpeg_with_segments(100)):  # a photo's few dozen
            assert c.post("/query?k=1", content=fine).status_code == 200
    assert header_size(png_with_chunks(5)) == ("PNG", 8, 8)
    assert header_size(jpeg_with_segments(5)) == ("JPEG", 8, 8)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_the_early_refusal_agrees_with_the_decoder(fmt: str) -> None:
    from visualsim.errors import ImageLoadError
    from visualsim.serve.uploads import decode_upload, header_size, screen_upload

    budget, draft = 10_000, (16, 16)
    for mode in ("RGB", "L", "CMYK") if fmt == "JPEG" else ("RGB", "L", "RGBA"):
        for size in ((100, 100), (101, 99), (120, 90), (400, 100), (800, 800), (801, 799)):
            data = image_bytes(size, fmt, mode)
            assert header_size(data) == (fmt, *size)
            try:
                decode_upload(data, draft, budget)
                decoded = True
            except ImageLoadError:
                decoded = False
            try:
                screen_upload(data, draft, budget)
                screened = True
            except ImageLoadError as exc:
                screened = False
                assert exc.too_large  # type: ignore[attr-defined]
            # refused early only what the decoder refuses too
            assert decoded or not screened, (mode, size)
            if not decoded and fmt == "PNG" and mode != "RGBA":
                assert not screened, (mode, size)  # and a plain PNG always early


def test_big_uploads_leave_a_model_thread_to_a_normal_search() -> None:
    ext = GateExtractor()
    rec = Recommender(ext).add_vectors(np.eye(2, ext.dim), ["a", "b"])
    big = image_bytes((1200, 1200), "PNG", "RGB")  # 1.44 MP decoded: heavy
    small = image_bytes((32, 32), "PNG", "RGB")
    app = create_app(rec, warm=False, threads=2, queue_timeout=30)
    with live_client(app) as c, ThreadPoolExecutor(3) as pool:
        heavy = [pool.submit(c.post, "/query?k=1", content=big, timeout=30) for _ in range(3)]
        try:
            assert ext.held.acquire(timeout=10), "no big upload reached the model"
            time.sleep(0.3)  # the others are queued behind it, for the heavy lane
            assert not ext.held.acquire(timeout=0.2), "two heavy uploads ran at once"
            t0 = time.monotonic()
            r = c.post("/query?k=1", content=small, timeout=5)
            assert r.status_code == 200 and time.monotonic() - t0 < 3
        finally:
            ext.release.set()
        assert [f.result(30).status_code for f in heavy] == [200, 200, 200]


# -- 7. slow and idle clients: header/body timeouts and the connection cap -------------------
@contextlib.contextmanager
def guarded_server(app: Any, **options: Any) -> Iterator[int]:
    """``app`` behind the connection guard (small limits) in a thread; yield its port."""
    import uvicorn

    from visualsim.serve.server import uvicorn_config

    settings: dict[str, Any] = {"header_timeout": 0.5, "body_timeout": 0.5, "keep_alive": 5.0}
    settings.update(max_connections=50, max_connections_per_client=0)  # 0: no per-address cap
    settings.update(options)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(512)
    server = uvicorn.Server(uvicorn_config(app, **settings))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.started, "uvicorn never started"
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


def half_sent(port: int, head: bytes = b"GET /health HTTP/1.1\r\nHost: x\r\n") -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(head)
    return s


def closed_by_server(s: socket.socket, within: float) -> bytes | None:
    """What the server sent before closing ``s`` (None when still open after ``within`` s)."""
    s.settimeout(within)
    got = b""
    try:
        while chunk := s.recv(4096):
            got += chunk
    except TimeoutError:
        return None
    except ConnectionResetError:
        pass
    return got


def get_health(port: int) -> int:
    with httpx.Client(timeout=10) as c:
        return c.get(f"http://127.0.0.1:{port}/health").status_code


def test_a_request_head_that_never_finishes_is_408_and_closed() -> None:
    with guarded_server(create_app(make_rec(["a"]), warm=False)) as port:
        t0 = time.monotonic()
        half = half_sent(port)
        silent = socket.create_connection(("127.0.0.1", port), timeout=10)  # sends nothing
        got = closed_by_server(half, within=8)
        assert got is not None and got.startswith(b"HTTP/1.1 408 "), got
        assert closed_by_server(silent, within=8) == b""  # closed, no answer
        assert 0.4 < time.monotonic() - t0 < 8
        # a slowloris head (a byte at a time) is bounded from its first byte, not per byte
        drip = half_sent(port, b"G")
        t0 = time.monotonic()
        with contextlib.suppress(OSError):
            for ch in b"ET /health HTTP/1.1\r\nHost: x\r\n":
                drip.sendall(bytes([ch]))
                time.sleep(0.05)
        assert closed_by_server(drip, within=8) is not None and time.monotonic() - t0 < 8
        for s in (half, silent, drip):
            s.close()
        assert get_health(port) == 200


def test_a_stalled_body_is_closed_but_a_slow_steady_one_is_not() -> None:
    with guarded_server(create_app(make_rec(["a"]), warm=False), body_timeout=1.0) as port:
        png = image_bytes((16, 16), "PNG", "RGB")
        head = (
            b"POST /query?k=1 HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
            b"Content-Length: %d\r\n\r\n" % len(png)
        )
        stalled = half_sent(port, head + png[:10])
        got = closed_by_server(stalled, within=10)
        assert got is not None and got.startswith(b"HTTP/1.1 408 "), got
        # a body arriving in pieces, each well within the stall limit, goes through
        steady = half_sent(port, head)
        for i in range(0, len(png), len(png) // 4 + 1):
            time.sleep(0.3)
            steady.sendall(png[i : i + len(png) // 4 + 1])
        steady.settimeout(10)
        assert steady.recv(4096).startswith(b"HTTP/1.1 200 ")
        stalled.close()
        steady.close()


def test_more_idle_sockets_than_the_cap_cannot_lock_out_a_real_client() -> None:
    # long timeouts: only the cap can close the idle sockets here
    app = create_app(make_rec(["a"]), warm=False)
    with guarded_server(app, header_timeout=60, max_connections=50) as port:
        idle = [half_sent(port) for _ in range(80)]
        idle += [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(20)]
        try:
            for _ in range(5):
                t0 = time.monotonic()
                assert get_health(port) == 200
                assert time.monotonic() - t0 < 5
            # the oldest ones were closed to admit newer ones, silently, not with a 500
            assert closed_by_server(idle[0], within=5) == b""
            assert closed_by_server(idle[-1], within=0.2) is None  # the newest still open
        finally:
            for s in idle:
                s.close()


def test_a_request_in_flight_is_never_closed_for_the_cap() -> None:
    ext = BlockingExtractor()
    rec = Recommender(ext).add_vectors(np.eye(2, ext.dim), ["a", "b"])
    photo = image_bytes((32, 32), "PNG", "RGB")
    app = create_app(rec, warm=False, threads=1, queue_timeout=30)
    with guarded_server(app, header_timeout=60, max_connections=5) as port:
        url = f"http://127.0.0.1:{port}"
        with ThreadPoolExecutor(1) as pool, httpx.Client(base_url=url, timeout=30) as c:
            slow = pool.submit(c.post, "/query?k=1", content=photo)
            idle: list[socket.socket] = []
            try:
                assert ext.entered.wait(10), "the query never reached the model"
                idle = [half_sent(port) for _ in range(20)]  # 4 times the cap, while it runs
                time.sleep(0.3)
                assert get_health(port) == 200
            finally:
                ext.release.set()
            assert slow.result(30).status_code == 200
            for s in idle:
                s.close()


def test_a_full_cap_of_requests_in_flight_answers_503_not_500() -> None:
    ext = BlockingExtractor()
    rec = Recommender(ext).add_vectors(np.eye(2, ext.dim), ["a", "b"])
    photo = image_bytes((32, 32), "PNG", "RGB")
    app = create_app(rec, warm=False, threads=2, queue_timeout=30)
    with guarded_server(app, header_timeout=60, max_connections=2) as port:
        url = f"http://127.0.0.1:{port}/query?k=1"
        with ThreadPoolExecutor(2) as pool:
            running = [pool.submit(httpx.post, url, content=photo, timeout=30) for _ in range(2)]
            try:
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:  # both heads in (the model is shared)
                    if ext.entered.is_set():
                        break
                    time.sleep(0.05)
                time.sleep(0.5)
                extra = half_sent(port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                got = closed_by_server(extra, within=10)
                assert got is not None and got.startswith(b"HTTP/1.1 503 "), got
                assert b"retry-after: 1" in got.lower()
                extra.close()
            finally:
                ext.release.set()
            assert [f.result(30).status_code for f in running] == [200, 200]


def body_head(n: int) -> bytes:
    return (
        b"POST /query?k=1 HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
        b"Content-Length: %d\r\n\r\n" % n
    )


def noise_png(side: int) -> bytes:
    pixels = np.random.default_rng(side).integers(0, 256, (side, side, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return buf.getvalue()


def test_a_body_trickled_below_the_minimum_rate_is_408_but_a_slow_steady_one_is_not() -> None:
    # a byte every 0.2 s never stalls (body_timeout 30 s) but averages 5 B/s < 200 B/s
    app = create_app(make_rec(["a"]), warm=False)
    with guarded_server(app, body_timeout=30, min_upload_rate=200, upload_grace=1.0) as port:
        trickle = half_sent(port, body_head(5000))
        t0 = time.monotonic()
        got = None
        with contextlib.suppress(OSError):
            for _ in range(40):
                trickle.sendall(b"\x89")
                trickle.settimeout(0.2)
                with contextlib.suppress(TimeoutError):
                    if chunk := trickle.recv(4096):
                        got = chunk
                        break
        assert got is not None and got.startswith(b"HTTP/1.1 408 "), got
        assert 0.9 < time.monotonic() - t0 < 5  # the grace, then the rate's own allowance
        trickle.close()
        # a slow but steady upload (about 10 KiB/s, 1.5 s in all) is well above the rate
        png = noise_png(64)
        steady = half_sent(port, body_head(len(png)))
        step = len(png) // 5 + 1
        for i in range(0, len(png), step):
            time.sleep(0.3)
            steady.sendall(png[i : i + step])
        steady.settimeout(10)
        assert steady.recv(4096).startswith(b"HTTP/1.1 200 ")
        steady.close()
        assert get_health(port) == 200


def from_address(
    port: int, host: str, head: bytes = b"GET /health HTTP/1.1\r\nHost: x\r\n"
) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(host, 0))
    s.sendall(head)
    return s


def test_one_address_cannot_take_the_whole_connection_cap() -> None:
    app = create_app(make_rec(["a"]), warm=False)
    with guarded_server(
        app, header_timeout=60, max_connections=50, max_connections_per_client=5
    ) as port:
        mine = [from_address(port, "127.0.0.2") for _ in range(30)]  # 6 times its share
        theirs = [from_address(port, "127.0.0.3") for _ in range(3)]
        try:
            # the address's own oldest idle ones were closed, silently; its newest 5 stay
            assert all(closed_by_server(s, within=5) == b"" for s in mine[:25])
            assert all(closed_by_server(s, within=0.1) is None for s in mine[25:])
            # another address is served, and keeps its connections
            with httpx.Client(timeout=10) as c:
                assert c.get(f"http://127.0.0.1:{port}/health").status_code == 200
            assert all(closed_by_server(s, within=0.1) is None for s in theirs)
        finally:
            for s in mine + theirs:
                s.close()


def test_past_its_limit_with_every_request_in_flight_an_address_gets_503_others_200() -> None:
    ext = BlockingExtractor()
    rec = Recommender(ext).add_vectors(np.eye(2, ext.dim), ["a", "b"])
    photo = image_bytes((32, 32), "PNG", "RGB")
    app = create_app(rec, warm=False, threads=1, queue_timeout=30)
    with guarded_server(app, header_timeout=60, max_connections_per_client=2) as port:
        request = body_head(len(photo)) + photo
        busy = [from_address(port, "127.0.0.2", request) for _ in range(2)]  # in flight
        try:
            assert ext.entered.wait(10), "no query reached the model"
            time.sleep(0.3)
            third = from_address(port, "127.0.0.2", b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            got = closed_by_server(third, within=10)
            assert got is not None and got.startswith(b"HTTP/1.1 503 "), got
            assert b"from this address" in got
            third.close()
            with httpx.Client(timeout=10) as c:  # 127.0.0.1: another address
                assert c.get(f"http://127.0.0.1:{port}/health").status_code == 200
        finally:
            ext.release.set()
        for s in busy:
            s.settimeout(10)
            assert s.recv(4096).startswith(b"HTTP/1.1 200 ")
            s.close()


def guarded_protocols() -> list[Any]:
    from visualsim.serve import _connections as guard

    if guard.GuardedHttpToolsProtocol is None:  # what uvicorn's "auto" picks is guarded too
        assert guard.guarded_protocol() is guard.GuardedH11Protocol
    return ["h11", "httptools"]


@pytest.mark.parametrize("http", guarded_protocols())
def test_the_guard_holds_under_h11_and_under_httptools(http: str) -> None:
    from visualsim.serve import _connections as guard

    if http == "httptools":  # visualsim[serve] installs it: uvicorn's "auto" then picks it
        pytest.importorskip("httptools", reason="httptools (visualsim[serve]) is not installed")
        protocol = guard.GuardedHttpToolsProtocol
        assert guard.guarded_protocol() is protocol
    else:
        protocol = guard.GuardedH11Protocol
    app = create_app(make_rec(["a"]), warm=False)
    options = {"http": protocol, "min_upload_rate": 200, "upload_grace": 0.5}
    with guarded_server(app, max_connections_per_client=3, **options) as port:
        half = half_sent(port)  # a head that never ends
        got = closed_by_server(half, within=8)
        assert got is not None and got.startswith(b"HTTP/1.1 408 "), got
        stalled = half_sent(port, body_head(100) + b"\x89PNG")  # a body that stops
        got = closed_by_server(stalled, within=8)
        assert got is not None and got.startswith(b"HTTP/1.1 408 "), got
        idle = [from_address(port, "127.0.0.2") for _ in range(5)]
        assert [closed_by_server(s, within=0.5) for s in idle[:2]] == [b"", b""]
        assert closed_by_server(idle[-1], within=0.1) is None
        png = image_bytes((16, 16), "PNG", "RGB")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
            assert c.get("/health").status_code == 200
            assert c.post("/query?k=1", content=png).status_code == 200  # keep-alive
            assert c.post("/query?k=1", content=png).status_code == 200
        for s in [half, stalled, *idle]:
            s.close()


def test_connection_options_are_validated_with_clear_errors(tmp_path: Path) -> None:
    from visualsim.errors import ConfigError
    from visualsim.serve import run
    from visualsim.serve._connections import default_max_connections, listen_backlog
    from visualsim.serve.server import check_connection_options, serve_from_args

    rec = make_rec(["a"])
    for bad, match in (
        ({"header_timeout": 0}, "header_timeout must be a positive"),
        ({"body_timeout": -1}, "body_timeout must be a positive"),
        ({"keep_alive": float("nan")}, "keep_alive must be a positive"),
        ({"header_timeout": "soon"}, "header_timeout must be a number"),
        ({"max_connections": 0}, "max_connections"),
        ({"max_connections": 10**9}, "open-file limit"),
    ):
        with pytest.raises(ConfigError, match=match):
            run(rec, port=0, **bad)
    # 1,024 files: 64 for the server, 4 x 64 for bursts of new connections (the backlog)
    assert check_connection_options(10, 30, 5, None, 1024) == (10.0, 30.0, 5.0, 704)
    assert listen_backlog(1024, 704) == 64
    assert default_max_connections(100_000) == 1000 and listen_backlog(100_000, 1000) == 2048
    assert check_connection_options(1, 1, 1, 944, 1024)[3] == 944
    with pytest.raises(ConfigError, match="use at most 944"):
        check_connection_options(1, 1, 1, 945, 1024)
    args = build_parser().parse_args(["cat"])
    assert (args.header_timeout, args.body_timeout, args.keep_alive) == (10.0, 30.0, 5.0)
    assert args.max_connections is None
    args = build_parser().parse_args(["cat", "--header-timeout", "2", "--max-connections", "9"])
    assert args.header_timeout == 2.0 and args.max_connections == 9
    for flag, value in (("--body-timeout", "0"), ("--keep-alive", "inf")):
        args = build_parser().parse_args([str(tmp_path), flag, value])
        with pytest.raises(ConfigError, match=f"{flag} must be a positive"):
            serve_from_args(args)
    args = build_parser().parse_args([str(tmp_path), "--max-connections", "-3"])
    with pytest.raises(ConfigError, match="--max-connections"):
        serve_from_args(args)


def test_log_lines_carry_fields_at_the_top_level_not_json_in_a_string() -> None:
    import json as _json
    import logging as _logging

    from visualsim.serve.server import JsonLogFormatter

    record = _logging.LogRecord(
        "visualsim.serve", _logging.INFO, __file__, 1, "listening on %s", ("x",), None
    )
    record.fields = {"event": "listening", "port": 5, "message": "not this"}
    doc = _json.loads(JsonLogFormatter().format(record))
    assert doc["event"] == "listening" and doc["port"] == 5
    assert doc["message"] == "listening on x"  # a field never overwrites the line's own
