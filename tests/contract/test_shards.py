"""Vector shards on disk: round trips, atomicity, resumption checks, and into a catalogue."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from visualsim import ColorHistogramExtractor, Recommender
from visualsim.errors import CatalogError, ConfigError, DimensionMismatch, FormatVersionError
from visualsim.extractors.base import extractor_spec
from visualsim.shards import (
    MANIFEST,
    ShardWriter,
    iter_shards,
    load_into,
    read_manifest,
    read_shards,
    same_extractor,
)

FORMATS = ["npy", "parquet"]
EXTRACTOR = ColorHistogramExtractor(bins=(4, 2, 2))
SPEC = extractor_spec(EXTRACTOR)
DIM = EXTRACTOR.dim


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    x = rng.normal(size=(n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _write(path: Path, n: int = 25, shard_size: int = 10, format: str = "npy") -> np.ndarray:
    """Write ``n`` random vectors with ids ``item-i`` in shards; return the vectors."""
    rng = np.random.default_rng(0)
    vectors = _unit(rng, n)
    writer = ShardWriter(path, extractor=SPEC, dim=DIM, shard_size=shard_size, format=format)  # type: ignore[arg-type]
    for k, start in enumerate(range(0, n, shard_size)):
        stop = min(start + shard_size, n)
        ids = [f"item-{i}" for i in range(start, stop)]
        writer.write(
            k,
            vectors=vectors[start:stop],
            ids=ids,
            metadata=[{"n": i, "even": i % 2 == 0} for i in range(start, stop)],
            input_ids=ids,
        )
    writer.finish(n)
    return vectors


@pytest.mark.parametrize("format", FORMATS)
def test_shards_round_trip_vectors_ids_and_metadata(tmp_path: Path, format: str) -> None:
    vectors = _write(tmp_path, format=format)
    got = read_shards(tmp_path)
    np.testing.assert_array_equal(got.vectors, vectors)
    assert got.vectors.dtype == np.float32
    assert got.ids == [f"item-{i}" for i in range(25)]
    assert got.metadata[3] == {"n": 3, "even": False}
    assert got.extractor == SPEC
    assert len(got) == 25


@pytest.mark.parametrize("format", FORMATS)
def test_iter_shards_yields_each_shard_in_input_order(tmp_path: Path, format: str) -> None:
    _write(tmp_path, format=format)
    shards = list(iter_shards(tmp_path))
    assert [(s.index, s.start, s.stop, len(s.ids)) for s in shards] == [
        (0, 0, 10, 10),
        (1, 10, 20, 10),
        (2, 20, 25, 5),
    ]


def test_manifest_describes_every_shard(tmp_path: Path) -> None:
    _write(tmp_path)
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    assert manifest["format"] == "visualsim.shards"
    assert manifest["extractor"] == SPEC
    assert (manifest["dim"], manifest["count"], manifest["inputs"]) == (DIM, 25, 25)
    assert manifest["complete"] is True
    assert [s["count"] for s in manifest["shards"]] == [10, 10, 5]
    for shard in manifest["shards"]:
        assert set(shard["sha256"]) == set(shard["files"].values())


def test_parquet_shards_hold_integer_ids_as_integers(tmp_path: Path) -> None:
    writer = ShardWriter(tmp_path, extractor=SPEC, dim=DIM, shard_size=4, format="parquet")
    writer.write(
        0,
        vectors=_unit(np.random.default_rng(1), 2),
        ids=[7, 8],
        metadata=[{}, {}],
        input_ids=[7, 8],
    )
    assert read_shards(tmp_path).ids == [7, 8]


def test_parquet_shards_refuse_mixed_id_types(tmp_path: Path) -> None:
    writer = ShardWriter(tmp_path, extractor=SPEC, dim=DIM, shard_size=4, format="parquet")
    with pytest.raises(ConfigError, match="one type"):
        writer.write(
            0,
            vectors=_unit(np.random.default_rng(1), 2),
            ids=[7, "a"],
            metadata=[{}, {}],
            input_ids=[7, "a"],
        )
    assert not list(tmp_path.glob("*.parquet"))


def test_half_written_files_are_ignored_and_then_removed(tmp_path: Path) -> None:
    vectors = _write(tmp_path, n=20)
    # what a crash in the middle of shard 2 leaves: a temporary and an unlisted final file
    (tmp_path / ".shard-00002.npy.tmp-4242").write_bytes(b"\x93NUMPY half")
    (tmp_path / "shard-00002.npy").write_bytes(b"\x93NUMPY torn")
    got = read_shards(tmp_path)
    np.testing.assert_array_equal(got.vectors, vectors)
    writer = ShardWriter(tmp_path, extractor=SPEC, dim=DIM, shard_size=10)
    assert not list(tmp_path.glob(".*.tmp-*"))
    assert not writer.is_done(2)


def test_is_done_only_for_listed_shards_whose_files_exist(tmp_path: Path) -> None:
    _write(tmp_path)
    (tmp_path / "shard-00001.ids.json").unlink()
    writer = ShardWriter(tmp_path, extractor=SPEC, dim=DIM, shard_size=10)
    assert [writer.is_done(k) for k in range(4)] == [True, False, True, False]


def test_resuming_with_other_inputs_is_refused(tmp_path: Path) -> None:
    _write(tmp_path)
    writer = ShardWriter(tmp_path, extractor=SPEC, dim=DIM, shard_size=10)
    assert writer.is_done(0, [f"item-{i}" for i in range(10)])
    with pytest.raises(ConfigError, match="other inputs"):
        writer.is_done(0, [f"other-{i}" for i in range(10)])


def test_reopening_with_another_extractor_is_refused(tmp_path: Path) -> None:
    _write(tmp_path)
    other = extractor_spec(ColorHistogramExtractor(bins=(4, 2, 2), sqrt=False))
    with pytest.raises(ConfigError, match="extractor"):
        ShardWriter(tmp_path, extractor=other, dim=DIM, shard_size=10)


def test_reopening_with_another_shard_size_is_refused(tmp_path: Path) -> None:
    _write(tmp_path)
    with pytest.raises(ConfigError, match="shard_size"):
        ShardWriter(tmp_path, extractor=SPEC, dim=DIM, shard_size=11)


def test_speed_settings_do_not_make_another_extractor() -> None:
    fast = extractor_spec(ColorHistogramExtractor(bins=(4, 2, 2), batch_size=7, num_workers=0))
    assert same_extractor(SPEC, fast)
    assert not same_extractor(SPEC, extractor_spec(ColorHistogramExtractor(bins=(4, 2, 3))))


def test_a_damaged_shard_fails_its_checksum(tmp_path: Path) -> None:
    _write(tmp_path)
    file = tmp_path / "shard-00001.npy"
    data = bytearray(file.read_bytes())
    data[-1] ^= 0xFF
    file.write_bytes(bytes(data))
    with pytest.raises(CatalogError, match="shard-00001.npy.*checksum"):
        read_shards(tmp_path)
    assert len(read_shards(tmp_path, verify=False)) == 25


def test_a_missing_shard_file_is_named(tmp_path: Path) -> None:
    _write(tmp_path)
    (tmp_path / "shard-00002.metadata.jsonl").unlink()
    with pytest.raises(CatalogError, match="shard-00002.metadata.jsonl"):
        read_shards(tmp_path)


def test_a_folder_without_manifest_is_not_a_shard_folder(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="no manifest.json"):
        read_shards(tmp_path)


def test_a_newer_format_version_asks_for_an_upgrade(tmp_path: Path) -> None:
    _write(tmp_path)
    manifest = read_manifest(tmp_path)
    manifest["format_version"] = 99
    (tmp_path / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(FormatVersionError, match="upgrade"):
        read_shards(tmp_path)


def test_bad_writer_settings_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="shard_size"):
        ShardWriter(tmp_path, extractor=SPEC, dim=DIM, shard_size=0)
    with pytest.raises(ConfigError, match="format"):
        ShardWriter(tmp_path, extractor=SPEC, dim=DIM, shard_size=5, format="csv")  # type: ignore[arg-type]


def _colour_shards(path: Path) -> list[np.ndarray]:
    images = []
    for rgb in [(220, 20, 20), (20, 200, 20), (20, 20, 220), (230, 220, 30)]:
        image = np.zeros((16, 16, 3), np.uint8)
        image[...] = rgb
        images.append(image)
    writer = ShardWriter(path, extractor=SPEC, dim=DIM, shard_size=2)
    vectors = EXTRACTOR.extract(images)
    ids = ["red", "green", "blue", "yellow"]
    for k in range(2):
        part = slice(2 * k, 2 * k + 2)
        writer.write(
            k, vectors=vectors[part], ids=ids[part], metadata=[{}, {}], input_ids=ids[part]
        )
    writer.finish(4)
    return images


def test_recommender_from_shards_answers_queries(tmp_path: Path) -> None:
    images = _colour_shards(tmp_path)
    rec = Recommender.from_shards(tmp_path, "flat")
    assert rec.ids_ == ["red", "green", "blue", "yellow"]
    assert rec.query(images[2], k=1)[0].id == "blue"


def test_load_into_refuses_shards_of_another_extractor(tmp_path: Path) -> None:
    from visualsim import Recommender

    _colour_shards(tmp_path)
    other = Recommender(ColorHistogramExtractor(bins=(4, 2, 2), sqrt=False), "flat")
    with pytest.raises(ConfigError, match="made by"):
        load_into(other, tmp_path)
    wider = Recommender(ColorHistogramExtractor(bins=(8, 2, 2)), "flat")
    with pytest.raises(DimensionMismatch):
        load_into(wider, tmp_path)
    assert len(wider.ids_) == 0
