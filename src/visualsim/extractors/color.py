"""Colour: a joint HSV histogram and a coarse colour layout, numpy and Pillow only."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image

from ..errors import ConfigError
from ..images import resize_image
from ..validation import check_float, check_int
from .base import BaseExtractor, register_extractor

MAX_SIZE = 4096
"""Largest ``size`` accepted: beyond it a histogram costs memory and time for nothing."""
DEFAULT_GREY_BINS = 6
"""Lightness levels for achromatic pixels (black ... white) in a default extractor."""
GREY_SATURATION = 48
"""Pixels with HSV saturation below this (0-255) are achromatic: binned by lightness, not hue."""
GREY_VALUE = 48
"""Pixels darker than this (HSV value, 0-255) are achromatic too: their hue is noise."""
DEFAULT_LAYOUT = 8
"""Side of the grid of the colour layout in a default extractor (8 x 8 cells)."""
DEFAULT_LAYOUT_WEIGHT = 0.25
"""Share of the squared norm (so of a cosine) given to the layout in a default extractor."""
MAX_LAYOUT = 64
"""Largest ``layout`` grid side accepted (``3 * 64**2 + 1`` layout components)."""
LAYOUT_FLAT = 0.02
"""The layout's constant component: two flat (featureless) images compare equal by it,
and it is negligible next to any real structure."""
DUPLICATE_THRESHOLD = 0.97
"""The cosine from which two default colour vectors were taken for the same image in 0.1
(precision 0.96 at recall 0.70 on generated re-uploads, ``docs/quality.md``). On real photos
no threshold on similarity vectors works (two different black wallets score 0.998):
``find_duplicates`` and ``add(duplicates=...)`` now use the copy detector,
:mod:`visualsim.duplicates`. Kept for code that compares colour vectors itself."""
HISTOGRAM_DUPLICATE_THRESHOLD = 0.999
"""The threshold for a histogram-only extractor (``layout=0``); its precision is low
(0.41 in ``docs/quality.md``): it suits exact re-uploads only."""
CENTRE_MAX = 10.0
"""Largest ``centre`` accepted (a spread of ten image sides weighs every pixel alike)."""
_LEGACY_KEYS = frozenset({"bins", "size", "ignore_background", "sqrt"})


@register_extractor("color")
class ColorHistogramExtractor(BaseExtractor):
    """Describe an image by the distribution of its colours, and where they lie.

    Two parts, each a unit vector, weighted so that a cosine between two images
    is ``(1 - layout_weight) * histogram cosine + layout_weight * layout cosine``:

    - A joint histogram over hue, saturation and value (``bins`` cells per
      channel) of the image's coloured pixels, followed by ``grey_bins``
      lightness levels for its achromatic ones (saturation below
      :data:`GREY_SATURATION`, or darker than :data:`GREY_VALUE`), whose hue is
      noise: so black, grey and white products land in different cells instead
      of being spread over meaningless hues.
    - A colour layout: the image averaged over a ``layout x layout`` grid, in
      an opponent colour space (lightness, red-green, yellow-blue), each channel
      minus its mean. Two products of the same colours in different shapes or
      arrangements differ here, a re-upload of the same photo does not: it is
      what makes the duplicate check (:data:`DUPLICATE_THRESHOLD`) precise, and
      it brings in the coarse shape that a histogram ignores.

    Both are computed on a small copy of the image. ``layout=0`` is the pure
    histogram: colour and nothing else, the choice when
    "same colour, any shape" is the point; mix either with a CNN in a
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
        ``0`` is the layout of visualsim 0.1 (every pixel binned by hue), which a
        catalogue saved then keeps.
    layout
        Side of the layout grid, 0 to :data:`MAX_LAYOUT`; ``0`` leaves the
        layout out. It adds ``3 * layout**2 + 1`` components (the last a small
        constant, so that two flat images compare equal).
    layout_weight
        The layout's share of a cosine, in ``[0, 1)`` (ignored when ``layout``
        is 0). ``0.25`` keeps colour the main thing compared.
    soft_bins
        Split each pixel's weight between the 8 nearest hue x saturation x
        value cells (linear in each, hue wrapping round) instead of counting it
        in one: a colour on a cell boundary, or moved a little by JPEG
        re-encoding, no longer flips cells. It lifts the recall of duplicate
        checks at :data:`DUPLICATE_THRESHOLD` from 0.70 to 0.94
        (``docs/quality.md``). ``False`` is the hard binning of earlier releases,
        which catalogues saved by them keep.
    grey_saturation, grey_value
        Below these HSV saturation and value levels (0-255) a pixel is
        achromatic and binned by lightness; default :data:`GREY_SATURATION`
        and :data:`GREY_VALUE`. The product mix
        (:func:`~visualsim.extractors.auto.product_extractor`) uses 32 and 40,
        measured on real catalogue photos (``docs/quality.md``): dark navy and
        muted colours keep their hue.
    centre
        Weigh each pixel by a Gaussian around the image centre, of this spread
        (a fraction of the side), so the product — centred in a catalogue
        photo — counts more than what lies at the edges (a model's head and
        shoes, props). ``None`` (default) weighs every pixel alike; the
        product mix uses ``0.25``.
    size
        Side of the square the image is shrunk to first, 4 to :data:`MAX_SIZE`;
        histograms barely change past a few hundred pixels, and time grows
        with ``size²``.
    ignore_background
        Leave out near-white, unsaturated pixels (the studio background of
        product shots) from the histogram, so the product's own colour
        dominates. When fewer than 2% of pixels remain (a white product) the
        whole image is used. The layout always sees the whole image.
    sqrt
        Take the square root of the normalised histogram (Hellinger kernel), so
        cosine similarity becomes the Bhattacharyya coefficient, which compares
        distributions better than raw counts.
    batch_size, num_workers, crop
        See :class:`~visualsim.extractors.base.BaseExtractor`.

    Notes
    -----
    ``dim`` is ``bins[0] * bins[1] * bins[2] + grey_bins``, plus
    ``3 * layout**2 + 1`` with a layout: 455 by default.

    Duplicate photos are found by :mod:`visualsim.duplicates`, not by a threshold on
    these vectors (``docs/duplicates.md``); :data:`DUPLICATE_THRESHOLD` is the 0.1
    threshold, kept for comparisons.

    A config saved before ``layout`` existed (it has ``grey_bins`` but no
    ``layout``) rebuilds ``layout=0``, and one saved before ``grey_bins``
    existed rebuilds ``grey_bins=0`` too, so a saved catalogue's stored vectors
    and its new queries stay comparable.

    Examples
    --------
    >>> import numpy as np
    >>> ext = ColorHistogramExtractor(bins=(8, 3, 3), layout=0)
    >>> red = np.zeros((32, 32, 3), np.uint8); red[..., 0] = 220
    >>> ext.extract([red]).shape
    (1, 78)
    >>> ColorHistogramExtractor().dim
    455
    """

    default_batch_size = 256

    def __init__(
        self,
        *,
        bins: Sequence[int] = (16, 4, 4),
        grey_bins: int = DEFAULT_GREY_BINS,
        layout: int = DEFAULT_LAYOUT,
        layout_weight: float = DEFAULT_LAYOUT_WEIGHT,
        soft_bins: bool = True,
        grey_saturation: int = GREY_SATURATION,
        grey_value: int = GREY_VALUE,
        centre: float | None = None,
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
            grid = _as_int(layout)
        except (TypeError, ValueError):
            raise ConfigError(
                "grey_bins, layout and size must be integers, got "
                f"grey_bins={grey_bins!r}, layout={layout!r}, size={size!r}"
            ) from None
        grey_s = check_int("grey_saturation", grey_saturation, minimum=0, maximum=255)
        grey_v = check_int("grey_value", grey_value, minimum=0, maximum=255)
        self.centre = _as_centre(centre)
        grey = check_int("grey_bins", grey, minimum=0, maximum=256)
        if not 4 <= side <= MAX_SIZE:
            raise ConfigError(
                f"size must be an integer from 4 to {MAX_SIZE} pixels, got {size!r}; histograms "
                "barely change past a few hundred pixels (the default is 96)"
            )
        if not 0 <= grid <= min(MAX_LAYOUT, side):
            raise ConfigError(
                f"layout must be an integer from 0 to {min(MAX_LAYOUT, side)} (grid cells per "
                f"side, at most size={side}), got {layout!r}"
            )
        weight = _as_weight(layout_weight)
        self.bins: tuple[int, int, int] = (parsed[0], parsed[1], parsed[2])
        self.grey_bins = grey
        self.layout = grid
        self.layout_weight = weight
        self.soft_bins = bool(soft_bins)
        self.grey_saturation = grey_s
        self.grey_value = grey_v
        self.size = side
        # every histogram is taken on a size x size copy: one weight map serves them all
        self._weights = None if self.centre is None else _centre_weights((side, side), self.centre)
        self.ignore_background = bool(ignore_background)
        self.sqrt = bool(sqrt)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ColorHistogramExtractor:
        """Rebuild from :meth:`get_config` output.

        A complete config written before ``layout`` existed (it has ``bins``,
        ``size``, ``ignore_background`` and ``sqrt`` but no ``layout``) rebuilds
        ``layout=0``, and one written before ``grey_bins`` existed rebuilds
        ``grey_bins=0`` too, so a saved catalogue's stored vectors and its new
        queries stay comparable.
        """
        config = dict(config)
        if config.keys() >= _LEGACY_KEYS:
            config.setdefault("grey_bins", 0)
        if config.keys() >= _LEGACY_KEYS | {"grey_bins"}:
            config.setdefault("layout", 0)
            config.setdefault("soft_bins", False)
        return cls(**config)

    @property
    def dim(self) -> int:
        """Histogram cells + grey levels (+ ``3 * layout**2 + 1`` with a layout)."""
        return self._n_histogram + (3 * self.layout**2 + 1 if self.layout else 0)

    @property
    def _n_histogram(self) -> int:
        return self.bins[0] * self.bins[1] * self.bins[2] + self.grey_bins

    def get_config(self) -> dict[str, Any]:
        """Return the constructor arguments as JSON-safe values."""
        return {
            "bins": list(self.bins),
            "grey_bins": self.grey_bins,
            "layout": self.layout,
            "layout_weight": self.layout_weight,
            "soft_bins": self.soft_bins,
            "grey_saturation": self.grey_saturation,
            "grey_value": self.grey_value,
            "centre": self.centre,
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
        hist = self._histogram(small)
        if not self.layout:
            return hist
        norm = float(np.linalg.norm(hist))
        if norm > 0:
            hist = hist / norm
        layout = _colour_layout(small, self.layout)
        w = self.layout_weight
        return np.concatenate(
            [hist * np.float32(np.sqrt(1.0 - w)), layout * np.float32(np.sqrt(w))]
        )

    def _histogram(self, small: np.ndarray) -> np.ndarray:
        hsv = np.asarray(Image.fromarray(small).convert("HSV"), dtype=np.uint16)
        h, s, v = hsv[..., 0].ravel(), hsv[..., 1].ravel(), hsv[..., 2].ravel()
        weight = self._weights
        if self.ignore_background:
            product = ~((s < 26) & (v > 235))
            if product.mean() >= 0.02:
                h, s, v = h[product], s[product], v[product]
                weight = None if weight is None else weight[product]
        hb, sb, vb = self.bins
        n_colour = hb * sb * vb
        if self.grey_bins == 0:
            if self.soft_bins:
                hist = _soft_cells(h, s, v, self.bins, 0, weight)
            else:
                cells = (h * hb >> 8) * (sb * vb) + (s * sb >> 8) * vb + (v * vb >> 8)
                hist = np.bincount(cells, weight, minlength=n_colour).astype(np.float32)
        else:
            s_floor = self.grey_saturation
            grey = (s < s_floor) | (v < self.grey_value)
            colour = ~grey
            hc, sc, vc = h[colour], s[colour], v[colour]
            wc = None if weight is None else weight[colour]
            wg = None if weight is None else weight[grey]
            if self.soft_bins:
                hist = _soft_cells(hc, sc, vc, self.bins, s_floor, wc)
            else:
                sat = (sc - s_floor) * sb // (256 - s_floor)
                cells = (hc * hb >> 8) * (sb * vb) + sat * vb + (vc * vb >> 8)
                hist = np.bincount(cells, wc, minlength=n_colour).astype(np.float32)
            hist = np.concatenate([hist, _soft_levels(v[grey], self.grey_bins, wg)])
        hist /= max(float(hist.sum()), 1e-12 if weight is not None else 1.0)
        return np.sqrt(hist) if self.sqrt else hist

    def _embed(self, batch: np.ndarray) -> np.ndarray:
        return batch.astype(np.float32, copy=False)


def _colour_layout(small: np.ndarray, grid: int) -> np.ndarray:
    """``small`` averaged over ``grid x grid`` cells in an opponent colour space, each
    channel minus its mean, plus :data:`LAYOUT_FLAT`, as a unit vector.

    Cells are exact area averages (``np.add.reduceat`` over the cell bounds), so
    a photo and its resized re-upload land on the same values.
    """
    rgb = small.astype(np.float32) * np.float32(1.0 / 255.0)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    opponent = np.stack([(r + g + b) / 3.0, r - g, (r + g) / 2.0 - b], axis=-1)
    rows = np.linspace(0, small.shape[0], grid + 1).astype(np.intp)[:-1]
    cols = np.linspace(0, small.shape[1], grid + 1).astype(np.intp)[:-1]
    sums = np.add.reduceat(np.add.reduceat(opponent, rows, axis=0), cols, axis=1)
    counts = np.outer(
        np.diff(np.append(rows, small.shape[0])), np.diff(np.append(cols, small.shape[1]))
    )
    cells = sums / counts[..., None].astype(np.float32)
    cells -= cells.mean(axis=(0, 1), keepdims=True)
    vector = np.append(cells.ravel(), np.float32(LAYOUT_FLAT)).astype(np.float32)
    return vector / np.float32(np.linalg.norm(vector))


def _as_centre(value: Any) -> float | None:
    return check_float(
        "centre", value, minimum=0.0, maximum=CENTRE_MAX, open_minimum=True, allow_none=True
    )


def _centre_weights(shape: tuple[int, ...], spread: float) -> np.ndarray:
    """Per-pixel weights (raveled, float64) of a Gaussian around the centre of ``shape``.

    ``spread`` is the standard deviation as a fraction of each side.
    """
    h, w = shape[0], shape[1]
    ys = ((np.arange(h) + 0.5) / h - 0.5) / spread
    xs = ((np.arange(w) + 0.5) / w - 0.5) / spread
    return np.exp(-0.5 * (ys[:, None] ** 2 + xs[None, :] ** 2)).ravel()


def _as_weight(value: Any) -> float:
    return check_float("layout_weight", value, minimum=0.0, maximum=1.0, open_maximum=True)


def _as_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer, float, str)):
        raise TypeError(value)
    number = int(value)
    if isinstance(value, float) and number != value:
        raise ValueError(value)
    return number


def _linear_split(
    pos: np.ndarray, n: int, *, wrap: bool = False
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """The two cells each fractional position ``pos`` (cell-centre units) falls between,
    and their weights: ``((low, high), (1 - frac, frac))``.

    ``wrap`` makes cell ``n - 1`` neighbour cell 0 (hue); otherwise positions are
    clamped to ``[0, n - 1]``, so the end cells take all of a pixel beyond them.
    """
    if not wrap:
        pos = np.clip(pos, 0.0, n - 1.0)
    lo = np.floor(pos).astype(np.intp)
    frac = pos - lo  # float64 weights (the grey levels' since they exist: saved vectors)
    if wrap:
        return (lo % n, (lo + 1) % n), (1.0 - frac, frac)
    return (lo, np.minimum(lo + 1, n - 1)), (1.0 - frac, frac)


def _soft_cells(
    h: np.ndarray,
    s: np.ndarray,
    v: np.ndarray,
    bins: tuple[int, int, int],
    s_floor: int,
    weight: np.ndarray | None = None,
) -> np.ndarray:
    """Joint HSV histogram with each pixel split over its 8 nearest cell centres.

    Hue (0-255) wraps round; saturation runs from ``s_floor`` to 255 and value
    from 0 to 255, each clamped at its end cells. Returns ``float32`` counts of
    length ``bins[0] * bins[1] * bins[2]`` that sum to the number of pixels.
    """
    hb, sb, vb = bins
    n = hb * sb * vb
    if h.size == 0:
        return np.zeros(n, dtype=np.float32)
    hi, wh = _linear_split((h.astype(np.float32) + 0.5) * (hb / 256.0) - 0.5, hb, wrap=True)
    si, ws = _linear_split(
        (s.astype(np.float32) - s_floor + 0.5) * (sb / (256.0 - s_floor)) - 0.5, sb
    )
    vi, wv = _linear_split((v.astype(np.float32) + 0.5) * (vb / 256.0) - 0.5, vb)
    hist = np.zeros(n, dtype=np.float64)
    for a in (0, 1):
        for b in (0, 1):
            base = hi[a] * (sb * vb) + si[b] * vb
            wab = wh[a] * ws[b]
            if weight is not None:
                wab = wab * weight
            for c in (0, 1):
                hist += np.bincount(base + vi[c], weights=wab * wv[c], minlength=n)
    return hist.astype(np.float32)


def _soft_levels(values: np.ndarray, n: int, weight: np.ndarray | None = None) -> np.ndarray:
    """Histogram of lightness ``values`` (0-255) over ``n`` levels, linearly interpolated.

    Each pixel splits its weight between the two nearest level centres, so a
    shade on a level boundary (black at 30 vs 34) does not flip between cells.
    ``weight`` (one per value) scales each pixel's share.
    """
    if values.size == 0:
        return np.zeros(n, dtype=np.float32)
    (low, high), (w_low, w_high) = _linear_split(
        (values.astype(np.float32) + 0.5) * (n / 256.0) - 0.5, n
    )
    if weight is not None:
        w_low, w_high = w_low * weight, w_high * weight
    hist = np.bincount(low, weights=w_low, minlength=n)
    hist += np.bincount(high, weights=w_high, minlength=n)
    return hist.astype(np.float32)
