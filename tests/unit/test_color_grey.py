"""The colour extractor sees grey: achromatic pixels are binned by lightness, not hue."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from visualsim.errors import ConfigError
from visualsim.extractors.base import extractor_from_config
from visualsim.extractors.color import MAX_SIZE, ColorHistogramExtractor


def _item(rgb: tuple[int, int, int], seed: int, size: int = 48) -> np.ndarray:
    """A product of colour ``rgb`` with a little per-pixel noise, on white."""
    rng = np.random.default_rng(seed)
    img = np.full((size, size, 3), 255, np.uint8)
    m = size // 6
    body = np.clip(np.asarray(rgb) + rng.normal(0, 6, size=(size - 2 * m, size - 2 * m, 3)), 0, 255)
    img[m : size - m, m : size - m] = body.astype(np.uint8)
    return img


BLACK, GREY, WHITE = (25, 25, 25), (135, 135, 135), (238, 238, 232)


def test_black_grey_and_white_separate() -> None:
    ext = ColorHistogramExtractor()
    shades = (BLACK, GREY, WHITE)
    v = ext.extract([_item(c, seed) for c in shades for seed in (1, 2)])
    sims = v @ v.T
    for i in range(3):
        same = sims[2 * i, 2 * i + 1]
        assert same > 0.9, f"two {shades[i]} items score {same:.3f}"
        for j in range(3):
            if i != j:
                assert sims[2 * i, 2 * j] < 0.5, (shades[i], shades[j], sims[2 * i, 2 * j])


def test_the_old_layout_smeared_greys_together() -> None:
    """What the fix is for: the 0.1 layout (grey_bins=0) cannot tell dark from mid grey."""
    old = ColorHistogramExtractor(grey_bins=0, layout=0, soft_bins=False)
    new = ColorHistogramExtractor(layout=0)  # the histogram alone: the layout is the same
    dark, mid = _item((72, 72, 76), 1), _item((120, 120, 124), 2)
    v_old, v_new = old.extract([dark, mid]), new.extract([dark, mid])
    assert float(v_old[0] @ v_old[1]) > 0.85
    assert float(v_new[0] @ v_new[1]) < float(v_old[0] @ v_old[1]) - 0.25


def test_grey_levels_are_interpolated_so_a_boundary_shade_does_not_flip() -> None:
    ext = ColorHistogramExtractor()
    shades = [np.full((24, 24, 3), v, np.uint8) for v in range(40, 200, 3)]
    v = ext.extract(shades)
    neighbours = np.einsum("ij,ij->i", v[:-1], v[1:])
    assert float(neighbours.min()) > 0.9


def test_colours_still_separate_and_dim_counts_grey_levels() -> None:
    ext = ColorHistogramExtractor(bins=(8, 3, 3), grey_bins=4, layout=0)
    assert ext.dim == 8 * 3 * 3 + 4
    assert ColorHistogramExtractor(bins=(8, 3, 3), grey_bins=4, layout=5).dim == 76 + 3 * 25 + 1
    v = ext.extract([_item((210, 30, 35), 1), _item((35, 85, 215), 2), _item(GREY, 3)])
    assert float(v[0] @ v[1]) < 0.1 and float(v[0] @ v[2]) < 0.1


def test_a_saved_01_config_rebuilds_the_old_layout() -> None:
    legacy = {"bins": [16, 4, 4], "size": 96, "ignore_background": True, "sqrt": True}
    rebuilt = extractor_from_config({"name": "color", "config": legacy})
    assert rebuilt.grey_bins == 0 and rebuilt.dim == 256
    assert extractor_from_config({"name": "color", "config": {"bins": [4, 2, 2]}}).grey_bins == 6
    again = extractor_from_config({"name": "color", "config": rebuilt.get_config()})
    assert again.get_config() == rebuilt.get_config()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"size": 200_000}, "size must be an integer from 4 to 4096"),
        ({"size": MAX_SIZE + 1}, "size must be"),
        ({"size": 3}, "size must be"),
        ({"size": "big"}, "must be integers"),
        ({"size": 9.5}, "must be integers"),
        ({"grey_bins": -1}, "grey_bins"),
        ({"grey_bins": 300}, "grey_bins"),
        ({"bins": ["a", 2, 2]}, "bins"),
        ({"bins": "abc"}, "bins"),
        ({"bins": (4, 4)}, "bins"),
        ({"layout": -1}, "layout must be an integer from 0 to 64"),
        ({"layout": 65}, "layout must be"),
        ({"layout": 9, "size": 8}, "at most size=8"),
        ({"layout": "8x8"}, "must be integers"),
        ({"layout_weight": 1.0}, "layout_weight must be a number in"),
        ({"layout_weight": -0.1}, "layout_weight"),
        ({"layout_weight": float("nan")}, "layout_weight"),
        ({"layout_weight": "a lot"}, "layout_weight"),
    ],
)
def test_bad_settings_are_refused_with_the_fix(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        ColorHistogramExtractor(**kwargs)  # type: ignore[arg-type]


def test_a_huge_size_from_a_catalogue_is_refused_before_any_work() -> None:
    spec = {"name": "color", "config": {"bins": [16, 4, 4], "size": 200_000}}
    with pytest.raises(ConfigError, match="4096"):
        extractor_from_config(spec)


@given(
    rgb=st.tuples(st.integers(0, 255), st.integers(0, 255), st.integers(0, 255)),
    grey_bins=st.integers(0, 12),
    layout=st.integers(0, 12),
    soft=st.booleans(),
    weight=st.floats(0.0, 0.99),
)
def test_every_vector_is_a_unit_row(
    rgb: tuple[int, int, int], grey_bins: int, layout: int, soft: bool, weight: float
) -> None:
    ext = ColorHistogramExtractor(
        bins=(4, 2, 2),
        grey_bins=grey_bins,
        layout=layout,
        layout_weight=weight,
        soft_bins=soft,
        size=24,
        num_workers=0,
    )
    v = ext.extract([_item(rgb, 0, size=24)])
    assert v.shape == (1, ext.dim)
    assert np.isfinite(v).all() and abs(float(np.linalg.norm(v)) - 1.0) < 1e-5


def _uploaded_again(image: np.ndarray) -> bytes:
    """The same picture uploaded again, as PNG bytes."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "PNG")
    return buf.getvalue()


