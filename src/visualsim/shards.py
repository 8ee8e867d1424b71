"""Vector shards on disk: a folder of complete pieces that a crash cannot corrupt.

A long extraction (:func:`visualsim.distributed.extract_to_shards`) writes its
vectors piece by piece into a folder you can read with ``cat manifest.json``::

    shards/
      manifest.json                 format, extractor spec, dim, shard size, and per
                                    shard: input range, count, sha256, failures
      shard-00000.npy               (count, dim) float32        ┐ format="npy"
      shard-00000.ids.json          the ids, in input order     │
      shard-00000.metadata.jsonl    one JSON object per line    ┘
      shard-00001.parquet           id, vector, metadata        ← format="parquet"

Shard ``k`` holds inputs ``k * shard_size`` up to ``(k + 1) * shard_size`` (less
the ones that could not be read, which the manifest lists). Every file is
written under a temporary name and renamed into place, and a shard exists only
once the manifest — itself replaced atomically — lists it: a crash leaves
complete shards plus, at worst, stray temporary files that readers ignore and
the next writer removes. Nothing is pickled; Parquet needs ``pyarrow``.

:func:`read_shards` and :func:`iter_shards` read them back, verifying
checksums and shapes; :func:`load_into` and :meth:`visualsim.Recommender.from_shards`
turn them into a searchable catalogue. Shards are :mod:`visualsim.chunks` chunks
(``"npy"`` or ``"parquet"`` layout): the same writer, reader, manifest writer and
resume rule as a fit's checkpoint.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

import numpy as np

from . import persistence as P
from .chunks import (
    chunk_present,
    extractor_differences,
    ids_digest,
    import_pyarrow,
    read_chunk,
    write_chunk,
    write_store_manifest,
)
from .errors import CatalogError, ConfigError, DimensionMismatch
from .extractors.spec import extractor_spec, same_vectors
from .ids import Id
from .persistence import json_safe
from .validation import check_choice, check_int

_KIND = "shards"
FORMAT = P.format_of(_KIND).tag
LEGACY_FORMATS = P.format_of(_KIND).old_tags
"""Tags older visualsim versions wrote; still read."""
FORMAT_VERSION = P.format_of(_KIND).version
MANIFEST = P.format_of(_KIND).name
ShardFormat = Literal["npy", "parquet"]
SHARD_FORMATS: tuple[str, ...] = ("npy", "parquet")
_LEGACY_TMP = re.compile(r"\.(shard-\d{5,}\.[a-z.]+|manifest\.json)\.tmp-[0-9a-f]+")
"""Temporary names of visualsim before 0.2 (``.shard-00002.npy.tmp-1a2b``)."""
_MAX_SHARDS = 10_000_000
_FILE_KINDS = {"npy": ("vectors", "ids", "metadata"), "parquet": ("table",)}


@dataclass
class Shard:
    """One shard read back from disk.

    Attributes
    ----------
    index
        Shard number ``k``.
    start, stop
        The input positions it covers, ``start <= position < stop``.
    vectors
        ``(count, dim)`` float32, rows aligned with ``ids``.
    ids
        The ids of the inputs that were read, in input order.
    metadata
        One dict per id.
    failed
        Inputs of this range that could not be read: dicts with ``position``,
        ``id``, ``source`` and ``reason``.
    """

    index: int
    start: int
    stop: int
    vectors: np.ndarray
    ids: list[Id]
    metadata: list[dict[str, Any]]
    failed: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class ShardSet:
    """Every shard of a folder, concatenated in input order (what :func:`read_shards` returns).

    Attributes
    ----------
    vectors
        ``(count, dim)`` float32.
    ids
        The ids, aligned with ``vectors``.
    metadata
        One dict per id.
    extractor
        The extractor spec ``{"name": ..., "config": {...}}`` that made the
        vectors; :func:`~visualsim.extractors.base.extractor_from_config`
        rebuilds it.
    failed
        Every input that could not be read (see :attr:`Shard.failed`).
    manifest
        The parsed ``manifest.json``.
    """

    vectors: np.ndarray
    ids: list[Id]
    metadata: list[dict[str, Any]]
    extractor: dict[str, Any]
    failed: list[dict[str, Any]]
    manifest: dict[str, Any]

    def __len__(self) -> int:
        return len(self.ids)


# -- writing ---------------------------------------------------------------------------


class ShardWriter:
    """Write shards into a folder one at a time, resuming what an earlier run left.

    Opening a folder that already holds shards checks that they come from the
    same extractor, shard size and format, and removes stray temporary files
    of a run that crashed. :meth:`is_done` then says which shards to skip.

    Parameters
    ----------
    path
        The folder (created if missing).
    extractor
        The extractor spec ``{"name": ..., "config": {...}}`` of the vectors.
    dim
        Vector length.
    shard_size
        Inputs per shard. More means fewer files and less manifest churn;
        fewer means less work lost to a crash and finer resumption.
    format
        ``"npy"`` (numpy + JSON, no extra dependency) or ``"parquet"`` (one file
        per shard with ``id``, ``vector`` and ``metadata`` columns; needs
        ``pyarrow``; ids must be all strings or all integers).

    Raises
    ------
    ConfigError
        For a bad ``shard_size`` or ``format``, or a folder written with other
        settings or by another extractor.
    CatalogError
        If the folder's manifest is unreadable.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        extractor: Mapping[str, Any],
        dim: int,
        shard_size: int,
        format: ShardFormat = "npy",
    ) -> None:
        check_int("shard_size", shard_size, minimum=1, maximum=1 << 32)
        check_choice("format", format, SHARD_FORMATS)
        check_int("dim", dim, minimum=1, maximum=P.MAX_DIM)
        if format == "parquet":
            import_pyarrow()
        self.path = Path(path)
        self.dim = int(dim)
        self.shard_size = shard_size
        self.format: ShardFormat = format
        self.extractor = json_safe(dict(extractor), where="extractor spec")
        self.path.mkdir(parents=True, exist_ok=True)
        self._remove_stale_temporaries()
        if not os.path.lexists(self.path / MANIFEST) and any(
            not e.name.startswith(P.TMP_PREFIX) for e in os.scandir(self.path)
        ):
            raise CatalogError(
                f"{os.fspath(self.path)!r} holds files but no shard manifest; visualsim writes "
                "shards only into an empty folder or one of its own shard folders"
            )
        self.manifest = self._open_manifest()
        self._done: dict[int, dict[str, Any]] = {
            int(s["index"]): s for s in self.manifest["shards"]
        }

    def is_done(self, index: int, input_ids: Sequence[Id] | None = None) -> bool:
        """Return whether shard ``index`` is complete on disk.

        Parameters
        ----------
        index
            Shard number.
        input_ids
            The ids of every input in the shard's range (read or not); when
            given, they must be the ones the shard was written from.

        Raises
        ------
        ConfigError
            If the shard was written from other inputs (the input changed
            between runs: resuming would mix two catalogues).
        """
        entry = self._done.get(index)
        if entry is None:
            return False
        if not chunk_present(self.path, entry["files"]):
            return False
        if input_ids is not None and entry.get("input_sha256") != ids_digest(input_ids):
            raise ConfigError(
                f"shard {index} in {os.fspath(self.path)!r} was written from other inputs "
                f"(positions {entry['start']}-{entry['stop'] - 1} differ); pass the same "
                "images in the same order to resume, or write to a new folder"
            )
        return True

    def done_indices(self) -> list[int]:
        """Return the numbers of the shards the manifest lists as complete, ascending."""
        return sorted(self._done)

    def write(
        self,
        index: int,
        *,
        vectors: np.ndarray,
        ids: Sequence[Id],
        metadata: Sequence[Mapping[str, Any]],
        input_ids: Sequence[Id],
        failed: Sequence[Mapping[str, Any]] = (),
    ) -> dict[str, Any]:
        """Write shard ``index`` atomically, record it in the manifest, and return its entry.

        Parameters
        ----------
        index
            Shard number; it covers inputs ``index * shard_size`` onwards.
        vectors
            ``(len(ids), dim)`` vectors of the inputs that were read.
        ids, metadata
            Aligned with ``vectors``.
        input_ids
            The ids of every input in the range, read or not (used to check
            that a resumed run got the same inputs).
        failed
            Inputs of the range that could not be read (``position``, ``id``,
            ``source``, ``reason``).
        """
        files, digests = write_chunk(
            self.path,
            f"shard-{index:05d}",
            self.format,
            vectors=vectors,
            ids=ids,
            metadata=metadata,
            dim=self.dim,
        )
        start = index * self.shard_size
        entry = {
            "index": index,
            "start": start,
            "stop": start + len(input_ids),
            "count": len(ids),
            "files": files,
            "sha256": digests,
            "input_sha256": ids_digest(input_ids),
            "failed": [json_safe(dict(f), where="failure record") for f in failed],
        }
        self._done[index] = entry
        self._save_manifest()
        return entry

    def finish(self, n_inputs: int) -> dict[str, Any]:
        """Mark the folder complete after ``n_inputs`` inputs and return the manifest."""
        self.manifest["inputs"] = int(n_inputs)
        self.manifest["complete"] = True
        self._save_manifest()
        return self.manifest

    # -- internals -----------------------------------------------------------------------
    def _open_manifest(self) -> dict[str, Any]:
        fresh: dict[str, Any] = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "extractor": self.extractor,
            "dim": self.dim,
            "dtype": "float32",
            "shard_format": self.format,
            "shard_size": self.shard_size,
            "count": 0,
            "inputs": None,
            "complete": False,
            "shards": [],
        }
        if not (self.path / MANIFEST).exists():
            return fresh
        old = read_manifest(self.path)
        wanted = {"shard_format": self.format, "shard_size": self.shard_size, "dim": self.dim}
        for key, value in wanted.items():
            if old.get(key) != value:
                raise ConfigError(
                    f"{os.fspath(self.path)!r} holds shards with {key}={old.get(key)!r}, not "
                    f"{value!r}; resume with the same settings or write to a new folder"
                )
        where = os.fspath(self.path / MANIFEST)
        diffs = extractor_differences(old["extractor"], self.extractor, where=where)
        if diffs:
            raise ConfigError(
                f"{os.fspath(self.path)!r} holds vectors of extractor {old['extractor']!r}, "
                f"not {self.extractor!r} ({'; '.join(diffs)}); vectors of two extractors "
                "cannot share a catalogue, so write to a new folder"
            )
        old["complete"] = False
        return old

    def _save_manifest(self) -> None:
        shards = [self._done[k] for k in sorted(self._done)]
        self.manifest["shards"] = shards
        self.manifest["count"] = sum(int(s["count"]) for s in shards)
        self.manifest["failed"] = sum(len(s["failed"]) for s in shards)
        self.manifest = write_store_manifest(
            self.path,
            _KIND,
            fields=self.manifest,
            files={name: s["sha256"][name] for s in shards for name in s["files"].values()},
        )

    def _remove_stale_temporaries(self) -> None:
        P.remove_stale_temps(self.path)
        for entry in os.scandir(self.path):
            if _LEGACY_TMP.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)


