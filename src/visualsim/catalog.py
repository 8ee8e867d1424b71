"""A catalogue on disk: a folder you can read with ``cat manifest.json``.

Layout (format version 3)::

    shop.catalog/
      manifest.json               format, versions, extractor/index/reducer specs,
                                  dim, storage, fields, the chunk list, sha256 of every file
      chunk-<id>.vectors.npy      the vectors of rows [start, stop) (float32 or float16)
      chunk-<id>.ids.json         their ids
      chunk-<id>.columns.json     their dense typed fields (see _OPTIONAL_CHUNK_FILES),
      chunk-<id>.present.npy        with which rows have them and their values
      chunk-<id>.ints.npy           (int64: integers, booleans, text codes)
      chunk-<id>.floats.npy         (float64)
      chunk-<id>.metadata.jsonl   their other metadata (sparse or json fields), one object a line
      chunk-<id>.sources.json     their image paths (relative to the image root) and SHA-256s
      chunk-<id>.fingerprints.npy their duplicate-detector fingerprints (when any has one)
      dead-<gen>.npy              rows removed since the last compaction (tombstones)
      overrides-<gen>.jsonl       metadata changed in rows of earlier chunks
      failed-<gen>.json           inputs of the last fit/add that could not be read
      index-<gen>/                the approximate index over the sealed rows (none for exact;
                                  HNSW: its graph alone, the vectors read from the chunks)
      reducer-<gen>/              the PCA reducer, when reducing

Saving a catalogue back where it came from writes only what changed: a new
chunk for the rows added since, the tombstones, the overrides and the
manifest; the index folder only when the index changed (a compaction, or
the delta segment being sealed). Files are never rewritten in place: new
files get new names, ``manifest.json`` is replaced atomically last, and only
then are the files the old manifest listed (and no longer needed) removed.
So a reader always finds the old or the new catalogue, and :func:`load_catalog`
retries when an overwrite removed a file under it. Saving over anything that
is not a visualsim catalogue (or an empty folder) is refused.

Format versions 1 (visualsim 0.1: ``vectors.npy``, ``ids.json``,
``metadata.jsonl``, ``index/``) and 2 (no typed columns, the index with its
vectors) are still read; version 3 marks what an older reader would misread.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import persistence as P
from .duplicates import FINGERPRINT_BYTES
from .errors import (
    CatalogConflictError,
    CatalogError,
    ConfigError,
    DimensionMismatch,
    VisualsimError,
)
from .ids import Id, check_ids
from .store import KINDS, Store, _Grow, _Zeros

if TYPE_CHECKING:  # pragma: no cover
    from .search import Segments

FORMAT = P.format_of("catalog").tag
"""``"visualsim.catalog"`` (catalogues saved before 0.2 say ``"visualsim-catalog"``: still read)."""
FORMAT_VERSION = P.format_of("catalog").version
MANIFEST = P.format_of("catalog").name
MAX_CHUNKS = 100_000

_OURS = (
    "chunk-",
    "dead-",
    "overrides-",
    "failed-",
    "index-",
    "partitions-",
    "reducer-",
    "transform-",
)
PARTITIONS_FORMAT = P.format_of("partitions").tag
MAX_PARTITIONS = 65_536
"""Partitions (distinct values of ``partition_by``) a catalogue may hold."""


@dataclass
class SavedState:
    """What a recommender remembers of the folder it was loaded from or saved to."""

    path: Path
    uid: str
    generation: int
    manifest: dict[str, Any]
    saved_rows: int
    dead_saved: int
    overrides: dict[int, dict[str, Any]] = field(default_factory=dict)
    dirty_rows: set[int] = field(default_factory=set)
    rewrite: bool = False
    """The rows were renumbered since (``compact``): the next save writes everything."""


@dataclass
class CatalogState:
    """A catalogue in memory: what :func:`save_catalog` writes and :func:`load_catalog` returns.

    Plain parts only, so this module knows nothing of the recommender that holds them.

    Attributes
    ----------
    extractor
        The extractor the vectors come from.
    store
        Ids, rows, vectors, metadata columns and tombstones.
    segments
        The index over the store's rows (and its partitions).
    reducer, transform
        The fitted PCA reducer and learned transform, or ``None``.
    image_root
        The folder image paths are stored relative to (absolute after a load), or ``None``.
    failed
        The inputs of the last fit/add that could not be read: ``{"id", "source",
        "reason"}`` records.
    index
        After a load without a given index: the saved index as a recommender names
        it (its registered name, or the backend of an exact index); else ``None``.
    saved
        What is known of the folder the catalogue came from, so saving back there
        writes only what changed; ``None`` for a catalogue never saved.
    """

    extractor: Any
    store: Store
    segments: Segments
    reducer: Any = None
    transform: Any = None
    image_root: str | os.PathLike[str] | None = None
    failed: list[dict[str, Any]] = field(default_factory=list)
    index: Any = None
    saved: SavedState | None = None


def read_manifest(path: str | os.PathLike[str], *, verify: bool = False) -> dict[str, Any]:
    """Return a catalogue's manifest (format checked; checksums when ``verify``)."""
    return P.read_manifest(Path(path), "catalog", verify=verify)


# --------------------------------------------------------------------------- save


def save_catalog(
    catalog: CatalogState, path: Path, *, overwrite: bool, on_conflict: str = "error"
) -> SavedState:
    """Write ``catalog`` to ``path`` (see the module docstring); return what was saved.

    The caller keeps the catalogue unchanged meanwhile (a recommender holds its read
    lock) and keeps the returned state for its next save.

    Optimistic concurrency: when ``catalog.saved`` names this very folder (it was
    loaded from it or last saved to it) and the folder now holds another catalogue
    or another generation (another writer saved since), ``on_conflict="error"``
    raises :class:`~visualsim.errors.CatalogConflictError` and writes nothing;
    ``"overwrite"`` writes this catalogue whole over the other writer's. A catalogue
    that knows no generation of ``path`` (never loaded from it) replaces it as
    before.

    The manifest is read, compared and replaced under :func:`visualsim.io.writer_lock`
    on the folder, so two savers into the same existing folder are serialized and
    the second one sees the first one's generation. What remains open: a writer
    that does not take that lock (another program, a visualsim older than this
    check, a filesystem without ``flock``), and two savers that both find no
    folder at ``path`` and both create it (the later folder swap wins, as before).
    """
    if on_conflict not in ("error", "overwrite"):
        raise ConfigError(f"on_conflict must be 'error' or 'overwrite', not {on_conflict!r}")
    exists = path.exists() or path.is_symlink()
    if exists:
        replaceable = P.check_replaceable(path, kind="catalog")
        if replaceable and any(path.iterdir()) and not overwrite:
            raise CatalogError(
                f"{path} already exists (a catalogue); pass overwrite=True to replace it"
            )
    if not exists:
        tmp = P.make_temp_dir(path)
        try:
            new_state = _write_all(catalog, tmp, previous=None)
            P.replace_dir(tmp, path, kind="catalog")
        except BaseException:
            P.discard_temp_dir(tmp)
            raise
        new_state.path = path
        return new_state
    with P.writer_lock(path):
        old: dict[str, Any] | None = None
        if any(path.iterdir()):
            old = P.read_manifest(path, "catalog", verify=False)
        state = catalog.saved
        known = state is not None and state.path.resolve() == path.resolve()
        if known and old is not None and state is not None:
            found = int(old.get("generation") or 0)
            moved = (old.get("catalog_uid"), found) != (state.uid, state.generation)
            if moved and on_conflict == "error":
                raise _conflict(path, state, old, found)
        incremental = (
            known
            and state is not None
            and old is not None
            and old.get("catalog_uid") == state.uid
            and old.get("generation") == state.generation
            and state.saved_rows <= catalog.store.n_rows
            and not state.rewrite
        )
        return _write_all(catalog, path, previous=state if incremental else None, old=old)


