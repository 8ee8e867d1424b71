"""One way to write and read a visualsim folder, used by every on-disk format.

Catalogues, indexes, reducers, shard folders and checkpoints all go through
this module, so they share one set of guarantees:

* **A folder is a closed world.** Every name a manifest lists goes through
  :func:`safe_child`: absolute names, ``..``, backslashes, NUL bytes and any
  symbolic link on the way (the folder itself included) are refused, so a
  saved folder can never make visualsim open or hash a file outside it.
* **Bounded reads.** :func:`read_json` checks the size before reading and the
  nesting depth before parsing; :func:`load_npy` parses the ``.npy`` header
  and compares the size it claims with the file's real size *before*
  allocating; numbers too big, NaN, invalid UTF-8 or duplicate keys are a
  :class:`~visualsim.errors.CatalogError` naming the file, never a
  ``RecursionError``, ``MemoryError`` or ``ValueError``.
* **One manifest scheme.** Every format is a row of :data:`FORMATS` (kind,
  version, manifest name, old tag spellings still read), and every manifest
  carries ``format`` (``"visualsim.<kind>"``), ``format_version``,
  ``library_version`` and ``files`` (relative name -> SHA-256):
  :func:`write_manifest` writes it, :func:`read_manifest` reads it bounded
  (size, depth) and checks it all, and the ``field_*`` helpers check every
  other field's type and range.
* **Durable, atomic writes.** :func:`write_bytes_atomic` and friends write a
  temporary sibling, fsync it, rename it over the target and fsync the folder.
  :func:`replace_dir` swaps a complete new folder in with one
  ``renameat2(RENAME_EXCHANGE)`` (Linux), so the old or the new folder is at
  the path at every instant, and only replaces a folder that carries a
  manifest of the same format (or an empty folder): anything else is a
  ``CatalogError`` and nothing is touched.
* **Temporaries that clean up after a crash.** Temporary folders are named
  ``.visualsim-tmp-*`` and come with a sibling marker file naming the process
  that made them; :func:`remove_stale_temps` (called by every folder write)
  removes those whose process is gone. A name without our marker is never
  touched.

Readers that may race a writer use :func:`read_consistent`, the one loop that
retries a read that saw the folder change underneath it.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import hashlib
import json
import math
import os
import re
import shutil
import stat
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

import numpy as np

from .errors import CatalogError, ConfigError, FormatVersionError, VisualsimError

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


# --------------------------------------------------------------------------- bounded reads


def _read_bytes(path: Path, max_bytes: int) -> bytes:
    """Read a regular file (never following a final symlink), refusing one over ``max_bytes``."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise CatalogError(f"{_err_path(path)} is a symbolic link; not read") from None
        raise CatalogError(f"cannot read {_err_path(path)}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise CatalogError(f"{_err_path(path)} is not a regular file")
        if st.st_size > max_bytes:
            raise CatalogError(
                f"{_err_path(path)} is {st.st_size:,} bytes, more than the {max_bytes:,} "
                "allowed for it; the file is damaged or not a visualsim file"
            )
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise CatalogError(f"{_err_path(path)} grew past {max_bytes:,} bytes while being read")
    return data


def json_depth(data: bytes) -> int:
    """Return the bracket nesting depth of a JSON text, brackets inside strings ignored.

    Vectorised (a few numpy passes over the bytes), so it costs little next
    to parsing even for large files.
    """
    arr = np.frombuffer(data, dtype=np.uint8)
    opens = (arr == ord("[")) | (arr == ord("{"))
    if not opens.any():
        return 0
    n = len(arr)
    quote = arr == ord('"')
    backslash = arr == ord("\\")
    if backslash.any():  # a quote after an odd run of backslashes is escaped
        positions = np.arange(n)
        last_plain = np.maximum.accumulate(np.where(backslash, -1, positions))
        q = np.flatnonzero(quote)
        q = q[q > 0]
        run = (q - 1) - last_plain[q - 1]
        quote[q[run % 2 == 1]] = False
    inside = (np.cumsum(quote) % 2).astype(bool)  # true from an opening quote to its closer
    step = np.zeros(n, dtype=np.int8)
    step[opens & ~inside] = 1
    step[((arr == ord("]")) | (arr == ord("}"))) & ~inside] = -1
    return int(np.cumsum(step, dtype=np.int64).max(initial=0))


def parse_json(data: bytes | str, *, source: str, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Parse JSON text strictly, for :func:`read_json` and JSON Lines readers.

    Refuses invalid UTF-8, nesting deeper than ``max_depth``, NaN and
    ±Infinity (spelt or by overflow, ``1e999``), integers over 4,300 digits
    and (in documents up to 4 MiB: manifests, configs) repeated keys, with a
    :class:`CatalogError` naming ``source``. ``max_depth=-1`` skips the depth
    check (for a caller that checked a whole file at once).
    """
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CatalogError(
            f"{source} is not valid UTF-8 (byte {exc.start}); the file is damaged"
        ) from None
    if max_depth >= 0:
        depth = json_depth(raw)
        if depth > max_depth:
            raise CatalogError(
                f"{source} nests {depth} levels deep, more than the {max_depth} allowed; "
                "the file is damaged or not a visualsim file"
            )
    return _loads(text, raw, source)


def _loads(text: str, raw: bytes, source: str) -> Any:
    """``json.loads`` with visualsim's refusals (see :func:`parse_json`); depth already checked."""

    def bad_constant(name: str) -> Any:
        raise CatalogError(f"{source} holds {name}, which is not a number JSON allows")

    def parse_float(s: str) -> float:
        value = float(s)
        if not math.isfinite(value):
            raise CatalogError(f"{source} holds the number {s[:40]!r}, too large for a float")
        return value

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out = dict(items)
        if len(out) != len(items):
            seen: set[str] = set()
            for key, _ in items:
                if key in seen:
                    raise CatalogError(f"{source} repeats the key {key[:80]!r} in one object")
                seen.add(key)
        return out

    hooks: dict[str, Any] = {"parse_constant": bad_constant, "parse_float": parse_float}
    if len(raw) <= 4 * 1024 * 1024:  # manifests and configs: refuse ambiguous repeated keys
        hooks["object_pairs_hook"] = pairs
    try:
        return json.loads(text, **hooks)
    except CatalogError:
        raise
    except RecursionError:
        raise CatalogError(f"{source} nests too deeply to parse") from None
    except ValueError as exc:  # JSONDecodeError, and integers over 4,300 digits
        if "digits" in str(exc):
            raise CatalogError(f"{source} holds an integer of more than 4,300 digits") from None
        raise CatalogError(f"{source} is not valid JSON: {str(exc)[:200]}") from None


def read_json(
    path: PathLike, *, max_bytes: int = MAX_JSON_BYTES, max_depth: int = MAX_JSON_DEPTH
) -> Any:
    """Return the parsed JSON file at ``path``, with every read bounded.

    Parameters
    ----------
    path
        The file (a final symbolic link is refused).
    max_bytes
        Refuse a larger file before reading it.
    max_depth
        Refuse deeper nesting before parsing it.

    Raises
    ------
    CatalogError
        Naming the file: missing, too large, invalid UTF-8 or JSON, too deep,
        NaN/Infinity, an integer over 4,300 digits, a repeated key.
    """
    file = Path(path)
    return parse_json(_read_bytes(file, max_bytes), source=_err_path(file), max_depth=max_depth)


def read_jsonl(
    path: PathLike, *, max_bytes: int = MAX_JSON_BYTES, max_depth: int = MAX_JSON_DEPTH
) -> list[dict[str, Any]]:
    """Return the JSON objects of a JSON Lines file (blank lines skipped), bounded.

    Limits as in :func:`read_json`, per file and per line.

    Raises
    ------
    CatalogError
        Naming the file and line of anything that is not a valid JSON object.
    """
    file = Path(path)
    name = _err_path(file)
    data = _read_bytes(file, max_bytes)
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        at = data.count(b"\n", 0, exc.start) + 1
        raise CatalogError(f"{name} line {at} is not valid UTF-8; the file is damaged") from None
    depth = json_depth(data)  # every valid line is balanced: the file's depth is its deepest line's
    if depth > max_depth:
        raise CatalogError(
            f"{name} nests {depth} levels deep, more than the {max_depth} allowed; "
            "the file is damaged"
        )
    lines = [line for line in data.split(b"\n") if line.strip()]
    joined = b"[" + b",".join(lines) + b"]"  # one parse of the whole file: C speed
    try:
        rows = _loads(joined.decode("utf-8"), joined, name)
        ok = isinstance(rows, list) and len(rows) == len(lines)
    except CatalogError:
        ok = False
    if not ok or not all(isinstance(row, dict) for row in rows):
        rows = []  # find the line to blame
        for n, line in enumerate(data.split(b"\n"), start=1):
            if not line.strip():
                continue
            row = parse_json(line, source=f"{name} line {n}", max_depth=-1)  # depth checked
            if not isinstance(row, dict):
                raise CatalogError(f"{name} line {n} is not a JSON object")
            rows.append(row)
    return list(rows)


def read_npy_header(path: PathLike) -> tuple[np.dtype[Any], tuple[int, ...], bool, int]:
    """Return ``(dtype, shape, fortran_order, data_offset)`` of a ``.npy`` file.

    Only the header is read; its claimed data size is checked against the
    file's real size, so a header claiming terabytes in a small file is an
    error before anything is allocated.

    Raises
    ------
    CatalogError
        Not a ``.npy`` file, a damaged or oversized header, an object,
        structured or sub-array dtype, or a size that does not match.
    """
    from numpy.lib import format as npformat

    file = Path(path)
    name = _err_path(file)
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(file, flags)
    except OSError as exc:
        raise CatalogError(f"cannot read {name}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise CatalogError(f"{name} is not a regular file")
        try:
            major, _minor = npformat.read_magic(fh)
            if major == 1:
                shape, fortran, dtype = npformat.read_array_header_1_0(fh)
            elif major in (2, 3):
                shape, fortran, dtype = npformat.read_array_header_2_0(fh)
            else:
                raise ValueError(f"unknown .npy version {major}")
        except CatalogError:
            raise
        except Exception as exc:  # numpy's header parser raises many types (TokenError too)
            raise CatalogError(
                f"{name} is not a readable .npy file ({str(exc)[:160]}); the file is damaged"
            ) from None
        offset = fh.tell()
    if not isinstance(dtype, np.dtype) or dtype.hasobject or dtype.fields is not None:
        raise CatalogError(f"{name} holds a {dtype} array; only plain numeric arrays are read")
    if dtype.subdtype is not None or dtype.kind not in "biuf":
        raise CatalogError(f"{name} holds a {dtype} array; only plain numeric arrays are read")
    if not isinstance(shape, tuple) or not all(
        isinstance(s, int) and not isinstance(s, bool) and 0 <= s <= MAX_COUNT for s in shape
    ):
        raise CatalogError(f"{name} has an invalid shape {str(shape)[:80]} in its header")
    if math.prod(max(s, 1) for s in shape) * dtype.itemsize > 1 << 62:
        # numpy refuses such a shape even when one axis is 0 (its size overflows)
        raise CatalogError(f"{name} has an impossible shape {str(shape)[:80]} in its header")
    claimed = math.prod(shape) * dtype.itemsize
    real = st.st_size - offset
    if claimed != real:
        raise CatalogError(
            f"{name} claims {claimed:,} bytes of data in its header but holds {real:,}; "
            "the file is truncated or damaged"
        )
    return dtype, tuple(shape), bool(fortran), offset


def load_npy(
    path: PathLike,
    *,
    dtypes: Sequence[str] = NUMERIC_DTYPES,
    shape: Sequence[int | None] | None = None,
    mmap: bool = False,
    finite: bool = False,
) -> np.ndarray:
    """Return the ``.npy`` array at ``path`` after checking its header, never unpickling.

    Parameters
    ----------
    path
        The file.
    dtypes
        The dtype names accepted (``("float32",)``); any other is refused.
    shape
        Expected shape; ``None`` entries accept any length on that axis
        (``(None, 256)``). ``None`` accepts any shape.
    mmap
        Memory-map the file read-only instead of reading it.
    finite
        Refuse NaN and ±inf (for float arrays), naming the first bad row.

    Raises
    ------
    CatalogError
        Naming the file: see :func:`read_npy_header`, plus a dtype or shape
        other than expected, or non-finite values.
    """
    file = Path(path)
    name = _err_path(file)
    dtype, got, fortran, offset = read_npy_header(file)
    allowed = {np.dtype(d) for d in dtypes}
    if dtype not in allowed:
        raise CatalogError(
            f"{name} holds {dtype} values; expected {' or '.join(sorted(map(str, allowed)))}"
        )
    if shape is not None:
        want = tuple(shape)
        if len(want) != len(got) or any(
            w is not None and w != g for w, g in zip(want, got, strict=True)
        ):
            shown = "(" + ", ".join("n" if w is None else str(w) for w in want) + ")"
            raise CatalogError(f"{name} has shape {got}; expected {shown}")
    if mmap and math.prod(got) > 0:
        arr: np.ndarray = np.memmap(
            file, dtype=dtype, mode="r", offset=offset, shape=got, order="F" if fortran else "C"
        )
    else:
        out = np.empty(got[::-1] if fortran else got, dtype=dtype)
        if out.nbytes:
            with open(file, "rb") as fh:
                fh.seek(offset)
                view = memoryview(out.reshape(-1).view(np.uint8))  # type: ignore[arg-type]
                read = fh.readinto(view)
            if read != out.nbytes:
                raise CatalogError(f"{name} was truncated while being read")
        arr = out.T if fortran else out
    if finite and arr.dtype.kind == "f":
        check_finite_rows(arr, source=name)
    return arr


def check_finite_rows(arr: np.ndarray, *, source: str, chunk: int = 65_536) -> None:
    """Raise :class:`CatalogError` naming the first rows of ``arr`` holding NaN or ±inf."""
    rows = arr.reshape(len(arr), -1) if arr.ndim >= 1 and len(arr) else arr.reshape(1, -1)
    for start in range(0, len(rows), chunk):
        ok = np.isfinite(rows[start : start + chunk]).all(axis=1)
        if not ok.all():
            bad = (np.flatnonzero(~ok)[:5] + start).tolist()
            raise CatalogError(
                f"{source} holds NaN or infinite values in row(s) {bad}; the file is damaged"
            )


def sha256_file(path: PathLike, chunk: int = 1 << 22) -> str:
    """Return the hex SHA-256 of a regular file, read in 4 MiB chunks (a final symlink refused)."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise CatalogError(f"cannot read {_err_path(path)}: {exc.strerror}") from None
    digest = hashlib.sha256()
    with os.fdopen(fd, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------- manifest fields


def _shown(value: Any) -> str:
    text = repr(value) if not isinstance(value, int) or abs(value) < 10**30 else "a huge integer"
    return text if len(text) <= 80 else text[:77] + "..."


def field_int(
    source: PathLike | str,
    field: str,
    value: Any,
    *,
    minimum: int = 0,
    maximum: int = MAX_COUNT,
    allow_none: bool = False,
) -> int | None:
    """Return ``value`` if it is an ``int`` (not a ``bool``) in ``[minimum, maximum]``.

    Raises
    ------
    CatalogError
        ``"<source>: field '<field>' must be an integer from <min> to <max>, got ..."``.
    """
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        none = " or null" if allow_none else ""
        raise CatalogError(
            f"{_src(source)}: field {field!r} must be an integer from {minimum:,} to "
            f"{maximum:,}{none}, got {_shown(value)}; the file is damaged"
        )
    return int(value)


def field_float(
    source: PathLike | str,
    field: str,
    value: Any,
    *,
    minimum: float = -math.inf,
    maximum: float = math.inf,
) -> float:
    """Return ``value`` as a finite ``float`` in ``[minimum, maximum]`` (ints accepted)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(float(value))
        or not minimum <= value <= maximum
    ):
        raise CatalogError(
            f"{_src(source)}: field {field!r} must be a number from {minimum} to {maximum}, "
            f"got {_shown(value)}; the file is damaged"
        )
    return float(value)


def field_bool(source: PathLike | str, field: str, value: Any) -> bool:
    """Return ``value`` if it is ``true`` or ``false``."""
    if not isinstance(value, bool):
        raise CatalogError(
            f"{_src(source)}: field {field!r} must be true or false, got {_shown(value)}"
        )
    return value


def field_str(
    source: PathLike | str,
    field: str,
    value: Any,
    *,
    choices: Sequence[str] | None = None,
    max_len: int = 4096,
) -> str:
    """Return ``value`` if it is a string of at most ``max_len`` characters (one of ``choices``)."""
    if not isinstance(value, str) or len(value) > max_len:
        raise CatalogError(f"{_src(source)}: field {field!r} must be a string, got {_shown(value)}")
    if choices is not None and value not in choices:
        raise CatalogError(
            f"{_src(source)}: field {field!r} must be one of {', '.join(map(repr, choices))}, "
            f"got {_shown(value)}"
        )
    return value


def field_dict(source: PathLike | str, field: str, value: Any) -> dict[str, Any]:
    """Return ``value`` if it is a JSON object."""
    if not isinstance(value, dict):
        raise CatalogError(
            f"{_src(source)}: field {field!r} must be a JSON object, got "
            f"{type(value).__name__} {_shown(value)}"
        )
    return value


def field_list(
    source: PathLike | str, field: str, value: Any, *, max_len: int = MAX_COUNT
) -> list[Any]:
    """Return ``value`` if it is a JSON array of at most ``max_len`` items."""
    if not isinstance(value, list) or len(value) > max_len:
        raise CatalogError(
            f"{_src(source)}: field {field!r} must be a list of at most {max_len:,} items, "
            f"got {type(value).__name__} {_shown(value)}"
        )
    return value


def require(source: PathLike | str, manifest: Mapping[str, Any], field: str) -> Any:
    """Return ``manifest[field]``, or a :class:`CatalogError` naming the file and the field."""
    if field not in manifest:
        raise CatalogError(f"{_src(source)} lacks the field {field!r}; the file is damaged")
    return manifest[field]


def _src(source: PathLike | str) -> str:
    return source if isinstance(source, str) else _err_path(source)


# --------------------------------------------------------------------------- manifests

TAG_PREFIX = "visualsim."
"""Every manifest's ``format`` is ``"visualsim.<kind>"``."""

MAX_MANIFEST_BYTES = 64 * 1024 * 1024
"""Default size limit of a manifest read by :func:`read_manifest` (64 MiB)."""


@dataclass(frozen=True)
class Format:
    """One on-disk format: its kind, version, manifest file and the old tags it still reads.

    Attributes
    ----------
    kind
        What the folder holds (``"catalog"``, ``"index"`` ...); its tag is
        ``"visualsim.<kind>"``.
    version
        The ``format_version`` this library writes, and the newest it reads.
    name
        The manifest's file name in the folder.
    old_tags
        Spellings of the tag that shipped before the one scheme; a manifest
        carrying one still loads (read as this kind, ``format`` set to :attr:`tag`).
    """

    kind: str
    version: int
    name: str = MANIFEST
    old_tags: tuple[str, ...] = ()

    @property
    def tag(self) -> str:
        """``"visualsim.<kind>"``: what :func:`write_manifest` writes."""
        return TAG_PREFIX + self.kind

    @property
    def tags(self) -> tuple[str, ...]:
        """The tag and the old spellings :func:`read_manifest` accepts, current first."""
        return (self.tag, *self.old_tags)


FORMATS: Mapping[str, Format] = MappingProxyType(
    {
        f.kind: f
        for f in (
            Format("catalog", 2, old_tags=("visualsim-catalog",)),
            Format("partitions", 1, old_tags=("visualsim-partitions",)),
            Format("index", 1),
            Format("reducer.pca", 1, name="reducer.json"),
            Format("adapter", 2, old_tags=("visualsim-adapter",)),
            Format("shards", 1, old_tags=("visualsim-shards",)),
            Format("checkpoint", 2, name="progress.json"),
            Format("openvino.model", 1, name="meta.json"),
            Format("openvino.decision", 1, name="decision.json"),
        )
    }
)
"""Every on-disk format visualsim writes, by kind: the one table of tags, versions,
manifest names and the old tag spellings still read (``visualsim-catalog`` and the
other hyphenated tags written before the ``visualsim.<kind>`` scheme)."""


def format_of(kind: str) -> Format:
    """Return the :class:`Format` of ``kind`` (a key of :data:`FORMATS`).

    Raises
    ------
    ConfigError
        ``kind`` is not a format visualsim knows.

    Examples
    --------
    >>> format_of("catalog").tag, format_of("catalog").old_tags
    ('visualsim.catalog', ('visualsim-catalog',))
    """
    fmt = FORMATS.get(kind) if isinstance(kind, str) else None
    if fmt is None:
        raise ConfigError(f"unknown on-disk format {str(kind)[:80]!r}; known: {sorted(FORMATS)}")
    return fmt


def _format_args(
    kind: str | None, tag: str | Sequence[str] | None, version: int | None, name: str | None
) -> tuple[tuple[str, ...], int | None, str, Format | None]:
    """``(accepted tags, version, manifest name, format)`` of a call by kind or by tag."""
    if kind is not None:
        if tag is not None:
            raise ConfigError("pass kind= or tag=, not both")
        fmt = format_of(kind)
        return fmt.tags, fmt.version if version is None else version, name or fmt.name, fmt
    if tag is None:
        raise ConfigError("pass the kind of the folder (a key of visualsim.persistence.FORMATS)")
    tags = (tag,) if isinstance(tag, str) else tuple(tag)
    return tags, version, name or MANIFEST, None


def read_manifest(
    folder: PathLike,
    kind: str | None = None,
    *,
    max_bytes: int = MAX_MANIFEST_BYTES,
    verify: bool = True,
    name: str | None = None,
    required: Sequence[str] = (),
    upgrade: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    must_exist: bool = True,
    tag: str | Sequence[str] | None = None,
    max_version: int | None = None,
) -> dict[str, Any]:
    """Return a folder's manifest after checking tag, version, files and checksums.

    Parameters
    ----------
    folder
        The saved folder (a symbolic link is refused).
    kind
        The format the folder must hold, a key of :data:`FORMATS`
        (``"catalog"``, ``"index"`` ...): the manifest must carry its tag
        ``"visualsim.<kind>"`` or one of its listed old spellings (returned
        with ``format`` set to the current tag), and a ``format_version`` up
        to the format's.
    max_bytes
        Refuse a larger manifest before reading it (64 MiB).
    verify
        Check every listed file's SHA-256 (``False``: only that each exists
        and is a regular file inside the folder).
    name
        The manifest's file name (default: the format's).
    required
        More fields that must be present.
    upgrade
        Called with a manifest of an accepted tag and version before its
        fields are checked (to fill ``files`` from an older layout, say).
    must_exist
        ``False``: a listed file may be missing (a writer resuming); its name
        must still be safe, and ``verify`` is then ignored.
    tag, max_version
        Instead of ``kind``: the accepted tags (the first the current one)
        and the newest version, for a format outside :data:`FORMATS`.

    Raises
    ------
    CatalogError
        Naming the file and what is wrong: not a folder, no manifest, too
        large, nested more than 64 levels, not JSON, not an object, another
        format, ``files`` not an object of name -> 64 hex digits, a name
        outside the folder, a missing or changed file.
    FormatVersionError
        ``format_version`` is newer than this library reads (or not an integer >= 1).
    ConfigError
        ``kind`` is not a known format.

    Examples
    --------
    >>> import json, tempfile, pathlib
    >>> old = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (old / "manifest.json").write_text(json.dumps(
    ...     {"format": "visualsim-partitions", "format_version": 1, "files": {}}))
    >>> read_manifest(old, "partitions")["format"]  # an old spelling, read as this kind
    'visualsim.partitions'
    """
    tags, newest, name, fmt = _format_args(kind, tag, max_version, name)
    if newest is None:
        raise ConfigError("read_manifest(tag=...) needs max_version=")
    root = Path(folder)
    try:
        st = os.lstat(root)
    except FileNotFoundError:
        raise CatalogError(f"{_err_path(root)} does not exist") from None
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        _check_real_dir(root)
    try:
        file = safe_child(root, name)
    except CatalogError:
        if not (root / name).exists() and not (root / name).is_symlink():
            raise CatalogError(
                f"{_err_path(root)} is not a saved {tags[0]} folder: {name} is missing"
            ) from None
        raise
    manifest = read_json(file, max_bytes=max_bytes, max_depth=MAX_JSON_DEPTH)
    where = _err_path(file)
    if not isinstance(manifest, dict):
        raise CatalogError(f"{where} is not a JSON object; the file is damaged")
    found = manifest.get("format")
    if found not in tags:
        raise CatalogError(
            f"{where} is not a {tags[0]} manifest (format {_shown(found)}); "
            "pass the folder that was saved as one"
        )
    version = manifest.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise FormatVersionError(
            f"{where}: field 'format_version' must be an integer >= 1, got {_shown(version)}; "
            "the file is damaged"
        )
    if version > newest:
        raise FormatVersionError(
            f"{_err_path(root)} was written in {tags[0]} format version {version:,}"
            f" by visualsim {str(manifest.get('library_version', '?'))[:40]}, but this "
            f"visualsim reads versions up to {newest}; upgrade visualsim to load it"
        )
    if fmt is not None:
        manifest["format"] = fmt.tag  # an old spelling reads as the current one
    if upgrade is not None:
        manifest = upgrade(manifest)
    if "library_version" in manifest:
        field_str(where, "library_version", manifest["library_version"], max_len=200)
    for key in ("files", *required):
        require(where, manifest, key)
    check_files(root, manifest["files"], verify=verify, source=where, must_exist=must_exist)
    return manifest


def check_files(
    root: PathLike,
    files: Any,
    *,
    verify: bool = True,
    source: str | None = None,
    must_exist: bool = True,
) -> dict[str, str]:
    """Check a manifest's ``files`` mapping (name -> SHA-256) against the folder.

    Raises
    ------
    CatalogError
        ``files`` is not an object of string -> 64 lowercase hex digits, lists
        more than :data:`MAX_FILES`, or names a file outside ``root``, missing,
        or (``verify``) with another checksum.
    """
    base = Path(root)
    where = source or f"manifest of {_err_path(base)}"
    if not isinstance(files, dict):
        raise CatalogError(
            f"{where}: field 'files' must be an object of file name -> sha256, got "
            f"{type(files).__name__}; the file is damaged"
        )
    if len(files) > MAX_FILES:
        raise CatalogError(f"{where}: field 'files' lists {len(files):,} files; too many")
    for rel, digest in files.items():
        if not isinstance(digest, str) or not _HEX64.fullmatch(digest):
            raise CatalogError(
                f"{where}: field 'files' gives {_shown(digest)} as the sha256 of {rel[:200]!r}; "
                "expected 64 hex digits"
            )
        file = safe_child(base, rel, must_exist=must_exist)
        if verify and must_exist and sha256_file(file) != digest:
            raise CatalogError(
                f"{_err_path(file)} does not match its checksum in {where} (truncated or "
                "modified after saving); restore it or save the folder again from its source"
            )
    return files


def write_manifest(
    folder: PathLike,
    kind: str | None = None,
    payload: Mapping[str, Any] | None = None,
    *,
    files: Mapping[str, str] | None = None,
    name: str | None = None,
    tag: str | None = None,
    version: int | None = None,
    fields: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write a folder's manifest (atomically) and return the manifest written.

    The manifest is ``{"format": "visualsim.<kind>", "format_version": ...,
    "library_version": ..., **payload, "files": files}``.

    Parameters
    ----------
    folder
        The folder the manifest describes.
    kind
        Its format, a key of :data:`FORMATS`: gives the tag, the version and
        the manifest's file name.
    payload
        The format's own fields (JSON types).
    files
        Relative name -> SHA-256 of every file the folder holds; ``None``
        hashes every regular file under ``folder`` but the manifest itself.
    name
        The manifest's file name (default: the format's).
    tag, version, fields
        Instead of ``kind`` and ``payload``: the tag and version of a format
        outside :data:`FORMATS`, and its fields.

    Raises
    ------
    ConfigError
        ``kind`` is not a known format, or neither ``kind`` nor ``tag`` is given.
    """
    from . import __version__

    tags, number, name, _ = _format_args(kind, tag, version, name)
    if number is None:
        raise ConfigError("write_manifest(tag=...) needs version=")
    root = Path(folder)
    if files is None:
        files = {rel: sha256_file(root / rel) for rel in list_files(root) if rel != name}
    own = {**dict(fields or {}), **dict(payload or {})}
    manifest: dict[str, Any] = {
        "format": tags[0],
        "format_version": int(number),
        "library_version": __version__,
        **{k: v for k, v in own.items() if k not in ("format", "format_version", "files")},
        "files": dict(files),
    }
    write_json_atomic(root / name, manifest)
    return manifest


# --------------------------------------------------------------------------- atomic writes


def fsync_dir(path: PathLike) -> None:
    """Flush a folder's entries (renames) to disk, where the platform allows."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _tmp_file_name(target: Path) -> Path:
    return target.with_name(
        f"{TMP_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:12]}.{target.name[:120]}.part"
    )


def atomic_write(path: PathLike, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary sibling of ``path``, fsync it, rename it to ``path``.

    Readers see the old file or the complete new one. A crash leaves at most
    a ``.visualsim-tmp-<pid>-*.part`` file that :func:`remove_stale_temps`
    removes once that process is gone.
    """
    target = Path(path)
    tmp = _tmp_file_name(target)
    try:
        write(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(target.parent)


def write_bytes_atomic(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically and durably."""

    def write(tmp: Path) -> None:
        with open(tmp, "xb") as fh:
            fh.write(data)

    atomic_write(path, write)


def write_text_atomic(path: PathLike, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically and durably."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: PathLike, value: Any, *, indent: int | None = 2) -> None:
    """Write ``value`` as strict JSON (no NaN) to ``path`` atomically and durably."""
    try:
        text = json.dumps(value, indent=indent, allow_nan=False, ensure_ascii=False)
    except ValueError as exc:
        raise CatalogError(f"cannot write {_err_path(path)}: {exc}") from exc
    write_text_atomic(path, text + "\n")


def write_npy_atomic(path: PathLike, array: np.ndarray) -> None:
    """Write ``array`` as ``.npy`` (never pickled) to ``path`` atomically and durably."""
    arr = np.ascontiguousarray(array)
    if arr.dtype.hasobject or arr.dtype.fields is not None:
        raise CatalogError(f"cannot write {_err_path(path)}: {arr.dtype} arrays are not stored")

    def write(tmp: Path) -> None:
        with open(tmp, "xb") as fh:
            np.save(fh, arr, allow_pickle=False)

    atomic_write(path, write)


def write_npy(path: PathLike, array: np.ndarray) -> None:
    """Write ``array`` as ``.npy`` in place (inside a temporary folder) and fsync it."""
    with open(path, "wb") as fh:
        np.save(fh, np.ascontiguousarray(array), allow_pickle=False)
        fh.flush()
        os.fsync(fh.fileno())


def write_text(path: PathLike, text: str) -> None:
    """Write UTF-8 text in place (inside a temporary folder) and fsync it."""
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def fsync_tree(folder: PathLike) -> None:
    """fsync every file and folder under ``folder`` (before it is renamed into place)."""
    root = Path(folder)
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            with contextlib.suppress(OSError):
                fd = os.open(os.path.join(dirpath, name), os.O_RDONLY | os.O_NOFOLLOW)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        fsync_dir(dirpath)


# --------------------------------------------------------------------------- folders

_AT_FDCWD = -100
_RENAME_NOREPLACE = 1
_RENAME_EXCHANGE = 2
_renameat2: Any = None
_renameat2_loaded = False


def _get_renameat2() -> Any:
    global _renameat2, _renameat2_loaded
    if not _renameat2_loaded:
        _renameat2_loaded = True
        if sys.platform.startswith("linux"):
            with contextlib.suppress(OSError, AttributeError):
                libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
                fn = libc.renameat2
                fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p]
                fn.argtypes += [ctypes.c_uint]
                fn.restype = ctypes.c_int
                _renameat2 = fn
    return _renameat2


def _rename2(src: Path, dst: Path, flags: int) -> bool:
    """``renameat2(src, dst, flags)``; ``False`` where the system or filesystem lacks it."""
    fn = _get_renameat2()
    if fn is None:
        return False
    rc = fn(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), flags)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), os.fspath(src), None, os.fspath(dst))


