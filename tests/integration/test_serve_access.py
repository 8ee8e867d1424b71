"""The optional API key for reads (protect_reads / --protect-reads) and the rate limit per
client (rate_limit, burst / --rate-limit, --burst), with a fake clock: never sleeping."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st

from visualsim import ColorHistogramExtractor, Recommender
from visualsim.errors import ConfigError
from visualsim.serve import create_app
from visualsim.serve.app import BACKOFF_FREE
from visualsim.serve.middleware import (
    BackoffMiddleware,
    RateLimiter,
    RefusalBackoff,
    counts_as_refusal,
)
from visualsim.serve.server import build_parser, parse_rate, serve_from_args

KEY = "s3cret-key-123"
AUTH = {"Authorization": f"Bearer {KEY}"}
READS = ["/items", "/items/a", "/items/a/similar", "/fields", "/metrics", "/", "/docs"]


def make_rec() -> Recommender:
    ext = ColorHistogramExtractor()
    return Recommender(ext).add_vectors(
        np.random.default_rng(0).random((3, ext.dim)), ["a", "b", "c"], [{"c": "r"}] * 3
    )


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# -- the API key for reads ---------------------------------------------------------------
def test_protected_reads_need_the_key_and_health_does_not() -> None:
    client = TestClient(create_app(make_rec(), api_key=KEY, protect_reads=True, warm=False))
    for path in READS:
        r = client.get(path)
        assert r.status_code == 401, path
        assert r.headers["www-authenticate"] == "Bearer"
        assert KEY not in r.text
        assert client.get(path, headers={"Authorization": "Bearer wrong-key-1"}).status_code == 401
        assert client.get(path, headers=AUTH).status_code == 200, path
    assert client.get("/static/app.js").status_code == 401
    assert client.get("/static/app.js", headers=AUTH).status_code == 200
    assert client.get("/no/such/route").status_code == 401  # no route is learnt without the key
    assert client.get("/health").status_code == 200
    r = client.put("/items/a", json={"metadata": {"c": "g"}})  # writes: the key as before
    assert r.status_code == 401


def test_reads_are_open_by_default_even_with_a_key() -> None:
    client = TestClient(create_app(make_rec(), api_key=KEY, warm=False))
    for path in READS:
        assert client.get(path).status_code == 200, path


def test_protect_reads_needs_a_key() -> None:
    with pytest.raises(ConfigError, match="protect_reads"):
        create_app(make_rec(), protect_reads=True, warm=False)
    with pytest.raises(ConfigError, match="protect_reads"):
        create_app(make_rec(), api_key=KEY, protect_reads="yes", warm=False)  # type: ignore[arg-type]


# -- the rate limit ------------------------------------------------------------------------
def test_a_client_past_its_burst_gets_429_with_retry_after_then_recovers() -> None:
    clock = Clock()
    client = TestClient(create_app(make_rec(), rate_limit=2, burst=3, clock=clock, warm=False))
    assert [client.get("/items/a").status_code for _ in range(3)] == [200, 200, 200]
    r = client.get("/items/a")
    assert r.status_code == 429
    assert r.headers["retry-after"] == "1"  # half a second to the next token, rounded up
    assert "too many requests" in r.json()["detail"]
    assert client.get("/health").status_code == 200  # probes are never limited
    clock.now += 0.5  # one token back (2/s)
    assert client.get("/items/a").status_code == 200
    assert client.get("/items/a").status_code == 429
    clock.now += 10  # refills to the burst, not beyond
    assert [client.get("/fields").status_code for _ in range(4)] == [200, 200, 200, 429]


def test_clients_have_their_own_buckets() -> None:
    clock = Clock()
    app = create_app(make_rec(), rate_limit=1, burst=1, clock=clock, warm=False)
    one = TestClient(app, client=("10.0.0.1", 5000))
    two = TestClient(app, client=("10.0.0.2", 5000))
    assert one.get("/items").status_code == 200
    assert one.get("/items").status_code == 429
    assert two.get("/items").status_code == 200


def test_the_limit_is_off_by_default() -> None:
    client = TestClient(create_app(make_rec(), warm=False))
    assert all(client.get("/items/a").status_code == 200 for _ in range(50))


def test_tracked_clients_are_bounded_and_the_least_recently_seen_is_forgotten() -> None:
    clock = Clock()
    limiter = RateLimiter(1.0, 1, max_clients=3, clock=clock)
    for name in ("a", "b", "c"):
        assert limiter.take(name) == 0.0
    assert limiter.take("a") > 0  # a seen again: now the most recent
    assert limiter.take("d") == 0.0  # evicts b, the least recently seen
    assert len(limiter) == 3
    assert limiter.take("c") > 0  # c still tracked, still empty
    assert limiter.take("b") == 0.0  # b was forgotten: a full bucket again
    for i in range(1000):
        limiter.take(f"10.0.{i // 256}.{i % 256}")
    assert len(limiter) == 3


def test_bad_rate_options_are_refused_naming_them(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="rate_limit"):
        create_app(make_rec(), rate_limit=0, warm=False)
    with pytest.raises(ConfigError, match="burst"):
        create_app(make_rec(), rate_limit=1, burst=0, warm=False)
    with pytest.raises(ConfigError, match="burst"):
        create_app(make_rec(), burst=5, warm=False)
    assert parse_rate("5/s") == 5.0 and parse_rate("0.25") == 0.25
    for bad in ("fast", "0/s", "-1", "nan", "inf/s"):
        with pytest.raises(ConfigError, match="--rate-limit"):
            parse_rate(bad)
    parser = build_parser()
    with pytest.raises(ConfigError, match="--burst needs --rate-limit"):
        serve_from_args(parser.parse_args([str(tmp_path), "--burst", "3"]))
    with pytest.raises(ConfigError, match="--protect-reads needs --api-key-env"):
        serve_from_args(parser.parse_args([str(tmp_path), "--protect-reads"]))
    args = parser.parse_args([str(tmp_path), "--rate-limit", "5/s", "--burst", "10"])
    assert (args.rate_limit, args.burst, args.protect_reads) == ("5/s", 10, False)


def test_refused_requests_are_counted_in_metrics() -> None:
    clock = Clock()
    app = create_app(
        make_rec(), api_key=KEY, protect_reads=True, rate_limit=1, burst=2, clock=clock, warm=False
    )
    client = TestClient(app)
    assert client.get("/items").status_code == 401
    assert client.get("/items").status_code == 401
    assert client.get("/items").status_code == 429  # the limit comes first, key or not
    clock.now += 1
    text = client.get("/metrics", headers=AUTH).text
    assert 'visualsim_refused_total{reason="no_key"} 2' in text
    assert 'visualsim_refused_total{reason="rate_limit"} 1' in text


def test_worker_processes_get_the_same_options(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from visualsim.serve.server import WORKER_ENV, worker_app

    folder = tmp_path / "cat"
    make_rec().save(folder)
    monkeypatch.setenv("READ_KEY_FOR_TEST", KEY)
    options = {
        "catalog": str(folder),
        "api_key_env": "READ_KEY_FOR_TEST",
        "max_upload_bytes": 1_000_000,
        "workers": 2,
        "reload_signal": str(tmp_path / "generation"),
        "protect_reads": True,
        "rate_limit": 1.0,
        "burst": 1,
    }
    monkeypatch.setenv(WORKER_ENV, json.dumps(options))
    app = worker_app()
    assert any(m.cls is BackoffMiddleware for m in app.user_middleware)  # on by default
    client = TestClient(app)
    assert client.get("/items").status_code == 401
    assert client.get("/items", headers=AUTH).status_code == 429  # its one token was taken
    monkeypatch.setenv(WORKER_ENV, json.dumps({**options, "refusal_backoff": 0}))
    assert not any(m.cls is BackoffMiddleware for m in worker_app().user_middleware)


# -- the refusal back-off ------------------------------------------------------------------
def held(client: TestClient) -> int:
    """The app's count of requests the back-off held (from /metrics, with the key)."""
    for line in client.get("/metrics", headers=AUTH).text.splitlines():
        if line.startswith("visualsim_backoff_held_total "):
            return int(line.split()[1])
    raise AssertionError("no visualsim_backoff_held_total in /metrics")


