"""The front door: ``Recommender(extractor, index).fit(images).query(image)``.

A facade: it holds the public methods and the one read/write lock, and delegates to
:mod:`~visualsim.pipeline`, :mod:`~visualsim.ingest`, :mod:`~visualsim.querying`,
:class:`~visualsim.store.Store`, :class:`~visualsim.search.Segments` and :mod:`~visualsim.catalog`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from . import ingest, querying
from . import persistence as P
from .errors import ConfigError, NotFittedError, UnknownIdError
from .filters import to_expr
from .ids import Id
from .indexes.base import ReadWriteLock
from .ingest import FailedInput, Rows, SummaryCache, read_images
from .pipeline import Pipeline, load_state, save_state
from .querying import Distinct, LiveView, Recommendation, RegionResults, Where
from .search import Segments
from .store import Store, check_storage

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from .duplicates import DuplicateGroup
    from .sync import SyncOptions, SyncReport

logger = logging.getLogger(__name__)


class Recommender:
    """Find the catalogue items that look most like an image (tour: ``docs/recommender.md``).

    Parameters
    ----------
    extractor
        Images → unit vectors, or a registered name; default
        :func:`~visualsim.auto_extractor`'s choice (nothing is downloaded).
    index
        An index object or a :func:`~visualsim.make_index` name (``"flat"``,
        ``"ivf"``, ``"hnsw"``, ``"ivfpq"``, ``"sklearn"``); default exact ``"flat"``.
    reduce_dim
        Store ``reduce_dim``-d vectors: a :class:`~visualsim.reduction.PCAReducer`
        (or the one given), fitted on the first vectors added.
    storage
        ``"float32"`` (default) or ``"float16"``: the dtype of the stored vectors.
    image_root
        Folder that image paths are stored relative to.
    dtypes
        Declared metadata field kinds, e.g. ``{"price": "float"}``; others are inferred.
    partition_by
        A field to keep one index per value of (:class:`~visualsim.search.Partitions`).

    Attributes
    ----------
    failed_
        Inputs of the last ``fit``/``add``/``upsert`` that could not be read, with reasons.

    Examples
    --------
    >>> from visualsim import ColorHistogramExtractor
    >>> red, blue = np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 3), np.uint8)
    >>> red[..., 0] = 230; blue[..., 2] = 230
    >>> rec = Recommender(ColorHistogramExtractor(), "flat").fit(
    ...     [red, blue], ["red", "blue"], [{"price": 5}, {"price": 9}], progress=False)
    >>> rec.query(red, k=1)[0].id, [r.id for r in rec.query(red, where="price > 6")]
    ('red', ['blue'])
    """

    def __init__(
        self,
        extractor: Any = None,
        index: Any = None,
        *,
        reduce_dim: int | Any | None = None,
        storage: str = "float32",
        image_root: str | os.PathLike[str] | None = None,
        dtypes: Mapping[str, str] | None = None,
        partition_by: str | None = None,
    ) -> None:
        check_storage(storage)
        self.extractor = extractor
        self.index = index
        self.reduce_dim = reduce_dim
        self.storage = storage
        self.image_root = image_root
        self.dtypes = dict(dtypes or {})
        if partition_by is not None and (not isinstance(partition_by, str) or not partition_by):
            raise ConfigError(f"partition_by must be a field name, got {partition_by!r}")
        self.partition_by = partition_by
        self.failed_: list[FailedInput] = []
        self.duplicates_: list[tuple[Id, Id, float]] = []
        self._summaries = SummaryCache()  # the duplicate detector's, per store
        self.adaptation_report_: Any = None
        self.warm_ = False
        self._lock = ReadWriteLock()
        self._pipeline = Pipeline(extractor, reduce_dim)  # extractor -> reducer -> transform
        self._reset()

    # -- construction -----------------------------------------------------------------
    def _reset(self) -> None:
        self._store_: Store | None = None
        self._segments_: Segments | None = None
        self._pipeline.reducer = None
        self._version = 0
        self._catalog_state: Any = None  # what catalog.py knows of the folder we came from

    def _get_store(self, dim: int) -> Store:
        if self._store_ is None:
            self._store_ = Store(dim, self.storage)
            if self.dtypes:
                self._store_.declare(self.dtypes)
        if self._segments_ is None:
            self._segments_ = Segments(querying.fresh_index(self.index), self.partition_by)
        return self._store_

    @property
    def extractor_(self) -> Any:
        """The extractor in use (built from the ``extractor`` argument on first use)."""
        return self._pipeline.get_extractor()

    @property
    def index_(self) -> Any:
        """A read-only view answering ``search(queries, k) -> (scores, ids)`` over live items."""
        return LiveView(self._lock, lambda: (self._store_, self._segments_), self.index)

    @property
    def reducer_(self) -> Any:
        """The fitted :class:`~visualsim.reduction.PCAReducer`, or ``None``."""
        return self._pipeline.get_reducer()

    @property
    def transform_(self) -> Any:
        """The learned transform applied after the reducer (see ``adapt``), or ``None``."""
        return self._pipeline.transform

    @property
    def image_root_(self) -> Path | None:
        """The folder image paths are stored relative to, or ``None``."""
        return None if self.image_root is None else Path(self.image_root)

    @property
    def dim(self) -> int:
        """Length of the stored vectors (``reduce_dim`` when reducing)."""
        return self._store_.dim if self._store_ is not None else self._pipeline.dim

    @contextlib.contextmanager
    def _reading(self, *, emptied: bool = False) -> Iterator[tuple[Store, Segments]]:
        """Hold the read lock over the store; ``emptied``: one whose items were all removed
        counts (to save it), one never filled does not."""
        with self._lock.read():
            store, segments = self._store_, self._segments_
            if store is None or segments is None or not (len(store) or emptied):
                raise NotFittedError("the catalogue is empty: call fit() or add() first")
            yield store, segments

    @property
    def embeddings_(self) -> np.ndarray:
        """The live items' vectors, ``(n, dim)`` float32, aligned with :attr:`ids_` (read-only)."""
        with self._lock.read():
            return self._or_empty(self.dim if self.extractor is not None else 0).live_vectors()

    @property
    def ids_(self) -> list[Id]:
        """The stored ids, in insertion order (a copy)."""
        with self._lock.read():
            return self._or_empty().live_ids()

    @property
    def metadata_(self) -> list[dict[str, Any]]:
        """Each stored item's metadata, aligned with :attr:`ids_` (copies)."""
        with self._lock.read():
            store = self._or_empty()
            return list(store.iter_metadata(store.live_rows()))

    @property
    def fields_(self) -> dict[str, str]:
        """Metadata field -> kind (``"str"``, ``"int"``, ``"float"``, ``"bool"``, ``"json"``)."""
        with self._lock.read():
            return self._or_empty().fields

    def field_values(
        self, field: str, prefix: str = "", *, limit: int | None = 20
    ) -> list[tuple[str, int]]:
        """Return ``(value, items)`` of a text field, for autocomplete and drop-downs.

        Values starting with ``prefix`` (any case) first, then those containing it;
        the most common first; at most ``limit`` (``None``: all). A field that is not
        text gives ``[]``; one no item has is a ``FilterError``.

        Examples
        --------
        >>> rec = Recommender.from_vectors(np.eye(3), ["a", "b", "c"], [
        ...     {"type": "Casual Shoes"}, {"type": "Casual Shoes"}, {"type": "Shirts"}])
        >>> rec.field_values("type", "cas")
        [('Casual Shoes', 2)]
        """
        with self._lock.read():
            return self._or_empty().value_counts(field, prefix, limit)

    def filter_hints(self, where: Where) -> list[str]:
        """Say which text values of a filter no item has, and what was likely meant.

        ``rec.filter_hints("articleType == 'casual shoes'")`` gives
        ``["no item has articleType == 'casual shoes'; did you mean 'Casual Shoes'?"]``:
        why a query came back empty (the CLI and HTTP show these). A function filter gives none.
        """
        if callable(where) and not isinstance(where, (str, Mapping)):
            return []
        expr = to_expr(where)
        with self._lock.read():
            return self._or_empty().value_hints(expr)

    def __len__(self) -> int:
        return 0 if self._store_ is None else len(self._store_)

    def __contains__(self, item_id: object) -> bool:
        return self._store_ is not None and item_id in self._store_

    def __repr__(self) -> str:
        idx = self.index
        idx_name = getattr(idx, "name", None) or (idx if isinstance(idx, str) else "flat")
        dim = self._store_.dim if self._store_ is not None and len(self) else "?"
        failed = f", failed={len(self.failed_)}" if self.failed_ else ""
        return (
            f"Recommender(extractor={self._pipeline.name}, index={idx_name}, items={len(self)}, "
            f"dim={dim}{failed})"
        )

    def metadata_of(self, item_id: Id) -> dict[str, Any]:
        """Return one item's metadata (a plain dict copy)."""
        with self._lock.read():
            store = self._need_store()
            return store.metadata(store.row_of(item_id))

    def vector_of(self, item_id: Id) -> np.ndarray:
        """Return one item's stored vector (a float32 copy)."""
        with self._lock.read():
            return self._need_store().vector(item_id)

    def source_of(self, item_id: Id) -> str | None:
        """Return the item's image path as stored (relative to ``image_root_`` when inside it)."""
        with self._lock.read():
            store = self._need_store()
            return store.sources[store.row_of(item_id)]

    def source_hash_of(self, item_id: Id) -> str | None:
        """Return the SHA-256 of the image file or bytes the item was made from, if known."""
        with self._lock.read():
            store = self._need_store()
            return store.hashes[store.row_of(item_id)]

    def resolve_source(self, source: str | None) -> str | None:
        """Return a stored source as a path on this machine (joined to the image root)."""
        return P.resolve_source(self.image_root_, source)

    def _or_empty(self, dim: int = 0) -> Store:
        return self._store_ if self._store_ is not None else Store(dim)

    def _need_store(self) -> Store:
        if self._store_ is None:
            raise UnknownIdError("the catalogue is empty")
        return self._store_

    # -- fit / add / upsert / remove ----------------------------------------------------
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
            A stream of image-likes (paths, bytes, PIL images, arrays), dataset
            items or ``(id, image[, metadata])`` tuples.
        ids
            Ids aligned with ``images``; default the item's id, else the path, else the position.
        metadata
            Dicts aligned with ``images``: strings, numbers, booleans, or JSON lists/dicts.
        batch_size
            Images per model call; default the extractor's.
        on_error
            ``"skip"`` lists unreadable inputs in :attr:`failed_`; ``"raise"`` stops
            at the first :class:`~visualsim.ImageLoadError`, changing nothing.
        progress
            Show a progress bar.
        checkpoint_dir
            Make the run resumable: see :meth:`add`.

        Returns
        -------
        Recommender
            ``self``, with every item in the index.
        """
        with self._lock.write():
            self._reset()
            self._version += 1
        self.failed_ = []
        self.add(
            images,
            ids,
            metadata,
            batch_size=batch_size,
            on_error=on_error,
            progress=progress,
            checkpoint_dir=checkpoint_dir,
        )
        with self._lock.write():  # a fresh catalogue is indexed whole (no exact delta left)
            if self._store_ is not None and self._segments_ is not None:
                self._segments_.flush(self._store_)
                self._version += 1
        return self

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
        duplicates: Literal["report", "skip", "error"] | None = None,
        min_score: float | None = None,
    ) -> Recommender:
        """Add more images (nothing is stored unless all are read); same arguments as :meth:`fit`.

        Parameters
        ----------
        checkpoint_dir
            Write vectors here batch by batch; a rerun with the same inputs in the
            same order skips what was done (``docs/recommender.md``).
        duplicates
            Check new images with the duplicate detector: ``"report"`` lists
            ``(new_id, earlier_id, score)`` in :attr:`duplicates_`, ``"skip"`` also
            leaves them out, ``"error"`` raises :class:`~visualsim.errors.DuplicateImageError`.
        min_score
            The detector's threshold; ``None``: :data:`visualsim.duplicates.DEFAULT_MIN_SCORE`.
        """
        threshold = ingest.check_policy(duplicates, min_score)
        rows = self._read(images, ids, metadata, batch_size, on_error, progress, checkpoint_dir)
        self.duplicates_ = []
        if duplicates is not None and rows.ids:
            with self._lock.read():
                best = ingest.stored_matches(self._store_, self._summaries, rows, threshold)
            self.duplicates_ = ingest.duplicates_of(rows, best, threshold)
            rows = ingest.apply_policy(rows, self.duplicates_, duplicates, threshold)
        self._store_rows(rows, replace=False)
        ingest.log_failed(self.failed_, len(rows.ids))
        return self

    def upsert(
        self,
        images: Iterable[Any],
        ids: Iterable[Any] | None = None,
        metadata: Iterable[Mapping[str, Any] | None] | None = None,
        *,
        batch_size: int | None = None,
        on_error: Literal["skip", "raise"] = "skip",
        progress: bool = True,
    ) -> Recommender:
        """Add new items and replace stored ones (image, vector, metadata); return ``self``."""
        rows = self._read(images, ids, metadata, batch_size, on_error, progress, None, upsert=True)
        self._store_rows(rows, replace=True)
        ingest.log_failed(self.failed_, len(rows.ids))
        return self

    def _read(
        self,
        images: Iterable[Any],
        ids: Iterable[Any] | None,
        metadata: Iterable[Mapping[str, Any] | None] | None,
        batch_size: int | None,
        on_error: Literal["skip", "raise"],
        progress: bool,
        checkpoint_dir: str | os.PathLike[str] | None,
        *,
        upsert: bool = False,
    ) -> Rows:
        """Extract the inputs (:func:`~visualsim.ingest.read_images`); set :attr:`failed_`."""
        store = self._store_
        rows, self.failed_ = read_images(
            images,
            ids,
            metadata,
            extractor=self._pipeline.get_extractor(),
            to_stored=lambda v: self._pipeline.project(v, fit=True),
            start=0 if store is None else store.n_rows,
            taken=frozenset() if upsert or store is None else store.rows,
            image_root=self.image_root_,
            batch_size=batch_size,
            on_error=on_error,
            progress=progress,
            checkpoint_dir=checkpoint_dir,
        )
        return rows

    @classmethod
    def from_vectors(
        cls,
        vectors: np.ndarray,
        ids: Sequence[Any],
        metadata: Sequence[Mapping[str, Any] | None] | None = None,
        *,
        index: Any = None,
        source: str | None = None,
        **options: Any,
    ) -> Recommender:
        """Return a catalogue of your own vectors, with no model (``docs/recommender.md``).

        Parameters
        ----------
        vectors
            ``(n, dim)`` floats; L2-normalised on the way in.
        ids, metadata
            As for :meth:`add_vectors`.
        index
            As for the constructor (default: exact).
        source
            A note of where the vectors come from, saved with the catalogue.
        **options
            Other constructor arguments (``storage``, ``dtypes``, ``partition_by``...).

        Examples
        --------
        >>> rec = Recommender.from_vectors(np.array([[1, 0], [0.8, 0.6], [0, 1]]), ["a", "b", "c"])
        >>> [r.id for r in rec.query_vector(np.array([1.0, 0.1]), k=2)]
        ['a', 'b']
        """
        from .extractors.precomputed import PrecomputedVectors

        rec = cls(PrecomputedVectors(ingest.vector_dim(vectors), source=source), index, **options)
        return rec.add_vectors(vectors, ids, metadata)

    def add_vectors(
        self,
        vectors: np.ndarray,
        ids: Sequence[Any],
        metadata: Sequence[Mapping[str, Any] | None] | None = None,
    ) -> Recommender:
        """Add vectors from the same extractor (e.g. from a Ray cluster); return ``self``."""
        x, checked, meta = ingest.check_rows(vectors, ids, metadata)
        self._store_rows(Rows(self._pipeline.project(x, fit=True), checked, meta), replace=False)
        return self

    def upsert_vectors(
        self,
        vectors: np.ndarray,
        ids: Sequence[Any],
        metadata: Sequence[Mapping[str, Any] | None] | None = None,
    ) -> Recommender:
        """Add or replace items from precomputed vectors; return ``self``."""
        x, checked, meta = ingest.check_rows(vectors, ids, metadata)
        self._store_rows(Rows(self._pipeline.project(x, fit=True), checked, meta), replace=True)
        return self

    def _store_rows(self, rows: Rows, *, replace: bool) -> None:
        """Write ``rows`` under the write lock (:func:`~visualsim.ingest.write_rows`)."""
        if not rows.ids:
            return
        with self._lock.write():
            ingest.check_dim(rows.vectors, self.dim)
            store = self._get_store(int(rows.vectors.shape[1]))
            assert self._segments_ is not None
            ingest.write_rows(store, self._segments_, rows, replace=replace)
            self._version += 1

    def update_metadata(
        self, item_id: Id, fields: Mapping[str, Any], *, replace: bool = False
    ) -> Recommender:
        """Change one item's metadata and return ``self``.

        Parameters
        ----------
        item_id
            A stored id.
        fields
            New values, merged (``None`` deletes a field), or the whole metadata with ``replace``.
        """
        if not isinstance(fields, Mapping):
            raise ConfigError(f"fields must be a dict, got {type(fields).__name__}")
        with self._lock.write():
            store = self._need_store()
            row = store.update_metadata(item_id, fields, replace=replace)
            if self._catalog_state is not None:
                self._catalog_state.dirty_rows.add(row)
            assert self._segments_ is not None
            self._segments_.updated(store, row)
            self._version += 1
        return self

    def remove(self, ids: Iterable[Id]) -> Recommender:
        """Remove items by id (tombstones; :meth:`compact` reclaims the space); return ``self``.

        Raises
        ------
        UnknownIdError
            If any id is not stored (then nothing is removed).
        """
        drop = ingest.id_list(ids)
        if not drop:
            return self
        with self._lock.write():
            if self._store_ is None:
                raise UnknownIdError(f"cannot remove {drop[:5]!r}: the catalogue is empty")
            assert self._segments_ is not None
            ingest.remove_ids(self._store_, self._segments_, drop)
            self._version += 1
        return self

    def compact(self) -> Recommender:
        """Drop removed items for good and re-index every item (queries wait); return ``self``."""
        with self._lock.write():
            if self._store_ is None or self._segments_ is None:
                return self
            dense = ingest.compact(self._store_, self._segments_)
            self._version += 1
            if dense is not None:  # rewritten: the next save writes it whole
                self._store_ = dense
                if self._catalog_state is not None:  # still knows its folder's generation
                    self._catalog_state.rewrite = True
        return self

    def sync(self, feed: Any, **options: Unpack[SyncOptions]) -> SyncReport:
        """Make the catalogue match a feed; return what was done (``docs/live-catalogue.md``).

        Only new ids, changed images (by SHA-256) and changed metadata cost work;
        ids the feed no longer lists are removed. Nothing is saved: call :meth:`save`.

        Parameters
        ----------
        feed
            A feed file (``.csv``, ``.tsv``, ``.jsonl``, ``.parquet``), a folder of
            images, a :class:`~visualsim.ProductFeed`, or an iterable of items,
            ``(id, image[, metadata])`` tuples or ``{"id", "image", ...}`` dicts.
        remove_missing
            Remove the stored ids the feed does not list (default).
        dry_run
            Change nothing; the report lists what would be done.
        id_column, image_column
            For a feed file: the id and image path columns ("id" and "image").
        batch_size, on_error, progress, checkpoint_dir
            As in :meth:`fit` and :meth:`add`; failures are listed in the report.
        allow_outside
            Read a feed file's image paths outside its folder (refused by default).

        Returns
        -------
        SyncReport
            The ids added, updated, removed, how many were unchanged, and the failures.

        Raises
        ------
        DatasetError, ConfigError, DuplicateIdError, ImageLoadError
            A feed file that cannot be read; a feed of another kind or a bad option; an
            id listed twice (nothing changed); with ``on_error="raise"``, a bad image.

        Examples
        --------
        >>> rec = Recommender.from_vectors(np.eye(2), ["a", "b"])
        >>> rec.sync([("a", None)], dry_run=True).removed
        ['b']
        """
        from .sync import sync

        return sync(self, feed, **options)

    # -- adaptation ---------------------------------------------------------------------
    def adapt(self, label: str | Sequence[str], **options: Any) -> Recommender:
        """Return a copy adapted to this catalogue: a projection learned on ``label``.

        Guarded metric learning (``docs/recommender.md``); metrics in ``adaptation_report_``.

        Parameters
        ----------
        label
            The metadata field to learn, or a list of fields.
        **options
            See :func:`visualsim.adaptation.adapt_recommender`.
        """
        from .adaptation import adapt_recommender

        new, report = adapt_recommender(self, label, **options)
        new.adaptation_report_ = report
        return new

    def with_transform(self, transform: Any) -> Recommender:
        """Return a copy whose vectors, queries and additions go through ``transform``.

        ``transform`` has ``transform(x)``, ``dim``, ``get_config()``, ``save(dir)``
        and a ``load(dir)`` classmethod, in a ``visualsim`` module.
        """
        pipe = self._pipeline
        if pipe.transform is not None:
            raise ConfigError(
                "this recommender is already adapted; adapt the original catalogue instead"
            )
        with self._reading() as (store, segments):
            rows = ingest.transformed(store, transform)
            declared = dict(store.declared)
            index = segments.index
        new = Recommender(
            pipe.get_extractor(),
            querying.empty_like(index),
            reduce_dim=pipe.reducer,
            storage=self.storage,
            image_root=self.image_root,
            dtypes={**declared, **self.dtypes},
            partition_by=self.partition_by,
        )
        new._pipeline = Pipeline.of(pipe.get_extractor(), pipe.reducer, transform)
        new._store_rows(rows, replace=False)
        return new

    # -- queries ------------------------------------------------------------------------
    def warm_up(self) -> Recommender:
        """Build the model and run one extraction and one search now (``docs/serving.md``).

        Returns
        -------
        Recommender
            ``self``, with :attr:`warm_` set to ``True``.
        """
        t0 = time.perf_counter()
        vector = self._pipeline.sample_vector()
        if len(self):
            self.query_vector(vector, 1)
        self.warm_ = True
        logger.info("warmed up in %.0f ms", 1000 * (time.perf_counter() - t0))
        return self

    def query(
        self,
        image: Any,
        k: int = 10,
        *,
        where: Where | None = None,
        exclude: Iterable[Id] | Id | None = None,
        min_score: float | None = None,
        distinct: Distinct = True,
        box: Sequence[float] | str | None = None,
    ) -> list[Recommendation]:
        """Return the ``k`` catalogue items that look most like ``image``.

        Parameters
        ----------
        image
            Any image-like (path, bytes, PIL image, array).
        k
            How many results at most.
        where
            Filter text (``"category == 'shoes' and price < 50"``, ``docs/filters.md``),
            ``{field: value or [values]}``, or a function of the metadata (slow).
        exclude
            Ids never to return (one id or a list).
        min_score
            Drop results with a cosine similarity below this.
        distinct
            ``True``: each photo once; a field name: one result per value; ``False``: all.
        box
            ``(left, top, right, bottom)`` pixels or ``"locate"``: search that region
            only (``docs/shopper-photos.md``); ``None``: the whole image.

        Returns
        -------
        list of Recommendation
            Best first; fewer than ``k`` when fewer items qualify.

        Raises
        ------
        FilterError
            A filter that does not parse, or names a field no item has.
        ConfigError
            A ``box`` that is not four numbers, is empty, or reaches outside the image.

        Examples
        --------
        >>> from visualsim import ColorHistogramExtractor
        >>> red = np.full((32, 32, 3), (220, 20, 20), np.uint8)
        >>> rec = Recommender(ColorHistogramExtractor()).fit([red, 255 - red], ["red", "cyan"])
        >>> rec.query(np.hstack([255 - red, red]), 1, box=(32, 0, 64, 32))[0].id
        'red'
        """
        k = querying.check_k(k)
        if box is not None:
            image = querying.crop_to_box(image, box)
        q = self._pipeline.embed([image])
        return self._search(q, querying.plan(k, where, exclude, min_score, distinct))[0]

    def query_regions(
        self,
        image: Any,
        k: int = 10,
        *,
        max_regions: int = 5,
        where: Where | None = None,
        exclude: Iterable[Id] | Id | None = None,
        min_score: float | None = None,
        distinct: Distinct = True,
    ) -> list[RegionResults]:
        """Find the products in a photo and recommend for each (``docs/shopper-photos.md``).

        Parameters
        ----------
        image
            Any image-like (path, bytes, PIL image, array).
        k, where, exclude, min_score, distinct
            As for :meth:`query`, for every region.
        max_regions
            At most this many regions (:func:`visualsim.crop.locate_products`).

        Returns
        -------
        list of RegionResults
            One per region, strongest first; or one for the whole photo (``score`` 1.0).
        """
        k = querying.check_k(k)
        regions, crops = querying.regions_of(image, max_regions)
        q = self._pipeline.embed(crops)
        found = self._search(q, querying.plan(k, where, exclude, min_score, distinct))
        return [RegionResults(r.box, r.score, hits) for r, hits in zip(regions, found, strict=True)]

    def query_batch(
        self,
        images: Iterable[Any],
        k: int = 10,
        *,
        where: Where | None = None,
        exclude: Iterable[Id] | Id | None = None,
        min_score: float | None = None,
        batch_size: int | None = None,
        distinct: Distinct = True,
        boxes: Iterable[Sequence[float] | str | None] | None = None,
    ) -> list[list[Recommendation]]:
        """Return :meth:`query` results for many images; ``boxes``: one ``box`` or ``None`` each."""
        k = querying.check_k(k)
        if boxes is not None:
            images = querying.cropped(images, boxes)
        q = self._pipeline.embed(images, batch_size)
        return self._search(q, querying.plan(k, where, exclude, min_score, distinct))

    def query_vector(
        self,
        vector: np.ndarray,
        k: int = 10,
        *,
        where: Where | None = None,
        exclude: Iterable[Id] | Id | None = None,
        min_score: float | None = None,
        distinct: Distinct = True,
    ) -> list[Recommendation]:
        """Return :meth:`query` results for an extractor's vector or one in the stored space."""
        q = self._pipeline.as_query(vector, self.dim)
        return self._search(q, querying.plan(k, where, exclude, min_score, distinct))[0]

    def similar_to(
        self,
        item_id: Id,
        k: int = 10,
        *,
        where: Where | None = None,
        exclude: Iterable[Id] | Id | None = None,
        min_score: float | None = None,
        distinct: Distinct = True,
    ) -> list[Recommendation]:
        """Return the ``k`` items most like a stored item, never it nor (by default) its copies."""
        with self._lock.read():
            store, segments = self._need_store(), self._segments_
            row = np.array([store.row_of(item_id)])
            if segments is None:
                q = np.array(store.vectors_f32(row), dtype=np.float32)
            else:  # the index's copy where it keeps one: the store's map stays untouched
                q = segments.vectors_of(store, row)
        norm = float(np.linalg.norm(q))
        q = q / norm if norm else q
        p = querying.plan(k, where, exclude, min_score, distinct, item_id)
        return self._search(q, p)[0]

    def find_duplicates(
        self, min_score: float | None = None, *, k: int | None = None
    ) -> list[tuple[Id, Id, float]]:
        """Return duplicate pairs ``(id_a, id_b, score)``, best first (``docs/duplicates.md``).

        Parameters
        ----------
        min_score
            The detector's threshold; ``None``: :data:`visualsim.duplicates.DEFAULT_MIN_SCORE`.
        k
            Candidates confirmed per photo (default :data:`visualsim.duplicates.CANDIDATES`).

        Returns
        -------
        list of tuple
            Each pair once (``id_a`` stored first); items added as vectors pair by SHA-256 only.
        """
        if not len(self):
            return []
        with self._reading() as (store, _):
            return querying.duplicate_pairs(store, min_score, k)

    def duplicate_groups(
        self, min_score: float | None = None, *, k: int | None = None
    ) -> list[DuplicateGroup]:
        """Return groups of duplicate photos (:class:`~visualsim.duplicates.DuplicateGroup`)."""
        pairs = self.find_duplicates(min_score, k=k)
        if not pairs:
            return []
        with self._reading() as (store, _):
            return querying.duplicate_groups(store, pairs)

    def _search(self, queries: np.ndarray, p: querying.Plan) -> list[list[Recommendation]]:
        """Run a query plan (:func:`~visualsim.querying.run`) under the read lock."""
        with self._reading() as (store, segments):
            return querying.run(store, segments, self._version, queries, p, self.resolve_source)

    # -- sources of vectors computed elsewhere ------------------------------------------
    @classmethod
    def from_shards(
        cls, path: str | os.PathLike[str], index: Any = None, *, verify: bool = True
    ) -> Recommender:
        """Build a recommender from :func:`visualsim.distributed.extract_to_shards`' shards."""
        return cls(ingest.shard_extractor(path), index).add_shards(path, verify=verify)

    def add_shards(self, path: str | os.PathLike[str], *, verify: bool = True) -> Recommender:
        """Add a shard folder made by the same extractor; return ``self``."""
        from .shards import load_into

        load_into(self, path, verify=verify)
        return self

    # -- persistence --------------------------------------------------------------------
    def save(
        self,
        path: str | os.PathLike[str],
        *,
        overwrite: bool = False,
        on_conflict: Literal["error", "overwrite"] = "error",
    ) -> Path:
        """Write the catalogue to a folder (changes only, when saved back); return its path.

        Parameters
        ----------
        path
            The catalogue folder.
        overwrite
            Replace a catalogue already at ``path``.
        on_conflict
            When another writer saved the folder this recommender loaded (or last saved)
            since: ``"error"`` writes nothing; ``"overwrite"`` replaces that version
            (``docs/live-catalogue.md``, "Two writers").

        Raises
        ------
        CatalogConflictError
            Another writer saved ``path`` since (``on_conflict="error"``): reload.
        CatalogError
            ``path`` exists and ``overwrite`` is false, or is not a catalogue folder.
        """
        with self._reading(emptied=True) as (store, segments):
            self._catalog_state = save_state(
                self._pipeline,
                store,
                segments,
                path,
                overwrite=overwrite,
                image_root=self.image_root_,
                failed=[asdict(f) for f in self.failed_],
                saved=self._catalog_state,
                on_conflict=on_conflict,
            )
        return Path(path)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        *,
        index: Any = None,
        extractor: Any = None,
        mmap: bool | None = None,
        verify: bool = True,
        allow_mismatch: bool = False,
        milvus_uri: str | os.PathLike[str] | None = None,
        milvus_token_env: str | None = None,
        warm: bool = False,
    ) -> Recommender:
        """Read a catalogue written by :meth:`save`.

        Parameters
        ----------
        path
            The catalogue folder.
        index
            Rebuild this index (a name or an index object) from the stored vectors.
        extractor
            Use this extractor; one that embeds differently is a ``ConfigError``.
        mmap
            Memory-map the stored vectors (when they are one chunk) instead of
            reading them into memory. ``None`` (the default): map them when the
            index keeps its own copy to search (HNSW, IVF), so the catalogue's
            copy is read only for exact scoring and costs no memory until then.
        verify
            Check every file's checksum and that the index agrees with the vectors.
        allow_mismatch
            Accept an ``extractor`` whose config differs from the saved one (warns).
        milvus_uri, milvus_token_env
            A Milvus server and its token's variable (``docs/scale-past-one-machine.md``).
        warm
            Also call :meth:`warm_up`.

        Raises
        ------
        CatalogError, FormatVersionError
            Naming the file and the problem (missing, tampered, inconsistent); a
            catalogue from a newer visualsim.
        """
        state = load_state(
            path, index, milvus_uri, milvus_token_env, extractor, mmap, verify, allow_mismatch
        )
        rec = cls(
            state.extractor,
            index if index is not None else state.index,
            reduce_dim=state.reducer,
            storage=state.store.dtype.name,
            image_root=state.image_root,
        )
        rec.partition_by = state.segments.partition_by
        rec._pipeline = Pipeline.of(state.extractor, state.reducer, state.transform)
        rec._store_, rec._segments_ = state.store, state.segments
        rec.failed_ = [FailedInput(f["id"], f["source"], f["reason"]) for f in state.failed]
        rec._catalog_state = state.saved
        if warm:
            rec.warm_up()
        return rec


__all__ = ["Distinct", "FailedInput", "Recommendation", "Recommender", "RegionResults", "Where"]
