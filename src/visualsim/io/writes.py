"""Durable, atomic file writes: a temporary sibling, fsynced, renamed over the target.

Part of :mod:`visualsim.io`; :mod:`visualsim.persistence` re-exports every public name.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CatalogError
from .paths import TMP_PREFIX, PathLike, _err_path

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
