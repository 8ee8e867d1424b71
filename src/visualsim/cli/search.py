"""The commands that search a catalogue: query, similar, duplicates."""

from __future__ import annotations

import argparse
import csv
import math
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from ._common import (
    EXIT_OK,
    UsageError,
    _box,
    _check_plot_target,
    _count,
    _existing,
    _finite_float,
    _k,
    _load,
    _print_json,
    _scalar,
    _score,
    printable,
)

if TYPE_CHECKING:
    from ._common import Subparsers

# -- the parsers --------------------------------------------------------------------


def add_search_parsers(sub: Subparsers) -> None:
    """``visualsim query CATALOG IMAGE`` and ``visualsim similar CATALOG ID``."""
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
            help="only items whose metadata match, in the filter language (docs/filters.md): "
            'a comparison, "price <= 50" or "category == \'shoes\'" (== != < <= > >=, text '
            "in quotes); a list, \"colour in ['red', 'blue']\", \"colour not in ['red']\"; a "
            'bare true/false field, "in_stock"; these joined by and, or, not and parentheses, '
            "\"(price < 50 or on_sale) and not brand == 'acme'\"; a field with odd characters "
            'in backticks, "`size (EU)` >= 40"; or the short KEY=VALUE, category=shoes|bags '
            "(| for any of). Repeat --where: every one must match",
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


def add_duplicates_parser(sub: Subparsers) -> None:
    """``visualsim duplicates CATALOG``."""
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


# -- --where ------------------------------------------------------------------------


LEGACY_WHERE = re.compile(r"^(?P<key>[A-Za-z_][\w.\-]*)=(?!=)(?P<value>.*)$", re.S)


def _where(filters: Sequence[str], fields: Mapping[str, str]) -> Any:
    """Turn ``--where`` values into one filter for ``rec.query(where=...)``.

    Each value is the filter language (``"price < 50 and category == 'shoes'"``) or
    the older ``KEY=VALUE`` (``a|b`` for any of), whose VALUE is read as the field's
    stored kind (``fields``: ``rec.fields_``). Several values must all match.
    """
    from ..filters import And, FilterError, from_mapping, parse_filter

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


# -- the commands -------------------------------------------------------------------


def _labels(result: Any, labels: Sequence[str]) -> str:
    """The ``--label`` columns of one result, each escaped for the terminal."""
    return "".join(
        f"  {printable(key)}={printable(result.metadata[key])}"
        for key in labels
        if key in result.metadata
    )


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
        print(printable(header))
        for r in results:
            extra = _labels(r, args.label)
            print(f"{r.rank:>3}. {_score(r.score):.4f}  {printable(r.id)}{extra}")
        if not results:
            print("  (no results)")
    if args.plot:
        from ..plotting import plot_recommendations, save_figure

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
    from ..filters import FilterError

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
    print(f"query: {printable(name)}")
    for n, region in enumerate(found, 1):
        box = ",".join(str(v) for v in region.box)
        print(f"product {n}: box {box} (score {region.score:.2f})")
        for r in region.results:
            extra = _labels(r, args.label)
            print(f"  {r.rank:>3}. {_score(r.score):.4f}  {printable(r.id)}{extra}")
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


def cmd_duplicates(args: argparse.Namespace) -> int:
    from ..duplicates import check_min_score

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
                rest = "  ".join(printable(m) for m in g.members[1:])
                keep = printable(g.representative)
                print(f"{_score(g.score):.4f}  keep {keep}  duplicates: {rest}")
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
            print(f"{_score(s):.4f}  {printable(a)}  {printable(b)}")
        print(f"{_count(len(pairs), 'pair')} with score >= {threshold}")
    return EXIT_OK
