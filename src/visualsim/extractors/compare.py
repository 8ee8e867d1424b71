"""Does an extractor make the same vectors as the one a catalogue was built with?

The rule lives in :mod:`visualsim.extractors.spec` (:func:`~visualsim.extractors.spec.same_vectors`,
:func:`~visualsim.extractors.spec.vector_differences`); this module keeps the names
``Recommender.load`` has always imported from here.
"""

from __future__ import annotations

from .spec import (
    NOT_VECTOR_SETTINGS,
    ExtractorMismatchWarning,
    check_extractor_config,
    compare_extractor_configs,
)

__all__ = [
    "NOT_VECTOR_SETTINGS",
    "ExtractorMismatchWarning",
    "check_extractor_config",
    "compare_extractor_configs",
]
