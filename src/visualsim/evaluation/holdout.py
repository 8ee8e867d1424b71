"""The held-out protocol, for anything learned from the labels: train on one part, score
on another, never mixed.

:func:`holdout_split` draws the parts (seeded; held-out *items*: new products of known
labels, or held-out *labels*: classes never seen in training); :func:`evaluate_holdout`
scores the test part against itself only, so no training item is ever scored.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike

from ..errors import ConfigError
from ..validation import check_choice, check_float
from .leave_one_out import _encode_labels, evaluate_embeddings
from .metrics import EvaluationReport

HoldoutBy = Literal["items", "labels"]
HOLDOUT_MODES: tuple[str, ...] = ("items", "labels")


@dataclass(frozen=True)
class HoldoutSplit:
    """Which items a learned step may see (``train``) and which it is scored on (``test``).

    Attributes
    ----------
    train, test
        Sorted row positions, disjoint. Unlabelled rows are in neither.
    by
        ``"items"``: every label has items on both sides (new products of known
        labels, the shop's daily case); ``"labels"``: the test labels never
        occur in ``train`` (classes never seen in training, the Stanford Online
        Products protocol).
    seed
        The seed the split was drawn with.
    test_labels
        With ``by="labels"``: the labels held out.
    """

    train: np.ndarray = field(hash=False)
    test: np.ndarray = field(hash=False)
    by: str
    seed: int
    test_labels: tuple[Hashable, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Return counts and settings as JSON-safe values (not the positions)."""
        return {
            "by": self.by,
            "seed": self.seed,
            "n_train": int(self.train.size),
            "n_test": int(self.test.size),
            "test_labels": [str(lab) for lab in self.test_labels],
        }


def holdout_split(
    labels: Sequence[Any] | np.ndarray,
    *,
    by: HoldoutBy | str = "items",
    test_size: float = 0.2,
    groups: Sequence[Any] | np.ndarray | None = None,
    seed: int = 0,
) -> HoldoutSplit:
    """Split labelled rows into a training part and a held-out test part, seeded.

    Parameters
    ----------
    labels
        One label per row (``None``/NaN: unlabelled, left out of both parts).
    by
        ``"items"``: within every label, a ``test_size`` share of its items (at
        least 2 when it has 4 or more, so each test query has a relevant item)
        goes to ``test``. ``"labels"``: a ``test_size`` share of the distinct
        labels (at least two when there are three or more, so a test query can
        be confused; at least one left for training) goes to ``test`` with all
        their items.
    test_size
        Share held out, in ``(0, 1)``.
    groups
        Optional product ids aligned with ``labels`` (several photos of one
        product): with ``by="items"`` a group's rows stay on one side, so a
        photo is never scored against its own product's training photos.
    seed
        Seed of the draw; the same inputs and seed give the same split.

    Returns
    -------
    HoldoutSplit

    Raises
    ------
    ConfigError
        A bad ``by`` or ``test_size``, ``groups`` of another length, or fewer
        than two labels with ``by="labels"``.

    Examples
    --------
    >>> split = holdout_split(["a"] * 5 + ["b"] * 5, test_size=0.4, seed=0)
    >>> split.train.size, split.test.size
    (6, 4)
    """
    check_choice("by", by, HOLDOUT_MODES)
    test_size = check_float(
        "test_size", test_size, minimum=0.0, maximum=1.0, open_minimum=True, open_maximum=True
    )
    values = list(labels)
    n = len(values)
    codes, names = _encode_labels(values, n)
    rng = np.random.default_rng(seed)
    test = np.zeros(n, dtype=bool)
    held: tuple[Hashable, ...] = ()
    if by == "labels":
        if len(names) < 2:
            raise ConfigError(
                f"by='labels' needs at least two distinct labels, found {len(names)}; "
                "hold out items instead (by='items')"
            )
        least = 2 if len(names) >= 3 else 1  # two labels, so a test query can be wrong
        n_test = min(len(names) - 1, max(least, round(test_size * len(names))))
        chosen = np.sort(rng.permutation(len(names))[:n_test])
        test = np.isin(codes, chosen)
        held = tuple(names[c] for c in chosen)
    else:
        if groups is not None:
            group_list = list(groups)
            if len(group_list) != n:
                raise ConfigError(f"groups has {len(group_list)} entries for {n} labels")
            unit, _ = _encode_labels(group_list, n)
            unit = np.where(unit >= 0, unit, n + np.arange(n))  # no group: its own unit
        else:
            unit = np.arange(n)
        for c in range(len(names)):
            rows = np.flatnonzero(codes == c)
            units = np.unique(unit[rows])
            if units.size < 2:
                continue
            want = round(test_size * units.size)
            if units.size >= 4:
                want = max(want, 2)
            want = min(max(want, 1), units.size - 1)
            picked = rng.permutation(units)[:want]
            test[rows[np.isin(unit[rows], picked)]] = True
    labelled = codes >= 0
    return HoldoutSplit(
        train=np.flatnonzero(labelled & ~test),
        test=np.flatnonzero(labelled & test),
        by=by,
        seed=int(seed),
        test_labels=held,
    )


def evaluate_holdout(
    embeddings: ArrayLike,
    labels: Sequence[Any] | np.ndarray,
    split: HoldoutSplit,
    k: int | Iterable[int] = (1, 5, 10),
    *,
    label_name: str | None = None,
    batch_size: int = 1024,
) -> EvaluationReport:
    """Return leave-one-out quality over the held-out items only.

    Queries and candidates are both ``split.test``: no training item is ever
    a query or a result, so a step fitted on ``split.train`` is scored on
    items (and, with ``by="labels"``, on labels) it never saw.

    Parameters
    ----------
    embeddings
        ``(n, dim)`` vectors of every row (or only of the test rows, in
        ``split.test`` order, when it has ``len(split.test)`` rows).
    labels
        The labels the split was made from.
    split
        From :func:`holdout_split`.
    k, label_name, batch_size
        As :func:`evaluate_embeddings`.
    """
    x = np.asarray(embeddings)
    values = list(labels)
    test = split.test
    if x.ndim == 2 and x.shape[0] == test.size and test.size != len(values):
        rows = x
    else:
        if x.ndim != 2 or x.shape[0] != len(values):
            raise ConfigError(
                f"embeddings has {x.shape[0] if x.ndim else 0} rows; give one per label "
                f"({len(values)}) or one per test item ({test.size})"
            )
        rows = x[test]
    return evaluate_embeddings(
        rows,
        [values[i] for i in test],
        k,
        label_name=label_name,
        batch_size=batch_size,
    )


__all__ = ["HOLDOUT_MODES", "HoldoutBy", "HoldoutSplit", "evaluate_holdout", "holdout_split"]
