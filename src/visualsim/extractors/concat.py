"""Weighted concatenation of extractors: tune "same colour" against "same shape"."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np

from ..errors import ConfigError
from .base import (
    BaseExtractor,
    ExtractedBatch,
    OnError,
    extractor_from_config,
    extractor_spec,
    l2_normalize,
    register_extractor,
)

T = TypeVar("T")


@register_extractor("concat")
class ConcatExtractor(BaseExtractor):
    """Concatenate several extractors' unit vectors, weighted, into one unit vector.

    Part ``i``'s unit vector ``u_i`` is scaled by ``sqrt(w_i / W)`` (``W`` the
    sum of the weights) and the scaled parts are concatenated. The result has
    unit length, and for two images ``a`` and ``b``::

        cos(concat(a), concat(b)) = sum_i (w_i / W) * cos(u_i(a), u_i(b))

    so the similarity the index ranks by is exactly the weighted average of the
    parts' similarities: ``weights=(3, 1)`` on (colour, CNN) means "colour counts
    three times as much as shape". Only the ratios of the weights matter.

    Each image is decoded once, at the largest size any part asks for, and each
    part's own preparation (resize, histogram, ...) then runs on that one array.
    The parts' own ``batch_size`` and ``num_workers`` are not used; this
    extractor's are.

    Parameters
    ----------
    extractors
        The parts, in order: :class:`~visualsim.extractors.base.BaseExtractor`
        instances, or ``{"name": ..., "config": {...}}`` specs (as
        :func:`~visualsim.extractors.base.extractor_spec` writes them).
    weights
        One non-negative weight per part, not all zero; default all equal. A
        zero weight keeps the part's dimensions but makes them all zero.
    batch_size
        Images per batch; default the smallest default among the parts.
    num_workers
        Decoding threads; see :class:`~visualsim.extractors.base.BaseExtractor`.
    crop
        ``"auto"`` crops each image once, before every part; a part's own
        ``crop="auto"`` crops that part's input too (see
        :class:`~visualsim.extractors.base.BaseExtractor`).

    Raises
    ------
    ConfigError
        No parts, a part that is not a ``BaseExtractor``, or weights of the wrong
        length, negative, non-finite or summing to zero.

    Examples
    --------
    >>> import numpy as np
    >>> from visualsim.extractors.color import ColorHistogramExtractor
    >>> fine = ColorHistogramExtractor(bins=(8, 2, 2), layout=0)
    >>> coarse = ColorHistogramExtractor(bins=(2, 2, 2), layout=0)
    >>> both = ConcatExtractor([fine, coarse], weights=[3, 1])
    >>> red = np.zeros((32, 32, 3), np.uint8); red[..., 0] = 220
    >>> v = both.extract([red])
    >>> v.shape, round(float(np.linalg.norm(v)), 5)
    ((1, 52), 1.0)
    """

    def __init__(
        self,
        extractors: Sequence[BaseExtractor | Mapping[str, Any]],
        weights: Sequence[float] | None = None,
        *,
        batch_size: int | None = None,
        num_workers: int | None = None,
        crop: str | None = None,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, crop=crop)
        if isinstance(extractors, (BaseExtractor, Mapping, str)) or not isinstance(
            extractors, Sequence
        ):
            raise ConfigError(
                f"extractors must be a list of extractors, got {type(extractors).__name__}"
            )
        parts = [extractor_from_config(e) if isinstance(e, Mapping) else e for e in extractors]
        if not parts:
            raise ConfigError("ConcatExtractor needs at least one extractor")
        for i, part in enumerate(parts):
            if not isinstance(part, BaseExtractor):
                raise ConfigError(
                    f"extractors[{i}] is a {type(part).__name__}; ConcatExtractor combines "
                    "BaseExtractor subclasses (it runs their _prepare and _embed steps)"
                )
        self.extractors: list[BaseExtractor] = parts
        self.weights: list[float] = _check_weights(weights, len(parts))
        total = math.fsum(self.weights)
        self._scales = [math.sqrt(w / total) for w in self.weights]

    @property
    def dim(self) -> int:
        """Sum of the parts' dimensions."""
        return sum(part.dim for part in self.extractors)

    def get_config(self) -> dict[str, Any]:
        """Return the parts as registry specs, the weights and the batching settings."""
        return {
            "extractors": [extractor_spec(part) for part in self.extractors],
            "weights": list(self.weights),
            "batch_size": self.batch_size,
            "num_workers": self.num_workers,
            "crop": self.crop,
        }

    def iter_batches(
        self,
        items: Iterable[T],
        *,
        batch_size: int | None = None,
        image_of: Callable[[T], Any] | None = None,
        on_error: OnError = "raise",
        progress: bool = False,
        total: int | None = None,
    ) -> Iterator[ExtractedBatch[T]]:
        """Yield vectors batch by batch; see :meth:`BaseExtractor.iter_batches`.

        The default batch size is this extractor's ``batch_size``, else the
        smallest default batch size among the parts (the most memory-hungry
        part sets the pace).
        """
        size = (
            batch_size
            or self.batch_size
            or min(p.batch_size or p.default_batch_size for p in self.extractors)
        )
        return super().iter_batches(
            items,
            batch_size=size,
            image_of=image_of,
            on_error=on_error,
            progress=progress,
            total=total,
        )

    def _draft_size(self) -> tuple[int, int] | None:
        """The largest decode size any part needs (``None`` if one needs full size)."""
        sizes = [part._draft_size() for part in self.extractors]
        if any(s is None for s in sizes):
            return None
        return (max(s[0] for s in sizes if s), max(s[1] for s in sizes if s))

    def _prepare(self, image: np.ndarray) -> np.ndarray:
        """Return a 1-D object array holding each part's prepared input."""
        prepared = np.empty(len(self.extractors), dtype=object)
        for i, part in enumerate(self.extractors):
            prepared[i] = part._preprocess(image)
        return prepared

    def _embed(self, batch: np.ndarray) -> np.ndarray:
        """Embed each part's column, normalise it, weight it and concatenate."""
        blocks = []
        for i, (part, scale) in enumerate(zip(self.extractors, self._scales, strict=True)):
            inputs = np.stack(list(batch[:, i]))
            blocks.append(l2_normalize(part._embed(inputs)) * np.float32(scale))
        return np.concatenate(blocks, axis=1)


def _check_weights(weights: Sequence[float] | None, n: int) -> list[float]:
    if weights is None:
        return [1.0] * n
    if isinstance(weights, (str, bytes)) or not isinstance(weights, (Sequence, np.ndarray)):
        raise ConfigError(f"weights must be a list of {n} numbers, got {weights!r}")
    try:
        values = [float(w) for w in weights]
    except (TypeError, ValueError):
        raise ConfigError(f"weights must be numbers, got {list(weights)!r}") from None
    if len(values) != n:
        raise ConfigError(f"weights has {len(values)} entries for {n} extractors; give one each")
    if any(not math.isfinite(w) or w < 0 for w in values):
        raise ConfigError(f"weights must be finite and >= 0, got {values!r}")
    if math.fsum(values) <= 0:
        raise ConfigError(f"weights must not all be zero, got {values!r}")
    return values


__all__ = ["ConcatExtractor"]
