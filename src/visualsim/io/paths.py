"""Safe names inside a saved folder and the limits every reader shares.

Part of :mod:`visualsim.io`; :mod:`visualsim.persistence` re-exports every public name.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Any, TypeVar

from ..errors import CatalogError

PathLike = str | os.PathLike[str]
T = TypeVar("T")

MANIFEST = "manifest.json"
"""The default manifest file name of every visualsim folder."""

TMP_PREFIX = ".visualsim-tmp-"
"""Prefix of every temporary file or folder visualsim writes."""

MARKER_SUFFIX = ".marker"
_MARKER_MAGIC = "visualsim temporary folder"

MAX_JSON_BYTES = 256 * 1024 * 1024
"""Default size limit of a JSON file read by :func:`read_json` (256 MiB)."""

MAX_JSON_DEPTH = 64
"""Default nesting limit of a JSON document read by :func:`read_json`."""

MAX_FILES = 1_000_000
"""Most files a manifest may list."""

MAX_COUNT = 2**40
"""Upper bound for counts read from manifests (items, rows, labels)."""

MAX_DIM = 1 << 20
"""Upper bound for a vector dimension read from a manifest."""

NUMERIC_DTYPES: tuple[str, ...] = (
    "bool",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "float16",
    "float32",
    "float64",
)
"""The ``.npy`` dtypes :func:`load_npy` accepts at most (callers narrow them)."""

_HEX64 = re.compile(r"[0-9a-f]{64}")
_FILE_TMP = re.compile(r"\.visualsim-tmp-(\d+)-[0-9a-f]{12}\..+\.part")

# --------------------------------------------------------------------------- names


def _err_path(path: PathLike) -> str:
    return repr(os.fspath(path))


def safe_child(root: PathLike, rel: Any, *, kind: str = "file", must_exist: bool = True) -> Path:
    """Return ``root / rel`` after checking that it stays inside ``root``.

    Parameters
    ----------
    root
        The folder (a catalogue, an index folder, ...).
    rel
        A relative name as a manifest lists it: ``"vectors.npy"`` or
        ``"index/manifest.json"`` (forward slashes only).
    kind
        ``"file"`` (a regular file), ``"dir"`` (a folder) or ``"any"``.
    must_exist
        Refuse a missing entry (``False``: only its parents must exist, and
        must be real folders).

    Raises
    ------
    CatalogError
        Naming the folder and the entry: ``rel`` is not a string, is empty,
        absolute, holds ``..``, ``.``, an empty part, a backslash, a NUL byte
        or a drive letter; ``root`` or any part on the way is a symbolic link;
        a part is missing or of the wrong kind.
    """
    base = Path(root)
    if not isinstance(rel, str):
        raise CatalogError(
            f"folder {_err_path(base)}: entry name {str(rel)[:80]!r} is a "
            f"{type(rel).__name__}, not a string; the folder is damaged"
        )
    shown = rel[:200]
    problem = None
    if not rel:
        problem = "is empty"
    elif "\x00" in rel:
        problem = "contains a NUL byte"
    elif "\\" in rel:
        problem = "contains a backslash"
    elif rel.startswith("/"):
        problem = "is absolute"
    elif re.match(r"^[A-Za-z]:", rel):
        problem = "starts with a drive letter"
    else:
        parts = rel.split("/")
        if any(p in ("", ".", "..") for p in parts):
            problem = "has an empty, '.' or '..' part"
        elif len(parts) > 32 or any(len(p.encode("utf-8", "replace")) > 255 for p in parts):
            problem = "is too long"
    if problem:
        raise CatalogError(
            f"folder {_err_path(base)}: entry {shown!r} {problem}; a saved folder may "
            "only name files inside itself"
        )
    _check_real_dir(base)
    current = base
    parts = rel.split("/")
    for n, part in enumerate(parts):
        current = current / part
        last = n == len(parts) - 1
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            if last and not must_exist:
                return current
            raise CatalogError(
                f"folder {_err_path(base)}: entry {shown!r} is missing"
                + ("" if last else f" (no {'/'.join(parts[: n + 1])!r})")
                + "; the folder is incomplete"
            ) from None
        except OSError as exc:
            raise CatalogError(
                f"folder {_err_path(base)}: cannot inspect entry {shown!r}: {exc.strerror}"
            ) from None
        if stat.S_ISLNK(st.st_mode):
            raise CatalogError(
                f"folder {_err_path(base)}: entry {'/'.join(parts[: n + 1])!r} is a symbolic "
                "link; visualsim reads only real files inside a saved folder"
            )
        if not last:
            if not stat.S_ISDIR(st.st_mode):
                raise CatalogError(
                    f"folder {_err_path(base)}: {'/'.join(parts[: n + 1])!r} (on the way to "
                    f"{shown!r}) is not a folder"
                )
        elif kind == "file" and not stat.S_ISREG(st.st_mode):
            raise CatalogError(f"folder {_err_path(base)}: entry {shown!r} is not a regular file")
        elif kind == "dir" and not stat.S_ISDIR(st.st_mode):
            raise CatalogError(f"folder {_err_path(base)}: entry {shown!r} is not a folder")
    return current


def _check_real_dir(folder: Path) -> None:
    try:
        st = os.lstat(folder)
    except FileNotFoundError:
        raise CatalogError(f"{_err_path(folder)} does not exist") from None
    except OSError as exc:
        raise CatalogError(f"cannot inspect {_err_path(folder)}: {exc.strerror}") from None
    if stat.S_ISLNK(st.st_mode):
        raise CatalogError(
            f"{_err_path(folder)} is a symbolic link; pass the folder it points to "
            "(os.path.realpath) instead"
        )
    if not stat.S_ISDIR(st.st_mode):
        raise CatalogError(f"{_err_path(folder)} is not a folder")


def list_files(folder: PathLike) -> list[str]:
    """Return the relative names of the regular files under ``folder``, sorted.

    Temporaries (``.visualsim-tmp-*``) are left out; a symbolic link or
    anything that is neither a file nor a folder is a ``CatalogError``.
    """
    root = Path(folder)
    _check_real_dir(root)
    out: list[str] = []
    stack = [(root, "")]
    while stack:
        current, prefix = stack.pop()
        with os.scandir(current) as entries:
            for entry in entries:
                if entry.name.startswith(TMP_PREFIX):
                    continue
                rel = f"{prefix}{entry.name}"
                if entry.is_symlink():
                    raise CatalogError(f"folder {_err_path(root)}: {rel!r} is a symbolic link")
                if entry.is_dir(follow_symlinks=False):
                    stack.append((Path(entry.path), rel + "/"))
                elif entry.is_file(follow_symlinks=False):
                    out.append(rel)
                else:
                    raise CatalogError(f"folder {_err_path(root)}: {rel!r} is not a regular file")
    return sorted(out)
