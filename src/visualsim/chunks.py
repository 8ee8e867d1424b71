"""One resumable store of ``(ids, vectors, metadata)`` chunks on disk.

Both resumable extractions keep their vectors here: a fit's
``checkpoint_dir`` (:mod:`visualsim.checkpoint`) and the shard folders Ray
runs write (:mod:`visualsim.shards`, :mod:`visualsim.distributed`). This
module owns what they share, so each rule exists once:

* **one chunk writer**, :func:`write_chunk`: checks that vectors, ids and
  metadata align, writes every file of a chunk under a temporary name, fsyncs
  and renames it (:func:`visualsim.persistence.atomic_write`), never
  overwrites a file the store did not write, and returns the SHA-256 of each;
* **one chunk reader**, :func:`read_chunk`: every name goes through
  :func:`~visualsim.persistence.safe_child` (nothing outside the folder is
  opened), checksums are compared, the ids are read and checked first and the
  ``.npy`` header is compared with ``(len(ids), dim)`` *before* anything is
  allocated;
* **one manifest writer**, :func:`write_store_manifest` (through
  :func:`visualsim.persistence.write_manifest`);
* **one resume rule**, :func:`extractor_differences`: vectors of two
  extractors never mix, decided by
  :func:`visualsim.extractors.spec.vector_differences` (speed and runtime
  settings may differ), and a damaged saved spec is a
  :class:`~visualsim.errors.CatalogError`; :func:`ids_digest` recognises the
  inputs a chunk was made from.

A chunk is a few files named by a stem, in one of three layouts
(:data:`LAYOUTS`)::

    "npy"      <stem>.npy (count, dim) float32, <stem>.ids.json, <stem>.metadata.jsonl
    "parquet"  <stem>.parquet with id, vector and metadata columns (needs pyarrow)
    "record"   <stem>.npy and <stem>.json {"ids", "metadata", "failed", "inputs"}

Shard folders use ``"npy"`` or ``"parquet"``; checkpoints use ``"record"``.
The folders and manifests written before this module existed are these very
layouts, byte for byte, so every old folder reads and resumes unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import persistence as P
from .errors import CatalogError, ConfigError, DimensionMismatch, VisualsimError
from .extractors.spec import vector_differences
from .ids import Id, check_ids
from .persistence import json_safe

LAYOUTS: dict[str, tuple[str, ...]] = {
    "npy": ("vectors", "ids", "metadata"),
    "parquet": ("table",),
    "record": ("vectors", "record"),
}
"""The files of a chunk in each layout, by role."""
_SUFFIXES = {
    "vectors": ".npy",
    "ids": ".ids.json",
    "metadata": ".metadata.jsonl",
    "table": ".parquet",
    "record": ".json",
}
MAX_RECORD_BYTES = 1 << 30
"""Largest ids / metadata / record file read back."""


@dataclass
class Chunk:
    """One chunk read back by :func:`read_chunk`.

    Attributes
    ----------
    vectors
        ``(len(ids), dim)`` float32, rows aligned with ``ids``.
    ids
        The ids, in input order.
    metadata
        One dict per id.
    record
        The rest of a ``"record"`` chunk's JSON (``failed``, ``inputs``);
        empty for the other layouts.
    """

    vectors: np.ndarray
    ids: list[Id]
    metadata: list[dict[str, Any]]
    record: dict[str, Any] = field(default_factory=dict)


def chunk_files(stem: str, layout: str) -> dict[str, str]:
    """Return the file names of chunk ``stem`` in ``layout``, by role.

    >>> chunk_files("shard-00002", "npy")["ids"]
    'shard-00002.ids.json'
    """
    return {role: f"{stem}{_SUFFIXES[role]}" for role in LAYOUTS[layout]}


# -- writing ---------------------------------------------------------------------------


def write_chunk(
    root: str | os.PathLike[str],
    stem: str,
    layout: str,
    *,
    vectors: np.ndarray,
    ids: Sequence[Id],
    metadata: Sequence[Mapping[str, Any]],
    dim: int | None = None,
    extra: Mapping[str, Any] | None = None,
    mine: Collection[str] | None = None,
) -> tuple[dict[str, str], dict[str, str]]:
    """Write one chunk atomically into ``root``; return ``(files by role, sha256 by file)``.

    Parameters
    ----------
    root
        The store's folder.
    stem
        The chunk's name (``"shard-00003"``, ``"chunk-000003"``).
    layout
        One of :data:`LAYOUTS`.
    vectors, ids, metadata
        Aligned rows: ``(n, dim)`` vectors, ``n`` ids, ``n`` JSON-safe dicts.
    dim
        The vector length the store holds (``None``: any).
    extra
        More fields of a ``"record"`` chunk's JSON (``failed``, ``inputs``).
    mine
        Stems this store wrote (listed in its manifest); an existing file of
        any other stem is refused. ``None``: the folder is the store's own
        (a shard folder), so a file left by a crash is replaced.

    Raises
    ------
    DimensionMismatch
        The vectors are not ``(n, dim)``.
    ConfigError
        Vectors, ids and metadata do not align, an id is invalid, metadata is
        not JSON, or Parquet ids mix types.
    CatalogError
        A file of that name exists that this store did not write.
    """
    folder = Path(root)
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    checked = check_ids(ids, unique=False)
    if x.ndim != 2 or (dim is not None and x.shape[1] != dim):
        raise DimensionMismatch(
            f"{stem}: vectors have shape {x.shape}, expected (n, {dim if dim else 'dim'})"
        )
    if not (len(x) == len(checked) == len(metadata)):
        raise ConfigError(
            f"{stem}: {len(x)} vectors, {len(checked)} ids and "
            f"{len(metadata)} metadata rows do not align"
        )
    meta = [
        json_safe(dict(m), where=f"metadata of id {i!r}")
        for i, m in zip(checked, metadata, strict=True)
    ]
    files = chunk_files(stem, layout)
    if mine is not None:
        refuse_foreign(folder, stem, layout, mine=mine)
    if layout == "parquet":
        _write_parquet_atomic(folder / files["table"], x, checked, meta)
    else:
        P.write_npy_atomic(folder / files["vectors"], x)
    if layout == "npy":
        P.write_text_atomic(folder / files["ids"], json.dumps(checked))
        P.write_text_atomic(folder / files["metadata"], "".join(json.dumps(m) + "\n" for m in meta))
    elif layout == "record":
        record = {"ids": checked, "metadata": meta, **dict(extra or {})}
        P.write_json_atomic(folder / files["record"], record, indent=None)
    digests = {name: P.sha256_file(folder / name) for name in files.values()}
    return files, digests


def chunk_present(root: str | os.PathLike[str], files: Mapping[str, str]) -> bool:
    """Return whether every file of a chunk is a regular file in ``root`` (not a link).

    How a resumed store tells a complete chunk from one a crash or a hand lost.
    """
    folder = Path(root)
    return all(
        (folder / name).is_file() and not (folder / name).is_symlink() for name in files.values()
    )


def refuse_foreign(
    root: str | os.PathLike[str], stem: str, layout: str, *, mine: Collection[str]
) -> None:
    """Refuse to write chunk ``stem`` over a file the store did not write.

    Raises
    ------
    CatalogError
        ``stem`` is not in ``mine`` (the stems the store's manifest lists) and
        one of its files exists.
    """
    if stem in mine:
        return
    for name in chunk_files(stem, layout).values():
        target = Path(root) / name
        if os.path.lexists(target):
            raise CatalogError(
                f"{target} exists and was not written by this checkpoint; "
                "visualsim does not overwrite it: pass a checkpoint_dir of its own"
            )


def write_store_manifest(
    folder: str | os.PathLike[str],
    kind: str,
    *,
    fields: Mapping[str, Any],
    files: Mapping[str, str],
) -> dict[str, Any]:
    """Write a store's manifest into ``folder`` atomically and return it.

    The one place a chunk store's manifest is written, through
    :func:`visualsim.persistence.write_manifest`: ``kind`` (``"shards"``,
    ``"checkpoint"``, a key of :data:`visualsim.persistence.FORMATS`) gives
    the tag, version and file name; then the store's own ``fields`` and
    ``files`` (name -> SHA-256 of every complete chunk's files).
    """
    own = {k: v for k, v in fields.items() if k not in _MANIFEST_KEYS}
    return P.write_manifest(folder, kind, own, files=files)


_MANIFEST_KEYS = ("format", "format_version", "library_version", "files")


# -- reading ---------------------------------------------------------------------------


def read_chunk(
    root: str | os.PathLike[str],
    files: Mapping[str, str],
    layout: str,
    *,
    dim: int,
    count: int | None = None,
    digests: Mapping[str, str] | None = None,
    source: str | None = None,
    mmap: bool = False,
) -> Chunk:
    """Read one chunk of ``root`` back, every name, size, id and checksum checked.

    Parameters
    ----------
    root
        The store's folder; every file read is a plain file inside it.
    files
        The chunk's files by role (as :func:`chunk_files` names them).
    layout
        One of :data:`LAYOUTS`.
    dim
        The vector length.
    count
        The number of rows the manifest promises (``None``: as many as ids).
    digests
        SHA-256 by file name to compare with; a file it does not name is not
        verified (``None``: none is).
    source
        The manifest, named in errors.
    mmap
        Memory-map the vectors of an ``.npy`` chunk.

    Raises
    ------
    CatalogError
        Naming the file: outside the folder, missing, changed since written,
        ids that are not ids, a header or row count other than the manifest's,
        NaN, metadata that are not one object per id.
    """
    folder = Path(root)
    where = source or f"manifest of {folder}"
    if digests:
        listed = {n: digests[n] for n in files.values() if n in digests}
        P.check_files(folder, listed, source=where)
    paths = {role: P.safe_child(folder, name) for role, name in files.items()}
    if layout == "parquet":
        vectors, ids, metadata = _read_parquet(paths["table"], dim)
        record: dict[str, Any] = {}
    else:
        if layout == "record":
            record = P.read_json(paths["record"], max_bytes=MAX_RECORD_BYTES)
            if not isinstance(record, dict):
                raise CatalogError(f"{paths['record']} is not a JSON object; the chunk is damaged")
            raw_ids = P.require(str(paths["record"]), record, "ids")
            raw_meta = P.require(str(paths["record"]), record, "metadata")
            ids_file, meta_file = paths["record"], paths["record"]
            record = {k: v for k, v in record.items() if k not in ("ids", "metadata")}
        else:
            ids_file, meta_file = paths["ids"], paths["metadata"]
            raw_ids = P.read_json(ids_file, max_bytes=MAX_RECORD_BYTES)
            raw_meta = P.read_jsonl(meta_file, max_bytes=MAX_RECORD_BYTES)
            record = {}
        ids = _checked_ids(raw_ids, ids_file)
        metadata = P.field_list(str(meta_file), "metadata", raw_meta)
        vectors = P.load_npy(
            paths["vectors"],
            dtypes=("float32",),
            shape=(len(ids), dim),
            mmap=mmap,
            finite=True,
        )
    if count is not None and len(ids) != count:
        raise CatalogError(
            f"{where}: chunk {', '.join(files.values())} holds {len(ids)} ids, "
            f"not the {count} the manifest lists; the folder is damaged"
        )
    if len(metadata) != len(ids) or not all(isinstance(m, dict) for m in metadata):
        raise CatalogError(
            f"{', '.join(files.values())} in {folder}: metadata must hold one object per id"
        )
    return Chunk(vectors, ids, metadata, record)


def _checked_ids(raw: Any, file: Path) -> list[Id]:
    try:
        return check_ids(raw, unique=False)
    except CatalogError:
        raise
    except VisualsimError as exc:  # InvalidIdError
        raise CatalogError(f"{os.fspath(file)!r} does not hold a list of ids: {exc}") from None


# -- rules -----------------------------------------------------------------------------


def extractor_differences(
    saved: Any,
    given: Mapping[str, Any],
    *,
    where: str,
    names: tuple[str, str] = ("saved", "given"),
) -> list[str]:
    """Return why the vectors of ``saved`` and ``given`` would not mix (empty: they mix).

    The one resume rule of a chunk store, through
    :func:`visualsim.extractors.spec.vector_differences`.

    Raises
    ------
    CatalogError
        ``saved`` (read from the file ``where``) is not an extractor spec.
    """
    try:
        return vector_differences(saved, given, names=names)
    except ConfigError as exc:
        raise CatalogError(f"{where}: {exc}") from None


def ids_digest(ids: Sequence[Id]) -> str:
    """Return the SHA-256 of a list of ids (how a resumed run recognises its inputs).

    >>> ids_digest(["a", 1]) == ids_digest(["a", 1]) != ids_digest([1, "a"])
    True
    """
    return hashlib.sha256(json.dumps(list(ids)).encode("utf-8")).hexdigest()


# -- Parquet ---------------------------------------------------------------------------


def import_pyarrow() -> Any:
    """Return ``pyarrow``, or raise a :class:`ConfigError` saying how to install it."""
    try:
        import pyarrow
    except ImportError as exc:
        raise ConfigError(
            "Parquet shards need pyarrow, which is not installed; "
            "pip install 'visualsim[ray]' (or pyarrow), or use format='npy'"
        ) from exc
    return pyarrow


def _write_parquet_atomic(
    path: Path, vectors: np.ndarray, ids: list[Id], metadata: list[dict[str, Any]]
) -> None:
    pa = import_pyarrow()
    import pyarrow.parquet as pq

    kinds = {type(i) for i in ids}
    if len(kinds) > 1:
        raise ConfigError(
            "Parquet shards need ids of one type (all strings or all integers); "
            "pass ids=... or use format='npy'"
        )
    id_type = pa.int64() if kinds == {int} else pa.string()
    table = pa.table(
        {
            "id": pa.array(ids, type=id_type),
            "vector": pa.FixedSizeListArray.from_arrays(
                pa.array(vectors.reshape(-1)), vectors.shape[1]
            ),
            "metadata": pa.array([json.dumps(m) for m in metadata], type=pa.string()),
        }
    )

    def write(tmp: Path) -> None:
        with open(tmp, "xb") as fh:
            pq.write_table(table, fh)

    P.atomic_write(path, write)


def _read_parquet(file: Path, dim: int) -> tuple[np.ndarray, list[Id], list[dict[str, Any]]]:
    import_pyarrow()
    import pyarrow.parquet as pq

    name = os.fspath(file)
    try:
        parquet = pq.ParquetFile(file)
        count = parquet.metadata.num_rows  # from the footer, before any column is read
        if count * dim > P.MAX_COUNT:
            raise CatalogError(f"shard {name!r} claims {count:,} rows; too many")
        table = parquet.read()
        flat = table.column("vector").combine_chunks().flatten().to_numpy(zero_copy_only=False)
        ids = check_ids(table.column("id").to_pylist(), unique=False)
        metadata = [
            P.parse_json(m, source=f"{name} metadata row {n}")
            for n, m in enumerate(table.column("metadata").to_pylist())
        ]
    except CatalogError:
        raise
    except Exception as exc:  # pyarrow raises its own error types for a damaged file
        raise CatalogError(f"cannot read shard {name!r}: {str(exc)[:200]}") from None
    if flat.dtype.kind != "f" or flat.size != count * dim:
        raise CatalogError(
            f"shard {name!r} holds {flat.size} {flat.dtype} values, not {count}x{dim}"
        )
    vectors = np.ascontiguousarray(flat, dtype=np.float32).reshape(count, dim)
    P.check_finite_rows(vectors, source=f"shard {name!r}")
    if not all(isinstance(m, dict) for m in metadata):
        raise CatalogError(f"shard {name!r}: a metadata row is not a JSON object")
    return vectors, ids, metadata


__all__ = [
    "LAYOUTS",
    "Chunk",
    "chunk_files",
    "chunk_present",
    "extractor_differences",
    "ids_digest",
    "import_pyarrow",
    "read_chunk",
    "refuse_foreign",
    "write_chunk",
    "write_store_manifest",
]
