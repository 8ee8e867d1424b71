"""A seeded, labelled product set drawn with PIL: the demo's fallback and the tests' fixture.

:class:`SyntheticProducts` draws T-shirts, trousers, shoes, bags and hats as
flat silhouettes on a white background, in many named colours and a few
patterns, with a little random jitter of position, scale, rotation and tint.
Everything is a pure function of ``(seed, index)``: the same seed gives the
same arrays on every machine, and ``dataset[i]`` never depends on ``n``.
"""

from __future__ import annotations

import csv
import logging
import math
import os
from collections.abc import Sequence
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from .base import BaseDataset

logger = logging.getLogger(__name__)

CATEGORIES: tuple[str, ...] = ("t-shirt", "trousers", "shoes", "bag", "hat")
"""The product categories, in the order items cycle through them."""

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (210, 30, 35),
    "orange": (245, 130, 20),
    "yellow": (245, 215, 30),
    "green": (40, 160, 60),
    "teal": (20, 150, 150),
    "blue": (35, 85, 215),
    "purple": (125, 50, 175),
    "pink": (245, 135, 185),
    "brown": (120, 72, 35),
    "black": (25, 25, 25),
    "grey": (135, 135, 135),
    "white": (238, 238, 232),
}
"""Named colours and their base RGB values (each item's tint is jittered slightly)."""

PATTERNS: tuple[str, ...] = ("solid", "stripes", "dots", "checks", "zigzag")
"""The fabric patterns; every pattern keeps the base colour dominant."""

_JPEG_FORMATS = {"jpg": "JPEG", "jpeg": "JPEG", "png": "PNG", "bmp": "BMP", "webp": "WEBP"}