def test_duplicate_check_on_add_at_the_documented_threshold_with_grey_products() -> None:
    from visualsim import Recommender
    from visualsim.extractors.color import DUPLICATE_THRESHOLD

    shades = [(v, v, v) for v in (20, 60, 100, 140, 180, 220)]
    colours = [(200, 40, 40), (40, 160, 60), (35, 85, 215), (245, 215, 30)]
    shop = [_item(rgb, seed=i, size=96) for i, rgb in enumerate(shades + colours)]
    shop_ids = [f"item-{i}" for i in range(len(shop))]
    rec = Recommender(ColorHistogramExtractor(), "flat").fit(shop, shop_ids, progress=False)
    copies = [_uploaded_again(shop[i]) for i in (0, 3, 5, 7)]  # black, mid grey, white, green
    # new greys between the catalogue's shades: the 0.1 layout (hue of grey pixels) mixed these up
    news = [_item(rgb, seed=50 + i, size=96) for i, rgb in enumerate([(40,) * 3, (120,) * 3])]
    ids = ["copy-0", "copy-3", "copy-5", "copy-7", "new-dark", "new-grey"]
    rec.add(copies + news, ids, duplicates="skip", min_score=DUPLICATE_THRESHOLD, progress=False)
    found = {new: old for new, old, _ in rec.duplicates_}
    assert found == {
        "copy-0": "item-0",
        "copy-3": "item-3",
        "copy-5": "item-5",
        "copy-7": "item-7",
    }, rec.duplicates_
    assert len(rec) == len(shop) + 2 and "copy-0" not in rec and "new-grey" in rec


def _two_squares(left: tuple[int, int, int], right: tuple[int, int, int]) -> np.ndarray:
    img = np.full((96, 96, 3), 255, np.uint8)
    img[24:72, 8:44] = left
    img[24:72, 52:88] = right
    return img


