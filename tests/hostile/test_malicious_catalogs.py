"""A catalogue from a stranger: every damaged or hostile manifest and file is one CatalogError."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from visualsim import CatalogError, ColorHistogramExtractor, Recommender, VisualsimError


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ext = ColorHistogramExtractor(bins=(4, 2, 2))
    rng = np.random.default_rng(0)
    rec = Recommender(ext, "hnsw").add_vectors(
        rng.normal(size=(30, ext.dim)).astype(np.float32),
        [f"id-{i}" for i in range(30)],
        [{"cat": f"c{i % 3}", "price": float(i)} for i in range(30)],
    )
    rec.compact()  # seal the rows into the HNSW index
    rec.remove(["id-4"])
    return rec.save(tmp_path_factory.mktemp("good") / "cat")


def _copy(src: Path, dst: Path) -> Path:
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst, symlinks=True)
    return dst


def _manifest(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((path / "manifest.json").read_text())
    return data


def _write(path: Path, manifest: dict[str, Any]) -> None:
    (path / "manifest.json").write_text(json.dumps(manifest))


HOSTILE_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.sampled_from(["../../etc/passwd", "/etc/passwd", "twenty", "index-x", "a/../../b"]),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
)
FIELDS = [
    "dim", "storage", "count", "rows", "indexed_upto", "chunks", "dead", "overrides", "failed",
    "index_dir", "index", "extractor", "fields", "declared", "files", "format_version",
    "reducer", "image_root", "catalog_uid", "generation", "transform",
]  # fmt: skip


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(field=st.sampled_from(FIELDS), value=HOSTILE_VALUES)
def test_a_hostile_manifest_field_is_a_catalog_error(
    saved: Path, tmp_path_factory: pytest.TempPathFactory, field: str, value: Any
) -> None:
    path = _copy(saved, tmp_path_factory.mktemp("bad") / "cat")
    manifest = _manifest(path)
    manifest[field] = value
    _write(path, manifest)
    try:
        rec = Recommender.load(path)
    except VisualsimError:
        return  # CatalogError, FormatVersionError, ConfigError from a bad config: all clear
    assert len(rec) == 29  # whatever loads is the real catalogue


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    key=st.sampled_from(["start", "stop", "vectors", "ids", "metadata", "sources"]),
    value=HOSTILE_VALUES,
)
def test_a_hostile_chunk_entry_is_a_catalog_error(
    saved: Path, tmp_path_factory: pytest.TempPathFactory, key: str, value: Any
) -> None:
    path = _copy(saved, tmp_path_factory.mktemp("bad") / "cat")
    manifest = _manifest(path)
    # the value the chunk already holds (start=0) is no change: loading it must succeed
    assume(json.dumps(value) != json.dumps(manifest["chunks"][0].get(key)))
    manifest["chunks"][0][key] = value
    _write(path, manifest)
    try:
        Recommender.load(path, verify=False)
    except VisualsimError:
        return
    raise AssertionError(f"chunk {key}={value!r} was accepted")  # every change here breaks it


def test_names_outside_the_folder_are_never_opened(saved: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.npy"
    np.save(secret, np.zeros((29, 24), np.float32))
    path = _copy(saved, tmp_path / "cat")
    manifest = _manifest(path)
    manifest["chunks"][0]["vectors"] = "../secret.npy"
    manifest["files"]["../secret.npy"] = "0" * 64
    _write(path, manifest)
    with pytest.raises(CatalogError, match="secret"):
        Recommender.load(path, verify=False)
    manifest["chunks"][0]["vectors"] = str(secret)
    _write(path, manifest)
    with pytest.raises(CatalogError):
        Recommender.load(path, verify=False)


def test_a_symlink_inside_the_folder_is_refused(saved: Path, tmp_path: Path) -> None:
    path = _copy(saved, tmp_path / "cat")
    chunk = _manifest(path)["chunks"][0]
    target = path / chunk["ids"]
    elsewhere = tmp_path / "ids-elsewhere.json"
    shutil.move(target, elsewhere)
    os.symlink(elsewhere, target)
    with pytest.raises(CatalogError):
        Recommender.load(path, verify=False)


def test_a_huge_npy_header_is_refused_before_allocating(saved: Path, tmp_path: Path) -> None:
    path = _copy(saved, tmp_path / "cat")
    vectors = path / _manifest(path)["chunks"][0]["vectors"]
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (1000000000000, 1024), }"
    data = b"\x93NUMPY\x01\x00" + len(header + "\n").to_bytes(2, "little") + header.encode() + b"\n"
    vectors.write_bytes(data)
    with pytest.raises(CatalogError):
        Recommender.load(path, verify=False)


def test_nan_vectors_and_deep_json_are_refused(saved: Path, tmp_path: Path) -> None:
    path = _copy(saved, tmp_path / "cat")
    vectors = path / _manifest(path)["chunks"][0]["vectors"]
    x = np.load(vectors)
    x[3, 2] = np.nan
    np.save(vectors, x)
    with pytest.raises(CatalogError, match="NaN|finite"):
        Recommender.load(path, verify=False)
    path = _copy(saved, tmp_path / "cat2")
    ids = path / _manifest(path)["chunks"][0]["ids"]
    ids.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(CatalogError):
        Recommender.load(path, verify=False)


def test_an_index_of_other_rows_is_refused(saved: Path, tmp_path: Path) -> None:
    """The index must hold exactly the catalogue's sealed rows."""
    ext = ColorHistogramExtractor(bins=(4, 2, 2))
    other = Recommender(ext, "hnsw").add_vectors(
        np.random.default_rng(1).normal(size=(12, ext.dim)).astype(np.float32), list(range(12))
    )
    other.compact()
    elsewhere = other.save(tmp_path / "other")
    path = _copy(saved, tmp_path / "cat")
    manifest = _manifest(path)
    index_dir = manifest["index_dir"]
    shutil.rmtree(path / index_dir)
    other_dir = _manifest(elsewhere)["index_dir"]
    shutil.copytree(elsewhere / other_dir, path / index_dir)
    with pytest.raises(CatalogError, match="index"):
        Recommender.load(path, verify=False)
