"""Product feeds (CSV, JSON Lines, Parquet) and typed CSV columns."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from visualsim.datasets import CsvDataset, MissingImagesWarning
from visualsim.datasets.csv import convert, infer_kind
from visualsim.errors import DatasetError
from visualsim.feeds import ProductFeed, is_feed, sha256_of


def _jpeg(path: Path, value: int = 120) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 16), (value, 30, 200)).save(path)
    return path


@pytest.fixture
def shop(tmp_path: Path) -> Path:
    for name in ("a", "b", "c"):
        _jpeg(tmp_path / "img" / f"{name}.jpg")
    (tmp_path / "products.csv").write_text(
        "sku,image,price,qty,in_stock,zip,note\n"
        "A1,img/a.jpg,9.5,3,true,00123,\n"
        "A2,img/b.jpg,12,0,false,04567,new\n"
        "A3,img/c.jpg,7,11,TRUE,10001,\n",
        encoding="utf-8",
    )
    return tmp_path


def test_csv_columns_are_typed(shop: Path) -> None:
    feed = ProductFeed(shop / "products.csv", id_column="sku")
    assert feed.ids() == ["A1", "A2", "A3"]
    assert feed[0].metadata == {
        "price": 9.5, "qty": 3, "in_stock": True, "zip": "00123", "note": None,
    }  # fmt: skip
    assert feed.dtypes_ == {
        "sku": "str", "price": "float", "qty": "int", "in_stock": "bool", "zip": "str",
        "note": "str",
    }  # fmt: skip
    assert type(feed[1].metadata["price"]) is float and feed[1].metadata["in_stock"] is False


def test_declared_dtypes_win_and_bad_values_name_the_cell(shop: Path) -> None:
    feed = ProductFeed(
        shop / "products.csv", id_column="sku", dtypes={"qty": "float", "zip": "int"}
    )
    assert feed[0].metadata["qty"] == 3.0 and feed[0].metadata["zip"] == 123
    with pytest.raises(DatasetError, match=r"row 2: column 'price' holds '9.5'.*not int"):
        ProductFeed(shop / "products.csv", id_column="sku", dtypes={"price": "int"})
    with pytest.raises(DatasetError, match="dtypes.*'nope'"):
        ProductFeed(shop / "products.csv", id_column="sku", dtypes={"nope": "int"})
    with pytest.raises(DatasetError, match="use one of int, float, bool, str"):
        ProductFeed(shop / "products.csv", id_column="sku", dtypes={"qty": "decimal"})
    # known_dtypes: only where the feed has the column
    soft = ProductFeed(
        shop / "products.csv", id_column="sku", known_dtypes={"qty": "str", "x": "int"}
    )
    assert soft[0].metadata["qty"] == "3"


def test_csv_dataset_takes_dtypes_too(shop: Path) -> None:
    ds = CsvDataset(shop / "products.csv", id_column="sku", dtypes={"price": "str"})
    assert ds[0].metadata["price"] == "9.5" and ds[0].metadata["qty"] == 3


def test_image_paths_are_relative_to_the_feed_or_root(shop: Path, tmp_path: Path) -> None:
    feed = ProductFeed(shop / "products.csv", id_column="sku")
    assert Path(feed[0].image) == (shop / "img" / "a.jpg").resolve()
    assert feed.root == shop.resolve() and feed.source_of(0) == "img/a.jpg"
    elsewhere = tmp_path / "feeds"
    elsewhere.mkdir()
    (elsewhere / "p.csv").write_text("id,image\nx,a.jpg\n")
    rooted = ProductFeed(elsewhere / "p.csv", root=shop / "img")
    assert Path(rooted[0].image) == (shop / "img" / "a.jpg").resolve()
    assert rooted.source_of(0) == "a.jpg"


def test_jsonl_keeps_its_types_and_reports_bad_lines(shop: Path) -> None:
    rows = [
        {"sku": 1, "image": "img/a.jpg", "price": 9.5, "tags": ["x"], "in_stock": True},
        {"sku": 2, "image": "img/b.jpg", "price": 12, "in_stock": False},
    ]
    path = shop / "products.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    feed = ProductFeed(path, id_column="sku")
    assert feed.ids() == [1, 2]
    assert feed[0].metadata == {"price": 9.5, "tags": ["x"], "in_stock": True}
    assert feed[1].metadata == {"price": 12, "tags": None, "in_stock": False}
    declared = ProductFeed(path, id_column="sku", dtypes={"price": "float", "sku": "str"})
    assert declared.ids() == ["1", "2"] and declared[1].metadata["price"] == 12.0
    for bad, needle in (("{not json", "line 1: not valid JSON"), ("[1, 2]", "not an object"),
                        ('{"sku": NaN}', "not valid JSON")):  # fmt: skip
        path.write_text(bad + "\n")
        with pytest.raises(DatasetError, match=needle):
            ProductFeed(path, id_column="sku")


def test_parquet_feed(shop: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(
        {"id": ["p1", "p2"], "image": ["img/a.jpg", "img/c.jpg"], "price": [1.5, None],
         "qty": [1, 2]}
    )  # fmt: skip
    pq.write_table(table, shop / "products.parquet")
    feed = ProductFeed(shop / "products.parquet")
    assert feed.ids() == ["p1", "p2"]
    assert feed[0].metadata == {"price": 1.5, "qty": 1} and feed[1].metadata["price"] is None
    assert type(feed[0].metadata["qty"]) is int
    (shop / "junk.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(DatasetError, match="cannot be read as Parquet"):
        ProductFeed(shop / "junk.parquet")


def test_missing_images_duplicates_and_formats(shop: Path) -> None:
    path = shop / "gaps.csv"
    path.write_text("id,image\nx,img/a.jpg\ny,img/none.jpg\nz,\n")
    with pytest.warns(MissingImagesWarning) as caught:
        feed = ProductFeed(path)
    assert len(caught) == 1
    assert feed.ids() == ["x"] and feed.missing == ["y"] and [i.id for i in feed.issues] == ["z"]
    path.write_text("id,image\nx,img/a.jpg\nx,img/b.jpg\n")
    with pytest.raises(DatasetError, match=r"row 3.*'x'.*row 2"):
        ProductFeed(path)
    with pytest.raises(DatasetError, match="unknown feed format"):
        ProductFeed(shop / "img" / "a.jpg")
    with pytest.raises(DatasetError, match="does not exist"):
        ProductFeed(shop / "nope.csv")
    with pytest.raises(DatasetError, match="no column 'sku'"):
        ProductFeed(path, id_column="sku")
    assert is_feed("a.CSV") and is_feed("b.jsonl") and not is_feed("c.jpg")
    path.write_text("id,image\nx,img/a.jpg\nu,https://cdn.example.com/u.jpg\n")
    feed = ProductFeed(path)
    assert feed.ids() == ["x"] and "is a URL" in feed.issues[0].problem


def test_sha256_of_matches_the_catalogue(shop: Path) -> None:
    import hashlib

    data = (shop / "img" / "a.jpg").read_bytes()
    assert sha256_of(shop / "img" / "a.jpg") == hashlib.sha256(data).hexdigest()
    assert sha256_of(shop / "img" / "missing.jpg") is None


def test_infer_kind_examples() -> None:
    assert infer_kind(["1", "-2", "+3"]) == "int"
    assert infer_kind(["1", "2.5e3"]) == "float"
    assert infer_kind(["01.5"]) == "str"  # leading zero: an identifier
    assert infer_kind(["nan"]) == "str" and infer_kind(["inf"]) == "str"
    assert infer_kind(["yes"]) == "str"
    with pytest.raises(ValueError):
        convert("x", "int")
    with pytest.raises(ValueError):
        convert(True, "float")


values = st.one_of(
    st.lists(st.integers(-(10**12), 10**12), min_size=1, max_size=6),
    st.lists(st.floats(allow_nan=False, allow_infinity=False, width=64), min_size=1, max_size=6),
    st.lists(st.booleans(), min_size=1, max_size=6),
    st.lists(st.text(alphabet="abcxyz -_", min_size=1, max_size=8), min_size=1, max_size=6),
)


@given(values)
def test_a_typed_column_round_trips_through_csv(
    tmp_path_factory: pytest.TempPathFactory, column: list
) -> None:  # type: ignore[type-arg]
    folder = tmp_path_factory.mktemp("rt")
    path = folder / "t.csv"
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "image", "v"])
        for i, v in enumerate(column):
            writer.writerow(
                [
                    f"i{i}",
                    f"{i}.jpg",
                    str(v).lower()
                    if isinstance(v, bool)
                    else repr(v)
                    if isinstance(v, float)
                    else v,
                ]
            )
    feed = ProductFeed(path, check_files=False)
    got = [feed[i].metadata["v"] for i in range(len(column))]
    if all(isinstance(v, str) for v in column):
        stripped = [v.strip() for v in column]
        kind = infer_kind(stripped)
        if kind == "str":
            assert got == [v if v.strip() else None for v in column] or got == column
        return
    if all(isinstance(v, float) for v in column) and all(v.is_integer() for v in column):
        assert [float(g) for g in got] == column  # "1.0" reads back as a number
        return
    assert got == column
    assert all(type(g) is type(v) for g, v in zip(got, column, strict=True))


FEED_FUZZ = {"inputs": 0, "read": 0, "refused": 0}


@given(
    st.binary(max_size=300)
    | st.text(alphabet="id,image\n\"'{}[]:;0123456789.-ab\t\r\\", max_size=200).map(str.encode),
    st.sampled_from(["csv", "tsv", "jsonl"]),
)
def test_any_feed_bytes_are_read_or_refused_with_a_dataset_error(
    tmp_path_factory: pytest.TempPathFactory, data: bytes, fmt: str
) -> None:
    path = tmp_path_factory.mktemp("fuzz") / f"feed.{fmt}"
    path.write_bytes(data)
    FEED_FUZZ["inputs"] += 1
    try:
        ProductFeed(path, check_files=False)
    except DatasetError:
        FEED_FUZZ["refused"] += 1
    else:
        FEED_FUZZ["read"] += 1


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=5,
)


@given(
    st.lists(
        st.dictionaries(st.sampled_from(["id", "image", "price", "x"]), json_values), max_size=5
    )
)
def test_any_json_lines_are_read_or_refused_with_a_dataset_error(
    tmp_path_factory: pytest.TempPathFactory, rows: list[dict[str, object]]
) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "feed.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    FEED_FUZZ["inputs"] += 1
    try:
        feed = ProductFeed(path, check_files=False)
    except DatasetError:
        FEED_FUZZ["refused"] += 1
        return
    FEED_FUZZ["read"] += 1
    assert all(isinstance(i, (str, int)) and not isinstance(i, bool) for i in feed.ids())
    assert len(set(feed.ids())) == len(feed)
