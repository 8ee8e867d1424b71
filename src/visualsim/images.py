"""Turn anything image-like into an RGB ``uint8`` array, and resize it for a model.

:func:`load_image` is the single entrance for pixels: every extractor and the
recommender call it, so every input type and colour mode is handled once. It
applies EXIF orientation, converts palette / CMYK / 16-bit / greyscale images
to RGB, composites transparency on white (product shots live on white), takes
the first frame of animations, and raises :class:`~visualsim.errors.ImageLoadError`
naming the source and the reason for anything it cannot read.
"""

from __future__ import annotations

import io
import os
import struct
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any, Literal, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageLoadError

ImageLike = Union[str, "os.PathLike[str]", bytes, bytearray, IO[bytes], Image.Image, np.ndarray]
"""Anything :func:`load_image` accepts."""

ResizeMode = Literal["pad", "center_crop", "stretch"]
RESIZE_MODES: tuple[str, ...] = ("pad", "center_crop", "stretch")

MAX_PIXELS: int = 89_478_485
"""Default pixel limit (width x height) above which an image is refused as a
possible decompression bomb; the same number as Pillow's own default. Pass
``max_pixels=`` to :func:`load_image` to change it per call."""

MAX_IMAGE_BYTES_ENV = "VISUALSIM_MAX_IMAGE_BYTES"
"""Environment variable that sets :data:`MAX_IMAGE_BYTES` (a number of bytes) at import."""


def _max_image_bytes_from_env(default: int = 256 << 20) -> int:
    raw = os.environ.get(MAX_IMAGE_BYTES_ENV, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(
            f"{MAX_IMAGE_BYTES_ENV}={raw[:40]!r} is not a whole number of bytes "
            f"(e.g. {default}); unset it for the default"
        ) from None
    if value < 1:
        raise ValueError(f"{MAX_IMAGE_BYTES_ENV} must be at least 1 byte, got {value}")
    return value


MAX_IMAGE_BYTES: int = _max_image_bytes_from_env()
"""Default bound on the memory one image may take to decode and convert
(256 MiB, or :data:`MAX_IMAGE_BYTES_ENV`), estimated from its header —
width x height x :func:`decode_bytes_per_pixel` of its colour mode — before any
pixel is decoded. A 308 KiB PNG can claim 81 million RGBA pixels (4.9 GiB to
decode and composite before this bound); it is refused from its header. Each
loader thread decodes one image at a time, so extraction holds at most
``num_workers`` times this. Pass ``max_bytes=`` to :func:`load_image`
(``None``: no bound) to change it per call; the module attribute is read at
call time."""

_PILLOW_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2}
# what the conversion to RGB allocates per pixel on top of Pillow's decoded buffer:
# Pillow's own conversions (4 a pixel for RGBA), the bytes numpy reads them from,
# integer compositing of transparency, float64 scaling of high bit depths, RGB out (3)
_WORK_BYTES = {
    "RGB": 6,
    "1": 6,
    "L": 5,
    "RGBA": 20,
    "LA": 24,
    "PA": 24,
    "P": 24,
    "RGBa": 28,
    "La": 28,
    "I": 30,
    "F": 30,
}


def decode_bytes_per_pixel(mode: str) -> int:
    """Bytes per pixel :func:`load_image` needs, at its peak, for an image of ``mode``.

    Pillow's decoded buffer (1 byte for ``"1"``/``"L"``/``"P"``, 2 for 16-bit,
    else 4) plus what the conversion to RGB allocates at once (the RGB result
    and the bytes numpy reads it from, 6; about 20 for compositing transparency
    on white, 30 for scaling high bit depths), as measured with ``tracemalloc``.

    Examples
    --------
    >>> decode_bytes_per_pixel("L"), decode_bytes_per_pixel("RGB"), decode_bytes_per_pixel("RGBA")
    (6, 10, 24)
    """
    base = _PILLOW_BYTES.get(mode, 4)
    work = _WORK_BYTES.get(mode, 30 if mode.startswith("I;16") else 10)
    return base + work


WHITE = (255, 255, 255)


_DEFAULT: Any = object()


