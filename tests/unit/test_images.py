"""visualsim.images: every input type and colour mode becomes RGB uint8, or a clear error."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from visualsim import ImageLoadError, load_image, resize_image
from visualsim.errors import VisualsimError


def encode(img: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def red_square(size: tuple[int, int] = (12, 8)) -> Image.Image:
    return Image.new("RGB", size, (200, 10, 10))


# -- input types ---------------------------------------------------------------


def test_path_str_and_pathlike_load_the_same_rgb(tmp_path: Path) -> None:
    path = tmp_path / "red.png"
    red_square().save(path)
    a, b = load_image(str(path)), load_image(path)
    assert a.shape == (8, 12, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert tuple(a[0, 0]) == (200, 10, 10)


def test_bytes_bytearray_and_binary_file() -> None:
    data = encode(red_square(), "PNG")
    for src in (data, bytearray(data), io.BytesIO(data)):
        assert tuple(load_image(src)[3, 3]) == (200, 10, 10)


def test_pil_image_is_accepted_without_reencoding() -> None:
    out = load_image(red_square())
    assert out.shape == (8, 12, 3)
    assert out.flags.c_contiguous


@pytest.mark.parametrize(
    ("shape", "dtype"),
    [((5, 6), np.uint8), ((5, 6, 1), np.uint8), ((5, 6, 3), np.uint8), ((5, 6, 4), np.uint8)],
)
def test_uint8_arrays_of_every_layout(shape: tuple[int, ...], dtype: type) -> None:
    arr = np.full(shape, 100, dtype=dtype)
    if len(shape) == 3 and shape[2] == 4:
        arr[..., 3] = 255
    out = load_image(arr)
    assert out.shape == (5, 6, 3) and out.dtype == np.uint8
    assert (out == 100).all()


def test_float_array_in_unit_range_is_scaled() -> None:
    out = load_image(np.full((3, 3, 3), 0.5, dtype=np.float32))
    assert (out == 128).all()


def test_uint16_and_bool_arrays() -> None:
    assert (load_image(np.full((2, 2), 65535, np.uint16)) == 255).all()
    assert (load_image(np.ones((2, 2), bool)) == 255).all()


def test_rgba_array_composited_on_white() -> None:
    arr = np.zeros((2, 2, 4), np.uint8)  # black, fully transparent
    assert (load_image(arr) == 255).all()
    arr[..., 3] = 255  # black, opaque
    assert (load_image(arr) == 0).all()


# -- colour modes and formats ----------------------------------------------------


def test_exif_rotated_jpeg_is_turned_upright() -> None:
    img = Image.new("RGB", (40, 20), (0, 0, 255))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 CW to display
    data = encode(img, "JPEG", exif=exif.tobytes())
    assert load_image(data).shape == (40, 20, 3)


def test_cmyk_jpeg_becomes_rgb() -> None:
    data = encode(Image.new("CMYK", (10, 10), (0, 255, 255, 0)), "JPEG", quality=95)
    out = load_image(data)
    assert out.shape == (10, 10, 3)
    r, g, b = (int(c) for c in out[5, 5])
    assert r > 200 and g < 60 and b < 60


def test_palette_png_with_transparency_composited_on_white() -> None:
    img = Image.new("P", (6, 6), 0)
    img.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    img.putpixel((0, 0), 1)
    data = encode(img, "PNG", transparency=0)
    out = load_image(data)
    assert tuple(out[3, 3]) == (255, 255, 255)  # transparent red -> white
    assert tuple(out[0, 0]) == (0, 255, 0)


def test_sixteen_bit_greyscale_png() -> None:
    arr = np.full((4, 4), 65535 // 2, dtype=np.uint16)
    data = encode(Image.fromarray(arr), "PNG")
    out = load_image(data)
    assert out.dtype == np.uint8 and out.shape == (4, 4, 3)
    assert abs(int(out[0, 0, 0]) - 127) <= 1


@pytest.mark.parametrize("mode", ["L", "LA", "1", "I", "F", "YCbCr"])
def test_other_modes_become_rgb(mode: str) -> None:
    img = Image.new(mode, (5, 4))
    out = load_image(img)
    assert out.shape == (4, 5, 3) and out.dtype == np.uint8


def test_animated_gif_gives_first_frame() -> None:
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=100)
    out = load_image(buf.getvalue())
    r, _, b = (int(c) for c in out[4, 4])
    assert r > 200 and b < 50


def test_webp_and_bmp_formats() -> None:
    for fmt in ("WEBP", "BMP", "TIFF"):
        assert load_image(encode(red_square(), fmt)).shape == (8, 12, 3)


def test_draft_size_decodes_big_jpeg_smaller_but_large_enough() -> None:
    data = encode(Image.new("RGB", (800, 600), (10, 120, 30)), "JPEG")
    out = load_image(data, draft_size=(224, 224))
    assert 224 <= min(out.shape[:2]) < 600


# -- failures: each one an ImageLoadError naming source and reason ------------------


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.jpg"
    with pytest.raises(ImageLoadError, match="no such file") as info:
        load_image(path)
    assert "nope.jpg" in str(info.value)


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(ImageLoadError, match="directory"):
        load_image(tmp_path)


def test_empty_file_and_empty_bytes(tmp_path: Path) -> None:
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageLoadError, match="empty"):
        load_image(tmp_path / "empty.png")
    with pytest.raises(ImageLoadError, match="empty"):
        load_image(b"")


def test_truncated_jpeg(tmp_path: Path) -> None:
    data = encode(Image.effect_noise((64, 64), 50).convert("RGB"), "JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageLoadError, match="truncated|corrupt") as info:
        load_image(path)
    assert "cut.jpg" in str(info.value)


def test_non_image_bytes() -> None:
    with pytest.raises(ImageLoadError, match="not an image"):
        load_image(b"%PDF-1.4 definitely not pixels")


def test_decompression_bomb_refused_by_pixel_limit() -> None:
    data = encode(Image.new("L", (100, 100)), "PNG")
    with pytest.raises(ImageLoadError, match="decompression bomb"):
        load_image(data, max_pixels=5000)
    assert load_image(data, max_pixels=None).shape == (100, 100, 3)


@pytest.mark.parametrize(
    "arr",
    [
        np.zeros((2, 3, 5), np.uint8),
        np.zeros((3, 8, 8), np.uint8),
        np.zeros((2, 2, 2, 3), np.uint8),
        np.zeros((4,), np.uint8),
        np.zeros((0, 4, 3), np.uint8),
        np.full((2, 2), np.nan, np.float32),
        np.full((2, 2), 3.0, np.float64),
        np.zeros((2, 2), np.int64),
        np.zeros((2, 2), np.complex64),
    ],
    ids=["5ch", "chw", "4d", "1d", "zero", "nan", "float>1", "int64", "complex"],
)
def test_bad_arrays(arr: np.ndarray) -> None:
    with pytest.raises(ImageLoadError, match="array"):
        load_image(arr)


def test_text_mode_file_object_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_text("hello")
    with open(path) as fh, pytest.raises(ImageLoadError, match="binary"):
        load_image(fh)  # type: ignore[arg-type]


def test_unsupported_type() -> None:
    with pytest.raises(ImageLoadError, match="unsupported type int"):
        load_image(42)  # type: ignore[arg-type]


def test_image_load_error_is_a_value_error_and_visualsim_error() -> None:
    err = ImageLoadError("x.jpg", "boom")
    assert isinstance(err, ValueError) and isinstance(err, VisualsimError)
    assert err.source == "'x.jpg'" and err.reason == "boom"


# -- properties ------------------------------------------------------------------


@given(st.binary(max_size=2048))
def test_arbitrary_bytes_load_or_raise_image_load_error(data: bytes) -> None:
    try:
        out = load_image(data)
    except ImageLoadError:
        return
    assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3


@given(st.binary(min_size=1, max_size=512), st.sampled_from(["PNG", "JPEG", "GIF", "BMP"]))
def test_corrupted_real_images_load_or_raise_image_load_error(noise: bytes, fmt: str) -> None:
    data = bytearray(encode(Image.new("RGB", (16, 16), (1, 2, 3)), fmt))
    for i, byte in enumerate(noise):
        data[(i * 7919) % len(data)] ^= byte
    try:
        out = load_image(bytes(data))
    except ImageLoadError:
        return
    assert out.dtype == np.uint8 and out.shape[2] == 3


@given(
    hnp.arrays(
        dtype=st.sampled_from([np.uint8, np.uint16, np.float32, np.float64, np.int32, np.bool_]),
        shape=hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=6),
    )
)
def test_arbitrary_arrays_load_or_raise_image_load_error(arr: np.ndarray) -> None:
    try:
        out = load_image(arr)
    except ImageLoadError:
        return
    assert out.dtype == np.uint8 and out.shape == (*arr.shape[:2], 3)


# -- resizing -----------------------------------------------------------------------


def test_pad_keeps_whole_image_letterboxed_on_white() -> None:
    img = np.zeros((50, 100, 3), np.uint8)  # black, wide
    out = resize_image(img, 20, "pad")
    assert out.shape == (20, 20, 3)
    assert (out[0] == 255).all() and (out[-1] == 255).all()  # white bands top and bottom
    assert (out[10] == 0).all()  # the image spans the full width


def test_center_crop_fills_frame() -> None:
    img = np.zeros((50, 100, 3), np.uint8)
    img[:, :25] = 255  # white left quarter gets cropped away
    out = resize_image(img, 20, "center_crop")
    assert out.shape == (20, 20, 3) and out.max() == 0


def test_stretch_and_rectangular_target() -> None:
    out = resize_image(np.zeros((50, 100, 3), np.uint8), (30, 10), "stretch")
    assert out.shape == (30, 10, 3)


def test_unknown_resize_mode() -> None:
    with pytest.raises(ValueError, match="unknown resize mode"):
        resize_image(np.zeros((4, 4, 3), np.uint8), 2, "squash")


@given(
    st.integers(1, 60),
    st.integers(1, 60),
    st.integers(1, 40),
    st.sampled_from(["pad", "center_crop", "stretch"]),
)
def test_resize_always_hits_target_shape(h: int, w: int, side: int, mode: str) -> None:
    out = resize_image(np.zeros((h, w, 3), np.uint8), side, mode)
    assert out.shape == (side, side, 3) and out.dtype == np.uint8


# -- big images of other formats than JPEG are averaged down towards draft_size ------------
@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "P", "1", "I;16"])
def test_a_big_png_is_reduced_towards_the_draft_size_keeping_its_colour(mode: str) -> None:
    colour = {"RGB": (200, 30, 40), "RGBA": (200, 30, 40, 255), "L": 90, "1": 1, "I;16": 25700}
    if mode == "P":
        img = Image.new("RGB", (1000, 700), (200, 30, 40)).convert(
            "P", palette=Image.Palette.ADAPTIVE
        )
    else:
        img = Image.new(mode, (1000, 700), colour[mode])
    data = encode(img, "PNG")
    full = load_image(data)
    reduced = load_image(data, draft_size=(96, 96))
    assert full.shape == (700, 1000, 3)
    assert reduced.shape == (100, 143, 3)  # 700 // 96 = 7: the whole factor that keeps >= 96
    assert np.array_equal(reduced, full[: reduced.shape[0], : reduced.shape[1]])  # one colour


def test_the_reduction_averages_and_leaves_small_images_and_jpegs_alone() -> None:
    stripes = np.zeros((400, 400, 3), np.uint8)
    stripes[:, ::2] = 255  # one-pixel stripes average to grey, not to aliasing
    got = load_image(encode(Image.fromarray(stripes), "PNG"), draft_size=(100, 100))
    assert got.shape == (100, 100, 3) and np.abs(got.astype(int) - 128).max() <= 1
    small = np.random.default_rng(0).integers(0, 256, (150, 150, 3), dtype=np.uint8)
    png = encode(Image.fromarray(small), "PNG")
    assert np.array_equal(load_image(png, draft_size=(100, 100)), small)  # under 2x: as is
    jpeg = encode(Image.fromarray(stripes), "JPEG", quality=95)
    assert load_image(jpeg, draft_size=(100, 100)).shape == (100, 100, 3)  # draft mode: 1/4
    assert load_image(jpeg, draft_size=(300, 300)).shape == (400, 400, 3)
