"""The front door: ``Recommender(extractor, index).fit(images).query(image)``.

A thin facade. The :class:`~visualsim.store.Store` owns ids, rows, vectors,
typed metadata columns and tombstones; :class:`~visualsim.search.Segments`
owns the index and query planning; :mod:`visualsim.catalog` owns the folder
on disk. This class turns images into vectors (through the extractor and an
optional reducer) and holds the one read/write lock that makes it safe for
many threads to query while one writes.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from .errors import (
    ConfigError,
    NotFittedError,
    UnknownIdError,
)
from .filters import to_expr
from .ids import Id
from .indexes.base import ReadWriteLock
from .ingest import (
    FailedInput,
    Rows,
    SummaryCache,
    apply_policy,
    check_dim,
    check_rows,
    duplicates_of,
    log_failed,
    read_images,
    remove_ids,
    shard_extractor,
    stored_matches,
    transformed,
    vector_dim,
    write_rows,
)
from .ingest import compact as compact_store
from .pipeline import Pipeline, load_state, save_state
from .querying import (
    Distinct,
    LiveView,
    Recommendation,
    RegionResults,
    Where,
    check_k,
    crop_to_box,
    cropped,
    duplicate_groups,
    duplicate_pairs,
    empty_like,
    plan,
    regions_of,
)
from .querying import fresh_index as _make_index
from .querying import run as run_plan
from .search import Segments
from .store import Store

if TYPE_CHECKING:
    from .duplicates import DuplicateGroup
    from .sync import SyncReport

logger = logging.getLogger(__name__)


class Recommender:
    """Find the catalogue items that look most like an image.

    Parameters
    ----------
    extractor
        Images → unit vectors, or a registered name. Default
        :func:`~visualsim.auto_extractor`'s choice: ResNet50 where its ImageNet
        weights are on disk, else :func:`~visualsim.product_extractor` (the best
        offline mix on real photos), else colour; nothing is downloaded.
    index
        Nearest-neighbour search over the vectors: an index object or a name
        for :func:`~visualsim.make_index` (``"flat"``, ``"ivf"``, ``"hnsw"``,
        ``"ivfpq"``, ``"sklearn"``). Default exact ``"flat"``.
    reduce_dim
        Store and search ``reduce_dim``-dimensional vectors: a
        :class:`~visualsim.reduction.PCAReducer` (or the one given) is fitted
        on the first vectors added (up to its ``sample_size``), saved in the
        catalogue, and applied to every later vector and query.
    storage
        ``"float32"`` (default) or ``"float16"``: the dtype of the stored vectors.
    image_root
        Folder that image paths are stored relative to (so a catalogue can
        move with its images, and results never show a server's paths).
    dtypes
        Declared metadata field kinds, e.g. ``{"price": "float", "sku": "str"}``;
        other fields are inferred from their values.
    partition_by
        A metadata field (str, int or bool, e.g. ``"category"``) to keep one
        small index per value of, besides the main one: a filter that pins
        the field (``category == 'shoes' and price < 50``, ``category in
        [...]``) then searches only those values' indexes, about as fast as
        an unfiltered query. Costs a second index's build time and memory;
        for approximate indexes only (exact and Milvus ones ignore it). See
        :class:`~visualsim.search.Partitions`.

    Attributes
    ----------
    failed_
        Inputs of the last ``fit``/``add``/``upsert`` that could not be read, with reasons.

    Notes
    -----
    Thread safety: any number of threads may query while others add, upsert,
    update or remove. Each call sees the catalogue as it was before or after
    each write, never in between: a query never fails because of a concurrent
    write and never returns an item removed before it started. Writes wait
    for running queries' searches (not their image extraction) and are short
    (appends and tombstones); :meth:`compact` holds queries for its duration.

    Examples
    --------
    >>> import numpy as np
    >>> from visualsim import Recommender, ColorHistogramExtractor
    >>> red, blue = np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 3), np.uint8)
    >>> red[..., 0] = 230; blue[..., 2] = 230
    >>> rec = Recommender(ColorHistogramExtractor(), "flat")
    >>> rec = rec.fit([red, blue], ids=["red", "blue"], metadata=[{"price": 5}, {"price": 9}],
    ...               progress=False)
    >>> rec.query(red, k=1)[0].id
    'red'
    >>> [r.id for r in rec.query(red, where="price > 6")]
    ['blue']
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
        from .reduction import STORAGE_DTYPES

        if storage not in STORAGE_DTYPES:
            raise ConfigError(f"storage must be one of {STORAGE_DTYPES}, got {storage!r}")
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

    def _new_segments(self) -> Segments:
        return Segments(_make_index(self.index), partition_by=self.partition_by)

    def _get_store(self, dim: int) -> Store:
        if self._store_ is None:
            self._store_ = Store(dim, self.storage)
            if self.dtypes:
                self._store_.declare(self.dtypes)
        if self._segments_ is None:
            self._segments_ = self._new_segments()
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
    def _reading(self) -> Iterator[Store]:
        with self._lock.read():
            store = self._store_
            if store is None or not len(store):
                raise NotFittedError("the catalogue is empty: call fit() or add() first")
            yield store

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

        Values starting with ``prefix`` (any case) first, then those containing
        it; the most common first. ``limit`` bounds the answer (``None``: all).
        A field that is not text gives ``[]``; one no item has is a ``FilterError``.

        Examples
        --------
        >>> import numpy as np
        >>> rec = Recommender.from_vectors(
        ...     np.eye(3, dtype=np.float32), ["a", "b", "c"],
        ...     [{"type": "Casual Shoes"}, {"type": "Casual Shoes"}, {"type": "Shirts"}])
        >>> rec.field_values("type", "cas")
        [('Casual Shoes', 2)]
        """
        with self._lock.read():
            return self._or_empty().value_counts(field, prefix, limit)

    def filter_hints(self, where: Where) -> list[str]:
        """Say which text values of a filter no item has, and what was likely meant.

        A filter on a text value no item has is not an error (it matches
        nothing); this says why a query came back empty:
        ``rec.filter_hints("articleType == 'casual shoes'")`` gives
        ``["no item has articleType == 'casual shoes'; did you mean 'Casual Shoes'?"]``.
        The CLI prints these under an empty result and the HTTP service returns
        them as ``hints``. A function filter gives none.
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
        if source is None:
            return None
        root = self.image_root_
        return source if root is None or os.path.isabs(source) else str(root / source)

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
            Any iterable (consumed as a stream) of image-likes (paths, bytes,
            PIL images, arrays), of dataset items with ``id``, ``image`` and
            ``metadata`` attributes, or of ``(id, image[, metadata])`` tuples.
        ids
            Ids aligned with ``images``. Default: the item's own id, else the
            path for path inputs, else the running position.
        metadata
            Dicts aligned with ``images``: strings, numbers, booleans (typed
            columns used by ``where``), or JSON lists/dicts.
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
            ``self``, fitted: every item is in the index (later additions
            collect in an exact delta until it is large enough to index).
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
        """Add more images to the catalogue; same arguments as :meth:`fit`.

        Nothing is stored until every input has been read, so a failure
        (``on_error="raise"``, a duplicate id) leaves the catalogue unchanged.
        Adding costs the extraction of the new images and an append: the
        stored catalogue is never copied or re-indexed.

        Parameters
        ----------
        checkpoint_dir
            Write vectors to this folder batch by batch. If the run is
            interrupted, calling ``fit``/``add`` again with the same inputs (in
            the same order) and the same folder skips every input already
            done. The files visualsim wrote there are removed once the
            vectors are stored (nothing else in the folder is touched).
        duplicates
            Check each new image with the duplicate detector
            (:mod:`visualsim.duplicates`, the one :meth:`find_duplicates` uses),
            against the catalogue and against the other new images:
            ``"report"`` adds everything and lists the duplicates in
            :attr:`duplicates_` as ``(new_id, earlier_id, score)``; ``"skip"``
            leaves them out (listed there too); ``"error"`` raises
            :class:`~visualsim.errors.DuplicateImageError` and adds nothing.
            ``None`` (default) does not check.
        min_score
            The detector's score from which a new image counts as a duplicate;
            ``None`` means its calibrated default,
            :data:`visualsim.duplicates.DEFAULT_MIN_SCORE` (``docs/duplicates.md``).
        """
        if duplicates not in (None, "report", "skip", "error"):
            raise ConfigError(
                f"duplicates must be None, 'report', 'skip' or 'error', got {duplicates!r}"
            )
        from .duplicates import check_min_score

        threshold = check_min_score(min_score)
        rows = self._read(images, ids, metadata, batch_size, on_error, progress, checkpoint_dir)
        self.duplicates_ = []
        if duplicates is not None and rows.ids:
            with self._lock.read():
                best = stored_matches(self._store_, self._summaries, rows, threshold)
            self.duplicates_ = duplicates_of(rows, best, threshold)
            rows = apply_policy(rows, self.duplicates_, duplicates, threshold)
        self._store_rows(rows, replace=False)
        log_failed(self.failed_, len(rows.ids))
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
        """Add new items and replace existing ones (image, vector and metadata); return ``self``.

        An id already in the catalogue gets the new image's vector and the
        new metadata; other ids are added. Inputs that cannot be read leave
        their existing item as it was (and are listed in :attr:`failed_`).
        """
        rows = self._read(images, ids, metadata, batch_size, on_error, progress, None, upsert=True)
        self._store_rows(rows, replace=True)
        log_failed(self.failed_, len(rows.ids))
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
        """Return a catalogue of vectors you computed yourself (your own model's embeddings).

        It has no model (its extractor is a
        :class:`~visualsim.extractors.precomputed.PrecomputedVectors` of the
        vectors' length): query it with :meth:`query_vector`, grow it with
        :meth:`add_vectors` / :meth:`upsert_vectors`; everything else (filters,
        ``remove``, ``save``/``load``, the HTTP service's ``similar``) works as
        for any catalogue. ``query(image)`` raises ``ConfigError`` saying so.

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
        >>> import numpy as np
        >>> emb = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]], np.float32)
        >>> rec = Recommender.from_vectors(emb, ["a", "b", "c"], source="my model")
        >>> [r.id for r in rec.query_vector(np.array([1.0, 0.1]), k=2)]
        ['a', 'b']
        """
        from .extractors.precomputed import PrecomputedVectors

        rec = cls(PrecomputedVectors(vector_dim(vectors), source=source), index, **options)
        return rec.add_vectors(vectors, ids, metadata)

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
        x, checked, meta = check_rows(vectors, ids, metadata)
        self._store_rows(Rows(self._pipeline.project(x, fit=True), checked, meta), replace=False)
        return self

    def upsert_vectors(
        self,
        vectors: np.ndarray,
        ids: Sequence[Any],
        metadata: Sequence[Mapping[str, Any] | None] | None = None,
    ) -> Recommender:
        """Add or replace items from precomputed vectors; return ``self``."""
        x, checked, meta = check_rows(vectors, ids, metadata)
        self._store_rows(Rows(self._pipeline.project(x, fit=True), checked, meta), replace=True)
        return self

    def _store_rows(self, rows: Rows, *, replace: bool) -> None:
        """Write ``rows`` under the write lock (:func:`~visualsim.ingest.write_rows`)."""
        if not rows.ids:
            return
        with self._lock.write():
            check_dim(rows.vectors, self._store_.dim if self._store_ is not None else self.dim)
            store = self._get_store(int(rows.vectors.shape[1]))
            assert self._segments_ is not None
            write_rows(store, self._segments_, rows, replace=replace)
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
            New values; merged into the existing metadata (a value of
            ``None`` deletes that field), or the whole metadata when ``replace``.
        """
        if not isinstance(fields, Mapping):
            raise ConfigError(f"fields must be a dict, got {type(fields).__name__}")
        with self._lock.write():
            store = self._need_store()
            merged = dict(fields)
            row = store.update_metadata(item_id, merged, replace=replace)
            if self._catalog_state is not None:
                self._catalog_state.dirty_rows.add(row)
            assert self._segments_ is not None
            self._segments_.updated(store, row)
            self._version += 1
        return self

    def remove(self, ids: Iterable[Id]) -> Recommender:
        """Remove items by id and return ``self``.

        A removal is a tombstone: no index is rebuilt and nothing is copied
        (:meth:`compact` reclaims the space).

        Raises
        ------
        UnknownIdError
            If any id is not stored (then nothing is removed).
        """
        if isinstance(ids, (str, bytes)) or not isinstance(ids, Iterable):
            raise ConfigError(f"ids must be a list of ids, got {ids!r}; pass [{ids!r}]")
        drop = list(dict.fromkeys(ids))
        if not drop:
            return self
        with self._lock.write():
            if self._store_ is None:
                raise UnknownIdError(f"cannot remove {drop[:5]!r}: the catalogue is empty")
            assert self._segments_ is not None
            remove_ids(self._store_, self._segments_, drop)
            self._version += 1
        return self

    def compact(self) -> Recommender:
        """Drop removed items for good and index every item; return ``self``.

        Rewrites the stored rows densely and rebuilds the index over them
        (approximate indexes are retrained). The next :meth:`save` writes
        the whole catalogue. Queries wait while it runs. With nothing removed
        and nothing to retrain (HNSW) it only indexes the newest items.
        """
        with self._lock.write():
            if self._store_ is None or self._segments_ is None:
                return self
            dense = compact_store(self._store_, self._segments_)
            self._version += 1
            if dense is not None:  # rewritten: the next save writes it whole
                self._store_, self._catalog_state = dense, None
        return self

    def sync(
        self,
        feed: Any,
        *,
        remove_missing: bool = True,
        dry_run: bool = False,
        id_column: str = "id",
        image_column: str = "image",
        batch_size: int | None = None,
        on_error: Literal["skip", "raise"] = "skip",
        progress: bool = True,
        checkpoint_dir: str | os.PathLike[str] | None = None,
    ) -> SyncReport:
        """Make the catalogue match a feed; return what was done.

        Only what changed costs an extraction: a new id is added, an id whose
        image bytes changed (by SHA-256, as recorded when it was added) is
        re-extracted with the feed's metadata, an id whose metadata alone
        changed gets it replaced (the vector kept), and the ids the feed no
        longer lists are removed. Nothing is saved: call :meth:`save`.

        Parameters
        ----------
        feed
            A feed file (``.csv``, ``.tsv``, ``.jsonl``, ``.parquet`` with an
            id and an image column, read as a
            :class:`~visualsim.ProductFeed` whose column kinds follow
            :attr:`fields_`), a folder of images, a ``ProductFeed`` (for other
            column names or an image root), or an iterable of records: dataset
            items, ``(id, image[, metadata])`` tuples, or dicts with ``"id"``
            and ``"image"`` keys (the other keys are the metadata). It lists
            every item the catalogue should hold.
        remove_missing
            Remove the stored ids the feed does not list (default). ``False``
            only adds and updates.
        dry_run
            Change nothing; the report lists what would be done.
        id_column, image_column
            For a feed file: the columns holding the ids and the image paths
            (default ``"id"`` and ``"image"``).
        batch_size, on_error, progress
            As in :meth:`fit`. With ``on_error="skip"`` (default) an image
            that cannot be read is listed in the report's ``failed`` and its
            item left as it was; the other items are still synced.
        checkpoint_dir
            Make the extraction of the new items resumable: see :meth:`add`.

        Returns
        -------
        SyncReport
            The ids added, updated (image, metadata), removed, how many were
            unchanged, and the items that failed with their reasons.

        Raises
        ------
        DatasetError
            For a feed file that cannot be read.
        ConfigError
            For a feed of another kind, or a bad option.
        DuplicateIdError
            When the feed lists an id twice (nothing is changed).
        ImageLoadError
            With ``on_error="raise"``, at the first unreadable image.

        Notes
        -----
        Each step (add, re-extract, metadata, remove) is one write: queries
        running meanwhile see the catalogue before or after each step.

        Examples
        --------
        >>> import numpy as np
        >>> from visualsim import ColorHistogramExtractor, Recommender
        >>> red, blue = np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 3), np.uint8)
        >>> red[..., 0] = 230; blue[..., 2] = 230
        >>> rec = Recommender(ColorHistogramExtractor()).fit(
        ...     [("red", red, {"price": 5}), ("blue", blue)], progress=False)
        >>> report = rec.sync([("red", red, {"price": 4})], progress=False)
        >>> report.counts()
        {'added': 0, 'updated': 1, 'removed': 1, 'unchanged': 0, 'failed': 0}
        >>> rec.ids_
        ['red']
        """
        from .sync import sync

        return sync(
            self,
            feed,
            remove_missing=remove_missing,
            dry_run=dry_run,
            id_column=id_column,
            image_column=image_column,
            batch_size=batch_size,
            on_error=on_error,
            progress=progress,
            checkpoint_dir=checkpoint_dir,
        )

    # -- adaptation ---------------------------------------------------------------------
    def adapt(self, label: str | Sequence[str], **options: Any) -> Recommender:
        """Return a copy adapted to this catalogue: a projection learned on ``label``.

        Learns a :class:`~visualsim.adaptation.ProjectionAdapter` (metric
        learning on the frozen vectors) from the items' ``label`` field (a
        category, or a product-group id), or from several fields at once
        (``["articleType", "baseColour"]``, so the type is learned without
        trading the colour away), on a seeded training split. A guard picks
        how much of the learned similarity to use on a validation split that
        holds out whole labels as well as new items, and keeps the original
        vectors where the projection would lose on either or on any field. The
        copy's catalogue, its queries and every later addition go through the
        projection; it is saved and loaded with the catalogue. The before/after
        metrics on the held-out split, per field and on seen and unseen labels,
        are in ``adaptation_report_``.

        Parameters
        ----------
        label
            The metadata field to learn, or a list of fields.
        **options
            ``holdout="both"|"items"|"labels"``, ``test_size``, ``groups``,
            ``seed``, ``adapter``, ``k``: see
            :func:`visualsim.adaptation.adapt_recommender`.
        """
        from .adaptation import adapt_recommender

        new, report = adapt_recommender(self, label, **options)
        new.adaptation_report_ = report
        return new

    def with_transform(self, transform: Any) -> Recommender:
        """Return a copy whose stored vectors, queries and additions go through ``transform``.

        ``transform`` has ``transform(x)``, ``dim``, ``get_config()``,
        ``save(dir)`` and a ``load(dir)`` classmethod, and lives in a
        ``visualsim`` module (so a saved catalogue can rebuild it).
        """
        pipe = self._pipeline
        if pipe.transform is not None:
            raise ConfigError(
                "this recommender is already adapted; adapt the original catalogue instead"
            )
        with self._reading() as store:
            rows = transformed(store, transform)
            declared = dict(store.declared)
            index = self._segments_.index if self._segments_ is not None else self.index
        new = Recommender(
            pipe.get_extractor(),
            empty_like(index),
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
        """Build the extractor's model and run one extraction and one search now.

        The first :meth:`query` otherwise pays for building the model (a
        CNN's graph, its weights read from disk): seconds, against
        milliseconds for the next one. Call this once when an app starts (or
        load with ``Recommender.load(path, warm=True)``) so the first customer
        does not wait. It embeds a small generated image and, when the
        catalogue holds items, searches for its one nearest item; nothing is
        stored. Calling it again does the same small work again.
        ``visualsim serve`` calls it at start-up.

        Returns
        -------
        Recommender
            ``self``, with :attr:`warm_` set to ``True``.

        Examples
        --------
        >>> import numpy as np
        >>> from visualsim import ColorHistogramExtractor, Recommender
        >>> ext = ColorHistogramExtractor()
        >>> rec = Recommender(ext).add_vectors(np.eye(2, ext.dim), ["a", "b"])
        >>> rec.warm_
        False
        >>> rec.warm_up().warm_
        True
        """
        import time

        t0 = time.perf_counter()
        image = np.full((96, 96, 3), 200, dtype=np.uint8)
        image[24:72, 24:72] = (180, 40, 40)  # not blank: some extractors skip background
        vector = self._pipeline.get_extractor().extract([image], progress=False)
        if len(self):
            self.query_vector(vector[0], 1)
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
            Keep only items whose metadata matches: filter-language text
            (``"category == 'shoes' and price < 50"``, see ``docs/filters.md``),
            a dict ``{field: value}`` (equality) or ``{field: [v1, v2]}`` (any
            of), or a function ``metadata -> bool`` (slow: called per item).
            The filter is applied inside the search, so ``k`` items come back
            whenever ``k`` items match.
        exclude
            Ids never to return (one id or a list).
        min_score
            Drop results with a cosine similarity below this.
        distinct
            ``True`` (default): one result per photo. A photo stored twice
            (under two ids, or re-uploaded) is shown once, at its best rank,
            as the duplicate detector (:mod:`visualsim.duplicates`) sees it, and
            the next item takes the freed place; a shopper never sees the same
            picture twice, and it costs a fingerprint comparison among the
            results. A metadata field name (e.g. ``"style_id"``): one result
            per value of that field (items without it are never collapsed).
            ``False``: every item, repeats included.
        box
            Where the product is in ``image``: ``(left, top, right, bottom)`` in
            its pixels (after its EXIF orientation, as
            :func:`~visualsim.images.load_image` returns it; right and bottom
            excluded; integers or floats). Only that region is searched for, as
            if the photo had been cropped to it: a shopper's photo of a product
            in a room, on a person, among other things. ``"locate"``: the box
            :func:`~visualsim.crop.locate_product` finds (a photo with a scene
            behind the product; a packshot on a plain background is searched
            whole). ``None``: the whole image.

        Returns
        -------
        list of Recommendation
            Best first; fewer than ``k`` when fewer items qualify.

        Raises
        ------
        FilterError
            A filter that does not parse, or names a field no item has.
        ConfigError
            A ``box`` that is not four numbers, is empty, or reaches outside the
            image (the message names the box and the image size).

        Examples
        --------
        >>> import numpy as np
        >>> from visualsim import ColorHistogramExtractor, Recommender
        >>> red, blue = np.zeros((32, 32, 3), np.uint8), np.zeros((32, 32, 3), np.uint8)
        >>> red[...], blue[...] = (220, 20, 20), (20, 20, 220)
        >>> rec = Recommender(ColorHistogramExtractor()).fit([red, blue], ids=["red", "blue"])
        >>> photo = np.full((64, 128, 3), (220, 20, 20), np.uint8)
        >>> photo[:, 64:] = (20, 20, 220)  # red on the left, blue on the right
        >>> rec.query(photo, 1, box=(64, 0, 128, 64))[0].id
        'blue'
        """
        k = check_k(k)
        if box is not None:
            image = crop_to_box(image, box)
        q = self._pipeline.embed([image])
        return self._search(q, k, where, exclude, min_score, distinct)[0]

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
        """Find the products in a photo and recommend for each (several products in one photo).

        The regions come from :func:`visualsim.crop.locate_products`: on a
        plain background the separate products (a flat lay of a shirt and
        shoes), in a scene the regions in focus. Each is searched like
        ``query(image, box=region)``, in one batch.

        Parameters
        ----------
        image
            Any image-like (path, bytes, PIL image, array).
        k, where, exclude, min_score, distinct
            As for :meth:`query`, for every region.
        max_regions
            At most this many regions, strongest first.

        Returns
        -------
        list of RegionResults
            One per region (its ``box``, ``score`` and ``results``), strongest
            first; when nothing stands out, one for the whole photo
            (``box`` covering it, ``score`` 1.0).

        Examples
        --------
        >>> import numpy as np
        >>> from visualsim import ColorHistogramExtractor
        >>> def product(rgb):
        ...     im = np.full((64, 64, 3), 255, np.uint8); im[12:52, 12:52] = rgb; return im
        >>> rec = Recommender(ColorHistogramExtractor()).fit(
        ...     [product((200, 30, 30)), product((30, 30, 200))], ["red", "blue"],
        ...     progress=False)
        >>> flat_lay = np.full((100, 200, 3), 255, np.uint8)
        >>> flat_lay[20:80, 10:70] = (200, 30, 30)
        >>> flat_lay[40:90, 120:190] = (30, 30, 200)
        >>> [(r.box, r.results[0].id) for r in rec.query_regions(flat_lay, k=1)]
        [((10, 20, 70, 80), 'red'), ((120, 40, 190, 90), 'blue')]
        """
        k = check_k(k)
        regions, crops = regions_of(image, max_regions)
        found = self._search(self._pipeline.embed(crops), k, where, exclude, min_score, distinct)
        return [
            RegionResults(r.box, r.score, results)
            for r, results in zip(regions, found, strict=True)
        ]

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
        """Return :meth:`query` results for many images, extracted in batches.

        ``boxes``, when given, holds one ``box`` (see :meth:`query`) or ``None``
        (the whole image) per image, in the same order.
        """
        k = check_k(k)
        if boxes is not None:
            images = cropped(images, boxes)
        q = self._pipeline.embed(images, batch_size)
        return self._search(q, k, where, exclude, min_score, distinct)

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
        """Return :meth:`query` results for a vector already extracted.

        ``vector`` may come straight from the extractor (it is reduced when the
        catalogue reduces) or already be in the stored space.
        """
        from .indexes.base import check_vectors

        q = check_vectors(np.asarray(vector, dtype=np.float32).reshape(1, -1), name="query")
        if q.shape[1] != self.dim:
            q = self._pipeline.project(q)
        return self._search(q, k, where, exclude, min_score, distinct)[0]

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
        """Return the ``k`` items most like a catalogue item, never the item itself.

        With ``distinct=True`` (default) never a copy of its photo either, and
        each other photo once; a field name gives one result per value of it,
        the item's own value excluded. See :meth:`query`.
        """
        with self._lock.read():
            q = self._need_store().vector(item_id)[None]
        norm = float(np.linalg.norm(q))
        q = q / norm if norm else q
        return self._search(q, k, where, exclude, min_score, distinct, seed=item_id)[0]

    def find_duplicates(
        self, min_score: float | None = None, *, k: int | None = None
    ) -> list[tuple[Id, Id, float]]:
        """Return pairs of duplicate photos ``(id_a, id_b, score)``, best first.

        The duplicate detector (:mod:`visualsim.duplicates`) decides, not the
        similarity vectors: re-uploads (re-encoded, resized, a few per cent cut
        off, a border added, mirrored) and identical photos under two ids are
        found; different products that merely look alike are not. Candidates
        come through an index, so it scales linearly (a million photos in
        minutes, ``docs/duplicates.md``).

        Parameters
        ----------
        min_score
            The detector's score from which two photos are duplicates (1.0:
            the same pixels). ``None`` uses the calibrated default,
            :data:`visualsim.duplicates.DEFAULT_MIN_SCORE`, measured at precision
            and recall 0.95 or more on real catalogue photos.
        k
            Candidates confirmed per photo (default
            :data:`visualsim.duplicates.CANDIDATES`); raise it when one photo
            may have more copies than that.

        Returns
        -------
        list of tuple
            Each pair once (``id_a`` stored before ``id_b``). Items added as
            vectors have no fingerprint: they pair only with a byte-identical
            photo (same SHA-256).
        """
        if not len(self):
            return []
        with self._reading() as store:
            return duplicate_pairs(store, min_score, k)

    def duplicate_groups(
        self, min_score: float | None = None, *, k: int | None = None
    ) -> list[DuplicateGroup]:
        """Return groups of duplicate photos (connected components of :meth:`find_duplicates`).

        Each :class:`~visualsim.duplicates.DuplicateGroup` has a
        ``representative`` (the member stored first: the one to keep), its
        ``members`` and the lowest ``score`` that joins them. Largest groups
        first; photos with no duplicate are not listed.
        """
        pairs = self.find_duplicates(min_score, k=k)
        if not pairs:
            return []
        with self._reading() as store:
            return duplicate_groups(store, pairs)

    def _search(
        self,
        queries: np.ndarray,
        k: int,
        where: Where | None,
        exclude: Iterable[Id] | Id | None,
        min_score: float | None,
        distinct: Distinct = True,
        seed: Id | None = None,
    ) -> list[list[Recommendation]]:
        """Search under the read lock (:func:`~visualsim.querying.plan` and ``run``)."""
        p = plan(k, where, exclude, min_score, distinct, seed)
        with self._reading() as store:
            assert self._segments_ is not None
            return run_plan(store, self._segments_, self._version, queries, p, self.resolve_source)

    # -- sources of vectors computed elsewhere ------------------------------------------
    @classmethod
    def from_shards(
        cls, path: str | os.PathLike[str], index: Any = None, *, verify: bool = True
    ) -> Recommender:
        """Build a recommender from vector shards written by
        :func:`visualsim.distributed.extract_to_shards` (e.g. on a Ray cluster).

        The extractor is rebuilt from the shards' manifest, so queries are
        embedded the same way as the catalogue.
        """
        return cls(shard_extractor(path), index).add_shards(path, verify=verify)

    def add_shards(self, path: str | os.PathLike[str], *, verify: bool = True) -> Recommender:
        """Add the vectors, ids and metadata of a shard folder; return ``self``.

        Refused when the shards were made by a different extractor.
        """
        from .shards import load_into

        load_into(self, path, verify=verify)
        return self

    # -- persistence --------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write the catalogue to a folder and return its path.

        See :mod:`visualsim.catalog` for the layout. Saving a catalogue back
        where it was loaded from (``overwrite=True``) writes only what changed:
        new rows, tombstones and the manifest. ``overwrite=True`` replaces
        only a visualsim catalogue (any other folder is refused, untouched),
        and the swap is atomic: a reader finds the old or the new catalogue,
        never neither.
        """
        with self._reading() as store:
            assert self._segments_ is not None
            self._catalog_state = save_state(
                self._pipeline,
                store,
                self._segments_,
                path,
                overwrite=overwrite,
                image_root=self.image_root_,
                failed=[asdict(f) for f in self.failed_],
                saved=self._catalog_state,
            )
        return Path(path)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        *,
        index: Any = None,
        extractor: Any = None,
        mmap: bool = False,
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
            Rebuild with another index (a name or an index object) from the
            stored vectors instead of loading the saved one.
        extractor
            Use this extractor instead of rebuilding the saved one. It must embed
            the way the catalogue did: a config that differs in what changes the
            vectors (resize mode, weights, backbone) is a ``ConfigError`` listing
            the differences, unless ``allow_mismatch=True`` (then a warning).
        mmap
            Memory-map the stored vectors instead of reading them into memory
            (when the catalogue holds one chunk of vectors).
        verify
            Check every file's checksum and that the index agrees with the vectors.
        allow_mismatch
            Accept an ``extractor`` whose config differs from the saved one (warns).
        milvus_uri, milvus_token_env
            Where a Milvus catalogue connects and the name of the environment
            variable holding its token. A catalogue never chooses these itself:
            one that records a server or a ``token_env`` is refused unless they
            are given here (or by :func:`~visualsim.indexes.milvus.milvus_connection`
            or ``VISUALSIM_MILVUS_URI``/``VISUALSIM_MILVUS_TOKEN_ENV``), and then
            these replace the recorded ones. Default: the Milvus Lite database
            saved beside the catalogue, no token.
        warm
            Also call :meth:`warm_up`, so the first query does not pay for
            building the model.

        Raises
        ------
        CatalogError
            Naming the file and the problem (missing, tampered, inconsistent,
            a Milvus server or token it may not choose).
        FormatVersionError
            For a catalogue from a newer visualsim.
        """
        state = load_state(
            path,
            index,
            milvus_uri=milvus_uri,
            milvus_token_env=milvus_token_env,
            extractor=extractor,
            mmap=mmap,
            verify=verify,
            allow_mismatch=allow_mismatch,
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