def load_image(
    src: ImageLike,
    *,
    max_pixels: int | None = MAX_PIXELS,
    draft_size: tuple[int, int] | None = None,
    max_bytes: int | None = _DEFAULT,
) -> np.ndarray:
    """Return ``src`` as an ``(H, W, 3)`` RGB ``uint8`` array.

    Parameters
    ----------
    src
        A file path (``str`` or ``os.PathLike``), encoded bytes, a binary file
        object, a ``PIL.Image.Image``, or a numpy array of shape ``(H, W)``,
        ``(H, W, 1)``, ``(H, W, 3)`` or ``(H, W, 4)`` with dtype ``uint8``,
        ``uint16``, ``bool`` or float in ``[0, 1]``.
    max_pixels
        Refuse images with more than this many pixels (decompression bombs),
        counted from the header at the scale they would be decoded (a JPEG
        reduced by ``draft_size`` counts at its reduced size). ``None``
        disables the check.
    draft_size
        A hint ``(width, height)``: JPEGs may be decoded at a reduced scale
        that is still at least this large, which is several times faster for
        big photos that will be shrunk anyway; an image of another format at
        least twice as large is averaged down after decoding (by a whole
        factor, to still at least this size), so the arrays made from it cost
        what its reduced size costs.
    max_bytes
        Refuse an encoded image whose decoding would take more memory than
        this, estimated from its header before decoding (see
        :data:`MAX_IMAGE_BYTES`, the default, and
        :func:`decode_bytes_per_pixel`). ``None`` disables the bound.

    Returns
    -------
    numpy.ndarray
        A C-contiguous ``uint8`` array of shape ``(H, W, 3)``.

    Raises
    ------
    ImageLoadError
        For a missing file, a directory, a path the system refuses (too long,
        unreadable), empty, truncated or non-image data, an image over
        ``max_pixels`` or ``max_bytes`` (refused from the header before any
        pixel is decoded; the error's ``too_large`` attribute is then the
        ``(width, height)`` it would decode at), a closed PIL image, an array of the
        wrong shape or dtype, or NaN. Nothing else escapes for a bad input, so
        ``on_error="skip"`` can always skip it.

    Examples
    --------
    >>> import numpy as np
    >>> load_image(np.zeros((2, 3), dtype=np.uint8)).shape
    (2, 3, 3)
    """
    limit = MAX_IMAGE_BYTES if max_bytes is _DEFAULT else max_bytes
    try:
        return _load(src, max_pixels, draft_size, limit)
    except ImageLoadError:
        raise
    except Exception as exc:  # a bad input must be an ImageLoadError, whatever broke
        raise ImageLoadError(
            src, f"could not be read ({type(exc).__name__}: {str(exc)[:200]})"
        ) from None


_TRANSPOSED = (5, 6, 7, 8)  # EXIF orientations that swap width and height


def encoded_size(data: bytes) -> tuple[int, int]:
    """The ``(width, height)`` :func:`load_image` returns for encoded ``data`` at full scale.

    Read from the header (EXIF orientation applied), nothing decoded: what a
    region given in the photo's own pixels refers to when the photo is then
    decoded at a reduced scale (``draft_size``).

    Raises
    ------
    ImageLoadError
        Data that is not an image.
    """
    try:
        with Image.open(io.BytesIO(bytes(data))) as img:
            width, height = img.size
            try:
                orientation = img.getexif().get(0x0112)
            except Exception:  # a broken EXIF block: load_image ignores it too
                orientation = None
    except UnidentifiedImageError:
        raise ImageLoadError(data, "not an image (unrecognised format)") from None
    except Exception as exc:
        raise ImageLoadError(data, f"could not be read ({type(exc).__name__}: {exc})") from None
    if orientation in _TRANSPOSED:
        width, height = height, width
    return int(width), int(height)


def _load(
    src: Any, max_pixels: int | None, draft_size: tuple[int, int] | None, max_bytes: int | None
) -> np.ndarray:
    if isinstance(src, np.ndarray):
        return _from_array(src, max_pixels=max_pixels)
    if isinstance(src, Image.Image):
        return _from_open_pil(src, max_pixels, max_bytes)
    if isinstance(src, (str, os.PathLike)):
        return _from_path(src, max_pixels, draft_size, max_bytes)
    if isinstance(src, (bytes, bytearray, memoryview)):
        if len(src) == 0:
            raise ImageLoadError(src, "the data is empty (0 bytes)")
        return _from_stream(io.BytesIO(bytes(src)), src, max_pixels, draft_size, max_bytes)
    if hasattr(src, "read"):
        try:
            data = src.read()
        except Exception as exc:  # a broken stream is the caller's input problem
            raise ImageLoadError(src, f"reading the file object failed: {exc}") from exc
        if not isinstance(data, (bytes, bytearray)):
            raise ImageLoadError(src, "the file object must be opened in binary mode ('rb')")
        if len(data) == 0:
            raise ImageLoadError(src, "the file object is empty (0 bytes)")
        return _from_stream(io.BytesIO(data), src, max_pixels, draft_size, max_bytes)
    raise ImageLoadError(
        src,
        f"unsupported type {type(src).__name__}; pass a path, bytes, a binary file, "
        "a PIL image or a numpy array",
    )


