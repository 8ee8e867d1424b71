"""Typed metadata columns that recover (issue 28, item 5).

A field's kind follows the values it holds now: once an off-type value is fixed
(``update_metadata``) or replaced and compacted (``upsert`` + ``compact``),
``price < 10`` works again, also after save and load. A key few items have
costs memory for those items only (a sparse column), not a column over every row.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from support import VectorExtractor, _unit
from visualsim import Recommender
from visualsim.filters import FilterError, parse_filter
from visualsim.store import Column, Store, kind_of


def _rec(n: int = 20) -> Recommender:
    rng = np.random.default_rng(0)
    meta = [{"price": float(i), "category": "shoes" if i % 2 else "bags"} for i in range(n)]
    return Recommender(VectorExtractor(), "flat").add_vectors(
        _unit(rng, n), [f"sku-{i}" for i in range(n)], meta
    )


def _cheap(rec: Recommender) -> list[str]:
    q = rec.vector_of("sku-0")
    return sorted(r.id for r in rec.query_vector(q, k=100, where="price < 3"))


def test_update_metadata_fixing_the_off_type_value_restores_the_filter() -> None:
    rec = _rec()
    rec.update_metadata("sku-1", {"price": "call us"})
    assert rec.fields_["price"] == "json"
    with pytest.raises(FilterError, match="price"):
        _cheap(rec)
    rec.update_metadata("sku-1", {"price": 1.0})  # the last off-type value is overwritten
    assert rec.fields_["price"] == "float"
    assert _cheap(rec) == ["sku-0", "sku-1", "sku-2"]


def test_removing_the_off_type_value_restores_the_filter() -> None:
    rec = _rec()
    rec.update_metadata("sku-1", {"price": [1, 2]})
    rec.update_metadata("sku-1", {"price": None})  # the field is deleted from that item
    assert rec.fields_["price"] == "float"
    assert _cheap(rec) == ["sku-0", "sku-2"]


def test_upsert_then_compact_restores_the_filter_and_it_survives_save_and_load(
    tmp_path: Path,
) -> None:
    rec = _rec()
    rec.update_metadata("sku-1", {"price": "call us"})
    path = rec.save(tmp_path / "shop.catalog")
    rec = Recommender.load(path)
    assert rec.fields_["price"] == "json"
    # replace the item: its old row (still holding the text) is a tombstone until compact
    rec.upsert_vectors(_unit(np.random.default_rng(1), 1), ["sku-1"], [{"price": 1}])
    rec.compact()
    assert rec.fields_["price"] == "float"
    assert _cheap(rec) == ["sku-0", "sku-1", "sku-2"]
    rec.save(path, overwrite=True)
    back = Recommender.load(path)
    assert back.fields_["price"] == "float"
    assert _cheap(back) == ["sku-0", "sku-1", "sku-2"]
    assert back.metadata_of("sku-1") == {"price": 1.0}  # upsert replaced the whole metadata


def test_compact_retypes_a_field_loaded_as_json() -> None:
    rec = _rec()
    store = rec._store_
    assert store is not None
    # what a catalogue saved by an older version loads as: json although every value is a number
    store.columns["price"] = store.columns["price"].retyped("json")
    assert rec.fields_["price"] == "json"
    rec.compact()  # no tombstone: the fast path retypes too
    assert rec.fields_["price"] == "float"
    assert _cheap(rec) == ["sku-0", "sku-1", "sku-2"]


def test_a_key_one_item_of_many_has_costs_memory_for_that_item_only() -> None:
    def grown(n: int) -> tuple[int, Store]:
        store = Store(4)
        store.append(
            np.zeros((n, 4), np.float32),
            list(range(n)),
            [{"category": f"c{i % 10}", "price": float(i)} for i in range(n)],
        )
        before = store.metadata_nbytes
        extra = {f"k{j:04d}": (j, f"v{j}", j * 0.5, j % 2 == 0)[j % 4] for j in range(2000)}
        store.update_metadata(7, extra, replace=False)
        return store.metadata_nbytes - before, store

    small, _ = grown(2_000)
    cost, store = grown(20_000)
    # a dense column per key would hold at least 2 bytes per row per key: 80 MB here
    assert cost < 2000 * 400
    assert cost == small  # independent of how many items the catalogue holds
    assert all(store.columns[f"k{j:04d}"].sparse for j in range(2000))
    assert store.metadata(7)["k0001"] == "v1" and store.metadata(7)["k0002"] == 1.0
    assert store.metadata(8) == {"category": "c8", "price": 8.0}
    rows = np.flatnonzero(store.mask(parse_filter("k0000 == 0 and k0003 == false")))
    assert rows.tolist() == [7]
    assert store.value_counts("k0001") == [("v1", 1)]
    # appending rows touches no sparse buffer
    store.append(np.zeros((5, 4), np.float32), list(range(20_000, 20_005)), [{}] * 5)
    assert store.columns["k0001"].sparse and len(store.columns["k0001"]) == store.n_rows


def test_a_sparse_column_becomes_dense_when_it_fills() -> None:
    store = Store(2)
    n = 64
    store.append(np.zeros((n, 2), np.float32), list(range(n)), [{}] * n)
    for i in range(n):
        store.update_metadata(i, {"tag": f"t{i % 3}"}, replace=False)
        assert store.columns["tag"].sparse == (i + 1 <= n * Column.DENSE_FILL)
    assert store.value_counts("tag") == [("t0", 22), ("t1", 21), ("t2", 21)]


# --------------------------------------------------------------------------- property

_VALUES = st.one_of(
    st.none(),
    st.integers(-5, 5),
    st.sampled_from([-1.5, 0.5, 2.0, 3.25]),
    st.sampled_from(["a", "b", "c"]),
    st.booleans(),
    st.just([1, 2]),
)
_FIELDS = ("p", "q", "r")
_META = st.dictionaries(st.sampled_from(_FIELDS), _VALUES, max_size=3)
_OPS = st.one_of(
    st.tuples(st.just("add"), st.lists(_META, min_size=1, max_size=6)),
    st.tuples(st.just("update"), st.integers(0, 50), _META, st.booleans()),
    st.tuples(st.just("upsert"), st.integers(0, 50), _META),
    st.tuples(st.just("remove"), st.integers(0, 50)),
    st.tuples(st.just("compact")),
)
_CONSTANTS = (0, 2, 2.5, "b", True, False)


def _expected(kind: str, op: str, const: Any, value: Any) -> bool:
    """Python's answer for one live value of a field of ``kind`` (no error)."""
    if value is None:
        return False
    if kind == "json":
        same = (isinstance(value, bool) == isinstance(const, bool)) and value == const
        return same if op == "==" else not same
    return bool(
        {"==": value == const, "!=": value != const, "<": value < const, ">=": value >= const}[op]
    )


