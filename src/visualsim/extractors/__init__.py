"""Extractors: images → L2-normalised float32 vectors.

Built-in: :class:`ColorHistogramExtractor` (numpy only), :class:`KerasExtractor`
and :class:`ResNet50Extractor` (keras.applications), :class:`SqueezeNetExtractor`
(ImageNet-pretrained, offline), :class:`SilhouetteExtractor` (the product's
outline), :class:`ConcatExtractor` (weighted mix); :func:`product_extractor` (the
best offline mix) and :func:`auto_extractor` (the best that runs here).
Heavy backends are imported only when used.
"""

from __future__ import annotations

from .._lazy import lazy_exports
from .base import (
    EXTRACTORS,
    BaseExtractor,
    ExtractedBatch,
    Extractor,
    extractor_from_config,
    extractor_spec,
    l2_normalize,
    make_extractor,
    register_extractor,
)

_LAZY = {
    "ColorHistogramExtractor": "color",
    "KerasExtractor": "keras",
    "ResNet50Extractor": "keras",
    "SqueezeNetExtractor": "squeezenet",
    "ConcatExtractor": "concat",
    "SilhouetteExtractor": "shape",
    "product_extractor": "auto",
    "auto_extractor": "auto",
}

__all__ = [
    "EXTRACTORS",
    "BaseExtractor",
    "ExtractedBatch",
    "Extractor",
    "extractor_from_config",
    "extractor_spec",
    "l2_normalize",
    "make_extractor",
    "register_extractor",
    *_LAZY,
]


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())
