"""Hostile images: bounded decode memory, and every bad input is one ImageLoadError.

The review found a 308 KiB PNG under Pillow's pixel limit that took 4.9 GiB and
23 s to decode, and inputs that aborted a whole ``fit(on_error="skip")``: an
over-long path (``OSError``), ``np.matrix`` and a closed PIL image (``ValueError``).
"""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import tracemalloc
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile

from visualsim import Recommender, images
from visualsim.errors import ImageLoadError
from visualsim.extractors.color import ColorHistogramExtractor
from visualsim.images import MAX_IMAGE_BYTES, decode_bytes_per_pixel, load_image
from visualsim.indexes.sklearn import SklearnIndex


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(width: int = 9000, height: int = 9000) -> bytes:
    """A valid all-transparent RGBA PNG, compressed row by row (never held decoded)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)  # 8-bit RGBA
    compressor = zlib.compressobj(9)
    row = b"\0" * (1 + 4 * width)  # filter byte + pixels
    parts = [compressor.compress(row) for _ in range(height)]
    parts.append(compressor.flush())
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", b"".join(parts))
        + _chunk(b"IEND", b"")
    )


@pytest.fixture(scope="module")
def bomb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bomb") / "bomb.png"
    path.write_bytes(png_bomb())
    return path


@pytest.fixture
def no_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if any pixel is decoded: the refusal must come from the header."""

    def refuse(self: Image.Image) -> Any:
        raise AssertionError("decoded pixels of an image that should be refused from its header")

    monkeypatch.setattr(Image.Image, "load", refuse)
    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)


def test_the_bomb_is_small_and_under_pillows_pixel_limit(bomb: Path) -> None:
    size = bomb.stat().st_size
    assert 250_000 < size < 400_000  # the review's was 308 KiB
    with Image.open(bomb) as img:
        assert img.size == (9000, 9000) and img.mode == "RGBA"
        assert img.width * img.height < Image.MAX_IMAGE_PIXELS
        assert img.width * img.height * decode_bytes_per_pixel("RGBA") > 6 * MAX_IMAGE_BYTES


@pytest.mark.parametrize("form", ["path", "bytes", "file"])
def test_the_bomb_is_refused_from_its_header(bomb: Path, no_decoding: None, form: str) -> None:
    source: Any = {
        "path": bomb,
        "bytes": bomb.read_bytes(),
        "file": io.BytesIO(bomb.read_bytes()),
    }[form]

    mib = 9000 * 9000 * decode_bytes_per_pixel("RGBA") / 2**20
    with pytest.raises(
        ImageLoadError, match=rf"9000x9000 RGBA would take about {mib:,.0f} MiB"
    ) as info:
        load_image(source)

    assert "over the limit of 256 MiB" in str(info.value) and "max_bytes=" in str(info.value)
    assert info.type is ImageLoadError


def test_the_bound_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    small = np.asarray(Image.new("RGB", (100, 100), "red"))
    data = io.BytesIO()
    Image.fromarray(small).save(data, "PNG")

    assert load_image(data.getvalue()).shape == (100, 100, 3)
    need = 100 * 100 * decode_bytes_per_pixel("RGB")
    with pytest.raises(ImageLoadError, match="over the limit"):
        load_image(data.getvalue(), max_bytes=need - 1)
    assert load_image(data.getvalue(), max_bytes=need).shape == (100, 100, 3)
    monkeypatch.setattr(images, "MAX_IMAGE_BYTES", 1000)
    with pytest.raises(ImageLoadError, match="MAX_IMAGE_BYTES"):
        load_image(data.getvalue())
    assert load_image(data.getvalue(), max_bytes=None).shape == (100, 100, 3)


