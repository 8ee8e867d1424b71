"""A joint HSV colour histogram: the cheap colour baseline, numpy and Pillow only."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image

from ..errors import ConfigError
from ..images import resize_image
from .base import BaseExtractor, register_extractor

MAX_SIZE = 4096
"""Largest ``size`` accepted: beyond it a histogram costs memory and time for nothing."""
DEFAULT_GREY_BINS = 6
"""Lightness levels for achromatic pixels (black ... white) in a default extractor."""
GREY_SATURATION = 48
"""Pixels with HSV saturation below this (0-255) are achromatic: binned by lightness, not hue."""
GREY_VALUE = 48
"""Pixels darker than this (HSV value, 0-255) are achromatic too: their hue is noise."""
DUPLICATE_THRESHOLD = 0.999
"""The cosine from which two colour vectors count as the same image (``find_duplicates``,
``add(duplicates=...)``). Colour alone cannot tell apart two products of the same colours,
and re-encoding moves a histogram: its measured precision is low (``docs/quality.md``)."""
_LEGACY_KEYS = frozenset({"bins", "size", "ignore_background", "sqrt"})


@register_extractor("color")
class ColorHistogramExtractor(BaseExtractor):
    """Describe an image by the distribution of its colours.

    A joint histogram over hue, saturation and value (``bins`` cells per
    channel) of the image's coloured pixels, followed by ``grey_bins``
    lightness levels for its achromatic ones (saturation below
    :data:`GREY_SATURATION`, or darker than :data:`GREY_VALUE`), whose hue is
    noise: so black, grey and white products land in different cells instead
    of being spread over meaningless hues. It is computed on a small copy of
    the image. It ignores shape
    entirely, which is the point: mix it with a CNN in a
    :class:`~visualsim.extractors.concat.ConcatExtractor` to trade "same
    colour" against "same shape".

    Parameters
    ----------
    bins
        Cells for hue, saturation and value of the coloured pixels. More hue
        bins separate similar colours (orange/red) at the price of noise.
    grey_bins
        Lightness levels for achromatic pixels (each pixel is split between
        the two nearest levels, so a shade on a boundary does not flip cells).
        ``dim`` is ``bins[0] * bins[1] * bins[2] + grey_bins``. ``0`` is the
        layout of visualsim 0.1 (every pixel binned by hue), which a catalogue
        saved then keeps.
    size
        Side of the square the image is shrunk to first, 4 to :data:`MAX_SIZE`;
        histograms barely change past a few hundred pixels, and time grows
        with ``size²``.
    ignore_background
        Leave out near-white, unsaturated pixels (the studio background of
        product shots) so the product's own colour dominates. When fewer than
        2% of pixels remain (a white product) the whole image is used.
    sqrt
        Take the square root of the normalised histogram (Hellinger kernel), so
        cosine similarity becomes the Bhattacharyya coefficient, which compares
        distributions better than raw counts.
    batch_size, num_workers, crop
        See :class:`~visualsim.extractors.base.BaseExtractor`.

    Notes
    -----
    Duplicate threshold: :data:`DUPLICATE_THRESHOLD` (``find_duplicates(min_score=0.999)``,
    ``visualsim duplicates --min-score 0.999``). Colour alone confuses
    different products of the same colours; ``docs/quality.md`` gives its
    measured precision and recall, and those of SqueezeNet.

    Examples
    --------
    >>> import numpy as np
    >>> ext = ColorHistogramExtractor(bins=(8, 3, 3))
    >>> red = np.zeros((32, 32, 3), np.uint8); red[..., 0] = 220
    >>> ext.extract([red]).shape
    (1, 78)
    """

    default_batch_size = 256

    def __init__(
        self,
        *,
        bins: Sequence[int] = (16, 4, 4),
        grey_bins: int = DEFAULT_GREY_BINS,
        size: int = 96,
        ignore_background: bool = True,
        sqrt: bool = True,
        batch_size: int | None = None,
        num_workers: int | None = None,
        crop: str | None = None,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, crop=crop)
        if isinstance(bins, (str, bytes)) or not isinstance(bins, (Sequence, np.ndarray)):
            raise ConfigError(f"bins must be three integers in [1, 256], got {bins!r}")
        try:
            parsed = tuple(_as_int(b) for b in bins)
        except (TypeError, ValueError):
            raise ConfigError(f"bins must be three integers in [1, 256], got {bins!r}") from None
        if len(parsed) != 3 or any(b < 1 or b > 256 for b in parsed):
            raise ConfigError(f"bins must be three integers in [1, 256], got {bins!r}")
        try:
            grey = _as_int(grey_bins)
            side = _as_int(size)
        except (TypeError, ValueError):
            raise ConfigError(
                f"grey_bins and size must be integers, got grey_bins={grey_bins!r}, size={size!r}"
            ) from None
        if not 0 <= grey <= 256:
            raise ConfigError(f"grey_bins must be an integer in [0, 256], got {grey_bins!r}")
        if not 4 <= side <= MAX_SIZE:
            raise ConfigError(
                f"size must be an integer from 4 to {MAX_SIZE} pixels, got {size!r}; histograms "
                "barely change past a few hundred pixels (the default is 96)"
            )
        self.bins: tuple[int, int, int] = (parsed[0], parsed[1], parsed[2])
        self.grey_bins = grey
        self.size = side
        self.ignore_background = bool(ignore_background)
        self.sqrt = bool(sqrt)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ColorHistogramExtractor:
        """Rebuild from :meth:`get_config` output.

        A complete config written before ``grey_bins`` existed (it has ``bins``,
        ``size``, ``ignore_background`` and ``sqrt`` but no ``grey_bins``)
        rebuilds the old layout, ``grey_bins=0``, so a saved catalogue's stored
        vectors and its new queries stay comparable.
        """
        config = dict(config)
        if "grey_bins" not in config and config.keys() >= _LEGACY_KEYS:
            config["grey_bins"] = 0
        return cls(**config)

    @property
    def dim(self) -> int:
        """``bins[0] * bins[1] * bins[2] + grey_bins``."""
        return self.bins[0] * self.bins[1] * self.bins[2] + self.grey_bins

    def get_config(self) -> dict[str, Any]:
        """Return the constructor arguments as JSON-safe values."""
        return {
            "bins": list(self.bins),
            "grey_bins": self.grey_bins,
            "size": self.size,
            "ignore_background": self.ignore_background,
            "sqrt": self.sqrt,
            "batch_size": self.batch_size,
            "num_workers": self.num_workers,
            "crop": self.crop,
        }

    def _draft_size(self) -> tuple[int, int]:
        return (self.size, self.size)

    def _prepare(self, image: np.ndarray) -> np.ndarray:
        small = resize_image(image, self.size, "stretch")
        hsv = np.asarray(Image.fromarray(small).convert("HSV"), dtype=np.uint16)
        h, s, v = hsv[..., 0].ravel(), hsv[..., 1].ravel(), hsv[..., 2].ravel()
        if self.ignore_background:
            product = ~((s < 26) & (v > 235))
            if product.mean() >= 0.02:
                h, s, v = h[product], s[product], v[product]
        hb, sb, vb = self.bins
        n_colour = hb * sb * vb
        if self.grey_bins == 0:
            cells = (h * hb >> 8) * (sb * vb) + (s * sb >> 8) * vb + (v * vb >> 8)
            hist = np.bincount(cells, minlength=self.dim).astype(np.float32)
        else:
            grey = (s < GREY_SATURATION) | (v < GREY_VALUE)
            colour = ~grey
            hc, sc, vc = h[colour], s[colour], v[colour]
            sat = (sc - GREY_SATURATION) * sb // (256 - GREY_SATURATION)
            cells = (hc * hb >> 8) * (sb * vb) + sat * vb + (vc * vb >> 8)
            hist = np.bincount(cells, minlength=n_colour).astype(np.float32)
            hist = np.concatenate([hist, _soft_levels(v[grey], self.grey_bins)])
        hist /= max(float(hist.sum()), 1.0)
        return np.sqrt(hist) if self.sqrt else hist

    def _embed(self, batch: np.ndarray) -> np.ndarray:
        return batch.astype(np.float32, copy=False)


def _as_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer, float, str)):
        raise TypeError(value)
    number = int(value)
    if isinstance(value, float) and number != value:
        raise ValueError(value)
    return number


def _soft_levels(values: np.ndarray, n: int) -> np.ndarray:
    """Histogram of lightness ``values`` (0-255) over ``n`` levels, linearly interpolated.

    Each pixel splits its weight between the two nearest level centres, so a
    shade on a level boundary (black at 30 vs 34) does not flip between cells.
    """
    if values.size == 0:
        return np.zeros(n, dtype=np.float32)
    pos = np.clip((values.astype(np.float32) + 0.5) * (n / 256.0) - 0.5, 0.0, n - 1.0)
    low = np.floor(pos).astype(np.intp)
    frac = pos - low
    high = np.minimum(low + 1, n - 1)
    hist = np.bincount(low, weights=1.0 - frac, minlength=n)
    hist += np.bincount(high, weights=frac, minlength=n)
    return hist.astype(np.float32)
