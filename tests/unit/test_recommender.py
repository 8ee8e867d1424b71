"""Recommender: fit / add / remove / query / similar_to, filters, and catalogues on disk."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from visualsim import (
    CatalogError,
    ColorHistogramExtractor,
    ConfigError,
    DatasetItem,
    DuplicateIdError,
    FormatVersionError,
    ImageLoadError,
    NotFittedError,
    Recommendation,
    Recommender,
    UnknownIdError,
    register_extractor,
)
from visualsim.filters import FilterError

COLORS = {
    "red": (210, 30, 30),
    "green": (30, 170, 60),
    "blue": (30, 60, 200),
    "yellow": (230, 210, 40),
}
INDEX_TYPES = ["flat", "sklearn", "ivf", "hnsw", "ivfpq"]


def product(color: tuple[int, int, int], seed: int, size: int = 48) -> np.ndarray:
    """A coloured blob with noise on a white background."""
    rng = np.random.default_rng(seed)
    img = np.full((size, size, 3), 255, np.uint8)
    top, left = rng.integers(2, 12, size=2)
    shade = rng.integers(-25, 25, size=(size - 16, size - 16, 3))
    img[top : top + size - 16, left : left + size - 16] = np.clip(
        np.array(color) + shade, 0, 255
    ).astype(np.uint8)
    return img


def catalogue(per_color: int = 6) -> tuple[list[np.ndarray], list[str], list[dict[str, Any]]]:
    images, ids, meta = [], [], []
    for c, (name, rgb) in enumerate(COLORS.items()):
        for i in range(per_color):
            images.append(product(rgb, seed=100 * c + i))
            ids.append(f"{name}-{i}")
            meta.append({"color": name, "size": "S" if i % 2 else "L", "i": i})
    return images, ids, meta


@pytest.fixture
def rec() -> Recommender:
    images, ids, meta = catalogue()
    return Recommender(ColorHistogramExtractor(), "flat").fit(images, ids, meta, progress=False)


# -- fit and query -------------------------------------------------------------------


def test_red_items_nearest_neighbours_are_red(rec: Recommender) -> None:
    results = rec.query(product(COLORS["red"], seed=999), k=6)
    assert [r.metadata["color"] for r in results] == ["red"] * 6
    assert [r.rank for r in results] == [1, 2, 3, 4, 5, 6]
    scores = [r.score for r in results]
    assert scores == sorted(scores, reverse=True)
    assert all(-1.0 <= s <= 1.0001 for s in scores)


def test_query_returns_recommendations_with_metadata(rec: Recommender) -> None:
    top = rec.query(product(COLORS["blue"], seed=5), k=1)[0]
    assert isinstance(top, Recommendation)
    assert top.id.startswith("blue-") and top.metadata["color"] == "blue"
    assert top.to_dict()["metadata"]["color"] == "blue"
    top.metadata["color"] = "red"  # type: ignore[index]  # a copy: the catalogue is untouched
    assert rec.metadata_of(top.id)["color"] == "blue"
    json.dumps(top.to_dict())  # plain JSON types, no mappingproxy


def test_k_larger_than_catalogue_returns_everything(rec: Recommender) -> None:
    results = rec.query(product(COLORS["red"], seed=1), k=1000)
    assert len(results) == len(rec) == 24
    assert len({r.id for r in results}) == 24


def test_query_batch_equals_single_queries(rec: Recommender) -> None:
    queries = [product(COLORS["green"], seed=7), product(COLORS["yellow"], seed=8)]
    batch = rec.query_batch(queries, k=4)
    assert [[r.id for r in rs] for rs in batch] == [
        [r.id for r in rec.query(q, k=4)] for q in queries
    ]


def test_bad_query_image_raises_image_load_error(rec: Recommender, tmp_path: Path) -> None:
    with pytest.raises(ImageLoadError, match="missing.jpg"):
        rec.query(tmp_path / "missing.jpg")


def test_bad_k_and_empty_catalogue() -> None:
    empty = Recommender(ColorHistogramExtractor(), "flat")
    with pytest.raises(NotFittedError, match="empty"):
        empty.query(product(COLORS["red"], 0))
    images, ids, meta = catalogue(1)
    fitted = Recommender(ColorHistogramExtractor()).fit(images, ids, meta, progress=False)
    for k in (0, -1, 2.5, True):
        with pytest.raises(ConfigError, match="k must be"):
            fitted.query(images[0], k=k)  # type: ignore[arg-type]


# -- filters -------------------------------------------------------------------------


def test_where_dict_equality_and_any_of(rec: Recommender) -> None:
    red_query = product(COLORS["red"], seed=3)
    only_blue = rec.query(red_query, k=6, where={"color": "blue"})
    assert len(only_blue) == 6 and {r.metadata["color"] for r in only_blue} == {"blue"}
    both = rec.query(red_query, k=24, where={"color": ["blue", "green"], "size": "S"})
    assert len(both) == 6
    assert all(r.metadata["color"] in ("blue", "green") and r.metadata["size"] == "S" for r in both)


def test_where_callable_and_missing_key(rec: Recommender) -> None:
    results = rec.query(product(COLORS["red"], 3), k=5, where=lambda m: m["i"] >= 4)
    assert len(results) == 5 and all(r.metadata["i"] >= 4 for r in results)
    with pytest.raises(FilterError, match="no-such-key.*fields present: color, i, size"):
        rec.query(product(COLORS["red"], 3), k=5, where={"no-such-key": 1})


def test_where_searches_deeper_on_a_large_approximate_index() -> None:
    rng = np.random.default_rng(0)
    n = 6000
    ext = ColorHistogramExtractor(bins=(4, 2, 2))
    vectors = rng.normal(size=(n, ext.dim)).astype(np.float32)
    meta = [{"group": "rare" if i % 3 == 0 else "common"} for i in range(n)]
    rec = Recommender(ext, "hnsw").add_vectors(vectors, list(range(n)), meta)
    q = vectors[1]  # a "common" item: its nearest neighbours are mostly common
    results = rec.query_vector(q, k=50, where={"group": "rare"})
    assert len(results) == 50
    assert all(r.metadata["group"] == "rare" for r in results)
    rare = np.flatnonzero(np.arange(n) % 3 == 0)
    sims = (vectors[rare] / np.linalg.norm(vectors[rare], axis=1, keepdims=True)) @ (
        q / np.linalg.norm(q)
    )
    exact = set(rare[np.argsort(-sims)[:50]].tolist())
    assert len(exact & {r.id for r in results}) >= 45  # HNSW recall, filtered


def test_exclude_and_min_score(rec: Recommender) -> None:
    q = product(COLORS["red"], 4)
    first = rec.query(q, k=3)
    rest = rec.query(q, k=3, exclude=[first[0].id])
    assert first[0].id not in {r.id for r in rest}
    assert [r.id for r in rest][:2] == [r.id for r in first][1:]
    strong = rec.query(q, k=24, min_score=0.8)
    assert strong and all(r.score >= 0.8 for r in strong)
    assert {r.metadata["color"] for r in strong} == {"red"}


def test_similar_to_never_returns_the_item_itself(rec: Recommender) -> None:
    for item_id in rec.ids_:
        results = rec.similar_to(item_id, k=5)
        assert item_id not in [r.id for r in results]
        assert len(results) == 5
    assert {r.metadata["color"] for r in rec.similar_to("green-2", k=5)} == {"green"}
    with pytest.raises(UnknownIdError, match="nope"):
        rec.similar_to("nope")


def test_similar_to_excludes_self_even_with_an_exact_duplicate() -> None:
    img = product(COLORS["red"], 1)
    rec = Recommender(ColorHistogramExtractor()).fit(
        [img, img.copy(), product(COLORS["blue"], 2)], ["a", "b", "c"], progress=False
    )
    assert [r.id for r in rec.similar_to("a", k=2, distinct=False)] == ["b", "c"]
    # one result per photo (the default): b is a's photo again, so it never shows
    assert [r.id for r in rec.similar_to("a", k=2)] == ["c"]
    assert rec.find_duplicates(0.999) == [("a", "b", pytest.approx(1.0, abs=1e-5))]


# -- add / remove ------------------------------------------------------------------


def test_add_and_remove_keep_everything_in_step(rec: Recommender) -> None:
    extra = product(COLORS["red"], 555)
    rec.add([extra], ["red-new"], [{"color": "red"}], progress=False)
    assert len(rec) == 25 and rec.ids_[-1] == "red-new"
    assert rec.metadata_of("red-new")["color"] == "red"
    np.testing.assert_allclose(
        rec.vector_of("red-new"), ColorHistogramExtractor().extract([extra])[0], atol=1e-6
    )
    rec.remove(["red-0", "blue-3"])
    assert len(rec) == 23 == len(rec.ids_) == len(rec.metadata_) == rec.embeddings_.shape[0]
    assert "red-0" not in rec and "blue-3" not in rec
    assert len(rec.index_) == 23 and rec.index_.ids == rec.ids_
    for item_id, meta, vec in zip(rec.ids_, rec.metadata_, rec.embeddings_, strict=True):
        assert item_id.split("-")[0] == meta["color"]
        np.testing.assert_allclose(vec, rec.vector_of(item_id))
    results = rec.query(product(COLORS["blue"], 9), k=30)
    assert "blue-3" not in {r.id for r in results}


def test_add_then_remove_equals_never_added(rec: Recommender) -> None:
    q = product(COLORS["yellow"], 77)
    before = [(r.id, r.score) for r in rec.query(q, k=10)]
    rec.add([product(COLORS["yellow"], 78)], ["tmp"], progress=False).remove(["tmp"])
    after = [(r.id, r.score) for r in rec.query(q, k=10)]
    assert [i for i, _ in after] == [i for i, _ in before]
    np.testing.assert_allclose([s for _, s in after], [s for _, s in before], atol=1e-6)


def test_remove_unknown_id_changes_nothing(rec: Recommender) -> None:
    with pytest.raises(UnknownIdError, match="ghost"):
        rec.remove(["red-1", "ghost"])
    assert "red-1" in rec and len(rec) == 24


def test_duplicate_ids_refused_and_catalogue_unchanged(rec: Recommender) -> None:
    with pytest.raises(DuplicateIdError, match="red-1"):
        rec.add([product(COLORS["red"], 1)], ["red-1"], progress=False)
    with pytest.raises(DuplicateIdError, match="x"):
        rec.add([product(COLORS["red"], 1)] * 2, ["x", "x"], progress=False)
    assert len(rec) == 24 and "x" not in rec


def test_ids_and_metadata_must_align() -> None:
    images, _, _ = catalogue(1)
    with pytest.raises(ConfigError, match="ids ran out"):
        Recommender(ColorHistogramExtractor()).fit(images, ["a"], progress=False)
    with pytest.raises(ConfigError, match="more entries"):
        Recommender(ColorHistogramExtractor()).fit(images[:1], ["a", "b"], progress=False)


def test_fit_accepts_dataset_items_and_tuples_and_default_ids(tmp_path: Path) -> None:
    img = product(COLORS["green"], 3)
    path = tmp_path / "shirt.png"
    Image.fromarray(img).save(path)
    rec = Recommender(ColorHistogramExtractor()).fit(
        [
            DatasetItem("item-a", img, {"kind": "dataset"}),
            ("item-b", img, {"kind": "tuple"}),
            ("item-c", img),
            path,
            img,
        ],
        progress=False,
    )
    assert rec.ids_ == ["item-a", "item-b", "item-c", str(path), 4]
    assert rec.metadata_of("item-a")["kind"] == "dataset"
    assert "path" not in rec.metadata_of(str(path))  # paths live apart from metadata
    assert rec.source_of(str(path)) == str(path.resolve())
    assert rec.source_of("item-a") is None


def test_a_folder_with_bad_files_finishes_and_reports_them(tmp_path: Path) -> None:
    good = []
    for i, rgb in enumerate(COLORS.values()):
        p = tmp_path / f"good{i}.png"
        Image.fromarray(product(rgb, i)).save(p)
        good.append(p)
    (tmp_path / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is no jpeg")
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "notes.jpg").write_text("shopping list")
    paths = sorted(tmp_path.iterdir())
    rec = Recommender(ColorHistogramExtractor()).fit(paths, progress=False)
    assert len(rec) == 4
    failed = {Path(str(f.id)).name: f.reason for f in rec.failed_}
    assert set(failed) == {"corrupt.jpg", "empty.png", "notes.jpg"}
    assert "empty" in failed["empty.png"]
    assert "Recommender(" in repr(rec) and "failed=3" in repr(rec)


def test_on_error_raise_stops_and_stores_nothing(tmp_path: Path) -> None:
    (tmp_path / "bad.png").write_bytes(b"nope")
    rec = Recommender(ColorHistogramExtractor())
    with pytest.raises(ImageLoadError, match="bad.png"):
        rec.fit([product(COLORS["red"], 1), tmp_path / "bad.png"], on_error="raise", progress=False)
    assert len(rec) == 0


def test_views_are_read_only(rec: Recommender) -> None:
    with pytest.raises(ValueError):
        rec.embeddings_[0, 0] = 1.0
    ids = rec.ids_
    ids.append("zzz")
    assert "zzz" not in rec


# -- catalogue on disk -----------------------------------------------------------------


@pytest.mark.parametrize("index", INDEX_TYPES)
def test_save_load_gives_identical_answers(index: str, tmp_path: Path) -> None:
    images, ids, meta = catalogue(10)
    rec = Recommender(ColorHistogramExtractor(), index).fit(images, ids, meta, progress=False)
    path = rec.save(tmp_path / "cat")
    loaded = Recommender.load(path)
    assert loaded.ids_ == rec.ids_ and [dict(m) for m in loaded.metadata_] == meta
    assert type(loaded.index_) is type(rec.index_)
    np.testing.assert_array_equal(loaded.embeddings_, rec.embeddings_)
    for q in (product(COLORS["red"], 42), product(COLORS["blue"], 43)):
        a, b = rec.query(q, k=7), loaded.query(q, k=7)
        assert [r.id for r in a] == [r.id for r in b]
        np.testing.assert_allclose([r.score for r in a], [r.score for r in b], atol=1e-6)
    # the loaded catalogue keeps working: add and remove
    loaded.add([product(COLORS["red"], 1000)], ["later"], progress=False).remove(["red-0"])
    assert "later" in loaded and "red-0" not in loaded


def test_catalogue_is_a_readable_folder(rec: Recommender, tmp_path: Path) -> None:
    path = rec.save(tmp_path / "cat")
    names = {p.name for p in path.iterdir()}
    manifest = json.loads((path / "manifest.json").read_text())
    (chunk,) = manifest["chunks"]
    assert {"manifest.json", chunk["vectors"], chunk["ids"], chunk["metadata"]} <= names
    assert manifest["count"] == 24 and manifest["dim"] == rec.dim
    assert manifest["extractor"]["name"] == "color"
    assert manifest["index"]["name"] == "flat"
    assert manifest["fields"] == {"color": "str", "i": "int", "size": "str"}
    assert set(manifest["files"]) >= {chunk["vectors"], chunk["ids"], chunk["metadata"]}
    assert json.loads((path / chunk["ids"]).read_text()) == rec.ids_
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp left over


def test_load_with_another_index_and_mmap(rec: Recommender, tmp_path: Path) -> None:
    path = rec.save(tmp_path / "cat")
    q = product(COLORS["green"], 11)
    for other in ("sklearn", "hnsw"):
        loaded = Recommender.load(path, index=other, mmap=True)
        assert loaded.index_.name == other
        assert isinstance(loaded.embeddings_, np.memmap) or loaded.embeddings_.base is not None
        assert [r.id for r in loaded.query(q, k=5)] == [r.id for r in rec.query(q, k=5)]


def test_tampered_file_is_refused_with_its_name(rec: Recommender, tmp_path: Path) -> None:
    path = rec.save(tmp_path / "cat")
    # a dense string field is saved as typed columns: its values in columns.json
    meta = path / _chunk(path)["columns"]
    assert '"red"' in meta.read_text()
    meta.write_text(meta.read_text().replace('"red"', '"RED"'))
    with pytest.raises(CatalogError, match=r"columns\.json.*(checksum|SHA-256)"):
        Recommender.load(path)


def test_truncated_vectors_are_refused(rec: Recommender, tmp_path: Path) -> None:
    path = rec.save(tmp_path / "cat")
    vectors = path / _chunk(path)["vectors"]
    data = vectors.read_bytes()
    vectors.write_bytes(data[: len(data) // 2])
    with pytest.raises(CatalogError, match="vectors.npy"):
        Recommender.load(path)
    with pytest.raises(CatalogError, match="vectors.npy"):
        Recommender.load(path, verify=False)


def test_missing_file_and_not_a_catalogue(rec: Recommender, tmp_path: Path) -> None:
    path = rec.save(tmp_path / "cat")
    (path / _chunk(path)["ids"]).unlink()
    with pytest.raises(CatalogError, match=r"ids\.json.*(missing|does not exist)"):
        Recommender.load(path)
    with pytest.raises(CatalogError, match="does not exist"):
        Recommender.load(tmp_path / "nothing-here")
    (tmp_path / "plain").mkdir()
    with pytest.raises(CatalogError, match="manifest.json is missing"):
        Recommender.load(tmp_path / "plain")


def test_newer_format_version_is_refused(rec: Recommender, tmp_path: Path) -> None:
    path = rec.save(tmp_path / "cat")
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["format_version"] = 99
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(FormatVersionError, match="format version 99"):
        Recommender.load(path)


def test_save_refuses_to_overwrite_unless_asked(rec: Recommender, tmp_path: Path) -> None:
    path = rec.save(tmp_path / "cat")
    with pytest.raises(CatalogError, match="already exists"):
        rec.save(path)
    rec.remove(["red-0"])
    rec.save(path, overwrite=True)
    assert len(Recommender.load(path)) == 23


def test_a_crash_while_saving_leaves_no_half_catalogue(
    rec: Recommender, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = rec.save(tmp_path / "cat")

    def disk_full(directory: Path) -> None:
        raise OSError(28, "No space left on device")

    rec.remove(["red-0"])
    import visualsim.persistence as persistence

    real_write_npy = persistence.write_npy

    def disk_full_npy(target: Path, array: Any) -> None:
        if "dead-" in Path(target).name:
            raise OSError(28, "No space left on device")
        real_write_npy(target, array)

    monkeypatch.setattr(persistence, "write_npy", disk_full_npy)
    with pytest.raises(OSError, match="No space"):
        rec.save(path, overwrite=True)
    assert len(Recommender.load(path)) == 24  # the old catalogue is intact
    with pytest.raises(OSError):
        rec.save(tmp_path / "fresh")
    assert not (tmp_path / "fresh").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cat"]


def test_metadata_that_is_not_json_is_refused(tmp_path: Path) -> None:
    rec = Recommender(ColorHistogramExtractor())
    with pytest.raises(ConfigError, match="'obj'.*not JSON-safe"):
        rec.fit([product(COLORS["red"], 1)], ["a"], [{"obj": object()}], progress=False)
    assert len(rec) == 0


@settings(max_examples=15)
@given(
    ids=st.lists(
        st.one_of(st.text(min_size=1, max_size=8), st.integers(-(2**40), 2**40)),
        min_size=1,
        max_size=12,
        unique=True,
    ),
    extra=st.dictionaries(st.text(max_size=5), st.one_of(st.integers(), st.text(), st.booleans())),
)
def test_save_load_round_trips_arbitrary_ids_and_metadata(
    ids: list[Any], extra: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> None:
    rng = np.random.default_rng(len(ids))
    ext = ColorHistogramExtractor(bins=(4, 2, 2))
    vectors = rng.normal(size=(len(ids), ext.dim)).astype(np.float32)
    rec = Recommender(ext).add_vectors(vectors, ids, [extra] * len(ids))
    path = rec.save(tmp_path_factory.mktemp("rt") / "cat")
    loaded = Recommender.load(path)
    assert loaded.ids_ == ids
    assert [dict(m) for m in loaded.metadata_] == [extra] * len(ids)
    a = loaded.query_vector(vectors[0], k=len(ids))
    b = rec.query_vector(vectors[0], k=len(ids))
    assert [r.id for r in a] == [r.id for r in b]


# -- refit and resumable extraction ------------------------------------------------------


def test_fit_twice_starts_over_even_with_an_index_object() -> None:
    from visualsim import FlatIndex

    images, ids, meta = catalogue(2)
    rec = Recommender(ColorHistogramExtractor(), FlatIndex())
    rec.fit(images, ids, meta, progress=False).fit(images[:3], ids[:3], meta[:3], progress=False)
    assert len(rec) == 3 == len(rec.index_)


@register_extractor("test-counting-color", overwrite=True)
class CountingColor(ColorHistogramExtractor):
    """Counts how many images it prepares."""

    prepared = 0

    def _prepare(self, image: np.ndarray) -> np.ndarray:
        type(self).prepared += 1
        return super()._prepare(image)


def test_interrupted_fit_resumes_without_re_extracting(tmp_path: Path) -> None:
    images, ids, meta = catalogue(10)  # 40 inputs
    ckpt = tmp_path / "ckpt"

    def interrupted() -> Any:
        for n, img in enumerate(images):
            if n == 25:
                raise KeyboardInterrupt
            yield img

    ext = CountingColor(num_workers=0)
    with pytest.raises(KeyboardInterrupt):
        Recommender(ext).fit(
            interrupted(), ids, meta, batch_size=8, checkpoint_dir=ckpt, progress=False
        )
    assert (ckpt / "progress.json").is_file()
    done = json.loads((ckpt / "progress.json").read_text())["consumed"]
    assert done in (16, 24)  # whole batches of 8; the batch read ahead may be lost

    CountingColor.prepared = 0
    rec = Recommender(ext).fit(images, ids, meta, batch_size=8, checkpoint_dir=ckpt, progress=False)
    assert CountingColor.prepared == 40 - done  # only the rest was extracted
    assert rec.ids_ == ids and len(rec) == 40
    fresh = Recommender(ColorHistogramExtractor()).fit(images, ids, meta, progress=False)
    np.testing.assert_allclose(rec.embeddings_, fresh.embeddings_, atol=1e-6)
    assert [dict(m) for m in rec.metadata_] == meta
    assert not ckpt.exists()  # cleaned up once stored


def test_checkpoint_from_another_extractor_is_refused(tmp_path: Path) -> None:
    images, _, _ = catalogue(1)
    ckpt = tmp_path / "ckpt"

    def interrupted() -> Any:
        yield from images[:2]
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Recommender(ColorHistogramExtractor()).fit(
            interrupted(), batch_size=1, checkpoint_dir=ckpt, progress=False
        )
    with pytest.raises(CatalogError, match="made with extractor"):
        Recommender(ColorHistogramExtractor(bins=(4, 2, 2))).fit(
            images, checkpoint_dir=ckpt, progress=False
        )


# -- smaller catalogues: PCA reduction and float16 storage -----------------------------------


def clustered(n: int, dim: int, seed: int = 0) -> np.ndarray:
    """Unit vectors around 20 centres in a 24-dimensional subspace of ``dim``."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.normal(size=(dim, 24)))[0].T
    centres = rng.normal(size=(20, 24))
    x = (centres[rng.integers(0, 20, n)] + 0.3 * rng.normal(size=(n, 24))) @ basis
    x += 0.01 * rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_reduce_dim_stores_fewer_dimensions_and_keeps_neighbours(tmp_path: Path) -> None:
    x = clustered(600, ColorHistogramExtractor().dim)
    ids = list(range(600))
    full = Recommender(ColorHistogramExtractor()).add_vectors(x, ids)
    small = Recommender(ColorHistogramExtractor(), reduce_dim=32).add_vectors(x, ids)
    assert small.dim == 32 and small.embeddings_.shape == (600, 32)
    assert (
        small.reducer_.is_fitted and small.reducer_.n_features_in_ == ColorHistogramExtractor().dim
    )
    overlap = [
        len(
            {r.id for r in full.query_vector(x[i], k=10)}
            & {r.id for r in small.query_vector(x[i], k=10)}
        )
        for i in range(0, 600, 30)
    ]
    assert np.mean(overlap) >= 8.5  # recall@10 of the reduced catalogue against the full one
    loaded = Recommender.load(small.save(tmp_path / "cat"))
    assert (
        loaded.dim == 32
        and (tmp_path / "cat" / _manifest(tmp_path / "cat")["reducer_dir"]).is_dir()
    )
    for i in (0, 123, 599):
        assert [r.id for r in loaded.query_vector(x[i], k=5)] == [
            r.id for r in small.query_vector(x[i], k=5)
        ]


