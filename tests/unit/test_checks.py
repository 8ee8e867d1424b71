"""One owner per check (issue 24): argument checks live in ``visualsim.validation`` with one
wording each, and every error class carries its HTTP status and CLI exit code, which the
HTTP app and the command line read instead of keeping tables of their own."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from visualsim import ColorHistogramExtractor, Recommender
from visualsim.errors import (
    ConfigError,
    DuplicateIdError,
    FilterError,
    NotFittedError,
    UnknownIdError,
    VisualsimError,
    WhereError,
)
from visualsim.serve import create_app
from visualsim.validation import check_float, check_k

K_WORDING = "k must be an integer >= 1, got "

# every module that defines a VisualsimError subclass, so the walk below sees them all
MODULES = (
    "visualsim.filters",
    "visualsim.serve._adapters",
    "visualsim.safe_unpickle",
    "visualsim.distributed",
    "visualsim.indexes.milvus",
    "visualsim.extractors.openvino",
    "visualsim.cli",
)


def make_rec(n: int = 6) -> Recommender:
    ext = ColorHistogramExtractor()
    vectors = np.random.default_rng(0).random((n, ext.dim), dtype=np.float32)
    metas = [{"category": ["shoes", "bags"][i % 2], "price": i} for i in range(n)]
    return Recommender(ext).add_vectors(vectors, [f"p{i}" for i in range(n)], metas)


def all_subclasses() -> list[type[VisualsimError]]:
    for name in MODULES:
        importlib.import_module(name)
    seen: list[type[VisualsimError]] = []
    todo = [VisualsimError]
    while todo:
        cls = todo.pop()
        seen.append(cls)
        todo.extend(cls.__subclasses__())
    return seen


# -- errors carry their status and exit code ------------------------------------------------
def test_every_error_class_carries_an_http_status_and_an_exit_code() -> None:
    classes = all_subclasses()
    assert len(classes) >= 18  # the walk really found the library's classes
    for cls in classes:
        assert type(cls.http_status) is int and 400 <= cls.http_status <= 599, cls
        assert type(cls.exit_code) is int and cls.exit_code >= 1, cls


def test_the_status_table_is_what_the_server_and_cli_answered_before() -> None:
    assert (UnknownIdError.http_status, UnknownIdError.exit_code) == (404, 2)
    assert (FilterError.http_status, FilterError.exit_code) == (400, 2)
    assert (DuplicateIdError.http_status, DuplicateIdError.exit_code) == (409, 2)
    assert (NotFittedError.http_status, NotFittedError.exit_code) == (409, 1)
    assert (ConfigError.http_status, ConfigError.exit_code) == (422, 1)
    assert (VisualsimError.http_status, VisualsimError.exit_code) == (422, 1)


def test_filter_error_and_where_error_are_one_class() -> None:
    from visualsim import filters
    from visualsim.serve import _adapters

    assert WhereError is FilterError is filters.FilterError is _adapters.WhereError
    assert issubclass(FilterError, ConfigError) and issubclass(FilterError, ValueError)
    with pytest.raises(WhereError, match="bad filter"):
        filters.parse_filter("price <")
    with pytest.raises(FilterError, match="unknown field"):
        _adapters.parse_where("colour == 'red'", {"price": "int"})


class _Teapot(VisualsimError):
    """A made-up error class: the front ends must answer with what it carries."""

    http_status = 451
    exit_code = 7


def test_the_http_app_answers_with_the_status_the_error_carries() -> None:
    app = create_app(make_rec(), warm=False)

    def boom() -> None:
        raise _Teapot("no tea here")

    def unknown() -> None:
        raise UnknownIdError("no item 'x'")

    app.add_api_route("/boom", boom)
    app.add_api_route("/unknown", unknown)
    with TestClient(app) as client:
        r = client.get("/boom")
        assert r.status_code == 451 and r.json() == {"detail": "no tea here"}
        assert client.get("/unknown").status_code == 404
        # a real request: a where naming no field is a FilterError, so 400
        r = client.get("/items/p1/similar", params={"where": "colour == 'red'"})
        assert r.status_code == 400 and "colour" in r.json()["detail"]


def test_the_cli_exits_with_the_code_the_error_carries(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from visualsim import cli

    def teapot(args: Any) -> int:
        raise _Teapot("no tea here")

    def filter_error(args: Any) -> int:
        raise FilterError("bad filter 'x'")

    monkeypatch.setitem(cli.COMMANDS, "info", teapot)
    assert cli.main(["info", str(tmp_path)]) == 7
    assert capsys.readouterr().err.strip() == "visualsim info: error: no tea here"
    monkeypatch.setitem(cli.COMMANDS, "info", filter_error)
    assert cli.main(["info", str(tmp_path)]) == 2
    capsys.readouterr()


def test_the_serve_entry_point_exits_with_the_code_the_error_carries(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from visualsim.serve.server import main

    assert main([str(tmp_path / "nope")]) == ConfigError.exit_code == 1
    assert "is not a folder" in capsys.readouterr().err


# -- create_app(max_k=...) ----------------------------------------------------------------
@pytest.mark.parametrize("bad", [2.5, "5", "abc", 0, True, None])
def test_create_app_refuses_a_bad_max_k_naming_it(bad: Any) -> None:
    with pytest.raises(ConfigError, match=r"max_k must be an integer of at least 1"):
        create_app(make_rec(), max_k=bad, warm=False)


@pytest.mark.parametrize("bad", [2.5, "1000", 0, True])
def test_create_app_refuses_a_bad_max_upload_bytes(bad: Any) -> None:
    with pytest.raises(ConfigError, match=r"max_upload_bytes must be an integer"):
        create_app(make_rec(), max_upload_bytes=bad, warm=False)


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf"), "5", True])
def test_create_app_refuses_a_bad_queue_timeout(bad: Any) -> None:
    with pytest.raises(ConfigError, match=r"queue_timeout must be a positive, finite number"):
        create_app(make_rec(), queue_timeout=bad, warm=False)


def test_create_app_takes_a_numpy_max_k_and_serves_up_to_it() -> None:
    with TestClient(create_app(make_rec(), max_k=np.int64(3), warm=False)) as client:
        assert client.get("/items/p0/similar", params={"k": 3}).status_code == 200
        assert client.get("/items/p0/similar", params={"k": 4}).status_code == 422


# -- extractors: bools are not counts --------------------------------------------------------
@pytest.mark.parametrize("bad", [True, False, 0, 2.5, "8"])
def test_an_extractor_refuses_a_bad_batch_size(bad: Any) -> None:
    with pytest.raises(ConfigError, match="batch_size must be an integer of at least 1"):
        ColorHistogramExtractor(batch_size=bad)
    image = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(ConfigError, match="batch_size must be an integer of at least 1"):
        ColorHistogramExtractor().extract([image], batch_size=bad)


def test_an_extractor_takes_numpy_counts_and_refuses_a_bool_num_workers() -> None:
    ext = ColorHistogramExtractor(batch_size=np.int32(4), num_workers=np.int64(0))
    assert (ext.batch_size, ext.num_workers) == (4, 0)
    assert type(ext.batch_size) is int
    with pytest.raises(ConfigError, match="num_workers must be an integer of at least 0"):
        ColorHistogramExtractor(num_workers=True)


# -- one wording for a bad k -----------------------------------------------------------------
@pytest.mark.parametrize("bad", [0, -3, 2.5, "5", True, None])
def test_a_bad_k_has_one_wording_everywhere_in_python(bad: Any) -> None:
    from visualsim import FlatIndex
    from visualsim.duplicates import find_pairs, fingerprint
    from visualsim.evaluation import recall_at_k

    rec = make_rec()
    index = FlatIndex()
    index.add(np.eye(3, 4, dtype=np.float32), ["a", "b", "c"])
    fps = np.stack([fingerprint(np.zeros((32, 32, 3), np.uint8))] * 2)
    calls = {
        "check_k": lambda: check_k(bad),
        "similar_to": lambda: rec.similar_to("p0", k=bad),
        "query_vector": lambda: rec.query_vector(np.ones(rec.dim), k=bad),
        "index.search": lambda: index.search(np.ones((1, 4), np.float32), k=bad),
        "recall_at_k": lambda: recall_at_k(np.ones((1, 3), bool), k=bad),
        "find_pairs": lambda: find_pairs(fps, k=bad),
    }
    for where, call in calls.items():
        with pytest.raises(ConfigError) as info:
            call()
        assert str(info.value).startswith(K_WORDING), (where, str(info.value))


def test_check_k_takes_numpy_integers_and_a_maximum() -> None:
    assert check_k(np.int64(7)) == 7 and type(check_k(np.int64(7))) is int
    assert check_k(100, maximum=100) == 100
    with pytest.raises(ConfigError, match=r"k must be an integer from 1 to 100, got 101"):
        check_k(101, maximum=100)


@pytest.mark.parametrize(("text", "shown"), [("0", "0"), ("-1", "-1"), ("abc", "'abc'")])
def test_a_bad_k_on_the_command_line_is_a_usage_error_in_the_same_words(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, text: str, shown: str
) -> None:
    from visualsim.cli import main

    for argv in (
        ["query", str(tmp_path), "photo.jpg", "-k", text],
        ["similar", str(tmp_path), "p0", "-k", text],
        ["evaluate", str(tmp_path), "--label", "category", "-k", "1", text],
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert f"argument -k: {K_WORDING}{shown} " in err, err
        assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(("k", "shown"), [("0", "0"), ("abc", "'abc'"), ("101", "101")])
def test_a_bad_k_over_http_is_a_422_in_the_same_words(k: str, shown: str) -> None:
    with TestClient(create_app(make_rec(), warm=False)) as client:
        says = f"invalid request: k: k must be an integer from 1 to 100, got {shown}"
        r = client.get("/items/p0/similar", params={"k": k})
        assert r.status_code == 422 and r.json()["detail"] == says
        r = client.post("/query", params={"k": k}, content=b"not read")
        assert r.status_code == 422 and r.json()["detail"] == says
    with TestClient(create_app(make_rec(), warm=False, max_k=5)) as client:
        r = client.get("/items/p0/similar", params={"k": 6})
        assert r.json()["detail"] == "invalid request: k: k must be an integer from 1 to 5, got 6"


# -- check_float --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "value", "says"),
    [
        ({}, float("nan"), "x must be a finite number, got nan"),
        ({}, "0.5", "x must be a finite number, got '0.5'"),
        ({}, True, "x must be a finite number, got True"),
        ({"minimum": 0, "open_minimum": True}, 0, "x must be a positive, finite number, got 0"),
        ({"minimum": 1}, 0.5, "x must be a finite number >= 1, got 0.5"),
        ({"maximum": 1, "open_maximum": True}, 1, "x must be a finite number < 1, got 1"),
        ({"minimum": 0, "maximum": 1, "open_maximum": True}, 1.0, "x must be a number in [0, 1)"),
        ({"minimum": 0, "maximum": 4, "open_minimum": True}, 5, "x must be a number in (0, 4]"),
        ({"minimum": 0, "allow_none": True}, -1, "x must be a finite number >= 0 or None"),
    ],
)
def test_check_float_refuses_with_one_wording(
    kwargs: dict[str, Any], value: Any, says: str
) -> None:
    with pytest.raises(ConfigError) as info:
        check_float("x", value, **kwargs)
    assert str(info.value).startswith(says)


def test_check_float_accepts_numbers_of_every_kind() -> None:
    assert check_float("x", 1) == 1.0 and type(check_float("x", np.float32(0.5))) is float
    assert check_float("x", np.int8(3), minimum=3) == 3.0
    assert check_float("x", None, allow_none=True) is None
    with pytest.raises(UnknownIdError, match="x must be a finite number >= 0"):
        check_float("x", -1, minimum=0, error=UnknownIdError)  # the class is the caller's


# -- the evaluation and the reducer use the same checks ---------------------------------------
def test_the_evaluation_refuses_bool_counts_and_a_bad_test_size_in_the_shared_words() -> None:
    from visualsim.evaluation import evaluate_embeddings, holdout_split

    x = np.eye(6, 4, dtype=np.float32) + 0.1
    labels = ["a", "a", "a", "b", "b", "b"]
    with pytest.raises(
        ConfigError,
        match=r"batch_size must be an integer of at least 1 \(a positive integer\), got True",
    ):
        evaluate_embeddings(x, labels, k=1, batch_size=True)
    for bad in (0, 1, 1.5, "0.2", True, float("nan")):
        with pytest.raises(ConfigError, match=r"test_size must be a number in \(0, 1\), got "):
            holdout_split(labels, test_size=bad)
    with pytest.raises(ConfigError, match="by must be one of 'items', 'labels', got 'rows'"):
        holdout_split(labels, by="rows")


def test_the_reducer_and_the_indexes_refuse_bad_rows_in_the_same_words() -> None:
    from visualsim import FlatIndex
    from visualsim.errors import InvalidVectorsError
    from visualsim.reduction import PCAReducer
    from visualsim.validation import check_rows

    for bad, says in (
        (np.zeros((2, 0)), "vectors have zero columns"),
        (np.zeros((2, 2, 2)), "vectors must be 2-d (n, dim) or a single 1-d vector"),
        (np.array([["a", "b"]]), "vectors must be real numbers, got dtype <U1"),
    ):
        calls = (check_rows, PCAReducer(2).fit, lambda v: FlatIndex().add(v, ["a", "b"][: len(v)]))
        for call in calls:
            with pytest.raises(InvalidVectorsError) as info:
                call(bad)
            assert str(info.value).startswith(says), str(info.value)
    big = np.ones((3, 2))
    assert check_rows(big) is big  # checked, not copied


def test_the_evaluation_and_the_adapter_share_one_unit_rows_rule() -> None:
    """A zero row stays zero; a bad array is refused in one wording by both owners' callers."""
    from visualsim.adaptation import ProjectionAdapter
    from visualsim.errors import InvalidVectorsError
    from visualsim.evaluation import evaluate_embeddings
    from visualsim.validation import normalize_rows, unit_rows

    out = unit_rows([[3.0, 4.0], [0.0, 0.0]])
    assert out.dtype == np.float32 and out.flags.c_contiguous
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0]], rtol=1e-6)
    np.testing.assert_array_equal(normalize_rows(np.zeros((2, 3))), np.zeros((2, 3)))
    assert unit_rows(np.zeros((0, 4)), allow_empty=True).shape == (0, 4)
    nan_row = np.ones((4, 2))
    nan_row[3, 1] = np.nan
    for bad, says in (
        ([["a", "b"]], "embeddings must be a numeric (n, dim) array"),
        (np.ones(3), "embeddings must be a non-empty (n, dim) array, got (3,)"),
        (np.zeros((0, 2)), "embeddings must be a non-empty (n, dim) array, got (0, 2)"),
        (nan_row, "embeddings row 3 holds NaN or infinite values"),
    ):
        with pytest.raises(InvalidVectorsError) as info:
            evaluate_embeddings(bad, [0, 0, 1, 1][: len(bad)] if np.ndim(bad) == 2 else [0])
        assert str(info.value) == says
        with pytest.raises(InvalidVectorsError) as info:
            ProjectionAdapter(mix=1.0).fit(
                bad, [0, 0, 1, 1][: len(bad)] if np.ndim(bad) == 2 else [0]
            )
        assert str(info.value) == says.replace("embeddings", "vectors")