def exchange_supported(folder: PathLike) -> bool:
    """Whether atomic folder exchange works in ``folder`` (Linux ``renameat2``, local disks)."""
    base = Path(folder)
    a = base / f"{TMP_PREFIX}probe-{uuid.uuid4().hex[:12]}"
    b = base / f"{TMP_PREFIX}probe-{uuid.uuid4().hex[:12]}"
    try:
        a.mkdir()
        b.mkdir()
        return _rename2(a, b, _RENAME_EXCHANGE)
    except OSError:
        return False
    finally:
        for p in (a, b):
            with contextlib.suppress(OSError):
                p.rmdir()


def _marker_of(tmp: Path) -> Path:
    return tmp.with_name(tmp.name + MARKER_SUFFIX)


def make_temp_dir(dest: PathLike) -> Path:
    """Create and return an empty temporary folder next to ``dest`` (same filesystem).

    Its sibling marker file records this process, so :func:`remove_stale_temps`
    can remove the folder if this process dies before :func:`replace_dir`.
    Stale temporaries of earlier, dead processes are removed first.
    """
    target = Path(dest)
    parent = target.parent
    parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(parent)
    tmp = parent / f"{TMP_PREFIX}{target.name[:100]}-{uuid.uuid4().hex[:12]}"
    marker = _marker_of(tmp)
    record = json.dumps(
        {"marker": _MARKER_MAGIC, "pid": os.getpid(), "host": _host(), "dest": target.name}
    )
    # the marker appears whole or not at all (a kill mid-write leaves only a .part file
    # named for this process, which remove_stale_temps clears once the process is gone)
    part = _tmp_file_name(marker)
    with open(part, "x", encoding="utf-8") as fh:
        fh.write(record)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(part, marker)
    try:
        tmp.mkdir()
    except BaseException:
        marker.unlink()
        raise
    fsync_dir(parent)
    return tmp


