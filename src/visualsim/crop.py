"""Trim the uniform background around a product: ``crop="auto"`` on every extractor.

Product photos sit on wide studio margins, and the same product shot at another
distance, or placed off-centre on a bigger canvas, fills a different share of
the frame. A CNN sees a different picture each time. :func:`auto_crop` finds the
background — near-white, or whatever uniform colour the border has — cuts the
image to the product's bounding box plus a margin, and pads that box to a
square with the background colour, so every product fills the model's input
the same way whatever its scale and position on the canvas.

It is plain numpy on a subsampled mask (at most about 512 pixels along the
longer side are looked at), so it costs well under a millisecond per image next
to decoding. An image whose border is not uniform (a photo with a scene behind
the product), a blank image, or one where the product already fills the frame
comes back unchanged.

Examples
--------
>>> import numpy as np
>>> canvas = np.full((400, 600, 3), 255, np.uint8)
>>> canvas[100:200, 300:350] = (200, 30, 30)
>>> auto_crop(canvas).shape
(164, 164, 3)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from .errors import ConfigError

CropMode = Literal["auto"]
CROP_MODES: tuple[str, ...] = ("auto",)
"""Values of the extractors' ``crop`` parameter besides ``None`` (no cropping)."""

DEFAULT_MARGIN = 0.3
"""Margin kept around the product, as a fraction of the box's longer side (measured: 0.3
keeps SqueezeNet+colour P@10 at the uncropped level, 0.05 lost 0.06; docs/quality.md)."""
DEFAULT_TOLERANCE = 24
"""Largest per-channel difference (0-255) from the background still counted as background."""
MIN_UNIFORM_BORDER = 0.6
"""Share of border pixels that must match the background colour for it to count as uniform."""
NEAR_WHITE = 235
"""Every channel at least this bright counts as white background when the border is near-white."""
_SAMPLE_SIDE = 512


def check_crop(crop: Any) -> CropMode | None:
    """Return ``crop`` if it is a valid extractor ``crop`` setting, else raise.

    Raises
    ------
    ConfigError
        Anything but ``None`` or ``"auto"``.
    """
    if crop is None or crop == "auto":
        return crop
    raise ConfigError(
        f"crop must be None (no cropping) or 'auto' (trim the uniform background), got {crop!r}"
    )


@dataclass(frozen=True)
class CropBox:
    """Where :func:`find_crop_box` found the product.

    Attributes
    ----------
    top, bottom, left, right
        The box with its margin. It may reach past the image (``top < 0``,
        ``bottom > height``, ...) where the product is near an edge: the
        margin is kept all round, and :func:`auto_crop` fills the part outside
        the image with the background.
    background
        The background colour, ``(r, g, b)``.
    """

    top: int
    bottom: int
    left: int
    right: int
    background: tuple[int, int, int]

    @property
    def height(self) -> int:
        """``bottom - top``."""
        return self.bottom - self.top

    @property
    def width(self) -> int:
        """``right - left``."""
        return self.right - self.left


