"""MilvusIndex on Milvus Lite: the shared index contract, filters in Milvus, secrets, save/load.

Milvus Lite runs the Milvus engine inside this process (a gRPC server on
127.0.0.1 serving a local ``.db`` folder); nothing here leaves the machine.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import shutil
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import test_indexes as contract
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from visualsim import CatalogError, ConfigError, InvalidVectorsError, NotFittedError
from visualsim.filters import And, Compare, FilterError, InList, Not, Or, parse_filter
from visualsim.indexes import load_index, make_index
from visualsim.indexes.milvus import (
    MILVUS_URI_ENV,
    MilvusError,
    MilvusIndex,
    milvus_connection,
    redact_uri,
    to_milvus_expr,
)

_names = itertools.count()


def fresh_name() -> str:
    return f"t{os.getpid()}_{next(_names)}"


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One Milvus Lite database for the module; each test makes its own collections."""
    return str(tmp_path_factory.mktemp("milvus") / "tests.db")


def new_index(db: str, **kwargs: Any) -> MilvusIndex:
    return MilvusIndex(uri=db, collection=fresh_name(), **kwargs)


@pytest.fixture
def as_contract_backend(db: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Register a Milvus factory under the name "milvus" in the shared contract tests."""
    monkeypatch.setitem(contract.ALL, "milvus", lambda: new_index(db))
    monkeypatch.setitem(contract.EXACT, "milvus", lambda: new_index(db))
    # the shared database lies away from the saved folders: the caller names it on load
    monkeypatch.setenv(MILVUS_URI_ENV, db)
    return "milvus"


# ----------------------------------------------------------------------------- the contract

CONTRACT_TESTS = [
    "test_every_backend_matches_brute_force_on_small_data",
    "test_ties_are_broken_by_insertion_order",
    "test_raw_vectors_are_normalised",
    "test_k_larger_than_index_returns_what_there_is",
    "test_one_dimensional_query_is_one_row",
    "test_add_then_remove_equals_never_added",
    "test_remove_then_add_back",
    "test_removing_everything_leaves_an_empty_index",
    "test_unknown_id_on_remove_names_it_and_removes_nothing",
    "test_bad_input_raises_visualsim_errors",
    "test_config_round_trips_through_json",
    "test_concurrent_searches_match_serial",
]


@pytest.mark.parametrize("test_name", CONTRACT_TESTS)
def test_the_shared_index_contract(test_name: str, as_contract_backend: str, request) -> None:
    test = getattr(contract, test_name)
    params = test.__code__.co_varnames[: test.__code__.co_argcount]
    kwargs: dict[str, Any] = {"name": as_contract_backend}
    if "small" in params:
        kwargs["small"] = request.getfixturevalue("small")
    test(**kwargs)


def test_the_contract_save_load_round_trip(
    as_contract_backend: str, request, tmp_path: Path
) -> None:
    contract.test_save_load_search_is_identical(
        as_contract_backend, request.getfixturevalue("small"), tmp_path
    )


def test_agrees_with_numpy_brute_force(as_contract_backend: str) -> None:
    # the property test of the exact backends, FLAT in Milvus being exact
    contract.test_exact_backends_agree_with_numpy_brute_force(as_contract_backend)


@pytest.fixture(scope="module")
def small() -> tuple[np.ndarray, list[str], np.ndarray]:
    x = contract.clustered(700, 16, seed=1)
    q = contract.clustered(20, 16, seed=2)
    return x, [f"item-{i}" for i in range(len(x))], q


def test_integer_and_string_ids_stay_apart(db: str) -> None:
    index = new_index(db)
    index.add(np.eye(3), [3, "3", np.int64(4)])
    assert index.ids == [3, "3", 4]
    assert index.search(np.eye(3)[1], 1)[1] == [["3"]]
    assert index.search(np.eye(3)[0], 1)[1] == [[3]]


def test_registered_and_lazy(tmp_path: Path) -> None:
    index = make_index("milvus", uri=str(tmp_path / "a.db"), collection="c")
    assert type(index) is MilvusIndex and MilvusIndex.supports_where
    code = (
        "import sys, visualsim, visualsim.indexes; visualsim.make_index; "
        "from visualsim.indexes.milvus import MilvusIndex; "
        f"MilvusIndex(uri={str(tmp_path / 'b.db')!r}); print('pymilvus' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False"]  # made, not connected: pymilvus not imported


@pytest.mark.parametrize(
    "params",
    [
        {},  # uri is required
        {"uri": "shop"},  # neither .db nor a scheme
        {"uri": "ftp://host/x"},
        {"uri": "x.db", "collection": "has space"},
        {"uri": "x.db", "index_type": "ANNOY"},
        {"uri": "x.db", "token_env": "s3cr3t token value"},
        {"uri": "x.db", "batch_size": 0},
        {"uri": "x.db", "consistency_level": "Whenever"},
        {"uri": "x.db", "fields": {"price": "decimal"}},
        {"uri": "x.db", "fields": {"vs_id": "str"}},
        {"uri": "x.db", "fields": {"bad name": "str"}},
        {"uri": "x.db", "efSearch": 10},
        {"uri": "x.db", "M": 0},
        {"uri": "x.db", "timeout": -1},
    ],
)
def test_bad_configuration_is_refused(params: dict, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError):
        make_index("milvus", **params)
    assert not list(tmp_path.iterdir())  # nothing created


def test_batches_inserts_and_a_failed_batch_leaves_nothing(db: str, monkeypatch) -> None:
    x = contract.clustered(50, 8)
    index = new_index(db, batch_size=7)
    client = index._connect()
    calls: list[int] = []
    real_insert = client.insert

    def insert(collection: str, rows: list, **kw: Any) -> Any:
        calls.append(len(rows))
        if len(calls) == 4:
            raise RuntimeError("disk full")
        return real_insert(collection, rows, **kw)

    monkeypatch.setattr(client, "insert", insert)
    with pytest.raises(MilvusError, match="insert failed.*disk full"):
        index.add(x, list(range(50)))
    assert len(index) == 0 and index.count() == 0  # the 3 batches sent were deleted again
    calls.clear()

    def counting_insert(collection: str, rows: list, **kw: Any) -> Any:
        calls.append(len(rows))
        return real_insert(collection, rows, **kw)

    monkeypatch.setattr(client, "insert", counting_insert)
    index.add(x, list(range(50)))
    assert calls == [7] * 7 + [1]
    assert index.count() == 50
    contract.assert_matches_brute_force(index, x, list(range(50)), x[:5], 10)


def test_k_above_milvus_limit_is_a_clear_error(db: str, monkeypatch) -> None:
    from visualsim.indexes import milvus

    index = new_index(db)
    index.add(np.eye(4), list("abcd"))
    monkeypatch.setattr(milvus, "MAX_TOPK", 3)
    with pytest.raises(ConfigError, match="at most 3"):
        index.search(np.eye(4)[0], 4)
    assert len(index.search(np.eye(4)[0], 3)[1][0]) == 3


def test_hnsw_index_type(db: str, small) -> None:
    x, ids, q = small
    index = new_index(db, index_type="HNSW", M=16, efConstruction=100, ef=64)
    index.add(x, ids)
    contract.assert_matches_brute_force(index, x, ids, q, 10)  # exact on this small set
    assert index.get_config()["M"] == 16 and index.get_config()["ef"] == 64


def test_a_collection_that_exists_is_not_taken_over(db: str) -> None:
    a = new_index(db)
    a.add(np.eye(3), ["a", "b", "c"])
    b = MilvusIndex(uri=db, collection=a.collection)
    with pytest.raises(CatalogError, match="already exists.*3 rows"):
        b.add(np.eye(3), ["x", "y", "z"])
    assert a.count() == 3
    a.drop()
    assert len(a) == 0
    b.add(np.eye(3), ["x", "y", "z"])
    assert b.search(np.eye(3)[2], 1)[1] == [["z"]]


# ----------------------------------------------------------------------------- metadata


def test_schema_from_the_first_metadata(db: str) -> None:
    index = new_index(db)
    meta = [
        {"category": "shoes", "price": 10, "stock": 3, "sale": True},
        {"category": "bags", "price": 12.5, "stock": None, "sale": False},
        {"category": "shoes", "price": float("nan"), "tags": ["a", "b"]},  # NaN: missing
    ]
    index.add(np.eye(3), ["a", "b", "c"], metadata=meta)
    assert index.fields_ == {
        "category": "str",
        "price": "float",
        "stock": "int",
        "sale": "bool",
        "tags": "json",
    }
    _, got = index.search(np.ones(3), 3, where="price > 9")
    assert got == [["a", "b"]]
    with pytest.raises(FilterError, match="tags.*does not store"):
        index.search(np.ones(3), 3, where="tags == 'a'")
    with pytest.raises(FilterError, match="colour.*not a metadata field"):
        index.search(np.ones(3), 3, where="colour == 'red'")
    with pytest.raises(FilterError, match="'category' \\(a str field\\)"):
        index.search(np.ones(3), 3, where="category == 3")
    with pytest.raises(ConfigError, match="lacks"):
        index.add(np.ones((1, 3)), ["d"], metadata=[{"colour": "red"}])
    with pytest.raises(ConfigError, match="stores int.*'float'"):
        index.add(np.ones((1, 3)), ["d"], metadata=[{"stock": 2.5}])
    with pytest.raises(ConfigError, match="stores str"):
        index.add(np.ones((1, 3)), ["d"], metadata=[{"category": 7}])
    with pytest.raises(ConfigError, match="one per id"):
        index.add(np.ones((2, 3)), ["d", "e"], metadata=[{}])
    with pytest.raises(ConfigError, match="one mapping per id"):
        index.add(np.ones((1, 3)), ["d"], metadata={"category": "x"})
    assert len(index) == 3 and index.count() == 3


def test_declared_fields_and_bad_values(db: str) -> None:
    index = new_index(db, fields={"price": "float", "label": "str"})
    with pytest.raises(ConfigError, match="finite"):
        index.add(np.eye(2), ["a", "b"], metadata=[{"price": float("inf")}, {}])
    index.add(np.eye(2), ["a", "b"], metadata=[{"price": 3}, {"label": "x"}])
    assert index.search(np.ones(2), 2, where="label == 'x'")[1] == [["b"]]
    assert index.search(np.ones(2), 2, where="price == 3")[1] == [["a"]]
    with pytest.raises(ConfigError, match="only None"):
        new_index(db).add(np.eye(2), ["a", "b"], metadata=[{"x": None}, {}])


def test_upsert_replaces_vectors_and_metadata(db: str) -> None:
    index = new_index(db)
    index.add(np.eye(3), ["a", "b", "c"], metadata=[{"n": 1}, {"n": 2}, {"n": 3}])
    index.upsert([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]], ["a", "d"], metadata=[{"n": 9}, {"n": 4}])
    assert index.ids == ["b", "c", "a", "d"] and index.count() == 4
    _, got = index.search([0.0, 0.0, 1.0], 2)
    assert got == [["c", "a"]]  # tie: c is older than the re-added a
    assert index.search([0.0, 0.0, 1.0], 4, where="n > 3")[1] == [["a", "d"]]


# ----------------------------------------------------------------------------- filters


def test_translation_of_every_node() -> None:
    fields = {"category": "str", "price": "float", "n": "int", "sale": "bool"}
    cases = {
        "category == 'shoes'": 'category == "shoes"',
        "price < 50": "price < 50",
        "price >= 2.5": "price >= 2.5",
        "sale": "sale == true",
        "n != 3": "n is not null and n != 3",
        "category in ['a', 'b']": 'category in ["a", "b"]',
        "category not in ['a']": 'category is not null and category not in ["a"]',
        "category == 'shoes' and price < 50": '(category == "shoes") and (price < 50)',
        "n == 1 or n == 2 or sale": "(n == 1) or (n == 2) or (sale == true)",
        "not price < 50": "not (price is not null and price < 50)",
        "not (n == 1 or category in ['a'])": (
            'not ((n is not null and n == 1) or (category is not null and category in ["a"]))'
        ),
    }
    for text, want in cases.items():
        assert to_milvus_expr(text, fields) == want
        assert to_milvus_expr(parse_filter(text), fields) == want
    assert to_milvus_expr(InList("n", ())) == "vs_label < 0"
    assert to_milvus_expr(InList("n", (), negate=True)) == "vs_label >= 0"
    assert to_milvus_expr(And((Compare("n", "==", 1),))) == "n == 1"


@pytest.mark.parametrize(
    ("where", "match"),
    [
        ("`two words` == 'x'", "not a valid Milvus field name"),
        ("vs_label == 1", "not a valid Milvus field name"),
        ("sale < true", "boolean"),
        ("price < 'cheap'", "a float field"),
        ("sale == 1", "a bool field"),
        ("category >", "bad filter"),
    ],
)
def test_filters_milvus_cannot_express_are_errors(where: str, match: str) -> None:
    fields = {"category": "str", "price": "float", "sale": "bool"}
    with pytest.raises(FilterError, match=match):
        to_milvus_expr(where, fields)
    with pytest.raises(FilterError, match="no Milvus equivalent"):
        to_milvus_expr(Or(()))
    with pytest.raises(FilterError, match="no Milvus equivalent"):
        to_milvus_expr(Compare("n", "=~", 1))
    with pytest.raises(FilterError, match="no Milvus equivalent"):
        to_milvus_expr(object())


def test_quotes_in_values_stay_literals(db: str) -> None:
    names = [
        'x" or vs_label >= 0 or name == "',
        "x' or 1==1 or name == '",
        "back\\slash",
        "trailing\\",
        "new\nline\ttab\rret",
        "ünïcødé ✓",
        "",
    ]
    index = new_index(db)
    x = contract.clustered(len(names), 4)
    index.add(x, list(range(len(names))), metadata=[{"name": n} for n in names])
    for i, name in enumerate(names):
        _, got = index.search(x[0], len(names), where=Compare("name", "==", name))
        assert got == [[i]], name
        _, got = index.search(x[0], len(names), where=InList("name", (name,), negate=True))
        assert sorted(got[0]) == [j for j in range(len(names)) if j != i]


@settings(deadline=None, max_examples=25, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=30))
def test_any_string_value_is_one_literal(value: str) -> None:
    from milvus_lite.search.filter import parse_expr

    expr = to_milvus_expr(Compare("name", "==", value))
    tree = parse_expr(expr)  # Milvus Lite's own parser
    assert tree.right.value == value


# the filter language's meaning, checked on random items against the catalogue's own evaluator
_FIELDS = {"cat": "str", "price": "float", "n": "int", "sale": "bool"}
_values = {
    "cat": st.sampled_from(["a", "b", "c", "it's"]),
    "price": st.sampled_from([0.0, 1.5, 10.0, 49.99, 50.0]),
    "n": st.integers(-3, 3),
    "sale": st.booleans(),
}
_rows = st.lists(
    st.fixed_dictionaries({}, optional=_values),  # any field may be missing
    min_size=1,
    max_size=25,
)


def _leaf() -> st.SearchStrategy[Any]:
    ops = st.sampled_from(["==", "!=", "<", "<=", ">", ">="])
    return st.one_of(
        st.builds(Compare, st.just("cat"), st.sampled_from(["==", "!=", "<"]), _values["cat"]),
        st.builds(Compare, st.just("price"), ops, _values["price"]),
        st.builds(Compare, st.just("n"), ops, st.one_of(_values["n"], st.just(1.5))),
        st.builds(Compare, st.just("sale"), st.sampled_from(["==", "!="]), st.booleans()),
        st.builds(
            InList,
            st.just("cat"),
            st.lists(_values["cat"], min_size=1, max_size=3).map(tuple),
            st.booleans(),
        ),
    )


_exprs = st.recursive(
    _leaf(),
    lambda inner: st.one_of(
        st.builds(And, st.lists(inner, min_size=2, max_size=3).map(tuple)),
        st.builds(Or, st.lists(inner, min_size=2, max_size=3).map(tuple)),
        st.builds(Not, inner),
    ),
    max_leaves=6,
)


@settings(deadline=None, max_examples=40, suppress_health_check=[HealthCheck.too_slow])
@given(rows=_rows, expr=_exprs)
def test_milvus_filters_mean_what_the_catalogue_filters_mean(db: str, rows, expr) -> None:
    from visualsim.store import Store

    rows = [{"cat": "a", "price": 1.5, "n": 0, "sale": False}, *rows]  # every field present
    n = len(rows)
    store = Store(4)
    store.declare(_FIELDS)
    x = contract.clustered(n, 4, seed=n)
    store.append(x, list(range(n)), rows)
    want = sorted(np.flatnonzero(store.mask(expr)).tolist())
    index = new_index(db, fields=_FIELDS)
    index.add(x, list(range(n)), metadata=rows)
    _, got = index.search(x[0], n, where=expr)
    assert sorted(got[0]) == want, to_milvus_expr(expr, _FIELDS)


def test_filtered_search_returns_only_matches_and_all_of_them(db: str, small) -> None:
    x, ids, q = small
    meta = [{"cat": f"c{i % 7}", "price": float(i % 100)} for i in range(len(ids))]
    index = new_index(db)
    index.add(x, ids, metadata=meta)
    scores, got = index.search(q, 10, where="cat == 'c3' and price < 50")
    keep = [i for i, m in enumerate(meta) if m["cat"] == "c3" and m["price"] < 50]
    for qi, row in enumerate(got):
        sims = x[keep] @ (q[qi] / np.linalg.norm(q[qi]))
        best = [ids[keep[j]] for j in np.argsort(-sims, kind="stable")[:10]]
        assert row == best
        np.testing.assert_allclose(scores[qi], np.sort(sims)[::-1][:10], atol=1e-5)
    scores, got = index.search(q[:2], 10, where="cat == 'nothing'")
    assert scores.shape == (2, 0) and got == [[], []]
    scores, got = index.search(q[:2], 500, where="cat == 'c1'")
    assert scores.shape == (2, 100)  # fewer matches than k: all of them
    mask = np.zeros(len(ids), dtype=bool)
    mask[[5, 9]] = True
    assert sorted(index.search(q[0], 10, allowed=mask)[1][0]) == [ids[5], ids[9]]


# ----------------------------------------------------------------------------- secrets

SECRET = "s3cr3t-T0KEN-do-not-print"


def _everything(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc)) + repr(exc) + str(vars(exc))


def test_the_token_never_leaks(tmp_path: Path, monkeypatch, caplog, capsys) -> None:
    monkeypatch.setenv("VS_TEST_MILVUS_TOKEN", SECRET)
    caplog.set_level(logging.DEBUG)
    # port 1 on loopback: nothing listens, the connection is refused at once
    index = MilvusIndex(
        uri="http://127.0.0.1:1", collection="c", token_env="VS_TEST_MILVUS_TOKEN", timeout=2
    )
    seen = [repr(index), json.dumps(index.get_config())]
    with pytest.raises(MilvusError, match="cannot connect to Milvus at http://127.0.0.1:1") as err:
        index.add(np.eye(2), ["a", "b"])
    seen.append(_everything(err.value))
    assert err.value.__cause__ is None and err.value.__context__ is None
    with pytest.raises(MilvusError) as err:
        index.drop()
    seen.append(_everything(err.value))
    index.save(tmp_path / "saved")  # nothing was created: saving needs no connection
    saved = [p.read_bytes() for p in (tmp_path / "saved").rglob("*") if p.is_file()]
    assert saved and not [b for b in saved if SECRET.encode() in b]
    with pytest.raises(CatalogError, match="milvus_uri") as err:  # the file names no server
        load_index(tmp_path / "saved")
    seen.append(_everything(err.value))
    with (
        milvus_connection(uri="http://127.0.0.1:1", token_env="VS_TEST_MILVUS_TOKEN"),
        pytest.raises(MilvusError, match="cannot connect") as err,
    ):
        load_index(tmp_path / "saved")  # the caller does: load reconnects
    seen.append(_everything(err.value))
    out = capsys.readouterr()
    seen += [out.out, out.err, caplog.text]
    assert not [s for s in seen if SECRET in s]
    assert any("VS_TEST_MILVUS_TOKEN" in s for s in seen)  # the name, not the value


def test_credentials_in_the_uri_are_used_but_never_kept(tmp_path: Path, caplog) -> None:
    uri = f"http://root:{SECRET}@127.0.0.1:1/?token={SECRET}"
    assert redact_uri(uri) == "http://127.0.0.1:1/"
    index = MilvusIndex(uri=uri, collection="c", timeout=2)
    assert index.uri == "http://127.0.0.1:1/" and SECRET not in repr(index)
    with pytest.raises(MilvusError) as err:
        index.add(np.eye(2), ["a", "b"])
    index.save(tmp_path / "saved")
    files = b"".join(p.read_bytes() for p in (tmp_path / "saved").rglob("*") if p.is_file())
    assert SECRET.encode() not in files and b"root" not in files
    for text in (_everything(err.value), caplog.text, json.dumps(index.get_config())):
        assert SECRET not in text


def test_a_missing_token_variable_names_the_variable(monkeypatch) -> None:
    monkeypatch.delenv("VS_TEST_MILVUS_TOKEN", raising=False)
    index = MilvusIndex(uri="http://127.0.0.1:1", token_env="VS_TEST_MILVUS_TOKEN")
    with pytest.raises(ConfigError, match="VS_TEST_MILVUS_TOKEN.*not set"):
        index.add(np.eye(2), ["a", "b"])


# ----------------------------------------------------------------------------- save / load


def test_load_checks_count_and_ids_against_the_live_collection(tmp_path: Path) -> None:
    db = str(tmp_path / "shop.db")
    x = contract.clustered(30, 8)
    index = MilvusIndex(uri=db, collection="shop")
    index.add(x, [f"i{i}" for i in range(30)], metadata=[{"n": i} for i in range(30)])
    index.save(tmp_path / "idx")
    loaded = load_index(tmp_path / "idx")
    assert loaded.ids == index.ids and loaded.fields_ == {"n": "int"}
    contract.results_equal(index, loaded, x[:5], 5)
    assert loaded.search(x[0], 3, where="n < 2")[1] == index.search(x[0], 3, where="n < 2")[1]

    index.remove(["i3"])  # one row fewer than saved
    with pytest.raises(CatalogError, match="holds 29 rows but the saved index.*has 30"):
        load_index(tmp_path / "idx")
    index.add(x[3], ["someone-else"])  # as many rows again, not the same ones
    with pytest.raises(CatalogError, match="other ids"):
        load_index(tmp_path / "idx")
    index.drop()
    with pytest.raises(CatalogError, match="'shop' is missing"):
        load_index(tmp_path / "idx")


def test_saved_folder_records_the_connection_not_secrets(tmp_path: Path) -> None:
    index = MilvusIndex(uri=str(tmp_path / "shop.db"), collection="shop")
    index.add(np.eye(2), ["a", "b"])
    index.save(tmp_path / "idx")
    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    state = manifest["state"]
    assert state["lite_path"] == os.path.join("..", "shop.db")
    assert state["collection"] == "shop" and len(state["ids_digest"]) == 64
    assert sorted(state) == ["collection", "created", "fields", "ids_digest", "lite_path"]


def test_a_catalogue_and_its_db_beside_it_move_together(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "site").mkdir()
    monkeypatch.chdir(tmp_path / "site")
    index = MilvusIndex(uri="shop.db", collection="shop")  # relative: resolved against cwd
    assert index.uri == str(tmp_path / "site" / "shop.db")
    x = contract.clustered(20, 8)
    index.add(x, list(range(20)))
    index.save("catalogue")
    index.close()
    shutil.copytree(tmp_path / "site", tmp_path / "moved")
    index.drop()  # the original collection is gone; the copy must be what loads
    monkeypatch.chdir(tmp_path)
    moved = load_index(tmp_path / "moved" / "catalogue")
    assert moved.uri == str(tmp_path / "moved" / "shop.db")
    assert moved.search(x[4], 1)[1] == [[4]]
    with pytest.raises(CatalogError, match="missing"):
        load_index(tmp_path / "site" / "catalogue")
    shutil.copytree(tmp_path / "moved" / "catalogue", tmp_path / "alone")
    with pytest.raises(CatalogError, match="database .* is missing"):
        load_index(tmp_path / "alone")  # the catalogue without its .db
    assert not (tmp_path / "shop.db").exists()  # and no empty database made in its place


def test_a_db_inside_the_folder_being_saved_is_refused(tmp_path: Path) -> None:
    # a saved index folder may be replaced by the next save; a database inside it would go too
    MilvusIndex(uri=str(tmp_path / "first.db"), collection="first").save(tmp_path / "catalogue")
    index = MilvusIndex(uri=str(tmp_path / "catalogue" / "shop.db"), collection="shop")
    index.add(np.eye(2), ["a", "b"])
    before = sorted(p.name for p in (tmp_path / "catalogue").iterdir())
    with pytest.raises(CatalogError, match="lies inside.*beside the catalogue"):
        index.save(tmp_path / "catalogue")
    assert sorted(p.name for p in (tmp_path / "catalogue").iterdir()) == before
    assert index.search(np.eye(2)[0], 1)[1] == [["a"]]  # the live database is untouched


def test_an_empty_index_saves_and_loads(tmp_path: Path) -> None:
    index = MilvusIndex(uri=str(tmp_path / "e.db"), collection="empty")
    index.save(tmp_path / "idx")
    loaded = load_index(tmp_path / "idx")
    assert len(loaded) == 0
    with pytest.raises(NotFittedError):
        loaded.search(np.ones(3), 1)
    loaded.add(np.eye(3), ["a", "b", "c"])
    assert loaded.search(np.eye(3)[1], 1)[1] == [["b"]]


# ----------------------------------------------------------------------------- recommender


def test_recommender_filters_inside_milvus(tmp_path: Path) -> None:
    from visualsim import Recommender
    from visualsim.extractors.color import ColorHistogramExtractor

    ext = ColorHistogramExtractor()
    dim = ext.dim
    rng = np.random.default_rng(0)
    vecs = rng.standard_normal((200, dim)).astype(np.float32)
    meta = [{"cat": f"c{i % 5}", "price": float(i)} for i in range(200)]
    milvus = Recommender(ext, MilvusIndex(uri=str(tmp_path / "r.db"), collection="rec"))
    flat = Recommender(ext, "flat")
    for rec in (milvus, flat):
        rec.add_vectors(vecs, [f"p{i}" for i in range(200)], meta)
    for where in ("cat == 'c2' and price < 120", "not (cat in ['c1', 'c2'])", None):
        a = milvus.query_vector(vecs[7], 8, where=where)
        b = flat.query_vector(vecs[7], 8, where=where)
        assert [r.id for r in a] == [r.id for r in b]
        np.testing.assert_allclose([r.score for r in a], [r.score for r in b], atol=1e-5)
    milvus.remove(["p7"])
    assert "p7" not in [r.id for r in milvus.query_vector(vecs[7], 5)]
    milvus.save(tmp_path / "cat")
    again = Recommender.load(tmp_path / "cat")
    assert [r.id for r in again.query_vector(vecs[8], 5, where="price > 100")] == [
        r.id for r in milvus.query_vector(vecs[8], 5, where="price > 100")
    ]


def test_bad_vectors_never_reach_milvus(db: str) -> None:
    index = new_index(db)
    with pytest.raises(InvalidVectorsError):
        index.add([[np.nan, 1.0]], ["a"])
    assert not index._created


def test_shards_stream_into_milvus_in_batches(tmp_path: Path, monkeypatch) -> None:
    from visualsim import Recommender
    from visualsim.extractors.base import extractor_spec
    from visualsim.extractors.color import ColorHistogramExtractor
    from visualsim.shards import ShardWriter

    ext = ColorHistogramExtractor()
    rng = np.random.default_rng(1)
    writer = ShardWriter(
        tmp_path / "shards", extractor=extractor_spec(ext), dim=ext.dim, shard_size=40
    )
    ids = [f"p{i}" for i in range(100)]
    vecs = rng.standard_normal((100, ext.dim)).astype(np.float32)
    for s in range(3):
        part = slice(40 * s, 40 * (s + 1))
        writer.write(
            s,
            vectors=vecs[part],
            ids=ids[part],
            metadata=[{"cat": f"c{i % 3}"} for i in range(100)][part],
            input_ids=ids[part],
        )
    writer.finish(100)
    index = MilvusIndex(uri=str(tmp_path / "s.db"), collection="shards", batch_size=30)
    sent: list[int] = []
    real_insert = index._connect().insert

    def insert(collection: str, rows: list, **kw: Any) -> Any:
        sent.append(len(rows))
        return real_insert(collection, rows, **kw)

    monkeypatch.setattr(index._connect(), "insert", insert)
    rec = Recommender.from_shards(tmp_path / "shards", index=index)
    assert index.count() == 100 and sum(sent) == 100 and max(sent) == 30
    got = rec.query_vector(vecs[4], 3, where="cat == 'c1'")
    assert got[0].id == "p4" and all(r.metadata["cat"] == "c1" for r in got)


def test_the_dict_form_of_where_works_too(db: str) -> None:
    index = new_index(db)
    index.add(np.eye(3), ["a", "b", "c"], metadata=[{"c": "x"}, {"c": "y"}, {"c": "x"}])
    assert index.search(np.ones(3), 3, where={"c": "x"})[1] == [["a", "c"]]
    assert to_milvus_expr({"c": ["x", "y"]}) == 'c in ["x", "y"]'