def test_reduced_catalogue_queries_images_through_the_reducer() -> None:
    images, ids, meta = catalogue(10)
    rec = Recommender(ColorHistogramExtractor(), reduce_dim=16).fit(
        images, ids, meta, progress=False
    )
    results = rec.query(product(COLORS["red"], 999), k=5)
    assert {r.metadata["color"] for r in results} == {"red"}
    assert rec.similar_to("blue-1", k=3)[0].metadata["color"] == "blue"


def test_float16_storage_halves_memory_and_round_trips(tmp_path: Path) -> None:
    x = clustered(300, ColorHistogramExtractor().dim)
    ids = [f"item-{i}" for i in range(300)]
    f32 = Recommender(ColorHistogramExtractor()).add_vectors(x, ids)
    f16 = Recommender(ColorHistogramExtractor(), storage="float16").add_vectors(x, ids)
    v16, v32 = f16._store_.vectors.view, f32._store_.vectors.view  # type: ignore[union-attr]
    assert v16.dtype == np.float16 and v16.nbytes * 2 == v32.nbytes
    assert f16.embeddings_.dtype == np.float32
    np.testing.assert_allclose(f16.embeddings_, f32.embeddings_, atol=1e-3)
    assert [r.id for r in f16.similar_to("item-7", k=5)] == [
        r.id for r in f32.similar_to("item-7", k=5)
    ]
    f16.remove(["item-0"])
    loaded = Recommender.load(f16.save(tmp_path / "cat"), mmap=True)
    assert (
        loaded.storage == "float16"
        and np.load(tmp_path / "cat" / _chunk(tmp_path / "cat")["vectors"]).dtype == np.float16
    )
    assert [r.id for r in loaded.similar_to("item-7", k=5)] == [
        r.id for r in f16.similar_to("item-7", k=5)
    ]
    with pytest.raises(ConfigError, match="storage"):
        Recommender(storage="int8")