def _conflict(
    path: Path, state: SavedState, old: Mapping[str, Any], found: int
) -> CatalogConflictError:
    """The error of a save onto a folder another writer saved since ``state``."""
    same = old.get("catalog_uid") == state.uid
    what = (
        f"it holds generation {found}, this recommender knows generation {state.generation}"
        if same
        else (
            f"it now holds another catalogue (generation {found}); this recommender knows "
            f"generation {state.generation} of the one it loaded"
        )
    )
    return CatalogConflictError(
        f"{path} was saved by another writer since this recommender loaded or saved it: "
        f"{what}, so saving would drop what that writer saved; nothing was written. "
        "Load the catalogue again and re-apply your changes (on the command line: run the "
        "command again), or save with on_conflict='overwrite' to replace the other "
        "writer's version with this one knowingly",
        path=str(path),
        expected=state.generation,
        found=found,
    )


def _write_all(
    catalog: CatalogState,
    folder: Path,
    *,
    previous: SavedState | None,
    old: dict[str, Any] | None = None,
) -> SavedState:
    """Write the files ``catalog`` needs into ``folder`` and commit them with a new manifest."""
    from .extractors.base import extractor_spec
    from .indexes.base import INDEXES

    store, segments = catalog.store, catalog.segments
    gen = 1 if previous is None else previous.generation + 1
    if old is not None and previous is None:
        gen = int(old.get("generation", 0) or 0) + 1
    tag = f"{gen:06d}-{uuid.uuid4().hex[:6]}"
    files: dict[str, str] = {}
    keep: set[str] = set()
    chunks: list[dict[str, Any]] = []
    if previous is not None:
        base = previous.manifest
        chunks = [dict(c) for c in base["chunks"]]
        start = previous.saved_rows
        for c in chunks:
            for key in _CHUNK_FILES:
                if key in c:
                    keep.add(c[key])
    else:
        start = 0
    written: list[str] = []

    def put(name: str, write: Any) -> None:
        target = folder / name
        write(target)
        written.append(name)

    try:
        if store.n_rows > start:
            cid = f"chunk-{tag}"
            rows = slice(start, store.n_rows)
            names = {
                "vectors": f"{cid}.vectors.npy",
                "ids": f"{cid}.ids.json",
                "metadata": f"{cid}.metadata.jsonl",
                "sources": f"{cid}.sources.json",
            }
            put(names["vectors"], lambda p: P.write_npy(p, store.vectors.view[rows]))
            put(names["ids"], lambda p: P.write_text(p, json.dumps(store.ids[rows])))
            fields, present, ints, floats = store.typed_arrays(start, store.n_rows)
            typed = {f["name"] for f in fields}
            others = [name for name in store.columns if name not in typed]
            lines = "".join(
                json.dumps(store.metadata(r, only=others), allow_nan=False) + "\n"
                for r in range(start, store.n_rows)
            )
            put(names["metadata"], lambda p: P.write_text(p, lines))
            if fields:  # dense typed columns as arrays: read back without parsing each value
                spec = {"fields": fields, "order": list(store.columns)}
                names["columns"] = f"{cid}.columns.json"
                names["present"] = f"{cid}.present.npy"
                names["ints"] = f"{cid}.ints.npy"
                names["floats"] = f"{cid}.floats.npy"
                put(names["columns"], lambda p: P.write_text(p, json.dumps(spec)))
                put(names["present"], lambda p: P.write_npy(p, present))
                put(names["ints"], lambda p: P.write_npy(p, ints))
                put(names["floats"], lambda p: P.write_npy(p, floats))
            src = {"sources": store.sources[rows], "sha256": store.hashes[rows]}
            put(names["sources"], lambda p: P.write_text(p, json.dumps(src)))
            if store.printed.view[rows].any():
                names["fingerprints"] = f"{cid}.fingerprints.npy"
                prints = np.hstack(
                    [
                        store.printed.view[rows, None].astype(np.uint8),
                        store.fingerprints.view[rows],
                    ]
                )
                put(names["fingerprints"], lambda p: P.write_npy(p, prints))
            chunks.append({"start": start, "stop": store.n_rows, **names})
        dead = np.flatnonzero(~store.alive.view).astype(np.int64)
        dead_name = f"dead-{tag}.npy"
        put(dead_name, lambda p: P.write_npy(p, dead))
        overrides = dict(previous.overrides) if previous is not None else {}
        if previous is not None:
            for r in previous.dirty_rows:
                if r < previous.saved_rows:
                    overrides[r] = store.metadata(r)
        over_name = f"overrides-{tag}.jsonl"
        over_text = "".join(
            json.dumps({"row": r, "metadata": m}, allow_nan=False) + "\n"
            for r, m in sorted(overrides.items())
        )
        put(over_name, lambda p: P.write_text(p, over_text))
        failed_name = f"failed-{tag}.json"
        failed = [
            {"id": f["id"], "source": f["source"], "reason": f["reason"]} for f in catalog.failed
        ]
        put(failed_name, lambda p: P.write_text(p, json.dumps(failed)))
        index_dir = None
        if not segments.exact:
            reuse = (
                previous is not None and not segments.dirty and previous.manifest.get("index_dir")
            )
            if reuse and previous is not None:
                index_dir = previous.manifest["index_dir"]
                keep.add(index_dir)
            else:
                index_dir = f"index-{tag}"
                if getattr(segments.index, "can_save_without_vectors", False):
                    # its rows are the chunks' first rows: kept once, in the chunks
                    segments.index.save(folder / index_dir, vectors=False)
                else:
                    segments.index.save(folder / index_dir)
                written.append(index_dir)
        partitions_dir = None
        parts = segments.partitions
        if parts is not None and parts.usable and segments.indexed_upto:
            kept = previous.manifest.get("partitions_dir") if previous is not None else None
            if kept and not segments.dirty:
                partitions_dir = str(kept)
                keep.add(partitions_dir)
            else:
                partitions_dir = f"partitions-{tag}"
                written.append(partitions_dir)
                _save_partitions(parts, folder / partitions_dir, segments.indexed_upto)

        def part(kind: str, obj: Any) -> str | None:
            """Save a fitted stage (reducer, transform) once; later saves keep its folder."""
            if obj is None:
                return None
            kept = previous.manifest.get(f"{kind}_dir") if previous is not None else None
            if kept:
                keep.add(kept)
                return str(kept)
            name = f"{kind}-{tag}"
            obj.save(folder / name)
            written.append(name)
            return name

        reducer = catalog.reducer
        reducer_dir = part("reducer", reducer)
        transform = catalog.transform
        transform_dir = part("transform", transform)
        # checksums: reuse the old manifest's for files kept, hash what is new
        old_files: dict[str, str] = previous.manifest.get("files", {}) if previous else {}
        for name in sorted(keep):
            for rel, digest in old_files.items():
                if rel == name or rel.startswith(name + "/"):
                    files[rel] = digest
        for name in written:
            target = folder / name
            if target.is_dir():
                for p in sorted(target.rglob("*")):
                    if p.is_file():
                        files[p.relative_to(folder).as_posix()] = P.sha256_file(p)
            else:
                files[name] = P.sha256_file(target)
        image_root = None if catalog.image_root is None else Path(catalog.image_root)
        payload = {
            "catalog_uid": previous.uid if previous is not None else uuid.uuid4().hex,
            "generation": gen,
            "extractor": extractor_spec(catalog.extractor),
            "index": INDEXES.to_spec(segments.index),
            "dim": store.dim,
            "storage": store.dtype.name,
            "count": len(store),
            "rows": store.n_rows,
            "indexed_upto": segments.indexed_upto,
            "fields": {name: col.kind for name, col in sorted(store.columns.items())},
            "declared": dict(store.declared),
            "image_root": None if image_root is None else _root_text(image_root, folder),
            "reducer": None if reducer is None else reducer.get_config(),
            "reducer_dir": reducer_dir,
            "transform": None if transform is None else _transform_spec(transform),
            "transform_dir": transform_dir,
            "chunks": chunks,
            "dead": dead_name,
            "overrides": over_name,
            "failed": failed_name,
            "index_dir": index_dir,
            "partition_by": segments.partition_by,
            "partitions_dir": partitions_dir,
        }
        manifest = P.write_manifest(folder, "catalog", payload, files=files)
        P.fsync_dir(folder)
    except BaseException:
        for name in written:
            target = folder / name
            if target.is_dir():
                shutil.rmtree(target, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    target.unlink()
        raise
    _remove_unreferenced(folder, manifest, old if previous is None else previous.manifest)
    segments.dirty = False
    return SavedState(
        path=folder,
        uid=manifest["catalog_uid"],
        generation=gen,
        manifest=manifest,
        saved_rows=store.n_rows,
        dead_saved=len(dead),
        overrides=overrides,
    )


def _root_text(root: Path, folder: Path) -> str:
    try:
        return os.path.relpath(root.resolve(), folder.resolve()).replace(os.sep, "/")
    except ValueError:
        return str(root.resolve())


def _transform_spec(transform: Any) -> dict[str, Any]:
    cls = type(transform)
    return {"class": f"{cls.__module__}:{cls.__qualname__}", "config": transform.get_config()}


def _referenced(manifest: Mapping[str, Any]) -> set[str]:
    names: set[str] = set()
    for c in manifest.get("chunks") or []:
        if isinstance(c, Mapping):
            names.update(str(c[k]) for k in _CHUNK_FILES if c.get(k) is not None)
    for key in (
        "dead",
        "overrides",
        "failed",
        "index_dir",
        "partitions_dir",
        "reducer_dir",
        "transform_dir",
    ):
        if manifest.get(key):
            names.add(str(manifest[key]))
    return names


def _remove_unreferenced(
    folder: Path, manifest: Mapping[str, Any], old: Mapping[str, Any] | None
) -> None:
    """Remove the files an earlier manifest listed (or our leftovers) that are no longer used."""
    P.remove_stale_temps(folder)  # marked temporaries of killed saves (an index folder's)
    live = _referenced(manifest) | {MANIFEST}
    candidates: set[str] = set()
    if old is not None:
        candidates |= {rel.split("/")[0] for rel in (old.get("files") or {})}
        candidates |= _referenced(old)
    for entry in folder.iterdir():
        if entry.name.startswith(_OURS):
            candidates.add(entry.name)  # leftovers of an interrupted save of ours
    for name in sorted(candidates - live):
        target = folder / name
        if target.is_symlink() or not target.exists():
            continue
        if target.is_dir():
            shutil.rmtree(target, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                target.unlink()


# --------------------------------------------------------------------------- load


def load_catalog(
    path: Path,
    *,
    index: Any = None,
    extractor: Any = None,
    mmap: bool | None = None,
    verify: bool = True,
    allow_mismatch: bool = False,
) -> CatalogState:
    """Read the catalogue at ``path``.

    ``index`` is an empty index object to rebuild the stored vectors into instead
    of loading the saved index; ``extractor`` one to use instead of the saved one
    (checked against it: see :meth:`visualsim.Recommender.load`).
    """
    return P.read_consistent(
        path,
        lambda folder: _load(
            folder,
            index=index,
            extractor=extractor,
            mmap=mmap,
            verify=verify,
            allow_mismatch=allow_mismatch,
        ),
        kind="catalog",
    )


def _load(
    path: Path,
    *,
    index: Any,
    extractor: Any,
    mmap: bool | None,
    verify: bool,
    allow_mismatch: bool,
) -> CatalogState:
    from .extractors.base import extractor_from_config
    from .indexes.base import load_index
    from .search import Segments

    manifest = P.read_manifest(path, "catalog", verify=verify)
    where = str(path / MANIFEST)
    try:
        if manifest["format_version"] == 1:
            manifest = _upgrade_v1(path, manifest)
        layout = _check_layout(where, manifest)
        dim = layout["dim"]
        if extractor is not None:
            from .extractors.compare import check_extractor_config

            check_extractor_config(
                manifest["extractor"], extractor, allow_mismatch=allow_mismatch, source=str(path)
            )
        ext = extractor if extractor is not None else extractor_from_config(manifest["extractor"])
        reducer = None
        if manifest.get("reducer") is not None:
            from .reduction import PCAReducer

            rdir = P.safe_child(path, manifest.get("reducer_dir") or "reducer", kind="dir")
            reducer = PCAReducer.load(rdir)
        transform = _load_transform(path, manifest)
        # what the extractor must give: the first stage's input
        if reducer is not None:
            expected = int(reducer.n_features_in_ or 0)
        elif transform is not None:
            expected = int(getattr(transform, "n_features_in_", 0) or 0) or dim
        else:
            expected = dim
        if int(ext.dim) != expected:
            raise DimensionMismatch(
                f"extractor gives {ext.dim}-d vectors but {str(path)!r} was built from "
                f"{expected}-d ones"
            )
        overrides = _overrides_of(path, manifest)
        if mmap is None:  # map the vectors where an index keeps its own copy to search
            mmap = index is None and _searches_own_copy(manifest.get("index"))
        store = _read_store(path, manifest, layout, mmap=mmap, overrides=overrides)
        root = manifest.get("image_root")
        image_root = None
        if isinstance(root, str):
            image_root = root if os.path.isabs(root) else str((path / root).resolve())
        named: Any = None
        if index is None:
            spec = manifest["index"]
            from .indexes.base import INDEXES

            if not isinstance(spec, Mapping):
                raise CatalogError(f"{where}: field 'index' must be an object")
            backend = INDEXES.build(str(spec.get("name")), dict(spec.get("config") or {}))
            segments = Segments(backend)
            named = str(spec.get("name")) if not segments.exact else backend
            index_dir = manifest.get("index_dir")
            if not segments.exact and manifest.get("catalog_uid") is None:
                segments.rebuild(store)  # a 0.1 index maps caller ids, not rows: rebuild it
            elif not segments.exact:
                if not isinstance(index_dir, str):
                    raise CatalogError(f"{where}: field 'index_dir' is missing")
                loaded: Any = load_index(P.safe_child(path, index_dir, kind="dir"), verify=False)
                segments.index = loaded
                _check_index(where, loaded, layout, segments)
                if getattr(loaded, "needs_vectors", False):  # saved as a graph: rows from chunks
                    loaded.attach_vectors(_row_reader(path, layout))
            if manifest.get("catalog_uid") is not None:
                segments.indexed_upto = layout["indexed_upto"] if not segments.exact else 0
            if segments.native:
                segments.indexed_upto = store.n_rows
        else:
            segments = Segments(index)
            segments.rebuild(store)
            if segments.native and len(store):
                segments.added(store, store.live_rows())
        if index is None:
            _load_partitions(path, manifest, store, segments, layout)
        else:
            field_name = manifest.get("partition_by")
            if isinstance(field_name, str) and not segments.exact and not segments.native:
                from .search import Partitions

                segments.partition_by = field_name
                segments.partitions = Partitions(field_name, segments.index)
                segments.partitions.add_rows(store, 0, segments.indexed_upto)
        segments.dirty = index is not None
        failed: list[dict[str, Any]] = []
        failed_name = manifest.get("failed")
        if isinstance(failed_name, str):
            rows = P.read_json(P.safe_child(path, failed_name))
            if isinstance(rows, list):
                failed = [
                    {
                        "id": r.get("id", ""),
                        "source": str(r.get("source")),
                        "reason": str(r.get("reason")),
                    }
                    for r in rows
                    if isinstance(r, Mapping)
                ]
        if verify and index is None and not segments.exact and not segments.native:
            _verify_index(where, store, segments, _row_reader(path, layout))
            _verify_partitions(where, store, segments)
        if extractor is not None:
            raw = reducer is None and transform is None
            _check_runtime(manifest["extractor"], ext, store, image_root, raw=raw)
    except (ValueError, TypeError, KeyError, AttributeError, IndexError, OverflowError) as exc:
        if isinstance(exc, VisualsimError):
            raise  # a clear error already (a config, a dimension)
        raise CatalogError(f"{path} is damaged: {type(exc).__name__}: {str(exc)[:200]}") from None
    except FileNotFoundError as exc:
        raise CatalogError(f"{path}: a file of the catalogue is missing ({exc})") from None
    saved = (
        SavedState(
            path=path,
            uid=str(manifest.get("catalog_uid") or ""),
            generation=int(manifest.get("generation") or 0),
            manifest=manifest,
            saved_rows=store.n_rows,
            dead_saved=store.n_dead,
            overrides=dict(overrides),
        )
        if manifest.get("catalog_uid")
        else None
    )
    return CatalogState(
        extractor=ext,
        store=store,
        segments=segments,
        reducer=reducer,
        transform=transform,
        image_root=image_root,
        failed=failed,
        index=named,
        saved=saved,
    )


def _check_runtime(
    saved: Any, extractor: Any, store: Store, image_root: str | None, *, raw: bool
) -> None:
    """Warn when a given extractor's runtime/precision embeds unlike the catalogue's.

    ``raw``: the stored vectors are the extractor's own (no reducer, no transform),
    so they are compared too.
    """
    from .extractors.spec import runtimes

    if runtimes(saved) == runtimes(extractor):
        return
    import warnings

    from .extractors.openvino import RuntimeMismatchWarning, check_runtime_compatible

    rows = store.live_rows()[:8]
    paths = [P.resolve_source(image_root, store.sources[int(r)]) for r in rows]
    if not len(rows) or not all(p and os.path.isfile(p) for p in paths):
        warnings.warn(
            "the extractor given runs another runtime or precision than the catalogue's, and "
            "no catalogue image is readable to check that their vectors agree",
            RuntimeMismatchWarning,
            stacklevel=4,
        )
        return
    stored = store.vectors_f32(rows) if raw else None
    check_runtime_compatible(saved, extractor, paths, stored)


_TYPED_FILES = ("columns", "present", "ints", "floats")
"""A chunk's dense typed metadata columns as arrays (all four, or none)."""
_CHUNK_FILES = ("vectors", "ids", "metadata", "sources", "fingerprints", *_TYPED_FILES)
"""The files a chunk names; all but the optional ones are required."""
_OPTIONAL_CHUNK_FILES = ("sources", "fingerprints", *_TYPED_FILES)
"""``sources`` is absent in format 1; ``fingerprints`` before 0.2 and where no row has one
(``<chunk>.fingerprints.npy``: ``uint8``, one row per item, a 0/1 "has one" column, then
the duplicate detector's fingerprint, :mod:`visualsim.duplicates`); the typed columns
before 0.3 and where no field is dense (``<chunk>.columns.json`` names each field, its
kind, its column in ``<chunk>.ints.npy`` (int64: integers, booleans, string codes) or
``<chunk>.floats.npy`` (float64), and a string field's values; ``<chunk>.present.npy``
marks the rows that have one; the other fields stay in ``<chunk>.metadata.jsonl``)."""


def _chunk_file(where: str, i: int, chunk: Mapping[str, Any], key: str) -> str | None:
    """Return the file name ``chunk[key]`` (``None`` for an absent optional one), or refuse it.

    The one rule for a chunk's file names, used by the layout check and the
    reader alike: present means a file to read (a string here; what names a
    file inside the folder, never ``""``, is :func:`visualsim.persistence.safe_child`'s
    rule, applied when it is opened), absent is allowed for ``sources`` and
    ``fingerprints`` only (catalogues saved before they existed, or holding only
    items added as vectors).

    Raises
    ------
    CatalogError
        Naming ``chunks[i].key``: missing or not a string.
    """
    if key not in chunk:
        if key in _OPTIONAL_CHUNK_FILES:
            return None
        raise CatalogError(f"{where}: chunks[{i}].{key} is missing; a chunk names its {key} file")
    name = chunk[key]
    if not isinstance(name, str):
        raise CatalogError(
            f"{where}: chunks[{i}].{key} must be a file name, got {type(name).__name__}"
        )
    return name


def _check_layout(where: str, manifest: Mapping[str, Any]) -> dict[str, Any]:
    dim = P.field_int(where, "dim", manifest.get("dim"), minimum=1, maximum=1 << 16)
    storage = manifest.get("storage", "float32")
    if storage not in ("float32", "float16"):
        raise CatalogError(f"{where}: field 'storage' must be float32 or float16, got {storage!r}")
    rows = P.field_int(where, "rows", manifest.get("rows"), minimum=0)
    count = P.field_int(where, "count", manifest.get("count"), minimum=0, maximum=rows or 0)
    upto = P.field_int(
        where, "indexed_upto", manifest.get("indexed_upto", 0), minimum=0, maximum=rows or 0
    )
    chunks = manifest.get("chunks")
    if not isinstance(chunks, list) or len(chunks) > MAX_CHUNKS:
        raise CatalogError(f"{where}: field 'chunks' must be a list (of at most {MAX_CHUNKS})")
    expect = 0
    for i, c in enumerate(chunks):
        if not isinstance(c, Mapping):
            raise CatalogError(f"{where}: chunks[{i}] must be an object")
        start = P.field_int(where, f"chunks[{i}].start", c.get("start"), minimum=0)
        stop = P.field_int(where, f"chunks[{i}].stop", c.get("stop"), minimum=0)
        if start != expect or stop is None or start is None or stop <= start:
            raise CatalogError(
                f"{where}: chunks[{i}] covers rows {start}..{stop}, expected to start at {expect}"
            )
        for key in _CHUNK_FILES:
            _chunk_file(where, i, c, key)
        expect = stop
    if expect != rows:
        raise CatalogError(f"{where}: the chunks hold {expect} rows but 'rows' says {rows}")
    P.field_int(where, "generation", manifest.get("generation", 0) or 0, minimum=0)
    for key in (
        "catalog_uid",
        "dead",
        "overrides",
        "failed",
        "index_dir",
        "reducer_dir",
        "transform_dir",
        "image_root",
    ):
        value = manifest.get(key)
        if value is not None and (not isinstance(value, str) or len(value) > 4096):
            raise CatalogError(f"{where}: field {key!r} must be a name (a string) or null")
    fields = manifest.get("fields") or {}
    if not isinstance(fields, Mapping) or any(v not in KINDS for v in fields.values()):
        raise CatalogError(f"{where}: field 'fields' must map names to one of {KINDS}")
    declared = manifest.get("declared") or {}
    if not isinstance(declared, Mapping) or any(v not in KINDS for v in declared.values()):
        raise CatalogError(f"{where}: field 'declared' must map names to one of {KINDS}")
    return {
        "dim": dim,
        "storage": storage,
        "rows": rows,
        "count": count,
        "indexed_upto": upto,
        "chunks": chunks,
        "fields": dict(fields),
        "declared": dict(declared),
    }


def _read_store(
    path: Path,
    manifest: Mapping[str, Any],
    layout: Mapping[str, Any],
    *,
    mmap: bool,
    overrides: Mapping[int, dict[str, Any]],
) -> Store:
    where = str(path / MANIFEST)
    dim, storage = layout["dim"], layout["storage"]
    chunks = layout["chunks"]
    vec_parts: list[np.ndarray] = []
    ids: list[Id] = []
    metas: list[dict[str, Any]] = []
    sources: list[str | None] = []
    hashes: list[str | None] = []
    print_parts: list[np.ndarray] = []
    typed_parts: list[_TypedPart] = []
    for i, c in enumerate(chunks):
        n = c["stop"] - c["start"]
        vec_parts.append(
            P.load_npy(
                P.safe_child(path, c["vectors"]),
                dtypes=(storage,),
                shape=(n, dim),
                mmap=mmap and len(chunks) == 1,
                finite=True,
            )
        )
        chunk_ids = P.read_json(P.safe_child(path, c["ids"]))
        if not isinstance(chunk_ids, list) or len(chunk_ids) != n:
            raise CatalogError(f"{path / c['ids']}: expected a list of {n} ids")
        ids.extend(check_ids(chunk_ids, unique=False))
        rows = P.read_jsonl(P.safe_child(path, c["metadata"]))
        if len(rows) != n:
            raise CatalogError(f"{path / c['metadata']}: expected {n} lines, found {len(rows)}")
        metas.extend(rows)
        if _chunk_file(where, i, c, "columns") is not None:
            typed_parts.append(_read_typed(path, where, i, c))
        if _chunk_file(where, i, c, "sources") is not None:
            src = P.read_json(P.safe_child(path, c["sources"]))
            s_list = src.get("sources") if isinstance(src, Mapping) else None
            h_list = src.get("sha256") if isinstance(src, Mapping) else None
            if (
                not isinstance(s_list, list)
                or not isinstance(h_list, list)
                or not (len(s_list) == len(h_list) == n)
            ):
                raise CatalogError(f"{path / c['sources']}: expected {n} sources and hashes")
            if any(s is not None and not isinstance(s, str) for s in s_list + h_list):
                raise CatalogError(f"{path / c['sources']}: sources must be strings or null")
            sources.extend(s_list)
            hashes.extend(h_list)
        else:
            sources.extend([None] * n)
            hashes.extend([None] * n)
        if _chunk_file(where, i, c, "fingerprints") is not None:
            prints = P.load_npy(
                P.safe_child(path, c["fingerprints"]),
                dtypes=("uint8",),
                shape=(n, FINGERPRINT_BYTES + 1),
            )
            if prints[:, 0].max(initial=0) > 1:
                raise CatalogError(f"{path / c['fingerprints']}: the first column must be 0 or 1")
            print_parts.append(np.asarray(prints))
        else:
            print_parts.append(np.zeros((n, 0), np.uint8))  # none: rows of zeros, kept free
    for row, meta in overrides.items():
        if row >= len(metas):
            raise CatalogError(f"{where}: an override names row {row}, past the last row")
        metas[row] = meta
        for part in typed_parts:  # the override holds the row's whole metadata
            if part.start <= row < part.start + len(part.present):
                part.present[row - part.start] = False
    dead = np.zeros(0, np.int64)
    if manifest.get("dead"):
        dead = P.load_npy(P.safe_child(path, manifest["dead"]), dtypes=("int64",), shape=(None,))
        if len(dead) and (dead.min() < 0 or dead.max() >= layout["rows"]):
            raise CatalogError(f"{path / manifest['dead']}: rows out of range")
    store = Store(dim, storage)
    store.declared = dict(layout["declared"])
    if len(vec_parts) == 1:
        store.vectors = _Grow.of(vec_parts[0]) if not mmap else _wrap(vec_parts[0])
    elif vec_parts:
        store.vectors = _Grow.of(np.concatenate(vec_parts))
    alive = np.ones(layout["rows"], dtype=bool)
    alive[dead] = False
    store.alive = _Grow.of(alive, fill=False)
    store.ids = ids
    store.rows = {}
    for r in np.flatnonzero(alive).tolist():
        item_id = ids[r]
        if item_id in store.rows:
            raise CatalogError(f"{where}: id {item_id!r} is stored twice among live rows")
        store.rows[item_id] = r
    store.n_dead = int((~alive).sum())
    if len(store.rows) != layout["count"]:
        raise CatalogError(
            f"{where}: 'count' says {layout['count']} items but {len(store.rows)} rows are live"
        )
    store.sources, store.hashes = sources, hashes
    if any(part.shape[1] for part in print_parts):
        prints = np.concatenate(
            [
                part if part.shape[1] else np.zeros((len(part), FINGERPRINT_BYTES + 1), np.uint8)
                for part in print_parts
            ]
        )
        store.printed = _Grow.of(prints[:, 0].astype(bool), fill=False)
        store.fingerprints = _Zeros.of(np.ascontiguousarray(prints[:, 1:]))
    else:  # no item has a fingerprint (added as vectors): no memory for them
        store.printed = _Grow.of(np.zeros(layout["rows"], dtype=bool), fill=False)
        store.fingerprints = _Zeros(np.uint8, FINGERPRINT_BYTES)
        store.fingerprints.pad(layout["rows"])
    # typed columns: the saved kinds are declared so numbers stay numbers
    saved_declared = store.declared
    store.declared = {**layout["fields"], **saved_declared}
    try:
        _set_typed(store, typed_parts, layout, metas)
        store._set_column_values(0, metas)
    except CatalogError:
        raise
    except Exception as exc:
        raise CatalogError(f"{where}: stored metadata does not fit its fields: {exc}") from None
    store.declared = saved_declared
    if typed_parts:  # the fields in the order they were first added (as saved)
        order = {name: i for i, name in enumerate(typed_parts[-1].order)}
        store.columns = dict(
            sorted(store.columns.items(), key=lambda item: order.get(item[0], len(order)))
        )
    return store


@dataclass
class _TypedPart:
    """One chunk's typed columns as read: its first row, fields and arrays."""

    start: int
    fields: list[dict[str, Any]]
    order: list[str]
    present: np.ndarray
    ints: np.ndarray
    floats: np.ndarray


def _read_typed(path: Path, where: str, i: int, c: Mapping[str, Any]) -> _TypedPart:
    """Read and check a chunk's typed columns (:data:`_TYPED_FILES`)."""
    n = c["stop"] - c["start"]
    names = {key: _chunk_file(where, i, c, key) for key in _TYPED_FILES}
    missing = [key for key, name in names.items() if name is None]
    if missing:
        raise CatalogError(f"{where}: chunks[{i}] names typed columns but not its {missing}")
    spec_file = P.safe_child(path, str(names["columns"]))
    spec = P.read_json(spec_file)
    fields = spec.get("fields") if isinstance(spec, Mapping) else None
    order = spec.get("order", []) if isinstance(spec, Mapping) else None
    if not isinstance(fields, list) or not isinstance(order, list):
        raise CatalogError(f"{spec_file}: expected an object with 'fields' and 'order' lists")
    if not all(isinstance(name, str) for name in order):
        raise CatalogError(f"{spec_file}: 'order' must list field names")
    present = P.load_npy(
        P.safe_child(path, str(names["present"])), dtypes=("bool",), shape=(n, len(fields))
    )
    ints = P.load_npy(P.safe_child(path, str(names["ints"])), dtypes=("int64",), shape=(n, None))
    floats = P.load_npy(
        P.safe_child(path, str(names["floats"])), dtypes=("float64",), shape=(n, None)
    )
    seen: set[str] = set()
    for j, f in enumerate(fields):
        kind = f.get("kind") if isinstance(f, Mapping) else None
        name = f.get("name") if isinstance(f, Mapping) else None
        column = f.get("column") if isinstance(f, Mapping) else None
        width = floats.shape[1] if kind == "float" else ints.shape[1]
        if (
            not isinstance(name, str)
            or name in seen
            or kind not in ("str", "int", "float", "bool")
            or isinstance(column, bool)
            or not isinstance(column, int)
            or not 0 <= column < width
        ):
            raise CatalogError(
                f"{spec_file}: fields[{j}] must name a new field, its kind and column"
            )
        seen.add(name)
        values = (floats if kind == "float" else ints)[:, column][present[:, j]]
        if kind == "str":
            cats = f.get("categories")
            if not isinstance(cats, list) or not all(isinstance(v, str) for v in cats):
                raise CatalogError(f"{spec_file}: fields[{j}].categories must list strings")
            ok = len(values) == 0 or (values.min() >= 0 and values.max() < len(cats))
        elif kind == "bool":
            ok = len(values) == 0 or (values.min() >= 0 and values.max() <= 1)
        elif kind == "float":
            ok = bool(np.isfinite(values).all())
        else:
            ok = True
        if not ok:
            raise CatalogError(f"{spec_file}: field {name!r} holds values out of range")
    return _TypedPart(int(c["start"]), fields, order, np.array(present), ints, floats)


def _set_typed(
    store: Store,
    parts: list[_TypedPart],
    layout: Mapping[str, Any],
    metas: list[dict[str, Any]],
) -> None:
    """Build the columns saved as arrays; a field they cannot build goes through ``metas``.

    A field is built from its arrays when every chunk saved it as the kind the
    catalogue holds it as (integers may become floats); otherwise (a field that
    became ``json`` later) its values are decoded into ``metas``, row by row.
    """
    from .store import Column

    n = layout["rows"]
    by_field: dict[str, list[tuple[_TypedPart, dict[str, Any], int]]] = {}
    for part in parts:
        for j, f in enumerate(part.fields):
            by_field.setdefault(f["name"], []).append((part, f, j))
    for name, entries in by_field.items():
        kinds = {f["kind"] for _, f, _ in entries}
        final = layout["fields"].get(name) or (next(iter(kinds)) if len(kinds) == 1 else "json")
        fast = kinds == {final} or (final == "float" and kinds <= {"int", "float"})
        if not fast:
            for part, f, j in entries:
                for offset in np.flatnonzero(part.present[:, j]).tolist():
                    metas[part.start + offset][name] = _typed_value(part, f, j, offset)
            continue
        present = np.zeros(n, dtype=bool)
        if final == "float":
            values: np.ndarray = np.zeros(n, dtype=np.float64)
        else:
            values = np.zeros(n, dtype=np.int64)
        categories: dict[str, int] = {}
        for part, f, j in entries:
            rows = slice(part.start, part.start + len(part.present))
            column = (part.floats if f["kind"] == "float" else part.ints)[:, f["column"]]
            if final == "str":
                codes = np.array(
                    [categories.setdefault(v, len(categories)) for v in f["categories"]],
                    dtype=np.int64,
                )
                column = codes[column] if len(codes) else np.zeros_like(column)
            present[rows] = part.present[:, j]
            values[rows] = column
        store.columns[name] = Column.from_arrays(final, present, values, list(categories))


def _typed_value(part: _TypedPart, f: Mapping[str, Any], j: int, offset: int) -> Any:
    """One saved typed value as the plain Python value it was."""
    if f["kind"] == "float":
        return float(part.floats[offset, f["column"]])
    raw = int(part.ints[offset, f["column"]])
    if f["kind"] == "str":
        return f["categories"][raw]
    return bool(raw) if f["kind"] == "bool" else raw


def _searches_own_copy(spec: Any) -> bool:
    """Whether the saved index spec names an approximate backend, which keeps its own vectors."""
    from .indexes.base import INDEXES

    if not isinstance(spec, Mapping) or not isinstance(spec.get("name"), str):
        return False
    try:
        cls = INDEXES.get(spec["name"])
    except (KeyError, ValueError, VisualsimError):
        return False
    return not getattr(cls, "is_exact", False) and not getattr(cls, "filters_natively", False)


def _row_reader(path: Path, layout: Mapping[str, Any]) -> Any:
    """Return ``read(rows) -> float32 vectors`` reading the chunk files themselves.

    Plain file reads, so what an index copies in (:meth:`HNSWIndex.attach_vectors`)
    leaves no memory map resident; the files' headers were checked on load.
    """
    dim, dtype = int(layout["dim"]), np.dtype(layout["storage"])
    chunks = layout["chunks"]
    starts = np.array([c["start"] for c in chunks], dtype=np.int64)
    files = [P.safe_child(path, c["vectors"]) for c in chunks]
    offsets = [P.read_npy_header(f)[3] for f in files]
    row_bytes = dim * dtype.itemsize

    def read(rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), dim), dtype=np.float32)
        i = 0
        while i < len(rows):
            c = int(np.searchsorted(starts, rows[i], side="right")) - 1
            start, stop = int(chunks[c]["start"]), int(chunks[c]["stop"])
            j = i + int(np.searchsorted(rows[i:], stop, side="left"))  # rows increase
            seg = rows[i:j]
            lo, hi = int(seg[0]), int(seg[-1]) + 1
            if lo < start or hi > stop:
                raise CatalogError(f"{path}: rows {lo}..{hi} are not in chunk {c}")
            with open(files[c], "rb") as fh:
                if hi - lo <= 2 * len(seg):  # (nearly) contiguous: one read
                    block = P.read_rows(
                        fh, dtype, dim, offsets[c] + (lo - start) * row_bytes, hi - lo
                    )
                    out[i:j] = block if hi - lo == len(seg) else block[seg - lo]
                else:  # a sample: read each row, not the span between them
                    for at, row in enumerate(seg.tolist(), start=i):
                        base = offsets[c] + (row - start) * row_bytes
                        out[at] = P.read_rows(fh, dtype, dim, base, 1)[0]
            i = j
        return out

    return read