def test_the_bound_comes_from_the_environment() -> None:
    code = "from visualsim import images; print(images.MAX_IMAGE_BYTES)"
    env = {**os.environ, "VISUALSIM_MAX_IMAGE_BYTES": "12345"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "12345", out.stderr

    env["VISUALSIM_MAX_IMAGE_BYTES"] = "lots"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode != 0 and "VISUALSIM_MAX_IMAGE_BYTES='lots'" in out.stderr


def test_the_default_is_256_mib() -> None:
    assert MAX_IMAGE_BYTES == 256 * 2**20 or "VISUALSIM_MAX_IMAGE_BYTES" in os.environ


def test_a_big_jpeg_drafted_small_is_not_refused(tmp_path: Path) -> None:
    """Extractors pass a draft size: a JPEG decoded at 1/8 scale costs 1/64 of the memory."""
    path = tmp_path / "big.jpg"
    Image.new("RGB", (2000, 1600), "blue").save(path, quality=50)
    limit = 2000 * 1600 * decode_bytes_per_pixel("RGB") // 10

    with pytest.raises(ImageLoadError, match="over the limit"):
        load_image(path, max_bytes=limit)
    assert load_image(path, max_bytes=limit, draft_size=(224, 224)).shape[0] >= 224


MODES = ["1", "L", "P", "RGB", "RGBA", "LA", "PA", "I;16", "I", "F", "CMYK", "YCbCr"]


@settings(max_examples=60, suppress_health_check=list(HealthCheck), deadline=None)
@given(mode=st.sampled_from(MODES), w=st.integers(150, 300), h=st.integers(150, 300))
def test_decode_bytes_per_pixel_bounds_what_numpy_allocates(mode: str, w: int, h: int) -> None:
    """The estimate covers the conversion's real peak (numpy's part, traced here)."""
    img = Image.new("RGB", (w, h), (10, 200, 30))
    img = img.convert("RGBA").convert("PA") if mode == "PA" else img.convert(mode)
    img.load()
    load_image(img)  # first calls import and cache things; trace a warm call
    tracemalloc.start()
    try:
        load_image(img)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    budget = w * h * decode_bytes_per_pixel(mode)  # Pillow's buffers are not traced: slack
    assert peak <= budget + 64 * 1024, (mode, peak, budget)  # + a fixed ~54 KiB per call


# -- inputs that aborted fit(on_error="skip") ----------------------------------------------
def test_an_over_long_path_is_an_image_load_error() -> None:
    path = "a" * 5000 + ".jpg"
    with pytest.raises(ImageLoadError, match="cannot open this path") as info:
        load_image(path)
    assert "5,004 characters" in str(info.value) and len(str(info.value)) < 400


def test_a_path_with_a_nul_byte_is_an_image_load_error() -> None:
    with pytest.raises(ImageLoadError) as info:
        load_image("photo\0.jpg")
    assert str(info.value).count("cannot load image") == 1  # one clear message, not nested


def test_np_matrix_loads_as_the_plain_array_would() -> None:
    grid = np.arange(20, dtype=np.uint8).reshape(4, 5)

    loaded = load_image(np.asmatrix(grid))

    np.testing.assert_array_equal(loaded, load_image(grid))
    assert type(loaded) is np.ndarray and loaded.shape == (4, 5, 3)


def test_a_closed_pil_image_is_an_image_load_error(tmp_path: Path) -> None:
    path = tmp_path / "x.png"
    Image.new("RGB", (8, 8), "red").save(path)
    opened = Image.open(path)
    opened.close()
    loaded = Image.new("RGB", (8, 8), "red")
    loaded.load()
    loaded.close()

    for img in (opened, loaded):
        with pytest.raises(ImageLoadError, match="closed"):
            load_image(img)


def test_fit_skips_every_hostile_input_and_keeps_the_good_ones(tmp_path: Path, bomb: Path) -> None:
    good = tmp_path / "good.png"
    Image.new("RGB", (32, 32), (200, 30, 30)).save(good)
    closed = Image.open(good)
    closed.close()
    inputs = [
        str(good),
        "b" * 5000 + ".png",
        np.asmatrix(np.full((16, 16), 90, np.uint8)),
        closed,
        str(bomb),
        "photo\0.png",
        np.zeros((3, 3, 7), np.uint8),
        np.full((8, 8, 3), 20, np.uint8),
    ]
    ids = [f"item-{i}" for i in range(len(inputs))]

    rec = Recommender(ColorHistogramExtractor(), SklearnIndex()).fit(
        inputs, ids=ids, on_error="skip", progress=False
    )

    assert len(rec) == 3
    failed = {entry[0] if isinstance(entry, tuple) else entry.id: entry for entry in rec.failed_}
    assert set(failed) == {"item-1", "item-3", "item-4", "item-5", "item-6"}, rec.failed_
    assert [r.id for r in rec.query(np.full((8, 8, 3), 20, np.uint8), k=1)] == ["item-7"]


# -- fuzz: mutated real images never raise anything but ImageLoadError ----------------------
def _encoded(fmt: str, mode: str, size: tuple[int, int]) -> bytes:
    img = Image.new("RGB", size, (30, 120, 220)).convert(mode)
    out = io.BytesIO()
    img.save(out, fmt)
    return out.getvalue()


SEEDS = [
    _encoded(fmt, mode, (13, 9))
    for fmt, modes in {
        "PNG": ["RGB", "RGBA", "L", "P", "I;16", "LA"],
        "JPEG": ["RGB", "L", "CMYK"],
        "GIF": ["P"],
        "BMP": ["RGB", "L"],
        "TIFF": ["RGB", "RGBA", "F", "I;16"],
        "WEBP": ["RGB", "RGBA"],
        "ICO": ["RGBA"],
        "PPM": ["RGB", "L"],
    }.items()
    for mode in modes
]
SEEDS.append(png_bomb(3000, 40))


@st.composite
def mutated_image(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 5))):
        where = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "dims"]))
        if action == "flip":
            data[where] ^= 1 << draw(st.integers(0, 7))
        elif action == "set":
            data[where] = draw(st.sampled_from([0, 0xFF, 0x7F, 0x80]))
        elif action == "insert":
            data[where:where] = draw(st.binary(min_size=1, max_size=6))
        elif action == "delete":
            del data[where : where + draw(st.integers(1, 6))]
        elif action == "truncate" and where > 8:
            del data[where:]
        elif action == "dims":  # big claimed sizes in any 4 bytes (PNG IHDR, BMP, TIFF ...)
            value = draw(st.sampled_from([65535, 70000, 2**31 - 1, 2**32 - 1, 30000]))
            data[where : where + 4] = value.to_bytes(4, draw(st.sampled_from(["big", "little"])))
    return bytes(data)


