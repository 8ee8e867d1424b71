"""A catalogue as lean as its index (issue 26): each thing kept once, read back without parsing.

- the HNSW index inside a catalogue is saved as its graph alone; its vectors come back
  from the chunks (``attach_vectors``), and the results are the ones before the save;
- the catalogue's own copy of the vectors is memory-mapped where the index keeps one;
- dense typed metadata columns are saved as arrays and read back to the same values,
  whatever sequence of adds, updates, widenings and saves made them;
- fingerprints of items added as vectors cost no memory;
- a few excluded ids are dropped after the search, with the results of a row mask.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import visualsim as vs
from visualsim.errors import CatalogError
from visualsim.indexes import load_index

DIM = 12


def _unit(n: int, seed: int = 0, dim: int = DIM) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _meta(i: int) -> dict[str, Any]:
    return {"category": f"c{i % 5}", "price": float(i % 17) / 2, "stock": i % 3 == 0, "n": i}


def _results(rec: vs.Recommender, q: np.ndarray, **kw: Any) -> list[tuple[Any, float]]:
    return [(r.id, round(r.score, 5)) for r in rec.query_vector(q, 8, **kw)]


def _index_dir(path: Path) -> Path:
    manifest = json.loads((path / "manifest.json").read_text())
    return path / manifest["index_dir"]


def test_the_hnsw_index_is_saved_as_its_graph_and_answers_the_same(tmp_path: Path) -> None:
    x = _unit(600)
    rec = vs.Recommender.from_vectors(
        x, [f"p{i}" for i in range(600)], [_meta(i) for i in range(600)], index="hnsw"
    )
    rec._segments_.flush(rec._store_)  # seal the rows into the graph (as past DELTA_LIMIT)
    queries = _unit(20, seed=1)
    before = [_results(rec, q) for q in queries]
    filtered = [_results(rec, q, where="category == 'c2'") for q in queries]
    path = rec.save(tmp_path / "cat")
    index_dir = _index_dir(path)
    names = {p.name for p in index_dir.iterdir()}
    assert "graph.faiss" in names and "index.faiss" not in names
    rec._segments_.index.save(tmp_path / "full")  # the same index with its vectors
    full = (tmp_path / "full" / "index.faiss").stat().st_size
    assert full - (index_dir / "graph.faiss").stat().st_size >= x.nbytes  # no second copy

    loaded = vs.Recommender.load(path)
    assert [_results(loaded, q) for q in queries] == before
    assert [_results(loaded, q, where="category == 'c2'") for q in queries] == filtered
    assert isinstance(loaded.embeddings_, np.memmap)  # the index keeps its own copy

    # it grows, seals its delta into the graph, and saves and loads again
    more = _unit(300, seed=2)
    loaded.upsert_vectors(more, [f"q{i}" for i in range(300)])
    loaded._segments_.flush(loaded._store_)  # seal the new rows into the graph now
    after = [_results(loaded, q) for q in queries]
    loaded.save(path, overwrite=True)
    again = vs.Recommender.load(path)
    assert [_results(again, q) for q in queries] == after
    assert len(again) == 900


def test_copy_or_map_the_catalogue_vectors(tmp_path: Path) -> None:
    x = _unit(200)
    ids = [f"p{i}" for i in range(200)]
    flat = vs.Recommender.from_vectors(x, ids, index="flat").save(tmp_path / "flat")
    rec = vs.Recommender.from_vectors(x, ids, index="hnsw")
    rec._segments_.flush(rec._store_)
    hnsw = rec.save(tmp_path / "hnsw")
    assert not isinstance(vs.Recommender.load(flat).embeddings_, np.memmap)  # it is the index
    assert isinstance(vs.Recommender.load(hnsw).embeddings_, np.memmap)
    assert not isinstance(vs.Recommender.load(hnsw, mmap=False).embeddings_, np.memmap)
    assert isinstance(vs.Recommender.load(flat, mmap=True).embeddings_, np.memmap)


def test_an_index_saved_without_vectors_needs_them_back(tmp_path: Path) -> None:
    x = _unit(400)
    index = vs.make_index("hnsw")
    index.add(x, list(range(400)))
    index.save(tmp_path / "graph", vectors=False)
    index.save(tmp_path / "full")
    assert (tmp_path / "graph" / "graph.faiss").exists()
    loaded: Any = load_index(tmp_path / "graph")
    assert loaded.needs_vectors
    for attempt in (
        lambda: loaded.search(x[:2], 3),
        lambda: loaded.add(x[:1], [999]),
        lambda: loaded.stored_vectors([3]),
        lambda: loaded.save(tmp_path / "again"),
    ):
        with pytest.raises(CatalogError, match="saved without its vectors"):
            attempt()
    with pytest.raises(CatalogError, match="returned shape"):
        loaded.attach_vectors(lambda labels: x[labels][:, :5])
    assert loaded.needs_vectors  # nothing attached by the failed try
    loaded.attach_vectors(lambda labels: x[labels])
    assert not loaded.needs_vectors
    full: Any = load_index(tmp_path / "full")
    s1, i1 = loaded.search(x[:10], 5)
    s2, i2 = full.search(x[:10], 5)
    assert i1 == i2 and np.allclose(s1, s2)
    assert np.array_equal(loaded.stored_vectors([7, 3]), x[[7, 3]])
    loaded.remove([5])  # rebuilds from the attached vectors
    loaded.add(x[:1], [1000])
    assert 5 not in loaded and 1000 in loaded
    # an index that cannot leave its vectors out saves them anyway
    flat = vs.make_index("flat")
    flat.add(x, list(range(400)))
    flat.save(tmp_path / "flat", vectors=False)
    assert load_index(tmp_path / "flat").search(x[:1], 1)[1] == [[0]]


def test_a_graph_file_that_holds_vectors_or_other_sizes_is_refused(tmp_path: Path) -> None:
    x = _unit(300)
    index = vs.make_index("hnsw")
    index.add(x, list(range(300)))
    index.save(tmp_path / "graph", vectors=False)
    index.save(tmp_path / "full")
    # the full index file where the graph should be: it holds vectors, so it is not a graph
    bad = tmp_path / "bad"
    shutil.copytree(tmp_path / "graph", bad)
    import faiss

    inner = faiss.read_index(str(tmp_path / "full" / "index.faiss"))
    faiss.write_index(faiss.downcast_index(inner.index), str(bad / "graph.faiss"))
    with pytest.raises(CatalogError, match="not an HNSW graph saved without its vectors"):
        load_index(bad, verify=False)
    # a graph of another size than the manifest says
    other = vs.make_index("hnsw")
    other.add(x[:100], list(range(100)))
    other.save(tmp_path / "small", vectors=False)
    shutil.copy(tmp_path / "small" / "graph.faiss", bad / "graph.faiss")
    with pytest.raises(CatalogError, match="links 100 vectors"):
        load_index(bad, verify=False)
    # an unknown value of state.vectors
    manifest = json.loads((tmp_path / "graph" / "manifest.json").read_text())
    manifest["state"]["vectors"] = "elsewhere"
    (tmp_path / "graph" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CatalogError, match="'inside' or 'outside'"):
        load_index(tmp_path / "graph", verify=False)


def test_items_added_as_vectors_cost_no_fingerprint_memory(tmp_path: Path) -> None:
    x = _unit(5000)
    rec = vs.Recommender.from_vectors(x, list(range(5000)))
    store = rec._store_
    assert not store.fingerprints.materialized
    assert store.fingerprints.view.shape == (5000, store.fingerprints.view.shape[1])
    assert not store.fingerprints.view.any()
    loaded = vs.Recommender.load(rec.save(tmp_path / "cat"))
    assert not loaded._store_.fingerprints.materialized
    assert len(loaded._store_.fingerprints.view) == 5000
    loaded.remove([0, 1])
    loaded.compact()
    assert not loaded._store_.fingerprints.materialized
    assert len(loaded._store_.fingerprints.view) == 4998


# --------------------------------------------------------------------------- typed columns

_values = st.one_of(
    st.none(),
    st.sampled_from(["a", "b", "c", "d"]),
    st.integers(-5, 5),
    st.floats(-10, 10, allow_nan=False).map(lambda v: round(v, 2)),
    st.booleans(),
    st.lists(st.integers(0, 3), max_size=2),
)
_field_style = st.sampled_from(["str", "int", "float", "bool", "any", "rare"])


def _value(style: str, draw_value: Any, rng: np.random.Generator, i: int) -> Any:
    if style == "rare":
        return "r" if i % 37 == 0 else None
    if style == "any":
        return draw_value
    return {
        "str": f"s{rng.integers(0, 4)}",
        "int": int(rng.integers(-3, 4)),
        "float": float(rng.integers(0, 8)) / 4,
        "bool": bool(rng.integers(0, 2)),
    }[style]


@given(
    styles=st.lists(_field_style, min_size=1, max_size=4),
    values=st.lists(_values, min_size=4, max_size=4),
    sizes=st.lists(st.integers(1, 60), min_size=1, max_size=3),
    updates=st.lists(st.tuples(st.integers(0, 200), st.integers(0, 3), _values), max_size=6),
    seed=st.integers(0, 1000),
)
def test_metadata_round_trips_through_every_save(
    tmp_path_factory: pytest.TempPathFactory,
    styles: list[str],
    values: list[Any],
    sizes: list[int],
    updates: list[tuple[int, int, Any]],
    seed: int,
) -> None:
    """Adds in several saves, updates of saved rows, kinds that widen: load equals memory."""
    rng = np.random.default_rng(seed)
    path = tmp_path_factory.mktemp("typed") / "cat"
    rec: vs.Recommender | None = None
    count = 0
    for size in sizes:
        metas = []
        for i in range(count, count + size):
            meta = {}
            for f, style in enumerate(styles):
                v = _value(style, values[f] if i % 2 else None, rng, i)
                if v is not None:
                    meta[f"f{f}"] = v
            metas.append(meta)
        x = _unit(size, seed=seed + count)
        ids = [f"p{i}" for i in range(count, count + size)]
        if rec is None:
            rec = vs.Recommender.from_vectors(x, ids, metas)
        else:
            rec.upsert_vectors(x, ids, metas)
        count += size
        rec.save(path, overwrite=True)
    assert rec is not None
    for row, f, v in updates:
        item = f"p{row % count}"
        rec.update_metadata(item, {f"f{f % len(styles)}": v})
    rec.save(path, overwrite=True)
    loaded = vs.Recommender.load(path)
    for i in range(count):
        item = f"p{i}"
        assert loaded.metadata_of(item) == rec.metadata_of(item), item
    assert loaded.fields_ == rec.fields_
    for store in (loaded._store_, rec._store_):  # results read a column at a time
        rows = list(range(store.n_rows))[::-1]
        assert store.metadata_rows(rows) == [store.metadata(r) for r in rows]
    for name, kind in rec.fields_.items():
        if kind in ("str", "int", "float", "bool"):
            value = next(
                v for i in range(count) if (v := rec.metadata_of(f"p{i}").get(name)) is not None
            )
            expr = f"`{name}` == {json.dumps(value)}"
            got = sorted(r.id for r in loaded.query_vector(_unit(1)[0], count, where=expr))
            want = sorted(r.id for r in rec.query_vector(_unit(1)[0], count, where=expr))
            assert got == want, expr


def test_typed_columns_are_arrays_on_disk(tmp_path: Path) -> None:
    n = 400
    rec = vs.Recommender.from_vectors(
        _unit(n), [f"p{i}" for i in range(n)], [_meta(i) for i in range(n)]
    )
    path = rec.save(tmp_path / "cat")
    chunk = json.loads((path / "manifest.json").read_text())["chunks"][0]
    spec = json.loads((path / chunk["columns"]).read_text())
    assert {f["name"]: f["kind"] for f in spec["fields"]} == {
        "category": "str",
        "price": "float",
        "stock": "bool",
        "n": "int",
    }
    assert (path / chunk["metadata"]).read_text() == "{}\n" * n  # nothing left per row
    loaded = vs.Recommender.load(path)
    assert list(loaded.metadata_of("p7")) == ["category", "price", "stock", "n"]  # saved order
    assert loaded.metadata_of("p7") == _meta(7)


def test_damaged_typed_columns_are_refused(tmp_path: Path) -> None:
    n = 50
    rec = vs.Recommender.from_vectors(
        _unit(n), [f"p{i}" for i in range(n)], [_meta(i) for i in range(n)]
    )
    path = rec.save(tmp_path / "cat")
    chunk = json.loads((path / "manifest.json").read_text())["chunks"][0]
    spec_file = path / chunk["columns"]
    spec = json.loads(spec_file.read_text())
    for f in spec["fields"]:
        if f["kind"] == "str":
            f["categories"] = f["categories"][:1]  # codes now point past the values
    spec_file.write_text(json.dumps(spec))
    with pytest.raises(CatalogError, match="out of range"):
        vs.Recommender.load(path, verify=False)
    spec["fields"][0]["column"] = 99
    spec_file.write_text(json.dumps(spec))
    with pytest.raises(CatalogError, match=r"fields\[0\] must name"):
        vs.Recommender.load(path, verify=False)


# --------------------------------------------------------------------------- exclusions


@given(
    n=st.integers(1, 60),
    k=st.integers(1, 12),
    excluded=st.lists(st.integers(0, 80), max_size=8),
    distinct=st.booleans(),
    seed=st.integers(0, 100),
)
def test_excluded_ids_give_the_results_of_a_row_mask(
    n: int, k: int, excluded: list[int], distinct: bool, seed: int
) -> None:
    """Dropping excluded ids after a deeper search equals the full ranking without them."""
    x = _unit(n, seed=seed)
    rec = vs.Recommender.from_vectors(x, list(range(n)), index="flat")
    q = _unit(1, seed=seed + 1)[0]
    skip = set(excluded)
    full = [r.id for r in rec.query_vector(q, n, distinct=False)]
    got = [r.id for r in rec.query_vector(q, k, exclude=excluded, distinct=distinct)]
    assert got == [i for i in full if i not in skip][:k]  # vectors only: no copies to fold
    seed_item = n - 1
    ranked = [r.id for r in rec.similar_to(seed_item, n, distinct=False)]
    similar = [r.id for r in rec.similar_to(seed_item, k, exclude=excluded, distinct=distinct)]
    assert seed_item not in ranked
    assert similar == [i for i in ranked if i not in skip][:k]


def test_sealed_rows_are_scored_from_the_index_copy(tmp_path: Path) -> None:
    """Exact scoring and similar_to read the index's copy: same answers, the map untouched."""
    n = 3000
    x = _unit(n, seed=3)
    rec = vs.Recommender.from_vectors(
        x, [f"p{i}" for i in range(n)], [_meta(i) for i in range(n)], index="hnsw"
    )
    rec._segments_.flush(rec._store_)
    path = rec.save(tmp_path / "cat")
    mapped = vs.Recommender.load(path)
    copied = vs.Recommender.load(path, mmap=False)
    seg, store = mapped._segments_, mapped._store_
    sealed = seg.sealed()
    assert sealed is not None and not sealed.flags.writeable
    assert np.array_equal(sealed, np.asarray(store.vectors.view))
    where = "category == 'c1' and price < 3"  # few rows: scored exactly
    for item in ("p0", "p17", "p2999"):
        assert _ids(mapped.similar_to(item, 7)) == _ids(copied.similar_to(item, 7))
        q = x[int(item[1:])]
        assert _ids(mapped.query_vector(q, 7, where=where)) == _ids(
            copied.query_vector(q, 7, where=where)
        )
    # an index whose labels are not its positions has no positional view
    index = vs.make_index("hnsw")
    index.add(x[:50], list(range(50)))
    assert index.positional_vectors() is not None
    index.remove([3])
    assert index.positional_vectors() is None


