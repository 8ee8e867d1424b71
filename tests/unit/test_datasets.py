"""Dataset adapters: items, image folders, CSV tables, the synthetic set, Fashion-MNIST, SOP."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from visualsim.datasets import (
    CsvDataset,
    DatasetItem,
    FashionMNIST,
    ImageFolder,
    MissingImagesWarning,
    StanfordOnlineProducts,
    SyntheticProducts,
)
from visualsim.datasets import fashion_mnist as fmnist_module
from visualsim.datasets.synthetic import CATEGORIES, COLORS, PATTERNS
from visualsim.errors import ConfigError, DatasetError


def write_jpeg(path: Path, color: tuple[int, int, int] = (200, 30, 30), size: int = 8) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), color).save(path, "JPEG")
    return path


# --- DatasetItem ---------------------------------------------------------------------------


def test_item_unpacks_like_a_triple() -> None:
    item = DatasetItem("a", "a.jpg", {"label": "x"})
    item_id, image, meta = item
    assert (item_id, image, meta) == ("a", "a.jpg", {"label": "x"})


def test_item_is_frozen() -> None:
    item = DatasetItem(1, "a.jpg", {})
    with pytest.raises(AttributeError):
        item.id = 2  # type: ignore[misc]


def test_item_repr_does_not_dump_arrays() -> None:
    item = DatasetItem("a", np.zeros((64, 64, 3), np.uint8), {"k": 1})
    assert "shape=(64, 64, 3)" in repr(item)
    assert len(repr(item)) < 200


def test_importing_datasets_loads_no_heavy_library() -> None:
    code = (
        "import sys, visualsim.datasets\n"
        "heavy = [m for m in ('pandas', 'kaggle', 'tensorflow', 'keras') if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


# --- ImageFolder ---------------------------------------------------------------------------


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "catalogue"
    write_jpeg(root / "shoes" / "b.jpg")
    write_jpeg(root / "shoes" / "a.JPG")
    write_jpeg(root / "bags" / "nested" / "c.jpeg")
    write_jpeg(root / "top.png")
    write_jpeg(root / ".hidden.jpg")
    write_jpeg(root / ".cache" / "d.jpg")
    (root / "shoes" / "notes.txt").write_text("not an image")
    (root / "bags" / "manifest.csv").write_text("a,b\n")
    return root


def test_folder_lists_images_with_relative_forward_slash_ids(folder: Path) -> None:
    ds = ImageFolder(folder)
    assert ds.ids() == ["bags/nested/c.jpeg", "shoes/a.JPG", "shoes/b.jpg", "top.png"]


def test_folder_label_is_first_level_folder(folder: Path) -> None:
    labels = {item.id: item.metadata["label"] for item in ImageFolder(folder)}
    assert labels == {
        "bags/nested/c.jpeg": "bags",
        "shoes/a.JPG": "shoes",
        "shoes/b.jpg": "shoes",
        "top.png": None,
    }


def test_folder_skips_hidden_and_reports_non_images(folder: Path) -> None:
    ds = ImageFolder(folder)
    assert not any(".hidden" in i or ".cache" in i for i in map(str, ds.ids()))
    assert sorted(ds.skipped) == ["bags/manifest.csv", "shoes/notes.txt"]


def test_folder_images_are_absolute_existing_paths(folder: Path) -> None:
    for _, image, _ in ImageFolder(folder):
        assert Path(image).is_absolute() and Path(image).is_file()


def test_folder_non_recursive_lists_top_level_only(folder: Path) -> None:
    assert ImageFolder(folder, recursive=False).ids() == ["top.png"]


def test_folder_custom_extensions(folder: Path) -> None:
    assert ImageFolder(folder, extensions=["PNG"]).ids() == ["top.png"]


def test_folder_classes_len_getitem_repr(folder: Path) -> None:
    ds = ImageFolder(folder)
    assert ds.classes == ["bags", "shoes"]
    assert len(ds) == 4
    assert ds[-1].id == "top.png"
    assert "ImageFolder(" in repr(ds) and "n=4" in repr(ds)


def test_folder_to_frame(folder: Path) -> None:
    frame = ImageFolder(folder).to_frame()
    assert list(frame.columns) == ["id", "label"]
    assert frame["label"].tolist()[:3] == ["bags", "shoes", "shoes"]
    assert frame["label"].isna().tolist() == [False, False, False, True]


def test_folder_missing_root_names_it(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="nope"):
        ImageFolder(tmp_path / "nope")


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    names=st.lists(
        st.text(alphabet="abcdefgh_-0123456789 ", min_size=1, max_size=8)
        .map(str.strip)
        .filter(bool),
        min_size=1,
        max_size=5,
        unique=True,
    )
)
def test_folder_ids_round_trip_to_paths(
    tmp_path_factory: pytest.TempPathFactory, names: list[str]
) -> None:
    root = tmp_path_factory.mktemp("prop")
    for i, name in enumerate(names):
        (root / f"c{i % 2}").mkdir(exist_ok=True)
        (root / f"c{i % 2}" / f"{name}.png").write_bytes(b"")
    ds = ImageFolder(root)
    assert len(ds) == len(names)
    for item in ds:
        assert (root / str(item.id)).is_file()
        assert item.metadata["label"] == str(item.id).split("/")[0]


# --- CsvDataset ----------------------------------------------------------------------------


@pytest.fixture
def table(tmp_path: Path) -> Path:
    write_jpeg(tmp_path / "img" / "1.jpg")
    write_jpeg(tmp_path / "img" / "2.jpg")
    csv = tmp_path / "products.csv"
    csv.write_text(
        "sku,file,colour,price\n"
        "A1,img/1.jpg,red,10\n"
        "A2,img/2.jpg,,12.5\n"
        "A3,img/3.jpg,blue,9\n"
        "A4,,green,1\n",
        encoding="utf-8",
    )
    return csv


def test_csv_reads_ids_images_and_metadata(table: Path) -> None:
    with pytest.warns(MissingImagesWarning):
        ds = CsvDataset(table, image_column="file", id_column="sku")
    assert ds.ids() == ["A1", "A2"]
    assert ds[0].metadata == {"colour": "red", "price": 10.0}  # typed: 10, 12.5, 9, 1 -> float
    assert ds.dtypes_ == {"sku": "str", "colour": "str", "price": "float"}
    assert ds[1].metadata["colour"] is None
    assert Path(ds[0].image) == table.parent / "img" / "1.jpg"


def test_csv_reports_missing_files_and_empty_cells(table: Path) -> None:
    with pytest.warns(MissingImagesWarning, match="A3"):
        ds = CsvDataset(table, image_column="file", id_column="sku")
    assert ds.missing == ["A3"]
    assert [(i.line, i.id) for i in ds.issues] == [(5, "A4")]


def test_csv_without_file_check_keeps_every_row(table: Path) -> None:
    ds = CsvDataset(table, image_column="file", id_column="sku", check_files=False)
    assert ds.ids() == ["A1", "A2", "A3"]


def test_csv_default_id_is_image_path_and_root_resolves(table: Path, tmp_path: Path) -> None:
    moved = tmp_path / "elsewhere.csv"
    moved.write_text("file,colour\n1.jpg,red\n")
    ds = CsvDataset(moved, image_column="file", root=tmp_path / "img")
    assert ds.ids() == ["1.jpg"]
    assert Path(ds[0].image) == (tmp_path / "img" / "1.jpg").resolve()


def test_csv_unknown_column_lists_the_columns(table: Path) -> None:
    with pytest.raises(DatasetError, match=r"'path'.*sku"):
        CsvDataset(table, image_column="path")


def test_csv_duplicate_ids_name_the_rows(tmp_path: Path) -> None:
    csv = tmp_path / "t.csv"
    csv.write_text("id,image\nx,a.jpg\nx,b.jpg\n")
    with pytest.raises(DatasetError, match=r"row 3.*'x'.*row 2"):
        CsvDataset(csv, id_column="id", check_files=False)


def test_csv_metadata_columns_selects(table: Path) -> None:
    with pytest.warns(MissingImagesWarning):
        ds = CsvDataset(table, image_column="file", id_column="sku", metadata_columns=["price"])
    assert ds[0].metadata == {"price": 10.0}


def test_csv_accepts_a_dataframe(table: Path) -> None:
    import pandas as pd

    frame = pd.DataFrame({"file": ["img/1.jpg", "img/2.jpg"], "price": [1.5, float("nan")]})
    ds = CsvDataset(frame, image_column="file", root=table.parent)
    assert ds[0].metadata == {"price": 1.5}
    assert type(ds[0].metadata["price"]) is float
    assert ds[1].metadata == {"price": None}


def test_csv_to_frame(table: Path) -> None:
    with pytest.warns(MissingImagesWarning):
        frame = CsvDataset(table, image_column="file", id_column="sku").to_frame()
    assert list(frame.columns) == ["id", "colour", "price"]
    assert frame["id"].tolist() == ["A1", "A2"]


# --- SyntheticProducts ---------------------------------------------------------------------


def test_synthetic_item_shape_id_and_metadata() -> None:
    item = SyntheticProducts(50, size=64)[42]
    assert item.id == "synthetic-000042"
    assert item.image.shape == (64, 64, 3) and item.image.dtype == np.uint8
    assert set(item.metadata) == {"category", "color", "pattern"}


def test_synthetic_same_seed_same_arrays() -> None:
    a = [it.image for it in SyntheticProducts(30, seed=7, size=48)]
    b = [it.image for it in SyntheticProducts(30, seed=7, size=48)]
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_synthetic_different_seed_differs() -> None:
    a = SyntheticProducts(10, seed=1, size=48)
    b = SyntheticProducts(10, seed=2, size=48)
    assert not all(np.array_equal(a[i].image, b[i].image) for i in range(10))


def test_synthetic_item_does_not_depend_on_n() -> None:
    small, large = SyntheticProducts(5, seed=3, size=48), SyntheticProducts(500, seed=3, size=48)
    assert np.array_equal(small[4].image, large[4].image)
    assert small[4].metadata == large[4].metadata


def test_synthetic_labels_are_balanced() -> None:
    ds = SyntheticProducts(1200, seed=0)
    cats = Counter(ds.labels("category"))
    assert set(cats.values()) == {240}
    for key, names in (("color", COLORS), ("pattern", PATTERNS)):
        counts = Counter(ds.labels(key))
        assert set(counts) == set(names)
        assert max(counts.values()) - min(counts.values()) <= len(CATEGORIES)


def test_synthetic_every_combination_appears() -> None:
    ds = SyntheticProducts(3000, seed=0)
    combos = {tuple(m.values()) for m in ds.metadata()}
    assert len(combos) > 0.9 * len(CATEGORIES) * len(COLORS) * len(PATTERNS)


def test_synthetic_subsets_of_labels() -> None:
    ds = SyntheticProducts(20, categories=["bag", "hat"], colors=["red"], patterns=["solid"])
    assert {m["category"] for m in ds.metadata()} == {"bag", "hat"}
    assert {(m["color"], m["pattern"]) for m in ds.metadata()} == {("red", "solid")}


def test_synthetic_rejects_unknown_labels() -> None:
    with pytest.raises(ConfigError, match="sock"):
        SyntheticProducts(10, categories=["sock"])


def test_synthetic_background_is_white_and_product_is_not() -> None:
    image = SyntheticProducts(5, size=64)[0].image
    assert (image[0, 0] == 255).all() and (image[-1, -1] == 255).all()
    assert (image < 250).any(axis=2).mean() > 0.1


def _foreground(image: np.ndarray) -> np.ndarray:
    return (image.astype(int).sum(axis=2) < 3 * 247) | (np.ptp(image, axis=2) > 12)


def test_synthetic_categories_have_distinct_silhouettes() -> None:
    ds = SyntheticProducts(400, seed=5, size=48)
    masks = np.stack([_foreground(it.image).ravel() for it in ds]).astype(float)
    cats = np.array(ds.labels("category"))
    train, test = np.arange(400) < 250, np.arange(400) >= 250
    centroids = {c: masks[train & (cats == c)].mean(axis=0) for c in CATEGORIES}
    names = list(centroids)
    dists = np.stack([((masks[test] - centroids[c]) ** 2).sum(axis=1) for c in names], axis=1)
    predicted = np.array(names)[dists.argmin(axis=1)]
    assert (predicted == cats[test]).mean() > 0.9


def test_synthetic_colour_names_match_pixels() -> None:
    ds = SyntheticProducts(240, seed=9, size=48, patterns=["solid"])
    palette = np.array(list(COLORS.values()), dtype=float)
    names = list(COLORS)
    hits = 0
    for item in ds:
        pixels = item.image[_foreground(item.image)].astype(float)
        dominant = np.median(pixels, axis=0)
        hits += (
            names[int(((palette - dominant) ** 2).sum(axis=1).argmin())] == item.metadata["color"]
        )
    assert hits / len(ds) > 0.95


def test_synthetic_images_are_all_different() -> None:
    digests = {it.image.tobytes() for it in SyntheticProducts(300, size=32)}
    assert len(digests) == 300


def test_synthetic_draws_every_item_on_demand() -> None:
    """1,000 items, each drawn when read (speed is measured in benchmarks, not here)."""
    ds = SyntheticProducts(1000, seed=0)
    shapes = {item.image.shape for item in ds}
    assert shapes == {(128, 128, 3)} and len(ds) == 1000
    assert np.array_equal(ds[999].image, SyntheticProducts(1000, seed=0)[999].image)


def test_synthetic_write_folder_reads_back(tmp_path: Path) -> None:
    ds = SyntheticProducts(15, seed=1, size=32)
    written = ds.write_folder(tmp_path / "synth")
    assert len(written) == 15 and all(p.suffix == ".jpg" for p in written)
    folder = ImageFolder(tmp_path / "synth")
    assert len(folder) == 15
    assert sorted(folder.classes) == sorted(set(ds.labels("category")))
    table = CsvDataset(tmp_path / "synth" / "metadata.csv", image_column="path", id_column="id")
    assert table.ids() == ds.ids()
    assert table[3].metadata == ds[3].metadata


def test_synthetic_write_folder_png_is_lossless(tmp_path: Path) -> None:
    ds = SyntheticProducts(3, seed=1, size=32)
    paths = ds.write_folder(tmp_path, format="png", label="color")
    assert paths[0].parent.name == ds[0].metadata["color"]
    assert np.array_equal(np.asarray(Image.open(paths[0]).convert("RGB")), ds[0].image)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31), index=st.integers(0, 10_000))
def test_synthetic_any_item_is_deterministic(seed: int, index: int) -> None:
    a = SyntheticProducts(index + 1, seed=seed, size=24)[index]
    b = SyntheticProducts(index + 1, seed=seed, size=24)[index]
    assert a.id == b.id and a.metadata == b.metadata and np.array_equal(a.image, b.image)


# --- FashionMNIST --------------------------------------------------------------------------


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    data = header + array.astype(np.uint8).tobytes()
    if path.name.endswith(".gz"):
        with gzip.open(path, "wb") as fh:
            fh.write(data)
    else:
        path.write_bytes(data)


@pytest.fixture
def mnist_arrays() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (7, 28, 28), dtype=np.uint8), np.array([0, 1, 2, 3, 9, 8, 0])


@pytest.mark.parametrize("suffix", [".gz", ""])
def test_fmnist_reads_idx_files(
    tmp_path: Path, mnist_arrays: tuple[np.ndarray, np.ndarray], suffix: str
) -> None:
    images, labels = mnist_arrays
    write_idx(tmp_path / f"t10k-images-idx3-ubyte{suffix}", images)
    write_idx(tmp_path / f"t10k-labels-idx1-ubyte{suffix}", labels)
    ds = FashionMNIST(tmp_path, split="test")
    assert len(ds) == 7
    got_images, got_labels = ds.arrays()
    assert np.array_equal(got_images, images) and got_labels.tolist() == labels.tolist()
    item = ds[4]
    assert item.id == "fmnist-test-00004"
    assert item.metadata == {"label": 9, "class_name": "Ankle boot"}
    assert item.image.shape == (28, 28) and item.image.dtype == np.uint8
    assert ds[0].metadata["class_name"] == "T-shirt/top"


def test_fmnist_train_split_and_read_only_arrays(
    tmp_path: Path, mnist_arrays: tuple[np.ndarray, np.ndarray]
) -> None:
    images, labels = mnist_arrays
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", images)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", labels)
    ds = FashionMNIST(tmp_path, split="train")
    assert ds[1].id == "fmnist-train-00001"
    with pytest.raises(ValueError):
        ds.arrays()[0][0, 0, 0] = 1


def test_fmnist_truncated_file_is_refused(
    tmp_path: Path, mnist_arrays: tuple[np.ndarray, np.ndarray]
) -> None:
    images, labels = mnist_arrays
    write_idx(tmp_path / "t10k-images-idx3-ubyte", images)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", labels)
    raw = (tmp_path / "t10k-images-idx3-ubyte").read_bytes()
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(raw[:-100])
    with pytest.raises(DatasetError, match="truncated"):
        FashionMNIST(tmp_path)


def test_fmnist_missing_root_files_named(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="t10k-images-idx3-ubyte"):
        FashionMNIST(tmp_path)


def test_fmnist_nothing_available_names_all_three_ways(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def offline(split: str) -> None:
        raise ConnectionError("no network")

    monkeypatch.setattr(fmnist_module, "DEBIAN_DIR", tmp_path / "debian")
    monkeypatch.setattr(fmnist_module, "KERAS_CACHE_DIR", tmp_path / "keras")
    monkeypatch.setattr(fmnist_module, "_from_keras", offline)
    with pytest.raises(DatasetError) as info:
        FashionMNIST()
    message = str(info.value)
    assert "root=" in message and "dataset-fashion-mnist" in message and "keras" in message


def test_fmnist_falls_back_to_keras_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mnist_arrays: tuple[np.ndarray, np.ndarray]
) -> None:
    images, labels = mnist_arrays
    cache = tmp_path / "keras"
    cache.mkdir()
    write_idx(cache / "t10k-images-idx3-ubyte.gz", images)
    write_idx(cache / "t10k-labels-idx1-ubyte.gz", labels)
    monkeypatch.setattr(fmnist_module, "DEBIAN_DIR", tmp_path / "debian")
    monkeypatch.setattr(fmnist_module, "KERAS_CACHE_DIR", cache)
    assert FashionMNIST().source == str(cache)


def test_fmnist_reads_debian_package(fashion_mnist_dir: Callable[..., Path]) -> None:
    """The Debian path, read from IDX files the fixture writes (the real 10,000 images
    are checked by benchmarks/bench_quality.py and CI, not by a test needing the package)."""
    root = fashion_mnist_dir(300)
    ds = FashionMNIST(split="test")
    images, labels = ds.arrays()
    assert ds.source == str(root)
    assert images.shape == (300, 28, 28) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [30] * 10
    assert ds[0].metadata == {"label": 9, "class_name": "Ankle boot"}


def test_fmnist_never_downloads_in_the_test_suite(fashion_mnist_dir: Callable[..., Path]) -> None:
    fashion_mnist_dir(30)  # a test split only: the train split is nowhere on the machine
    with pytest.raises(DatasetError, match="downloads are off") as info:
        FashionMNIST(split="train")
    assert "VISUALSIM_NO_DOWNLOAD" in str(info.value) and "root=" in str(info.value)


def test_fmnist_debian_dir_comes_from_the_environment(tmp_path: Path) -> None:
    code = "from visualsim.datasets import fashion_mnist as f; print(f.DEBIAN_DIR)"
    env = {**os.environ, "VISUALSIM_FASHION_MNIST_DIR": str(tmp_path / "fm")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == str(tmp_path / "fm"), out.stderr


# --- StanfordOnlineProducts ----------------------------------------------------------------


@pytest.fixture
def sop_root(tmp_path: Path) -> Path:
    root = tmp_path / "Stanford_Online_Products"
    rows = [
        (1, 1, 1, "bicycle_final/111_0.JPG"),
        (2, 1, 1, "bicycle_final/111_1.JPG"),
        (3, 2, 3, "chair_final/222_0.JPG"),
        (4, 2, 3, "chair_final/222_1.JPG"),
    ]
    lines = ["image_id class_id super_class_id path"]
    for image_id, class_id, super_id, rel in rows:
        lines.append(f"{image_id} {class_id} {super_id} {rel}")
        if image_id != 4:
            write_jpeg(root / rel)
    lines.append("5 3 oops")
    (root).mkdir(exist_ok=True)
    (root / "Ebay_test.txt").write_text("\n".join(lines) + "\n")
    return root


def test_sop_reads_split_with_labels(sop_root: Path) -> None:
    with pytest.warns(MissingImagesWarning):
        ds = StanfordOnlineProducts(sop_root.parent, split="test")
    assert ds.ids() == [1, 2, 3]
    assert ds[2].metadata == {"class_id": 2, "super_class_id": 3, "super_class": "chair"}
    assert ds.labels() == [1, 1, 2]
    assert Path(ds[0].image).is_file()


def test_sop_reports_missing_and_malformed(sop_root: Path) -> None:
    with pytest.warns(MissingImagesWarning):
        ds = StanfordOnlineProducts(sop_root)
    assert ds.missing == [4]
    assert [i.line for i in ds.issues] == [6]


def test_sop_missing_split_file_explains(sop_root: Path) -> None:
    with pytest.raises(DatasetError, match="Ebay_train.txt"):
        StanfordOnlineProducts(sop_root, split="train")