def _from_path(
    path: str | os.PathLike[str],
    max_pixels: int | None,
    draft_size: tuple[int, int] | None,
    max_bytes: int | None,
) -> np.ndarray:
    try:
        p = Path(path)
        if not p.exists():
            raise ImageLoadError(path, "no such file")
        if p.is_dir():
            raise ImageLoadError(path, "is a directory, not an image file")
        size = p.stat().st_size
        if size == 0:
            raise ImageLoadError(path, "the file is empty (0 bytes)")
        with open(p, "rb") as fh:
            return _from_stream(fh, path, max_pixels, draft_size, max_bytes)
    except ImageLoadError:
        raise
    except PermissionError as exc:
        raise ImageLoadError(path, f"permission denied ({exc.strerror})") from None
    except IsADirectoryError:
        raise ImageLoadError(path, "is a directory, not an image file") from None
    except (OSError, ValueError) as exc:  # ENAMETOOLONG, ELOOP, EIO, an embedded NUL ...
        text = os.fspath(path)
        shown = text if len(text) <= 200 else f"{text[:120]}...({len(text):,} characters)"
        why = getattr(exc, "strerror", None) or str(exc)
        raise ImageLoadError(shown, f"the system cannot open this path ({why})") from None


def _from_open_pil(img: Image.Image, max_pixels: int | None, max_bytes: int | None) -> np.ndarray:
    try:
        return _from_pil(img, img, max_pixels=max_pixels, draft_size=None, max_bytes=max_bytes)
    except ImageLoadError:
        raise
    except (ValueError, OSError, SyntaxError, EOFError, AttributeError) as exc:
        reason = str(exc) or type(exc).__name__
        if "closed" in reason.lower():
            reason = f"the PIL image is closed ({reason}); pass it before closing it, or a path"
        raise ImageLoadError(img, f"cannot read the PIL image ({reason})") from None


def _from_stream(
    fh: IO[bytes],
    source: Any,
    max_pixels: int | None,
    draft_size: tuple[int, int] | None,
    max_bytes: int | None,
) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            # our own pixel limit replaces Pillow's warning; its hard error still applies
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(fh)
            return _from_pil(
                img, source, max_pixels=max_pixels, draft_size=draft_size, max_bytes=max_bytes
            )
    except ImageLoadError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageLoadError(
            source, f"too many pixels, refused as a decompression bomb ({exc})"
        ) from None
    except UnidentifiedImageError:
        raise ImageLoadError(source, "not an image (unrecognised format)") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, struct.error) as exc:
        reason = str(exc) or type(exc).__name__
        if "truncated" in reason.lower() or isinstance(exc, EOFError):
            reason = f"truncated or incomplete image data ({reason})"
        else:
            reason = f"corrupt image data ({reason})"
        raise ImageLoadError(source, reason) from exc
    except (MemoryError, RuntimeError) as exc:
        raise ImageLoadError(source, f"could not decode ({type(exc).__name__}: {exc})") from exc


def _too_large(source: Any, reason: str, size: tuple[int, int]) -> ImageLoadError:
    """An :class:`ImageLoadError` marked ``too_large = (width, height)`` (refused unread)."""
    exc = ImageLoadError(source, reason)
    exc.too_large = size  # type: ignore[attr-defined]
    return exc


def _check_pixels(source: Any, width: int, height: int, max_pixels: int | None) -> None:
    if width <= 0 or height <= 0:
        raise ImageLoadError(source, f"the image has zero size ({width}x{height})")
    if max_pixels is not None and width * height > max_pixels:
        raise _too_large(
            source,
            f"{width}x{height} = {width * height:,} pixels is over the limit of {max_pixels:,} "
            "(a possible decompression bomb); raise max_pixels if the image is trusted",
            (width, height),
        )


