"""A catalogue on disk: a folder you can read with ``cat manifest.json``.

Layout::

    catalog/
      manifest.json    format version, library version, extractor + index specs,
                       dim, count, dtype, sha256 of every other file
      vectors.npy      (count, dim) float32 (or float16), rows aligned with ids.json
      ids.json         the ids, in order (strings or integers)
      metadata.jsonl   one JSON object per line, aligned with ids.json
      index/           the index's own files (FAISS's format + JSON + .npy)

The folder is written under a temporary sibling name and renamed into place,
so a crash or a full disk never leaves a half-written catalogue where a reader
would look. Reading verifies the format version, every checksum, and the
shapes, and never unpickles anything.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from .errors import CatalogError, FormatVersionError
from .ids import Id
from .storage import fsync_dir, read_jsonl, replace_dir, sha256_file, write_npy, write_text

FORMAT = "visualsim-catalog"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
VECTORS = "vectors.npy"
IDS = "ids.json"
METADATA = "metadata.jsonl"
INDEX_DIR = "index"


@dataclass
class CatalogData:
    """What :func:`read_catalog` returns.

    Attributes
    ----------
    manifest
        The parsed ``manifest.json``.
    vectors
        ``(count, dim)`` array (memory-mapped when asked).
    ids
        The ids in order.
    metadata
        One dict per id.
    index_dir
        The index's folder inside the catalogue.
    """

    manifest: dict[str, Any]
    vectors: np.ndarray
    ids: list[Id]
    metadata: list[dict[str, Any]]
    index_dir: Path


def json_safe(value: Any, *, where: str = "value") -> Any:
    """Return ``value`` converted to plain JSON types (numpy scalars, paths, dates).

    Raises
    ------
    CatalogError
        For values that have no faithful JSON form (arbitrary objects, NaN).
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


