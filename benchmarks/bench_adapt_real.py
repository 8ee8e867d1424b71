"""Adaptation on real product photos: does it help, and does it never make things worse?

The protocol (``../shared/data/fashion-products-dev``: ``images/<id>.jpg`` and
``labels.csv``, see its README):

* the products are split in two halves by item, stratified by ``articleType``
  (seeded): the adapter trains on one, the other is judged;
* about 20 % of the articleTypes are held out of training entirely, so the
  judged half also holds types the adapter never saw;
* every configuration is scored on the judged half only (leave-one-out, exact
  cosine kNN, the whole judged half as candidates): P@10 by ``articleType``,
  by ``articleType`` + ``baseColour`` and by ``baseColour``, over all its
  queries, over the types seen in training, over the unseen ones, and over
  the unseen types among themselves (the ``holdout="labels"`` protocol of
  :func:`visualsim.evaluation.evaluate_holdout`).

"unadapted" is the original vectors; the other rows are
:class:`visualsim.adaptation.ProjectionAdapter` fitted on the training half:
``articleType`` alone with the previous version's guard (one split of new items
of known labels: ``validation="items", validation_size=0.15, folds=1,
refit=False``) and with the mix forced to 1, and the default guard
(``validation="both"``) on ``articleType`` alone and on ``articleType`` +
``baseColour`` (and the latter with the mix forced to 1).

Vectors come from ``--vectors file.npy`` (one row per ``labels.csv`` row, in
its order) or from ``--extractor NAME`` (default ``squeezenet``), extracted
once and cached under ``--cache`` (``/tmp``), so the benchmark can be rerun
with another default extractor.

Run::

    .venv/bin/python benchmarks/bench_adapt_real.py            # squeezenet, seeds 0 1 2
    .venv/bin/python benchmarks/bench_adapt_real.py --seeds 0 --configs unadapted,both
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import machine_info, print_table, write_json

from visualsim.adaptation import ProjectionAdapter
from visualsim.evaluation import evaluate_embeddings, holdout_split

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data" / "fashion-products-dev"
OUT = HERE / "results" / "adapt-real.json"
TYPE, COLOUR = "articleType", "baseColour"
CONFIGS: dict[str, dict[str, Any]] = {
    "unadapted": {},
    # the previous version's defaults: one split of new items of known labels, no refit
    "type, old guard (items)": {
        "fields": (TYPE,),
        "validation": "items",
        "validation_size": 0.15,
        "folds": 1,
        "refit": False,
    },
    "type, mix=1": {"fields": (TYPE,), "mix": 1.0},
    "type, guard (both)": {"fields": (TYPE,)},
    "type+colour, guard (both)": {"fields": (TYPE, COLOUR)},
    "type+colour, mix=1": {"fields": (TYPE, COLOUR), "mix": 1.0},
}
SHORT = {
    "unadapted": "unadapted",
    "old": "type, old guard (items)",
    "mix1": "type, mix=1",
    "type": "type, guard (both)",
    "both": "type+colour, guard (both)",
    "both-mix1": "type+colour, mix=1",
}
METRICS = ("type", "type+colour", "colour", "seen types", "unseen types", "unseen alone")


def read_labels(root: Path) -> list[dict[str, str]]:
    """Return the rows of ``labels.csv``."""
    with (root / "labels.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def load_vectors(args: argparse.Namespace, rows: list[dict[str, str]]) -> tuple[np.ndarray, str]:
    """Return one vector per row (from ``--vectors``, the cache, or extracted now) and its name."""
    if args.vectors is not None:
        x = np.load(args.vectors, allow_pickle=False)
        source = str(args.vectors)
    else:
        cache = Path(args.cache) / f"visualsim-adapt-real-{args.extractor}-{len(rows)}.npy"
        if cache.is_file():
            x = np.load(cache, allow_pickle=False)
        else:
            from visualsim.extractors import EXTRACTORS, auto_extractor

            if args.extractor == "auto":  # the library's default (what Recommender() uses)
                extractor = auto_extractor()[0]
            else:
                extractor = EXTRACTORS.build(args.extractor)
            paths = [args.data / "images" / f"{row['id']}.jpg" for row in rows]
            start = time.perf_counter()
            x = extractor.extract(paths, progress=sys.stderr.isatty())
            print(f"extracted {len(x)} images in {time.perf_counter() - start:.0f} s", flush=True)
            cache.parent.mkdir(parents=True, exist_ok=True)
            np.save(cache, x)
        source = args.extractor
    if x.ndim != 2 or len(x) != len(rows):
        raise SystemExit(f"{source}: {x.shape} vectors for {len(rows)} labelled photos")
    return np.asarray(x, dtype=np.float32), source


def protocol(types: list[str], seed: int) -> tuple[np.ndarray, np.ndarray, set[str]]:
    """Return (training rows, judged rows, types never trained on) for one seed."""
    halves = holdout_split(types, by="items", test_size=0.5, seed=seed)
    unseen = set(holdout_split(types, by="labels", test_size=0.2, seed=seed + 1000).test_labels)
    train = np.array([i for i in halves.train if types[i] not in unseen], dtype=np.int64)
    return train, halves.test, unseen


def judge(
    z: np.ndarray, rows: list[dict[str, str]], judged: np.ndarray, unseen: set[str]
) -> dict[str, float]:
    """P@10 of the judged half's vectors ``z`` (one row per judged item)."""
    types = [rows[i][TYPE] for i in judged]
    joint = [f"{rows[i][TYPE]}|{rows[i][COLOUR]}" for i in judged]
    colours = [rows[i][COLOUR] for i in judged]
    new = np.array([t in unseen for t in types])
    positions = np.arange(len(judged))

    def p10(vectors: np.ndarray, labels: list[str], queries: np.ndarray | None = None) -> float:
        q = None if queries is None else queries.tolist()
        return evaluate_embeddings(vectors, labels, 10, queries=q)["precision@10"]

    return {
        "type": p10(z, types),
        "type+colour": p10(z, joint),
        "colour": p10(z, colours),
        "seen types": p10(z, types, positions[~new]),
        "unseen types": p10(z, types, positions[new]),
        "unseen alone": p10(z[new], [t for t, n in zip(types, new, strict=True) if n]),
    }