def _check_bytes(source: Any, img: Image.Image, max_bytes: int | None) -> None:
    if max_bytes is None:
        return
    per_pixel = decode_bytes_per_pixel(img.mode)
    needed = img.width * img.height * per_pixel
    if needed > max_bytes:
        raise _too_large(
            source,
            f"{img.width}x{img.height} {img.mode} would take about {needed / 2**20:,.0f} MiB to "
            f"decode ({per_pixel} bytes a pixel), over the limit of {max_bytes / 2**20:,.0f} "
            f"MiB; pass max_bytes= or set visualsim.images.MAX_IMAGE_BYTES (or "
            f"{MAX_IMAGE_BYTES_ENV}) if the image is trusted",
            (img.width, img.height),
        )


def _from_pil(
    img: Image.Image,
    source: Any,
    *,
    max_pixels: int | None,
    draft_size: tuple[int, int] | None,
    max_bytes: int | None = None,
) -> np.ndarray:
    if draft_size is not None and img.format == "JPEG":
        img.draft("RGB", (max(1, draft_size[0]), max(1, draft_size[1])))
    _check_pixels(source, img.width, img.height, max_pixels)  # at the draft scale
    if getattr(img, "n_frames", 1) > 1:
        img.seek(0)
    _check_bytes(source, img, max_bytes)  # from the header (and draft scale): nothing decoded
    img.load()
    if draft_size is not None and img.format != "JPEG":
        img = _reduced(img, draft_size)
    img = ImageOps.exif_transpose(img) or img
    return _to_rgb(img, source)


_WIDENED = {"P": "RGBA", "PA": "RGBA", "1": "L", "I;16": "I", "I;16B": "I", "I;16L": "I"}
"""Modes :meth:`PIL.Image.Image.reduce` cannot average, and the mode averaged instead."""


def _reduced(img: Image.Image, draft_size: tuple[int, int]) -> Image.Image:
    """A decoded image (not a JPEG: draft mode reduced that one) at least twice
    ``draft_size`` on its shorter side, box-averaged down by an integer factor to
    still at least ``draft_size``: what JPEG draft mode does for other formats, so the
    arrays and model inputs made from a big PNG cost what its reduced size costs."""
    scale = min(img.width, img.height) // max(1, *draft_size)
    if scale < 2:
        return img
    widened = _WIDENED.get(img.mode)
    if widened is not None:
        img = img.convert(widened)
    return img.reduce(scale)


def _to_rgb(img: Image.Image, source: Any) -> np.ndarray:
    mode = img.mode
    if mode == "RGB":
        return np.ascontiguousarray(np.asarray(img, dtype=np.uint8))
    if mode == "P" or mode == "PA":
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "RGBa", "La"):
        if mode in ("RGBa", "La"):  # premultiplied alpha
            img = img.convert("RGBA" if mode == "RGBa" else "LA")
        arr = np.asarray(img.convert("RGBA"))
        return _composite_on_white(arr[..., :3], arr[..., 3])
    if mode.startswith("I;16") or mode in ("I", "F"):
        arr = np.asarray(img)
        return _grey_to_rgb(_scale_high_depth(arr, mode, source))
    if mode in ("1", "L"):
        return _grey_to_rgb(np.asarray(img.convert("L"), dtype=np.uint8))
    try:
        return np.ascontiguousarray(np.asarray(img.convert("RGB"), dtype=np.uint8))
    except (ValueError, OSError) as exc:
        raise ImageLoadError(source, f"cannot convert colour mode {mode!r} to RGB ({exc})") from exc


def _scale_high_depth(arr: np.ndarray, mode: str, source: Any) -> np.ndarray:
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        raise ImageLoadError(source, f"the {mode} image contains NaN or infinite values")
    if mode == "F":
        hi = 1.0 if arr.max(initial=0.0) <= 1.0 else 255.0
        return np.clip(np.rint(arr / hi * 255.0), 0, 255).astype(np.uint8)
    return np.clip(np.rint(arr / 257.0), 0, 255).astype(np.uint8)


def _grey_to_rgb(grey: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.repeat(grey[..., None], 3, axis=2))