def _jpeg_again(image: np.ndarray, quality: int = 90) -> np.ndarray:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def test_the_layout_tells_apart_two_products_of_the_same_colours() -> None:
    """What the layout is for: the histogram alone scores these two as copies."""
    from visualsim.extractors.color import DUPLICATE_THRESHOLD

    red, blue = (200, 40, 40), (35, 85, 215)
    a, swapped = _two_squares(red, blue), _two_squares(blue, red)
    copy = _jpeg_again(a)
    hist = ColorHistogramExtractor(layout=0).extract([a, swapped])
    assert float(hist[0] @ hist[1]) > 0.99
    v = ColorHistogramExtractor().extract([a, swapped, copy])
    assert float(v[0] @ v[1]) < DUPLICATE_THRESHOLD <= float(v[0] @ v[2])


def test_two_flat_images_compare_equal_through_the_layout_constant() -> None:
    ext = ColorHistogramExtractor()
    grey = np.full((40, 40, 3), 128, np.uint8)
    v = ext.extract([grey, grey.copy()])
    assert float(v[0] @ v[1]) > 0.9999
    layout = v[:, ext.dim - 3 * 8 * 8 - 1 :]
    np.testing.assert_allclose(np.linalg.norm(layout, axis=1) ** 2, ext.layout_weight, rtol=1e-5)


def test_soft_bins_keep_a_colour_on_a_cell_boundary_together() -> None:
    """Hues stepping across cell boundaries: hard bins flip between cells, soft ones slide."""
    from PIL import Image

    hues = np.arange(0, 256, 4, dtype=np.uint8)
    hsv = np.stack([np.full((24, 24), h, np.uint8) for h in hues])
    images = [
        np.asarray(
            Image.fromarray(
                np.dstack([x, np.full_like(x, 200), np.full_like(x, 200)]), "HSV"
            ).convert("RGB")
        )
        for x in hsv
    ]
    for soft, floor in ((True, 0.8), (False, None)):
        v = ColorHistogramExtractor(layout=0, soft_bins=soft).extract(images)
        neighbours = np.einsum("ij,ij->i", v[:-1], v[1:])
        if floor is not None:
            assert float(neighbours.min()) > floor
        else:
            assert float(neighbours.min()) < 0.5  # the hard bins' flip the soft ones remove


def test_soft_bins_wrap_hue_round() -> None:
    from PIL import Image

    def hue(h: int) -> np.ndarray:
        x = np.full((24, 24), h, np.uint8)
        rgb = Image.fromarray(np.dstack([x, np.full_like(x, 220), np.full_like(x, 220)]), "HSV")
        return np.asarray(rgb.convert("RGB"))

    v = ColorHistogramExtractor(layout=0).extract([hue(254), hue(2), hue(128)])
    assert float(v[0] @ v[1]) > 0.8 > float(v[0] @ v[2])


def test_a_saved_02_config_rebuilds_the_02_vectors() -> None:
    """A 0.2 catalogue (grey levels, no layout) keeps 262-d hard-binned vectors."""
    saved_02 = {
        "bins": [16, 4, 4],
        "grey_bins": 6,
        "size": 96,
        "ignore_background": True,
        "sqrt": True,
        "batch_size": None,
        "num_workers": None,
        "crop": None,
    }
    rebuilt = extractor_from_config({"name": "color", "config": saved_02})
    assert (rebuilt.dim, rebuilt.layout, rebuilt.soft_bins) == (262, 0, False)
    explicit = ColorHistogramExtractor(layout=0, soft_bins=False)
    images = [_item(c, seed) for seed, c in enumerate((BLACK, GREY, WHITE, (200, 40, 40)))]
    assert np.array_equal(rebuilt.extract(images), explicit.extract(images))
    # hard bins: one cell per colour pixel, so a flat colour fills exactly one cell
    flat = rebuilt.extract([np.full((16, 16, 3), (200, 40, 40), np.uint8)])
    assert int((flat > 0).sum()) == 1
    default = ColorHistogramExtractor()
    assert (default.dim, default.layout, default.soft_bins) == (455, 8, True)
    again = extractor_from_config({"name": "color", "config": default.get_config()})
    assert again.get_config() == default.get_config()
