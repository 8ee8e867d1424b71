"""The extractor conformance suite (`visualsim.testing.check_extractor`) on the built-ins."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from PIL import Image, ImageDraw

from visualsim import (
    ColorHistogramExtractor,
    ConcatExtractor,
    PrecomputedVectors,
    SilhouetteExtractor,
    SqueezeNetExtractor,
)
from visualsim.extractors.base import BaseExtractor, register_extractor
from visualsim.testing import check_extractor


def drawings(n: int = 6, size: int = 96) -> list[np.ndarray]:
    """Coloured shapes on white, each different, as RGB arrays."""
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        image = Image.new("RGB", (size, size), "white")
        draw = ImageDraw.Draw(image)
        lo, hi = rng.integers(5, size // 3, 2), rng.integers(2 * size // 3, size - 5, 2)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if i % 2 else draw.rectangle)((*lo, *hi), fill=colour, outline="black")
        out.append(np.asarray(image))
    return out


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    return drawings()


EXTRACTORS: dict[str, Callable[[], Any]] = {
    "color": ColorHistogramExtractor,
    "color-small": lambda: ColorHistogramExtractor(bins=(4, 2, 2), grey_bins=2, layout=0),
    "silhouette": SilhouetteExtractor,
    "concat": lambda: ConcatExtractor([ColorHistogramExtractor(), SilhouetteExtractor()]),
}


@pytest.mark.parametrize("name", list(EXTRACTORS))
def test_builtin_extractors_pass_the_contract(name: str, images: list[np.ndarray]) -> None:
    check_extractor(EXTRACTORS[name](), images)


def test_images_from_files_pass_too(images: list[np.ndarray], tmp_path: Path) -> None:
    paths = []
    for i, array in enumerate(images):
        Image.fromarray(array).save(tmp_path / f"{i}.png")
        paths.append(str(tmp_path / f"{i}.png"))
    check_extractor(ColorHistogramExtractor(), paths)


def test_squeezenet_passes_the_contract(images: list[np.ndarray]) -> None:
    check_extractor(SqueezeNetExtractor(num_workers=0), images[:3], atol=1e-4)


def test_precomputed_vectors_have_a_dimension_and_a_config_only() -> None:
    check_extractor(PrecomputedVectors(24, source="my model"), None)


# ----------------------------------------------------------------------------- the suite can fail


class _Toy(BaseExtractor):
    """Mean colour of the image: three numbers."""

    name: ClassVar[str] = ""

    @property
    def dim(self) -> int:
        return 3

    def get_config(self) -> dict[str, Any]:
        return {"batch_size": self.batch_size, "num_workers": self.num_workers}

    def _prepare(self, image: np.ndarray) -> np.ndarray:
        return image.reshape(-1, 3).mean(axis=0).astype(np.float32) + 1.0

    def _embed(self, batch: np.ndarray) -> np.ndarray:
        return batch


@register_extractor("toy-mean-colour", overwrite=True)
class _Fine(_Toy):
    pass


@register_extractor("toy-random", overwrite=True)
class _Random(_Toy):
    def _embed(self, batch: np.ndarray) -> np.ndarray:
        return batch + np.random.default_rng().random(batch.shape).astype(np.float32)


@register_extractor("toy-batch-dependent", overwrite=True)
class _BatchDependent(_Toy):
    def _embed(self, batch: np.ndarray) -> np.ndarray:
        return batch + batch.mean(axis=0)  # each vector depends on its batch mates


@register_extractor("toy-float64", overwrite=True)
class _Float64(_Toy):
    def extract(self, images: Any, **kwargs: Any) -> np.ndarray:
        return super().extract(images, **kwargs).astype(np.float64)


@register_extractor("toy-loses-config", overwrite=True)
class _LosesConfig(_Toy):
    def __init__(self, *, scale: float = 1.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.scale = scale

    def _embed(self, batch: np.ndarray) -> np.ndarray:
        return batch * np.array([1.0, self.scale, 1.0], np.float32)


class _Unregistered(_Toy):
    pass


def test_a_well_behaved_toy_extractor_passes(images: list[np.ndarray]) -> None:
    check_extractor(_Fine(), images)


@pytest.mark.parametrize(
    ("extractor", "message"),
    [
        (_Random(), "not deterministic"),
        (_BatchDependent(), "batch_size=1"),
        (_Float64(), "not float32"),
        (_LosesConfig(scale=5.0), "rebuilt from its config"),
        (_Unregistered(), "cannot be saved"),
    ],
    ids=["random", "batch-dependent", "float64", "loses-config", "unregistered"],
)
def test_the_suite_names_a_broken_promise(
    extractor: Any, message: str, images: list[np.ndarray]
) -> None:
    with pytest.raises(AssertionError, match=message):
        check_extractor(extractor, images)
