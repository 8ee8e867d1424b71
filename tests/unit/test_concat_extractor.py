"""ConcatExtractor: weighted concatenation of extractors (visualsim.extractors.concat)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw

import visualsim.extractors.base as base_module
from visualsim.errors import ConfigError, ImageLoadError
from visualsim.extractors.base import (
    BaseExtractor,
    extractor_from_config,
    extractor_spec,
    make_extractor,
    register_extractor,
)
from visualsim.extractors.color import ColorHistogramExtractor
from visualsim.extractors.concat import ConcatExtractor
from visualsim.images import resize_image


@register_extractor("test-grey-gradient")
class GreyGradientExtractor(BaseExtractor):
    """Histogram of grey-level gradient orientations, weighted by magnitude (shape, no colour)."""

    default_batch_size = 4

    def __init__(
        self,
        *,
        size: int = 24,
        bins: int = 8,
        batch_size: int | None = None,
        num_workers: int | None = None,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers)
        self.size = size
        self.bins = bins
        self.prepare_calls = 0

    @property
    def dim(self) -> int:
        return self.bins

    def get_config(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "bins": self.bins,
            "batch_size": self.batch_size,
            "num_workers": self.num_workers,
        }

    def _draft_size(self) -> tuple[int, int]:
        return (self.size, self.size)

    def _prepare(self, image: np.ndarray) -> np.ndarray:
        self.prepare_calls += 1
        grey = resize_image(image, self.size, "stretch").astype(np.float32).mean(axis=2)
        gy, gx = np.gradient(grey)
        angle = (np.arctan2(gy, gx) % np.pi) / np.pi  # orientation in [0, 1)
        cells = np.minimum((angle * self.bins).astype(int), self.bins - 1)
        return np.bincount(cells.ravel(), weights=np.hypot(gx, gy).ravel(), minlength=self.bins)

    def _embed(self, batch: np.ndarray) -> np.ndarray:
        return batch.astype(np.float32)


@register_extractor("test-full-size")
class FullSizeExtractor(GreyGradientExtractor):
    """A part that wants full-resolution decoding (no draft size)."""

    def _draft_size(self) -> None:  # type: ignore[override]
        return None


def _product(colour: tuple[int, int, int], shape: str, size: int = 48) -> np.ndarray:
    img = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(img)
    if shape == "box":
        draw.rectangle([10, 10, size - 10, size - 10], fill=colour)
    elif shape == "disc":
        draw.ellipse([8, 8, size - 8, size - 8], fill=colour)
    else:
        draw.polygon([(size // 2, 6), (6, size - 6), (size - 6, size - 6)], fill=colour)
    return np.asarray(img)


IMAGES = [
    _product((200, 30, 30), "box"),
    _product((30, 30, 200), "box"),
    _product((200, 30, 30), "disc"),
    _product((30, 160, 40), "tri"),
    _product((220, 200, 20), "disc"),
]


def _parts() -> tuple[ColorHistogramExtractor, GreyGradientExtractor]:
    return ColorHistogramExtractor(
        bins=(8, 2, 2), grey_bins=0, layout=0, num_workers=0
    ), GreyGradientExtractor()


def test_dim_is_the_sum_and_rows_are_unit_float32() -> None:
    colour, shape = _parts()
    concat = ConcatExtractor([colour, shape], weights=[2, 1], num_workers=0)
    vectors = concat.extract(IMAGES)
    assert concat.dim == 32 + 8
    assert vectors.shape == (len(IMAGES), 40)
    assert vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)


def test_vectors_are_the_parts_scaled_by_root_weight_share() -> None:
    colour, shape = _parts()
    concat = ConcatExtractor([colour, shape], weights=[3, 1], num_workers=0)
    expected = np.hstack(
        [math.sqrt(3 / 4) * colour.extract(IMAGES), math.sqrt(1 / 4) * shape.extract(IMAGES)]
    )
    assert np.allclose(concat.extract(IMAGES), expected, atol=1e-6)


@settings(deadline=None, max_examples=25)
@given(weights=st.lists(st.floats(0.0, 10.0), min_size=2, max_size=2).filter(lambda w: sum(w) > 0))
def test_cosine_of_the_concatenation_is_the_weighted_mean_of_part_cosines(
    weights: list[float],
) -> None:
    colour, shape = _parts()
    a_parts = [colour.extract(IMAGES), shape.extract(IMAGES)]
    vectors = ConcatExtractor([colour, shape], weights=weights, num_workers=0).extract(IMAGES)
    share = np.asarray(weights) / sum(weights)
    expected = share[0] * (a_parts[0] @ a_parts[0].T) + share[1] * (a_parts[1] @ a_parts[1].T)
    assert np.allclose(vectors @ vectors.T, expected, atol=1e-5)


def test_weights_trade_colour_against_shape() -> None:
    colour, shape = _parts()
    red_box, blue_box, red_disc = IMAGES[0], IMAGES[1], IMAGES[2]
    trio = [red_box, blue_box, red_disc]
    by_colour = ConcatExtractor([colour, shape], weights=[10, 1]).extract(trio)
    by_shape = ConcatExtractor([colour, shape], weights=[1, 10]).extract(trio)
    # colour-heavy: the red box is closer to the red disc; shape-heavy: to the blue box
    assert by_colour[0] @ by_colour[2] > by_colour[0] @ by_colour[1]
    assert by_shape[0] @ by_shape[1] > by_shape[0] @ by_shape[2]


def test_equal_weights_by_default() -> None:
    concat = ConcatExtractor(list(_parts()))
    assert concat.weights == [1.0, 1.0]


def test_a_zero_weight_part_contributes_nothing() -> None:
    colour, shape = _parts()
    vectors = ConcatExtractor([colour, shape], weights=[1, 0], num_workers=0).extract(IMAGES)
    assert np.all(vectors[:, 32:] == 0)
    assert np.allclose(vectors[:, :32], colour.extract(IMAGES), atol=1e-6)


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ([1.0, -1.0], ">= 0"),
        ([0, 0], "all be zero"),
        ([1.0], "1 entries for 2 extractors"),
        ([1.0, 2.0, 3.0], "3 entries"),
        ([1.0, float("nan")], "finite"),
        ([1.0, float("inf")], "finite"),
        ("12", "list of 2 numbers"),
        (["a", 1], "numbers"),
    ],
)
def test_invalid_weights_raise_config_error(weights: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ConcatExtractor(list(_parts()), weights=weights)


def test_invalid_parts_raise_config_error() -> None:
    with pytest.raises(ConfigError, match="at least one"):
        ConcatExtractor([])
    with pytest.raises(ConfigError, match="BaseExtractor"):
        ConcatExtractor([ColorHistogramExtractor(), object()])  # type: ignore[list-item]
    with pytest.raises(ConfigError, match="list of extractors"):
        ConcatExtractor(ColorHistogramExtractor())  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="unknown extractor"):
        ConcatExtractor([{"name": "no-such-extractor", "config": {}}])


def test_config_round_trips_through_json_and_the_registry() -> None:
    colour, shape = _parts()
    concat = ConcatExtractor([colour, shape], weights=[0.7, 0.3], batch_size=8, num_workers=0)
    spec = json.loads(json.dumps(extractor_spec(concat)))
    assert spec["name"] == "concat"
    assert [p["name"] for p in spec["config"]["extractors"]] == ["color", "test-grey-gradient"]
    rebuilt = extractor_from_config(spec)
    assert isinstance(rebuilt, ConcatExtractor)
    assert rebuilt.get_config() == concat.get_config()
    assert np.array_equal(rebuilt.extract(IMAGES), concat.extract(IMAGES))


def test_make_extractor_accepts_part_specs() -> None:
    concat = make_extractor(
        "concat",
        extractors=[
            {"name": "color", "config": {"bins": [4, 2, 2], "grey_bins": 0, "layout": 0}},
            {"name": "test-grey-gradient"},
        ],
        weights=[1, 2],
    )
    assert concat.dim == 16 + 8
    assert isinstance(concat.extractors[1], GreyGradientExtractor)


def test_concat_of_concat_round_trips() -> None:
    colour, shape = _parts()
    inner = ConcatExtractor([colour, shape], weights=[1, 3])
    outer = ConcatExtractor(
        [inner, ColorHistogramExtractor(bins=(2, 2, 2), grey_bins=0, layout=0)], weights=[1, 1]
    )
    rebuilt = extractor_from_config(json.loads(json.dumps(extractor_spec(outer))))
    vectors = outer.extract(IMAGES)
    assert vectors.shape == (len(IMAGES), 48)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)
    assert np.array_equal(rebuilt.extract(IMAGES), vectors)


def _write_images(tmp_path: Path) -> list[Path]:
    paths = []
    for i, arr in enumerate(IMAGES):
        path = tmp_path / f"item{i}.png"
        Image.fromarray(arr).save(path)
        paths.append(path)
    return paths


def test_each_image_is_decoded_once_for_all_parts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = _write_images(tmp_path)
    calls: list[Any] = []
    real_load = base_module.load_image

    def counting_load(src: Any, **kwargs: Any) -> np.ndarray:
        calls.append(src)
        return real_load(src, **kwargs)

    monkeypatch.setattr(base_module, "load_image", counting_load)
    colour, shape = _parts()
    vectors = ConcatExtractor([colour, shape], num_workers=0).extract(paths)
    assert calls == paths  # one decode per image, not one per part
    assert shape.prepare_calls == len(paths)
    assert vectors.shape == (len(paths), colour.dim + shape.dim)


def test_decode_size_is_the_largest_any_part_needs() -> None:
    colour, shape = _parts()  # colour wants 96x96, shape 24x24
    assert ConcatExtractor([colour, shape])._draft_size() == (96, 96)
    assert ConcatExtractor([colour, FullSizeExtractor()])._draft_size() is None


def test_default_batch_size_is_the_smallest_parts_default() -> None:
    colour, shape = _parts()  # 256 and 4
    batches = list(ConcatExtractor([colour, shape], num_workers=0).iter_batches(IMAGES))
    assert [len(b.items) for b in batches] == [4, 1]
    own = ConcatExtractor([colour, shape], batch_size=2, num_workers=0)
    assert [len(b.items) for b in own.iter_batches(IMAGES)] == [2, 2, 1]


def test_on_error_skip_leaves_out_unreadable_inputs_like_base_extractor(tmp_path: Path) -> None:
    paths = _write_images(tmp_path)[:3]
    missing = tmp_path / "missing.png"
    items = [paths[0], missing, paths[1], paths[2]]
    colour, shape = _parts()
    concat = ConcatExtractor([colour, shape], num_workers=0)
    batches = list(concat.iter_batches(items, on_error="skip", batch_size=3))
    failed = [f for b in batches for f in b.failed]
    assert [item for item, _ in failed] == [missing]
    assert isinstance(failed[0][1], ImageLoadError)
    assert [p for b in batches for p in b.positions] == [0, 2, 3]
    vectors = np.concatenate([b.vectors for b in batches])
    assert np.allclose(vectors, concat.extract(paths), atol=1e-6)
    with pytest.raises(ImageLoadError, match="missing.png"):
        concat.extract(items)


def test_repr_names_the_parts() -> None:
    text = repr(ConcatExtractor(list(_parts()), weights=[2, 1]))
    assert text.startswith("ConcatExtractor(")
    assert "test-grey-gradient" in text
    assert "weights=[2.0, 1.0]" in text
