"""The demo behind ``visualsim demo`` and ``make demo``: index, query, plot, score.

It runs offline on what the machine has: Fashion-MNIST when it is installed
(Debian's ``dataset-fashion-mnist``), else the generated product set; ResNet50
with ImageNet weights when they are on disk, else the pretrained SqueezeNet,
else the colour histogram — and says which, never silently.
"""

from __future__ import annotations

import itertools
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError, DatasetError

logger = logging.getLogger(__name__)


@dataclass
class DemoResult:
    """What :func:`run_demo` did.

    Attributes
    ----------
    data, extractor
        One-line descriptions of the data set and extractor used.
    count
        Items indexed.
    metrics
        Leave-one-out retrieval metrics against the labels.
    plot, catalog
        Paths written.
    queries
        ``(query id, query label, [(result id, result label, score), ...])``.
    """

    data: str
    extractor: str
    count: int
    metrics: dict[str, float]
    plot: Path
    catalog: Path
    queries: list[tuple[Any, Any, list[tuple[Any, Any, float]]]] = field(default_factory=list)


def choose_data(kind: str = "auto", n: int = 2000, *, seed: int = 0) -> tuple[Any, str, str]:
    """Return ``(dataset, label key, description)`` for the demo.

    ``kind`` is ``"auto"`` (Fashion-MNIST if on this machine, else synthetic),
    ``"fashion-mnist"`` or ``"synthetic"``.
    """
    if kind not in ("auto", "fashion-mnist", "synthetic"):
        raise ConfigError(f"data must be auto, fashion-mnist or synthetic, got {kind!r}")
    if kind in ("auto", "fashion-mnist"):
        from .datasets.fashion_mnist import DEBIAN_DIR, KERAS_CACHE_DIR, FashionMNIST, idx_paths

        # only local copies: the demo must never wait on a download
        candidates = (Path(DEBIAN_DIR), Path(KERAS_CACHE_DIR).expanduser())
        local = [d for d in candidates if idx_paths(d, "test")]
        try:
            if not local:
                raise DatasetError(f"no local copy in {DEBIAN_DIR} or {KERAS_CACHE_DIR}")
            ds = FashionMNIST(local[0], split="test")
            n = min(n, len(ds))
            desc = f"Fashion-MNIST test split, first {n} of {len(ds)} ({ds.source})"
            return _Subset(ds, n), "class_name", desc
        except DatasetError as exc:
            if kind == "fashion-mnist":
                raise
            logger.info("Fashion-MNIST not available (%s); using generated products", exc)
    from .datasets.synthetic import SyntheticProducts

    synthetic = SyntheticProducts(n, seed=seed)
    return (
        synthetic,
        "category",
        f"generated products (visualsim.datasets.synthetic, n={n}, seed={seed})",
    )


def choose_extractor(kind: Any = "auto") -> tuple[Any, str]:
    """Return ``(extractor, description)`` for the demo.

    ``kind`` is ``"auto"`` (:func:`~visualsim.extractors.auto.auto_extractor`:
    ResNet50 ImageNet when its weights are on disk, else the offline product mix
    measured best on real photos in ``docs/quality.md``, else colour alone), any registered
    extractor name, or an extractor object (``visualsim demo --extractor
    squeezenet+color:4:1`` builds one).
    """
    if not isinstance(kind, str):
        return kind, _describe(kind)
    if kind == "auto":
        from .extractors.auto import auto_extractor

        return auto_extractor()
    from .extractors.base import make_extractor

    return make_extractor(kind), kind


def _brief(description: str) -> str:
    """A description without its parentheses: ``'SqueezeNet 1.1 + colour histogram, 4:1'``."""
    return re.sub(r"\s*\([^)]*\)", "", description).strip()


def _describe(extractor: Any) -> str:
    """``color``, or ``squeezenet+color 4:1`` for a ConcatExtractor."""
    parts = getattr(extractor, "extractors", None)
    name = str(getattr(extractor, "name", type(extractor).__name__))
    if not parts:
        return name
    weights = ":".join(f"{w:g}" for w in getattr(extractor, "weights", []))
    return "+".join(_describe(p) for p in parts) + (f" {weights}" if weights else "")


