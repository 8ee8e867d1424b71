"""Durable file writes shared by catalogues, index folders, shards and checkpoints.

Every writer fsyncs what it wrote; :func:`atomic_write` writes under a hidden
temporary name in the same folder and renames, so readers see either the old
file or the complete new one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .errors import CatalogError


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 22) -> str:
    """Return the hex SHA-256 of a file, read in 4 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def write_npy(path: Path, array: np.ndarray) -> None:
    """Write ``array`` as ``.npy`` (never pickled) and fsync it."""
    with open(path, "wb") as fh:
        np.save(fh, np.ascontiguousarray(array), allow_pickle=False)
        fh.flush()
        os.fsync(fh.fileno())


def write_text(path: Path, text: str) -> None:
    """Write UTF-8 text and fsync it."""
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def fsync_dir(path: Path) -> None:
    """Flush a folder's entries (renames) to disk, where the platform allows."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a hidden sibling of ``path``, then rename it to ``path``."""
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def replace_dir(tmp: Path, dest: Path) -> None:
    """Move the complete folder ``tmp`` to ``dest``.

    An existing ``dest`` is renamed aside first and deleted only once ``tmp``
    is in place, so a reader finds the old folder or the new one, never a mix
    (if the second rename fails, the old folder is put back).
    """
    if not dest.exists():
        os.replace(tmp, dest)
        fsync_dir(dest.parent)
        return
    old = dest.parent / f".{dest.name}.old-{uuid.uuid4().hex[:12]}"
    os.replace(dest, old)
    try:
        os.replace(tmp, dest)
    except BaseException:
        os.replace(old, dest)
        raise
    fsync_dir(dest.parent)
    shutil.rmtree(old, ignore_errors=True)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Return the JSON objects of a ``.jsonl`` file (blank lines skipped).

    Raises
    ------
    CatalogError
        Naming the file and line of anything that is not a JSON object.
    """
    rows: list[dict[str, Any]] = []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise CatalogError(f"{path} line {n} is not valid JSON: {exc}") from exc
            if not isinstance(row, dict):
                raise CatalogError(f"{path} line {n} is not a JSON object")
            rows.append(row)
    return rows


__all__ = [
    "atomic_write",
    "fsync_dir",
    "read_jsonl",
    "replace_dir",
    "sha256_file",
    "write_npy",
    "write_text",
]
