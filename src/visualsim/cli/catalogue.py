"""The commands that write or describe a catalogue: index, add, remove, sync, info."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import EXIT_DATA, ConfigError
from ._common import (
    _SERVE_FIX,
    EXIT_OK,
    UsageError,
    _count,
    _existing,
    _extractor_names,
    _index_name,
    _index_names,
    _load,
    _positive_int,
    _print_failed,
    _print_json,
    _progress,
    _scalar,
    _tally,
    _warn_unservable,
    printable,
)
from .specs import _auto_extractor, build_extractor, build_index

if TYPE_CHECKING:
    from ._common import Subparsers

# -- the parsers --------------------------------------------------------------------


def add_index_parser(sub: Subparsers) -> None:
    """``visualsim index SOURCE -o CATALOG``."""
    from ..extractors.keras import RUNTIMES
    from ..extractors.openvino import PRECISIONS
    from ..reduction import STORAGE_DTYPES

    extractors = ", ".join(_extractor_names())
    p = sub.add_parser("index", help="index a folder of images or a product feed into a catalogue")
    p.add_argument(
        "images",
        type=Path,
        metavar="SOURCE",
        help="a folder of images (sub-folders become labels), or a product feed "
        "(.csv, .tsv, .jsonl, .parquet: one row per product)",
    )
    p.add_argument("-o", "--output", type=Path, required=True, help="catalogue folder to write")
    p.add_argument(
        "--extractor",
        default="auto",
        metavar="SPEC",
        help=f"auto (default: resnet50 where its ImageNet weights are on disk, else the offline "
        f"product mix squeezenet+color+silhouette), a registered name ({extractors}), or parts "
        "joined by '+' with optional weights, e.g. squeezenet+color:4:1",
    )
    p.add_argument(
        "--extractor-config",
        metavar="JSON",
        help="extractor options as JSON, e.g. '{\"bins\": [8, 4, 4]}'; per part for a "
        'combination (\'{"color": {...}}\'); or a whole {"name", "config"} spec',
    )
    p.add_argument(
        "--index",
        default=None,
        type=_index_name,
        metavar="NAME",
        help=f"index type: {_index_names()} (default flat)",
    )
    p.add_argument(
        "--index-config",
        metavar="JSON_OR_PATH",
        help='index options as JSON or a JSON file, e.g. \'{"M": 16, "ef_search": 128}\' with '
        '--index hnsw; or a whole {"name", "config"} spec (visualsim info --json)',
    )
    p.add_argument(
        "--partition-by",
        metavar="FIELD",
        help="keep one small index per value of this metadata field (e.g. category), so "
        "filters on it are as fast as unfiltered queries (approximate indexes only)",
    )
    p.add_argument(
        "--weights",
        help="resnet50/keras weights: 'imagenet' (default), 'none', or a local weights file",
    )
    p.add_argument(
        "--runtime",
        choices=RUNTIMES,
        help="CNN inference runtime (resnet50/keras/squeezenet): 'frozen' folds batch norms "
        "once (~16%% faster per image); 'openvino' runs on OpenVINO at --precision "
        "(docs/speed.md)",
    )
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="with --runtime openvino: f32, bf16, int8 (calibrated on the first images), "
        "or auto (default: the fastest the CPU supports within the quality guard)",
    )
    p.add_argument("--batch-size", type=_positive_int, default=None, metavar="N")
    p.add_argument(
        "--reduce-dim",
        type=_positive_int,
        default=None,
        metavar="D",
        help="store PCA-reduced vectors of this size",
    )
    p.add_argument(
        "--storage", choices=STORAGE_DTYPES, default="float32", help="stored vector dtype"
    )
    p.add_argument("--no-recursive", action="store_true", help="only files directly in SOURCE")
    p.add_argument("--overwrite", action="store_true", help="replace an existing catalogue")
    _source_options(p)


def add_add_parser(sub: Subparsers) -> None:
    """``visualsim add CATALOG SOURCE``."""
    p = sub.add_parser("add", help="add a folder's or a feed's new items to a catalogue")
    p.add_argument("catalog", type=Path, help="catalogue folder (updated in place)")
    p.add_argument("images", type=Path, metavar="SOURCE", help="folder of images or product feed")
    p.add_argument("--batch-size", type=_positive_int, default=None, metavar="N")
    p.add_argument("--no-recursive", action="store_true", help="only files directly in SOURCE")
    _source_options(p)


def add_remove_parser(sub: Subparsers) -> None:
    """``visualsim remove CATALOG ID ...``."""
    p = sub.add_parser("remove", help="remove items from a catalogue by id")
    p.add_argument("catalog", type=Path, help="catalogue folder (updated in place)")
    p.add_argument("ids", nargs="*", metavar="ID", help="ids to remove")
    p.add_argument("--ids-file", type=Path, help="a file of ids to remove, one per line")


def add_sync_parser(sub: Subparsers) -> None:
    """``visualsim sync CATALOG SOURCE``."""
    p = sub.add_parser(
        "sync", help="make a catalogue match a folder or feed: add, update, remove what changed"
    )
    p.add_argument("catalog", type=Path, help="catalogue folder (updated in place)")
    p.add_argument("images", type=Path, metavar="SOURCE", help="folder of images or product feed")
    p.add_argument("--batch-size", type=_positive_int, default=None, metavar="N")
    p.add_argument("--no-recursive", action="store_true", help="only files directly in SOURCE")
    p.add_argument("--dry-run", action="store_true", help="print what would change; change nothing")
    _source_options(p)


def add_info_parser(sub: Subparsers) -> None:
    """``visualsim info CATALOG``."""
    p = sub.add_parser("info", help="describe a catalogue")
    p.add_argument("catalog", type=Path)
    p.add_argument("--json", action="store_true", help="print the manifest as JSON")
    p.add_argument(
        "--verify", action="store_true", help="also check every file's checksum and shape"
    )


def _source_options(p: argparse.ArgumentParser) -> None:
    """Options of commands that read a folder or a feed: index, add, sync."""
    p.add_argument("--id-column", default="id", help="feed column holding the ids (default id)")
    p.add_argument(
        "--image-column",
        default="image",
        help="feed column holding the image paths (default image)",
    )
    p.add_argument(
        "--root", type=Path, help="folder the feed's relative image paths start from (default: "
        "the feed's folder)",
    )  # fmt: skip
    p.add_argument(
        "--allow-outside-images",
        action="store_true",
        help="read a feed's image paths that lie outside its root (absolute, '..', a symlink "
        "out); without it such a row is refused, as a feed may be a stranger's",
    )
    p.add_argument(
        "--dtype",
        action="append",
        default=[],
        metavar="COLUMN=KIND",
        help="declare a feed column's kind (int, float, bool, str); others are inferred",
    )
    p.add_argument(
        "--checkpoint-dir",
        type=Path,
        help="make extraction resumable: rerun the same command to continue after a crash",
    )
    p.add_argument("--strict", action="store_true", help="stop at the first unreadable image")


# -- the commands -------------------------------------------------------------------


def cmd_index(args: argparse.Namespace) -> int:
    from ..recommender import Recommender

    _existing(args.images, "source")
    if args.output.exists() and not args.overwrite:
        raise UsageError(f"{str(args.output)!r} already exists; pass --overwrite to replace it")
    chosen: str | None = None  # what `auto` picked, said once the catalogue is written
    if args.extractor == "auto" and args.extractor_config is None:
        extractor, chosen = _auto_extractor(None, args.weights, args.runtime, args.precision)
    else:
        extractor = build_extractor(
            args.extractor,
            args.extractor_config,
            weights=args.weights,
            runtime=args.runtime,
            precision=args.precision,
        )
    index = build_index(args.index, args.index_config)
    dataset, image_root, dtypes = _read_source(args, {})
    try:
        rec = Recommender(
            extractor,
            index,
            reduce_dim=args.reduce_dim,
            storage=args.storage,
            image_root=image_root,
            dtypes=dtypes,
            partition_by=args.partition_by,
        )
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    rec.fit(
        dataset,
        batch_size=args.batch_size,
        on_error="raise" if args.strict else "skip",
        progress=_progress(args),
        checkpoint_dir=args.checkpoint_dir,
    )
    if not len(rec):
        print(
            f"visualsim index: error: none of the {len(dataset)} images could be read",
            file=sys.stderr,
        )
        for f in rec.failed_[:10]:
            print(f"  {printable(f.id)}: {printable(f.reason)}", file=sys.stderr)
        return EXIT_DATA
    rec.save(args.output, overwrite=args.overwrite)
    _warn_unservable(rec, "pass --root FOLDER holding them all")
    print(
        f"indexed {_count(len(rec), 'image')} into {args.output} "
        f"({extractor.name}, {rec.dim}-d, index {index if isinstance(index, str) else index.name})"
    )
    if chosen is not None:
        print(f"extractor (auto): {chosen}")
    if args.runtime is not None or args.precision is not None:  # the default says nothing new
        _print_runtime(extractor)
    _print_failed(rec.failed_)
    return EXIT_OK


def _print_runtime(extractor: Any) -> None:
    from ..extractors.openvino import runtime_summary

    summary = runtime_summary(extractor)
    if summary:
        print(summary)


def _dtypes(pairs: Sequence[str]) -> dict[str, str]:
    from ..datasets.csv import KINDS

    declared: dict[str, str] = {}
    for pair in pairs:
        column, sep, kind = pair.partition("=")
        if not sep or not column or kind not in KINDS:
            raise UsageError(
                f"--dtype expects COLUMN=KIND with KIND one of {', '.join(KINDS)}, got {pair!r}"
            )
        declared[column] = kind
    return declared


def _read_source(
    args: argparse.Namespace, known_fields: Mapping[str, str]
) -> tuple[Any, Path, dict[str, str]]:
    """Return ``(items, image root, declared dtypes)`` for a folder or a feed file.

    ``known_fields`` (a catalogue's ``fields_``) types the feed's columns the way the
    catalogue already stores them, so a sync never turns a float column into text.
    """
    from ..datasets.folder import ImageFolder
    from ..feeds import ProductFeed, is_feed

    source: Path = args.images
    declared = _dtypes(args.dtype)
    if source.is_dir():
        feed_only = [
            flag
            for flag, value in (
                ("--root", args.root),
                ("--dtype", args.dtype),
                ("--allow-outside-images", args.allow_outside_images or None),
            )
            if value not in (None, [])
        ]
        if feed_only:
            verb = "apply" if len(feed_only) > 1 else "applies"
            raise UsageError(f"{' and '.join(feed_only)} {verb} to a feed file, not to a folder")
        folder = ImageFolder(source, recursive=not args.no_recursive)
        if len(folder) == 0:
            raise UsageError(f"no image files found in {str(source)!r}")
        return folder, source, {}
    if not is_feed(source):
        raise UsageError(
            f"source {str(source)!r} is neither a folder nor a feed (.csv, .tsv, .jsonl, "
            ".ndjson, .parquet)"
        )
    if args.root is not None:
        _existing(args.root, "--root", directory=True)
    from ..datasets.csv import KINDS

    inherited = {k: v for k, v in known_fields.items() if v in KINDS}
    feed = ProductFeed(
        source,
        id_column=args.id_column,
        image_column=args.image_column,
        root=args.root,
        dtypes=declared,
        known_dtypes=inherited,
        check_files=True,
        allow_outside=args.allow_outside_images,
    )
    if feed.issues:
        print(f"{_count(len(feed.issues), 'row')} of {printable(source)} skipped:", file=sys.stderr)
        for issue in feed.issues[:20]:
            print(
                f"  line {issue.line} ({printable(issue.id)}): {printable(issue.problem)}",
                file=sys.stderr,
            )
        if len(feed.issues) > 20:
            print(f"  ... and {len(feed.issues) - 20} more", file=sys.stderr)
    # a feed of absolute paths (or of ../ paths) implies the folder that holds its
    # images; --root, when given, is the user's choice and wins
    root = feed.root if args.root is not None else (feed.implied_root() or feed.root)
    return feed, root, declared


def _save_in_place(rec: Any, catalog: Path) -> None:
    rec.save(catalog, overwrite=True)


def cmd_add(args: argparse.Namespace) -> int:
    rec = _load(args.catalog)
    items, _, _ = _read_source(args, rec.fields_)
    present = [item.id for item in items if item.id in rec]
    if present:
        raise UsageError(
            f"{_count(len(present), 'id')} already in the catalogue "
            f"({', '.join(map(repr, present[:5]))}{', ...' if len(present) > 5 else ''}); "
            "`visualsim sync` updates them"
        )
    before = len(rec)
    rec.add(
        items,
        batch_size=args.batch_size,
        on_error="raise" if args.strict else "skip",
        progress=_progress(args),
        checkpoint_dir=args.checkpoint_dir,
    )
    added = len(rec) - before
    if added:
        _save_in_place(rec, args.catalog)
        _warn_unservable(rec, _SERVE_FIX)
    print(f"added {_count(added, 'item')} to {args.catalog} ({len(rec)} now)")
    _print_failed(rec.failed_)
    return EXIT_OK if added or not rec.failed_ else EXIT_DATA


def _ids_to_remove(args: argparse.Namespace, rec: Any) -> list[Any]:
    texts = list(args.ids)
    if args.ids_file is not None:
        _existing(args.ids_file, "--ids-file", directory=False)
        lines = args.ids_file.read_text(encoding="utf-8").splitlines()
        texts += [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    if not texts:
        raise UsageError("name the ids to remove (ID ... or --ids-file FILE)")
    found, unknown = [], []
    for text in texts:
        if text in rec:
            found.append(text)
        elif _scalar(text) in rec:
            found.append(_scalar(text))
        else:
            unknown.append(text)
    if unknown:
        raise UsageError(
            f"{_count(len(unknown), 'id')} not in the catalogue {str(args.catalog)!r} "
            f"({', '.join(map(repr, unknown[:5]))}{', ...' if len(unknown) > 5 else ''}); "
            "nothing was removed"
        )
    return list(dict.fromkeys(found))


def cmd_remove(args: argparse.Namespace) -> int:
    rec = _load(args.catalog)
    ids = _ids_to_remove(args, rec)
    rec.remove(ids)
    _save_in_place(rec, args.catalog)
    print(f"removed {_count(len(ids), 'item')} from {args.catalog} ({len(rec)} left)")
    return EXIT_OK


def cmd_sync(args: argparse.Namespace) -> int:
    """Extract only new or changed images (by SHA-256), update changed metadata, drop
    the ids the source no longer lists, and print what happened (:meth:`Recommender.sync`)."""
    rec = _load(args.catalog)
    items, _, _ = _read_source(args, rec.fields_)
    report = rec.sync(
        items,
        dry_run=args.dry_run,
        batch_size=args.batch_size,
        on_error="raise" if args.strict else "skip",
        progress=_progress(args),
        checkpoint_dir=args.checkpoint_dir,
    )
    if report.dry_run:
        print(
            f"sync {printable(args.catalog)} from {printable(args.images)} "
            "(dry run, nothing changed): " + _tally(report.counts())
        )
        return EXIT_OK
    if report.changed:
        _save_in_place(rec, args.catalog)
        _warn_unservable(rec, _SERVE_FIX)
    print(
        f"sync {printable(args.catalog)} from {printable(args.images)}: " + _tally(report.counts())
    )
    _print_failed(report.failed)
    return EXIT_OK


def cmd_info(args: argparse.Namespace) -> int:
    from ..catalog import read_manifest
    from ..recommender import Recommender

    _existing(args.catalog, "catalogue", directory=True)
    manifest = read_manifest(args.catalog)
    # every check a loading command makes; --verify adds the checksums and the index
    rec = Recommender.load(args.catalog, mmap=True, verify=args.verify)
    verified = None
    if args.verify:
        verified = (
            f"{len(manifest.get('files', {}))} files match their SHA-256 in manifest.json; "
            f"{len(rec):,} vectors, ids and metadata rows agree in number and shape; the "
            "extractor and index configurations rebuild and the index agrees with the vectors"
        )
    failed = [{"id": f.id, "source": f.source, "reason": f.reason} for f in rec.failed_]
    if args.json:
        extra: dict[str, Any] = {"failed_inputs": failed}
        if verified is not None:
            extra["verified"] = verified
        _print_json({**manifest, **extra})
        return EXIT_OK
    size = sum(p.stat().st_size for p in args.catalog.rglob("*") if p.is_file())
    ext, idx = manifest["extractor"], manifest["index"]
    fields = rec.fields_
    print(f"catalogue  {printable(args.catalog)}")
    print(f"items      {len(rec):,}")
    print(f"vectors    {rec.dim}-d {printable(manifest.get('storage', 'float32'))}")
    print(f"extractor  {printable(ext.get('name'))} {json.dumps(ext.get('config', {}))}")
    print(f"index      {printable(idx.get('name'))} {json.dumps(idx.get('config', {}))}")
    if fields:
        listed = ", ".join(f"{printable(k)} ({printable(v)})" for k, v in sorted(fields.items()))
        print("fields     " + listed)
    print(f"on disk    {size / 2**20:.1f} MiB in {len(manifest['files']) + 1} files")
    generation = manifest.get("generation")
    print(
        f"written    by visualsim {printable(manifest.get('library_version'))}"
        + (f", generation {generation} (saves so far)" if generation is not None else "")
    )
    if verified is not None:
        print(f"verified   {verified}")
    if failed:
        print(f"failed     {len(failed)} inputs could not be read when it was built:")
        for f in failed[:20]:
            print(f"  {printable(f['id'])}: {printable(f['reason'])}")
        if len(failed) > 20:
            print(f"  ... and {len(failed) - 20} more (visualsim info --json lists them all)")
    return EXIT_OK
