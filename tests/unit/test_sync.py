"""Syncing a catalogue with a feed, in the library (``Recommender.sync``) and from the CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from visualsim import (
    ColorHistogramExtractor,
    ConfigError,
    DatasetError,
    DuplicateIdError,
    FailedInput,
    ImageLoadError,
    ProductFeed,
    Recommender,
    SyncReport,
)
from visualsim.cli import main
from visualsim.extractors import base
from visualsim.sync import MISSING_REASON, MISSING_SOURCE

COLOURS = {
    "A": (220, 30, 30),
    "B": (30, 200, 40),
    "C": (40, 50, 210),
    "D": (230, 220, 30),
    "E": (200, 40, 200),
}


def _photo(path: Path, rgb: tuple[int, int, int]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 16), rgb).save(path)
    return path.name


def _feed(path: Path, rows: list[dict[str, Any]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, ["id", "image", "price", "in_stock"])
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture
def shop(tmp_path: Path) -> tuple[Path, list[dict[str, Any]]]:
    rows = []
    for i, (item_id, rgb) in enumerate(COLOURS.items()):
        image = _photo(tmp_path / f"{item_id}.png", rgb)
        rows.append({"id": item_id, "image": image, "price": 10.0 + i, "in_stock": "true"})
    return tmp_path, rows


@pytest.fixture
def extracted(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The ids of every image the extractor reads."""
    seen: list[Any] = []
    real = base.BaseExtractor.iter_batches

    def counting(self: base.BaseExtractor, items: Any, *args: Any, **kwargs: Any) -> Any:
        items = list(items)
        seen.extend(getattr(item, "id", None) for item in items)
        return real(self, items, *args, **kwargs)

    monkeypatch.setattr(base.BaseExtractor, "iter_batches", counting)
    return seen


def _fitted(root: Path, rows: list[dict[str, Any]]) -> Recommender:
    feed = ProductFeed(_feed(root / "products.csv", rows))
    return Recommender(ColorHistogramExtractor(), image_root=root).fit(feed, progress=False)


def test_new_changed_metadata_removed_and_unchanged(
    shop: tuple[Path, list[dict[str, Any]]], extracted: list[Any]
) -> None:
    root, rows = shop
    rec = _fitted(root, rows)
    before = {i: rec.vector_of(i) for i in rec.ids_}
    extracted.clear()

    rows = [dict(r) for r in rows]
    rows[1]["price"] = 99.5  # B: metadata only
    _photo(root / "C.png", (250, 250, 250))  # C: a new picture, same path
    del rows[3]  # D: gone from the feed
    rows.append({"id": "F", "image": _photo(root / "F.png", (10, 10, 10)), "price": 1.0,
                 "in_stock": "false"})  # fmt: skip
    report = rec.sync(_feed(root / "products.csv", rows), progress=False)

    assert isinstance(report, SyncReport)
    assert report.added == ["F"]
    assert report.updated_images == ["C"]
    assert report.updated_metadata == ["B"]
    assert report.removed == ["D"]
    assert report.unchanged == 2 and report.failed == []
    assert report.changed and not report.dry_run
    assert report.counts() == {
        "added": 1, "updated": 2, "removed": 1, "unchanged": 2, "failed": 0,
    }  # fmt: skip
    assert sorted(extracted) == ["C", "F"]  # nothing else was read by the model
    assert sorted(rec.ids_) == ["A", "B", "C", "E", "F"]
    assert rec.metadata_of("B")["price"] == 99.5
    assert rec.metadata_of("F") == {"price": 1.0, "in_stock": False}
    np.testing.assert_array_equal(rec.vector_of("A"), before["A"])
    np.testing.assert_array_equal(rec.vector_of("B"), before["B"])  # metadata only
    assert not np.array_equal(rec.vector_of("C"), before["C"])
    assert rec.query(root / "C.png", k=1)[0].id == "C"

    # the same feed again: nothing to do, nothing extracted
    extracted.clear()
    again = rec.sync(root / "products.csv", progress=False)
    assert again.counts() == {"added": 0, "updated": 0, "removed": 0, "unchanged": 5, "failed": 0}
    assert not again.changed and extracted == []