def discard_temp_dir(tmp: PathLike) -> None:
    """Delete a folder made by :func:`make_temp_dir` (whatever it holds now) and its marker."""
    path = Path(tmp)
    if not path.name.startswith(TMP_PREFIX):
        raise CatalogError(f"{_err_path(path)} is not a visualsim temporary folder; not deleted")
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    with contextlib.suppress(OSError):
        _marker_of(path).unlink()


def _host() -> str:
    import socket

    return socket.gethostname()


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (OSError, OverflowError):
        return False
    return True


def remove_stale_temps(folder: PathLike) -> list[str]:
    """Remove visualsim temporaries in ``folder`` left by processes that are gone.

    A temporary folder is ours only if its sibling marker (written before
    the folder) names visualsim and a process id; a temporary file only if
    its name is ``.visualsim-tmp-<pid>-<12 hex>.<name>.part``. Either is
    removed once that process no longer runs. Anything else, whatever its
    name, is never touched. Returns the names removed.
    """
    base = Path(folder)
    removed: list[str] = []
    try:
        entries = list(os.scandir(base))
    except OSError:
        return removed
    for entry in entries:
        name = entry.name
        if not name.startswith(TMP_PREFIX):
            continue
        with contextlib.suppress(OSError):
            if name.endswith(MARKER_SUFFIX) and entry.is_file(follow_symlinks=False):
                if entry.stat(follow_symlinks=False).st_size > 4096:
                    continue
                try:
                    record = json.loads(Path(entry.path).read_text(encoding="utf-8"))
                except ValueError:
                    continue
                if not isinstance(record, dict) or record.get("marker") != _MARKER_MAGIC:
                    continue
                pid = record.get("pid")
                if record.get("host") != _host():
                    continue  # another machine's writer on a shared folder: not ours to judge
                if not isinstance(pid, int) or isinstance(pid, bool) or _pid_alive(pid):
                    continue
                tmp = base / name[: -len(MARKER_SUFFIX)]
                if tmp.is_dir() and not tmp.is_symlink():
                    shutil.rmtree(tmp)
                    removed.append(tmp.name)
                os.unlink(entry.path)
                removed.append(name)
            elif entry.is_file(follow_symlinks=False):
                match = _FILE_TMP.fullmatch(name)
                if match and not _pid_alive(int(match.group(1))):
                    os.unlink(entry.path)
                    removed.append(name)
    if removed:
        fsync_dir(base)
    return removed


