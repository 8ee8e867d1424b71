"""The commands that score a catalogue or learn from its labels: evaluate, adapt."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._common import (
    EXIT_OK,
    UsageError,
    _finite_float,
    _k,
    _load,
    _Once,
    _positive_int,
    _print_json,
    _progress,
)

if TYPE_CHECKING:
    from ._common import Subparsers


def add_evaluate_parser(sub: Subparsers) -> None:
    """``visualsim evaluate CATALOG --label FIELD``."""
    p = sub.add_parser("evaluate", help="leave-one-out retrieval quality against a label")
    p.add_argument("catalog", type=Path)
    p.add_argument(
        "--label",
        required=True,
        action=_Once,
        help="metadata key holding the label; several comma-separated (articleType,baseColour): "
        "relevant when every one matches",
    )
    p.add_argument("-k", type=_k, nargs="+", default=[1, 5, 10], help="cut-offs (default 1 5 10)")
    p.add_argument("--json", action="store_true")


def add_adapt_parser(sub: Subparsers) -> None:
    """``visualsim adapt CATALOG --label FIELD -o OUT``."""
    p = sub.add_parser(
        "adapt", help="learn a projection for a catalogue from a label; report held-out quality"
    )
    p.add_argument("catalog", type=Path)
    p.add_argument(
        "--label",
        required=True,
        action=_Once,
        help="metadata field to learn (category, product id), or several, comma-separated "
        "(articleType,baseColour: learns the type without trading the colour away)",
    )
    p.add_argument("-o", "--output", type=Path, required=True, help="adapted catalogue to write")
    p.add_argument(
        "--holdout",
        choices=("both", "items", "labels"),
        default="both",
        help="score on labels never trained on and on new items of known labels (default), "
        "or on one of them",
    )
    p.add_argument("--test-size", type=_finite_float, default=0.2, help="share held out (0.2)")
    p.add_argument("--groups", default=None, help="metadata field of product ids (kept together)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=_positive_int, default=20)
    p.add_argument(
        "--folds",
        type=_positive_int,
        default=3,
        help="validation splits the guard trains and scores on before choosing the mix (3); "
        "1 is faster",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing catalogue")
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ..evaluation import evaluate

    rec = _load(args.catalog)
    fields = [name.strip() for name in args.label.split(",") if name.strip()]
    if len(fields) > 1:
        unknown = [f for f in fields if f not in rec.fields_]
        if unknown:
            raise UsageError(
                f"--label: no item has {', '.join(map(repr, unknown))}; fields: "
                f"{', '.join(sorted(rec.fields_)) or 'none'}"
            )
    labels: Any = tuple(fields) if len(fields) > 1 else args.label
    report = evaluate(rec, labels, k=tuple(args.k), progress=_progress(args))
    if args.json:
        _print_json(report.to_dict())
    else:
        print(report)
    return EXIT_OK


def cmd_adapt(args: argparse.Namespace) -> int:
    from ..adaptation import ProjectionAdapter, adapt_recommender

    if args.output.exists() and not args.overwrite:
        raise UsageError(f"{str(args.output)!r} already exists; pass --overwrite to replace it")
    rec = _load(args.catalog)
    adapter = ProjectionAdapter(
        seed=args.seed, epochs=args.epochs, folds=args.folds, validation=args.holdout
    )
    fields = [name.strip() for name in args.label.split(",")]
    adapted, report = adapt_recommender(
        rec,
        fields[0] if len(fields) == 1 else fields,
        holdout=args.holdout,
        test_size=args.test_size,
        groups=args.groups,
        seed=args.seed,
        adapter=adapter,
    )
    adapted.save(args.output, overwrite=args.overwrite)
    if args.json:
        _print_json(report.to_dict())
    else:
        print(report)
        print(f"wrote {args.output}")
    return EXIT_OK
