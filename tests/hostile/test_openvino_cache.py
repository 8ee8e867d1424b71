"""OpenVINO's model cache is checked, not trusted blindly (issue 28, item 4).

Each entry's manifest lists its model files' SHA-256s and the identity that made
them; a damaged or mismatched entry is rebuilt and replaced with one warning, a
planted network whose manifest names another identity is refused, and a cache
folder others can write to is not used. The networks here are tiny OpenVINO
graphs built directly (no TensorFlow), so every test takes well under a second.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov
import openvino.opset13 as ops
import pytest

from visualsim import persistence as P
from visualsim.extractors import openvino as ovx

BATCH = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)


def _network(scale: float) -> Any:
    """``uint8 (n, 4, 4, 3)`` -> the channel means times ``scale``, ``(n, 3)``."""
    x = ops.parameter([-1, 4, 4, 3], ov.Type.u8, name="images")
    mean = ops.reduce_mean(ops.convert(x, ov.Type.f32), np.array([1, 2]), keep_dims=False)
    out = ops.multiply(mean, ops.constant(np.float32(scale)))
    return ov.Model([out], [x], "tiny")


class Maker:
    """``make_model`` that counts its calls (a call is a rebuild)."""

    def __init__(self, scale: float = 1.0) -> None:
        self.scale = scale
        self.calls = 0

    def __call__(self) -> tuple[Any, dict[str, Any]]:
        self.calls += 1
        return _network(self.scale), {"net": "tiny", "scale": self.scale}


def _runner(cache: Path | None, maker: Maker) -> ovx.OpenVINORunner:
    return ovx.OpenVINORunner(
        identity={"net": "tiny", "scale": maker.scale},
        make_model=maker,
        precision="f32",
        cache=cache,
        label="tiny",
    )


def _expected(scale: float) -> np.ndarray:
    return BATCH.astype(np.float32).mean(axis=(1, 2)) * scale


def _entry(cache: Path) -> Path:
    (entry,) = [p for p in cache.iterdir() if p.name.startswith("base-")]
    return entry


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    folder = tmp_path / "ov-cache"
    maker = Maker()
    np.testing.assert_allclose(_runner(folder, maker)(BATCH), _expected(1.0), rtol=1e-5)
    assert maker.calls == 1
    return folder


def _no_warnings(call: Callable[[], Any]) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return call()


def test_a_second_start_uses_the_checked_entry(cache: Path) -> None:
    maker = Maker()
    runner = _runner(cache, maker)
    np.testing.assert_allclose(_no_warnings(lambda: runner(BATCH)), _expected(1.0), rtol=1e-5)
    assert maker.calls == 0 and runner.cache_hits_ == ["base"]
    meta = json.loads((_entry(cache) / "meta.json").read_text())
    assert set(meta["files"]) == {"model.xml", "model.bin"}
    assert meta["identity"] == {"net": "tiny", "scale": 1.0}
    assert (os.stat(cache).st_mode & 0o077) == 0  # created for the user only


def test_a_truncated_model_bin_is_detected_and_replaced(cache: Path) -> None:
    binary = _entry(cache) / "model.bin"
    binary.write_bytes(binary.read_bytes()[:-1])
    maker = Maker()
    runner = _runner(cache, maker)
    with pytest.warns(UserWarning, match=r"base-.*rebuilt and replaced.*model\.bin"):
        np.testing.assert_allclose(runner(BATCH), _expected(1.0), rtol=1e-5)
    assert maker.calls == 1 and runner.cache_misses_ == ["base"]
    # the entry was replaced: the next start uses the cache again, no rebuild, no warning
    again = Maker()
    runner = _runner(cache, again)
    np.testing.assert_allclose(_no_warnings(lambda: runner(BATCH)), _expected(1.0), rtol=1e-5)
    assert again.calls == 0 and runner.cache_hits_ == ["base"]
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]  # no temp dirs left


def test_a_manifest_of_another_identity_is_ignored_and_replaced(cache: Path) -> None:
    meta_file = _entry(cache) / "meta.json"
    meta = json.loads(meta_file.read_text())
    meta["identity"] = {"net": "tiny", "scale": 9.0}  # files untouched, hashes still right
    meta_file.write_text(json.dumps(meta))
    maker = Maker()
    with pytest.warns(UserWarning, match="another identity"):
        _runner(cache, maker)(BATCH)
    assert maker.calls == 1
    again = Maker()
    runner = _runner(cache, again)
    _no_warnings(lambda: runner(BATCH))
    assert again.calls == 0


def test_a_planted_network_with_a_forged_manifest_is_refused(cache: Path) -> None:
    """A constant-ish network (scale 1000) with a consistent manifest of *its* identity."""
    entry = _entry(cache)
    for f in entry.iterdir():
        f.unlink()
    ov.save_model(_network(1000.0), str(entry / "model.xml"), compress_to_fp16=False)
    forged = {**_runner(cache, Maker())._key_parts(kind="base")}
    forged["identity"] = {"net": "tiny", "scale": 1000.0}  # the planter's own weights
    P.write_manifest(entry, "openvino.model", forged)  # correct file hashes
    maker = Maker()
    with pytest.warns(UserWarning, match="another identity"):
        vectors = _runner(cache, maker)(BATCH)
    np.testing.assert_allclose(vectors, _expected(1.0), rtol=1e-5)  # not the planted ones
    assert maker.calls == 1


def test_a_hand_made_entry_without_a_manifest_is_replaced(cache: Path) -> None:
    entry = _entry(cache)
    (entry / "meta.json").write_text(json.dumps({"identity": {"net": "tiny", "scale": 1.0}}))
    maker = Maker()
    with pytest.warns(UserWarning, match="not a visualsim.openvino.model manifest"):
        _runner(cache, maker)(BATCH)
    assert maker.calls == 1
    assert json.loads((entry / "meta.json").read_text())["format"] == "visualsim.openvino.model"


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o702])
def test_a_cache_folder_others_can_write_is_not_used(cache: Path, mode: int) -> None:
    os.chmod(cache, mode)
    try:
        maker = Maker()
        runner = _runner(cache, maker)
        with pytest.warns(UserWarning, match=r"not using the OpenVINO cache folder .*writable by"):
            np.testing.assert_allclose(runner(BATCH), _expected(1.0), rtol=1e-5)
        assert maker.calls == 1 and runner.cache is None  # built in memory, cache not read
        assert runner.cache_hits_ == []
    finally:
        os.chmod(cache, 0o700)


def test_a_cache_folder_inside_a_folder_others_can_write_is_not_used(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)  # no sticky bit: anyone may rename our folder away
    try:
        maker = Maker()
        runner = _runner(shared / "ov-cache", maker)
        with pytest.warns(UserWarning, match="writable by others without the sticky bit"):
            runner(BATCH)
        assert maker.calls == 1 and runner.cache is None
        os.chmod(shared, 0o1777)  # sticky, like /tmp: only the owner renames
        again = Maker()
        runner = _runner(shared / "ov-cache", again)
        _no_warnings(lambda: runner(BATCH))
        assert runner.cache is not None
    finally:
        os.chmod(shared, 0o700)


def test_a_cache_path_that_is_a_file_is_not_used(tmp_path: Path) -> None:
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    maker = Maker()
    with pytest.warns(UserWarning, match="not a folder"):
        _runner(not_a_folder, maker)(BATCH)
    assert maker.calls == 1