def write_catalog(
    path: str | os.PathLike[str],
    *,
    vectors: np.ndarray,
    ids: Sequence[Id],
    metadata: Sequence[Mapping[str, Any]],
    extractor: Mapping[str, Any],
    index: Mapping[str, Any],
    save_index: Callable[[Path], None],
    extra: Mapping[str, Any] | None = None,
    extra_dirs: Mapping[str, Callable[[Path], None]] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a catalogue folder atomically and return its path.

    Parameters
    ----------
    path
        Destination folder.
    vectors, ids, metadata
        The stored items, aligned.
    extractor, index
        ``{"name": ..., "config": ...}`` specs, stored in the manifest.
    save_index
        Called with the ``index/`` folder to write; the index saves itself.
    extra
        More JSON-safe manifest fields (e.g. vector storage options).
    extra_dirs
        More sub-folders, each written by its callable (e.g. ``reducer/``);
        their files are checksummed like the rest.
    overwrite
        Replace an existing catalogue (atomically: the old one stays readable
        until the new one is complete).

    Raises
    ------
    CatalogError
        If ``path`` exists and ``overwrite`` is false, or the data is inconsistent.
    """
    dest = Path(path)
    if dest.exists() and not overwrite:
        raise CatalogError(f"{str(dest)!r} already exists; pass overwrite=True to replace it")
    if len(ids) != len(vectors) or len(metadata) != len(vectors):
        raise CatalogError(
            f"inconsistent catalogue: {len(vectors)} vectors, {len(ids)} ids, "
            f"{len(metadata)} metadata rows"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.tmp-{uuid.uuid4().hex[:12]}"
    tmp.mkdir()
    try:
        write_npy(tmp / VECTORS, vectors)
        write_text(tmp / IDS, json.dumps([json_safe(i, where="id") for i in ids]))
        lines = (
            json.dumps(json_safe(dict(m), where=f"metadata of {ids[n]!r}"), ensure_ascii=False)
            for n, m in enumerate(metadata)
        )
        write_text(tmp / METADATA, "".join(line + "\n" for line in lines))
        save_index(tmp / INDEX_DIR)
        for name, save in (extra_dirs or {}).items():
            save(tmp / name)
        files = {
            p.relative_to(tmp).as_posix(): sha256_file(p)
            for p in sorted(tmp.rglob("*"))
            if p.is_file()
        }
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "library_version": _library_version(),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "count": len(ids),
            "dim": int(vectors.shape[1]) if vectors.ndim == 2 else 0,
            "dtype": str(vectors.dtype),
            "extractor": json_safe(dict(extractor), where="extractor config"),
            "index": json_safe(dict(index), where="index config"),
            **json_safe(dict(extra or {}), where="manifest extra"),
            "files": files,
        }
        write_text(tmp / MANIFEST, json.dumps(manifest, indent=2, ensure_ascii=False))
        fsync_dir(tmp)
        replace_dir(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Return a catalogue's parsed manifest after checking its format version."""
    root = Path(path)
    if not root.exists():
        raise CatalogError(f"no catalogue at {str(root)!r}: the folder does not exist")
    if not root.is_dir():
        raise CatalogError(f"{str(root)!r} is a file, not a catalogue folder")
    file = root / MANIFEST
    if not file.is_file():
        raise CatalogError(f"{str(root)!r} is not a visualsim catalogue: {MANIFEST} is missing")
    try:
        manifest = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CatalogError(f"{file} is corrupt (not valid JSON: {exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CatalogError(f"{file} is not a visualsim catalogue manifest")
    version = manifest.get("format_version")
    if not isinstance(version, int):
        raise CatalogError(f"{file} has no valid format_version")
    if version > FORMAT_VERSION:
        raise FormatVersionError(
            f"{str(root)!r} was written in catalogue format {version} by visualsim "
            f"{manifest.get('library_version', '?')}; this visualsim ({_library_version()}) "
            f"reads format {FORMAT_VERSION} and older. Upgrade visualsim to read it"
        )
    for key in ("count", "dim", "files", "extractor", "index"):
        if key not in manifest:
            raise CatalogError(f"{file} lacks the field {key!r}")
    return manifest


def read_catalog(
    path: str | os.PathLike[str], *, mmap: bool = False, verify: bool = True
) -> CatalogData:
    """Read and check a catalogue folder.

    Parameters
    ----------
    path
        The catalogue folder.
    mmap
        Memory-map ``vectors.npy`` (read-only) instead of reading it.
    verify
        Check every file's SHA-256 against the manifest (reads every byte once).

    Raises
    ------
    CatalogError
        Naming the file and what is wrong: missing, tampered (checksum), wrong
        shape, or inconsistent counts.
    FormatVersionError
        For a catalogue written by a newer format.
    """
    root = Path(path)
    manifest = read_manifest(root)
    files: dict[str, str] = manifest["files"]
    for required in (VECTORS, IDS, METADATA):
        if required not in files:
            raise CatalogError(f"{root / MANIFEST} does not list {required}")
    for rel, expected in files.items():
        file = root / rel
        if not file.is_file():
            raise CatalogError(f"catalogue {str(root)!r} is incomplete: {rel} is missing")
        if verify and sha256_file(file) != expected:
            raise CatalogError(
                f"{file} does not match its checksum in {MANIFEST}: the file was modified or "
                "truncated after saving; restore it or rebuild the catalogue"
            )
    count, dim = int(manifest["count"]), int(manifest["dim"])
    try:
        vectors = np.load(root / VECTORS, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise CatalogError(f"{root / VECTORS} cannot be read as a numpy array: {exc}") from exc
    if vectors.ndim != 2 or vectors.shape != (count, dim):
        raise CatalogError(
            f"{root / VECTORS} has shape {vectors.shape}, but the manifest says ({count}, {dim})"
        )
    if vectors.dtype not in (np.float32, np.float16):
        raise CatalogError(f"{root / VECTORS} has dtype {vectors.dtype}; expected float32/float16")
    try:
        ids = json.loads((root / IDS).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CatalogError(f"{root / IDS} is corrupt: {exc}") from exc
    if not isinstance(ids, list) or len(ids) != count:
        raise CatalogError(f"{root / IDS} must be a list of {count} ids")
    if any(not isinstance(i, (str, int)) or isinstance(i, bool) for i in ids):
        raise CatalogError(f"{root / IDS} holds an id that is neither a string nor an integer")
    if len(set(ids)) != len(ids):
        raise CatalogError(f"{root / IDS} holds duplicate ids")
    metadata = read_jsonl(root / METADATA)
    if len(metadata) != count:
        raise CatalogError(f"{root / METADATA} has {len(metadata)} rows; expected {count}")
    return CatalogData(manifest, vectors, ids, metadata, root / INDEX_DIR)


def _library_version() -> str:
    from . import __version__

    return __version__


__all__ = [
    "FORMAT_VERSION",
    "CatalogData",
    "json_safe",
    "read_catalog",
    "read_manifest",
    "write_catalog",
]
