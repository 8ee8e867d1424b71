"""Resumable extraction: vectors written to disk chunk by chunk while ``fit`` runs.

A checkpoint folder holds ``chunk-NNNNNN.npy`` (vectors) + ``chunk-NNNNNN.json``
(ids, metadata, failures, inputs consumed) per extracted batch, and
``progress.json`` naming the complete chunks. Each file is written under a
temporary name and renamed, and ``progress.json`` is replaced last, so an
interruption at any moment loses at most the batch in flight. Restarting ``fit``
with the same inputs and the same ``checkpoint_dir`` skips what is done.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .catalog import Id, json_safe
from .errors import CatalogError
from .storage import atomic_write, write_npy, write_text

PROGRESS = "progress.json"
VERSION = 1


class ExtractionCheckpoint:
    """The on-disk state of one interrupted or running extraction.

    Parameters
    ----------
    directory
        Folder for the chunks (created if needed).
    extractor
        The extractor's ``{"name", "config"}`` spec; resuming with a different
        extractor is refused, since its vectors would not mix.

    Attributes
    ----------
    consumed
        Inputs already handled (extracted or failed), in input order.
    """

    def __init__(self, directory: str | os.PathLike[str], extractor: Mapping[str, Any]) -> None:
        self.directory = Path(directory)
        self.extractor = json_safe(dict(extractor), where="extractor config")
        self.chunks: list[str] = []
        self.consumed = 0
        self.directory.mkdir(parents=True, exist_ok=True)
        state_file = self.directory / PROGRESS
        if state_file.exists():
            self._resume(state_file)

    def _resume(self, state_file: Path) -> None:
        try:
            state = json.loads(state_file.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CatalogError(f"checkpoint {state_file} is corrupt: {exc}") from exc
        if state.get("version") != VERSION:
            raise CatalogError(
                f"checkpoint {state_file} has unknown version {state.get('version')}"
            )
        if state.get("extractor") != self.extractor:
            raise CatalogError(
                f"checkpoint {self.directory} was made with extractor {state.get('extractor')}, "
                f"not {self.extractor}; use another checkpoint_dir or delete this one"
            )
        self.chunks = list(state["chunks"])
        self.consumed = int(state["consumed"])
        for name in self.chunks:
            for suffix in (".npy", ".json"):
                if not (self.directory / f"{name}{suffix}").is_file():
                    raise CatalogError(f"checkpoint {self.directory} lost {name}{suffix}")

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
        record = {
            "ids": list(ids),
            "metadata": [
                json_safe(dict(m), where=f"metadata of {i!r}")
                for i, m in zip(ids, metadata, strict=True)
            ],
            "failed": [json_safe(dict(f), where="failure") for f in failed],
            "inputs": n_inputs,
        }
        chunk = vectors.astype(np.float32, copy=False)
        atomic_write(self.directory / f"{name}.npy", lambda p: write_npy(p, chunk))
        atomic_write(self.directory / f"{name}.json", lambda p: write_text(p, json.dumps(record)))
        self.chunks.append(name)
        self.consumed += n_inputs
        state = {
            "version": VERSION,
            "extractor": self.extractor,
            "chunks": self.chunks,
            "consumed": self.consumed,
        }
        atomic_write(self.directory / PROGRESS, lambda p: write_text(p, json.dumps(state)))

    def read(
        self, dim: int
    ) -> tuple[np.ndarray, list[Id], list[dict[str, Any]], list[dict[str, Any]]]:
        """Return every saved ``(vectors, ids, metadata, failures)``, in input order."""
        parts: list[np.ndarray] = []
        ids: list[Id] = []
        metadata: list[dict[str, Any]] = []
        failed: list[dict[str, Any]] = []
        for name in self.chunks:
            vectors = np.load(self.directory / f"{name}.npy", mmap_mode="r", allow_pickle=False)
            record = json.loads((self.directory / f"{name}.json").read_text(encoding="utf-8"))
            if vectors.ndim != 2 or vectors.shape != (len(record["ids"]), dim):
                raise CatalogError(f"checkpoint chunk {name} has shape {vectors.shape}")
            parts.append(vectors)
            ids.extend(record["ids"])
            metadata.extend(record["metadata"])
            failed.extend(record["failed"])
        stacked = np.concatenate(parts) if parts else np.zeros((0, dim), np.float32)
        return np.ascontiguousarray(stacked, dtype=np.float32), ids, metadata, failed

    def clear(self) -> None:
        """Delete the checkpoint folder."""
        shutil.rmtree(self.directory, ignore_errors=True)


__all__ = ["ExtractionCheckpoint"]
