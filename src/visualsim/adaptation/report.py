"""What an adaptation reports: before/after retrieval quality on items it never trained on."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..evaluation import (
    EvaluationReport,
    HoldoutSplit,
    evaluate_embeddings,
)


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
