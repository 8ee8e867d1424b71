"""Partitions (``partition_by``): per-value indexes that answer equality filters, exactly as
the main index would, through moves, saves, loads and hostile partition files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import visualsim.search as search
from support import VectorExtractor, _unit
from visualsim import CatalogError, ConfigError, Recommender
from visualsim.filters import parse_filter
from visualsim.search import implied_values

CATS = ["shoes", "bags", "hats", "belts"]


@pytest.fixture
def index_path_always(monkeypatch: pytest.MonkeyPatch) -> None:
    """Send even a few allowed rows through the (partition) indexes, not the exact scan."""
    monkeypatch.setattr(search, "EXACT_LIMIT", 0)
    monkeypatch.setattr(search, "EXACT_WORK", 0)


def _catalogue(n: int = 400, *, index: str = "hnsw", seed: int = 0) -> tuple[Recommender, Any]:
    rng = np.random.default_rng(seed)
    x = _unit(rng, n)
    meta = [{"category": CATS[i % 4], "price": float(i % 50), "stock": i % 3} for i in range(n)]
    rec = Recommender(VectorExtractor(), index, partition_by="category")
    rec.add_vectors(x, list(range(n)), meta).compact()
    return rec, rng


def _truth(rec: Recommender, q: np.ndarray, k: int, pred: Any) -> list[Any]:
    scored = [(float(rec.vector_of(i) @ q), i) for i in rec.ids_ if pred(rec.metadata_of(i))]
    scored.sort(key=lambda t: (-t[0], t[1]))
    return [i for _, i in scored[:k]]


def _calls(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    calls = {"parts": 0}
    real = search.Segments._search_parts

    def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls["parts"] += 1
        return real(self, *args, **kwargs)

    monkeypatch.setattr(search.Segments, "_search_parts", counted)
    return calls


@pytest.mark.parametrize(
    ("text", "values"),
    [
        ("category == 'a'", {"a"}),
        ("category in ['a', 'b'] and price < 5", {"a", "b"}),
        ("price < 5 and category == 'a'", {"a"}),
        ("category in ['a', 'b'] and category == 'b'", {"b"}),
        ("category == 'a' or category in ['c']", {"a", "c"}),
        ("category == 'a' or price < 5", None),
        ("category != 'a'", None),
        ("not category == 'a'", None),
        ("category not in ['a']", None),
        ("price == 3", None),
        ("(category == 'a' and stock > 1) or (category == 'b' and price < 3)", {"a", "b"}),
    ],
)
def test_implied_values_are_exactly_what_a_match_must_hold(text: str, values: Any) -> None:
    assert implied_values(parse_filter(text), "category") == values


def test_equality_filters_search_the_partitions_and_agree_with_brute_force(
    monkeypatch: pytest.MonkeyPatch, index_path_always: None
) -> None:
    rec, rng = _catalogue()
    calls = _calls(monkeypatch)
    parts = rec._segments_.partitions  # type: ignore[union-attr]
    assert parts is not None and sorted(parts.parts) == sorted(CATS)
    assert sum(len(p.rows.view) for p in parts.order) == len(rec)
    for where, pred in [
        ("category == 'bags'", lambda m: m["category"] == "bags"),
        (
            "category in ['hats', 'belts'] and price < 20",
            lambda m: m["category"] in ("hats", "belts") and m["price"] < 20,
        ),
        ("category == 'shoes' or category == 'bags'", lambda m: m["category"] in ("shoes", "bags")),
    ]:
        for q in _unit(rng, 5):
            got = [r.id for r in rec.query_vector(q, 10, where=where)]
            want = _truth(rec, q, 10, pred)
            assert len(got) == 10
            # HNSW is approximate: nearly all of the true top 10, and only matching items
            assert len(set(got) & set(want)) >= 8
            assert all(pred(rec.metadata_of(i)) for i in got)
    assert calls["parts"] == 15
    rec.query_vector(_unit(rng, 1)[0], 5, where="price < 3")  # no category: the main index
    assert calls["parts"] == 15


def test_a_moved_item_is_found_under_its_new_value_and_never_under_its_old(
    index_path_always: None,
) -> None:
    rec, _ = _catalogue(200)
    item = 8  # a "shoes" item
    assert rec.metadata_of(item)["category"] == "shoes"
    rec.update_metadata(item, {"category": "scarves"})  # a value with no partition yet
    q = rec.vector_of(item)
    assert rec.query_vector(q, 1, where="category == 'scarves'")[0].id == item
    assert item not in [r.id for r in rec.query_vector(q, 50, where="category == 'shoes'")]
    rec.update_metadata(item, {"category": "bags"})
    hits = rec.query_vector(q, 3, where="category in ['bags', 'shoes']")
    assert hits[0].id == item and [r.id for r in hits].count(item) == 1
    rec.update_metadata(item, {"category": "shoes"})  # back where it is indexed
    assert rec._segments_.partitions.moved == set()  # type: ignore[union-attr]
    assert rec.query_vector(q, 1, where="category == 'shoes'")[0].id == item


def test_removed_items_and_new_arrivals_are_honoured(index_path_always: None) -> None:
    rec, rng = _catalogue(200)
    q = rec.vector_of(1)  # "bags"
    rec.remove([1])
    assert 1 not in [r.id for r in rec.query_vector(q, 20, where="category == 'bags'")]
    fresh = _unit(rng, 1)
    rec.add_vectors(fresh, ["new"], [{"category": "bags", "price": 1.0, "stock": 1}])
    assert rec.query_vector(fresh[0], 1, where="category == 'bags'")[0].id == "new"


def test_save_and_load_keep_the_partitions_and_their_moves(tmp_path: Path) -> None:
    rec, rng = _catalogue(300)
    rec.update_metadata(4, {"category": "bags"})  # a "shoes" item
    folder = rec.save(tmp_path / "cat")
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["partition_by"] == "category"
    assert (folder / manifest["partitions_dir"] / "manifest.json").is_file()
    again = Recommender.load(folder)
    parts = again._segments_.partitions  # type: ignore[union-attr]
    assert again.partition_by == "category" and parts is not None
    assert parts.moved == {4} and sorted(parts.parts) == sorted(CATS)
    for q in _unit(rng, 4):
        for where in ("category == 'bags'", "category == 'hats' and stock == 1"):
            assert [r.id for r in again.query_vector(q, 10, where=where)] == [
                r.id for r in rec.query_vector(q, 10, where=where)
            ]
    # an incremental save that changed nothing indexed keeps the partitions' folder
    again.update_metadata(7, {"price": 2.0})
    again.save(folder, overwrite=True)
    assert (
        json.loads((folder / "manifest.json").read_text())["partitions_dir"]
        == manifest["partitions_dir"]
    )


def _saved(tmp_path: Path) -> tuple[Path, Path, dict[str, Any]]:
    rec, _ = _catalogue(120)
    folder = rec.save(tmp_path / "cat")
    manifest = json.loads((folder / "manifest.json").read_text())
    pdir = folder / manifest["partitions_dir"]
    return folder, pdir, json.loads((pdir / "manifest.json").read_text())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda pm, d: pm["parts"][0].update(key=7), "is not a new str value"),
        (lambda pm, d: pm["parts"][1].update(key=pm["parts"][0]["key"]), "is not a new str"),
        (lambda pm, d: pm["parts"][0].update(count=pm["parts"][0]["count"] + 1), "shape"),
        (lambda pm, d: pm.update(field="price"), "partitions of 'price'"),
        (lambda pm, d: pm.update(rows=5), "rows"),
        (lambda pm, d: pm["parts"][0].update(rows="../../etc/passwd"), "inside itself"),
        (
            lambda pm, d: np.save(d / pm["parts"][0]["rows"], np.full(30, 10**9, np.int64)),
            "rows are not new increasing rows",
        ),
        (
            lambda pm, d: np.save(d / pm["parts"][1]["rows"], np.load(d / pm["parts"][0]["rows"])),
            "rows are not new increasing rows",
        ),
        (lambda pm, d: pm.update(parts="all"), "must be a list"),
        (lambda pm, d: pm.update(format="pickle"), "not a visualsim.partitions manifest"),
    ],
)
def test_damaged_or_hostile_partitions_are_refused_clearly(
    tmp_path: Path, change: Any, message: str
) -> None:
    folder, pdir, pm = _saved(tmp_path)
    change(pm, pdir)
    (pdir / "manifest.json").write_text(json.dumps(pm))
    # the checksums would catch a tampered file first: check the partitions' own checks
    with pytest.raises(CatalogError, match=message):
        Recommender.load(folder, verify=False)


def test_swapped_partition_graphs_never_hold_other_rows_vectors(tmp_path: Path) -> None:
    """A partition's index is saved as its graph; its vectors always come from its rows.

    So a stranger who swaps two partitions' graphs (with matching checksums) cannot
    make a partition answer with other rows' vectors: every result still matches the
    filter and carries its true cosine; at worst the graph's links find less.
    """
    import hashlib

    folder, pdir, pm = _saved(tmp_path)
    for entry in pm["parts"]:
        assert (pdir / entry["dir"] / "graph.faiss").exists()  # no second copy of vectors
    pm["parts"][0]["dir"], pm["parts"][1]["dir"] = pm["parts"][1]["dir"], pm["parts"][0]["dir"]
    (pdir / "manifest.json").write_text(json.dumps(pm))
    manifest = json.loads((folder / "manifest.json").read_text())
    for rel in manifest["files"]:  # a stranger's file carries matching checksums
        manifest["files"][rel] = hashlib.sha256((folder / rel).read_bytes()).hexdigest()
    (folder / "manifest.json").write_text(json.dumps(manifest))
    rec = Recommender.load(folder)
    x = {i: rec.vector_of(i) for i in rec.ids_}
    q = x[rec.ids_[0]]
    for key in (pm["parts"][0]["key"], pm["parts"][1]["key"]):
        hits = rec.query_vector(q, 5, where=f"category == {key!r}", distinct=False)
        assert hits and all(h.metadata["category"] == key for h in hits)
        for h in hits:
            assert h.score == pytest.approx(float(x[h.id] @ q), abs=1e-5)


def test_a_field_that_stops_being_partitionable_falls_back_to_the_main_index(
    index_path_always: None,
) -> None:
    rec, rng = _catalogue(200)
    rec.update_metadata(3, {"category": ["a", "list"]})  # the column becomes json
    q = _unit(rng, 1)[0]
    got = [r.id for r in rec.query_vector(q, 10, where="stock == 1")]
    assert len(got) == 10
    rec.add_vectors(_unit(rng, 1), ["later"], [{"category": "bags", "price": 1.0, "stock": 1}])
    rec.compact()  # rebuilds: the json field gives no partitions, the catalogue still works
    assert rec._segments_.partitions is not None  # type: ignore[union-attr]
    assert not rec._segments_.partitions.usable  # type: ignore[union-attr]
    assert rec.query_vector(q, 5, where="stock == 1")


def test_partition_by_must_name_a_field() -> None:
    with pytest.raises(ConfigError, match="partition_by"):
        Recommender(VectorExtractor(), "hnsw", partition_by="")


def test_exact_catalogues_need_no_partitions(tmp_path: Path) -> None:
    rec, rng = _catalogue(50, index="flat")
    assert rec._segments_.partitions is None  # type: ignore[union-attr]
    again = Recommender.load(rec.save(tmp_path / "flat"))
    assert again.partition_by == "category"
    q = _unit(rng, 1)[0]
    assert [r.id for r in again.query_vector(q, 5, where="category == 'bags'")] == _truth(
        again, q, 5, lambda m: m["category"] == "bags"
    )


def test_compact_with_nothing_removed_does_not_rebuild_hnsw() -> None:
    rec, rng = _catalogue(100)
    index = rec._segments_.index  # type: ignore[union-attr]
    rec.add_vectors(_unit(rng, 3), ["a", "b", "c"], [{"category": "bags"}] * 3)
    rec.compact()
    seg = rec._segments_
    assert seg is not None and seg.index is index and seg.indexed_upto == 103
    assert len(seg.partitions.parts["bags"].rows.view) == 28  # type: ignore[union-attr]
    rec.remove(["a"])
    rec.compact()
    assert rec._segments_.index is not index  # type: ignore[union-attr]
