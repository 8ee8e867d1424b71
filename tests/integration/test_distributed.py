"""Extraction on Ray: the same vectors as one process, in input order; resumable shards.

Ray starts once for the module (2 CPUs, local) and each run costs a few
seconds of actor start-up, so the shard tests share one extraction.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from visualsim import ColorHistogramExtractor, Recommender, distributed
from visualsim.datasets.synthetic import SyntheticProducts
from visualsim.errors import ConfigError, DuplicateIdError, ImageLoadError
from visualsim.shards import MANIFEST, read_shards

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.*")
EXTRACTOR = ColorHistogramExtractor()


@pytest.fixture(scope="module")
def ray_session() -> Iterator[None]:
    import ray

    started = distributed.init_ray(num_cpus=2)
    yield
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def paths(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """50 generated product JPEGs, shuffled so input order is not file order."""
    root = tmp_path_factory.mktemp("products")
    files = [str(p) for p in SyntheticProducts(50, size=64).write_folder(root)]
    order = np.random.default_rng(7).permutation(len(files))
    return [files[i] for i in order]


@pytest.fixture(scope="module")
def bad_file(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("bad") / "broken.jpg"
    path.write_bytes(b"\xff\xd8 not really a jpeg")
    return str(path)


# -- without Ray -----------------------------------------------------------------------


def test_importing_visualsim_distributed_does_not_import_ray() -> None:
    code = "import sys, visualsim, visualsim.distributed; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_missing_ray_is_a_config_error_with_the_install_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ConfigError, match=r"visualsim\[ray\]"):
        distributed.extract([np.zeros((8, 8, 3), np.uint8)], EXTRACTOR)


def test_bad_settings_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="not both"):
        distributed.init_ray(num_cpus=2, address="auto")
    with pytest.raises(ConfigError, match="on_error"):
        distributed.extract_batch([], EXTRACTOR, on_error="ignore")  # type: ignore[arg-type]


def test_repeated_ids_are_refused_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(DuplicateIdError, match="'x'.*unique"):
        distributed.extract_to_shards(["a.jpg", "b.jpg"], EXTRACTOR, tmp_path, ids=["x", "x"])


def test_parquet_shards_with_mixed_id_types_are_refused_before_any_work(tmp_path: Path) -> None:
    images = ["a.jpg", np.zeros((8, 8, 3), np.uint8)]  # default ids: a path and a position
    with pytest.raises(ConfigError, match="one type"):
        distributed.extract_to_shards(images, EXTRACTOR, tmp_path, format="parquet")


# -- on Ray ----------------------------------------------------------------------------


def test_extract_on_ray_matches_one_process_in_input_order(
    ray_session: None, paths: list[str]
) -> None:
    vectors = distributed.extract(paths, EXTRACTOR, batch_size=8, concurrency=2)
    expected = EXTRACTOR.extract(paths)
    assert vectors.shape == (50, EXTRACTOR.dim) and vectors.dtype == np.float32
    np.testing.assert_allclose(vectors, expected, atol=1e-5)
    # the images differ, so a row out of place could not pass unnoticed
    assert len({row.tobytes() for row in expected}) == 50


def test_extract_batch_skips_unreadable_inputs_and_names_them(
    ray_session: None, paths: list[str], tmp_path: Path
) -> None:
    with open(paths[1], "rb") as fh:
        encoded = fh.read()
    array = np.asarray(Image.open(paths[2]).convert("RGB"))
    missing = str(tmp_path / "missing.jpg")
    pil = Image.new("RGB", (8, 8))
    inputs: list[Any] = [paths[0], encoded, array, b"garbage", missing, pil, io.BytesIO(encoded)]
    result = distributed.extract_batch(inputs, EXTRACTOR, batch_size=3, concurrency=1)
    assert result.positions == [0, 1, 2, 6]
    assert all(
        got is sent for got, sent in zip(result.items, [*inputs[:3], inputs[6]], strict=True)
    )
    np.testing.assert_allclose(
        result.vectors, EXTRACTOR.extract([paths[0], paths[1], array, encoded]), atol=1e-5
    )
    assert all(got is sent for (got, _), sent in zip(result.failed, inputs[3:6], strict=True))
    failed = {id(item): str(error) for item, error in result.failed}
    assert "missing.jpg" in failed[id(missing)] and "no such file" in failed[id(missing)]
    assert "numpy arrays" in failed[id(pil)]


def test_extract_raises_for_the_first_unreadable_input(
    ray_session: None, paths: list[str], bad_file: str, tmp_path: Path
) -> None:
    missing = str(tmp_path / "gone.jpg")
    with pytest.raises(ImageLoadError, match="gone.jpg.*no such file"):
        distributed.extract([*paths[:3], missing, bad_file], EXTRACTOR, concurrency=1)


@pytest.fixture(scope="module")
def shard_dir(
    ray_session: None, paths: list[str], bad_file: str, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The 50 images and one broken file in shards of 16 (the last shard: 2 good, 1 bad)."""
    out = tmp_path_factory.mktemp("shards") / "run"
    report = distributed.extract_to_shards(
        [*paths, bad_file], EXTRACTOR, out, shard_size=16, batch_size=8, concurrency=2
    )
    assert (report.written, report.skipped, report.count) == ([0, 1, 2, 3], [], 50)
    assert [(p, str(src)) for p, src, _ in report.failed] == [(50, bad_file)]
    return out