def _composite_on_white(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """``rgb`` over white by ``alpha`` (both uint8), rounded: integer maths in uint16.

    ``rgb * a + 255 * (255 - a)`` is at most ``255 * 255``, so it fits 16 bits;
    adding 127 and dividing by 255 rounds to nearest (there are no exact halves).
    """
    a = alpha.astype(np.uint16)[..., None]
    out = rgb.astype(np.uint16)
    out *= a
    np.subtract(255, a, out=a)
    a *= 255
    out += a
    out += 127
    out //= 255
    return np.ascontiguousarray(out.astype(np.uint8))


def _from_array(arr: np.ndarray, *, max_pixels: int | None) -> np.ndarray:
    desc = arr
    if type(arr) is not np.ndarray:  # np.matrix (always 2-D), masked arrays, ...
        arr = np.asarray(arr)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        hint = ""
        if arr.ndim == 3 and arr.shape[0] in (1, 3, 4):
            hint = " (channels-first? transpose to (H, W, C))"
        raise ImageLoadError(
            desc, f"expected shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4){hint}"
        )
    _check_pixels(desc, arr.shape[1], arr.shape[0], max_pixels)
    kind = arr.dtype.kind
    if arr.dtype == np.uint8:
        data = arr
    elif kind == "b":
        data = arr.astype(np.uint8) * 255
    elif arr.dtype == np.uint16:
        data = np.rint(arr.astype(np.float32) / 257.0).astype(np.uint8)
    elif kind == "f":
        if not np.isfinite(arr).all():
            raise ImageLoadError(desc, "the array contains NaN or infinite values")
        lo, hi = float(arr.min()), float(arr.max())
        if lo < 0.0 or hi > 1.0:
            raise ImageLoadError(
                desc,
                f"float arrays must hold values in [0, 1], got [{lo:g}, {hi:g}]; "
                "divide by 255 or convert to uint8",
            )
        data = np.rint(arr.astype(np.float32) * 255.0).astype(np.uint8)
    else:
        raise ImageLoadError(desc, f"unsupported dtype {arr.dtype}; use uint8 or float in [0, 1]")
    channels = data.shape[2]
    if channels == 1:
        return _grey_to_rgb(data[..., 0])
    if channels == 4:
        return _composite_on_white(data[..., :3], data[..., 3])
    return np.ascontiguousarray(data)


def resize_image(
    image: np.ndarray,
    size: int | Sequence[int],
    mode: ResizeMode | str = "pad",
    *,
    fill: tuple[int, int, int] = WHITE,
) -> np.ndarray:
    """Return ``image`` resized to ``size`` for a model input.

    Parameters
    ----------
    image
        An RGB ``uint8`` array ``(H, W, 3)``, as returned by :func:`load_image`.
    size
        Target side (square) or ``(height, width)``.
    mode
        ``"pad"`` keeps the whole product and its aspect ratio, letterboxed on
        ``fill`` (white: product shots are on white); ``"center_crop"`` fills
        the frame and cuts the longer side; ``"stretch"`` ignores the aspect ratio.
    fill
        Padding colour for ``"pad"``.

    Returns
    -------
    numpy.ndarray
        ``uint8`` array of shape ``(height, width, 3)``.

    Examples
    --------
    >>> import numpy as np
    >>> resize_image(np.zeros((10, 20, 3), np.uint8), 8).shape
    (8, 8, 3)
    """
    th, tw = (int(size), int(size)) if isinstance(size, (int, np.integer)) else map(int, size)
    if th < 1 or tw < 1:
        raise ValueError(f"target size must be positive, got {(th, tw)}")
    if mode not in RESIZE_MODES:
        raise ValueError(f"unknown resize mode {mode!r}; choose one of {', '.join(RESIZE_MODES)}")
    h, w = image.shape[:2]
    if (h, w) == (th, tw):
        return image
    pil = Image.fromarray(image)
    resample = Image.Resampling.BILINEAR
    if mode == "stretch":
        return np.asarray(pil.resize((tw, th), resample, reducing_gap=3.0))
    if mode == "center_crop":
        # crop the source to the target's aspect ratio first, then resize: exact borders
        ch, cw = min(h, max(1, round(w * th / tw))), min(w, max(1, round(h * tw / th)))
        top, left = (h - ch) // 2, (w - cw) // 2
        cropped = Image.fromarray(np.ascontiguousarray(image[top : top + ch, left : left + cw]))
        return np.asarray(cropped.resize((tw, th), resample, reducing_gap=3.0))
    scale = min(th / h, tw / w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    canvas = Image.new("RGB", (tw, th), fill)
    canvas.paste(pil.resize((nw, nh), resample, reducing_gap=3.0), ((tw - nw) // 2, (th - nh) // 2))
    return np.asarray(canvas)


__all__ = [
    "MAX_IMAGE_BYTES",
    "MAX_IMAGE_BYTES_ENV",
    "MAX_PIXELS",
    "RESIZE_MODES",
    "ImageLike",
    "decode_bytes_per_pixel",
    "encoded_size",
    "load_image",
    "resize_image",
]