def folder_tag(folder: PathLike, *, name: str = MANIFEST) -> str | None:
    """Return the ``format`` of the visualsim manifest in ``folder``, or ``None``.

    ``None`` when there is no readable manifest (missing, not JSON, another
    program's file); never raises for a damaged manifest.
    """
    try:
        manifest = read_json(safe_child(folder, name), max_bytes=64 * 1024 * 1024)
    except CatalogError:
        return None
    value = manifest.get("format") if isinstance(manifest, dict) else None
    return value if isinstance(value, str) else None


def check_replaceable(
    dest: PathLike,
    *,
    tag: str | Sequence[str] | None = None,
    name: str | None = None,
    kind: str | None = None,
) -> bool:
    """Check that ``dest`` may be replaced by a folder of format ``kind`` (or ``tag``).

    Returns ``False`` if nothing is at ``dest``, ``True`` if it is an empty
    folder or one whose manifest carries that format's tag (or an old
    spelling of it, see :data:`FORMATS`).

    Raises
    ------
    CatalogError
        ``dest`` is a symbolic link, a file, or a folder that is not empty and
        not a visualsim folder of that format (a photo folder, a PDF ...):
        visualsim never replaces what it did not write.
    """
    target = Path(dest)
    tags, _, name, _ = _format_args(kind, tag, None, name)
    try:
        st = os.lstat(target)
    except FileNotFoundError:
        return False
    if stat.S_ISLNK(st.st_mode):
        raise CatalogError(
            f"refusing to replace {_err_path(target)}: it is a symbolic link; "
            "pass the real path or remove the link"
        )
    if not stat.S_ISDIR(st.st_mode):
        raise CatalogError(
            f"refusing to replace {_err_path(target)}: it is a file, not a saved visualsim "
            "folder; choose another path or remove it yourself"
        )
    with os.scandir(target) as it:
        empty = next(it, None) is None
    if empty:
        return True
    found = folder_tag(target, name=name)
    if found in tags:
        return True
    what = "holds no visualsim manifest" if found is None else f"holds a {found!r} folder"
    raise CatalogError(
        f"refusing to replace {_err_path(target)}: it {what}, not a {tags[0]} one, and "
        "visualsim replaces only what it wrote; choose another path or remove it yourself"
    )