def test_a_bad_image_is_reported_and_does_not_stop_the_job(
    shop: tuple[Path, list[dict[str, Any]]],
) -> None:
    root, rows = shop
    rec = _fitted(root, rows)
    vector_b = rec.vector_of("B")
    (root / "B.png").write_bytes(b"not an image at all")  # B: changed, now unreadable
    (root / "bad.png").write_bytes(b"nor this")
    rows = [*rows, {"id": "G", "image": "bad.png", "price": 3.0, "in_stock": "true"},
            {"id": "H", "image": "nowhere.png", "price": 3.0, "in_stock": "true"},
            {"id": "I", "image": _photo(root / "I.png", (90, 90, 90)), "price": 3.0,
             "in_stock": "true"}]  # fmt: skip
    with pytest.warns(UserWarning):  # the feed warns about the file it cannot find
        feed = ProductFeed(_feed(root / "products.csv", rows))
    report = rec.sync(feed, progress=False)

    assert report.added == ["I"]  # the good new item went in
    assert report.updated_images == [] and report.removed == []
    assert {f.id for f in report.failed} == {"B", "G", "H"}
    reasons = {f.id: f.reason for f in report.failed}
    assert reasons["H"] == MISSING_REASON
    assert "not an image" in reasons["B"] and "not an image" in reasons["G"]
    assert report.counts()["failed"] == 3 and report.unchanged == 4
    # B is left as it was (not removed, same vector); G and H were never added
    assert "B" in rec and "G" not in rec and "H" not in rec
    np.testing.assert_array_equal(rec.vector_of("B"), vector_b)
    assert all(isinstance(f, FailedInput) for f in report.failed)
    assert {f.id: f.source for f in report.failed}["H"] == MISSING_SOURCE
    assert "bad.png" in {f.id: f.source for f in report.failed}["G"]
    assert json.loads(json.dumps(report.to_dict()))["counts"]["failed"] == 3


def test_on_error_raise_stops_at_the_first_unreadable_image(
    shop: tuple[Path, list[dict[str, Any]]],
) -> None:
    root, rows = shop
    rec = _fitted(root, rows)
    (root / "bad.png").write_bytes(b"junk")
    rows = [*rows, {"id": "G", "image": "bad.png", "price": 3.0, "in_stock": "true"}]
    with pytest.raises(ImageLoadError, match="bad.png"):
        rec.sync(_feed(root / "products.csv", rows), on_error="raise", progress=False)
    assert "G" not in rec and len(rec) == 5


def test_remove_missing_false_and_dry_run(shop: tuple[Path, list[dict[str, Any]]]) -> None:
    root, rows = shop
    rec = _fitted(root, rows)
    rows = [dict(r) for r in rows[:3]]
    rows[0]["price"] = 1.5
    feed = _feed(root / "products.csv", rows)

    plan = rec.sync(feed, dry_run=True, progress=False)
    assert plan.dry_run and not plan.changed
    assert plan.updated_metadata == ["A"] and plan.removed == ["D", "E"] and plan.unchanged == 2
    assert len(rec) == 5 and rec.metadata_of("A")["price"] == 10.0  # nothing changed

    kept = rec.sync(feed, remove_missing=False, progress=False)
    assert kept.removed == [] and kept.updated_metadata == ["A"]
    assert sorted(rec.ids_) == ["A", "B", "C", "D", "E"]
    assert rec.sync(feed, progress=False).removed == ["D", "E"]
    assert sorted(rec.ids_) == ["A", "B", "C"]