def _ids(results: list[Any]) -> list[Any]:
    return [r.id for r in results]


def test_one_per_photo_costs_nothing_where_nothing_can_be_a_copy() -> None:
    """Vectors alone (no fingerprint, no image hash): distinct results are the plain ranking."""
    x = _unit(300, seed=5)
    rec = vs.Recommender.from_vectors(x, list(range(300)), index="flat")
    store = rec._store_
    assert not store.may_hold_copies()
    q = _unit(1, seed=6)[0]
    assert _ids(rec.query_vector(q, 9)) == _ids(rec.query_vector(q, 9, distinct=False))
    # an item with an image hash makes copies possible again: the scan follows the adds
    rec._store_.append(x[:1], ["h"], [{}], sources=[None], hashes=["ab" * 32])
    assert store.may_hold_copies()


def test_read_rows_reads_a_npy_files_rows_in_order_and_names_a_short_file(tmp_path: Path) -> None:
    from visualsim import persistence as P

    x = _unit(50)
    np.save(tmp_path / "v.npy", x)
    offset = P.read_npy_header(tmp_path / "v.npy")[3]
    row = x.shape[1] * 4
    with open(tmp_path / "v.npy", "rb") as fh:
        assert np.array_equal(
            P.read_rows(fh, np.dtype("float32"), DIM, offset + 3 * row, 2), x[3:5]
        )
        assert np.array_equal(
            P.read_rows(fh, np.dtype("float32"), DIM, offset + 9 * row, 1), x[9:10]
        )
        with pytest.raises(CatalogError, match="truncated"):
            P.read_rows(fh, np.dtype("float32"), DIM, offset + 48 * row, 5)
