"""What every ``visualsim`` command shares: the usage error, the one-line parser, the
argument types (each refuses a bad value in one line, exit 2) and the small printers."""

from __future__ import annotations

import argparse
import contextlib
import difflib
import importlib.util
import json
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from ..errors import EXIT_USAGE, ConfigError

Command = Callable[[argparse.Namespace], int]
"""A command: the parsed arguments in, the exit code out."""

EXIT_OK = 0


class UsageError(Exception):
    """A command-line usage problem (exit code 2)."""

    __module__ = "visualsim.cli"  # its public home: tracebacks name visualsim.cli.UsageError
    exit_code = EXIT_USAGE


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (argparse prints usage + error)."""

    def error(self, message: str) -> NoReturn:
        line = _one_line(message)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {line} (see: {self.prog} --help)\n")


if TYPE_CHECKING:
    Subparsers = argparse._SubParsersAction[_Parser]
    """The ``COMMAND`` sub-parsers each command module adds its parser to."""


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


def printable(value: Any) -> str:
    """``str(value)`` safe to print on a terminal: control characters (ESC, CR, newline,
    bidi overrides, ...) become their escapes (``\\x1b``); other Unicode is kept.

    Ids, metadata values, paths and reasons come from catalogues and feeds that may be
    a stranger's: printed raw, an escape sequence would drive the terminal.

    >>> printable("a\\x1b[31mred"), printable("caf\\u00e9 \\u2014 ok"), printable(7)
    ('a\\\\x1b[31mred', 'café — ok', '7')
    """
    text = str(value)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


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
    from ..validation import check_k

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
    from ..crop import parse_box

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
    from ..indexes.base import INDEXES

    known = INDEXES.names()
    if text not in known:
        raise argparse.ArgumentTypeError(
            f"unknown index {text!r}{_did_you_mean(text, known)} Known: {', '.join(known)}"
        )
    return text


def _index_names() -> str:
    from ..indexes.base import INDEXES

    return ", ".join(INDEXES.names())


def _extractor_names() -> list[str]:
    from ..extractors.base import EXTRACTORS

    return EXTRACTORS.names()


# -- shared by the commands ---------------------------------------------------------


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


def _count(n: int, noun: str) -> str:
    """``"1 item"``, ``"2 items"``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


_SERVE_FIX = "serve with --image-root FOLDER holding them all, or move them under the root"


def _warn_unservable(rec: Any, fix: str) -> None:
    """Warn (stderr) when stored image paths lie outside the catalogue's image root."""
    from ..serve._adapters import outside_warning

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
            print(f"  {printable(f.id)}: {printable(f.reason)}", file=sys.stderr)


def _load(catalog: Path) -> Any:
    from ..recommender import Recommender

    _existing(catalog, "catalogue", directory=True)
    return Recommender.load(catalog)
