"""The commands that run something: demo (an offline end-to-end run) and serve (HTTP)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._common import EXIT_OK, _k, _positive_int, _progress
from .specs import build_extractor

if TYPE_CHECKING:
    from ._common import Subparsers


def add_demo_parser(sub: Subparsers) -> None:
    """``visualsim demo``."""
    p = sub.add_parser("demo", help="index a labelled set offline, query, plot and score it")
    p.add_argument("--out", type=Path, default=Path("demo-out"))
    p.add_argument("-n", type=_positive_int, default=2000, help="items to index (default 2000)")
    p.add_argument("--data", default="auto", choices=("auto", "fashion-mnist", "synthetic"))
    p.add_argument(
        "--extractor", default="auto", metavar="SPEC", help="auto, or an --extractor SPEC"
    )
    p.add_argument("-k", type=_k, default=5)


def add_serve_parser(sub: Subparsers) -> None:
    """``visualsim serve CATALOG`` (its options are the server's own)."""
    p = sub.add_parser("serve", help="serve a catalogue over HTTP: JSON API and a search page")
    from ..serve.server import build_parser as _serve_arguments  # stdlib only, no FastAPI

    _serve_arguments(p)


def cmd_demo(args: argparse.Namespace) -> int:
    from ..demo import run_demo

    extractor: Any = args.extractor
    if extractor != "auto":
        extractor = build_extractor(extractor)
    run_demo(
        args.out,
        n=args.n,
        data=args.data,
        extractor=extractor,
        k=args.k,
        progress=_progress(args),
        say=print,
    )
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    """``visualsim serve CATALOG``: run the HTTP app until SIGTERM (needs visualsim[serve])."""
    from ..serve.server import serve_from_args

    serve_from_args(args)
    return EXIT_OK
