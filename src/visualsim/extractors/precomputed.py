"""No model: a catalogue of vectors computed elsewhere (your own model's embeddings).

:meth:`visualsim.Recommender.from_vectors` builds a catalogue on it. It is saved
and loaded like any other (its config is the vectors' length and, if given, a
note saying where they came from) and queried with
:meth:`~visualsim.Recommender.query_vector`; asking it to turn an image into a
vector is a clear :class:`~visualsim.errors.ConfigError`, not a silent download
of some default model.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

import numpy as np

from ..errors import ConfigError
from ..validation import check_positive_int
from .base import register_extractor

MAX_DIM = 1 << 16
"""Longest vector accepted (65,536 numbers)."""
MAX_SOURCE = 200
"""Longest ``source`` note accepted, in characters."""


@register_extractor("precomputed")
class PrecomputedVectors:
    """The extractor of a catalogue whose vectors you bring: it has a length, no model.

    Parameters
    ----------
    dim
        Length of every vector, 1 to :data:`MAX_DIM`.
    source
        Optional note of where the vectors come from (``"clip-vit-b32, ours"``),
        saved with the catalogue and shown in error messages.

    Examples
    --------
    >>> ext = PrecomputedVectors(3, source="my model")
    >>> ext.dim, ext.get_config()
    (3, {'dim': 3, 'source': 'my model'})
    """

    name: ClassVar[str] = "precomputed"

    def __init__(self, dim: int, *, source: str | None = None) -> None:
        self._dim = check_positive_int("dim", dim, maximum=MAX_DIM)
        if source is not None and (not isinstance(source, str) or len(source) > MAX_SOURCE):
            raise ConfigError(
                f"source must be a text of at most {MAX_SOURCE} characters, got {source!r:.80}"
            )
        self.source = source

    @property
    def dim(self) -> int:
        """Length of every vector."""
        return self._dim

    def _refuse(self) -> ConfigError:
        origin = f" ({self.source})" if self.source else ""
        return ConfigError(
            f"this catalogue holds {self._dim}-d vectors computed elsewhere{origin} and has "
            "no model to turn an image into one: query with query_vector(vector), add with "
            "add_vectors(vectors, ids)"
        )

    def extract(
        self, images: Iterable[Any], *, batch_size: int | None = None, progress: bool = False
    ) -> np.ndarray:
        """Refuse: there is no model (``ConfigError`` saying what to call instead)."""
        raise self._refuse()

    def iter_batches(self, items: Iterable[Any], *args: Any, **kwargs: Any) -> Any:
        """Refuse: there is no model (``ConfigError`` saying what to call instead)."""
        raise self._refuse()

    def get_config(self) -> dict[str, Any]:
        """Return the constructor arguments as JSON-safe values."""
        return {"dim": self._dim, "source": self.source}


__all__ = ["MAX_DIM", "PrecomputedVectors"]