def run_demo(
    out: str | Path = "demo-out",
    *,
    n: int = 2000,
    data: str = "auto",
    extractor: Any = "auto",
    k: int = 5,
    n_queries: int = 4,
    progress: bool = True,
    say: Callable[[str], None] = logger.info,
) -> DemoResult:
    """Index a labelled set, query a few items, plot them and score the whole catalogue.

    Parameters
    ----------
    out
        Folder for ``recommendations.png`` and the saved ``catalog/``.
    n
        Items to index.
    data, extractor
        See :func:`choose_data` and :func:`choose_extractor` (a name or an extractor).
    k
        Results per query.
    n_queries
        Example queries shown (items of different labels).
    progress
        Show progress bars.
    say
        Where the narration goes (``print`` on the command line).

    Returns
    -------
    DemoResult
    """
    from .evaluation import evaluate
    from .plotting import plot_recommendations, save_figure
    from .recommender import Recommender

    out = Path(out)
    dataset, label_key, data_desc = choose_data(data, n)
    ext, ext_desc = choose_extractor(extractor)
    say(f"data:      {data_desc}")
    say(f"extractor: {ext_desc}")
    rec = Recommender(ext, "flat").fit(dataset, progress=progress)
    say(
        f"indexed:   {len(rec)} items, {rec.dim}-d vectors"
        + (f", {len(rec.failed_)} failed" if rec.failed_ else "")
    )

    report = evaluate(rec, label_key, k=(1, 5, 10))
    metrics = {key: float(v) for key, v in report.to_dict()["metrics"].items()}

    labels = [m.get(label_key) for m in rec.metadata_]
    picks: list[int] = []
    for row, label in enumerate(labels):
        if label not in {labels[p] for p in picks}:
            picks.append(row)
        if len(picks) == n_queries:
            break
    ids = rec.ids_
    row_of = {item_id: row for row, item_id in enumerate(ids)}
    queries = []
    results = []
    for row in picks:
        recs = rec.similar_to(ids[row], k=k)
        results.append(recs)
        queries.append(
            (ids[row], labels[row], [(r.id, r.metadata.get(label_key), r.score) for r in recs])
        )
        say(f"\nquery {ids[row]} ({labels[row]}):")
        for r in recs:
            mark = "✓" if r.metadata.get(label_key) == labels[row] else "✗"
            say(
                f"  {r.rank}. {mark} {r.id!s:<22} {r.metadata.get(label_key)!s:<14} "
                f"score {r.score:.3f}"
            )

    def image_of(r: Any) -> Any:
        return dataset[row_of[r.id]].image

    # the catalogue and the scores first: a missing matplotlib must not lose the work done
    out.mkdir(parents=True, exist_ok=True)
    catalog = rec.save(out / "catalog", overwrite=True)
    say("")
    say(f"leave-one-out over {report.n_queries} items, relevant = same {label_key}:")
    say("  " + "  ".join(f"{key} {value:.3f}" for key, value in metrics.items()))
    say(f"Recall@5 = {metrics.get('recall@5', float('nan')):.3f}")
    say(f"wrote {catalog}/")
    fig = plot_recommendations(
        [dataset[row].image for row in picks],
        results,
        image_of=image_of,
        label_key=label_key,
        title=f"visualsim demo: {_brief(ext_desc)} on {_brief(data_desc)} (n={len(rec)})",
        query_label=[f"{ids[row]} ({labels[row]})" for row in picks],
    )
    plot = save_figure(fig, out / "recommendations.png")
    say(f"wrote {plot}")
    return DemoResult(data_desc, ext_desc, len(rec), metrics, plot, catalog, queries)


class _Subset:
    """The first ``n`` items of an indexable dataset, as a sized iterable."""

    def __init__(self, dataset: Any, n: int) -> None:
        self.dataset = dataset
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Any:
        return itertools.islice(iter(self.dataset), self.n)

    def __getitem__(self, index: int) -> Any:
        if not 0 <= index < self.n:
            raise IndexError(index)
        return self.dataset[index]


__all__ = ["DemoResult", "choose_data", "choose_extractor", "run_demo"]