def replace_dir(
    tmp: PathLike,
    dest: PathLike,
    *,
    tag: str | Sequence[str] | None = None,
    name: str | None = None,
    kind: str | None = None,
) -> None:
    """Put the complete folder ``tmp`` at ``dest``, atomically at every instant.

    ``tmp`` must come from :func:`make_temp_dir` next to ``dest``. If
    ``dest`` exists, it must be an empty folder or one carrying a manifest
    of format ``kind`` (or ``tag``; see :func:`check_replaceable`); the two are swapped by
    one ``renameat2(RENAME_EXCHANGE)`` and the old folder, now under the
    temporary name, is deleted. Readers see the old folder or the new one,
    never neither and never a mix; a crash at any moment leaves one of them
    at ``dest`` and, at worst, a marked temporary that the next write removes.

    Fallback (not Linux, or a filesystem without ``RENAME_EXCHANGE``, such as
    some network filesystems): the old folder is renamed aside and the new
    one into place; between those two renames nothing is at ``dest`` (a
    crash there leaves the old folder under a marked temporary name, which
    the next write removes).

    Raises
    ------
    CatalogError
        ``dest`` is not replaceable; nothing is touched (``tmp`` stays for the
        caller to discard).
    """
    src = Path(tmp)
    target = Path(dest)
    if not src.name.startswith(TMP_PREFIX) or src.parent != target.parent:
        raise CatalogError(
            f"{_err_path(src)} is not a temporary folder made by make_temp_dir({_err_path(target)})"
        )
    fsync_tree(src)
    for _attempt in range(3):
        if check_replaceable(target, tag=tag, name=name, kind=kind):
            if _rename2(src, target, _RENAME_EXCHANGE):
                break
            _replace_by_two_renames(src, target)
            return
        try:
            if not _rename2(src, target, _RENAME_NOREPLACE):
                if os.path.lexists(target):
                    continue
                os.rename(src, target)  # POSIX: replaces at most an empty folder
            break
        except OSError as exc:
            if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                continue  # something appeared at dest meanwhile: check it again
            raise
    else:
        raise CatalogError(f"{_err_path(target)} kept changing while being replaced; try again")
    fsync_dir(target.parent)
    discard_temp_dir(src)  # the old folder (after an exchange), or nothing
    fsync_dir(target.parent)