def run_config(
    name: str,
    x: np.ndarray,
    rows: list[dict[str, str]],
    seed: int,
    split: tuple[np.ndarray, np.ndarray, set[str]],
    *,
    combine: str,
    refit: bool,
    folds: int,
) -> dict[str, Any]:
    """Fit one configuration on the training half of ``split`` (:func:`protocol` of ``seed``);
    judge it on the other half."""
    train, judged, unseen = split
    spec = dict(CONFIGS[name])
    fields = spec.pop("fields", ())
    result: dict[str, Any] = {"config": name, "seed": seed}
    if not fields:
        z = x[judged]
        result.update(mix=None, fit_s=0.0)
    else:
        options: dict[str, Any] = {"combine": combine, "refit": refit, "folds": folds}
        adapter = ProjectionAdapter(seed=seed, **{**options, **spec})
        labels = {f: [rows[i][f] for i in train] for f in fields}
        adapter.fit(x[train], labels if len(fields) > 1 else labels[fields[0]])
        z = adapter.transform(x[judged])
        result.update(
            mix=adapter.mix_,
            weights=[round(w, 3) for w in adapter.weights_],
            fit_s=round(adapter.fit_seconds_, 1),
        )
        if adapter.validation_:
            result["validation"] = adapter.validation_
    result.update(
        n_train=int(train.size),
        n_judged=int(judged.size),
        unseen_types=sorted(unseen),
        **{m: round(v, 4) for m, v in judge(z, rows, judged, unseen).items()},
    )
    return result


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print a table and write the JSON."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DATA)
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--vectors", type=Path, help=".npy of one vector per labels.csv row")
    src.add_argument(
        "--extractor", default="squeezenet", help="registered extractor name, or auto (the default)"
    )
    ap.add_argument("--cache", default="/tmp", help="folder of the extracted vectors' cache")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument(
        "--configs",
        default=",".join(SHORT),
        help=f"comma-separated, of: {', '.join(SHORT)} (default all)",
    )
    ap.add_argument(
        "--combine", default="split", help="ProjectionAdapter combine= for two fields (split)"
    )
    ap.add_argument("--folds", type=int, default=3, help="ProjectionAdapter folds= (3)")
    ap.add_argument(
        "--no-refit", dest="refit", action="store_false", help="ProjectionAdapter refit=False"
    )
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    names = [SHORT[c.strip()] for c in args.configs.split(",") if c.strip()]
    rows = read_labels(args.data)
    x, source = load_vectors(args, rows)
    types = [row[TYPE] for row in rows]
    runs = []
    for seed in args.seeds:
        split = protocol(types, seed)  # one split per seed, shared by every configuration
        for name in names:
            start = time.perf_counter()
            run = run_config(
                name, x, rows, seed, split, combine=args.combine, refit=args.refit, folds=args.folds
            )
            runs.append(run)
            shown = {m: run[m] for m in METRICS}
            print(
                f"seed {seed} {name}: mix {run['mix']} {shown} "
                f"({time.perf_counter() - start:.0f} s)",
                flush=True,
            )
    table = []
    for name in names:
        mine = [r for r in runs if r["config"] == name]
        row: dict[str, Any] = {"config": name}
        row["mix"] = " ".join("-" if r["mix"] is None else f"{r['mix']:g}" for r in mine)
        for m in METRICS:
            row[m] = float(np.mean([r[m] for r in mine]))
        row["fit s"] = float(np.mean([r["fit_s"] for r in mine]))
        table.append(row)
    print(f"\nP@10 on the judged half, mean of seeds {args.seeds} ({source}):")
    print_table(table, ["config", "mix", *METRICS, "fit s"])
    write_json(
        args.out,
        {
            "benchmark": "adaptation on real photos: train on half, judge the other half",
            "data": str(args.data),
            "vectors": source,
            "protocol": {
                "split": "holdout_split(articleType, by='items', test_size=0.5, seed)",
                "unseen": "holdout_split(articleType, by='labels', test_size=0.2, "
                "seed + 1000) types removed from training",
                "metrics": "leave-one-out P@10 over the judged half; 'unseen alone' ranks the "
                "unseen types' items among themselves",
            },
            "combine": args.combine,
            "refit": args.refit,
            "folds": args.folds,
            "seeds": args.seeds,
            "summary": table,
            "runs": runs,
            "machine": machine_info(),
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
