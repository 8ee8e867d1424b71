"""A region of the query photo (issue 23, item 1): ``box=`` checked and cut in crop.py, used by
``Recommender.query``/``query_batch`` and the ``query --box`` command."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from visualsim import ColorHistogramExtractor, Recommender, SyntheticProducts
from visualsim.cli import main
from visualsim.crop import check_box, crop_to_box, locate_product, parse_box
from visualsim.errors import ConfigError
from visualsim.images import encoded_size

N = 24
SIDE = 64


@st.composite
def image_and_box(draw: st.DrawFn) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    w = draw(st.integers(1, 60))
    h = draw(st.integers(1, 60))
    left = draw(st.integers(0, w - 1))
    right = draw(st.integers(left + 1, w))
    top = draw(st.integers(0, h - 1))
    bottom = draw(st.integers(top + 1, h))
    image = np.arange(h * w * 3, dtype=np.uint32).reshape(h, w, 3).astype(np.uint8)
    return image, (left, top, right, bottom)


@given(image_and_box())
def test_any_valid_box_gives_a_crop_of_exactly_its_size(
    case: tuple[np.ndarray, tuple[int, int, int, int]],
) -> None:
    image, (left, top, right, bottom) = case
    out = crop_to_box(image, (left, top, right, bottom))
    assert out.shape == (bottom - top, right - left, 3)
    assert np.array_equal(out, image[top:bottom, left:right])
    # the same box as floats, or as a numpy array, cuts the same pixels
    assert np.array_equal(
        crop_to_box(image, tuple(float(v) for v in (left, top, right, bottom))), out
    )
    assert np.array_equal(crop_to_box(image, np.array([left, top, right, bottom])), out)


@given(
    st.integers(1, 50),
    st.integers(1, 50),
    st.tuples(*[st.floats(-100, 200, allow_nan=False) for _ in range(4)]),
)
def test_a_fractional_box_covers_every_pixel_it_touches(
    w: int, h: int, box: tuple[float, float, float, float]
) -> None:
    image = np.zeros((h, w, 3), np.uint8)
    left, top, right, bottom = box
    valid = 0 <= left < right <= w and 0 <= top < bottom <= h
    if not valid:
        with pytest.raises(ConfigError, match=rf"box .* {w}x{h} image"):
            crop_to_box(image, box)
        return
    out = crop_to_box(image, box)
    assert out.shape[1] == math.ceil(right) - math.floor(left)
    assert out.shape[0] == math.ceil(bottom) - math.floor(top)


@settings(max_examples=60)
@given(
    st.one_of(
        st.tuples(
            st.integers(-50, 150),
            st.integers(-50, 150),
            st.integers(-50, 150),
            st.integers(-50, 150),
        ),
        st.tuples(
            st.floats(allow_nan=True, allow_infinity=True), st.floats(), st.floats(), st.floats()
        ),
    )
)
def test_an_invalid_box_raises_config_error_naming_box_and_size(box: tuple[float, ...]) -> None:
    w, h = 100, 80
    left, top, right, bottom = box
    finite = all(np.isfinite(v) for v in box)
    if finite and 0 <= left < right <= w and 0 <= top < bottom <= h:
        assert check_box(box, (w, h)) == tuple(float(v) for v in box)
        return
    with pytest.raises(ConfigError) as err:
        check_box(box, (w, h))
    assert str(err.value).startswith("box (")
    if finite:
        assert "100x80 image" in str(err.value)


@pytest.mark.parametrize(
    ("box", "words"),
    [
        ((0, 0, 10), "four numbers"),
        ((0, 0, 10, 10, 5), "four numbers"),
        ("0,0,10,10", "four numbers"),
        ((0, 0, "10", 10), "four numbers"),
        ((True, 0, 10, 10), "four numbers"),
        (None, "four numbers"),
        ((10, 0, 10, 10), "empty: left must be less than right"),
        ((0, 20, 10, 5), "empty: top must be less than bottom"),
        ((-1, 0, 10, 10), "left must be at least 0"),
        ((0, 0, 101, 10), "right must be at most 100"),
        ((0, 0, 10, 80.5), "bottom must be at most 80"),
        ((0, float("nan"), 10, 10), "finite"),
    ],
)
def test_each_kind_of_bad_box_has_its_own_message(box: object, words: str) -> None:
    with pytest.raises(ConfigError, match=words) as err:
        check_box(box, (100, 80))
    assert "box" in str(err.value)


def test_parse_box_reads_four_numbers_and_refuses_the_rest() -> None:
    assert parse_box("1,2,3,4") == (1.0, 2.0, 3.0, 4.0)
    assert parse_box(" 1.5 , 2 ,3e1, 40 ") == (1.5, 2.0, 30.0, 40.0)
    for bad in ("", "1,2,3", "1,2,3,4,5", "a,b,c,d", "1,2,3,inf", "1;2;3;4"):
        with pytest.raises(ConfigError, match="box must be four"):
            parse_box(bad)


def test_crop_to_box_scales_a_box_given_for_the_full_size() -> None:
    small = np.zeros((50, 100, 3), np.uint8)  # decoded at half of 200x100
    small[10:20, 40:60] = 255
    out = crop_to_box(small, (80, 20, 120, 40), size=(200, 100))
    assert out.shape == (10, 20, 3) and out.min() == 255
    with pytest.raises(ConfigError, match="200x100 image"):
        crop_to_box(small, (0, 0, 201, 10), size=(200, 100))


def test_encoded_size_applies_the_exif_orientation() -> None:
    buf = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees: shown 40 wide, 60 high
    Image.new("RGB", (60, 40), (1, 2, 3)).save(buf, "JPEG", exif=exif)
    assert encoded_size(buf.getvalue()) == (40, 60)
    rec = Recommender(ColorHistogramExtractor()).add_vectors(
        np.eye(2, ColorHistogramExtractor().dim), ["a", "b"]
    )
    rec.query(buf.getvalue(), 1, box=(0, 0, 40, 60))  # fits the oriented image
    with pytest.raises(ConfigError, match="40x60 image"):
        rec.query(buf.getvalue(), 1, box=(0, 0, 60, 40))


# -- the recommender ----------------------------------------------------------------------
def _scene(ds: SyntheticProducts, target: int, seed: int) -> tuple[np.ndarray, tuple[int, ...]]:
    """Product ``target`` pasted on a 4x bigger canvas tiled with other products, plus noise."""
    rng = np.random.default_rng(seed)
    side = SIDE * 4
    canvas = np.empty((side, side, 3), np.uint8)
    others = [i for i in range(len(ds)) if i != target]
    for y in range(0, side, SIDE):
        for x in range(0, side, SIDE):
            canvas[y : y + SIDE, x : x + SIDE] = ds[int(rng.choice(others))].image
    noise = rng.integers(-40, 40, canvas.shape)
    canvas = np.clip(canvas.astype(int) + noise, 0, 255).astype(np.uint8)
    top, left = (int(v) for v in rng.integers(0, side - SIDE, 2))
    canvas[top : top + SIDE, left : left + SIDE] = ds[target].image
    return canvas, (left, top, left + SIDE, top + SIDE)


@pytest.fixture(scope="module")
def shop() -> tuple[Recommender, SyntheticProducts]:
    ds = SyntheticProducts(N, size=SIDE, seed=5)
    rec = Recommender(ColorHistogramExtractor()).fit(
        [ds[i].image for i in range(N)], ids=[ds[i].id for i in range(N)], progress=False
    )
    return rec, ds


def test_a_box_finds_the_product_pasted_in_a_cluttered_photo(
    shop: tuple[Recommender, SyntheticProducts],
) -> None:
    rec, ds = shop
    boxed = whole = 0
    scenes = [_scene(ds, t, seed=t) for t in range(N)]
    for t, (scene, box) in enumerate(scenes):
        boxed += rec.query(scene, 1, box=box)[0].id == ds[t].id
        whole += rec.query(scene, 1)[0].id == ds[t].id
    assert boxed == N  # the box cuts out exactly the catalogue photo
    assert whole < N // 2  # the clutter hides it without one
    # query_batch: one box per image, None for the whole image, as query gives
    batch = rec.query_batch(
        [s for s, _ in scenes[:4]], 1, boxes=[scenes[0][1], None, scenes[2][1], None]
    )
    assert [r[0].id for r in batch] == [
        rec.query(scenes[0][0], 1, box=scenes[0][1])[0].id,
        rec.query(scenes[1][0], 1)[0].id,
        rec.query(scenes[2][0], 1, box=scenes[2][1])[0].id,
        rec.query(scenes[3][0], 1)[0].id,
    ]


def test_a_box_works_on_every_input_kind_and_is_checked_against_the_image(
    shop: tuple[Recommender, SyntheticProducts], tmp_path: Path
) -> None:
    rec, ds = shop
    scene, box = _scene(ds, 3, seed=11)
    path = tmp_path / "scene.png"
    Image.fromarray(scene).save(path)
    want = ds[3].id
    for src in (scene, str(path), path, path.read_bytes(), Image.fromarray(scene)):
        assert rec.query(src, 1, box=box)[0].id == want
    side = scene.shape[0]
    with pytest.raises(
        ConfigError,
        match=rf"box \(0, 0, {side + 1}, 10\) reaches outside the "
        rf"{side}x{side} image",
    ):
        rec.query(scene, 1, box=(0, 0, side + 1, 10))
    with pytest.raises(ConfigError, match="one box .* per image: 1 boxes for 2 images"):
        rec.query_batch([scene, scene], 1, boxes=[box])


# -- the command line ---------------------------------------------------------------------
def test_query_box_on_the_command_line(
    shop: tuple[Recommender, SyntheticProducts],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    rec, ds = shop
    catalog = rec.save(tmp_path / "c.catalog")
    scene, box = _scene(ds, 7, seed=7)
    path = tmp_path / "scene.png"
    Image.fromarray(scene).save(path)
    arg = ",".join(str(v) for v in box)
    code = main(["query", str(catalog), str(path), "-k", "1", "--box", arg, "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert f'"id": "{ds[7].id}"' in out
    code = main(["query", str(catalog), str(path), "-k", "1", "--box", "locate", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert '"rank": 1' in out
    code = main(["query", str(catalog), str(path), "-k", "1", "--box", "1,2,3"])
    out, err = capsys.readouterr()
    assert code == 2 and "--box" in err and "four numbers" in err
    code = main(["query", str(catalog), str(path), "-k", "1", "--box", "0,0,9999,10"])
    out, err = capsys.readouterr()
    side = scene.shape[0]
    assert code == 2 and f"--box: box (0, 0, 9999, 10) reaches outside the {side}x{side}" in err


# -- automatic localisation (issue 23, item 2) ----------------------------------------------
def _blurred_scene(ds: SyntheticProducts, target: int, seed: int) -> tuple[np.ndarray, tuple]:
    """Product ``target``'s photo, sharp, on an out-of-focus scene of coloured blocks."""
    from PIL import ImageFilter

    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 255, (8, 8, 3)).astype(np.uint8)
    scene = np.asarray(
        Image.fromarray(blocks)
        .resize((SIDE * 4, SIDE * 4), Image.NEAREST)
        .filter(ImageFilter.GaussianBlur(6))
    ).copy()
    top, left = (int(v) for v in rng.integers(0, SIDE * 3, 2))
    scene[top : top + SIDE, left : left + SIDE] = ds[target].image
    return scene, (left, top, left + SIDE, top + SIDE)


