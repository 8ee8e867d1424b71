"""The guard: keep the plain vectors unless a learned projection wins without losing anywhere.

With ``mix=None`` a :class:`~visualsim.adaptation.ProjectionAdapter` holds out validation
splits of its own training data (:func:`combined_split`: whole labels *and* new items of
the kept labels), scores every candidate ``(mix, segment weights)`` there on every part
and label field (:func:`score_mixes`), and keeps the best one that loses on no part and
field beyond noise and wins beyond it (:func:`choose_mix`); the first candidate, the
baseline, is ``mix=0``: the original vectors.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from ..evaluation import (
    HOLDOUT_MODES,
    HoldoutSplit,
    holdout_split,
    precision_at_k,
)
from ..evaluation.leave_one_out import _encode_labels, _exact_neighbours
from .labels import _joint
from .vectors import _blend, _first_weighted, _weigh

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


def default_weights(n_segments: int, weights: tuple[float, ...] | None) -> tuple[float, ...]:
    """The segment weights of a fixed ``mix``: ``weights``, or :data:`DEFAULT_FIRST_WEIGHT` for
    the first segment and the rest shared equally."""
    if n_segments == 1:
        return (1.0,)
    if weights is not None:
        return weights
    return _first_weighted(DEFAULT_FIRST_WEIGHT, n_segments)


def candidates(
    n_segments: int, weights: tuple[float, ...] | None
) -> dict[str, tuple[float, tuple[float, ...]]]:
    """What the guard tries: ``{key: (mix, segment weights)}``, the original vectors first."""
    if n_segments == 1 or weights is not None:
        fixed = default_weights(n_segments, weights)
        return {str(m): (m, fixed) for m in MIX_GRID}
    out = {"0.0": (0.0, _first_weighted(1.0, n_segments))}
    for m in MIX_GRID[1:]:
        for w in FIRST_WEIGHT_GRID:
            out[f"{m}|{w}"] = (m, _first_weighted(w, n_segments))
    return out


def criteria(fields: Sequence[str], codes: np.ndarray) -> dict[str, np.ndarray]:
    """What the guard scores: every field, and with several fields their combination."""
    out = {name: codes[:, j] for j, name in enumerate(fields)}
    if len(fields) > 1:
        out["+".join(fields)] = _joint(codes)
    return out


def score_mixes(
    project: Callable[[np.ndarray], list[np.ndarray]],
    fields: Sequence[str],
    x: np.ndarray,
    codes: np.ndarray,
    split: HoldoutSplit,
    choices: Mapping[str, tuple[float, tuple[float, ...]]],
    seed: int,
) -> tuple[dict[str, dict[tuple[str, str], np.ndarray]], dict[str, dict[str, int]]]:
    """Per-query Precision@10 of every candidate ``(mix, weights)`` on one validation split.

    Returns ``{candidate: {(part, criterion): per-query values}}`` and the number
    of scorable queries per part and criterion (criteria as :func:`criteria`).
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
        rng = np.random.default_rng(seed)
        test = np.sort(rng.choice(test, MAX_VALIDATION_ITEMS, replace=False))
    seen = np.isin(codes[test, 0], np.unique(codes[split.train, 0]))
    unseen = np.flatnonzero(~seen)
    columns = {name: c[test] for name, c in criteria(fields, codes).items()}
    pools = {"": (np.arange(len(test)), {"seen": seen, "unseen": ~seen})}
    if unseen.size >= 2:
        pools["alone"] = (unseen, {"unseen_alone": np.ones(unseen.size, dtype=bool)})
    # the labels of each pool, and which of its queries each (part, criterion) scores:
    # the same for every candidate
    scored: list[tuple[np.ndarray, list[tuple[str, np.ndarray, dict[str, np.ndarray]]]]] = []
    queries: dict[str, dict[str, int]] = {}
    for rows, parts in pools.values():
        cells = []
        for name, column in columns.items():
            c = column[rows]
            counts = np.bincount(c[c >= 0], minlength=int(c.max()) + 1)
            scorable = (c >= 0) & (counts[np.maximum(c, 0)] >= 2)
            asked = {part: mask & scorable for part, mask in parts.items()}
            for part, mask in asked.items():
                queries.setdefault(part, {})[name] = int(mask.sum())
            cells.append((name, c, asked))
        scored.append((rows, cells))
    original = x[test]
    segments = project(original)
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


def choose_mix(
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
    means = {c: {key: float(v.mean()) for key, v in cells.items()} for c, cells in pooled.items()}
    scores = {c: float(np.mean(list(cell.values()))) if cell else 0.0 for c, cell in means.items()}
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