def find_crop_box(
    image: np.ndarray,
    *,
    margin: float = DEFAULT_MARGIN,
    tolerance: int = DEFAULT_TOLERANCE,
) -> CropBox | None:
    """Return the product's bounding box plus ``margin``, or ``None`` to leave the image as is.

    Parameters
    ----------
    image
        ``(H, W, 3)`` RGB ``uint8``, as :func:`~visualsim.images.load_image` returns.
    margin
        Kept around the box, as a fraction of its longer side.
    tolerance
        Per-channel difference from the background colour below which a pixel
        is background.

    Returns
    -------
    CropBox or None
        ``None`` when the border is not one uniform colour, when nothing but
        background is there, or when the box covers (almost) the whole image.
    """
    _check_rgb(image, "auto_crop")
    h, w = image.shape[:2]
    if h < 8 or w < 8:
        return None
    step = max(1, -(-max(h, w) // _SAMPLE_SIDE))
    small = image[::step, ::step]
    sh, sw = small.shape[:2]
    found = _foreground(small, tolerance)
    if found is None:
        return None
    diff, background = found
    # a row/column belongs to the product when more than a speck of it differs
    rows = np.flatnonzero(diff.sum(axis=1) > max(1, sw // 200))
    cols = np.flatnonzero(diff.sum(axis=0) > max(1, sh // 200))
    if rows.size == 0 or cols.size == 0:
        return None
    top, bottom = int(rows[0]) * step, min(h, (int(rows[-1]) + 1) * step)
    left, right = int(cols[0]) * step, min(w, (int(cols[-1]) + 1) * step)
    pad = round(margin * max(bottom - top, right - left)) + step
    top, bottom, left, right = top - pad, bottom + pad, left - pad, right + pad
    inside = (min(h, bottom) - max(0, top)) * (min(w, right) - max(0, left))
    if inside >= 0.9 * h * w:
        return None
    r, g, b = (int(c) for c in background)
    return CropBox(top, bottom, left, right, (r, g, b))


def foreground_mask(image: np.ndarray, *, tolerance: int = DEFAULT_TOLERANCE) -> np.ndarray | None:
    """Return where the product is: ``True`` on pixels that differ from a uniform background.

    The background is the border's colour, as for :func:`find_crop_box`: near-white
    (every channel at least :data:`NEAR_WHITE` counts as background then), or any
    uniform colour.

    Parameters
    ----------
    image
        ``(H, W, 3)`` RGB ``uint8``.
    tolerance
        Per-channel difference from the background colour below which a pixel
        is background.

    Returns
    -------
    numpy.ndarray or None
        ``(H, W)`` bool; ``None`` when the border is not one uniform colour (a
        photo with a scene behind the product), where no background can be told.

    Examples
    --------
    >>> canvas = np.full((40, 40, 3), 255, np.uint8)
    >>> canvas[10:20, 5:15] = (0, 0, 200)
    >>> int(foreground_mask(canvas).sum())
    100
    """
    _check_rgb(image, "foreground_mask")
    found = _foreground(image, tolerance)
    return None if found is None else found[0]


def _foreground(image: np.ndarray, tolerance: int) -> tuple[np.ndarray, np.ndarray] | None:
    """``(mask, background colour)`` of an RGB ``uint8`` image, or ``None`` (no uniform border)."""
    border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]]).astype(np.int16)
    background = np.median(border, axis=0).astype(np.int16)
    near = np.abs(border - background).max(axis=1) <= tolerance
    white = bool(background.min() >= NEAR_WHITE)
    if white:
        near |= border.min(axis=1) >= NEAR_WHITE
    if near.mean() < MIN_UNIFORM_BORDER:
        return None
    # |pixel - background| > tolerance in some channel, as uint8 range checks per channel
    # (5x faster than widening the image to int16 and reducing over its short last axis)
    low = np.clip(background - tolerance, 0, 255).astype(np.uint8)
    high = np.clip(background + tolerance, 0, 255).astype(np.uint8)
    diff = np.zeros(image.shape[:2], dtype=bool)
    dark = np.zeros(image.shape[:2], dtype=bool)  # on white: some channel below NEAR_WHITE
    for c in range(3):
        channel = image[..., c]
        diff |= (channel < low[c]) | (channel > high[c])
        if white:
            dark |= channel < NEAR_WHITE
    if white:
        diff &= dark
    return diff, background


def _check_rgb(image: np.ndarray, who: str) -> None:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ConfigError(
            f"{who} needs an (H, W, 3) uint8 RGB image, got {image.dtype} {image.shape}"
        )


def auto_crop(
    image: np.ndarray,
    *,
    margin: float = DEFAULT_MARGIN,
    tolerance: int = DEFAULT_TOLERANCE,
) -> np.ndarray:
    """Return ``image`` cut to the product plus a margin, padded square with the background.

    Parameters
    ----------
    image
        ``(H, W, 3)`` RGB ``uint8``.
    margin, tolerance
        See :func:`find_crop_box`.

    Returns
    -------
    numpy.ndarray
        A square ``uint8`` image holding the product centred on its own
        background, or ``image`` itself when there is nothing to trim.
    """
    box = find_crop_box(image, margin=margin, tolerance=tolerance)
    if box is None:
        return image
    h, w = image.shape[:2]
    top, left = max(0, box.top), max(0, box.left)
    part = image[top : min(h, box.bottom), left : min(w, box.right)]
    side = max(box.height, box.width)
    out = np.empty((side, side, 3), dtype=np.uint8)
    out[...] = np.asarray(box.background, dtype=np.uint8)
    y = (side - box.height) // 2 + (top - box.top)
    x = (side - box.width) // 2 + (left - box.left)
    out[y : y + part.shape[0], x : x + part.shape[1]] = part
    return out


__all__ = [
    "CROP_MODES",
    "CropBox",
    "CropMode",
    "auto_crop",
    "check_crop",
    "find_crop_box",
    "foreground_mask",
]