FUZZ_EXAMPLES = int(os.environ.get("VISUALSIM_FUZZ_EXAMPLES", "400"))


@settings(max_examples=FUZZ_EXAMPLES, suppress_health_check=list(HealthCheck), deadline=None)
@given(mutated_image())
def test_fuzz_mutated_images_are_loaded_or_refused_never_anything_else(data: bytes) -> None:
    try:
        out = load_image(data, max_bytes=16 * 2**20)
    except ImageLoadError:
        return
    assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3
    assert out.shape[0] * out.shape[1] * 3 <= 16 * 2**20


@settings(max_examples=FUZZ_EXAMPLES // 2, suppress_health_check=list(HealthCheck), deadline=None)
@given(
    st.one_of(
        st.binary(max_size=64),
        st.text(max_size=300),
        st.builds(lambda n: "x" * n, st.integers(250, 20_000)),
        st.builds(
            np.zeros,
            st.lists(st.integers(0, 5), min_size=0, max_size=5).map(tuple),
            st.sampled_from(["u1", "u2", "f4", "f8", "?", "i8", "O", "c8", "U2"]),
        ),
        st.just(np.asmatrix(np.eye(3))),
        st.just(np.ma.masked_array(np.zeros((4, 4)), mask=np.eye(4))),
        st.none(),
        st.integers(),
    )
)
def test_fuzz_odd_inputs_are_loaded_or_refused_never_anything_else(source: Any) -> None:
    try:
        out = load_image(source)
    except ImageLoadError:
        return
    assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3
