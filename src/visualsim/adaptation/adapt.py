"""Adapt a fitted recommender: split its catalogue, train on one part, report on the other.

The recommender is typed structurally (:class:`Adaptable`), so this package imports
nothing above it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from ..errors import ConfigError, NotFittedError
from ..evaluation import (
    evaluate_holdout,
)
from ..evaluation.leave_one_out import _is_missing
from .guard import ADAPT_HOLDOUTS, _split
from .learner import ProjectionAdapter
from .report import AdaptationReport, _breakdown


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
