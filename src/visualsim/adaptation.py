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

import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from numpy.typing import ArrayLike

from . import persistence as P
from .errors import CatalogError, ConfigError, InvalidVectorsError, NotFittedError
from .evaluation import (
    HOLDOUT_MODES,
    EvaluationReport,
    HoldoutSplit,
    _encode_labels,
    _exact_neighbours,
    _is_missing,
    evaluate_embeddings,
    evaluate_holdout,
    holdout_split,
    precision_at_k,
)
from .validation import check_bool, check_choice, check_int

logger = logging.getLogger(__name__)

FORMAT_TAG = "visualsim-adapter"
FORMAT_VERSION = 2
"""Version 2 adds the label fields and their segment weights; version-1 adapters still load."""
ADAPT_HOLDOUTS: tuple[str, ...] = ("both", *HOLDOUT_MODES)
"""How a split holds out: ``"both"`` (whole labels, and new items of the kept labels),
``"items"`` or ``"labels"`` (see :func:`~visualsim.evaluation.holdout_split`)."""
COMBINES: tuple[str, ...] = ("split", "sum", "joint")
"""How several label fields are learned: each on its own segment of the learned vector
(``"split"``), all on one vector with the losses summed (``"sum"``), or one proxy per
combination of values (``"joint"``)."""
FIRST_WEIGHT_GRID: tuple[float, ...] = (1.0, 0.8, 0.65, 0.5)
"""With ``combine="split"`` and ``mix=None``: the first field's shares of the learned
similarity tried on the validation split (the other fields share the rest equally)."""
DEFAULT_FIRST_WEIGHT = 0.65
"""The first field's share when ``mix`` is fixed and ``weights`` is not given."""
MIX_GRID: tuple[float, ...] = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)
"""The ``mix`` values tried on the validation split when ``mix=None``."""
MIN_GAIN = 0.005
"""With ``mix=None`` the projection is used only if it beats the original vectors on the
validation split by at least this much mean Precision@10 (and by more than noise,
:data:`NOISE_SE`); it is also the least loss on one part or field that counts as a loss."""
NOISE_SE = 1.0
"""Noise, in standard errors of the per-query difference from the original vectors: a
candidate is refused when on some part (seen or unseen labels) and field its mean
Precision@10 is below the original vectors' by more than this (and than :data:`MIN_GAIN`),
or when its mean over parts and fields is not above theirs by as much."""
MIN_PART_QUERIES = 5
"""A part (seen or unseen labels) of a field with fewer scorable queries is not judged."""
MAX_VALIDATION_ITEMS = 10_000
"""At most this many validation items are scored per ``mix`` tried (exact kNN)."""
_ARRAYS_MLP = ("mean", "w1", "b1", "w2", "b2")
_ARRAYS_LINEAR = ("mean", "w", "b")
_DEFAULT_FIELD = "label"


def _check_float(name: str, value: Any, lo: float, hi: float, *, open_lo: bool = False) -> float:
    bad = isinstance(value, bool) or not isinstance(value, (int, float, np.floating))
    if not bad:
        v = float(value)
        bad = not math.isfinite(v) or v > hi or v < lo or (open_lo and v == lo)
    if bad:
        side = "(" if open_lo else "["
        raise ConfigError(f"{name} must be a number in {side}{lo}, {hi}], got {value!r}")
    return float(value)


def combined_split(
    labels: Sequence[Any] | np.ndarray,
    *,
    test_size: float = 0.2,
    label_size: float | None = None,
    groups: Sequence[Any] | np.ndarray | None = None,
    seed: int = 0,
) -> HoldoutSplit:
    """Hold out whole labels *and* new items of the kept labels, seeded.

    A ``label_size`` share of the distinct labels goes to ``test`` with all
    their items (labels never seen in training), then a ``test_size`` share of
    the items of every kept label (new products of known labels); both are
    :func:`~visualsim.evaluation.holdout_split` draws. With fewer than four
    labels of two or more items, holding a label out would leave too little to
    learn from, and only items are held out (``by="items"``).

    Parameters
    ----------
    labels
        One label per row (``None``/NaN: unlabelled, in neither part).
    test_size
        Share of the kept labels' items held out, in ``(0, 1)``.
    label_size
        Share of the labels held out whole, in ``(0, 1)``; default ``test_size``.
    groups
        Optional product ids: a product's photos stay on one side of the items
        draw.
    seed
        Seed of both draws.

    Returns
    -------
    HoldoutSplit
        ``by="both"``; ``test_labels`` are the labels held out whole. A test
        row's label is unseen exactly when it is in ``test_labels``.

    Raises
    ------
    ConfigError
        A bad ``test_size`` or ``label_size``, or ``groups`` of another length.

    Examples
    --------
    >>> labels = [c for c in "abcdefgh" for _ in range(10)]
    >>> split = combined_split(labels, test_size=0.25, seed=0)
    >>> split.by, len(split.test_labels), split.train.size + split.test.size
    ('both', 2, 80)
    """
    values = list(labels)
    codes, _ = _encode_labels(values, len(values))
    counts = np.bincount(codes[codes >= 0]) if (codes >= 0).any() else np.zeros(0, np.int64)
    if int((counts >= 2).sum()) < 4:
        return holdout_split(values, by="items", test_size=test_size, groups=groups, seed=seed)
    share = test_size if label_size is None else label_size
    whole = holdout_split(values, by="labels", test_size=share, seed=seed)
    in_whole = np.zeros(len(values), dtype=bool)
    in_whole[whole.test] = True
    kept = [None if in_whole[i] else v for i, v in enumerate(values)]
    items = holdout_split(kept, by="items", test_size=test_size, groups=groups, seed=seed + 1)
    return HoldoutSplit(
        train=items.train,
        test=np.union1d(whole.test, items.test),
        by="both",
        seed=int(seed),
        test_labels=whole.test_labels,
    )


def _split(
    labels: Sequence[Any] | np.ndarray,
    by: str,
    *,
    test_size: float,
    label_size: float | None = None,
    groups: Sequence[Any] | np.ndarray | None = None,
    seed: int,
) -> HoldoutSplit:
    if by == "both":
        return combined_split(
            labels, test_size=test_size, label_size=label_size, groups=groups, seed=seed
        )
    if by == "labels" and label_size is not None:
        test_size = label_size
    return holdout_split(labels, by=by, test_size=test_size, groups=groups, seed=seed)