def _chunk(path: Path) -> dict[str, Any]:
    """The first chunk of a saved catalogue (its file names)."""
    chunk: dict[str, Any] = json.loads((path / "manifest.json").read_text())["chunks"][0]
    return chunk


def _manifest(path: Path) -> dict[str, Any]:
    manifest: dict[str, Any] = json.loads((path / "manifest.json").read_text())
    return manifest


def test_load_refuses_an_extractor_that_embeds_differently(
    rec: Recommender, tmp_path: Path
) -> None:
    path = rec.save(tmp_path / "cat")
    other = ColorHistogramExtractor(size=64)  # same dimension, other vectors
    with pytest.raises(ConfigError, match="size"):
        Recommender.load(path, extractor=other)
    with pytest.warns(UserWarning, match="size"):
        loaded = Recommender.load(path, extractor=other, allow_mismatch=True)
    assert len(loaded) == len(rec)
    same = Recommender.load(path, extractor=ColorHistogramExtractor())
    assert same.ids_ == rec.ids_


def test_add_checks_for_duplicates_when_asked() -> None:
    from visualsim import DuplicateImageError

    images, ids, meta = catalogue(2)
    rec = Recommender(ColorHistogramExtractor()).fit(images, ids, meta, progress=False)
    noise = np.random.default_rng(5).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    again = [images[0], noise]
    with pytest.raises(DuplicateImageError, match=repr(ids[0])):
        rec.add(again, ["dup", "other"], progress=False, duplicates="error", min_score=0.999)
    assert "dup" not in rec and "other" not in rec
    rec.add(again, ["dup", "other"], progress=False, duplicates="skip", min_score=0.999)
    assert "dup" not in rec and "other" in rec
    assert [(a, b) for a, b, _ in rec.duplicates_] == [("dup", ids[0])]
    rec.add([images[1]], ["dup2"], progress=False, duplicates="report", min_score=0.999)
    assert "dup2" in rec and rec.duplicates_[0][:2] == ("dup2", ids[1])
    with pytest.raises(ConfigError, match="duplicates must be"):
        rec.add([images[1]], ["x"], progress=False, duplicates="drop")  # type: ignore[arg-type]


