"""Extractors: images → L2-normalised float32 vectors.

Built-in: :class:`ColorHistogramExtractor` (numpy only), :class:`KerasExtractor`
and :class:`ResNet50Extractor` (keras.applications), :class:`SqueezeNetExtractor`
(ImageNet-pretrained, offline), :class:`ConcatExtractor` (weighted mix).
Heavy backends are imported only when used.
"""

from __future__ import annotations

import importlib
from typing import Any

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


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