def _label_columns(
    labels: Sequence[Any] | np.ndarray | Mapping[str, Sequence[Any] | np.ndarray], n: int
) -> tuple[tuple[str, ...], list[list[Any]]]:
    """``(field names, one list of labels per field)`` from one labelling or a field mapping."""
    if isinstance(labels, Mapping):
        if not labels:
            raise ConfigError("labels is an empty mapping; give at least one label field")
        names: list[str] = []
        columns: list[list[Any]] = []
        for name, column in labels.items():
            if not isinstance(name, str) or not name:
                raise ConfigError(f"label field names must be non-empty strings, got {name!r}")
            if isinstance(column, (str, bytes)):
                raise ConfigError(f"labels[{name!r}] must hold one label per row, not a string")
            values = list(column)
            if len(values) != n:
                raise ConfigError(f"labels[{name!r}] has {len(values)} entries for {n} vectors")
            names.append(name)
            columns.append(values)
        return tuple(names), columns
    if isinstance(labels, (str, bytes)):
        raise ConfigError("labels must hold one label per row (or map field names to those)")
    values = list(labels)
    if len(values) != n:
        raise ConfigError(f"labels has {len(values)} entries for {n} vectors")
    return (_DEFAULT_FIELD,), [values]


def _compact(codes: np.ndarray) -> np.ndarray:
    """Renumber the codes present to ``0 .. m-1`` (``-1`` stays: unlabelled)."""
    out = np.full(codes.shape, -1, dtype=np.int64)
    known = codes >= 0
    if known.any():
        _, out[known] = np.unique(codes[known], return_inverse=True)
    return out


def _compact_columns(codes: np.ndarray) -> np.ndarray:
    """:func:`_compact` every column of a ``(n, fields)`` code matrix."""
    return np.stack([_compact(codes[:, j]) for j in range(codes.shape[1])], axis=1)


def _joint(codes: np.ndarray) -> np.ndarray:
    """One code per combination of the columns' codes (``-1`` where any is missing)."""
    out = np.full(len(codes), -1, dtype=np.int64)
    known = (codes >= 0).all(axis=1)
    if known.any():
        _, inverse = np.unique(codes[known], axis=0, return_inverse=True)
        out[known] = inverse.reshape(-1)
    return out