def _iou(a: tuple, b: tuple) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_locate_product_finds_the_sharp_product_in_a_blurred_scene(
    shop: tuple[Recommender, SyntheticProducts],
) -> None:
    rec, ds = shop
    ious, found = [], 0
    for t in range(N):
        scene, box = _blurred_scene(ds, t, seed=100 + t)
        got = locate_product(scene)
        if got is not None:
            left, top, right, bottom = got
            assert 0 <= left < right <= scene.shape[1] and 0 <= top < bottom <= scene.shape[0]
            ious.append(_iou(got, box))
        found += rec.query(scene, 1, box="locate")[0].id == ds[t].id
    assert len(ious) == N and float(np.median(ious)) > 0.5
    assert found >= N * 3 // 4


def test_locate_product_leaves_a_packshot_and_tiny_or_flat_images_whole(
    shop: tuple[Recommender, SyntheticProducts],
) -> None:
    rec, ds = shop
    packshot = np.full((200, 160, 3), 255, np.uint8)
    packshot[30:170, 40:120] = (180, 40, 40)
    packshot[90:100, 40:120] = 20
    assert locate_product(packshot) is None
    assert locate_product(np.full((100, 100, 3), 90, np.uint8)) is None
    assert locate_product(np.zeros((8, 8, 3), np.uint8)) is None
    # box="locate" on a packshot searches it whole: the same results as no box
    image = ds[5].image
    assert [r.id for r in rec.query(image, 5, box="locate")] == [r.id for r in rec.query(image, 5)]
    assert np.array_equal(crop_to_box(packshot, "locate"), packshot)
    assert parse_box(" locate ") == "locate"
    with pytest.raises(ConfigError, match="or 'locate', got 'somewhere'"):
        rec.query(image, 1, box="somewhere")