def _replace_by_two_renames(src: Path, target: Path) -> None:
    aside = make_temp_dir(target)
    aside.rmdir()
    os.rename(target, aside)
    try:
        os.rename(src, target)
    except BaseException:
        os.rename(aside, target)
        raise
    fsync_dir(target.parent)
    discard_temp_dir(aside)
    discard_temp_dir(src)
    fsync_dir(target.parent)


@contextlib.contextmanager
def atomic_dir(
    dest: PathLike,
    *,
    tag: str | Sequence[str] | None = None,
    overwrite: bool = True,
    name: str | None = None,
    kind: str | None = None,
) -> Iterator[Path]:
    """Yield a temporary folder to fill; on success it replaces ``dest`` (see :func:`replace_dir`).

    ``overwrite=False`` refuses an existing ``dest`` up front; otherwise
    :func:`check_replaceable` runs before anything is written and again at
    the swap. On an exception the temporary folder is deleted and ``dest``
    is untouched.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> with atomic_dir(root / "out", kind="partitions") as tmp:
    ...     _ = write_manifest(tmp, "partitions", {"rows": 0})
    >>> read_manifest(root / "out", "partitions")["format"]
    'visualsim.partitions'
    """
    target = Path(dest)
    exists = check_replaceable(target, tag=tag, name=name, kind=kind)
    if exists and not overwrite:
        raise CatalogError(f"{_err_path(target)} already exists; pass overwrite=True to replace it")
    tmp = make_temp_dir(target)
    try:
        yield tmp
        replace_dir(tmp, target, tag=tag, name=name, kind=kind)
    except BaseException:
        discard_temp_dir(tmp)
        raise


