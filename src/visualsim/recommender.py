"""The front door: ``Recommender(extractor, index).fit(images).query(image)``."""

from __future__ import annotations

import itertools
import logging
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import numpy as np

from .catalog import read_catalog, write_catalog
from .errors import (
    CatalogError,
    ConfigError,
    DimensionMismatch,
    DuplicateIdError,
    InvalidVectorsError,
    NotFittedError,
    UnknownIdError,
)
from .ids import Id, check_ids
from .inputs import Entry, iter_entries

logger = logging.getLogger(__name__)

Where = Mapping[str, Any] | Callable[[Mapping[str, Any]], bool]


@dataclass(frozen=True)
class Recommendation:
    """One recommended catalogue item.

    Attributes
    ----------
    id
        The item's id.
    score
        Cosine similarity to the query, in ``[-1, 1]``; higher is more alike.
    rank
        1 for the best match.
    metadata
        The item's stored metadata (read-only).
    """

    id: Id
    score: float
    rank: int
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-safe dict (for ``--json`` output and web services)."""
        return {
            "rank": self.rank,
            "id": self.id,
            "score": self.score,
            "metadata": dict(self.metadata),
        }


@dataclass(frozen=True)
class FailedInput:
    """An input that could not be read during ``fit``/``add``.

    Attributes
    ----------
    id
        The id it would have had.
    source
        A short description of the input (a path, ``<N bytes>``, ...).
    reason
        Why it failed.
    """

    id: Id
    source: str
    reason: str


class Recommender:
    """Find the catalogue items that look most like an image.

    Parameters
    ----------
    extractor
        Images → unit vectors. Default :class:`~visualsim.ResNet50Extractor`
        with ImageNet weights (downloaded by Keras on first use).
    index
        Nearest-neighbour search over the vectors: an index object or a name
        for :func:`~visualsim.make_index` (``"flat"``, ``"ivf"``, ``"hnsw"``,
        ``"ivfpq"``, ``"sklearn"``). Default an exact :class:`~visualsim.FlatIndex`.
    reduce_dim
        Store and search ``reduce_dim``-dimensional vectors: a
        :class:`~visualsim.reduction.PCAReducer` (or the one given) is fitted
        on the first vectors added (up to its ``sample_size``), saved in the
        catalogue, and applied to every later vector and query. 2048 → 256 is
        8x less memory for a small recall cost (``docs/scale-one-machine.md``).
    storage
        ``"float32"`` (default) or ``"float16"``: the dtype of the stored copy
        of the vectors (half the memory and disk); the index itself is fed
        float32.

    Attributes
    ----------
    failed_
        Inputs of the last ``fit``/``add`` that could not be read, with reasons.

    Examples
    --------
    >>> import numpy as np
    >>> from visualsim import Recommender, ColorHistogramExtractor
    >>> red, blue = np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 3), np.uint8)
    >>> red[..., 0] = 230; blue[..., 2] = 230
    >>> rec = Recommender(ColorHistogramExtractor(), "flat")
    >>> rec = rec.fit([red, blue], ids=["red", "blue"], progress=False)
    >>> rec.query(red, k=1)[0].id
    'red'
    """

    def __init__(
        self,
        extractor: Any = None,
        index: Any = None,
        *,
        reduce_dim: int | Any | None = None,
        storage: str = "float32",
    ) -> None:
        from .reduction import STORAGE_DTYPES

        if storage not in STORAGE_DTYPES:
            raise ConfigError(f"storage must be one of {STORAGE_DTYPES}, got {storage!r}")
        self.extractor = extractor
        self.index = index
        self.reduce_dim = reduce_dim
        self.storage = storage
        self.failed_: list[FailedInput] = []
        self._reset()

    # -- construction -----------------------------------------------------------------
    def _reset(self) -> None:
        self._extractor_: Any = None
        self._index_: Any = None
        self._reducer_: Any = None
        self._vectors = np.zeros((0, 0), dtype=self.storage)
        self._ids: list[Id] = []
        self._rows: dict[Id, int] = {}
        self._metadata: list[dict[str, Any]] = []

    def _get_extractor(self) -> Any:
        if self._extractor_ is None:
            ext = self.extractor
            if ext is None:
                from .extractors.keras import ResNet50Extractor

                ext = ResNet50Extractor()
            elif isinstance(ext, str):
                from .extractors.base import make_extractor

                ext = make_extractor(ext)
            self._extractor_ = ext
        return self._extractor_

    def _get_reducer(self) -> Any:
        if self._reducer_ is None and self.reduce_dim is not None:
            from .reduction import PCAReducer

            spec = self.reduce_dim
            if isinstance(spec, PCAReducer):
                # a fresh copy: fit() must not inherit a reducer fitted elsewhere
                self._reducer_ = PCAReducer.from_config(spec.get_config())
            else:
                self._reducer_ = PCAReducer(int(spec))
        return self._reducer_

    def _project(self, vectors: np.ndarray, *, fit: bool = False) -> np.ndarray:
        """Map extractor vectors to the stored space (PCA-reduced when asked)."""
        reducer = self._get_reducer()
        if reducer is None or not len(vectors):
            return vectors
        if vectors.shape[1] != reducer.n_features_in_ and reducer.is_fitted:
            raise DimensionMismatch(
                f"vectors have dimension {vectors.shape[1]}; the reducer takes "
                f"{reducer.n_features_in_}"
            )
        if not reducer.is_fitted:
            if not fit:
                raise NotFittedError("the catalogue is empty: call fit() or add() first")
            reducer.fit(vectors)
            logger.info(
                "PCA to %d dims keeps %.1f%% of the variance",
                reducer.dim,
                100 * float(np.sum(reducer.explained_variance_ratio_)),
            )
        return np.asarray(reducer.transform(vectors), dtype=np.float32)

    def _get_index(self) -> Any:
        if self._index_ is None:
            self._index_ = _make_index(self.index)
        return self._index_

    @property
    def extractor_(self) -> Any:
        """The extractor in use (built from the ``extractor`` argument on first use)."""
        return self._get_extractor()

    @property
    def index_(self) -> Any:
        """The index in use, holding every stored vector."""
        return self._get_index()

    @property
    def reducer_(self) -> Any:
        """The fitted :class:`~visualsim.reduction.PCAReducer`, or ``None``."""
        return self._get_reducer()

    @property
    def dim(self) -> int:
        """Length of the stored vectors (``reduce_dim`` when reducing)."""
        if self.reduce_dim is not None:
            return int(self._get_reducer().dim)
        return int(self._get_extractor().dim)

    @property
    def embeddings_(self) -> np.ndarray:
        """The stored vectors as ``(n, dim)`` float32, aligned with :attr:`ids_` (read-only).

        A view of the stored array (a float32 copy when ``storage="float16"``).
        """
        view = self._vectors.view() if self._vectors.dtype == np.float32 else self._float32()
        view.flags.writeable = False
        return view

    def _float32(self, rows: Any = slice(None)) -> np.ndarray:
        return np.ascontiguousarray(self._vectors[rows], dtype=np.float32)

    @property
    def ids_(self) -> list[Id]:
        """The stored ids, in insertion order (a copy)."""
        return list(self._ids)

    @property
    def metadata_(self) -> list[Mapping[str, Any]]:
        """Each stored item's metadata, aligned with :attr:`ids_` (read-only views)."""
        return [MappingProxyType(m) for m in self._metadata]

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._rows

    def __repr__(self) -> str:
        ext = self._extractor_ if self._extractor_ is not None else self.extractor
        idx = self._index_ if self._index_ is not None else self.index
        ext_name = getattr(ext, "name", None) or (ext if isinstance(ext, str) else "resnet50")
        idx_name = getattr(idx, "name", None) or (idx if isinstance(idx, str) else "flat")
        dim = self._vectors.shape[1] if len(self) else "?"
        failed = f", failed={len(self.failed_)}" if self.failed_ else ""
        return (
            f"Recommender(extractor={ext_name}, index={idx_name}, items={len(self)}, "
            f"dim={dim}{failed})"
        )

    def metadata_of(self, item_id: Id) -> Mapping[str, Any]:
        """Return one item's metadata (read-only)."""
        return MappingProxyType(self._metadata[self._row(item_id)])

    def vector_of(self, item_id: Id) -> np.ndarray:
        """Return one item's stored vector (a copy)."""
        return np.array(self._float32(self._row(item_id)))

    def _row(self, item_id: Id) -> int:
        try:
            return self._rows[item_id]
        except (KeyError, TypeError):
            raise UnknownIdError(f"id {item_id!r} is not in the catalogue") from None

    # -- fit / add / remove -----------------------------------------------------------
    def fit(
        self,
        images: Iterable[Any],
        ids: Iterable[Any] | None = None,
        metadata: Iterable[Mapping[str, Any] | None] | None = None,
        *,
        batch_size: int | None = None,
        on_error: Literal["skip", "raise"] = "skip",
        progress: bool = True,
        checkpoint_dir: str | os.PathLike[str] | None = None,
    ) -> Recommender:
        """Index ``images`` from scratch and return ``self``.

        Parameters
        ----------
        images
            Any iterable (consumed as a stream) of image-likes (paths, bytes,
            PIL images, arrays), of dataset items with ``id``, ``image`` and
            ``metadata`` attributes, or of ``(id, image[, metadata])`` tuples.
        ids
            Ids aligned with ``images``. Default: the item's own id, else the
            path for path inputs, else the running position.
        metadata
            Dicts aligned with ``images`` (JSON-safe values; used by ``where``).
            For path inputs the absolute path is added as ``"path"`` unless
            present, so plots and the command line can show the picture.
        batch_size
            Images per model call; default the extractor's.
        on_error
            ``"skip"`` leaves unreadable inputs out and lists them in
            :attr:`failed_`; ``"raise"`` stops at the first with its
            :class:`~visualsim.ImageLoadError` and changes nothing.
        progress
            Show a progress bar.
        checkpoint_dir
            Make the run resumable: see :meth:`add`.

        Returns
        -------
        Recommender
            ``self``, fitted.
        """
        self._reset()
        self.failed_ = []
        return self.add(
            images,
            ids,
            metadata,
            batch_size=batch_size,
            on_error=on_error,
            progress=progress,
            checkpoint_dir=checkpoint_dir,
        )

    def add(
        self,
        images: Iterable[Any],
        ids: Iterable[Any] | None = None,
        metadata: Iterable[Mapping[str, Any] | None] | None = None,
        *,
        batch_size: int | None = None,
        on_error: Literal["skip", "raise"] = "skip",
        progress: bool = True,
        checkpoint_dir: str | os.PathLike[str] | None = None,
    ) -> Recommender:
        """Add more images to the catalogue; same arguments as :meth:`fit`.

        Nothing is stored until every input has been read, so a failure
        (``on_error="raise"``, a duplicate id) leaves the catalogue unchanged.

        Parameters
        ----------
        checkpoint_dir
            Write vectors to this folder batch by batch. If the run is
            interrupted, calling ``fit``/``add`` again with the same inputs (in
            the same order) and the same folder skips every input already
            done. The folder is deleted once the vectors are stored.
        """
        extractor = self._get_extractor()
        entries: Iterable[Entry] = iter_entries(
            images, ids, metadata, start=len(self._ids), taken=self._rows
        )
        total = len(images) if hasattr(images, "__len__") else None  # type: ignore[arg-type]
        checkpoint = None
        if checkpoint_dir is not None:
            from .checkpoint import ExtractionCheckpoint
            from .extractors.base import extractor_spec

            checkpoint = ExtractionCheckpoint(checkpoint_dir, extractor_spec(extractor))
            if checkpoint.consumed:
                logger.info(
                    "resuming from %s: %d inputs already done", checkpoint_dir, checkpoint.consumed
                )
                entries = itertools.islice(entries, checkpoint.consumed, None)
                total = None if total is None else max(0, total - checkpoint.consumed)
        vectors: list[np.ndarray] = []
        new_ids: list[Id] = []
        new_meta: list[dict[str, Any]] = []
        failed: list[FailedInput] = []
        for batch in extractor.iter_batches(
            entries,
            batch_size=batch_size,
            image_of=lambda e: e.image,
            on_error=on_error,
            progress=progress,
            total=total,
        ):
            batch_failed = [FailedInput(e.id, err.source, err.reason) for e, err in batch.failed]
            if checkpoint is not None:
                checkpoint.write(
                    batch.vectors,
                    [e.id for e in batch.items],
                    [e.metadata for e in batch.items],
                    [asdict(f) for f in batch_failed],
                    len(batch.items) + len(batch.failed),
                )
            else:
                vectors.append(batch.vectors)
                new_ids.extend(e.id for e in batch.items)
                new_meta.extend(e.metadata for e in batch.items)
            failed.extend(batch_failed)
        if checkpoint is not None:
            stacked, new_ids, new_meta, failed_rows = checkpoint.read(extractor.dim)
            failed = [FailedInput(**row) for row in failed_rows]
        elif vectors:
            stacked = np.concatenate(vectors)
        else:
            stacked = np.zeros((0, extractor.dim), dtype=np.float32)
        self._store(self._project(stacked, fit=True), new_ids, new_meta)
        self.failed_ = failed
        if checkpoint is not None:
            checkpoint.clear()
        if failed:
            logger.warning(
                "%d of %d inputs could not be read and were skipped (see .failed_)",
                len(failed),
                len(failed) + len(new_ids),
            )
        return self

    def add_vectors(
        self,
        vectors: np.ndarray,
        ids: Sequence[Any],
        metadata: Sequence[Mapping[str, Any] | None] | None = None,
    ) -> Recommender:
        """Add precomputed vectors (from the same extractor) and return ``self``.

        Use it for vectors extracted elsewhere, e.g. on a Ray cluster. They
        are L2-normalised, and reduced when the recommender reduces.
        """
        x = np.asarray(vectors, dtype=np.float32)
        if x.ndim != 2:
            raise InvalidVectorsError(f"vectors must be 2-d (n, dim), got shape {x.shape}")
        meta = [dict(m or {}) for m in (metadata if metadata is not None else [None] * len(x))]
        checked = check_ids(ids, unique=False)
        if not (len(checked) == len(meta) == len(x)):
            raise ConfigError(
                f"{len(x)} vectors, {len(checked)} ids and {len(meta)} metadata rows do not align"
            )
        from .extractors.base import l2_normalize

        self._store(self._project(l2_normalize(x), fit=True) if len(x) else x, checked, meta)
        return self

    @classmethod
    def from_shards(
        cls, path: str | os.PathLike[str], index: Any = None, *, verify: bool = True
    ) -> Recommender:
        """Build a recommender from vector shards written by
        :func:`visualsim.distributed.extract_to_shards` (e.g. on a Ray cluster).

        The extractor is rebuilt from the shards' manifest, so queries are
        embedded the same way as the catalogue.
        """
        from .extractors.base import extractor_from_config
        from .shards import load_into, read_manifest

        extractor = extractor_from_config(read_manifest(path)["extractor"])
        rec: Recommender = load_into(cls(extractor, index), path, verify=verify)
        return rec

    def add_shards(self, path: str | os.PathLike[str], *, verify: bool = True) -> Recommender:
        """Add the vectors, ids and metadata of a shard folder; return ``self``.

        Refused when the shards were made by a different extractor.
        """
        from .shards import load_into

        rec: Recommender = load_into(self, path, verify=verify)
        return rec

    def _store(self, vectors: np.ndarray, ids: list[Id], metadata: list[dict[str, Any]]) -> None:
        if not ids:
            return
        dim = self.dim
        if vectors.shape[1] != dim:
            raise DimensionMismatch(
                f"vectors have dimension {vectors.shape[1]}, but the catalogue stores {dim}"
            )
        clash = [i for i in ids if i in self._rows]
        if clash or len(set(ids)) != len(ids):
            raise DuplicateIdError(f"ids must be unique; already present: {clash[:5]!r}")
        from .reduction import to_storage

        self._get_index().add(vectors, ids)
        stored = to_storage(vectors, self.storage)
        self._vectors = (
            np.concatenate([np.asarray(self._vectors), stored]) if len(self._ids) else stored
        )
        for i in ids:
            self._rows[i] = len(self._ids)
            self._ids.append(i)
        self._metadata.extend(metadata)

    def remove(self, ids: Iterable[Id]) -> Recommender:
        """Remove items by id and return ``self``.

        Raises
        ------
        UnknownIdError
            If any id is not stored (then nothing is removed).
        """
        drop = list(dict.fromkeys(ids))
        missing = [i for i in drop if i not in self._rows]
        if missing:
            raise UnknownIdError(
                f"cannot remove ids not in the catalogue: {missing[:5]!r}"
                + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            )
        if not drop:
            return self
        self._get_index().remove(drop)
        gone = {self._rows[i] for i in drop}
        keep = np.array([r for r in range(len(self._ids)) if r not in gone], dtype=np.int64)
        self._vectors = np.ascontiguousarray(np.asarray(self._vectors)[keep])
        self._ids = [self._ids[r] for r in keep]
        self._metadata = [self._metadata[r] for r in keep]
        self._rows = {i: r for r, i in enumerate(self._ids)}
        return self

    # -- queries ------------------------------------------------------------------------
    def query(
        self,
        image: Any,
        k: int = 10,
        *,
        where: Where | None = None,
        exclude: Iterable[Id] | None = None,
        min_score: float | None = None,
    ) -> list[Recommendation]:
        """Return the ``k`` catalogue items that look most like ``image``.

        Parameters
        ----------
        image
            Any image-like (path, bytes, PIL image, array).
        k
            How many results at most.
        where
            Keep only items whose metadata matches: a dict ``{key: value}``
            (equality) or ``{key: [v1, v2]}`` (any of), all keys required; or a
            function ``metadata -> bool``. Still returns ``k`` results when ``k``
            items match: the search goes deeper, it does not just drop.
        exclude
            Ids never to return.
        min_score
            Drop results with a cosine similarity below this (e.g. 0.95 to ask
            only for near-duplicates).

        Returns
        -------
        list of Recommendation
            Best first; fewer than ``k`` when fewer items qualify.
        """
        vector = self._get_extractor().extract([image], progress=False)
        return self._search(self._project(vector), k, where, exclude, min_score)[0]

    def query_batch(
        self,
        images: Iterable[Any],
        k: int = 10,
        *,
        where: Where | None = None,
        exclude: Iterable[Id] | None = None,
        min_score: float | None = None,
        batch_size: int | None = None,
    ) -> list[list[Recommendation]]:
        """Return :meth:`query` results for many images, extracted in batches."""
        vectors = self._get_extractor().extract(images, batch_size=batch_size, progress=False)
        return self._search(self._project(vectors), k, where, exclude, min_score)

    def query_vector(
        self,
        vector: np.ndarray,
        k: int = 10,
        *,
        where: Where | None = None,
        exclude: Iterable[Id] | None = None,
        min_score: float | None = None,
    ) -> list[Recommendation]:
        """Return :meth:`query` results for a vector already extracted.

        ``vector`` may come straight from the extractor (it is reduced when the
        catalogue reduces) or already be in the stored space.
        """
        q = np.asarray(vector, dtype=np.float32).reshape(1, -1)
        if q.shape[1] != self.dim:
            q = self._project(q)
        return self._search(q, k, where, exclude, min_score)[0]

    def similar_to(
        self,
        item_id: Id,
        k: int = 10,
        *,
        where: Where | None = None,
        exclude: Iterable[Id] | None = None,
        min_score: float | None = None,
    ) -> list[Recommendation]:
        """Return the ``k`` items most like a catalogue item, never the item itself."""
        row = self._row(item_id)
        skip = {item_id, *(exclude or ())}
        q = self._float32(slice(row, row + 1))
        return self._search(q, k, where, skip, min_score)[0]

    def find_duplicates(
        self, min_score: float = 0.95, *, k: int = 10
    ) -> list[tuple[Id, Id, float]]:
        """Return pairs of near-duplicate items ``(id_a, id_b, score)``, best first.

        Each pair appears once (``id_a`` stored before ``id_b``); ``k`` bounds
        how many neighbours of each item are examined.
        """
        if not len(self):
            return []
        kk = min(k + 1, len(self))
        scores, ids = self._get_index().search(self._float32(), kk)
        pairs: dict[tuple[int, int], float] = {}
        for a, (row_scores, row_ids) in enumerate(zip(scores, ids, strict=True)):
            for s, other in zip(row_scores, row_ids, strict=True):
                b = self._rows[other]
                if b != a and float(s) >= min_score:
                    pairs[(min(a, b), max(a, b))] = float(s)
        ranked = sorted(pairs.items(), key=lambda kv: (-kv[1], kv[0]))
        return [(self._ids[a], self._ids[b], s) for (a, b), s in ranked]

    def _search(
        self,
        queries: np.ndarray,
        k: int,
        where: Where | None,
        exclude: Iterable[Id] | None,
        min_score: float | None,
    ) -> list[list[Recommendation]]:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ConfigError(f"k must be a positive integer, got {k!r}")
        if not len(self):
            raise NotFittedError("the catalogue is empty: call fit() or add() before querying")
        if queries.shape[1] != self._vectors.shape[1]:
            raise DimensionMismatch(
                f"query vectors have dimension {queries.shape[1]}, the catalogue "
                f"{self._vectors.shape[1]}"
            )
        allowed = self._allowed(where, exclude)
        n = len(self)
        if allowed is None:
            scores, ids = self._get_index().search(queries, min(k, n))
            results = [
                list(zip(s.tolist(), i, strict=True)) for s, i in zip(scores, ids, strict=True)
            ]
        else:
            results = [self._filtered(q, k, allowed) for q in queries]
        return [self._wrap(r[:k], min_score) for r in results]

    def _allowed(self, where: Where | None, exclude: Iterable[Id] | None) -> np.ndarray | None:
        if where is None and not exclude:
            return None
        mask = np.ones(len(self), dtype=bool)
        if where is not None:
            match = _matcher(where)
            mask &= np.fromiter((match(m) for m in self._metadata), bool, len(self._metadata))
        for i in exclude or ():
            row = self._rows.get(i)
            if row is not None:
                mask[row] = False
        return mask

    def _filtered(self, q: np.ndarray, k: int, allowed: np.ndarray) -> list[tuple[float, Id]]:
        m, n = int(allowed.sum()), len(self)
        if m == 0:
            return []
        want = min(k, m)
        if m <= max(2048, n // 16):
            # few candidates: score them exactly from the stored vectors
            rows = np.flatnonzero(allowed)
            sims = self._float32(rows) @ q
            order = np.lexsort((rows, -sims))[:want]
            return [(float(sims[j]), self._ids[rows[j]]) for j in order]
        depth = min(n, max(want * 2, math.ceil(want * n / m * 1.5)))
        while True:
            scores, ids = self._get_index().search(q[None, :], depth)
            hits = [
                (float(s), i)
                for s, i in zip(scores[0], ids[0], strict=True)
                if allowed[self._rows[i]]
            ]
            if len(hits) >= want or depth >= n:
                return hits[:want]
            depth = min(n, depth * 2)

    def _wrap(self, hits: list[tuple[float, Id]], min_score: float | None) -> list[Recommendation]:
        out: list[Recommendation] = []
        for score, item_id in hits:
            if min_score is not None and score < min_score:
                break
            meta = MappingProxyType(self._metadata[self._rows[item_id]])
            out.append(Recommendation(item_id, float(score), len(out) + 1, meta))
        return out

    # -- persistence --------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write the catalogue to a folder (atomically) and return its path.

        See :mod:`visualsim.catalog` for the layout. ``overwrite=True``
        replaces an existing catalogue only once the new one is complete.
        """
        from .extractors.base import extractor_spec
        from .indexes.base import INDEXES

        if not len(self):
            raise NotFittedError("nothing to save: the catalogue is empty")
        index = self._get_index()
        reducer = self._get_reducer()
        return write_catalog(
            path,
            vectors=np.asarray(self._vectors),
            ids=self._ids,
            metadata=self._metadata,
            extractor=extractor_spec(self._get_extractor()),
            index=INDEXES.to_spec(index),
            save_index=index.save,
            extra={
                "storage": self.storage,
                "reducer": None if reducer is None else reducer.get_config(),
            },
            extra_dirs={} if reducer is None else {REDUCER_DIR: reducer.save},
            overwrite=overwrite,
        )

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        *,
        index: Any = None,
        extractor: Any = None,
        mmap: bool = False,
        verify: bool = True,
    ) -> Recommender:
        """Read a catalogue written by :meth:`save`.

        Parameters
        ----------
        path
            The catalogue folder.
        index
            Rebuild with another index (a name or an index object) from the
            stored vectors instead of loading the saved one.
        extractor
            Use this extractor instead of rebuilding the saved one (it must give
            vectors of the same dimension).
        mmap
            Memory-map the stored vectors instead of reading them into memory.
        verify
            Check every file's checksum.

        Raises
        ------
        CatalogError
            Naming the file and the problem (missing, tampered, inconsistent).
        FormatVersionError
            For a catalogue from a newer visualsim.
        """
        from .extractors.base import extractor_from_config
        from .indexes.base import load_index

        data = read_catalog(path, mmap=mmap, verify=verify)
        ext = (
            extractor
            if extractor is not None
            else extractor_from_config(data.manifest["extractor"])
        )
        reducer = None
        if data.manifest.get("reducer") is not None:
            from .reduction import PCAReducer

            reducer = PCAReducer.load(Path(path) / REDUCER_DIR)
        expected = (
            int(data.manifest["dim"]) if reducer is None else int(reducer.n_features_in_ or 0)
        )
        if int(ext.dim) != expected:
            raise DimensionMismatch(
                f"extractor gives {ext.dim}-d vectors but {str(path)!r} was built from "
                f"{expected}-d ones"
            )
        storage = str(data.manifest.get("storage", "float32"))
        rec = cls(ext, index, reduce_dim=reducer, storage=storage)
        rec._extractor_ = ext
        rec._reducer_ = reducer
        if index is None:
            # the catalogue's manifest already covered the index files' checksums
            loaded = load_index(data.index_dir, verify=False)
            if len(loaded) != len(data.ids) or list(loaded.ids) != data.ids:
                raise CatalogError(
                    f"the index in {str(data.index_dir)!r} does not hold the catalogue's ids"
                )
            rec.index = rec._index_ = loaded
        else:
            rec._get_index().add(np.asarray(data.vectors, dtype=np.float32), data.ids)
        rec._vectors = data.vectors if mmap else np.asarray(data.vectors, dtype=storage)
        rec._ids = list(data.ids)
        rec._rows = {i: r for r, i in enumerate(rec._ids)}
        rec._metadata = data.metadata
        return rec


REDUCER_DIR = "reducer"


def _make_index(spec: Any) -> Any:
    if spec is None:
        from .indexes.faiss import FlatIndex

        return FlatIndex()
    if isinstance(spec, str):
        from .indexes.base import make_index

        return make_index(spec)
    if len(spec):
        # refitting with an index object that already holds vectors: start from an empty copy
        return type(spec).from_config(spec.get_config())
    return spec


def _matcher(where: Where) -> Callable[[Mapping[str, Any]], bool]:
    if callable(where):
        func = where
        return lambda meta: bool(func(MappingProxyType(dict(meta))))
    if not isinstance(where, Mapping):
        raise ConfigError(
            f"where must be a dict or a function of metadata, got {type(where).__name__}"
        )
    wanted = {
        key: (True, frozenset(v)) if isinstance(v, (list, tuple, set, frozenset)) else (False, v)
        for key, v in where.items()
    }

    def match(meta: Mapping[str, Any]) -> bool:
        for key, (any_of, want) in wanted.items():
            if key not in meta:
                return False
            value = meta[key]
            if any_of:
                if not (_hashable(value) and value in want):
                    return False
            elif value != want:
                return False
        return True

    return match


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


__all__ = ["FailedInput", "Recommendation", "Recommender"]
