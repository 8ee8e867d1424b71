"""The ``visualsim`` command: index, query, similar, info, evaluate, duplicates, demo.

Exit codes: 0 success; 1 a problem with the data (unreadable catalogue,
image, ...); 2 a usage problem (bad arguments, a path that does not exist).
Errors are one line on stderr; results go to stdout (``--json`` for programs).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import __version__
from .errors import VisualsimError

EXIT_OK, EXIT_DATA, EXIT_USAGE = 0, 1, 2
INDEX_NAMES = ("flat", "ivf", "hnsw", "ivfpq", "sklearn")


class UsageError(Exception):
    """A command-line usage problem (exit code 2)."""


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``visualsim`` command."""
    parser = argparse.ArgumentParser(
        prog="visualsim",
        description="Visual product recommendation: find the catalogue items that look alike.",
    )
    parser.add_argument("--version", action="version", version=f"visualsim {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    # the same flags after the command name (`visualsim index DIR -q`); SUPPRESS keeps
    # the top-level value when they are not repeated there
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS)
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_parser = sub.add_parser

    def sub_add_parser(name: str, **kwargs: Any) -> argparse.ArgumentParser:
        return add_parser(name, parents=[common], **kwargs)

    sub.add_parser = sub_add_parser  # type: ignore[method-assign]

    p = sub.add_parser("index", help="index a folder of images into a catalogue")
    p.add_argument("images", type=Path, help="folder of images (sub-folders become labels)")
    p.add_argument("-o", "--output", type=Path, required=True, help="catalogue folder to write")
    p.add_argument(
        "--extractor",
        default="resnet50",
        help="extractor name: resnet50 (default), squeezenet, color, keras, or a registered one",
    )
    p.add_argument("--index", default="flat", choices=INDEX_NAMES, help="index type")
    p.add_argument(
        "--weights",
        help="resnet50/keras weights: 'imagenet' (default), 'none', or a local weights file",
    )
    p.add_argument(
        "--runtime",
        choices=("keras", "frozen", "openvino"),
        help="CNN inference runtime (resnet50/keras/squeezenet): 'frozen' folds batch norms "
        "once (~16%% faster per image); 'openvino' runs on OpenVINO at --precision "
        "(docs/speed.md)",
    )
    p.add_argument(
        "--precision",
        choices=("f32", "bf16", "int8", "auto"),
        help="with --runtime openvino: f32, bf16, int8 (calibrated on the first images), "
        "or auto (default: the fastest the CPU supports within the quality guard)",
    )
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument(
        "--reduce-dim", type=int, default=None, help="store PCA-reduced vectors of this size"
    )
    p.add_argument(
        "--storage", choices=("float32", "float16"), default="float32", help="stored vector dtype"
    )
    p.add_argument("--no-recursive", action="store_true", help="only files directly in IMAGES")
    p.add_argument("--overwrite", action="store_true", help="replace an existing catalogue")
    p.add_argument("--strict", action="store_true", help="stop at the first unreadable image")

    for name, helptext, target in (
        ("query", "recommend catalogue items for an image", ("image", Path, "the query image")),
        ("similar", "recommend items like a catalogue item", ("id", str, "a catalogue id")),
    ):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("catalog", type=Path, help="catalogue folder")
        p.add_argument(target[0], type=target[1], help=target[2])
        p.add_argument("-k", type=int, default=5, help="number of results (default 5)")
        p.add_argument(
            "--where",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="only items whose metadata KEY equals VALUE (repeat; VALUE a|b for any of)",
        )
        p.add_argument("--min-score", type=float, default=None, help="drop weaker results")
        p.add_argument("--json", action="store_true", help="print JSON")
        p.add_argument("--plot", type=Path, help="also write a PNG of the results")
        p.add_argument("--label", help="metadata key shown in the plot")

    p = sub.add_parser("info", help="describe a catalogue")
    p.add_argument("catalog", type=Path)
    p.add_argument("--json", action="store_true", help="print the manifest as JSON")
    p.add_argument(
        "--verify", action="store_true", help="also check every file's checksum and shape"
    )

    p = sub.add_parser("evaluate", help="leave-one-out retrieval quality against a label")
    p.add_argument("catalog", type=Path)
    p.add_argument("--label", required=True, help="metadata key holding the label")
    p.add_argument("-k", type=int, nargs="+", default=[1, 5, 10], help="cut-offs (default 1 5 10)")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("duplicates", help="list near-duplicate pairs in a catalogue")
    p.add_argument("catalog", type=Path)
    p.add_argument("--min-score", type=float, default=0.95)
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("demo", help="index a labelled set offline, query, plot and score it")
    p.add_argument("--out", type=Path, default=Path("demo-out"))
    p.add_argument("-n", type=int, default=2000, help="items to index (default 2000)")
    p.add_argument("--data", default="auto", choices=("auto", "fashion-mnist", "synthetic"))
    p.add_argument("--extractor", default="auto", help="auto, or an extractor name")
    p.add_argument("-k", type=int, default=5)

    p = sub.add_parser("serve", help="serve a catalogue over HTTP: JSON API and a search page")
    from .serve.server import build_parser as _serve_arguments  # stdlib only, no FastAPI

    _serve_arguments(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2),
        format="%(levelname)s %(name)s: %(message)s",
    )
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's C++ start-up lines
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    try:
        return int(COMMANDS[args.command](args) or EXIT_OK)
    except UsageError as exc:
        print(f"visualsim {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except VisualsimError as exc:
        print(f"visualsim {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_DATA
    except KeyboardInterrupt:
        print("visualsim: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return EXIT_OK


def _existing(path: Path, what: str, *, directory: bool | None = None) -> Path:
    if not path.exists():
        raise UsageError(f"{what} {str(path)!r} does not exist")
    if directory is True and not path.is_dir():
        raise UsageError(f"{what} {str(path)!r} is not a folder")
    if directory is False and path.is_dir():
        raise UsageError(f"{what} {str(path)!r} is a folder, not a file")
    return path


def _where(pairs: Sequence[str]) -> dict[str, Any] | None:
    where: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--where expects KEY=VALUE, got {pair!r}")
        options = [_scalar(v) for v in value.split("|")]
        where[key] = options if len(options) > 1 else options[0]
    return where or None


def _scalar(text: str) -> Any:
    """Interpret a command-line value: integers and floats as numbers, else text."""
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False, "null": None}.get(text, text)


def _match_where(where: dict[str, Any] | None) -> Any:
    """Match ``--where`` values to stored metadata loosely: ``5`` matches ``"5"`` and ``5``."""
    if where is None:
        return None

    def matches(meta: Any) -> bool:
        for key, want in where.items():
            if key not in meta:
                return False
            options = want if isinstance(want, list) else [want]
            if not any(meta[key] == o or str(meta[key]) == str(o) for o in options):
                return False
        return True

    return matches


def cmd_index(args: argparse.Namespace) -> int:
    from .datasets.folder import ImageFolder
    from .extractors.base import make_extractor
    from .recommender import Recommender

    _existing(args.images, "image folder", directory=True)
    if args.output.exists() and not args.overwrite:
        raise UsageError(f"{str(args.output)!r} already exists; pass --overwrite to replace it")
    params: dict[str, Any] = {}
    if args.weights is not None:
        if args.extractor not in ("resnet50", "keras"):
            raise UsageError("--weights applies to the resnet50 and keras extractors")
        params["weights"] = None if args.weights.lower() == "none" else args.weights
    for flag, key in (("--runtime", "runtime"), ("--precision", "precision")):
        if getattr(args, key) is not None:
            if args.extractor not in ("resnet50", "keras", "squeezenet"):
                raise UsageError(f"{flag} applies to the resnet50, keras and squeezenet extractors")
            params[key] = getattr(args, key)
    extractor = make_extractor(args.extractor, **params)
    dataset = ImageFolder(args.images, recursive=not args.no_recursive)
    if len(dataset) == 0:
        raise UsageError(f"no image files found in {str(args.images)!r}")
    rec = Recommender(extractor, args.index, reduce_dim=args.reduce_dim, storage=args.storage).fit(
        dataset,
        batch_size=args.batch_size,
        on_error="raise" if args.strict else "skip",
        progress=not args.quiet,
    )
    if not len(rec):
        print(
            f"visualsim index: error: none of the {len(dataset)} images could be read",
            file=sys.stderr,
        )
        for f in rec.failed_[:10]:
            print(f"  {f.id}: {f.reason}", file=sys.stderr)
        return EXIT_DATA
    path = rec.save(args.output, overwrite=args.overwrite)
    print(
        f"indexed {len(rec)} images into {path} ({extractor.name}, {rec.dim}-d, index {args.index})"
    )
    _print_runtime(extractor)
    if rec.failed_:
        print(f"{len(rec.failed_)} could not be read and were skipped:", file=sys.stderr)
        for f in rec.failed_:
            print(f"  {f.id}: {f.reason}", file=sys.stderr)
    return EXIT_OK


def _print_runtime(extractor: Any) -> None:
    from .extractors.openvino import runtime_summary

    summary = runtime_summary(extractor)
    if summary:
        print(summary)


def _load(catalog: Path) -> Any:
    from .recommender import Recommender

    _existing(catalog, "catalogue", directory=True)
    return Recommender.load(catalog)


def _report(args: argparse.Namespace, rec: Any, query: Any, results: Any, header: str) -> int:
    if args.json:
        print(json.dumps({"query": header, "results": [r.to_dict() for r in results]}, indent=2))
    else:
        print(header)
        for r in results:
            extra = ""
            if args.label and args.label in r.metadata:
                extra = f"  {args.label}={r.metadata[args.label]}"
            print(f"{r.rank:>3}. {r.score:.4f}  {r.id}{extra}")
        if not results:
            print("  (no results)")
    if args.plot:
        from .plotting import plot_recommendations, save_figure

        fig = plot_recommendations(query, results, label_key=args.label)
        save_figure(fig, args.plot)
        if not args.json:
            print(f"wrote {args.plot}")
    return EXIT_OK


def cmd_query(args: argparse.Namespace) -> int:
    _existing(args.image, "image", directory=False)
    rec = _load(args.catalog)
    results = rec.query(
        args.image, k=args.k, where=_match_where(_where(args.where)), min_score=args.min_score
    )
    return _report(args, rec, args.image, results, f"query: {args.image}")


def cmd_similar(args: argparse.Namespace) -> int:
    from .plotting import default_image_of

    rec = _load(args.catalog)
    item_id: Any = args.id
    if item_id not in rec and _scalar(item_id) in rec:
        item_id = _scalar(item_id)
    if item_id not in rec:
        raise UsageError(f"id {args.id!r} is not in the catalogue {str(args.catalog)!r}")
    results = rec.similar_to(
        item_id, k=args.k, where=_match_where(_where(args.where)), min_score=args.min_score
    )
    query: Any = None
    if args.plot:
        from .recommender import Recommendation

        query = default_image_of(Recommendation(item_id, 1.0, 0, rec.metadata_of(item_id)))
    return _report(args, rec, query, results, f"similar to: {item_id}")


def cmd_info(args: argparse.Namespace) -> int:
    from .catalog import read_manifest

    _existing(args.catalog, "catalogue", directory=True)
    manifest = read_manifest(args.catalog)
    if args.verify:
        from .catalog import read_catalog

        read_catalog(args.catalog, mmap=True, verify=True)
    if args.json:
        print(json.dumps(manifest, indent=2))
        return EXIT_OK
    size = sum(p.stat().st_size for p in args.catalog.rglob("*") if p.is_file())
    ext, idx = manifest["extractor"], manifest["index"]
    print(f"catalogue  {args.catalog}")
    print(f"items      {manifest['count']:,}")
    print(f"vectors    {manifest['dim']}-d {manifest.get('dtype', 'float32')}")
    print(f"extractor  {ext.get('name')} {json.dumps(ext.get('config', {}))}")
    print(f"index      {idx.get('name')} {json.dumps(idx.get('config', {}))}")
    print(f"on disk    {size / 2**20:.1f} MiB in {len(manifest['files']) + 1} files")
    print(
        f"written    {manifest.get('created', '?')} by visualsim {manifest.get('library_version')}"
    )
    return EXIT_OK


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluation import evaluate

    rec = _load(args.catalog)
    if any(k < 1 for k in args.k):
        raise UsageError("-k values must be positive")
    report = evaluate(rec, args.label, k=tuple(args.k))
    print(json.dumps(report.to_dict(), indent=2) if args.json else report)
    return EXIT_OK


def cmd_duplicates(args: argparse.Namespace) -> int:
    rec = _load(args.catalog)
    pairs = rec.find_duplicates(args.min_score)
    if args.json:
        print(json.dumps([{"a": a, "b": b, "score": s} for a, b, s in pairs], indent=2))
    else:
        for a, b, s in pairs:
            print(f"{s:.4f}  {a}  {b}")
        print(f"{len(pairs)} pairs with score >= {args.min_score}")
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(
        args.out,
        n=args.n,
        data=args.data,
        extractor=args.extractor,
        k=args.k,
        progress=not args.quiet,
        say=print,
    )
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    """``visualsim serve CATALOG``: run the HTTP app until SIGTERM (needs visualsim[serve])."""
    from .serve.server import serve_from_args

    serve_from_args(args)
    return EXIT_OK


COMMANDS = {
    "index": cmd_index,
    "query": cmd_query,
    "similar": cmd_similar,
    "info": cmd_info,
    "evaluate": cmd_evaluate,
    "duplicates": cmd_duplicates,
    "demo": cmd_demo,
    "serve": cmd_serve,
}

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