def test_records_tuples_and_dicts(shop: tuple[Path, list[dict[str, Any]]]) -> None:
    root, _ = shop
    red = (root / "A.png").read_bytes()
    green = (root / "B.png").read_bytes()
    rec = Recommender(ColorHistogramExtractor()).fit(
        [("a", red, {"price": 1}), ("b", green, {"price": 2})], progress=False
    )
    # bytes are hashed like files: the same bytes are unchanged, new metadata is an update
    report = rec.sync(
        [{"id": "a", "image": red, "price": 1}, ("b", green, {"price": 3}),
         {"id": "c", "image": str(root / "C.png")}],
        progress=False,
    )  # fmt: skip
    assert (report.added, report.updated_metadata, report.unchanged) == (["c"], ["b"], 1)
    assert rec.metadata_of("b") == {"price": 3}
    # an image with no recorded hash (an array) is always re-extracted
    pixels = np.zeros((8, 8, 3), np.uint8)
    rec.sync([("a", pixels), ("b", green, {"price": 3}), ("c", root / "C.png")], progress=False)
    assert rec.sync([("a", pixels)], remove_missing=False, progress=False).updated_images == ["a"]


def test_bad_feeds_are_refused_with_what_was_wrong(
    shop: tuple[Path, list[dict[str, Any]]],
) -> None:
    root, rows = shop
    rec = _fitted(root, rows)
    with pytest.raises(ConfigError, match=r"record 1 .*'id' and an 'image'"):
        rec.sync([{"id": "A", "image": "A.png"}, {"image": "B.png"}], progress=False)
    with pytest.raises(DuplicateIdError, match="'A'"):
        rec.sync([("A", root / "A.png"), ("A", root / "B.png")], progress=False)
    with pytest.raises(DatasetError, match="does not exist"):
        rec.sync(root / "nope.csv", progress=False)
    with pytest.raises(ConfigError, match="neither a folder nor a feed"):
        rec.sync(root / "A.png", progress=False)
    with pytest.raises(ConfigError, match="iterable of records"):
        rec.sync({"id": "A", "image": "A.png"}, progress=False)
    with pytest.raises(ConfigError, match="remove_missing"):
        rec.sync([], remove_missing="yes", progress=False)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="on_error"):
        rec.sync([], on_error="ignore", progress=False)  # type: ignore[arg-type]
    assert sorted(rec.ids_) == list(COLOURS)  # nothing changed by any of them


def test_a_feed_file_keeps_the_catalogues_column_kinds(tmp_path: Path) -> None:
    _photo(tmp_path / "a.png", (200, 0, 0))
    (tmp_path / "p.csv").write_text("id,image,price\nA1,a.png,9.5\n")
    rec = Recommender(ColorHistogramExtractor(), image_root=tmp_path)
    rec.fit(ProductFeed(tmp_path / "p.csv"), progress=False)
    (tmp_path / "p.csv").write_text("id,image,price\nA1,a.png,9\n")  # looks like an int now
    report = rec.sync(tmp_path / "p.csv", progress=False)
    assert report.updated_metadata == ["A1"]
    assert rec.fields_["price"] == "float" and rec.metadata_of("A1")["price"] == 9.0


# -- the command line: the same output as before the sync moved into the library ------