def _fits(kind: str, op: str, const: Any) -> bool:
    """Whether the store answers (not a FilterError) ``field op const`` on ``kind``."""
    ck = kind_of(const)
    if kind == "json":
        return op in ("==", "!=")
    if kind == "str":
        return ck == "str"
    if kind == "bool":
        return ck == "bool" and op in ("==", "!=")
    return ck in ("int", "float")


@settings(max_examples=150, derandomize=True)
@given(ops=st.lists(_OPS, max_size=14), fill=st.sampled_from([1 / 16, 1 / 2, 1.0]))
def test_filters_over_the_store_equal_filters_over_the_live_metadata(
    ops: list[tuple[Any, ...]], fill: float
) -> None:
    saved_fill = Column.DENSE_FILL
    Column.DENSE_FILL = fill  # exercise sparse and dense columns alike
    try:
        _run(ops)
    finally:
        Column.DENSE_FILL = saved_fill


def _run(ops: list[tuple[Any, ...]]) -> None:
    store = Store(2)
    live: dict[int, dict[str, Any]] = {}
    next_id = 0

    def put(ids: list[int], metas: list[dict[str, Any]]) -> None:
        store.append(np.zeros((len(ids), 2), np.float32), ids, metas)
        for i, m in zip(ids, metas, strict=True):
            live[i] = {k: v for k, v in m.items() if v is not None}

    for op in ops:
        ids = sorted(live)
        if op[0] == "add":
            put(list(range(next_id, next_id + len(op[1]))), op[1])
            next_id += len(op[1])
        elif op[0] == "compact":
            store, _ = store.compacted()
            store.retype()
        elif not ids:
            continue
        else:
            item = ids[op[1] % len(ids)]
            if op[0] == "update":
                store.update_metadata(item, op[2], replace=op[3])
                merged = dict(op[2]) if op[3] else {**live[item], **op[2]}
                live[item] = {k: v for k, v in merged.items() if v is not None}
            elif op[0] == "upsert":
                store.kill([item])
                put([item], [op[2]])
            else:
                store.kill([item])
                del live[item]
        _check(store, live, compacted=op[0] == "compact")


def _check(store: Store, live: dict[int, dict[str, Any]], *, compacted: bool) -> None:
    for item, meta in live.items():
        assert store.metadata(store.row_of(item)) == meta
    fields = store.fields
    assert set(fields) == {k for m in live.values() for k in m}
    for name, kind in fields.items():
        kinds = {kind_of(m[name]) for m in live.values() if name in m}
        if compacted or not store.n_dead:  # the kind follows the live values
            narrow = "float" if kinds <= {"int", "float"} and len(kinds) == 2 else None
            expected = narrow or (next(iter(kinds)) if len(kinds) == 1 else "json")
            assert kind == expected or (kind == "float" and kinds <= {"int", "float"})
        if kind != "json":
            assert kinds <= ({"int", "float"} if kind == "float" else {kind})
        for op in ("==", "!=", "<", ">="):
            for const in _CONSTANTS:
                text = f"{name} {op} {const!r}".replace("True", "true").replace("False", "false")
                expr = parse_filter(text)
                if not _fits(kind, op, const):
                    with pytest.raises(FilterError):
                        store.mask(expr)
                    continue
                mask = store.mask(expr)
                got = {i for i in live if mask[store.row_of(i)]}
                want = {i for i, m in live.items() if _expected(kind, op, const, m.get(name))}
                assert got == want, (text, kind)
        if kind == "str":
            counts = Counter(m[name] for m in live.values() if name in m)
            assert dict(store.value_counts(name)) == dict(counts)