def test_a_client_whose_requests_keep_being_refused_is_held_and_no_one_else() -> None:
    clock = Clock()
    app = create_app(make_rec(), api_key=KEY, refusal_backoff=0.02, clock=clock, warm=False)
    bad = TestClient(app, client=("10.0.0.1", 5000))
    other = TestClient(app, client=("10.0.0.2", 5000))
    for _ in range(BACKOFF_FREE + 1):  # until the count passes BACKOFF_FREE: never held
        assert bad.get("/items/a/similar", params={"k": 0}).status_code == 422
    assert held(bad) == 0
    assert bad.get("/items/a").status_code == 200  # held, then answered as usual
    assert held(bad) == 1
    assert other.get("/items/a").status_code == 200  # another address: not held
    assert other.get("/health").status_code == 200
    assert bad.get("/health").status_code == 200  # probes are exempt
    assert held(bad) == 1
    for _ in range(30):  # the operator's own requests: neither held nor counted
        assert bad.get("/items/a/similar", params={"k": 0}, headers=AUTH).status_code == 422
    assert held(bad) == 1
    assert bad.get("/items/b").status_code == 200
    assert held(bad) == 2
    clock.now += 60  # the count fades
    assert bad.get("/items/b").status_code == 200
    assert held(bad) == 2