def _cli(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_sync_prints_the_same_lines(
    capsys: pytest.CaptureFixture[str], shop: tuple[Path, list[dict[str, Any]]]
) -> None:
    root, rows = shop
    feed = _feed(root / "products.csv", rows)
    catalog = root / "shop.catalog"
    code, _, err = _cli(capsys, "index", feed, "-o", catalog, "--extractor", "color", "-q")
    assert code == 0, err

    rows = [dict(r) for r in rows]
    rows[0]["price"] = 50.0
    _photo(root / "B.png", (5, 5, 5))
    del rows[4]
    (root / "junk.png").write_bytes(b"junk")
    rows += [{"id": "J", "image": "junk.png", "price": 1.0, "in_stock": "true"},
             {"id": "K", "image": "missing.png", "price": 1.0, "in_stock": "true"},
             {"id": "L", "image": _photo(root / "L.png", (1, 99, 1)), "price": 1.0,
              "in_stock": "true"}]  # fmt: skip
    _feed(feed, rows)
    manifest = (catalog / "manifest.json").read_text()

    code, out, err = _cli(capsys, "sync", catalog, feed, "--dry-run", "-q")
    assert code == 0
    assert out == (
        f"sync {catalog} from {feed} (dry run, nothing changed): "
        "2 added, 2 updated, 1 removed, 2 unchanged, 1 failed\n"
    )
    assert (catalog / "manifest.json").read_text() == manifest

    code, out, err = _cli(capsys, "sync", catalog, feed, "-q")
    assert code == 0
    assert (
        out == f"sync {catalog} from {feed}: 1 added, 2 updated, 1 removed, 2 unchanged, 2 failed\n"
    )
    failed_lines = err[err.index("2 could not be read and were skipped:") :].splitlines()
    assert failed_lines[0] == "2 could not be read and were skipped:"
    assert failed_lines[1] == f"  K: {MISSING_REASON}"
    assert failed_lines[2] == "  J: not an image (unrecognised format)"
    after = Recommender.load(catalog)
    assert sorted(after.ids_) == ["A", "B", "C", "D", "L"]
    assert after.metadata_of("A")["price"] == 50.0

    code, out, err = _cli(capsys, "sync", catalog, feed, "-q")
    assert (code, out) == (
        0,
        f"sync {catalog} from {feed}: 0 added, 0 updated, 0 removed, 5 unchanged, 2 failed\n",
    )
    # --strict: the first unreadable image stops the sync, exit 1, nothing saved
    manifest = (catalog / "manifest.json").read_text()
    code, out, err = _cli(capsys, "sync", catalog, feed, "-q", "--strict")
    assert code == 1 and out == "" and "junk.png" in err
    assert (catalog / "manifest.json").read_text() == manifest


def test_a_feed_file_with_other_column_names(tmp_path: Path) -> None:
    _photo(tmp_path / "a.png", (200, 0, 0))
    _photo(tmp_path / "b.png", (0, 0, 200))
    (tmp_path / "p.csv").write_text("sku,picture,price\nA1,a.png,9.5\n")
    rec = Recommender(ColorHistogramExtractor(), image_root=tmp_path)
    report = rec.sync(tmp_path / "p.csv", id_column="sku", image_column="picture", progress=False)
    assert report.added == ["A1"] and rec.metadata_of("A1") == {"price": 9.5}
    (tmp_path / "p.csv").write_text("sku,picture,price\nB2,b.png,3.0\n")
    report = rec.sync(str(tmp_path / "p.csv"), id_column="sku", image_column="picture",
                      progress=False)  # fmt: skip
    assert (report.added, report.removed) == (["B2"], ["A1"])
    with pytest.raises(DatasetError, match="'id'"):
        rec.sync(tmp_path / "p.csv", progress=False)  # no id column
    with pytest.raises(ConfigError, match="column names of a feed file|feed file's path"):
        rec.sync([("B2", tmp_path / "b.png")], id_column="sku", progress=False)
    with pytest.raises(ConfigError, match="is a folder"):
        rec.sync(tmp_path, id_column="sku", progress=False)
    with pytest.raises(ConfigError, match="id_column must be a column name"):
        rec.sync(tmp_path / "p.csv", id_column="", progress=False)
    assert rec.ids_ == ["B2"]


# -- HTTP: POST /sync re-reads the feed the operator chose, never one a client names -----

KEY = "sync-test-key-123"


def _client(catalog: Path, **options: Any) -> Any:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from visualsim.serve import create_app

    return TestClient(create_app(catalog, api_key=KEY, warm=False, **options))


def test_http_sync_reads_the_operators_feed(shop: tuple[Path, list[dict[str, Any]]]) -> None:
    root, rows = shop
    feed = _feed(root / "products.csv", rows)
    rec = _fitted(root, rows)
    catalog = rec.save(root / "shop.catalog")
    auth = {"Authorization": f"Bearer {KEY}"}
    rows = [dict(r) for r in rows]
    rows[0]["price"] = 1.25
    del rows[1]
    (root / "junk.png").write_bytes(b"junk")
    rows.append({"id": "J", "image": "junk.png", "price": 2.0, "in_stock": "true"})
    _feed(feed, rows)

    with _client(catalog, sync_feed=feed) as client:
        assert client.post("/sync").status_code == 401  # a write: the key is needed
        dry = client.post("/sync?dry_run=true", headers=auth)
        assert dry.status_code == 200, dry.text
        assert dry.json()["dry_run"] is True and dry.json()["counts"]["removed"] == 1
        assert client.get("/items/B").status_code == 200  # nothing changed yet

        reply = client.post("/sync", headers=auth)
        assert reply.status_code == 200, reply.text
        doc = reply.json()
        assert doc["updated_metadata"] == ["A"] and doc["removed"] == ["B"]
        assert doc["added"] == [] and doc["unchanged"] == 3 and doc["items"] == 4
        assert [f["id"] for f in doc["failed"]] == ["J"]
        assert sorted(doc["failed"][0]) == ["id", "reason"]  # no source: it names a server path
        assert str(root) not in reply.text  # no server path in the answer
        assert client.get("/items/B").status_code == 404
        assert client.get("/items/A").json()["metadata"]["price"] == 1.25
        assert client.post("/save", headers=auth).status_code == 200
    assert "B" not in Recommender.load(catalog)


def test_http_sync_refuses_a_feed_named_by_the_client(
    shop: tuple[Path, list[dict[str, Any]]],
) -> None:
    root, rows = shop
    feed = _feed(root / "products.csv", rows)
    catalog = _fitted(root, rows).save(root / "shop.catalog")
    # a feed the client would like read instead: it lists only A
    other = _feed(root / "other.csv", rows[:1])
    auth = {"Authorization": f"Bearer {KEY}"}
    with _client(catalog, sync_feed=feed) as client:
        for reply in (
            client.post(f"/sync?feed={other}", headers=auth),
            client.post("/sync", headers=auth, json={"feed": str(other)}),
            client.post("/sync", headers=auth, content=str(other).encode()),
        ):
            assert reply.status_code == 422, reply.text
            assert "--sync-feed" in reply.json()["detail"]
        assert client.get("/health").json()["items"] == 5  # nothing was removed
        assert client.post("/sync", headers=auth).json()["counts"]["unchanged"] == 5

    with _client(catalog) as client:  # started without a feed: off, and says how to turn it on
        reply = client.post(f"/sync?feed={other}", headers=auth)
        assert reply.status_code == 404 and "--sync-feed" in reply.json()["detail"]
        assert client.get("/health").json()["items"] == 5


def test_http_sync_options_are_checked_at_start_up(
    shop: tuple[Path, list[dict[str, Any]]],
) -> None:
    pytest.importorskip("fastapi")
    from visualsim.serve import create_app
    from visualsim.serve.server import build_parser, run

    root, rows = shop
    feed = _feed(root / "products.csv", rows)
    catalog = _fitted(root, rows).save(root / "shop.catalog")
    with pytest.raises(ConfigError, match="needs api_key"):
        create_app(catalog, warm=False, sync_feed=feed)
    with pytest.raises(ConfigError, match="needs workers=1"):
        create_app(catalog, api_key=KEY, warm=False, workers=2, sync_feed=feed)
    with pytest.raises(ConfigError, match="not a feed file"):
        create_app(catalog, api_key=KEY, warm=False, sync_feed=root / "A.png")
    with pytest.raises(ConfigError, match="not a feed file"):
        create_app(catalog, api_key=KEY, warm=False, sync_feed=root / "none.csv")
    with pytest.raises(ConfigError, match="sync_id_column must be a column name"):
        create_app(catalog, api_key=KEY, warm=False, sync_feed=feed, sync_id_column="")
    with pytest.raises(ConfigError, match="--sync-feed needs --workers 1"):
        run(catalog, workers=2, api_key_env="VISUALSIM_SYNC_TEST_KEY", sync_feed=feed)
    args = build_parser().parse_args(
        [str(catalog), "--sync-feed", str(feed), "--sync-id-column", "sku"]
    )
    assert (args.sync_feed, args.sync_id_column, args.sync_image_column) == (feed, "sku", "image")


def test_sync_options_name_exactly_the_keyword_options_of_sync() -> None:
    import inspect
    import typing

    from visualsim.sync import SyncOptions, sync

    keywords = {
        name: p.annotation
        for name, p in inspect.signature(sync).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }
    options = typing.get_type_hints(SyncOptions)
    assert set(options) == set(keywords)  # Recommender.sync(**options) reaches every one
    assert SyncOptions.__total__ is False  # each is optional, with sync's default