def _wrap(array: np.ndarray) -> _Grow:
    out = _Grow(array.dtype, array.shape[1])
    out._buf = array  # a read-only memory map: the first append copies it into memory
    out.n = len(array)
    return out


def _overrides_of(path: Path, manifest: Mapping[str, Any]) -> dict[int, dict[str, Any]]:
    name = manifest.get("overrides")
    if not name:
        return {}
    out: dict[int, dict[str, Any]] = {}
    for line in P.read_jsonl(P.safe_child(path, name)):
        row, meta = line.get("row"), line.get("metadata")
        if (
            isinstance(row, bool)
            or not isinstance(row, int)
            or row < 0
            or not isinstance(meta, dict)
        ):
            raise CatalogError(f"{path / name}: each line needs a row number and a metadata object")
        out[row] = meta
    return out


def _load_transform(path: Path, manifest: Mapping[str, Any]) -> Any:
    spec = manifest.get("transform")
    if spec is None:
        return None
    if not isinstance(spec, Mapping) or not isinstance(spec.get("class"), str):
        raise CatalogError(f"{path / MANIFEST}: field 'transform' must name a class")
    module, _, name = spec["class"].partition(":")
    if not module.startswith("visualsim."):
        raise CatalogError(
            f"{path / MANIFEST}: transform class {spec['class']!r} is not one of visualsim's"
        )
    import importlib

    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise CatalogError(f"{path / MANIFEST}: unknown transform {spec['class']!r}") from exc
    tdir = P.safe_child(path, manifest.get("transform_dir") or "transform", kind="dir")
    return cls.load(tdir)