def test_not_found_does_not_count_and_zero_turns_the_back_off_off() -> None:
    client = TestClient(create_app(make_rec(), api_key=KEY, warm=False))
    for _ in range(40):
        assert client.get("/items/nope").status_code == 404
    assert held(client) == 0
    off = create_app(make_rec(), api_key=KEY, refusal_backoff=0, warm=False)
    assert not any(m.cls is BackoffMiddleware for m in off.user_middleware)
    client = TestClient(off)
    for _ in range(40):
        assert client.get("/items/a/similar", params={"k": 0}).status_code == 422
    assert held(client) == 0


def test_the_wait_grows_with_refusals_up_to_its_cap_and_fades() -> None:
    clock = Clock()
    backoff = RefusalBackoff(free=3, step=0.1, max_delay=0.5, window=10.0, clock=clock)
    waits = []
    for _ in range(12):
        backoff.refused("a")
        waits.append(backoff.delay("a"))
    assert waits[:2] == [0.0, 0.0]
    assert waits == sorted(waits) and waits[-1] == 0.5
    assert waits[4] == pytest.approx(0.2)  # 5 refusals, 3 free: 2 steps
    clock.now += 10  # one time constant: the count of 12 is 12 / e = 4.4
    assert backoff.delay("a") == pytest.approx(0.1 * (12 / np.e - 3))
    assert backoff.delay("b") == 0.0


def test_remembered_clients_are_bounded() -> None:
    backoff = RefusalBackoff(free=0, max_clients=3, clock=Clock())
    for i in range(1000):
        backoff.refused(f"10.0.{i // 256}.{i % 256}")
    assert len(backoff) == 3
    assert backoff.delay("10.0.3.231") > 0  # the last one, kept
    assert backoff.delay("10.0.0.0") == 0.0  # the first one, forgotten


@given(
    events=st.lists(st.tuples(st.floats(0, 30, allow_nan=False), st.booleans()), max_size=60),
    free=st.integers(0, 10),
    cap=st.floats(0.01, 5, allow_nan=False),
)
def test_the_wait_is_never_negative_nor_past_its_cap(
    events: list[tuple[float, bool]], free: int, cap: float
) -> None:
    clock = Clock()
    backoff = RefusalBackoff(free=free, step=0.05, max_delay=cap, clock=clock)
    refusals = 0
    for dt, refused in events:
        clock.now += dt
        before = backoff.delay("c")
        if refused:
            refusals += 1
            backoff.refused("c")
            assert backoff.delay("c") >= before  # a refusal never shortens the wait
        wait = backoff.delay("c")
        assert 0.0 <= wait <= cap
        if refusals <= free:
            assert wait == 0.0


def test_which_answers_count_against_a_client() -> None:
    assert [counts_as_refusal(s) for s in (200, 301, 400, 401, 404, 413, 429, 500)] == [
        False,
        False,
        True,
        True,
        False,
        True,
        True,
        False,
    ]


def test_a_bad_back_off_option_is_refused_naming_it(tmp_path: Path) -> None:
    for bad in (-1, float("nan"), "1"):
        with pytest.raises(ConfigError, match="refusal_backoff"):
            create_app(make_rec(), refusal_backoff=bad, warm=False)  # type: ignore[arg-type]
    parser = build_parser()
    (tmp_path / "cat").mkdir()
    with pytest.raises(ConfigError, match="--refusal-backoff"):
        serve_from_args(parser.parse_args([str(tmp_path / "cat"), "--refusal-backoff", "-1"]))
    assert parser.parse_args([str(tmp_path), "--refusal-backoff", "0"]).refusal_backoff == 0.0