def folder_identity(path: PathLike) -> tuple[int, int, int, int] | None:
    """Return ``(st_dev, st_ino, st_ctime_ns, st_mtime_ns)`` of the folder at ``path`` (not
    following a link), or ``None``.

    The times matter: a folder removed after a swap frees its inode number, and the
    file system may hand it to the next folder written, so ``(st_dev, st_ino)`` alone
    can say "same folder" across two swaps (seen under load, with a writer swapping
    several times during one read).
    """
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_ctime_ns, st.st_mtime_ns)


def read_identity(path: PathLike, *, name: str = MANIFEST) -> tuple[Any, ...] | None:
    """What :func:`read_consistent` compares: the folder and its manifest file, or ``None``.

    ``(st_dev, st_ino)`` of the folder at ``path`` (not following a link) and
    ``(st_ino, st_ctime_ns, st_mtime_ns, st_size)`` of its manifest ``name``.
    Every writer commits by renaming a new manifest into place (inside the
    folder, or with a whole new folder swapped in), so a commit changes it;
    files written beside the live manifest before the commit do not. The
    manifest's times matter: a folder removed after a swap frees its inode
    numbers, which the next folder written may get back.
    """
    root = Path(path)
    try:
        st = os.lstat(root)
    except OSError:
        return None
    try:
        mf = os.lstat(root / name)
        file: tuple[int, ...] | None = (mf.st_ino, mf.st_ctime_ns, mf.st_mtime_ns, mf.st_size)
    except OSError:
        file = None
    return (st.st_dev, st.st_ino, file)


