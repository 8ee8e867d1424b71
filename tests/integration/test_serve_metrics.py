"""GET /metrics: Prometheus text, labelled by route templates, counting exactly what was asked."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from visualsim import ColorHistogramExtractor, Recommender
from visualsim.serve import create_app
from visualsim.serve.metrics import LATENCY_BUCKETS, Metrics, escape_label

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\\\|\\"|\\n)*"'
_SAMPLE = re.compile(rf"^({_NAME})(?:\{{((?:{_LABEL})(?:,{_LABEL})*)\}})? (\S+)$")
_LABEL_PAIR = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\\\|\\"|\\n)*)"')


def parse(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """The samples of an exposition text; fails on any line the format does not allow."""
    assert text.endswith("\n")
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    types: dict[str, str] = {}
    for line in text[:-1].split("\n"):
        if line.startswith("# HELP "):
            assert re.match(rf"^# HELP {_NAME} .+$", line), line
            continue
        if line.startswith("# TYPE "):
            m = re.match(rf"^# TYPE ({_NAME}) (counter|gauge|histogram|summary|untyped)$", line)
            assert m, line
            types[m.group(1)] = m.group(2)
            continue
        m = _SAMPLE.match(line)
        assert m, f"not a sample line: {line!r}"
        name, labels, value = m.groups()
        family = re.sub(r"_(bucket|sum|count)$", "", name)
        assert name in types or family in types, f"{name} has no TYPE line"
        pairs = frozenset(_LABEL_PAIR.findall(labels or ""))
        key = (name, pairs)
        assert key not in samples, f"duplicate sample {line!r}"
        samples[key] = float(value)
    return samples


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture()
def client() -> TestClient:
    ext = ColorHistogramExtractor()
    rec = Recommender(ext).add_vectors(
        np.random.default_rng(0).random((4, ext.dim)), ["a", "b", "c", "d"], [{"c": "r"}] * 4
    )
    return TestClient(create_app(rec, warm=False))


def scrape(client: TestClient) -> dict:
    r = client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse(r.text)


def test_counts_move_by_exactly_the_requests_made(client: TestClient) -> None:
    before = scrape(client)
    for _ in range(3):
        assert client.get("/items/a").status_code == 200
    assert client.get("/items/nope").status_code == 404
    assert client.get("/items/b/similar").status_code == 200
    assert client.get("/health").status_code == 200
    after = scrape(client)
    req = "visualsim_requests_total"
    item = {"route": "/items/{item_id}", "method": "GET"}
    assert value(after, req, **item, status="2xx") - value(before, req, **item, status="2xx") == 3
    assert value(after, req, **item, status="4xx") - value(before, req, **item, status="4xx") == 1
    sim = {"route": "/items/{item_id}/similar", "method": "GET", "status": "2xx"}
    assert value(after, req, **sim) - value(before, req, **sim) == 1
    health = {"route": "/health", "method": "GET", "status": "2xx"}
    assert value(after, req, **health) - value(before, req, **health) == 1
    # the first scrape itself was counted once it had answered
    scrapes = {"route": "/metrics", "method": "GET", "status": "2xx"}
    assert value(after, req, **scrapes) - value(before, req, **scrapes) == 1


def test_histogram_count_equals_the_requests_and_buckets_are_cumulative(
    client: TestClient,
) -> None:
    for _ in range(5):
        client.get("/items/c")
    client.get("/items/zzz")
    samples = scrape(client)
    route = {"route": "/items/{item_id}"}
    count = value(samples, "visualsim_request_duration_seconds_count", **route)
    assert count == 6
    buckets = [
        value(samples, "visualsim_request_duration_seconds_bucket", **route, le=repr(float(b)))
        for b in LATENCY_BUCKETS
    ]
    inf = value(samples, "visualsim_request_duration_seconds_bucket", **route, le="+Inf")
    assert buckets == sorted(buckets) and inf == count
    assert value(samples, "visualsim_request_duration_seconds_sum", **route) > 0


def test_gauges_catalogue_size_and_model_queue(client: TestClient) -> None:
    buf = io.BytesIO()
    Image.fromarray(np.full((32, 32, 3), 200, np.uint8)).save(buf, "PNG")
    assert client.post("/query", files={"image": ("x.png", buf.getvalue())}).status_code == 200
    samples = scrape(client)
    assert value(samples, "visualsim_catalogue_items") == 4
    assert ("visualsim_model_queue", frozenset()) in samples
    assert value(samples, "visualsim_model_queue") == 0  # nothing left waiting
    assert value(samples, "visualsim_model_in_flight") == 0
    assert value(samples, "visualsim_reloads_total") == 0
    q = {"route": "/query", "method": "POST", "status": "2xx"}
    assert value(samples, "visualsim_requests_total", **q) == 1


@pytest.mark.parametrize("item_id", ['evil"} 1\nfake_metric 9', "a\nb", 'q"uote', "x\\y"])
def test_an_id_never_reaches_the_text(client: TestClient, item_id: str) -> None:
    from urllib.parse import quote

    client.get("/items/" + quote(item_id, safe=""))
    client.get("/items/" + quote(item_id, safe="") + "/similar")
    client.get("/no/such/" + quote(item_id, safe=""))
    text = client.get("/metrics").text
    assert item_id not in text and "fake_metric" not in text and "uote" not in text
    samples = parse(text)  # still valid, line by line
    unmatched = {"route": "<unmatched>", "method": "GET", "status": "4xx"}
    assert value(samples, "visualsim_requests_total", **unmatched) == 1


def test_label_values_are_escaped_and_counters_are_thread_safe() -> None:
    import threading

    m = Metrics()

    def hammer() -> None:
        for _ in range(1000):
            m.observe('/odd"\n\\', "BREW", 299, 0.02)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    samples = parse(m.render(0))
    route = escape_label('/odd"\n\\')
    assert value(
        samples, "visualsim_requests_total", route=route, method="OTHER", status="2xx"
    ) == (4000)
    assert value(samples, "visualsim_request_duration_seconds_count", route=route) == 4000


def test_queue_and_in_flight_gauges_follow_the_model_work() -> None:
    import asyncio
    import threading

    ext = ColorHistogramExtractor()
    rec = Recommender(ext).add_vectors(np.eye(2, ext.dim), ["a", "b"])
    state = create_app(rec, warm=False, threads=1).state.visualsim
    release = threading.Event()
    started = threading.Event()

    def busy() -> int:
        started.set()
        assert release.wait(30)
        return 1

    async def scenario() -> tuple[str, str, list[int]]:
        first = asyncio.create_task(state.compute(busy))
        second = asyncio.create_task(state.compute(lambda: 2))
        while not started.is_set() or state.metrics.queue_waiting < 1:
            await asyncio.sleep(0)
        during = state.metrics.render(2)
        release.set()
        results = [await first, await second]
        return during, state.metrics.render(2), results

    during, after, results = asyncio.run(scenario())
    assert results == [1, 2]
    assert value(parse(during), "visualsim_model_in_flight") == 1
    assert value(parse(during), "visualsim_model_queue") == 1
    assert value(parse(after), "visualsim_model_in_flight") == 0
    assert value(parse(after), "visualsim_model_queue") == 0
    state.close_pool()