# -- reading ---------------------------------------------------------------------------


def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Return the parsed ``manifest.json`` of a shard folder, every field checked.

    Checksums are not verified here (:func:`iter_shards` does, shard by
    shard); every file name must be a plain name inside the folder.

    Raises
    ------
    CatalogError
        The folder or manifest is missing or not a shard manifest, or a field
        has the wrong type or is out of range (naming the file and field).
    FormatVersionError
        If a newer visualsim wrote it.
    """
    root = Path(path)
    if not os.path.lexists(root / MANIFEST):
        raise CatalogError(
            f"{os.fspath(root)!r} is not a shard folder: it has no {MANIFEST} "
            "(write one with visualsim.distributed.extract_to_shards)"
        )
    manifest = P.read_manifest(
        root,
        _KIND,
        verify=False,
        required=("extractor", "dim", "shard_format", "shards"),
        upgrade=_files_from_shards,
        must_exist=False,
    )
    where = os.fspath(root / MANIFEST)
    extractor = P.field_dict(where, "extractor", manifest["extractor"])
    P.field_str(where, "extractor.name", extractor.get("name"), max_len=200)
    P.field_dict(where, "extractor.config", extractor.get("config", {}))
    dim = P.field_int(where, "dim", manifest["dim"], minimum=1, maximum=P.MAX_DIM)
    kind = P.field_str(where, "shard_format", manifest["shard_format"], choices=SHARD_FORMATS)
    if "shard_size" in manifest:
        P.field_int(where, "shard_size", manifest["shard_size"], minimum=1, maximum=1 << 32)
    shards = P.field_list(where, "shards", manifest["shards"], max_len=_MAX_SHARDS)
    seen: set[int] = set()
    for n, entry in enumerate(shards):
        at = f"shards[{n}]"
        P.field_dict(where, at, entry)
        index = P.field_int(where, f"{at}.index", entry.get("index"), maximum=_MAX_SHARDS)
        if index in seen:
            raise CatalogError(f"{where}: shard {index} is listed twice")
        seen.add(int(index or 0))
        start = P.field_int(where, f"{at}.start", entry.get("start"))
        stop = P.field_int(where, f"{at}.stop", entry.get("stop"), minimum=start or 0)
        P.field_int(where, f"{at}.count", entry.get("count"), maximum=(stop or 0) - (start or 0))
        files = P.field_dict(where, f"{at}.files", entry.get("files"))
        if sorted(files) != sorted(_FILE_KINDS[kind]):
            raise CatalogError(
                f"{where}: field '{at}.files' must name {', '.join(_FILE_KINDS[kind])}"
            )
        digests = P.field_dict(where, f"{at}.sha256", entry.get("sha256"))
        for name in files.values():
            if not isinstance(name, str) or "/" in name:
                raise CatalogError(
                    f"{where}: '{at}.files' names {str(name)[:80]!r}, not a plain name"
                )
            P.safe_child(root, name, must_exist=False)
            if name not in manifest["files"] or manifest["files"][name] != digests.get(name):
                raise CatalogError(f"{where}: '{at}.sha256' disagrees with 'files' for {name!r}")
        failed = P.field_list(where, f"{at}.failed", entry.get("failed", []))
        if not all(isinstance(f, dict) for f in failed):
            raise CatalogError(f"{where}: field '{at}.failed' must hold objects")
    assert dim is not None
    return manifest


def _files_from_shards(manifest: dict[str, Any]) -> dict[str, Any]:
    """Fill ``files`` of a shard manifest written before visualsim 0.2 (checksums per shard)."""
    if "files" not in manifest and isinstance(manifest.get("shards"), list):
        files: dict[str, Any] = {}
        for entry in manifest["shards"]:
            if isinstance(entry, dict) and isinstance(entry.get("sha256"), dict):
                files.update(entry["sha256"])
        manifest["files"] = files
    return manifest


def iter_shards(path: str | os.PathLike[str], *, verify: bool = True) -> Iterator[Shard]:
    """Yield the complete shards of a folder one at a time, in input order.

    Only shards listed in the manifest are read, so files of an interrupted
    write are never seen. Memory holds one shard at a time.

    Parameters
    ----------
    path
        The shard folder.
    verify
        Check every file's SHA-256 against the manifest (reads each file twice;
        turn off for speed on trusted storage).

    Yields
    ------
    Shard
        Vectors, ids, metadata and failures of one shard.

    Raises
    ------
    CatalogError
        For a missing or corrupt file, a checksum or shape mismatch.
    """
    root = Path(path)
    manifest = read_manifest(root)
    dim = int(manifest["dim"])
    kind = manifest["shard_format"]
    for entry in sorted(manifest["shards"], key=lambda s: int(s["index"])):
        count = int(entry["count"])
        chunk = read_chunk(
            root,
            entry["files"],
            kind,
            dim=dim,
            count=count,
            digests=entry["sha256"] if verify else None,
            source=os.fspath(root / MANIFEST),
        )
        yield Shard(
            int(entry["index"]),
            int(entry["start"]),
            int(entry["stop"]),
            chunk.vectors,
            chunk.ids,
            chunk.metadata,
            list(entry.get("failed", [])),
        )


def read_shards(path: str | os.PathLike[str], *, verify: bool = True) -> ShardSet:
    """Return every shard of a folder concatenated, with the extractor spec that made them.

    Parameters
    ----------
    path
        The shard folder.
    verify
        Check checksums (see :func:`iter_shards`).

    Returns
    -------
    ShardSet
        ``vectors``, ``ids``, ``metadata``, ``extractor``, ``failed``, ``manifest``.

    Raises
    ------
    CatalogError
        For a missing or corrupt shard.
    """
    manifest = read_manifest(path)
    dim = int(manifest["dim"])
    parts: list[np.ndarray] = []
    ids: list[Id] = []
    metadata: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    for shard in iter_shards(path, verify=verify):
        parts.append(shard.vectors)
        ids.extend(shard.ids)
        metadata.extend(shard.metadata)
        failed.extend(shard.failed)
    vectors = np.concatenate(parts) if parts else np.zeros((0, dim), dtype=np.float32)
    return ShardSet(vectors, ids, metadata, dict(manifest["extractor"]), failed, manifest)


# -- into a catalogue ------------------------------------------------------------------


class VectorSink(Protocol):
    """What :func:`load_into` adds shards to: a :class:`~visualsim.Recommender`, typically.

    Typed structurally, so this module needs nothing above the disk layer.
    """

    @property
    def extractor_(self) -> Any:
        """The extractor the vectors must come from."""
        ...

    def add_vectors(
        self,
        vectors: np.ndarray,
        ids: Sequence[Any],
        metadata: Sequence[Mapping[str, Any] | None] | None = None,
    ) -> Any:
        """Add precomputed vectors (all or none)."""
        ...


_Sink = TypeVar("_Sink", bound=VectorSink)


def load_into(recommender: _Sink, path: str | os.PathLike[str], *, verify: bool = True) -> _Sink:
    """Add the vectors of a shard folder to ``recommender`` and return it.

    The body of ``Recommender.add_shards``: the shards must come from the
    recommender's extractor (same name and vector-changing settings), and all
    of them are added at once, so a failure leaves the recommender unchanged.

    Raises
    ------
    ConfigError
        If the shards were made by another extractor.
    DimensionMismatch
        If their dimension differs from the extractor's.
    DuplicateIdError
        If an id is already in the catalogue.
    """
    shards = read_shards(path, verify=verify)
    extractor = recommender.extractor_
    if int(extractor.dim) != int(shards.manifest["dim"]):
        raise DimensionMismatch(
            f"shards in {os.fspath(path)!r} have dimension {shards.manifest['dim']}, "
            f"but the recommender's extractor gives {extractor.dim}"
        )
    mine = extractor_spec(extractor)
    diffs = extractor_differences(
        shards.extractor,
        mine,
        where=os.fspath(Path(path) / MANIFEST),
        names=("shards", "recommender"),
    )
    if diffs:
        raise ConfigError(
            f"shards in {os.fspath(path)!r} were made by {shards.extractor!r}, but the "
            f"recommender uses {mine!r} ({'; '.join(diffs)}); build it with "
            "Recommender.from_shards(path) instead"
        )
    recommender.add_vectors(shards.vectors, shards.ids, shards.metadata)
    return recommender


# -- helpers ---------------------------------------------------------------------------


same_extractor = same_vectors
"""Whether two extractor specs give the same vectors: the one rule,
:func:`visualsim.extractors.spec.same_vectors`, under the name this module exported."""


__all__ = [
    "FORMAT_VERSION",
    "SHARD_FORMATS",
    "Shard",
    "ShardSet",
    "ShardWriter",
    "ids_digest",
    "iter_shards",
    "load_into",
    "read_manifest",
    "read_shards",
    "same_extractor",
]
