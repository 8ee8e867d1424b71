"""The one chunk store: its writer, reader and rules, and folders written before it existed."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.lib import format as npformat

from visualsim import ColorHistogramExtractor, Recommender
from visualsim import persistence as P
from visualsim.checkpoint import ExtractionCheckpoint
from visualsim.chunks import (
    chunk_files,
    chunk_present,
    extractor_differences,
    read_chunk,
    refuse_foreign,
    write_chunk,
    write_store_manifest,
)
from visualsim.errors import CatalogError, ConfigError, DimensionMismatch
from visualsim.extractors.base import extractor_spec
from visualsim.shards import ShardWriter, load_into, read_shards

EXTRACTOR = ColorHistogramExtractor(bins=(4, 2, 2))
SPEC = extractor_spec(EXTRACTOR)
DIM = EXTRACTOR.dim


def _unit(n: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _npy(path: Path, array: np.ndarray) -> None:
    np.save(path, array, allow_pickle=False)


# -- the three layouts -----------------------------------------------------------------


@pytest.mark.parametrize("layout", ["npy", "parquet", "record"])
def test_every_layout_reads_back_what_was_written(tmp_path: Path, layout: str) -> None:
    x = _unit(3)
    files, digests = write_chunk(
        tmp_path,
        "part-7",
        layout,
        vectors=x,
        ids=["a", "b", "c"],
        metadata=[{"n": 1}, {}, {"tags": ["x"]}],
        dim=DIM,
        extra={"inputs": 4, "failed": [{"id": "d"}]} if layout == "record" else None,
    )
    assert sorted(digests) == sorted(files.values()) == sorted(p.name for p in tmp_path.iterdir())
    chunk = read_chunk(tmp_path, files, layout, dim=DIM, count=3, digests=digests)
    np.testing.assert_array_equal(chunk.vectors, x)
    assert chunk.ids == ["a", "b", "c"]
    assert chunk.metadata == [{"n": 1}, {}, {"tags": ["x"]}]
    assert chunk.record == ({"inputs": 4, "failed": [{"id": "d"}]} if layout == "record" else {})


def test_rows_that_do_not_align_are_refused_before_anything_is_written(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="2 vectors, 3 ids and 3 metadata rows"):
        write_chunk(tmp_path, "c", "npy", vectors=_unit(2), ids=["a", "b", "c"], metadata=[{}] * 3)
    with pytest.raises(DimensionMismatch, match=r"expected \(n, 7\)"):
        write_chunk(tmp_path, "c", "npy", vectors=_unit(1), ids=["a"], metadata=[{}], dim=7)
    assert list(tmp_path.iterdir()) == []


def test_a_file_the_store_did_not_write_is_never_overwritten(tmp_path: Path) -> None:
    (tmp_path / "chunk-000000.json").write_text("someone else's")
    with pytest.raises(CatalogError, match="not written by this checkpoint"):
        refuse_foreign(tmp_path, "chunk-000000", "record", mine=set())
    refuse_foreign(tmp_path, "chunk-000000", "record", mine={"chunk-000000"})  # its own
    with pytest.raises(CatalogError, match="not written"):
        write_chunk(
            tmp_path, "chunk-000000", "record", vectors=_unit(1), ids=["a"], metadata=[{}], mine=()
        )
    assert (tmp_path / "chunk-000000.json").read_text() == "someone else's"


def test_a_chunk_is_present_only_with_every_file_regular(tmp_path: Path) -> None:
    files, _ = write_chunk(tmp_path, "s", "npy", vectors=_unit(1), ids=["a"], metadata=[{}])
    assert chunk_present(tmp_path, files)
    (tmp_path / "s.ids.json").rename(tmp_path / "elsewhere.json")
    assert not chunk_present(tmp_path, files)
    (tmp_path / "s.ids.json").symlink_to(tmp_path / "elsewhere.json")
    assert not chunk_present(tmp_path, files)


# -- the reader ------------------------------------------------------------------------


def _npy_chunk(tmp_path: Path) -> dict[str, str]:
    files, _ = write_chunk(
        tmp_path, "s", "npy", vectors=_unit(2), ids=["a", "b"], metadata=[{}, {}]
    )
    return files


def test_the_reader_opens_nothing_outside_its_folder(tmp_path: Path) -> None:
    folder = tmp_path / "store"
    folder.mkdir()
    files = _npy_chunk(folder)
    _npy(tmp_path / "outside.npy", _unit(2))
    for name in ["../outside.npy", str(tmp_path / "outside.npy")]:
        with pytest.raises(CatalogError):
            read_chunk(folder, {**files, "vectors": name}, "npy", dim=DIM)
    (folder / "link.npy").symlink_to(tmp_path / "outside.npy")
    with pytest.raises(CatalogError, match="link"):
        read_chunk(folder, {**files, "vectors": "link.npy"}, "npy", dim=DIM)


def test_a_header_claiming_more_rows_is_refused_before_allocating(tmp_path: Path) -> None:
    files = _npy_chunk(tmp_path)
    header = io.BytesIO()
    npformat.write_array_header_1_0(
        header, {"descr": "<f4", "fortran_order": False, "shape": (2 * 10**12, DIM)}
    )
    (tmp_path / files["vectors"]).write_bytes(header.getvalue())
    with pytest.raises(CatalogError, match="s.npy"):
        read_chunk(tmp_path, files, "npy", dim=DIM)


def test_ids_dims_counts_and_checksums_are_checked(tmp_path: Path) -> None:
    files = _npy_chunk(tmp_path)
    with pytest.raises(CatalogError, match="s.npy"):
        read_chunk(tmp_path, files, "npy", dim=DIM + 1)
    with pytest.raises(CatalogError, match="holds 2 ids, not the 3"):
        read_chunk(tmp_path, files, "npy", dim=DIM, count=3)
    with pytest.raises(CatalogError, match="s.npy.*checksum"):
        read_chunk(tmp_path, files, "npy", dim=DIM, digests={files["vectors"]: "0" * 64})
    (tmp_path / files["ids"]).write_text('["a", 1.5]')
    with pytest.raises(CatalogError, match="s.ids.json.*list of ids"):
        read_chunk(tmp_path, files, "npy", dim=DIM)
    (tmp_path / files["ids"]).write_text('["a", "b"]')
    (tmp_path / files["metadata"]).write_text("{}\n")
    with pytest.raises(CatalogError, match="one object per id"):
        read_chunk(tmp_path, files, "npy", dim=DIM)


# -- the rules -------------------------------------------------------------------------


def test_the_resume_rule_is_same_vectors_and_a_damaged_spec_is_a_catalog_error() -> None:
    fast = extractor_spec(ColorHistogramExtractor(bins=(4, 2, 2), batch_size=3))
    assert extractor_differences(SPEC, fast, where="m.json") == []
    other = extractor_spec(ColorHistogramExtractor(bins=(4, 2, 3)))
    assert extractor_differences(SPEC, other, where="m.json") != []
    with pytest.raises(CatalogError, match="m.json.*needs a 'name'"):
        extractor_differences({"config": {}}, SPEC, where="m.json")


def test_the_store_manifest_is_a_persistence_manifest(tmp_path: Path) -> None:
    _, digests = write_chunk(tmp_path, "s", "npy", vectors=_unit(1), ids=["a"], metadata=[{}])
    written = write_store_manifest(
        tmp_path,
        "shards",
        fields={"format": "ignored", "library_version": "0.0.1", "dim": DIM},
        files=digests,
    )
    read = P.read_manifest(tmp_path, "shards")
    assert read == written and read["format"] == "visualsim.shards" and read["dim"] == DIM
    assert read["library_version"] != "0.0.1"  # this visualsim wrote it
    assert read["files"] == digests and sorted(digests) == sorted(chunk_files("s", "npy").values())


# -- folders written before the chunk store --------------------------------------------


def _old_checkpoint(folder: Path, version: int) -> None:
    """A checkpoint as visualsim 0.1 wrote it (format version ``version``), by hand."""
    folder.mkdir()
    files = {}
    for n, ids in enumerate([["a", "b"], ["c"]]):
        _npy(folder / f"chunk-{n:06d}.npy", _unit(len(ids), seed=n))
        record = {"ids": ids, "metadata": [{"n": i} for i in ids], "failed": [], "inputs": 2}
        (folder / f"chunk-{n:06d}.json").write_text(json.dumps(record))
        for suffix in (".npy", ".json"):
            files[f"chunk-{n:06d}{suffix}"] = _sha(folder / f"chunk-{n:06d}{suffix}")
    state: dict[str, Any]
    if version == 1:
        state = {"version": 1, "extractor": SPEC, "chunks": ["chunk-000000", "chunk-000001"]}
    else:
        state = {
            "format": "visualsim.checkpoint",
            "format_version": 2,
            "library_version": "0.1.0",
            "extractor": SPEC,
            "chunks": [
                {"name": "chunk-000000", "inputs": 2},
                {"name": "chunk-000001", "inputs": 2},
            ],
            "files": files,
            "pending": [],
            "consumed": 4,
            "created_dir": False,
            "clearing": False,
        }
    (folder / "progress.json").write_text(json.dumps(state))


@pytest.mark.parametrize("version", [1, 2])
def test_an_old_checkpoint_resumes_and_reads_back(tmp_path: Path, version: int) -> None:
    folder = tmp_path / "ckpt"
    _old_checkpoint(folder, version)
    ckpt = ExtractionCheckpoint(folder, SPEC)
    assert ckpt.consumed == 4 and ckpt.names == ["chunk-000000", "chunk-000001"]
    ckpt.write(_unit(1, seed=5), ["d"], [{"n": "d"}], [{"id": "e"}], 2)
    vectors, ids, metadata, failed = ExtractionCheckpoint(folder, SPEC).read(DIM)
    assert ids == ["a", "b", "c", "d"] and metadata[2] == {"n": "c"} and failed == [{"id": "e"}]
    np.testing.assert_array_equal(vectors[:2], _unit(2, seed=0))
    np.testing.assert_array_equal(vectors[3:], _unit(1, seed=5))
    ckpt.clear()
    assert list(folder.iterdir()) == []


def _old_shards(folder: Path) -> None:
    """A shard folder as visualsim 0.1 wrote it: tag ``visualsim-shards``, no ``files``."""
    folder.mkdir()
    shards = []
    for k, ids in enumerate([["red", "green"], ["blue"]]):
        stem = f"shard-{k:05d}"
        _npy(folder / f"{stem}.npy", _unit(len(ids), seed=k))
        (folder / f"{stem}.ids.json").write_text(json.dumps(ids))
        (folder / f"{stem}.metadata.jsonl").write_text(f'{{"k": {k}}}\n' * len(ids))
        files = {"vectors": f"{stem}.npy", "ids": f"{stem}.ids.json"}
        files["metadata"] = f"{stem}.metadata.jsonl"
        shards.append(
            {
                "index": k,
                "start": 2 * k,
                "stop": 2 * k + len(ids),
                "count": len(ids),
                "files": files,
                "sha256": {name: _sha(folder / name) for name in files.values()},
                "input_sha256": hashlib.sha256(json.dumps(ids).encode()).hexdigest(),
                "failed": [],
            }
        )
    manifest = {
        "format": "visualsim-shards",
        "format_version": 1,
        "library_version": "0.1.0",
        "extractor": SPEC,
        "dim": DIM,
        "dtype": "float32",
        "shard_format": "npy",
        "shard_size": 2,
        "count": 3,
        "inputs": 3,
        "complete": True,
        "shards": shards,
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))


def test_an_old_shard_folder_loads_and_resumes(tmp_path: Path) -> None:
    folder = tmp_path / "shards"
    _old_shards(folder)
    got = read_shards(folder)
    assert got.ids == ["red", "green", "blue"] and got.metadata[2] == {"k": 1}
    rec = load_into(Recommender(EXTRACTOR, "flat"), folder)
    assert rec.ids_ == ["red", "green", "blue"]
    writer = ShardWriter(folder, extractor=SPEC, dim=DIM, shard_size=2)
    assert writer.is_done(0, ["red", "green"]) and writer.is_done(1, ["blue"])
    writer.write(2, vectors=_unit(1, seed=9), ids=["pink"], metadata=[{}], input_ids=["pink"])
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["format"] == "visualsim.shards" and len(manifest["files"]) == 9
    assert read_shards(folder).ids == ["red", "green", "blue", "pink"]
