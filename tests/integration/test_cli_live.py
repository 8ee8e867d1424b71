"""The command line for a real shop: index a product feed, then add, remove and sync."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from visualsim import Recommender
from visualsim.cli import main
from visualsim.datasets.synthetic import SyntheticProducts

HEADER = ["sku", "image", "category", "color", "price", "in_stock"]


def cli(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def write_feed(path: Path, rows: list[list[object]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(HEADER)
        writer.writerows(rows)
    return path


@pytest.fixture
def shop(tmp_path: Path) -> tuple[Path, list[list[object]]]:
    products = SyntheticProducts(24, seed=2, size=48)
    products.write_folder(tmp_path / "img", label="category")
    rows: list[list[object]] = []
    for i in range(len(products)):
        meta = products[i].metadata
        image = f"img/{meta['category']}/synthetic-{i:06d}.jpg"
        rows.append([f"SKU-{i:03d}", image, meta["category"], meta["color"], 5 + i, i % 3 != 0])
    write_feed(tmp_path / "products.csv", rows)
    return tmp_path, rows


def index(capsys: pytest.CaptureFixture[str], root: Path, *extra: str) -> Path:
    out = root / "shop.catalog"
    code, stdout, err = cli(
        capsys, "index", root / "products.csv", "-o", out, "--id-column", "sku",
        "--extractor", "color", "-q", *extra,
    )  # fmt: skip
    assert code == 0, err
    assert f"indexed 24 images into {out}" in stdout
    return out


def test_index_a_feed_with_typed_metadata_and_relative_sources(
    capsys: pytest.CaptureFixture[str], shop: tuple[Path, list[list[object]]]
) -> None:
    root, _ = shop
    catalog = index(capsys, root)
    rec = Recommender.load(catalog)
    assert rec.fields_ == {"category": "str", "color": "str", "price": "int", "in_stock": "bool"}
    assert rec.source_of("SKU-002").startswith("img/")  # relative to the feed's folder
    query = root / "img" / "shoes" / "synthetic-000002.jpg"
    code, out, err = cli(
        capsys, "query", catalog, query, "-k", "24", "--json",
        "--where", "price < 15 and in_stock", "--where", "category != 'hat'",
    )  # fmt: skip
    assert code == 0, err
    data = json.loads(out)
    assert data["results"] and all(
        r["metadata"]["price"] < 15 and r["metadata"]["in_stock"]
        and r["metadata"]["category"] != "hat"
        for r in data["results"]
    )  # fmt: skip
    assert str(root) not in json.dumps(data["results"])  # no server path in any result
    # the plot finds every result's picture through its stored (relative) source
    png = root / "q.png"
    code, out, err = cli(capsys, "query", catalog, query, "-k", "5", "--plot", png)
    assert code == 0, err
    import numpy as np
    from PIL import Image

    with Image.open(png) as img:
        pixels = np.asarray(img.convert("RGB")).reshape(-1, 3)
    placeholder = (pixels == (200, 200, 200)).all(axis=1).mean()
    assert placeholder < 0.01  # no grey "image not found" cells
    code, out, _ = cli(capsys, "query", catalog, query, "--where", "category=shoes", "--json")
    assert {r["metadata"]["category"] for r in json.loads(out)["results"]} == {"shoes"}
    # a misspelt field is a usage error naming the fields, not "(no results)"
    code, out, err = cli(capsys, "query", catalog, query, "--where", "lable == 'shoes'")
    assert code == 2 and "lable" in err and "category" in err and len(err.splitlines()) == 1
    # a value no item has in that case: an empty answer, and a hint saying what was meant
    code, out, err = cli(capsys, "query", catalog, query, "--where", "category == 'Shoes'")
    assert code == 0 and "(no results)" in out
    assert "hint: no item has category == 'Shoes'; did you mean 'shoes'?" in err
    code, out, err = cli(capsys, "similar", catalog, "SKU-001", "--where", "category == 'shose'")
    assert "did you mean 'shoes'?" in err


def test_add_remove_and_ids_file(
    capsys: pytest.CaptureFixture[str], shop: tuple[Path, list[list[object]]], tmp_path: Path
) -> None:
    root, rows = shop
    write_feed(root / "products.csv", rows[:20])
    catalog = index_n(capsys, root, 20)
    write_feed(root / "new.csv", rows[20:])
    code, out, err = cli(capsys, "add", catalog, root / "new.csv", "--id-column", "sku", "-q")
    assert code == 0, err
    assert "added 4 items" in out and "(24 now)" in out
    code, _, err = cli(capsys, "add", catalog, root / "new.csv", "--id-column", "sku", "-q")
    assert code == 2 and "sync" in err  # already there: sync updates
    ids_file = tmp_path / "gone.txt"
    ids_file.write_text("SKU-001\n# a comment\n\nSKU-002\n")
    code, out, err = cli(capsys, "remove", catalog, "SKU-000", "--ids-file", ids_file)
    assert code == 0, err
    assert "removed 3 items" in out and "(21 left)" in out
    code, _, err = cli(capsys, "remove", catalog, "SKU-003", "SKU-nope")
    assert code == 2 and "SKU-nope" in err and "nothing was removed" in err
    assert "SKU-003" in Recommender.load(catalog)
    code, _, err = cli(capsys, "remove", catalog)
    assert code == 2 and "--ids-file" in err


def index_n(capsys: pytest.CaptureFixture[str], root: Path, n: int) -> Path:
    out = root / "shop.catalog"
    code, stdout, err = cli(
        capsys, "index", root / "products.csv", "-o", out, "--id-column", "sku",
        "--extractor", "color", "-q",
    )  # fmt: skip
    assert code == 0 and f"indexed {n} images" in stdout, err
    return out


def test_sync_extracts_only_what_changed(
    capsys: pytest.CaptureFixture[str],
    shop: tuple[Path, list[list[object]]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root, rows = shop
    catalog = index(capsys, root)
    before = Recommender.load(catalog)
    code, out, err = cli(capsys, "sync", catalog, root / "products.csv", "--id-column", "sku")
    assert code == 0, err
    assert out.strip().endswith("0 added, 0 updated, 0 removed, 24 unchanged, 0 failed")

    rows = [list(r) for r in rows]
    rows[1][4] = 99  # a price change: metadata only
    shutil.copyfile(root / rows[4][1], root / rows[3][1])  # an image replaced by another
    del rows[5]  # sold out
    rows.append(["SKU-100", rows[0][1], "t-shirt", "red", 3, True])  # a new product
    rows.append(["SKU-101", "img/none.jpg", "hat", "red", 3, True])  # listed, no image
    write_feed(root / "products.csv", rows)

    extracted: list[int] = []
    from visualsim.extractors import base

    real = base.BaseExtractor.iter_batches

    def counting(self: base.BaseExtractor, items, *args, **kwargs):  # type: ignore[no-untyped-def]
        items = list(items)
        extracted.append(len(items))
        return real(self, items, *args, **kwargs)

    monkeypatch.setattr(base.BaseExtractor, "iter_batches", counting)
    code, out, err = cli(capsys, "sync", catalog, root / "products.csv", "--id-column", "sku", "-q")
    assert code == 0, err
    assert "1 added, 2 updated, 1 removed, 21 unchanged, 1 failed" in out
    assert "SKU-101" in err  # the failed one, listed
    assert sum(extracted) == 2  # the new product and the replaced image, nothing else
    after = Recommender.load(catalog)
    assert after.metadata_of("SKU-001")["price"] == 99
    assert "SKU-005" not in after and "SKU-100" in after
    # its new picture is SKU-004's: the nearest item, shown only when repeats are asked for
    assert after.similar_to("SKU-003", k=1, distinct=False)[0].id == "SKU-004"
    assert "SKU-004" not in [r.id for r in after.similar_to("SKU-003", k=5)]
    assert after.vector_of("SKU-010").tolist() == before.vector_of("SKU-010").tolist()
    code, out, _ = cli(capsys, "sync", catalog, root / "products.csv", "--id-column", "sku")
    assert "0 added, 0 updated, 0 removed, 24 unchanged, 1 failed" in out


def test_dry_run_changes_nothing(
    capsys: pytest.CaptureFixture[str], shop: tuple[Path, list[list[object]]]
) -> None:
    root, rows = shop
    catalog = index(capsys, root)
    write_feed(root / "products.csv", rows[:10])
    manifest = (catalog / "manifest.json").read_text()
    code, out, _ = cli(
        capsys, "sync", catalog, root / "products.csv", "--id-column", "sku", "--dry-run"
    )
    assert code == 0 and "dry run" in out and "14 removed" in out
    assert (catalog / "manifest.json").read_text() == manifest


def test_failed_inputs_are_listed_by_info_and_checkpoints_resume(
    capsys: pytest.CaptureFixture[str], shop: tuple[Path, list[list[object]]], tmp_path: Path
) -> None:
    root, rows = shop
    (root / "img" / "broken.jpg").write_bytes(b"not an image")
    write_feed(root / "products.csv", [*rows, ["SKU-BAD", "img/broken.jpg", "hat", "red", 1, True]])
    checkpoint = tmp_path / "ckpt"
    catalog = index(capsys, root, "--checkpoint-dir", str(checkpoint))
    code, out, err = cli(capsys, "info", catalog)
    assert code == 0, err
    assert "failed     1 inputs" in out and "SKU-BAD" in out
    data = json.loads(cli(capsys, "info", catalog, "--json")[1])
    assert [f["id"] for f in data["failed_inputs"]] == ["SKU-BAD"]


def test_feed_options_are_checked(
    capsys: pytest.CaptureFixture[str], shop: tuple[Path, list[list[object]]]
) -> None:
    root, _ = shop
    for args, needle in (
        (("--id-column", "nope"), "no column 'nope'"),
        (("--dtype", "price"), "COLUMN=KIND"),
        (("--dtype", "price=decimal"), "COLUMN=KIND"),
        (("--root", str(root / "missing")), "does not exist"),
    ):
        code, _, err = cli(
            capsys, "index", root / "products.csv", "-o", root / "x", "--extractor", "color",
            "-q", *args,
        )  # fmt: skip
        assert code in (1, 2) and needle in err and len(err.strip().splitlines()) == 1, err
    code, _, err = cli(capsys, "index", root / "img", "-o", root / "x", "--dtype", "a=int")
    assert code == 2 and "feed file" in err
    (root / "notes.txt.bak").write_text("x")
    code, _, err = cli(capsys, "index", root / "notes.txt.bak", "-o", root / "x")
    assert code == 2 and "neither a folder nor a feed" in err


def test_missing_images_warn_once_on_the_command_line(
    shop: tuple[Path, list[list[object]]],
) -> None:
    import os
    import subprocess
    import sys

    root, rows = shop
    write_feed(
        root / "products.csv",
        [
            *rows,
            ["SKU-GONE", "img/gone.jpg", "hat", "red", 1, True],
            ["SKU-URL", "https://cdn.example.com/x.jpg", "hat", "red", 1, True],
        ],
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(
        [sys.executable, "-m", "visualsim.cli", "index", str(root / "products.csv"), "-o",
         str(root / "c"), "--id-column", "sku", "--extractor", "color"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("SKU-GONE") == 1, result.stderr
    assert "SKU-URL" in result.stderr and "is a URL" in result.stderr
    assert ".issues" not in result.stderr and ".missing" not in result.stderr
    assert "MissingImagesWarning" not in result.stderr and "warnings.warn" not in result.stderr


def test_an_interrupted_index_resumes_from_its_checkpoint(
    capsys: pytest.CaptureFixture[str],
    shop: tuple[Path, list[list[object]]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from visualsim.extractors.color import ColorHistogramExtractor

    root, _ = shop
    real = ColorHistogramExtractor._embed
    embedded: list[int] = []

    def crash_on_third_batch(self: ColorHistogramExtractor, batch):  # type: ignore[no-untyped-def]
        if len(embedded) == 2 and not getattr(crash_on_third_batch, "done", False):
            crash_on_third_batch.done = True  # type: ignore[attr-defined]
            raise KeyboardInterrupt
        embedded.append(len(batch))
        return real(self, batch)

    monkeypatch.setattr(ColorHistogramExtractor, "_embed", crash_on_third_batch)
    args = (
        "index", root / "products.csv", "-o", root / "c", "--id-column", "sku", "--extractor",
        "color", "--batch-size", "4", "--checkpoint-dir", tmp_path / "ckpt", "-q",
    )  # fmt: skip
    code, _, err = cli(capsys, *args)
    assert code == 130 and "interrupted" in err
    assert not (root / "c").exists()
    embedded.clear()
    code, out, err = cli(capsys, *args)
    assert code == 0, err
    assert "indexed 24 images" in out
    assert sum(embedded) <= 24 - 8  # the two finished batches were not extracted again
    assert Recommender.load(root / "c").ids_ == [f"SKU-{i:03d}" for i in range(24)]


def test_index_partitions_a_feed_by_a_field(
    capsys: pytest.CaptureFixture[str], shop: tuple[Path, list[list[object]]]
) -> None:
    root, rows = shop
    catalog = index(capsys, root, "--index", "hnsw", "--partition-by", "category")
    manifest = json.loads((catalog / "manifest.json").read_text())
    assert manifest["partition_by"] == "category" and manifest["partitions_dir"]
    rec = Recommender.load(catalog)
    parts = rec._segments_.partitions  # type: ignore[union-attr]
    assert parts is not None and sorted(parts.parts) == sorted({str(r[2]) for r in rows})
    query = root / "img" / "shoes" / "synthetic-000002.jpg"
    code, out, err = cli(
        capsys, "query", catalog, query, "--where", "category == 'shoes'", "--json"
    )
    assert code == 0, err
    found = json.loads(out)["results"]
    assert found and {r["metadata"]["category"] for r in found} == {"shoes"}
    assert len(found) == sum(1 for r in rows if r[2] == "shoes")
