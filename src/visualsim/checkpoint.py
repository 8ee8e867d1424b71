"""Resumable extraction: vectors written to disk chunk by chunk while ``fit`` runs.

A checkpoint folder holds ``chunk-NNNNNN.npy`` (vectors) + ``chunk-NNNNNN.json``
(ids, metadata, failures, inputs consumed) per extracted batch, and
``progress.json`` (format ``visualsim.checkpoint``) naming every file
visualsim wrote there, with the SHA-256 of each complete chunk's files
(checked when the chunks are read back). Each file is written under a temporary name, fsynced
and renamed, and ``progress.json`` names a chunk *before* its files are
written (as pending) and lists it as complete only after, so an interruption
at any moment loses at most the batch in flight and leaves nothing unlisted.
Restarting ``fit`` with the same inputs and the same ``checkpoint_dir`` skips
what is done.

The folder may be one that holds other files: visualsim reads and deletes
only what its own ``progress.json`` lists, refuses a ``progress.json`` it did
not write, and never overwrites a file it did not write. :meth:`clear` first
marks the checkpoint as clearing, then deletes the listed files, then
``progress.json``, and finally the folder if visualsim created it and it is
empty; a clear interrupted at any moment is finished by the next run.

The chunks are :mod:`visualsim.chunks` chunks in its ``"record"`` layout:
the same writer, reader, manifest writer and resume rule as a shard folder's.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import persistence as P
from .chunks import (
    chunk_files,
    chunk_present,
    extractor_differences,
    read_chunk,
    refuse_foreign,
    write_chunk,
    write_store_manifest,
)
from .errors import CatalogError
from .ids import Id
from .persistence import json_safe

_KIND = "checkpoint"
PROGRESS = P.format_of(_KIND).name
FORMAT = P.format_of(_KIND).tag
VERSION = P.format_of(_KIND).version
_CHUNK = re.compile(r"chunk-\d{6,}")
_MAX_CHUNKS = 10_000_000


class ExtractionCheckpoint:
    """The on-disk state of one interrupted or running extraction.

    Parameters
    ----------
    directory
        Folder for the chunks (created if needed; other files in it are left alone).
    extractor
        The extractor's ``{"name", "config"}`` spec; resuming with a different
        extractor is refused, since its vectors would not mix.

    Attributes
    ----------
    consumed
        Inputs already handled (extracted or failed), in input order.

    Raises
    ------
    CatalogError
        The folder holds a ``progress.json`` visualsim did not write, a
        damaged one, or one from another extractor.
    """

    def __init__(self, directory: str | os.PathLike[str], extractor: Mapping[str, Any]) -> None:
        self.directory = Path(os.path.realpath(directory))
        self.extractor = json_safe(dict(extractor), where="extractor config")
        self.chunks: list[dict[str, Any]] = []
        self.files: dict[str, str] = {}  # name -> sha256 of every complete chunk's files
        self.pending: list[str] = []
        self.consumed = 0
        self.created_dir = False
        if not self.directory.exists():
            self.directory.mkdir(parents=True)
            self.created_dir = True
        elif not self.directory.is_dir():
            raise CatalogError(f"checkpoint_dir {str(self.directory)!r} is a file, not a folder")
        P.remove_stale_temps(self.directory)
        state_file = self.directory / PROGRESS
        if os.path.lexists(state_file):
            self._resume(state_file)
        else:
            self._save()

    # ----------------------------------------------------------------- state

    @property
    def names(self) -> list[str]:
        """Names of the complete chunks, in input order."""
        return [c["name"] for c in self.chunks]

    def _state(self, *, clearing: bool = False) -> dict[str, Any]:
        return {
            "extractor": self.extractor,
            "chunks": self.chunks,
            "files": self.files,
            "pending": self.pending,
            "consumed": self.consumed,
            "created_dir": self.created_dir,
            "clearing": clearing,
        }

    def _save(self, *, clearing: bool = False) -> None:
        write_store_manifest(
            self.directory,
            _KIND,
            fields=self._state(clearing=clearing),
            files=self.files,
        )

    def _resume(self, state_file: Path) -> None:
        where = str(state_file)
        state = P.read_json(P.safe_child(self.directory, PROGRESS), max_bytes=1 << 30)
        if not isinstance(state, dict) or state.get("format", FORMAT) != FORMAT:
            raise CatalogError(
                f"{where} was not written by visualsim; pass a checkpoint_dir of its own "
                "(visualsim never overwrites files it did not write)"
            )
        version = state.get("format_version", state.get("version"))
        if "format" not in state and version != 1:
            raise CatalogError(f"{where} was not written by visualsim; use another checkpoint_dir")
        if isinstance(version, bool) or version not in (1, VERSION):
            raise CatalogError(
                f"{where} has checkpoint format version {str(version)[:20]}; this visualsim "
                f"reads 1 and {VERSION}: use another checkpoint_dir"
            )
        names = P.field_list(where, "chunks", state.get("chunks"), max_len=_MAX_CHUNKS)
        pending = P.field_list(where, "pending", state.get("pending", []), max_len=_MAX_CHUNKS)
        chunks: list[dict[str, Any]] = []
        for n, entry in enumerate(names):
            if version == 1:  # a bare name; its inputs are in the chunk's own record
                entry = {"name": entry, "inputs": None}
            entry = P.field_dict(where, f"chunks[{n}]", entry)
            name = self._chunk_name(where, entry.get("name"))
            inputs = P.field_int(
                where, f"chunks[{n}].inputs", entry.get("inputs"), allow_none=version == 1
            )
            chunks.append({"name": name, "inputs": inputs})
        self.pending = [self._chunk_name(where, p) for p in pending]
        files = P.field_dict(where, "files", state.get("files", {}))
        for rel, digest in files.items():
            if not isinstance(digest, str) or len(digest) != 64:
                raise CatalogError(f"{where}: field 'files' gives {str(digest)[:80]!r} for {rel!r}")
            P.safe_child(self.directory, rel, must_exist=False)
        self.files = dict(files)
        self.created_dir = bool(state.get("created_dir", False))
        self.chunks = chunks
        if state.get("clearing") is True:  # a clear() was interrupted: finish it, start afresh
            self._delete_files()
            self.chunks, self.pending, self.consumed, self.files = [], [], 0, {}
            self._save()
            return
        # the one rule: speed and runtime settings (batch_size, precision) may differ
        diffs = extractor_differences(state.get("extractor"), self.extractor, where=where)
        if diffs:
            raise CatalogError(
                f"checkpoint {self.directory} was made with extractor "
                f"{str(state.get('extractor'))[:200]}, not {self.extractor} "
                f"({'; '.join(diffs)}); use another checkpoint_dir or delete this one"
            )
        # keep the longest prefix of chunks whose files are all there
        kept: list[dict[str, Any]] = []
        for entry in chunks:
            if not chunk_present(self.directory, chunk_files(entry["name"], "record")):
                break
            if entry["inputs"] is None:
                record = self._record(entry["name"])
                entry["inputs"] = P.field_int(
                    str(self.directory / f"{entry['name']}.json"),
                    "inputs",
                    record.get("inputs"),
                    minimum=0,
                )
            kept.append(entry)
        lost = [e["name"] for e in chunks[len(kept) :]]
        self.pending = list(dict.fromkeys([*self.pending, *lost]))
        self.chunks = kept
        for name in lost:
            for suffix in (".npy", ".json"):
                self.files.pop(f"{name}{suffix}", None)
        self.consumed = sum(int(e["inputs"]) for e in kept)
        if version == 1 or lost:
            self._save()

    @staticmethod
    def _chunk_name(where: str, name: Any) -> str:
        if not isinstance(name, str) or not _CHUNK.fullmatch(name):
            raise CatalogError(
                f"{where} lists {str(name)[:80]!r}, which is not a checkpoint chunk name; "
                "the file is damaged: delete the checkpoint folder's progress.json"
            )
        return name

    def _record(self, name: str) -> dict[str, Any]:
        file = P.safe_child(self.directory, f"{name}.json")
        record = P.read_json(file, max_bytes=1 << 30)
        if not isinstance(record, dict):
            raise CatalogError(f"{file} is not a JSON object; the checkpoint is damaged")
        return record

    # ----------------------------------------------------------------- writing

    def write(
        self,
        vectors: np.ndarray,
        ids: Sequence[Id],
        metadata: Sequence[Mapping[str, Any]],
        failed: Sequence[Mapping[str, Any]],
        n_inputs: int,
    ) -> None:
        """Persist one batch: ``n_inputs`` inputs, of which ``ids`` were extracted."""
        name = f"chunk-{len(self.chunks):06d}"
        extra = {
            "failed": [json_safe(dict(f), where="failure") for f in failed],
            "inputs": int(n_inputs),
        }
        refuse_foreign(self.directory, name, "record", mine={*self.pending, *self.names})
        if name not in self.pending:
            self.pending.append(name)
            self._save()  # listed before it exists: a crash never leaves an unlisted file
        _, digests = write_chunk(
            self.directory,
            name,
            "record",
            vectors=vectors,
            ids=ids,
            metadata=metadata,
            extra=extra,
            mine=self.pending,
        )
        self.files.update(digests)
        self.pending.remove(name)
        self.chunks.append({"name": name, "inputs": int(n_inputs)})
        self.consumed += int(n_inputs)
        self._save()

    # ----------------------------------------------------------------- reading

    def read(
        self, dim: int
    ) -> tuple[np.ndarray, list[Id], list[dict[str, Any]], list[dict[str, Any]]]:
        """Return every saved ``(vectors, ids, metadata, failures)``, in input order.

        Raises
        ------
        CatalogError
            A chunk is damaged (shape, dtype, NaN, malformed record).
        """
        parts: list[np.ndarray] = []
        ids: list[Id] = []
        metadata: list[dict[str, Any]] = []
        failed: list[dict[str, Any]] = []
        for name in self.names:
            chunk = read_chunk(
                self.directory,
                chunk_files(name, "record"),
                "record",
                dim=dim,
                digests=self.files,
                source=str(self.directory / PROGRESS),
                mmap=True,
            )
            where = str(self.directory / f"{name}.json")
            fails = P.field_list(where, "failed", chunk.record.get("failed", []))
            if not all(isinstance(f, dict) for f in fails):
                raise CatalogError(f"{where}: 'failed' must hold objects")
            parts.append(chunk.vectors)
            ids.extend(chunk.ids)
            metadata.extend(chunk.metadata)
            failed.extend(fails)
        stacked = np.concatenate(parts) if parts else np.zeros((0, dim), np.float32)
        return np.ascontiguousarray(stacked, dtype=np.float32), ids, metadata, failed

    # ----------------------------------------------------------------- clean-up

    def _delete_files(self) -> None:
        for name in [*self.names, *self.pending]:
            for suffix in (".npy", ".json"):
                target = self.directory / f"{name}{suffix}"
                if target.is_symlink() or target.is_file():
                    with contextlib.suppress(FileNotFoundError):
                        target.unlink()
        P.fsync_dir(self.directory)

    def clear(self) -> None:
        """Delete what this checkpoint wrote, and its folder if visualsim made it and it is empty.

        Files visualsim did not write are left alone. Interrupted at any
        moment, the next :class:`ExtractionCheckpoint` on the folder finishes
        the clean-up (or, before it began, resumes as if nothing happened).
        """
        self._save(clearing=True)
        self._delete_files()
        with contextlib.suppress(FileNotFoundError):
            (self.directory / PROGRESS).unlink()
        P.remove_stale_temps(self.directory)
        P.fsync_dir(self.directory)
        self.chunks, self.pending, self.consumed, self.files = [], [], 0, {}
        if self.created_dir:
            with contextlib.suppress(OSError):
                self.directory.rmdir()  # only if empty: never removes another's file


__all__ = ["FORMAT", "PROGRESS", "ExtractionCheckpoint"]
