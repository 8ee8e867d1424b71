"""A joint HSV colour histogram: the cheap colour baseline, numpy and Pillow only."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from ..errors import ConfigError
from ..images import resize_image
from .base import BaseExtractor, register_extractor


@register_extractor("color")
class ColorHistogramExtractor(BaseExtractor):
    """Describe an image by the distribution of its colours.

    A joint histogram over hue, saturation and value (``bins`` cells per
    channel), computed on a small copy of the image. It ignores shape
    entirely, which is the point: mix it with a CNN in a
    :class:`~visualsim.extractors.concat.ConcatExtractor` to trade "same
    colour" against "same shape".

    Parameters
    ----------
    bins
        Cells for hue, saturation and value. ``dim`` is their product. More hue
        bins separate similar colours (orange/red) at the price of noise.
    size
        Side of the square the image is shrunk to first; histograms barely
        change below a few hundred pixels, and speed grows with ``1/size²``.
    ignore_background
        Leave out near-white, unsaturated pixels (the studio background of
        product shots) so the product's own colour dominates. When fewer than
        2% of pixels remain (a white product) the whole image is used.
    sqrt
        Take the square root of the normalised histogram (Hellinger kernel), so
        cosine similarity becomes the Bhattacharyya coefficient, which compares
        distributions better than raw counts.
    batch_size, num_workers
        See :class:`~visualsim.extractors.base.BaseExtractor`.

    Examples
    --------
    >>> import numpy as np
    >>> ext = ColorHistogramExtractor(bins=(8, 3, 3))
    >>> red = np.zeros((32, 32, 3), np.uint8); red[..., 0] = 220
    >>> ext.extract([red]).shape
    (1, 72)
    """

    default_batch_size = 256

    def __init__(
        self,
        *,
        bins: Sequence[int] = (16, 4, 4),
        size: int = 96,
        ignore_background: bool = True,
        sqrt: bool = True,
        batch_size: int | None = None,
        num_workers: int | None = None,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers)
        bins = tuple(int(b) for b in bins)
        if len(bins) != 3 or any(b < 1 or b > 256 for b in bins):
            raise ConfigError(f"bins must be three integers in [1, 256], got {bins!r}")
        if int(size) < 4:
            raise ConfigError(f"size must be at least 4 pixels, got {size!r}")
        self.bins = bins
        self.size = int(size)
        self.ignore_background = bool(ignore_background)
        self.sqrt = bool(sqrt)

    @property
    def dim(self) -> int:
        """``bins[0] * bins[1] * bins[2]``."""
        return self.bins[0] * self.bins[1] * self.bins[2]

    def get_config(self) -> dict[str, Any]:
        """Return the constructor arguments as JSON-safe values."""
        return {
            "bins": list(self.bins),
            "size": self.size,
            "ignore_background": self.ignore_background,
            "sqrt": self.sqrt,
            "batch_size": self.batch_size,
            "num_workers": self.num_workers,
        }

    def _draft_size(self) -> tuple[int, int]:
        return (self.size, self.size)

    def _prepare(self, image: np.ndarray) -> np.ndarray:
        small = resize_image(image, self.size, "stretch")
        hsv = np.asarray(Image.fromarray(small).convert("HSV"), dtype=np.uint16)
        h, s, v = hsv[..., 0].ravel(), hsv[..., 1].ravel(), hsv[..., 2].ravel()
        hb, sb, vb = self.bins
        cells = (h * hb >> 8) * (sb * vb) + (s * sb >> 8) * vb + (v * vb >> 8)
        if self.ignore_background:
            product = ~((s < 26) & (v > 235))
            if product.mean() >= 0.02:
                cells = cells[product]
        hist = np.bincount(cells, minlength=self.dim).astype(np.float32)
        hist /= max(float(hist.sum()), 1.0)
        return np.sqrt(hist) if self.sqrt else hist

    def _embed(self, batch: np.ndarray) -> np.ndarray:
        return batch.astype(np.float32, copy=False)