def read_consistent(
    path: PathLike,
    read: Callable[[Path], T],
    *,
    attempts: int = 20,
    name: str | None = None,
    kind: str | None = None,
) -> T:
    """Return ``read(path)``, retried if a save replaced the folder during the read.

    The one retry loop for reading a folder that a concurrent save may be
    replacing. A writer commits by renaming a new manifest into place (a whole
    folder swapped in by :func:`replace_dir`, or a new manifest beside files
    it never changes, as a catalogue's incremental save); a read that saw the
    same :func:`read_identity` before and after is complete and unmixed. One
    that raced a commit (and failed with a :class:`~visualsim.errors.VisualsimError`
    or ``OSError``, or may have mixed old and new files) is run again, with a
    short growing pause, up to ``attempts`` times. A read that fails on a
    folder nobody changed raises its own error at once.

    Parameters
    ----------
    path
        The folder.
    read
        Reads it; called with ``Path(path)``.
    attempts
        Tries before giving up.
    name, kind
        The manifest's file name, or the folder's format (a key of
        :data:`FORMATS`) to take it from; ``manifest.json`` by default.

    Raises
    ------
    CatalogError
        The folder changed during every one of the ``attempts`` reads; the
        message names the folder and the last try's error.
    """
    root = Path(path)
    manifest = name or (format_of(kind).name if kind is not None else MANIFEST)
    last: BaseException | None = None
    for attempt in range(max(1, attempts)):
        before = read_identity(root, name=manifest)
        try:
            result = read(root)
        except (VisualsimError, OSError) as exc:
            if read_identity(root, name=manifest) == before:
                raise  # nothing changed under the read: the folder itself is wrong
            last = exc
        else:
            if before is not None and read_identity(root, name=manifest) == before:
                return result
            last = None
        time.sleep(min(0.001 * 2**attempt, 0.05))
    because = "" if last is None else f"; the last try failed with: {str(last)[:300]}"
    raise CatalogError(
        f"{_err_path(root)} kept changing while it was read ({attempts} tries: a save "
        f"replaced it each time){because}; try again"
    ) from last


def json_safe(value: Any, *, where: str = "value") -> Any:
    """Return ``value`` converted to plain JSON types (numpy scalars, paths, dates).

    The one encoding of caller values (metadata, extractor specs, failure
    records) that catalogues, shard folders and checkpoints write.

    Parameters
    ----------
    value
        A value to store: ``None``, a bool, number, string, path, date, numpy
        scalar or array, or a mapping or sequence of those.
    where
        What the value is, for the error message (``"metadata of id 'a'"``).

    Returns
    -------
    Any
        ``value`` as ``None``, ``bool``, ``int``, ``float``, ``str``, ``list``
        or ``dict`` (with string keys); a non-finite float becomes ``None``.

    Raises
    ------
    CatalogError
        For values that have no faithful JSON form (arbitrary objects).

    Examples
    --------
    >>> import numpy as np
    >>> json_safe({"price": np.float32(2.5), "sizes": np.array([1, 2]), "n": np.int64(3)})
    {'price': 2.5, 'sizes': [1, 2], 'n': 3}
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        f = float(value)
        return f if math.isfinite(f) else None
    if isinstance(value, (os.PathLike,)):
        return os.fspath(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, np.ndarray):
        return [json_safe(v, where=where) for v in value.tolist()]
    if isinstance(value, Mapping):
        return {str(k): json_safe(v, where=f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [json_safe(v, where=where) for v in value]
    if isinstance(value, np.bool_):
        return bool(value)
    raise CatalogError(
        f"{where} has type {type(value).__name__}, which cannot be stored as JSON; "
        "store strings, numbers, booleans, lists or dicts in metadata"
    )


def resolve_source(root: PathLike | None, source: str | None) -> str | None:
    """Return a stored image path as a path on this machine: joined to ``root`` if relative.

    Examples
    --------
    >>> resolve_source("/photos", "shoes/a.jpg")
    '/photos/shoes/a.jpg'
    >>> resolve_source(None, "shoes/a.jpg"), resolve_source("/photos", None)
    ('shoes/a.jpg', None)
    """
    if source is None:
        return None
    return source if root is None or os.path.isabs(source) else str(Path(root) / source)


__all__ = [
    "FORMATS",
    "MANIFEST",
    "MAX_MANIFEST_BYTES",
    "TAG_PREFIX",
    "Format",
    "MAX_COUNT",
    "MAX_DIM",
    "NUMERIC_DTYPES",
    "TMP_PREFIX",
    "atomic_dir",
    "atomic_write",
    "check_files",
    "check_finite_rows",
    "check_replaceable",
    "discard_temp_dir",
    "exchange_supported",
    "field_bool",
    "field_dict",
    "field_float",
    "field_int",
    "field_list",
    "field_str",
    "folder_identity",
    "folder_tag",
    "format_of",
    "fsync_dir",
    "fsync_tree",
    "json_depth",
    "json_safe",
    "list_files",
    "load_npy",
    "make_temp_dir",
    "parse_json",
    "read_consistent",
    "read_identity",
    "read_json",
    "read_jsonl",
    "read_manifest",
    "read_npy_header",
    "remove_stale_temps",
    "replace_dir",
    "require",
    "resolve_source",
    "safe_child",
    "sha256_file",
    "write_bytes_atomic",
    "write_json_atomic",
    "write_manifest",
    "write_npy",
    "write_npy_atomic",
    "write_text",
    "write_text_atomic",
]
