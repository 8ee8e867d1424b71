"""Adapt frozen vectors to a catalogue: a projection learned with a metric-learning loss.

Off-the-shelf features know ImageNet, not your shop. :class:`ProjectionAdapter`
learns a small MLP (or a linear map) on the catalogue's own stored vectors so
that items sharing a label (a category, or a product-group field holding
several photos of one product) come together, with the Proxy-Anchor loss (Kim
et al., CVPR 2020: one learned proxy per label; every item is pulled to its
label's proxy and pushed from the others, weighted towards the hard ones). The
extractor stays frozen, so training is seconds to minutes on a CPU, and
:meth:`ProjectionAdapter.transform` is plain numpy: queries and new arrivals
go through it without TensorFlow.

Several label fields can be learned at once (``{"articleType": ...,
"baseColour": ...}``): each on its own segment of the learned vector, with its
own proxies, so a projection taught the product type does not throw away the
colour; the learned similarity is the segments' cosines, weighted.

The learned similarity can be blended with the original one,
``cos = mix * cos_adapted + (1 - mix) * cos_original``, by concatenating the
two unit vectors scaled by ``sqrt(mix)`` and ``sqrt(1 - mix)``. With
``mix=None`` (the default) a guard picks ``mix`` (and the fields' weights) on
validation splits of its own training data that hold out whole labels *and*
new items of the kept labels (``validation="both"``): every candidate is
scored on both parts and on every label field, and the best one that loses on
no part and no field beyond noise, and wins beyond it, is kept; where
adaptation does not help, that is ``mix=0``, the original vectors.

:func:`adapt_recommender` does all of it for a fitted recommender and reports
before/after metrics, per label field and on seen and unseen labels, on a
held-out split it never trained on (:func:`combined_split`, built from
:func:`visualsim.evaluation.holdout_split`).

One module per concern: :mod:`~visualsim.adaptation.learner` (the projection),
:mod:`~visualsim.adaptation.guard` (the validation splits and the choice of ``mix``),
:mod:`~visualsim.adaptation.report` and :mod:`~visualsim.adaptation.adapt` (a
recommender, adapted); every name is importable from here.

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> centres = rng.normal(size=(4, 16))
>>> labels = np.repeat(np.arange(4), 50)
>>> x = centres[labels] + rng.normal(scale=2.0, size=(200, 16))
>>> adapter = ProjectionAdapter(dim=8, hidden=0, epochs=5, mix=1.0).fit(x, labels)
>>> adapter.transform(x[:3]).shape
(3, 8)
"""

from __future__ import annotations

from .adapt import Adaptable, adapt_recommender
from .guard import (
    ADAPT_HOLDOUTS,
    DEFAULT_FIRST_WEIGHT,
    FIRST_WEIGHT_GRID,
    MAX_VALIDATION_ITEMS,
    MIN_GAIN,
    MIN_PART_QUERIES,
    MIX_GRID,
    NOISE_SE,
    combined_split,
)
from .learner import COMBINES, FORMAT_TAG, FORMAT_VERSION, ProjectionAdapter
from .report import AdaptationReport

__all__ = [
    "ADAPT_HOLDOUTS",
    "COMBINES",
    "DEFAULT_FIRST_WEIGHT",
    "FIRST_WEIGHT_GRID",
    "FORMAT_TAG",
    "FORMAT_VERSION",
    "MAX_VALIDATION_ITEMS",
    "MIN_GAIN",
    "MIN_PART_QUERIES",
    "MIX_GRID",
    "NOISE_SE",
    "Adaptable",
    "AdaptationReport",
    "ProjectionAdapter",
    "adapt_recommender",
    "combined_split",
]