def _save_partitions(parts: Any, folder: Path, upto: int) -> None:
    """Write each partition's index and rows, then the partitions' manifest."""
    folder.mkdir()
    entries = []
    for part in parts.order:
        name = f"part-{part.number:06d}"
        if getattr(part.index, "can_save_without_vectors", False):
            part.index.save(folder / name, vectors=False)  # its rows' vectors: the chunks'
        else:
            part.index.save(folder / name)
        P.write_npy(folder / f"{name}.rows.npy", part.rows.view)
        entries.append(
            {"key": part.key, "dir": name, "rows": f"{name}.rows.npy", "count": len(part.rows.view)}
        )
    files = {e["rows"]: P.sha256_file(folder / e["rows"]) for e in entries}  # indexes: their own
    P.write_manifest(
        folder, "partitions", {"field": parts.field, "rows": upto, "parts": entries}, files=files
    )
    P.fsync_dir(folder)


def _load_partitions(
    path: Path,
    manifest: Mapping[str, Any],
    store: Store,
    segments: Any,
    layout: Mapping[str, Any] | None = None,
) -> None:
    """Give ``segments`` the saved partitions (checked), or build them if none were saved."""
    from .indexes.base import INDEXES, load_index
    from .search import PARTITION_KINDS, Partitions

    where = str(path / MANIFEST)
    field_name = manifest.get("partition_by")
    if field_name is None:
        return
    field_name = P.field_str(where, "partition_by", field_name)
    segments.partition_by = field_name
    if segments.exact or segments.native:
        return
    parts = Partitions(field_name, segments.index)
    segments.partitions = parts
    upto = segments.indexed_upto
    pdir = manifest.get("partitions_dir")
    if pdir is None:
        parts.add_rows(store, 0, upto)  # saved without (or by an older version): build them
        return
    folder = P.safe_child(path, pdir, kind="dir")
    pwhere = str(folder / MANIFEST)
    saved = P.read_manifest(folder, "partitions", verify=False, upgrade=_partition_files)
    if saved.get("field") != field_name:
        raise CatalogError(f"{pwhere}: partitions of {saved.get('field')!r}, not {field_name!r}")
    P.field_int(pwhere, "rows", saved.get("rows"), minimum=upto, maximum=upto)
    upto = int(upto)
    entries = P.field_list(pwhere, "parts", saved.get("parts"))
    if len(entries) > MAX_PARTITIONS:
        raise CatalogError(f"{pwhere}: {len(entries)} partitions (at most {MAX_PARTITIONS})")
    col = store.columns.get(field_name)
    kind = col.kind if col is not None else None
    if entries and kind not in PARTITION_KINDS:
        raise CatalogError(f"{pwhere}: field {field_name!r} holds {kind} values, not partitions")
    main_name = INDEXES.to_spec(segments.index)["name"]
    part_of = np.full(upto, -1, dtype=np.int32)
    for i, entry in enumerate(entries):
        at = f"parts[{i}]"
        if not isinstance(entry, Mapping):
            raise CatalogError(f"{pwhere}: {at} must be an object")
        key = entry.get("key")
        ok_kind = {"str": str, "int": int, "bool": bool}[str(kind)]
        if type(key) is not ok_kind or key in parts.parts:
            raise CatalogError(f"{pwhere}: {at}.key {str(key)[:40]!r} is not a new {kind} value")
        count = int(
            P.field_int(pwhere, f"{at}.count", entry.get("count"), minimum=1, maximum=upto) or 0
        )
        rows = P.load_npy(
            P.safe_child(folder, entry.get("rows")), dtypes=("int64",), shape=(count,)
        )
        if (
            rows[0] < 0
            or rows[-1] >= upto
            or (count > 1 and not bool(np.all(rows[1:] > rows[:-1])))
            or bool(np.any(part_of[rows] != -1))
        ):
            raise CatalogError(f"{pwhere}: {at}'s rows are not new increasing rows below {upto}")
        index: Any = load_index(P.safe_child(folder, entry.get("dir"), kind="dir"), verify=False)
        if INDEXES.to_spec(index)["name"] != main_name or len(index) != count:
            raise CatalogError(f"{pwhere}: {at}'s index is not a {main_name} of {count} rows")
        if getattr(index, "dim", store.dim) != store.dim or index.ids != list(range(count)):
            raise CatalogError(f"{pwhere}: {at}'s index does not hold its rows 0..{count - 1}")
        if getattr(index, "needs_vectors", False):  # saved as a graph: its rows' vectors
            sealed = segments.sealed()  # the main index's copy, in memory already
            if sealed is not None:
                read: Any = sealed.__getitem__
            elif layout is not None:
                read = _row_reader(path, layout)
            else:
                raise CatalogError(f"{pwhere}: {at}'s index was saved without its vectors")
            index.attach_vectors(lambda labels, rows=rows, read=read: read(rows[labels]))
        part = parts.part(key, index)
        part.rows.append(rows)
        part_of[rows] = part.number
    parts.part_of = _Grow.of(part_of, fill=-1)
    parts.recompute_moved(store, upto)