def test_adapt_returns_a_copy_whose_queries_and_additions_go_through_it(tmp_path: Path) -> None:
    from visualsim.adaptation import ProjectionAdapter

    rng = np.random.default_rng(0)
    ext = ColorHistogramExtractor()
    centres = rng.normal(size=(4, ext.dim))
    labels = rng.integers(0, 4, 200)
    x = centres[labels] + 2.0 * rng.normal(size=(200, ext.dim))
    rec = Recommender(ext).add_vectors(
        x.astype(np.float32), list(range(200)), [{"cat": int(c)} for c in labels]
    )
    adapted = rec.adapt(
        "cat", adapter=ProjectionAdapter(dim=32, hidden=64, epochs=3, min_steps=50, seed=0), seed=0
    )
    assert adapted is not rec and len(adapted) == 200 and adapted.transform_ is not None
    assert adapted.adaptation_report_ is not None
    v = rec.vector_of(3)
    expected = adapted.transform_.transform(v[None, :])[0]
    np.testing.assert_allclose(adapted.vector_of(3), expected / np.linalg.norm(expected), atol=1e-5)
    adapted.add_vectors(x[:1].astype(np.float32), ["new"], [{"cat": 0}])
    path = adapted.save(tmp_path / "adapted")
    loaded = Recommender.load(path)
    assert loaded.transform_ is not None
    np.testing.assert_allclose(loaded.vector_of("new"), adapted.vector_of("new"), atol=1e-6)
    q = x[5].astype(np.float32)
    assert [r.id for r in loaded.query_vector(q, 5)] == [r.id for r in adapted.query_vector(q, 5)]
