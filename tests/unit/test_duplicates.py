"""The duplicate detector: fingerprints, the candidate scan, groups, distinct results, add()."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageOps

from visualsim import ColorHistogramExtractor, Recommender, SyntheticProducts
from visualsim.duplicates import (
    DEFAULT_MIN_SCORE,
    FINGERPRINT_BYTES,
    DuplicateGroup,
    Summaries,
    distinct_rows,
    find_pairs,
    fingerprint,
    fingerprint_of,
    group_rows,
    match,
    pair_scores,
)
from visualsim.errors import ConfigError, DuplicateImageError
from visualsim.filters import FilterError

PRODUCTS = SyntheticProducts(40, seed=11, size=160)


def jpeg(image: Image.Image | np.ndarray, quality: int = 70) -> bytes:
    img = image if isinstance(image, Image.Image) else Image.fromarray(image)
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def reupload(image: np.ndarray, kind: str, quality: int = 85) -> bytes:
    """What a shop's re-upload looks like (the issue's protocol, and harder ones)."""
    img = Image.fromarray(image)
    w, h = img.size
    if kind == "issue":  # 90 % size, 3 % cut off one side, JPEG 70
        img = img.resize((int(w * 0.9), int(h * 0.9)), Image.Resampling.BICUBIC)
        w, h = img.size
        img = img.crop((0, 0, w - round(0.03 * w), h))
        return jpeg(img, quality)
    if kind == "border":
        return jpeg(ImageOps.expand(img, border=10, fill=(0, 0, 0)), 85)
    if kind == "mirror":
        return jpeg(ImageOps.mirror(img), 85)
    if kind == "upscale":
        return jpeg(img.resize((w * 3, h * 3), Image.Resampling.LANCZOS), 90)
    raise AssertionError(kind)


KINDS = ("issue", "border", "mirror", "upscale")


def test_fingerprint_shape_and_errors() -> None:
    fp = fingerprint(PRODUCTS[0].image)
    assert fp.shape == (FINGERPRINT_BYTES,) and fp.dtype == np.uint8
    with pytest.raises(ConfigError, match="RGB"):
        fingerprint(np.zeros((4, 4), np.uint8))
    with pytest.raises(ConfigError, match="uint8"):
        fingerprint(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ConfigError, match=r"min_score must be in \[0, 1\]"):
        find_pairs(fp[None], min_score=1.5)
    with pytest.raises(ConfigError, match="uint8 of shape"):
        find_pairs(np.zeros((2, 5), np.uint8))
    with pytest.raises(ConfigError, match="one flag per fingerprint"):
        find_pairs(np.stack([fp, fp]), valid=np.ones(3, bool))
    with pytest.raises(ConfigError, match="one flag per catalogue fingerprint"):
        match(fp[None], np.stack([fp, fp]), valid=np.ones(1, bool))


@pytest.mark.parametrize("kind", KINDS)
def test_reuploads_score_above_the_default_and_other_products_below(kind: str) -> None:
    originals = np.array([fingerprint(p.image) for p in PRODUCTS])
    copies = np.array([fingerprint_of(reupload(p.image, kind)) for p in PRODUCTS])
    own = pair_scores(copies, originals)
    # drawn products with saturated fine prints are harder than photos (measured on real
    # photos at >= 0.95 in benchmarks/bench_duplicates.py); most copies still pass here
    assert (own >= DEFAULT_MIN_SCORE).mean() >= 0.85, own
    # every copy's best match among the originals is its own
    n = len(PRODUCTS)
    grid = pair_scores(np.repeat(copies, n, axis=0), np.tile(originals, (n, 1))).reshape(n, n)
    assert (grid.argmax(axis=1) == np.arange(n)).all()


def test_same_shot_in_another_colour_is_not_a_duplicate() -> None:
    # the same studio shot of a pink and of a white shirt differs only in colour
    canvas = np.full((200, 200, 3), 255, np.uint8)
    pink, blue = canvas.copy(), canvas.copy()
    pink[40:170, 50:150] = (240, 190, 205)
    blue[40:170, 50:150] = (200, 215, 240)
    for shot in (pink, blue):
        shot[60:70, 60:140] = (40, 40, 40)  # the same print on both
    assert pair_scores(fingerprint(pink)[None], fingerprint(blue)[None])[0] < DEFAULT_MIN_SCORE
    again = fingerprint_of(jpeg(pink, 75))
    assert pair_scores(again[None], fingerprint(pink)[None])[0] >= DEFAULT_MIN_SCORE


def test_find_pairs_finds_every_copy_and_keys_pair_identical_files() -> None:
    originals = [fingerprint(p.image) for p in PRODUCTS]
    copies = [fingerprint_of(reupload(PRODUCTS[j].image, "upscale")) for j in range(10)]
    fps = np.array(originals + copies)
    a, b, s = find_pairs(fps)
    found = set(zip(a.tolist(), b.tolist(), strict=True))
    n = len(PRODUCTS)
    true = {(j, n + j) for j in range(10)}
    assert found <= true  # no look-alike among 40 different products is called a copy
    assert len(found & true) >= 9  # drawn prints are harder than photos (see above)
    assert (np.diff(s) <= 0).all()  # best first
    # rows without a fingerprint pair only by key (the same file stored twice)
    valid = np.ones(len(fps), bool)
    valid[[0, n]] = False
    keys: list[str | None] = [None] * len(fps)
    keys[0] = keys[5] = "same-bytes"
    a, b, s = find_pairs(fps, valid=valid, keys=keys)
    pairs = dict(zip(zip(a.tolist(), b.tolist(), strict=True), s.tolist(), strict=True))
    assert pairs[(0, 5)] == 1.0 and (0, n) not in pairs


@settings(max_examples=25, deadline=None)
@given(
    picks=st.lists(st.integers(0, 11), min_size=2, max_size=14),
    threshold=st.floats(0.85, 1.0),  # the candidate search is calibrated from 0.85 up
    mirror=st.lists(st.booleans(), min_size=14, max_size=14),
)
def test_scan_equals_brute_force(picks: list[int], threshold: float, mirror: list[bool]) -> None:
    """With enough candidates the indexed scan returns exactly the pairs a full matrix would."""
    base = [fingerprint(PRODUCTS[i].image) for i in range(12)]
    rows = [
        fingerprint(np.ascontiguousarray(PRODUCTS[i].image[:, ::-1])) if m else base[i]
        for i, m in zip(picks, mirror, strict=False)
    ]
    fps = np.array(rows)
    n = len(fps)
    a, b, s = find_pairs(fps, min_score=threshold, k=n)
    got = {(x, y): v for x, y, v in zip(a.tolist(), b.tolist(), s.tolist(), strict=True)}
    ia, ib = np.triu_indices(n, 1)
    scores = pair_scores(fps[ia], fps[ib])
    want = {
        (int(x), int(y)): float(v) for x, y, v in zip(ia, ib, scores, strict=True) if v >= threshold
    }
    assert got.keys() == want.keys()
    for key, value in want.items():
        assert got[key] == pytest.approx(value, abs=1e-5)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 15), st.integers(0, 15)), max_size=30))
def test_groups_are_connected_components(edges: list[tuple[int, int]]) -> None:
    edges = [(min(x, y), max(x, y)) for x, y in edges if x != y]
    a = np.array([e[0] for e in edges], np.int64)
    b = np.array([e[1] for e in edges], np.int64)
    scores = np.linspace(1.0, 0.9, len(edges)).astype(np.float32)
    groups = group_rows(16, a, b, scores)
    # a naive flood fill
    adjacency: dict[int, set[int]] = {}
    for x, y in edges:
        adjacency.setdefault(x, set()).add(y)
        adjacency.setdefault(y, set()).add(x)
    seen: set[int] = set()
    want = []
    for start in sorted(adjacency):
        if start in seen:
            continue
        stack, comp = [start], set()
        while stack:
            node = stack.pop()
            if node not in comp:
                comp.add(node)
                stack.extend(adjacency[node] - comp)
        seen |= comp
        want.append(sorted(comp))
    assert sorted(g for g, _ in groups) == sorted(want)
    for members, low in groups:
        inside = [float(s) for (x, y), s in zip(edges, scores, strict=True) if x in members]
        assert low == pytest.approx(min(inside))


def test_a_large_group_of_identical_files_is_one_group() -> None:
    """2,000 copies of one placeholder image: ~2M pairs, one group (members kept in a set:
    a list-membership scan made this take about a minute)."""
    m = 2000
    fps = np.zeros((m, FINGERPRINT_BYTES), np.uint8)
    a, b, s = find_pairs(fps, valid=np.zeros(m, bool), keys=["placeholder"] * m)
    assert len(a) == m * (m - 1) // 2
    assert group_rows(m, a, b, s) == [(list(range(m)), 1.0)]


def test_distinct_rows_keeps_the_first_of_each_photo() -> None:
    fps = np.array([fingerprint(PRODUCTS[i].image) for i in (0, 1, 0, 2, 1)])
    valid = np.ones(5, bool)
    keys: list[str | None] = [None] * 5
    assert distinct_rows([0, 1, 2, 3, 4], fps, valid, keys) == [0, 1, 3]
    assert distinct_rows([2, 3, 4], fps, valid, keys, seed=[0]) == [3, 4]
    keys = ["x", None, None, "x", None]
    valid[:] = False  # no fingerprints: only the same file (key) collapses
    assert distinct_rows([0, 1, 2, 3, 4], fps, valid, keys) == [0, 1, 2, 4]


def test_summaries_grow_with_the_catalogue_and_match_like_a_fresh_scan() -> None:
    fps = np.array([fingerprint(PRODUCTS[j].image) for j in range(20)])
    cache = Summaries()
    first = cache.update(fps[:7]).copy()
    grown = cache.update(fps)
    assert np.array_equal(grown[:7], first)
    assert np.allclose(grown, Summaries().update(fps))
    new = np.array([fingerprint_of(reupload(PRODUCTS[12].image, "upscale"))])
    plain = match(new, fps)
    cached = match(new, fps, summaries=grown)
    assert [x.tolist() for x in plain] == [x.tolist() for x in cached]
    assert cached[1].tolist() == [12]
    with pytest.raises(ConfigError, match="shrank"):
        cache.update(fps[:3])


def test_match_returns_best_catalogue_row() -> None:
    catalogue = np.array([fingerprint(PRODUCTS[j].image) for j in range(20)])
    new = np.array([fingerprint_of(reupload(PRODUCTS[7].image, "upscale")), catalogue[3]])
    rows, cat, scores = match(new, catalogue)
    assert rows.tolist() == [0, 1] and cat.tolist() == [7, 3]
    assert scores[1] == pytest.approx(1.0, abs=1e-5)
    valid = np.ones(20, bool)
    valid[7] = False
    rows, cat, _ = match(new, catalogue, valid=valid)
    assert 7 not in cat.tolist()


# --------------------------------------------------------------------------- the facade


@pytest.fixture(scope="module")
def rec() -> Recommender:
    products = SyntheticProducts(40, seed=11, size=160)
    r = Recommender(ColorHistogramExtractor()).fit(
        [jpeg(p.image, 92) for p in products],
        [p.id for p in products],
        [p.metadata for p in products],
        progress=False,
    )
    # the same photo under a second id (byte for byte), and a re-upload of another
    r.add([jpeg(products[0].image, 92)], ids=["twin-0"], progress=False)
    r.add([reupload(products[5].image, "upscale")], ids=["reupload-5"], progress=False)
    return r


def test_find_duplicates_and_groups(rec: Recommender) -> None:
    pairs = {(a, b) for a, b, _ in rec.find_duplicates()}
    first = PRODUCTS[0].id
    assert (first, "twin-0") in pairs and (PRODUCTS[5].id, "reupload-5") in pairs
    groups = rec.duplicate_groups()
    by_rep = {g.representative: g for g in groups}
    assert by_rep[first].members == [first, "twin-0"]
    assert isinstance(by_rep[first], DuplicateGroup)
    assert json.loads(json.dumps(by_rep[first].to_dict()))["members"] == [first, "twin-0"]
    assert rec.find_duplicates(1.0) == [(first, "twin-0", 1.0)]


def test_distinct_results_never_show_a_photo_twice(rec: Recommender) -> None:
    query = PRODUCTS[0].image
    every = [r.id for r in rec.query(query, k=6, distinct=False)]
    assert {PRODUCTS[0].id, "twin-0"} <= set(every)
    once = [r.id for r in rec.query(query, k=6)]
    assert len(once) == 6 and len({PRODUCTS[0].id, "twin-0"} & set(once)) == 1
    assert [r.rank for r in rec.query(query, k=6)] == list(range(1, 7))
    # similar_to: never a copy of the item itself
    assert "twin-0" in [r.id for r in rec.similar_to(PRODUCTS[0].id, k=3, distinct=False)]
    assert "twin-0" not in [r.id for r in rec.similar_to(PRODUCTS[0].id, k=3)]
    # one per field value
    field = next(iter(PRODUCTS[0].metadata))
    values = [r.metadata.get(field) for r in rec.query(query, k=5, distinct=field)]
    assert len(values) == len(set(values))
    with pytest.raises(FilterError, match="nope"):
        rec.query(query, distinct="nope")
    with pytest.raises(ConfigError, match="distinct must be"):
        rec.query(query, distinct=3)  # type: ignore[arg-type]


def test_add_checks_with_the_detector(rec: Recommender) -> None:
    copy = reupload(PRODUCTS[9].image, "upscale")
    fresh = jpeg(SyntheticProducts(3, seed=99, size=160)[2].image)
    n = len(rec)
    with pytest.raises(DuplicateImageError, match="reup-9"):
        rec.add([copy, fresh], ids=["reup-9", "fresh"], duplicates="error", progress=False)
    assert len(rec) == n
    rec.remove([PRODUCTS[1].id])
    rec.compact()  # a new store: the cached summaries start again
    rec.add(
        [copy, fresh, copy], ids=["reup-9", "fresh", "again"], duplicates="skip", progress=False
    )
    assert "fresh" in rec and "reup-9" not in rec and "again" not in rec
    # the best match of each: the catalogue item, and for the same file again the earlier one
    assert [(a, b) for a, b, _ in rec.duplicates_] == [
        ("reup-9", PRODUCTS[9].id),
        ("again", "reup-9"),
    ]
    rec.remove(["fresh"])


def test_fingerprints_survive_save_load_and_compaction(rec: Recommender, tmp_path: Path) -> None:
    before = rec.find_duplicates()
    rec.save(tmp_path / "c")
    loaded = Recommender.load(tmp_path / "c")
    assert loaded.find_duplicates() == before
    loaded.remove([PRODUCTS[3].id])
    loaded.compact()
    assert loaded.find_duplicates() == before
    # a catalogue saved without fingerprints (before they existed) still loads
    manifest_path = tmp_path / "c" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    for chunk in manifest["chunks"]:
        name = chunk.pop("fingerprints", None)
        if name:
            manifest["files"].pop(name)
    manifest_path.write_text(json.dumps(manifest))
    old = Recommender.load(tmp_path / "c")
    # without fingerprints only byte-identical files still pair
    assert old.find_duplicates() == [(PRODUCTS[0].id, "twin-0", 1.0)]


def test_items_added_as_vectors_have_no_fingerprint() -> None:
    r = Recommender(ColorHistogramExtractor())
    x = np.random.default_rng(0).random((3, ColorHistogramExtractor().dim)).astype(np.float32)
    r.add_vectors(np.vstack([x, x[:1]]), ["a", "b", "c", "d"])
    assert r.find_duplicates() == []
    assert len(r.query_vector(x[0], k=4)) == 4  # nothing collapses without fingerprints


# --------------------------------------------------------------------------- the command line


def cli(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    from visualsim.cli import main

    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def shop_catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from visualsim.cli import main

    root = tmp_path_factory.mktemp("dupshop")
    images = root / "images"
    images.mkdir()
    for j in range(12):
        (images / f"p{j:02d}.jpg").write_bytes(jpeg(PRODUCTS[j].image, 92))
    (images / "p03x-again.jpg").write_bytes(jpeg(PRODUCTS[3].image, 92))  # the same file
    (images / "p07x-upload.jpg").write_bytes(reupload(PRODUCTS[7].image, "upscale"))
    out = root / "shop.catalog"
    assert main(["index", str(images), "-o", str(out), "--extractor", "color", "-q"]) == 0
    return out


def test_cli_duplicates_pairs_groups_and_formats(
    capsys: pytest.CaptureFixture[str], shop_catalog: Path
) -> None:
    code, out, _ = cli(capsys, "duplicates", shop_catalog)
    assert code == 0
    assert out.splitlines()[-1] == "2 pairs with score >= 0.9"
    assert "p03.jpg  p03x-again.jpg" in out and "p07.jpg  p07x-upload.jpg" in out
    code, out, _ = cli(capsys, "duplicates", shop_catalog, "--groups", "--json")
    groups = json.loads(out)
    assert {g["representative"] for g in groups} == {"p03.jpg", "p07.jpg"}
    assert all(len(g["members"]) == 2 for g in groups)
    code, out, _ = cli(capsys, "duplicates", shop_catalog, "--groups", "--format", "csv")
    lines = out.splitlines()
    assert lines[0] == "group,id,representative,score" and len(lines) == 5
    code, out, _ = cli(capsys, "duplicates", shop_catalog, "--format", "csv", "--min-score", "1")
    assert out.splitlines() == ["a,b,score", "p03.jpg,p03x-again.jpg,1.0000"]
    code, _, err = cli(capsys, "duplicates", shop_catalog, "--min-score", "2")
    assert code == 2 and "--min-score" in err and "[0, 1]" in err
    code, _, err = cli(capsys, "duplicates", shop_catalog, "--json", "--format", "csv")
    assert code == 2 and "disagree" in err


def test_cli_query_one_result_per_photo(
    capsys: pytest.CaptureFixture[str], shop_catalog: Path
) -> None:
    image = shop_catalog.parent / "images" / "p03.jpg"
    code, out, _ = cli(capsys, "query", shop_catalog, image, "-k", "3", "--json")
    ids = [r["id"] for r in json.loads(out)["results"]]
    assert len(ids) == 3 and len({"p03.jpg", "p03x-again.jpg"} & set(ids)) == 1
    code, out, _ = cli(capsys, "query", shop_catalog, image, "-k", "3", "--all", "--json")
    ids = [r["id"] for r in json.loads(out)["results"]]
    assert {"p03.jpg", "p03x-again.jpg"} <= set(ids)
    code, out, _ = cli(capsys, "similar", shop_catalog, "p03.jpg", "-k", "3", "--json")
    assert "p03x-again.jpg" not in [r["id"] for r in json.loads(out)["results"]]
    code, _, err = cli(capsys, "query", shop_catalog, image, "--distinct-by", "nope")
    assert code == 2 and "--distinct-by" in err and "nope" in err