def _partition_files(saved: dict[str, Any]) -> dict[str, Any]:
    """Partitions saved before their manifest listed files: the catalogue's hashes them."""
    saved.setdefault("files", {})
    return saved


def _check_index(where: str, index: Any, layout: Mapping[str, Any], segments: Any) -> None:
    upto = layout["indexed_upto"]
    if segments.native:
        return
    n = len(index)
    next_label = getattr(index, "next_label", n)
    if n != upto or next_label != upto:
        raise CatalogError(
            f"{where}: the index holds {n} vectors (next label {next_label}) but the "
            f"catalogue says {upto} rows are indexed; the index does not match"
        )
    ids = index.ids
    if ids != list(range(upto)):
        raise CatalogError(f"{where}: the index's ids are not the catalogue's rows 0..{upto - 1}")


def _verify_index(where: str, store: Store, segments: Any, read_rows: Any) -> None:
    """Check that the index holds the sealed rows and finds their vectors there.

    The sampled rows are read with ``read_rows`` (from the files), so a memory
    map of the vectors stays untouched: not resident until a query needs it.
    """
    upto = segments.indexed_upto
    if upto:
        from .indexes.base import verify_index

        verify_index(
            segments.index,
            store.vectors.view[:upto],
            list(range(upto)),
            source=where.replace("/manifest.json", "") + " (its index)",
            read_rows=read_rows,
        )
    live = np.flatnonzero(store.alive.view[:upto])
    if not len(live):
        return
    sample = live[np.linspace(0, len(live) - 1, num=min(16, len(live))).astype(int)]
    q = read_rows(np.unique(sample))[np.searchsorted(np.unique(sample), sample)]
    norms = np.linalg.norm(q, axis=1, keepdims=True)
    q = (q / np.where(norms == 0, 1, norms)).astype(np.float32)
    scores, labels = segments.index.search_labels(q, 1)
    self_scores = np.einsum("ij,ij->i", q, q)
    ok = (labels[:, 0] == sample) | (scores[:, 0] >= self_scores - 1e-3)
    if ok.mean() < 0.75:
        raise CatalogError(
            f"{where}: the index does not find the stored vectors where the catalogue "
            "says they are; it belongs to other vectors (rebuild with index=...)"
        )


