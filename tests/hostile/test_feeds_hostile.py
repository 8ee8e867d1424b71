"""A feed from a stranger (issue 28, item 4): its image paths stay under the feed's root
unless the caller allows more, and what it costs to read follows its size, with a
row/column budget refused by row before per-row-per-column memory is spent."""

from __future__ import annotations

import json
import os
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from visualsim.cli import main
from visualsim.datasets import csv as table
from visualsim.errors import DatasetError
from visualsim.feeds import ProductFeed


def _png(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((16, 16, 3), 90, dtype=np.uint8)).save(path)
    return path


def _csv(path: Path, images: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = "".join(f"P{i},{image}\n" for i, image in enumerate(images))
    path.write_text("id,image\n" + rows)
    return path


@pytest.fixture
def shop(tmp_path: Path) -> Path:
    _png(tmp_path / "shop" / "img" / "a.png")
    _png(tmp_path / "secret" / "key.png")  # a file the feed must not reach
    return tmp_path / "shop"


def _escapes(shop: Path) -> dict[str, str]:
    secret = (shop.parent / "secret" / "key.png").resolve()
    (shop / "img" / "link.png").symlink_to(secret)
    (shop / "linked").symlink_to(secret.parent, target_is_directory=True)
    return {
        "dotdot": "../secret/key.png",
        "absolute": os.fspath(secret),
        "symlinked file": "img/link.png",
        "symlinked folder": "linked/key.png",
    }


def test_image_paths_outside_the_feed_folder_are_refused_naming_the_row(shop: Path) -> None:
    for how, image in _escapes(shop).items():
        feed = _csv(shop / "products.csv", ["img/a.png", image])
        with pytest.raises(DatasetError, match=r"row 3: image .* lies outside") as caught:
            ProductFeed(feed)
        assert "allow_outside=True" in str(caught.value), how
        # also with check_files=False: refusing is not about existence
        with pytest.raises(DatasetError, match="lies outside"):
            ProductFeed(feed, check_files=False)
        allowed = ProductFeed(feed, allow_outside=True)  # the caller trusts this feed
        assert len(allowed) == 2, how


def test_a_root_the_caller_names_is_the_allowed_folder(shop: Path) -> None:
    feed = _csv(shop / "feeds" / "products.csv", [os.fspath((shop / "img" / "a.png").resolve())])
    with pytest.raises(DatasetError, match="lies outside"):
        ProductFeed(feed)
    assert ProductFeed(feed, root=shop).source_of(0) == "img/a.png"
    inside = _csv(shop / "p.csv", ["img/./a.png", "img/../img/a.png"])
    assert len(ProductFeed(inside)) == 2  # a '..' that stays inside is fine


def test_cli_refuses_outside_images_unless_allowed(
    shop: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    feed = _csv(shop / "products.csv", ["img/a.png", "../secret/key.png"])
    args = ["index", str(feed), "-o", str(tmp_path / "c"), "--extractor", "color", "-q"]
    code = main(args)
    _, err = capsys.readouterr()
    assert code != 0 and "row 3" in err and "--allow-outside-images" in err
    assert not (tmp_path / "c").exists()
    assert main([*args, "--allow-outside-images"]) == 0, capsys.readouterr().err


def test_one_row_with_fifty_thousand_keys_is_refused_by_its_row(tmp_path: Path) -> None:
    rows = [{"id": f"P{i}", "image": "a.png", "price": i} for i in range(2000)]
    rows[1500].update({f"k{j}": j for j in range(50_000)})
    feed = tmp_path / "products.jsonl"
    feed.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tracemalloc.start()
    try:
        with pytest.raises(DatasetError, match=r"line|row 1501: .*columns") as caught:
            ProductFeed(feed, check_files=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "row 1501" in str(caught.value) and "1,000" in str(caught.value)
    assert peak < 60 * feed.stat().st_size  # one row parsed, never rows x columns


def test_too_many_columns_in_all_are_refused(tmp_path: Path) -> None:
    rows = [{"id": f"P{i}", "image": "a.png", f"key{i}": 1} for i in range(1200)]
    feed = tmp_path / "products.jsonl"
    feed.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DatasetError, match=r"row 999: 1,001 columns so far"):
        ProductFeed(feed, check_files=False)
    wide = tmp_path / "wide.csv"
    wide.write_text(",".join(["id", "image", *(f"c{i}" for i in range(5000))]) + "\nP1,a.png\n")
    with pytest.raises(DatasetError, match=r"row 1: 5,002 columns"):
        ProductFeed(wide, check_files=False)


def test_a_sparse_feed_costs_memory_per_cell_not_per_row_times_column(tmp_path: Path) -> None:
    # 990 rows, each with a key of its own: 990 columns, ~1,000 cells
    rows = [{"id": f"P{i}", "image": "a.png", f"key{i}": i} for i in range(990)]
    feed = tmp_path / "products.jsonl"
    feed.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tracemalloc.start()
    try:
        dataset = ProductFeed(feed, check_files=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, peak  # rows x columns would be ~1M dict entries, ~80 MiB
    item = dataset[5]
    assert item.metadata["key5"] == 5 and item.metadata["key6"] is None  # read unchanged
    assert len(item.metadata) == 990


def test_a_csv_of_empty_cells_costs_memory_in_proportion_to_its_size(tmp_path: Path) -> None:
    header = ",".join(["id", "image", *(f"c{i}" for i in range(900))])
    body = "".join(f"P{i},a.png" + "," * 900 + "\n" for i in range(2000))
    feed = tmp_path / "products.csv"
    feed.write_text(header + "\n" + body)
    tracemalloc.start()
    try:
        dataset = ProductFeed(feed, check_files=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(dataset) == 2000 and dataset[0].metadata["c3"] is None
    assert peak < 8 * feed.stat().st_size, (peak, feed.stat().st_size)


def test_a_parquet_file_claiming_eight_million_rows_is_refused_before_reading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    n = 8_000_000
    feed = tmp_path / "products.parquet"
    pq.write_table(
        pa.table({"id": pa.repeat(pa.scalar("x"), n), "image": pa.repeat(pa.scalar("a"), n)}),
        feed,
    )
    assert feed.stat().st_size < 1 << 20  # a small file that claims much

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("the rows were read")

    monkeypatch.setattr(pq, "read_table", never)
    with pytest.raises(DatasetError, match=r"8,000,000 rows"):
        ProductFeed(feed, check_files=False)


def test_the_row_budget_names_the_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(table, "MAX_TABLE_ROWS", 3)
    feed = _csv(tmp_path / "p.csv", ["a.png", "b.png", "c.png", "d.png"])
    with pytest.raises(DatasetError, match=r"row 5: more than 3 rows"):
        ProductFeed(feed, check_files=False)
    monkeypatch.setattr(table, "MAX_TABLE_ROWS", 10)
    monkeypatch.setattr(table, "MAX_TABLE_CELLS", 5)
    with pytest.raises(DatasetError, match=r"row 4: more than 5 non-empty cells"):
        ProductFeed(feed, check_files=False)


def test_sync_refuses_outside_images_unless_allowed(shop: Path) -> None:
    from visualsim import ColorHistogramExtractor, Recommender

    rec = Recommender(ColorHistogramExtractor()).fit([str(shop / "img" / "a.png")], ["P0"])
    feed = _csv(shop / "products.csv", ["img/a.png", "../secret/key.png"])
    with pytest.raises(DatasetError, match="row 3: image .* lies outside"):
        rec.sync(feed, progress=False)
    assert rec.ids_ == ["P0"]  # nothing changed
    report = rec.sync(feed, progress=False, allow_outside=True)  # the caller trusts this feed
    assert report.added == ["P1"] and sorted(rec.ids_) == ["P0", "P1"]
