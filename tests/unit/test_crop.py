"""crop="auto": trim the uniform background to the product, on every built-in extractor."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from visualsim.crop import DEFAULT_MARGIN, auto_crop, check_crop, find_crop_box
from visualsim.errors import ConfigError
from visualsim.extractors.base import extractor_from_config, extractor_spec
from visualsim.extractors.color import ColorHistogramExtractor
from visualsim.extractors.concat import ConcatExtractor
from visualsim.extractors.keras import KerasExtractor, ResNet50Extractor
from visualsim.extractors.squeezenet import SqueezeNetExtractor


def _product(size: int = 64, colour: tuple[int, int, int] = (200, 40, 40)) -> np.ndarray:
    """A two-tone product (a coloured body with a dark stripe) on white, filling the frame."""
    img = np.full((size, size, 3), 255, np.uint8)
    m = size // 10
    img[m : size - m, m : size - m] = colour
    img[size // 2 - 2 : size // 2 + 2, m : size - m] = (20, 20, 20)
    return img


def _on_canvas(
    product: np.ndarray, canvas: tuple[int, int], at: tuple[int, int], bg: int = 255
) -> np.ndarray:
    out = np.full((*canvas, 3), bg, np.uint8)
    y, x = at
    out[y : y + product.shape[0], x : x + product.shape[1]] = product
    return out


def test_white_canvas_is_trimmed_to_the_product_plus_margin() -> None:
    canvas = np.full((300, 500, 3), 255, np.uint8)
    canvas[40:140, 200:260] = (10, 120, 200)
    box = find_crop_box(canvas)
    assert box is not None
    assert box.background == (255, 255, 255)
    # contains the product, with a margin of a few percent, and little else
    assert box.top < 40 and box.bottom > 140 and box.left < 200 and box.right > 260
    pad = DEFAULT_MARGIN * 100 + 5  # the margin is a share of the box's longer side
    assert box.top >= 40 - pad and box.bottom <= 140 + pad
    assert box.left >= 200 - pad and box.right <= 260 + pad
    out = auto_crop(canvas)
    assert out.shape[0] == out.shape[1] == max(box.height, box.width)
    assert out.dtype == np.uint8
    # the product's own pixels are all there
    assert (np.all(out == (10, 120, 200), axis=2)).sum() == 100 * 60


def test_border_colour_background_is_trimmed_and_padding_uses_it() -> None:
    canvas = np.full((200, 200, 3), 0, np.uint8)  # black, like Fashion-MNIST
    canvas[60:100, 90:120] = 180
    out = auto_crop(canvas)
    assert out.shape[0] < 80
    assert tuple(out[0, 0]) == (0, 0, 0)  # padded square with the background, not white


def test_a_photo_without_a_uniform_border_is_left_alone() -> None:
    rng = np.random.default_rng(0)
    scene = rng.integers(0, 256, size=(120, 160, 3), dtype=np.uint8)
    assert find_crop_box(scene) is None
    assert auto_crop(scene) is scene


def test_blank_and_full_frame_images_are_left_alone() -> None:
    blank = np.full((50, 50, 3), 255, np.uint8)
    assert auto_crop(blank) is blank
    full = np.full((50, 50, 3), (30, 200, 90), np.uint8)
    full[0, :] = 255  # a white line on top is not enough background to trim
    assert auto_crop(full) is full


def test_a_speck_of_dust_does_not_widen_the_box() -> None:
    canvas = np.full((400, 400, 3), 255, np.uint8)
    canvas[150:250, 150:250] = (90, 20, 140)
    canvas[5, 395] = 0  # one dark pixel in a corner
    box = find_crop_box(canvas)
    assert box is not None and box.right < 300 and box.top > 100


@given(
    scale=st.integers(40, 120),
    y=st.floats(0, 1),
    x=st.floats(0, 1),
)
def test_crop_undoes_scale_and_offset(scale: int, y: float, x: float) -> None:
    """The same product at any scale and position crops to (nearly) the same picture."""
    from PIL import Image

    product = _product(96)
    small = np.asarray(Image.fromarray(product).resize((scale, scale), Image.BILINEAR))
    canvas = (300, 400)
    at = (int(y * (canvas[0] - scale)), int(x * (canvas[1] - scale)))
    cropped = auto_crop(_on_canvas(small, canvas, at))
    reference = auto_crop(_on_canvas(product, canvas, (20, 30)))
    assert cropped.shape[0] == cropped.shape[1]
    expected = reference.shape[0] * scale / 96  # the same share of margin at every scale
    assert abs(cropped.shape[0] - expected) <= 0.1 * expected + 4
    a = np.asarray(Image.fromarray(cropped).resize((48, 48), Image.BILINEAR), np.float32)
    b = np.asarray(
        Image.fromarray(auto_crop(_on_canvas(product, canvas, (20, 30)))).resize(
            (48, 48), Image.BILINEAR
        ),
        np.float32,
    )
    assert np.abs(a - b).mean() < 30  # misplaced, it would be ~100


@given(
    h=st.integers(1, 60),
    w=st.integers(1, 60),
    seed=st.integers(0, 2**16),
)
def test_auto_crop_never_fails_and_keeps_uint8_rgb(h: int, w: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    img = np.full((h, w, 3), 255, np.uint8)
    if h > 2 and w > 2:
        y0, x0 = rng.integers(0, h - 1), rng.integers(0, w - 1)
        img[y0 : y0 + rng.integers(1, h), x0 : x0 + rng.integers(1, w)] = rng.integers(0, 256, 3)
    out = auto_crop(img)
    assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3
    assert out.shape[0] >= 1 and out.shape[1] >= 1


def test_bad_inputs_and_settings_are_refused() -> None:
    with pytest.raises(ConfigError, match="crop must be None"):
        check_crop("yes")
    with pytest.raises(ConfigError, match="crop must be None"):
        ColorHistogramExtractor(crop="tight")
    with pytest.raises(ConfigError, match="uint8 RGB"):
        auto_crop(np.zeros((20, 20), np.uint8))


@pytest.mark.parametrize(
    "make",
    [
        lambda crop: ColorHistogramExtractor(crop=crop),
        lambda crop: SqueezeNetExtractor(crop=crop),
        lambda crop: ResNet50Extractor(weights=None, crop=crop),
        lambda crop: KerasExtractor("mobilenetv3small", weights=None, crop=crop),
        lambda crop: ConcatExtractor([ColorHistogramExtractor()], crop=crop),
    ],
    ids=["color", "squeezenet", "resnet50", "keras", "concat"],
)
def test_every_builtin_extractor_takes_crop_and_saves_it(make: object) -> None:
    ext = make("auto")  # type: ignore[operator]
    assert ext.crop == "auto" and ext.get_config()["crop"] == "auto"
    rebuilt = extractor_from_config(json.loads(json.dumps(extractor_spec(ext))))
    assert rebuilt.crop == "auto"
    assert make(None).get_config()["crop"] is None  # type: ignore[operator]


def test_a_config_without_crop_loads_uncropped() -> None:
    config = ColorHistogramExtractor().get_config()
    del config["crop"]
    assert extractor_from_config({"name": "color", "config": config}).crop is None


def test_colour_vectors_with_crop_ignore_scale_and_offset() -> None:
    product = _product(64, colour=(40, 160, 60))
    images = [
        _on_canvas(product, (200, 200), (70, 60)),
        _on_canvas(product, (400, 300), (10, 200)),
        _on_canvas(product[::2, ::2], (256, 256), (150, 20)),
    ]
    on = ColorHistogramExtractor(crop="auto", ignore_background=False, num_workers=0)
    off = ColorHistogramExtractor(ignore_background=False, num_workers=0)
    v_on, v_off = on.extract(images), off.extract(images)
    assert float((v_on[0] @ v_on[1:].T).min()) > 0.95  # the same vector at any scale/offset
    # uncropped, the canvas's white decides: far from the product shot that fills its frame
    v_product = off.extract([product])[0]
    assert float((v_off @ v_product).max()) < 0.8
    assert float((v_on @ v_product).min()) > 0.85


def test_concat_crops_once_for_every_part() -> None:
    product = _product(48)
    canvas = _on_canvas(product, (300, 300), (200, 10))
    concat = ConcatExtractor([ColorHistogramExtractor(ignore_background=False)], crop="auto")
    alone = ColorHistogramExtractor(ignore_background=False, crop="auto")
    assert np.allclose(concat.extract([canvas]), alone.extract([canvas]), atol=1e-6)