def _verify_partitions(where: str, store: Store, segments: Any) -> None:
    """Check that each partition's index finds its own rows' vectors."""
    parts = segments.partitions
    if parts is None:
        return
    checked = ok = 0
    for part in parts.order:
        rows = part.rows.view
        live = np.flatnonzero(store.alive.view[rows])
        if not len(live):
            continue
        pick = live[np.linspace(0, len(live) - 1, num=min(4, len(live))).astype(int)]
        q = store.vectors_f32(rows[pick])
        norms = np.linalg.norm(q, axis=1, keepdims=True)
        q = (q / np.where(norms == 0, 1, norms)).astype(np.float32)
        scores, labels = part.index.search_labels(q, 1)
        self_scores = np.einsum("ij,ij->i", q, q)
        ok += int(((labels[:, 0] == pick) | (scores[:, 0] >= self_scores - 1e-3)).sum())
        checked += len(pick)
    if checked and ok < 0.75 * checked:
        raise CatalogError(
            f"{where}: the partitions' indexes do not find their stored vectors; "
            "they belong to other vectors (rebuild with index=...)"
        )


def _upgrade_v1(path: Path, manifest: Mapping[str, Any]) -> dict[str, Any]:
    """Describe a version-1 catalogue (one chunk, index/ folder) in version-2 terms."""
    where = str(path / MANIFEST)
    count = P.field_int(where, "count", manifest.get("count"), minimum=0)
    out = dict(manifest)
    out.update(
        {
            "rows": count,
            "indexed_upto": count,
            "chunks": [
                {
                    "start": 0,
                    "stop": count,
                    "vectors": "vectors.npy",
                    "ids": "ids.json",
                    "metadata": "metadata.jsonl",
                }
            ]
            if count
            else [],
            "dead": None,
            "overrides": None,
            "failed": None,
            "index_dir": "index",
            "reducer_dir": "reducer" if manifest.get("reducer") else None,
            "storage": manifest.get("storage", manifest.get("dtype", "float32")),
            "catalog_uid": None,
        }
    )
    return out


__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MANIFEST",
    "CatalogState",
    "SavedState",
    "load_catalog",
    "read_manifest",
    "save_catalog",
]