def test_shards_hold_the_vectors_of_one_process_with_ids_and_metadata(
    shard_dir: Path, paths: list[str], bad_file: str
) -> None:
    got = read_shards(shard_dir)
    np.testing.assert_allclose(got.vectors, EXTRACTOR.extract(paths), atol=1e-5)
    assert got.ids == paths
    assert got.metadata[0] == {"path": paths[0]}
    assert got.extractor["name"] == "color"
    assert [(f["position"], f["id"]) for f in got.failed] == [(50, bad_file)]


def test_a_complete_folder_is_skipped_without_extracting(
    shard_dir: Path, paths: list[str], bad_file: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_ray(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("nothing should be extracted")

    monkeypatch.setattr(distributed, "_run", no_ray)
    report = distributed.extract_to_shards([*paths, bad_file], EXTRACTOR, shard_dir, shard_size=16)
    assert (report.written, report.skipped, report.count) == ([], [0, 1, 2, 3], 50)


def test_other_inputs_cannot_resume_a_folder(shard_dir: Path, paths: list[str]) -> None:
    with pytest.raises(ConfigError, match="other inputs"):
        distributed.extract_to_shards(paths[::-1], EXTRACTOR, shard_dir, shard_size=16)


def test_a_shorter_input_cannot_resume_a_folder(shard_dir: Path, paths: list[str]) -> None:
    with pytest.raises(ConfigError, match="beyond"):
        distributed.extract_to_shards(paths[:32], EXTRACTOR, shard_dir, shard_size=16)


def test_resume_after_a_crash_extracts_only_the_unfinished_shard(
    shard_dir: Path,
    paths: list[str],
    bad_file: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    crashed = tmp_path / "crashed"
    shutil.copytree(shard_dir, crashed)
    # a crash while writing shard 2: not in the manifest, a torn file and a temporary left
    manifest = json.loads((crashed / MANIFEST).read_text())
    manifest["shards"] = [s for s in manifest["shards"] if s["index"] != 2]
    manifest["complete"] = False
    (crashed / MANIFEST).write_text(json.dumps(manifest))
    (crashed / "shard-00002.npy").write_bytes(b"torn")
    (crashed / ".shard-00002.ids.json.tmp-999").write_text("[")
    untouched = (crashed / "shard-00001.npy").stat().st_mtime_ns

    sent: list[int] = []
    real_run = distributed._run

    def counting_run(sources: Any, *args: Any, **kwargs: Any) -> Any:
        sent.append(len(sources))
        return real_run(sources, *args, **kwargs)

    monkeypatch.setattr(distributed, "_run", counting_run)
    report = distributed.extract_to_shards(
        [*paths, bad_file], EXTRACTOR, crashed, shard_size=16, batch_size=8, concurrency=1
    )
    assert sent == [16]
    assert (report.written, report.skipped) == ([2], [0, 1, 3])
    assert (crashed / "shard-00001.npy").stat().st_mtime_ns == untouched
    assert not list(crashed.glob(".*.tmp-*"))
    np.testing.assert_allclose(read_shards(crashed).vectors, read_shards(shard_dir).vectors)


def test_shards_become_a_catalogue_that_finds_each_image(shard_dir: Path, paths: list[str]) -> None:
    rec = Recommender.from_shards(shard_dir, "flat")
    assert len(rec.ids_) == 50
    assert rec.query(paths[17], k=1)[0].id == paths[17]