class SyntheticProducts(BaseDataset):
    """A deterministic, labelled set of drawn product images.

    Item ``i`` has id ``"synthetic-{i:06d}"``, an RGB uint8 image of shape
    ``(size, size, 3)`` drawn when the item is requested, and metadata
    ``{"category": ..., "color": ..., "pattern": ...}``. Categories cycle
    (item ``i`` is ``categories[i % len(categories)]``) and, within each
    category, colours and patterns come in seeded shuffled rounds, so every
    label is as balanced as ``n`` allows.

    Parameters
    ----------
    n
        Number of items.
    seed
        Seed for labels and jitter; the same seed gives identical images.
    size
        Side of the square images in pixels (at least 16).
    categories, colors, patterns
        Subsets (in any order) of :data:`CATEGORIES`, :data:`COLORS` and
        :data:`PATTERNS`; ``None`` uses them all.

    Examples
    --------
    >>> ds = SyntheticProducts(10, seed=1, size=64)
    >>> item = ds[3]
    >>> item.id, item.image.shape, sorted(item.metadata)
    ('synthetic-000003', (64, 64, 3), ['category', 'color', 'pattern'])
    >>> bool((SyntheticProducts(10, seed=1, size=64)[3].image == item.image).all())
    True
    """

    def __init__(
        self,
        n: int = 1000,
        *,
        seed: int = 0,
        size: int = 128,
        categories: Sequence[str] | None = None,
        colors: Sequence[str] | None = None,
        patterns: Sequence[str] | None = None,
    ) -> None:
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise ConfigError(f"SyntheticProducts: n must be a non-negative integer, got {n!r}")
        if not isinstance(size, int) or isinstance(size, bool) or size < 16:
            raise ConfigError(f"SyntheticProducts: size must be an integer >= 16, got {size!r}")
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise ConfigError(
                f"SyntheticProducts: seed must be a non-negative integer, got {seed!r}"
            )
        self.n = n
        self.seed = seed
        self.size = size
        self.categories = _choose("categories", categories, CATEGORIES)
        self.colors = _choose("colors", colors, tuple(COLORS))
        self.patterns = _choose("patterns", patterns, PATTERNS)

    def __len__(self) -> int:
        return self.n

    def _item_id(self, index: int) -> str:
        return f"synthetic-{index:06d}"

    def _labels(self, index: int) -> tuple[str, str, str]:
        n_cat = len(self.categories)
        category = self.categories[index % n_cat]
        k = index // n_cat  # position within this category
        color = self.colors[_round_robin(self.seed, index % n_cat, 1, k, len(self.colors))]
        pattern = self.patterns[_round_robin(self.seed, index % n_cat, 2, k, len(self.patterns))]
        return category, color, pattern

    def _item_metadata(self, index: int) -> dict[str, Any]:
        category, color, pattern = self._labels(index)
        return {"category": category, "color": color, "pattern": pattern}

    def _item_image(self, index: int) -> np.ndarray:
        category, color, pattern = self._labels(index)
        rng = np.random.default_rng([self.seed, index, 0x5EED])
        return draw_product(category, color, pattern, size=self.size, rng=rng)

    def labels(self, key: str = "category") -> list[str]:
        """Return one metadata field for every item, in order, without drawing anything.

        Parameters
        ----------
        key
            ``"category"``, ``"color"`` or ``"pattern"``.
        """
        fields = {"category": 0, "color": 1, "pattern": 2}
        if key not in fields:
            raise ConfigError(f"unknown label {key!r}; choose one of {sorted(fields)}")
        return [self._labels(i)[fields[key]] for i in range(self.n)]

    def write_folder(
        self,
        root: str | os.PathLike[str],
        *,
        format: str = "jpg",
        label: str = "category",
        quality: int = 92,
    ) -> list[Path]:
        """Write every image to ``root/{label}/{id}.{format}`` and a ``metadata.csv`` beside them.

        The class-per-folder layout reads back with :class:`~visualsim.datasets.ImageFolder`
        (``label`` = the folder), and ``root/metadata.csv`` (``id,path,category,color,pattern``,
        paths relative to ``root``) with :class:`~visualsim.datasets.CsvDataset`.

        Parameters
        ----------
        root
            Directory to write into (created if needed; existing files are overwritten).
        format
            ``"jpg"`` (default), ``"png"``, ``"bmp"`` or ``"webp"``.
        label
            Which metadata field names the folders: ``"category"``, ``"color"`` or ``"pattern"``.
        quality
            JPEG/WebP quality.

        Returns
        -------
        list of Path
            The image files written, in item order.
        """
        from PIL import Image

        ext = format.lower().lstrip(".")
        if ext not in _JPEG_FORMATS:
            raise ConfigError(
                f"unsupported image format {format!r}; use one of {sorted(_JPEG_FORMATS)}"
            )
        if label not in ("category", "color", "pattern"):
            raise ConfigError(f"label must be 'category', 'color' or 'pattern', got {label!r}")
        out = Path(root).expanduser()
        out.mkdir(parents=True, exist_ok=True)
        written: list[Path] = []
        rows: list[list[str]] = []
        options: dict[str, Any] = {"quality": quality} if ext in ("jpg", "jpeg", "webp") else {}
        for index in range(self.n):
            item_id, meta = self._item_id(index), self._item_metadata(index)
            folder = out / str(meta[label])
            folder.mkdir(exist_ok=True)
            path = folder / f"{item_id}.{ext}"
            Image.fromarray(self._item_image(index)).save(path, _JPEG_FORMATS[ext], **options)
            written.append(path)
            rel = path.relative_to(out).as_posix()
            rows.append([item_id, rel, meta["category"], meta["color"], meta["pattern"]])
        with open(out / "metadata.csv", "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["id", "path", "category", "color", "pattern"])
            writer.writerows(rows)
        logger.info("wrote %d synthetic product images to %s", len(written), out)
        return written

    def _describe(self) -> str:
        parts = [f"seed={self.seed}", f"size={self.size}"]
        if self.categories != CATEGORIES:
            parts.append(f"categories={list(self.categories)}")
        if self.colors != tuple(COLORS):
            parts.append(f"colors={list(self.colors)}")
        if self.patterns != PATTERNS:
            parts.append(f"patterns={list(self.patterns)}")
        return ", ".join(parts)


def _choose(what: str, chosen: Sequence[str] | None, known: tuple[str, ...]) -> tuple[str, ...]:
    if chosen is None:
        return known
    if isinstance(chosen, str):
        chosen = [chosen]
    values = tuple(dict.fromkeys(chosen))
    unknown = [v for v in values if v not in known]
    if unknown or not values:
        raise ConfigError(
            f"SyntheticProducts: unknown {what} {unknown or '(none given)'}; "
            f"choose from {list(known)}"
        )
    return values


def _round_robin(seed: int, group: int, stream: int, k: int, m: int) -> int:
    """Return draw ``k`` of a sequence visiting 0..m-1 in a fresh shuffled order every m draws."""
    return int(_permutation(seed, group, stream, k // m, m)[k % m])


@lru_cache(maxsize=4096)
def _permutation(seed: int, group: int, stream: int, block: int, m: int) -> tuple[int, ...]:
    rng = np.random.default_rng([seed, group, stream, block])
    return tuple(int(v) for v in rng.permutation(m))


# --- drawing ---------------------------------------------------------------------------------

Shape = list[tuple[str, np.ndarray, float]]  # (kind, points in unit square, line width)


def _ellipse(cx: float, cy: float, rx: float, ry: float, start: float = 0.0, end: float = 360.0,
             steps: int = 36) -> np.ndarray:  # fmt: skip
    t = np.radians(np.linspace(start, end, steps))
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], axis=1)


def _pts(*xy: tuple[float, float]) -> np.ndarray:
    return np.asarray(xy, dtype=np.float64)


@cache
def _silhouette(category: str) -> tuple[tuple[str, np.ndarray, float], ...]:
    """Return the category's outline as polygons ('fill'), thick lines ('line') and accents."""
    parts: Shape
    if category == "t-shirt":
        parts = [
            ("fill", _pts((0.36, 0.14), (0.43, 0.14), (0.46, 0.19), (0.5, 0.21), (0.54, 0.19),
                          (0.57, 0.14), (0.64, 0.14), (0.88, 0.3), (0.79, 0.44), (0.69, 0.38),
                          (0.69, 0.87), (0.31, 0.87), (0.31, 0.38), (0.21, 0.44), (0.12, 0.3)), 0),
        ]  # fmt: skip
    elif category == "trousers":
        parts = [
            ("fill", _pts((0.31, 0.09), (0.69, 0.09), (0.75, 0.91), (0.56, 0.91), (0.5, 0.34),
                          (0.44, 0.91), (0.25, 0.91)), 0),
            ("accent", _pts((0.31, 0.09), (0.69, 0.09), (0.695, 0.15), (0.305, 0.15)), 0),
        ]  # fmt: skip
    elif category == "shoes":
        parts = [
            ("fill", _pts((0.1, 0.7), (0.1, 0.47), (0.17, 0.42), (0.3, 0.45), (0.37, 0.3),
                          (0.5, 0.28), (0.54, 0.43), (0.7, 0.5), (0.84, 0.55), (0.91, 0.6),
                          (0.93, 0.66), (0.92, 0.7)), 0),
            ("accent", _pts((0.09, 0.69), (0.93, 0.69), (0.93, 0.77), (0.09, 0.77)), 0),
        ]  # fmt: skip
    elif category == "bag":
        parts = [
            ("fill", _pts((0.2, 0.42), (0.8, 0.42), (0.87, 0.86), (0.13, 0.86)), 0),
            ("line", _ellipse(0.5, 0.42, 0.2, 0.24, 180, 360), 0.045),
            ("accent", _pts((0.45, 0.5), (0.55, 0.5), (0.55, 0.57), (0.45, 0.57)), 0),
        ]
    elif category == "hat":
        parts = [
            ("fill", _ellipse(0.5, 0.6, 0.4, 0.09), 0),
            ("fill", _pts((0.29, 0.6), (0.33, 0.3), (0.42, 0.24), (0.5, 0.27), (0.58, 0.24),
                          (0.67, 0.3), (0.71, 0.6)), 0),
            ("accent", _pts((0.3, 0.5), (0.7, 0.5), (0.705, 0.57), (0.295, 0.57)), 0),
        ]  # fmt: skip
    else:  # pragma: no cover - guarded by _choose
        raise ConfigError(f"unknown category {category!r}")
    return tuple(parts)


@lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / np.float32(size)
    return x, y


def _pattern_mask(pattern: str, size: int, rng: np.random.Generator) -> np.ndarray | None:
    """Return a boolean mask of where the pattern's second colour goes (None for solid)."""
    if pattern == "solid":
        return None
    x, y = _grid(size)
    phase = rng.uniform(0, 1)
    if pattern == "stripes":
        angle = rng.choice([0.0, math.pi / 2, math.pi / 4])
        period = rng.uniform(0.07, 0.1)
        u = (x * math.cos(angle) + y * math.sin(angle)) / period + phase
        return (u % 1.0) < 0.4
    if pattern == "dots":
        period = rng.uniform(0.08, 0.11)
        u = (x / period + phase) % 1.0 - 0.5
        v = (y / period + phase) % 1.0 - 0.5
        return (u * u + v * v) < 0.09
    if pattern == "checks":
        period = rng.uniform(0.08, 0.12)
        return ((np.floor(x / period + phase) + np.floor(y / period + phase)) % 2) == 1
    if pattern == "zigzag":
        period = rng.uniform(0.1, 0.14)
        tri = np.abs((x / period + phase) % 1.0 - 0.5)
        return ((y / period * 1.6 + tri * 1.6) % 1.0) < 0.35
    raise ConfigError(f"unknown pattern {pattern!r}")  # pragma: no cover - guarded by _choose


def draw_product(
    category: str,
    color: str,
    pattern: str,
    *,
    size: int = 128,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Return one drawn product as an RGB uint8 array of shape ``(size, size, 3)``.

    Parameters
    ----------
    category
        One of :data:`CATEGORIES`.
    color
        One of the names in :data:`COLORS`.
    pattern
        One of :data:`PATTERNS`.
    size
        Side of the square image in pixels.
    rng
        Source of the jitter (position, scale, rotation, tint, pattern phase);
        ``None`` draws the canonical, un-jittered product.
    """
    from PIL import Image, ImageChops, ImageDraw

    if color not in COLORS:
        raise ConfigError(f"unknown color {color!r}; choose from {list(COLORS)}")
    jitter = rng is not None
    if rng is None:
        rng = np.random.default_rng(0)
    scale = rng.uniform(0.82, 1.0) if jitter else 0.92
    angle = math.radians(rng.uniform(-9, 9)) if jitter else 0.0
    shift = rng.uniform(-0.05, 0.05, size=2) if jitter else np.zeros(2)
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])

    big = size * 2  # draw masks at 2x and box-downsample: cheap anti-aliasing
    body = Image.new("L", (big, big), 0)
    accent = Image.new("L", (big, big), 0)
    outline = Image.new("L", (big, big), 0)
    d_body, d_accent, d_outline = (ImageDraw.Draw(m) for m in (body, accent, outline))
    edge = max(2, big // 80)
    for kind, unit_pts, width in _silhouette(category):
        pts = ((unit_pts - 0.5) * scale) @ rot.T + 0.5 + shift
        xy = [(float(px), float(py)) for px, py in pts * big]
        if kind == "fill":
            d_body.polygon(xy, fill=255)
            d_outline.polygon(xy, outline=255, width=edge)
        elif kind == "line":
            w = max(2, int(width * big * scale))
            d_body.line(xy, fill=255, width=w, joint="curve")
            d_outline.line(xy, fill=255, width=w + 2 * edge, joint="curve")
        else:  # accents (waistband, sole, clasp) are part of the body, in a contrast colour
            d_body.polygon(xy, fill=255)
            d_outline.polygon(xy, outline=255, width=edge)
            d_accent.polygon(xy, fill=255)
    body_a = body.reduce(2)
    accent_a = accent.reduce(2)
    outline_a = outline.reduce(2)

    base = np.asarray(COLORS[color], dtype=np.float64)
    if jitter:
        base = np.clip(base + rng.uniform(-12, 12, size=3), 0, 255)
    light = float(base @ np.array([0.299, 0.587, 0.114])) > 140
    second = base + ((0.0 if light else 255.0) - base) * 0.55  # pattern: same hue, lighter/darker
    dark = base * 0.55  # the rim that keeps light items visible on white

    fill = Image.new("RGB", (size, size), _rgb(base))
    mask = _pattern_mask(pattern, size, rng)
    if mask is not None:
        pattern_mask = Image.fromarray(mask.astype(np.uint8) * 255, "L")
        fill = Image.composite(Image.new("RGB", (size, size), _rgb(second)), fill, pattern_mask)
    accent_rgb = (50, 50, 50) if light else (225, 225, 225)
    fill = Image.composite(Image.new("RGB", (size, size), accent_rgb), fill, accent_a)
    fill = Image.composite(Image.new("RGB", (size, size), _rgb(dark)), fill, outline_a)
    alpha = ImageChops.lighter(body_a, outline_a)
    out = Image.composite(fill, Image.new("RGB", (size, size), (255, 255, 255)), alpha)
    return np.asarray(out, dtype=np.uint8)


def _rgb(values: np.ndarray) -> tuple[int, int, int]:
    r, g, b = (round(float(v)) for v in values)
    return r, g, b


__all__ = ["CATEGORIES", "COLORS", "PATTERNS", "SyntheticProducts", "draw_product"]