class ProjectionAdapter:
    """A learned projection of frozen vectors, trained with the Proxy-Anchor loss.

    Parameters
    ----------
    dim
        Length of the learned vectors (of each field's segment, with
        ``combine="split"`` and several fields).
    hidden
        Width of the MLP's hidden layer (ReLU); ``0`` learns a linear map.
    epochs
        Passes over the training vectors (more when that is fewer than
        ``min_steps`` gradient steps).
    min_steps
        Least number of gradient steps, so a small catalogue still trains
        enough (1,000 steps take a few seconds).
    batch_size
        Vectors per gradient step.
    learning_rate
        AdamW step size of the projection (the proxies learn 100x faster, as
        in the paper).
    weight_decay
        AdamW weight decay.
    alpha, margin
        Proxy-Anchor's scale (32) and margin (0.1).
    mix
        Share of the similarity that comes from the learned projection, in
        ``[0, 1]``; the rest is the original cosine. ``None`` picks it from
        :data:`MIX_GRID` on a validation split (see ``validation``).
    validation
        With ``mix=None``, what the validation splits hold out of the training
        vectors (by the first label field): ``"both"`` (default) whole labels
        *and* new items of the kept labels (:func:`combined_split`),
        ``"items"`` only new items, ``"labels"`` only whole labels. The
        projection is trained on the rest; every candidate ``mix`` (and, with
        several fields and no ``weights``, every split of the weights) is
        scored on each part (labels trained on; labels never seen, ranked among
        all held-out items and among themselves) and for each label field and
        their combination; the candidate with the best mean Precision@10 that
        loses on no part and field beyond noise and wins beyond it
        (:data:`NOISE_SE`, :data:`MIN_GAIN`) is kept, else ``mix=0``: the
        original vectors.
    validation_size
        Share of the kept labels' items held out for that. Half, by default:
        the unseen labels' items are then ranked among about three times as
        many items of trained labels, as in a catalogue, where the learned
        clusters of the trained labels are the distractors that hurt a new
        kind of product.
    validation_labels
        Share of the labels held out whole for that.
    folds
        With ``mix=None``: how many validation splits (seeded ``seed``,
        ``seed + 1``, ...) to train on and score; their queries are pooled, so
        the choice rests on more held-out labels than one split holds.
    combine
        With several label fields: ``"split"`` (default) learns each field on
        its own segment of the learned vector, with its own proxies, so
        learning the colour does not blur the types a projection never saw;
        the learned similarity is the segments' cosines weighted by
        ``weights``. ``"sum"`` learns all fields on one vector, the losses
        summed; ``"joint"`` one proxy per combination of values (both measured
        to lose more on labels never trained on).
    weights
        With ``combine="split"``: each field's share of the learned
        similarity (normalised to sum to 1). ``None``: chosen with ``mix`` on
        the validation split (:data:`FIRST_WEIGHT_GRID`), or, with a fixed
        ``mix``, :data:`DEFAULT_FIRST_WEIGHT` for the first field and the
        rest shared equally.
    refit
        With ``mix=None`` and a ``mix`` above 0 chosen: train again on all the
        training vectors (the validation splits included) and keep that
        projection (default); ``False`` keeps the first split's projection,
        which saw less.
    seed
        Seeds the initialisation, the batches and the validation split.

    Attributes
    ----------
    n_features_in_ : int
        Length of the input vectors.
    fields_ : tuple of str
        The label fields learned (``("label",)`` for a plain sequence of labels).
    mix_ : float
        The ``mix`` in use.
    weights_ : tuple of float
        Share of each segment of the learned vector in the learned similarity
        (one segment, ``(1.0,)``, unless ``combine="split"`` with several fields).
    validation_ : dict
        How ``mix`` was chosen (when ``mix=None``, else ``{}``): ``"by"``,
        ``"folds"`` (per split: ``"n_train"``, ``"n_validation"``,
        ``"held_out_labels"``, ``"queries"`` scorable per part and field),
        ``"n_validation"`` (all splits), ``"precision@10"`` (``{candidate: mean
        over parts and fields}``, pooled), ``"parts"`` (``{candidate: {part:
        {field: precision@10}}}``), ``"refused"`` (``{candidate: why}`` for one
        that lost somewhere), ``"chosen"`` and ``"refit"``. A candidate is
        ``"mix"`` (``"0.5"``), or ``"mix|first field's weight"`` (``"0.5|0.65"``)
        when the weights are chosen too.
    history_ : list of float
        Mean training loss per epoch.
    n_labels_ : int
        Distinct labels of the first field trained on.
    fit_seconds_ : float
        Wall-clock training time.
    """

    def __init__(
        self,
        *,
        dim: int = 256,
        hidden: int = 1024,
        epochs: int = 20,
        min_steps: int = 1000,
        batch_size: int = 256,
        learning_rate: float = 1e-3,
        weight_decay: float = 1e-4,
        alpha: float = 32.0,
        margin: float = 0.1,
        mix: float | None = None,
        validation: str = "both",
        validation_size: float = 0.5,
        validation_labels: float = 0.2,
        folds: int = 3,
        combine: str = "split",
        weights: Sequence[float] | None = None,
        refit: bool = True,
        seed: int = 0,
    ) -> None:
        self.dim_out = check_int("dim", dim, minimum=1, maximum=65_536)
        self.hidden = check_int("hidden", hidden, minimum=0, maximum=65_536)
        self.epochs = check_int("epochs", epochs, minimum=1, maximum=10_000)
        self.min_steps = check_int("min_steps", min_steps, minimum=0, maximum=10_000_000)
        self.batch_size = check_int("batch_size", batch_size, minimum=2, maximum=1 << 20)
        self.learning_rate = _check_float("learning_rate", learning_rate, 0.0, 10.0, open_lo=True)
        self.weight_decay = _check_float("weight_decay", weight_decay, 0.0, 1.0)
        self.alpha = _check_float("alpha", alpha, 0.0, 1000.0, open_lo=True)
        self.margin = _check_float("margin", margin, 0.0, 1.0)
        self.mix = None if mix is None else _check_float("mix", mix, 0.0, 1.0)
        self.validation = check_choice("validation", validation, ADAPT_HOLDOUTS)
        self.validation_size = _check_float(
            "validation_size", validation_size, 0.0, 0.5, open_lo=True
        )
        self.validation_labels = _check_float(
            "validation_labels", validation_labels, 0.0, 0.5, open_lo=True
        )
        self.folds = check_int("folds", folds, minimum=1, maximum=100)
        self.combine = check_choice("combine", combine, COMBINES)
        self.weights = None if weights is None else _check_weights(weights)
        self.refit = check_bool("refit", refit)
        self.seed = check_int("seed", seed, minimum=0, maximum=2**32 - 1)
        self.n_features_in_: int | None = None
        self.fields_: tuple[str, ...] = ()
        self.mix_: float | None = None
        self.weights_: tuple[float, ...] = (1.0,)
        self.arrays_: dict[str, np.ndarray] = {}
        self.validation_: dict[str, Any] = {}
        self.history_: list[float] = []
        self.n_labels_: int = 0
        self.fit_seconds_: float = 0.0

    # ------------------------------------------------------------------ config
    def get_config(self) -> dict[str, Any]:
        """Return the constructor arguments as JSON-safe values."""
        return {
            "dim": self.dim_out,
            "hidden": self.hidden,
            "epochs": self.epochs,
            "min_steps": self.min_steps,
            "batch_size": self.batch_size,
            "learning_rate": self.learning_rate,
            "weight_decay": self.weight_decay,
            "alpha": self.alpha,
            "margin": self.margin,
            "mix": self.mix,
            "validation": self.validation,
            "validation_size": self.validation_size,
            "validation_labels": self.validation_labels,
            "folds": self.folds,
            "combine": self.combine,
            "weights": None if self.weights is None else list(self.weights),
            "refit": self.refit,
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ProjectionAdapter:
        """Rebuild an unfitted adapter from :meth:`get_config` output."""
        if not isinstance(config, Mapping):
            raise ConfigError(f"an adapter config must be a mapping, got {type(config).__name__}")
        try:
            return cls(**dict(config))
        except TypeError as exc:
            raise ConfigError(f"invalid adapter config: {exc}") from None

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"ProjectionAdapter({args})"

    @property
    def is_fitted(self) -> bool:
        """Whether :meth:`fit` (or :meth:`load`) has run."""
        return self.mix_ is not None

    @property
    def dim(self) -> int:
        """Length of :meth:`transform`'s vectors (depends on the ``mix`` in use)."""
        if self.mix_ is None or self.n_features_in_ is None:
            raise NotFittedError("ProjectionAdapter is not fitted; call fit(vectors, labels)")
        learned = self.dim_out * sum(w > 0 for w in self.weights_)
        if self.mix_ == 1.0:
            return learned
        if self.mix_ == 0.0:
            return self.n_features_in_
        return learned + self.n_features_in_

    # ------------------------------------------------------------------ fitting
    def fit(
        self,
        vectors: ArrayLike,
        labels: Sequence[Any] | np.ndarray | Mapping[str, Sequence[Any] | np.ndarray],
    ) -> ProjectionAdapter:
        """Learn the projection from labelled vectors; return ``self``.

        Parameters
        ----------
        vectors
            ``(n, d)`` finite vectors (re-normalised to unit length).
        labels
            One label per row, or a mapping ``field name -> one label per
            row`` to learn several fields at once (``{"articleType": [...],
            "baseColour": [...]}``; see ``combine``). Rows whose first field
            is ``None``/NaN are left out; a missing value of a later field only
            leaves the row out of that field's loss.

        Raises
        ------
        InvalidVectorsError
            Not a non-empty 2-d finite array.
        ConfigError
            Labels of another length, fewer than two labels (of the first
            field) with at least two items each, or (with ``mix=None``) too
            little data to hold out a validation split.
        """
        x = _unit_rows(vectors, "vectors")
        names, columns = _label_columns(labels, len(x))
        codes = np.stack([_encode_labels(col, len(x))[0] for col in columns], axis=1)
        keep = codes[:, 0] >= 0
        x = x[keep]
        codes = _compact_columns(codes[keep])
        n_first = int(codes[:, 0].max()) + 1 if len(codes) else 0
        counts = np.bincount(codes[:, 0], minlength=n_first)
        if int((counts >= 2).sum()) < 2:
            raise ConfigError(
                f"adaptation needs at least two labels with two or more items each; got "
                f"{n_first} label(s) of {names[0]!r} over {len(x)} labelled vectors"
            )
        start = time.perf_counter()
        self.n_features_in_ = int(x.shape[1])
        self.fields_ = names
        self.validation_ = {}
        folds: list[dict[str, Any]] = []
        targets, segments = self._targets(codes)
        n_segments = max(segments) + 1
        if self.weights is not None and n_segments > 1 and len(self.weights) != n_segments:
            raise ConfigError(
                f"weights has {len(self.weights)} entries for {n_segments} label fields"
            )
        choices = self._candidates(n_segments)
        if self.mix is None:
            splits = [
                _split(
                    codes[:, 0],
                    self.validation,
                    test_size=self.validation_size,
                    label_size=self.validation_labels,
                    seed=self.seed + f,
                )
                for f in range(self.folds)
            ]
            if min(min(sp.test.size, sp.train.size) for sp in splits) < 4:
                raise ConfigError(
                    f"too few labelled vectors ({len(x)}) to hold out a validation split; "
                    "pass mix=1.0 (or another fixed mix) to train on them all"
                )
            scored = []
            first: tuple[dict[str, np.ndarray], list[float]] = ({}, [])
            for f, split in enumerate(splits):
                self._train(x[split.train], _compact_columns(targets[split.train]), segments)
                if f == 0:
                    first = (self.arrays_, self.history_)
                per_query, queries = self._score_mixes(x, codes, split, choices)
                scored.append(per_query)
                folds.append(
                    {
                        "n_train": int(split.train.size),
                        "n_validation": int(split.test.size),
                        "held_out_labels": len(split.test_labels),
                        "queries": queries,
                    }
                )
            chosen, record = self._choose_mix(scored, choices)
            self.mix_, self.weights_ = choices[chosen]
            refit = self.refit and self.mix_ > 0.0
            if refit:
                self._train(x, targets, segments)
            else:
                self.arrays_, self.history_ = first
            self.validation_ = {
                "by": splits[0].by,
                "folds": folds,
                "n_validation": sum(fold["n_validation"] for fold in folds),
                **record,
                "chosen": chosen,
                "refit": refit,
            }
        else:
            self._train(x, targets, segments)
            self.mix_, self.weights_ = self.mix, self._default_weights(n_segments)
        self.n_labels_ = n_first
        self.fit_seconds_ = time.perf_counter() - start
        logger.info(
            "adapter trained on %d vectors, %d labels (%s) in %.1f s; mix=%.2f",
            len(x),
            n_first,
            "+".join(names),
            self.fit_seconds_,
            self.mix_,
        )
        return self

    def _targets(self, codes: np.ndarray) -> tuple[np.ndarray, list[int]]:
        """The label columns the loss learns, and the output segment each one trains."""
        if codes.shape[1] == 1:
            return codes, [0]
        if self.combine == "joint":
            return _joint(codes)[:, np.newaxis], [0]
        if self.combine == "sum":
            return codes, [0] * codes.shape[1]
        return codes, list(range(codes.shape[1]))

    def _default_weights(self, n_segments: int) -> tuple[float, ...]:
        if n_segments == 1:
            return (1.0,)
        if self.weights is not None:
            return self.weights
        return _first_weighted(DEFAULT_FIRST_WEIGHT, n_segments)

    def _candidates(self, n_segments: int) -> dict[str, tuple[float, tuple[float, ...]]]:
        """What the guard tries: ``{key: (mix, segment weights)}``, the original vectors first."""
        if n_segments == 1 or self.weights is not None:
            weights = self._default_weights(n_segments)
            return {str(m): (m, weights) for m in MIX_GRID}
        out = {"0.0": (0.0, _first_weighted(1.0, n_segments))}
        for m in MIX_GRID[1:]:
            for w in FIRST_WEIGHT_GRID:
                out[f"{m}|{w}"] = (m, _first_weighted(w, n_segments))
        return out

    def _criteria(self, codes: np.ndarray) -> dict[str, np.ndarray]:
        """What the guard scores: every field, and with several fields their combination."""
        out = {name: codes[:, j] for j, name in enumerate(self.fields_)}
        if len(self.fields_) > 1:
            out["+".join(self.fields_)] = _joint(codes)
        return out

    def _score_mixes(
        self,
        x: np.ndarray,
        codes: np.ndarray,
        split: HoldoutSplit,
        choices: Mapping[str, tuple[float, tuple[float, ...]]],
    ) -> tuple[dict[str, dict[tuple[str, str], np.ndarray]], dict[str, dict[str, int]]]:
        """Per-query Precision@10 of every candidate ``(mix, weights)`` on one validation split.

        Returns ``{candidate: {(part, criterion): per-query values}}`` and the number
        of scorable queries per part and criterion (criteria as :meth:`_criteria`).
        Every held-out item is a query, ranked among all the held-out items, as in a
        catalogue: part ``"seen"`` holds the queries of labels (of the first field)
        trained on, part ``"unseen"`` those of labels held out whole. Part
        ``"unseen_alone"`` ranks the latter among themselves only (the held-out-classes
        protocol): a projection can push the trained labels away from the new ones,
        which helps ``"unseen"`` while it blurs the new labels into each other.
        Training items are never candidates: the projection has drawn them tight onto
        their proxies, away from every item it did not train on, so they would be easy
        distractors and flatter it.
        """
        test = split.test
        if test.size > MAX_VALIDATION_ITEMS:
            rng = np.random.default_rng(self.seed)
            test = np.sort(rng.choice(test, MAX_VALIDATION_ITEMS, replace=False))
        seen = np.isin(codes[test, 0], np.unique(codes[split.train, 0]))
        unseen = np.flatnonzero(~seen)
        criteria = {name: c[test] for name, c in self._criteria(codes).items()}
        pools = {"": (np.arange(len(test)), {"seen": seen, "unseen": ~seen})}
        if unseen.size >= 2:
            pools["alone"] = (unseen, {"unseen_alone": np.ones(unseen.size, dtype=bool)})
        # the labels of each pool, and which of its queries each (part, criterion) scores:
        # the same for every candidate
        scored: list[tuple[np.ndarray, list[tuple[str, np.ndarray, dict[str, np.ndarray]]]]] = []
        queries: dict[str, dict[str, int]] = {}
        for rows, parts in pools.values():
            cells = []
            for name, column in criteria.items():
                c = column[rows]
                counts = np.bincount(c[c >= 0], minlength=int(c.max()) + 1)
                scorable = (c >= 0) & (counts[np.maximum(c, 0)] >= 2)
                asked = {part: mask & scorable for part, mask in parts.items()}
                for part, mask in asked.items():
                    queries.setdefault(part, {})[name] = int(mask.sum())
                cells.append((name, c, asked))
            scored.append((rows, cells))
        original = x[test]
        segments = self._segments(original)
        per_query: dict[str, dict[tuple[str, str], np.ndarray]] = {key: {} for key in choices}
        for key, (mix, weights) in choices.items():
            blended = _blend(_weigh(segments, weights), original, mix)
            for rows, cells in scored:
                neighbours = _exact_neighbours(blended[rows], np.arange(rows.size), 10, 1024, False)
                valid = neighbours >= 0
                for name, c, asked in cells:
                    rel = valid & (c[np.where(valid, neighbours, 0)] == c[:, np.newaxis])
                    precision = precision_at_k(rel, 10, reduce="none")
                    for part, mask in asked.items():
                        per_query[key][(part, name)] = precision[mask]
        return per_query, queries

    def _choose_mix(
        self,
        folds: list[dict[str, dict[tuple[str, str], np.ndarray]]],
        choices: Mapping[str, tuple[float, tuple[float, ...]]],
    ) -> tuple[str, dict[str, Any]]:
        """The best candidate that loses on no part and criterion, pooled over the folds.

        The first candidate is the original vectors (``mix=0``), the baseline.
        """
        order = list(choices)
        baseline = order[0]
        keys = sorted({key for fold in folds for key in fold[baseline]})
        none = np.zeros(0)
        pooled = {
            c: {
                key: np.concatenate([fold[c].get(key, none) for fold in folds])
                for key in keys
                if sum(fold[c].get(key, none).size for fold in folds) >= MIN_PART_QUERIES
            }
            for c in order
        }
        base = pooled[baseline]
        means = {
            c: {key: float(v.mean()) for key, v in cells.items()} for c, cells in pooled.items()
        }
        scores = {
            c: float(np.mean(list(cell.values()))) if cell else 0.0 for c, cell in means.items()
        }
        refused: dict[str, str] = {}
        for c in order[1:]:
            errors = []
            for key, values in pooled[c].items():
                diff = values - base[key]
                se = float(diff.std(ddof=1) / math.sqrt(diff.size)) if diff.size > 1 else 0.0
                errors.append(se)
                tolerance = max(MIN_GAIN, NOISE_SE * se)
                if diff.mean() < -tolerance:
                    refused[c] = (
                        f"{key[1]} on {key[0]} labels: {diff.mean():+.4f} (noise {tolerance:.4f})"
                    )
                    break
            else:
                # the mean over cells must win beyond noise too (its standard error is at
                # most the cells' mean one, the cells sharing their queries)
                needed = max(MIN_GAIN, NOISE_SE * (float(np.mean(errors)) if errors else 0.0))
                if scores[c] - scores[baseline] < needed:
                    refused[c] = f"gains {scores[c] - scores[baseline]:+.4f} (noise {needed:.4f})"
        allowed = [c for c in order if c not in refused]
        # ties (to 4 decimals) go to the smaller mix, then to the first field's larger
        # share: change the vectors no more than helps
        best = max(allowed, key=lambda c: (round(scores[c], 4), -choices[c][0], choices[c][1][0]))
        nested: dict[str, dict[str, dict[str, float]]] = {}
        for c, cell in means.items():
            for (part, name), value in cell.items():
                nested.setdefault(c, {}).setdefault(part, {})[name] = round(value, 6)
        record = {
            "precision@10": {c: round(v, 6) for c, v in scores.items()},
            "parts": nested,
            "refused": refused,
        }
        return best, record

    def _train(self, x: np.ndarray, targets: np.ndarray, segments: Sequence[int]) -> None:
        """Fit the projection: one Proxy-Anchor loss per column of ``targets``, summed.

        The projection's output is ``max(segments) + 1`` segments of ``dim`` values;
        column ``j`` of ``targets`` is learned on segment ``segments[j]``.
        """
        import os

        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        import tensorflow as tf

        n, d = x.shape
        sizes = [max(int(targets[:, j].max()) + 1, 1) for j in range(targets.shape[1])]
        k = self.dim_out
        width = k * (max(segments) + 1)
        rng = np.random.default_rng(self.seed)
        tf.random.set_seed(self.seed)
        mean = x.mean(axis=0).astype(np.float32)
        if self.hidden:
            shapes = {
                "w1": (d, self.hidden, math.sqrt(2.0 / d)),
                "b1": (self.hidden, 0, 0.0),
                "w2": (self.hidden, width, math.sqrt(1.0 / self.hidden)),
                "b2": (width, 0, 0.0),
            }
        else:
            shapes = {"w": (d, width, math.sqrt(1.0 / d)), "b": (width, 0, 0.0)}
        variables = {}
        for name, (a, b, std) in shapes.items():
            init = rng.normal(0.0, std, size=(a, b)) if b else np.zeros(a)
            variables[name] = tf.Variable(init.astype(np.float32), name=name)
        proxies = [
            tf.Variable(rng.normal(0.0, 1.0, size=(size, self.dim_out)).astype(np.float32))
            for size in sizes
        ]
        mean_t = tf.constant(mean)
        trainable = list(variables.values())
        opt = tf.keras.optimizers.AdamW(self.learning_rate, weight_decay=self.weight_decay)
        opt_proxy = tf.keras.optimizers.Adam(self.learning_rate * 100)
        alpha, margin = float(self.alpha), float(self.margin)
        hidden = bool(self.hidden)

        def project(batch: Any) -> Any:
            c = batch - mean_t
            if hidden:
                h = tf.nn.relu(tf.matmul(c, variables["w1"]) + variables["b1"])
                z = tf.matmul(h, variables["w2"]) + variables["b2"]
            else:
                z = tf.matmul(c, variables["w"]) + variables["b"]
            return z

        def proxy_anchor(z: Any, labels: Any, proxy: Any, size: int) -> Any:
            sim = tf.matmul(z, tf.nn.l2_normalize(proxy, axis=1), transpose_b=True)
            pos = tf.one_hot(labels, size)  # an unlabelled row (-1) is all zeros
            labelled = tf.cast(labels >= 0, tf.float32)[:, tf.newaxis]
            pos_term = tf.reduce_sum(tf.exp(-alpha * (sim - margin)) * pos, axis=0)
            neg = (1.0 - pos) * labelled
            neg_term = tf.reduce_sum(tf.exp(alpha * (sim + margin)) * neg, axis=0)
            with_pos = tf.reduce_sum(tf.cast(tf.reduce_sum(pos, axis=0) > 0, tf.float32))
            loss = tf.reduce_sum(tf.math.log1p(pos_term)) / tf.maximum(with_pos, 1.0)
            return loss + tf.reduce_sum(tf.math.log1p(neg_term)) / float(size)

        @tf.function(reduce_retracing=True)
        def step(batch: Any, labels: Any) -> Any:
            with tf.GradientTape() as tape:
                z = project(batch)
                losses = []
                for j, (proxy, size) in enumerate(zip(proxies, sizes, strict=True)):
                    part = z[:, segments[j] * k : (segments[j] + 1) * k]
                    losses.append(
                        proxy_anchor(tf.nn.l2_normalize(part, axis=1), labels[:, j], proxy, size)
                    )
                loss = tf.add_n(losses)
            grads = tape.gradient(loss, [*trainable, *proxies])
            opt.apply_gradients(zip(grads[: len(trainable)], trainable, strict=True))
            opt_proxy.apply_gradients(zip(grads[len(trainable) :], proxies, strict=True))
            return loss

        xs = x.astype(np.float32)
        ys = targets.astype(np.int32)
        self.history_ = []
        size = min(self.batch_size, n)
        per_epoch = max(1, n // size)
        epochs = max(self.epochs, -(-self.min_steps // per_epoch))
        for epoch in range(epochs):
            order = rng.permutation(n)
            losses = []
            for i in range(0, n - size + 1, size):  # full batches: one trace
                idx = order[i : i + size]
                losses.append(float(step(tf.constant(xs[idx]), tf.constant(ys[idx]))))
            self.history_.append(float(np.mean(losses)))
            logger.debug("epoch %d: loss %.4f", epoch + 1, self.history_[-1])
        self.arrays_ = {"mean": mean, **{k: v.numpy() for k, v in variables.items()}}

    # --------------------------------------------------------------- transform
    def _segments(self, x: np.ndarray) -> list[np.ndarray]:
        """The projection of ``x``: one unit vector per output segment."""
        a = self.arrays_
        c = x - a["mean"]
        if "w1" in a:
            h = np.maximum(c @ a["w1"] + a["b1"], 0.0)
            z = h @ a["w2"] + a["b2"]
        else:
            z = c @ a["w"] + a["b"]
        k = self.dim_out
        return [
            _normalize(z[:, s * k : (s + 1) * k].astype(np.float32)) for s in range(z.shape[1] // k)
        ]

    def _project(self, x: np.ndarray) -> np.ndarray:
        """The learned unit vectors of ``x`` (segments weighted by ``weights_``)."""
        return _weigh(self._segments(x), self.weights_)

    def transform(self, vectors: ArrayLike) -> np.ndarray:
        """Return the adapted unit vectors, ``(n, dim)`` float32 (numpy only).

        Raises
        ------
        NotFittedError
            Before :meth:`fit`.
        InvalidVectorsError
            Not a 2-d finite array of ``n_features_in_`` columns.
        """
        if self.mix_ is None or self.n_features_in_ is None:
            raise NotFittedError("ProjectionAdapter is not fitted; call fit(vectors, labels)")
        x = _unit_rows(vectors, "vectors", allow_empty=True)
        if x.shape[1] != self.n_features_in_:
            raise InvalidVectorsError(
                f"vectors have dimension {x.shape[1]}; this adapter was fitted on "
                f"{self.n_features_in_}-d vectors (the catalogue's stored vectors)"
            )
        if self.mix_ == 0.0:
            return x
        return _blend(self._project(x), x, self.mix_)

    def fit_transform(self, vectors: ArrayLike, labels: Sequence[Any] | np.ndarray) -> np.ndarray:
        """:meth:`fit`, then :meth:`transform` the same vectors."""
        return self.fit(vectors, labels).transform(vectors)

    # -------------------------------------------------------------- persistence
    def save(self, directory: str | Path) -> None:
        """Write the fitted adapter to ``directory`` (created if missing).

        One ``.npy`` per learned array (never pickled) and ``manifest.json``
        (config, ``mix_``, shapes, SHA-256 of each file), written last and
        atomically.

        Raises
        ------
        NotFittedError
            Before :meth:`fit`.
        """
        if not self.is_fitted:
            raise NotFittedError("ProjectionAdapter is not fitted; nothing to save")
        root = Path(directory)
        root.mkdir(parents=True, exist_ok=True)
        files = {}
        for name, array in self.arrays_.items():
            P.write_npy_atomic(root / f"{name}.npy", np.ascontiguousarray(array, np.float32))
            files[f"{name}.npy"] = P.sha256_file(root / f"{name}.npy")
        P.write_manifest(
            root,
            tag=FORMAT_TAG,
            version=FORMAT_VERSION,
            fields={
                "config": self.get_config(),
                "n_features_in": self.n_features_in_,
                "mix": self.mix_,
                "n_labels": self.n_labels_,
                "fields": list(self.fields_),
                "weights": list(self.weights_),
                "validation": self.validation_,
                "history": self.history_,
            },
            files=files,
        )

    @classmethod
    def load(cls, directory: str | Path, *, verify: bool = True) -> ProjectionAdapter:
        """Return the adapter saved in ``directory`` by :meth:`save`.

        Reads this version's format and version 1 (one label field, saved
        before ``combine`` and ``fields`` existed).

        Raises
        ------
        CatalogError
            A missing, changed or malformed file, naming it and the field.
        FormatVersionError
            Written by a newer visualsim.
        """
        root = Path(directory)
        manifest = P.read_manifest(
            root,
            tag=FORMAT_TAG,
            max_version=FORMAT_VERSION,
            verify=verify,
            required=("config", "n_features_in", "mix"),
        )
        where = str(root / P.MANIFEST)
        try:
            adapter = cls.from_config(P.field_dict(where, "config", manifest["config"]))
        except ConfigError as exc:
            raise CatalogError(f"{where}: field 'config' is invalid: {exc}") from None
        d = int(
            P.field_int(
                where, "n_features_in", manifest["n_features_in"], minimum=1, maximum=P.MAX_DIM
            )
            or 0
        )
        mix = P.field_float(where, "mix", manifest["mix"], minimum=0.0, maximum=1.0)
        weights: tuple[float, ...] = (1.0,)
        if "weights" in manifest:  # version 2
            listed = P.field_list(where, "weights", manifest["weights"], max_len=1000)
            try:
                weights = _check_weights(listed)
            except ConfigError as exc:
                raise CatalogError(f"{where}: field 'weights' is invalid: {exc}") from None
        h, k = adapter.hidden, adapter.dim_out * len(weights)
        if h:
            shapes = {"mean": (d,), "w1": (d, h), "b1": (h,), "w2": (h, k), "b2": (k,)}
        else:
            shapes = {"mean": (d,), "w": (d, k), "b": (k,)}
        arrays = {}
        for name, shape in shapes.items():
            if f"{name}.npy" not in manifest["files"]:
                raise CatalogError(f"{where}: field 'files' lacks {name}.npy")
            path = P.safe_child(root, f"{name}.npy")
            arrays[name] = P.load_npy(path, dtypes=("float32",), shape=shape, finite=True)
        adapter.arrays_ = arrays
        adapter.n_features_in_ = d
        adapter.mix_ = mix
        adapter.weights_ = weights
        validation = manifest.get("validation")
        adapter.validation_ = dict(validation) if isinstance(validation, Mapping) else {}
        history = manifest.get("history")
        if isinstance(history, list):
            adapter.history_ = [float(v) for v in history if isinstance(v, (int, float))]
        n_labels = manifest.get("n_labels")
        adapter.n_labels_ = int(n_labels) if isinstance(n_labels, int) else 0
        if "fields" in manifest:  # version 2
            names = P.field_list(where, "fields", manifest["fields"], max_len=1000)
            if not all(isinstance(name, str) and name for name in names):
                raise CatalogError(f"{where}: field 'fields' must list label field names")
            adapter.fields_ = tuple(names)
        return adapter


def _check_weights(weights: Any) -> tuple[float, ...]:
    """``weights`` as floats >= 0 summing to 1 (normalised), or a :class:`ConfigError`."""
    if isinstance(weights, (str, bytes, Mapping)) or not isinstance(weights, Sequence):
        raise ConfigError(f"weights must be a list of numbers >= 0, got {weights!r}")
    values = [_check_float("weights", w, 0.0, 1e6) for w in weights]
    total = sum(values)
    if not values or total <= 0:
        raise ConfigError(f"weights needs a positive number among its entries, got {weights!r}")
    return tuple(v / total for v in values)


def _first_weighted(first: float, n: int) -> tuple[float, ...]:
    """Segment weights: ``first`` for the first, the rest shared equally (``n >= 2``)."""
    if n == 1:
        return (1.0,)
    return (first, *([(1.0 - first) / (n - 1)] * (n - 1)))


def _weigh(segments: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """Unit segments, each scaled by the root of its weight and concatenated (those of
    weight 0 left out): a unit vector whose cosine is the weighted sum of the segments'
    cosines."""
    used = [(seg, w) for seg, w in zip(segments, weights, strict=True) if w > 0]
    if len(used) == 1:
        return used[0][0]
    return np.ascontiguousarray(
        np.concatenate([seg * np.float32(math.sqrt(w)) for seg, w in used], axis=1),
        dtype=np.float32,
    )


def _normalize(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.where(norms > 0, norms, 1.0), dtype=np.float32)


def _unit_rows(vectors: ArrayLike, name: str, *, allow_empty: bool = False) -> np.ndarray:
    try:
        x = np.asarray(vectors, dtype=np.float32)
    except (TypeError, ValueError):
        raise InvalidVectorsError(f"{name} must be a numeric (n, dim) array") from None
    if x.ndim != 2 or x.shape[1] == 0 or (x.shape[0] == 0 and not allow_empty):
        raise InvalidVectorsError(f"{name} must be a non-empty (n, dim) array, got {x.shape}")
    if not np.isfinite(x).all():
        bad = int(np.flatnonzero(~np.isfinite(x).all(axis=1))[0])
        raise InvalidVectorsError(f"{name} row {bad} holds NaN or infinite values")
    return _normalize(x)


def _blend(learned: np.ndarray, original: np.ndarray, mix: float) -> np.ndarray:
    if mix >= 1.0:
        return learned
    if mix <= 0.0:
        return original
    return np.ascontiguousarray(
        np.concatenate(
            [learned * np.float32(math.sqrt(mix)), original * np.float32(math.sqrt(1 - mix))],
            axis=1,
        ),
        dtype=np.float32,
    )


# ---------------------------------------------------------------------------
# a recommender, adapted
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class AdaptationReport:
    """Before/after retrieval quality of an adaptation, on items it never trained on.

    Attributes
    ----------
    label
        The label fields the adapter learned, joined with ``+``
        (``"articleType+baseColour"``; one field: its name).
    split
        The held-out split (``by="both"``, ``"items"`` or ``"labels"``, seed,
        counts, the labels held out whole).
    before, after
        Leave-one-out quality over all the held-out items, by the first label
        field, with the original and with the adapted vectors.
    mix
        The blend of learned and original similarity in use.
    fit_seconds
        Training time.
    validation
        How ``mix`` was chosen (:attr:`ProjectionAdapter.validation_`).
    fields
        The label fields learned, in order.
    breakdown
        ``{criterion: {part: {"n_queries", "before", "after"}}}``: per label
        field (and, with several, their combination ``"a+b"``), Precision@K /
        Recall@K / mAP@K of the original and the adapted vectors, over
        ``"all"`` held-out queries, those whose first-field label was
        ``"seen"`` in training, and those whose label was ``"unseen"``. The
        candidates are always all the held-out items.
    """

    label: str
    split: HoldoutSplit = field(repr=False)
    before: EvaluationReport = field(repr=False)
    after: EvaluationReport = field(repr=False)
    mix: float
    fit_seconds: float
    validation: Mapping[str, Any] = field(default_factory=dict, repr=False, hash=False)
    fields: tuple[str, ...] = ()
    breakdown: Mapping[str, Mapping[str, Mapping[str, Any]]] = field(
        default_factory=dict, repr=False, hash=False
    )

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe summary."""
        return {
            "label": self.label,
            "fields": list(self.fields or (self.label,)),
            "split": self.split.to_dict(),
            "mix": self.mix,
            "fit_seconds": round(self.fit_seconds, 2),
            "validation": dict(self.validation),
            "before": dict(self.before.metrics),
            "after": dict(self.after.metrics),
            "breakdown": {
                name: {
                    part: {
                        "n_queries": cell["n_queries"],
                        "before": dict(cell["before"]),
                        "after": dict(cell["after"]),
                    }
                    for part, cell in parts.items()
                }
                for name, parts in self.breakdown.items()
            },
        }

    def __str__(self) -> str:
        s = self.split
        first = (self.fields or (self.label,))[0]
        held = {
            "items": "new items of known labels",
            "labels": "labels never trained on",
            "both": f"new items of known labels, and {len(s.test_labels):,} "
            f"{first!r} labels never trained on",
        }.get(s.by, s.by)
        lines = [
            f"Adapted to {self.label!r}: trained on {s.train.size:,} items, scored on "
            f"{s.test.size:,} held-out items ({held}; seed {s.seed})",
            f"mix {self.mix:g} (learned share of the similarity; 0 = the original vectors), "
            f"{self.fit_seconds:.1f} s",
            f"by {first!r}, all held-out items:",
            f"{'metric':>13}  {'before':>7}  {'after':>7}  {'change':>7}",
        ]
        for name in self.before.metrics:
            b, a = self.before.metrics[name], self.after.metrics[name]
            lines.append(f"{name:>13}  {b:>7.4f}  {a:>7.4f}  {a - b:>+7.4f}")
        ks = self.before.k
        cut = 10 if 10 in ks else ks[-1]
        metric = f"precision@{cut}"
        rows = [
            (name, part, cell)
            for name, parts in self.breakdown.items()
            for part, cell in parts.items()
        ]
        if rows:
            width = max(len("label"), *(len(name) for name, _, _ in rows))
            lines.append(f"{metric} per label and part (seen/unseen: by {first!r} in training):")
            lines.append(
                f"{'label':<{width}}  {'part':<6}  {'queries':>7}  {'before':>7}  "
                f"{'after':>7}  {'change':>7}"
            )
            for name, part, cell in rows:
                b, a = cell["before"][metric], cell["after"][metric]
                lines.append(
                    f"{name:<{width}}  {part:<6}  {cell['n_queries']:>7,}  {b:>7.4f}  "
                    f"{a:>7.4f}  {a - b:>+7.4f}"
                )
        return "\n".join(lines)


def _label_fields(label: Any) -> tuple[str, ...]:
    """``label`` (one field name, or a sequence of them) as a tuple of distinct names."""
    names = (label,) if isinstance(label, str) else label
    if isinstance(names, (bytes, Mapping)) or not isinstance(names, Sequence):
        raise ConfigError(f"label must be a metadata field name or a list of them, got {label!r}")
    names = tuple(names)
    if not names:
        raise ConfigError("label is an empty list; name at least one metadata field")
    for name in names:
        if not isinstance(name, str) or not name:
            raise ConfigError(f"label field names must be non-empty strings, got {name!r}")
    if len(set(names)) != len(names):
        raise ConfigError(f"label names a field twice: {list(names)}")
    return names


def _breakdown(
    before: np.ndarray,
    after: np.ndarray,
    criteria: Mapping[str, list[Any]],
    seen: np.ndarray,
    k: Sequence[int],
) -> dict[str, dict[str, dict[str, Any]]]:
    """Before/after metrics of the held-out rows, per criterion, over all/seen/unseen queries."""
    positions = np.arange(len(before))
    parts = {"all": positions, "seen": positions[seen], "unseen": positions[~seen]}
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for name, values in criteria.items():
        for part, queries in parts.items():
            if not queries.size or (part != "all" and queries.size == len(positions)):
                continue  # nothing there, or the same queries as "all"
            try:
                b = evaluate_embeddings(before, values, k, queries=queries.tolist())
                a = evaluate_embeddings(after, values, k, queries=queries.tolist())
            except ConfigError:  # no query of this part shares its label with another item
                continue
            out.setdefault(name, {})[part] = {
                "n_queries": b.n_queries,
                "before": dict(b.metrics),
                "after": dict(a.metrics),
            }
    return out


class Adaptable(Protocol):
    """What :func:`adapt_recommender` adapts: a fitted :class:`~visualsim.Recommender`, typically.

    Typed structurally, so this module imports nothing above it.
    """

    def __len__(self) -> int: ...

    @property
    def embeddings_(self) -> np.ndarray:
        """The stored vectors of the live items."""
        ...

    @property
    def metadata_(self) -> list[dict[str, Any]]:
        """Their metadata, in the same order."""
        ...

    def with_transform(self, transform: Any) -> Any:
        """A copy whose stored vectors, queries and additions go through ``transform``."""
        ...


def adapt_recommender(
    rec: Adaptable,
    label: str | Sequence[str],
    *,
    holdout: str = "both",
    test_size: float = 0.2,
    groups: str | None = None,
    seed: int = 0,
    adapter: ProjectionAdapter | None = None,
    k: Sequence[int] = (1, 5, 10),
) -> tuple[Any, AdaptationReport]:
    """Learn an adapter on a fitted recommender's catalogue; return the adapted copy and a report.

    The catalogue's labelled items are split (seeded) into a training part and
    a held-out part; the adapter learns on the training part only, and the
    report scores both the original and the adapted vectors on the held-out
    part against itself, so no training item is ever scored. The returned
    recommender holds every item (unlabelled ones too) through the adapter,
    and applies it to every later query and addition.

    Parameters
    ----------
    rec
        A fitted :class:`~visualsim.Recommender`.
    label
        Metadata field to learn (a category, or a product-group id), or a list
        of fields to learn at once (``["articleType", "baseColour"]``: the
        projection keeps both). The first field decides the split; an item
        without it is not trained on.
    holdout
        ``"both"`` (default: some labels held out whole, plus new items of the
        kept labels, :func:`combined_split`; the report has both parts),
        ``"items"`` (new products of known labels) or ``"labels"`` (labels
        never seen in training).
    test_size
        Share of labels and of items held out for the report.
    groups
        Optional metadata field of product ids: photos of one product stay on
        one side of the items split.
    seed
        Seeds the split and the training.
    adapter
        An unfitted adapter to train; default ``ProjectionAdapter(seed=seed,
        validation=holdout)``, whose guard falls back to the original vectors
        where the projection loses on some part or field.
    k
        Cut-offs of the report.

    Returns
    -------
    (Recommender, AdaptationReport)

    Raises
    ------
    ConfigError
        An unknown field, too few labels, or a bad ``label`` or ``holdout``.
    NotFittedError
        An empty recommender.
    """
    if holdout not in ADAPT_HOLDOUTS:
        raise ConfigError(f"holdout must be one of {', '.join(ADAPT_HOLDOUTS)}, got {holdout!r}")
    fields = _label_fields(label)
    if not len(rec):
        raise NotFittedError("the catalogue is empty: fit() it before adapting")
    vectors = np.asarray(rec.embeddings_, dtype=np.float32)
    metadata = list(rec.metadata_)
    for name in fields:
        if not any(name in m for m in metadata):
            known = sorted({key for m in metadata[:1000] for key in m})
            raise ConfigError(
                f"no catalogue item has metadata field {name!r}; "
                f"fields: {', '.join(known) or 'none'}"
            )
    columns = {name: [m.get(name) for m in metadata] for name in fields}
    labels = columns[fields[0]]
    group_values = None if groups is None else [m.get(groups) for m in metadata]
    split = _split(labels, holdout, test_size=test_size, groups=group_values, seed=seed)
    if split.test.size < 2 or split.train.size < 4:
        raise ConfigError(
            f"{len(metadata)} items with {fields[0]!r}: too few to hold out a test split "
            "and train; add more labelled items"
        )
    learner = adapter if adapter is not None else ProjectionAdapter(seed=seed, validation=holdout)
    learner.fit(
        vectors[split.train], {name: [col[i] for i in split.train] for name, col in columns.items()}
    )
    held_before = vectors[split.test]
    held_after = learner.transform(held_before)
    name = "+".join(fields)
    before = evaluate_holdout(held_before, labels, split, k, label_name=fields[0])
    after = evaluate_holdout(held_after, labels, split, k, label_name=fields[0])
    criteria = {f: [columns[f][i] for i in split.test] for f in fields}
    if len(fields) > 1:
        criteria[name] = [
            None
            if any(_is_missing(columns[f][i]) for f in fields)
            else tuple(columns[f][i] for f in fields)
            for i in split.test
        ]
    trained = {labels[i] for i in split.train}
    seen = np.array([labels[i] in trained for i in split.test], dtype=bool)
    report = AdaptationReport(
        label=name,
        split=split,
        before=before,
        after=after,
        mix=float(learner.mix_ or 0.0),
        fit_seconds=learner.fit_seconds_,
        validation=dict(learner.validation_),
        fields=fields,
        breakdown=_breakdown(held_before, held_after, criteria, seen, k),
    )
    return rec.with_transform(learner), report


__all__ = [
    "ADAPT_HOLDOUTS",
    "COMBINES",
    "FORMAT_VERSION",
    "MIX_GRID",
    "AdaptationReport",
    "ProjectionAdapter",
    "adapt_recommender",
    "combined_split",
]
