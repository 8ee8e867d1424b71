"""Bounded reads: JSON, JSON Lines and ``.npy`` files checked before they are parsed or allocated.

Part of :mod:`visualsim.io`; :mod:`visualsim.persistence` re-exports every public name.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CatalogError
from .paths import MAX_COUNT, MAX_JSON_BYTES, MAX_JSON_DEPTH, NUMERIC_DTYPES, PathLike, _err_path

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
        data = fh.read(st.st_size + 1)  # not read(max_bytes + 1): that allocates max_bytes
        if len(data) > st.st_size:  # it grew while being read: read on, up to the limit
            data += fh.read(max_bytes + 1 - len(data))
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
        if isinstance(arr, np.memmap):  # read the file, so the map stays untouched (not resident)
            _check_finite_file(file, dtype, got, offset, source=name)
        else:
            check_finite_rows(arr, source=name)
    return arr


def _check_finite_file(
    file: Path, dtype: np.dtype[Any], shape: tuple[int, ...], offset: int, *, source: str
) -> None:
    """:func:`check_finite_rows` over a C-order ``.npy`` file's data, read in blocks."""
    width = math.prod(shape[1:]) if len(shape) > 1 else 1
    rows = shape[0] if shape else 1
    block = max(1, (1 << 24) // max(width * dtype.itemsize, 1))
    with open(file, "rb") as fh:
        for start in range(0, rows, block):
            n = min(block, rows - start)
            part = read_rows(fh, dtype, width, offset + start * width * dtype.itemsize, n)
            check_finite_rows(part, source=source, first_row=start)


def read_rows(fh: Any, dtype: np.dtype[Any], width: int, offset: int, n: int) -> np.ndarray:
    """``n`` rows of ``width`` values read from an open file at byte ``offset`` (not mapped).

    Plain reads, so nothing stays resident; a short file is a :class:`CatalogError`.
    ``offset`` must not lie before the file's position (rows are read in order).
    """
    block = np.fromfile(fh, dtype=dtype, count=n * width, offset=offset - fh.tell())
    if block.size != n * width:
        raise CatalogError(f"{_err_path(Path(fh.name))} was truncated while being read")
    return block.reshape(n, width)


def check_finite_rows(
    arr: np.ndarray, *, source: str, chunk: int = 65_536, first_row: int = 0
) -> None:
    """Raise :class:`CatalogError` naming the first rows of ``arr`` holding NaN or ±inf.

    ``first_row`` is the number of ``arr``'s first row in messages (a block of a larger array).
    """
    rows = arr.reshape(len(arr), -1) if arr.ndim >= 1 and len(arr) else arr.reshape(1, -1)
    for start in range(0, len(rows), chunk):
        ok = np.isfinite(rows[start : start + chunk]).all(axis=1)
        if not ok.all():
            bad = (np.flatnonzero(~ok)[:5] + start + first_row).tolist()
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
