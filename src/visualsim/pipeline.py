"""Extractor → reducer → transform: how an image becomes a stored vector.

A :class:`Pipeline` holds a catalogue's three stages: the extractor (built on
first use from its spec: an object, a registered name, or ``None`` for
:func:`~visualsim.auto_extractor`'s choice), the optional PCA reducer (fitted
on the first vectors stored) and the optional learned transform (see
:meth:`visualsim.Recommender.adapt`). :func:`load_state` and
:func:`save_state` move the pipeline and its store between memory and a
catalogue folder (:mod:`visualsim.catalog`). Nothing here imports the
recommender.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import DimensionMismatch, NotFittedError

if TYPE_CHECKING:
    from .catalog import CatalogState, SavedState
    from .search import Segments
    from .store import Store

logger = logging.getLogger(__name__)


def project(vectors: np.ndarray, reducer: Any, transform: Any, *, fit: bool = False) -> np.ndarray:
    """Map extractor vectors to the stored space (reduced, then transformed).

    An unfitted ``reducer`` is fitted on ``vectors`` when ``fit`` (the first
    vectors a catalogue stores); otherwise it is a ``NotFittedError``.
    """
    if reducer is not None and len(vectors):
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
        vectors = np.asarray(reducer.transform(vectors), dtype=np.float32)
    if transform is not None and len(vectors):
        vectors = np.asarray(transform.transform(vectors), dtype=np.float32)
    return vectors


class Pipeline:
    """The stages from an image to a stored vector; each built on first use.

    ``extractor`` and ``reduce_dim`` are the specs the recommender was given;
    :attr:`extractor`, :attr:`reducer` and :attr:`transform` hold the built stages.
    """

    def __init__(self, extractor: Any = None, reduce_dim: Any = None) -> None:
        self.extractor_spec = extractor
        self.reduce_dim = reduce_dim
        self.extractor: Any = None
        self.reducer: Any = None
        self.transform: Any = None

    @classmethod
    def of(cls, extractor: Any, reducer: Any, transform: Any) -> Pipeline:
        """Return a pipeline of stages already built (a loaded or adapted catalogue)."""
        new = cls(extractor, reducer)
        new.extractor, new.reducer, new.transform = extractor, reducer, transform
        return new

    def get_extractor(self) -> Any:
        """Return the extractor, building it from its spec the first time."""
        if self.extractor is None:
            ext = self.extractor_spec
            if ext is None:
                from .extractors.auto import auto_extractor

                ext, description = auto_extractor()
                logger.info("extractor: %s", description)
            elif isinstance(ext, str):
                from .extractors.base import make_extractor

                ext = make_extractor(ext)
            self.extractor = ext
        return self.extractor

    def get_reducer(self) -> Any:
        """Return the reducer (``None`` without ``reduce_dim``), a fresh one the first time."""
        if self.reducer is None and self.reduce_dim is not None:
            from .reduction import PCAReducer

            spec = self.reduce_dim
            if isinstance(spec, PCAReducer):
                # a fresh copy: fit() must not inherit a reducer fitted elsewhere
                self.reducer = PCAReducer.from_config(spec.get_config())
            else:
                self.reducer = PCAReducer(int(spec))
        return self.reducer

    def project(self, vectors: np.ndarray, *, fit: bool = False) -> np.ndarray:
        """Map extractor vectors to the stored space (:func:`project`)."""
        return project(vectors, self.get_reducer(), self.transform, fit=fit)

    def embed(self, images: Iterable[Any], batch_size: int | None = None) -> np.ndarray:
        """Query images to vectors in the stored space (extractor, reducer, transform)."""
        vectors = self.get_extractor().extract(images, batch_size=batch_size, progress=False)
        return self.project(vectors)

    def as_query(self, vector: Any, dim: int) -> np.ndarray:
        """One query, ``(1, dim)``: checked, and projected when it is an extractor's vector."""
        from .indexes.base import check_vectors

        q = check_vectors(np.asarray(vector, dtype=np.float32).reshape(1, -1), name="query")
        return q if q.shape[1] == dim else self.project(q)

    def sample_vector(self) -> np.ndarray:
        """The extractor's vector of a small generated image (the model is built meanwhile)."""
        image = np.full((96, 96, 3), 200, dtype=np.uint8)
        image[24:72, 24:72] = (180, 40, 40)  # not blank: some extractors skip background
        return np.asarray(self.get_extractor().extract([image], progress=False)[0])

    @property
    def dim(self) -> int:
        """Length of the vectors this pipeline stores."""
        if self.transform is not None:
            return int(self.transform.dim)
        if self.reduce_dim is not None:
            return int(self.get_reducer().dim)
        return int(self.get_extractor().dim)

    @property
    def name(self) -> str:
        """The extractor's name, without building it."""
        ext = self.extractor if self.extractor is not None else self.extractor_spec
        return str(getattr(ext, "name", None) or (ext if isinstance(ext, str) else "resnet50"))


def load_state(
    path: str | os.PathLike[str],
    index: Any,
    milvus_uri: str | os.PathLike[str] | None,
    milvus_token_env: str | None,
    extractor: Any,
    mmap: bool | None,
    verify: bool,
    allow_mismatch: bool,
) -> CatalogState:
    """Read a catalogue folder (:func:`visualsim.catalog.load_catalog`).

    ``index`` (a name or object, or ``None`` for the saved one) is made fresh;
    only the saved index's Milvus connection goes through ``milvus_uri`` and
    ``milvus_token_env`` (:func:`~visualsim.indexes.milvus.loading_saved`). The
    other arguments are :meth:`visualsim.Recommender.load`'s.
    """
    from .catalog import load_catalog
    from .indexes.milvus import loading_saved
    from .querying import fresh_index

    scope = (
        loading_saved(str(path), uri=milvus_uri, token_env=milvus_token_env)
        if index is None  # a given index is the caller's, not the file's
        else contextlib.nullcontext()
    )
    with scope:
        fresh = None if index is None else fresh_index(index)
        return load_catalog(
            Path(path),
            index=fresh,
            extractor=extractor,
            mmap=mmap,
            verify=verify,
            allow_mismatch=allow_mismatch,
        )


def save_state(
    pipeline: Pipeline,
    store: Store,
    segments: Segments,
    path: str | os.PathLike[str],
    *,
    overwrite: bool,
    image_root: Path | None,
    failed: list[dict[str, Any]],
    saved: SavedState | None,
    on_conflict: str = "error",
) -> SavedState:
    """Write a catalogue folder (:func:`visualsim.catalog.save_catalog`); return what was saved.

    ``saved`` is what the recommender knows of the folder it was loaded from or last
    saved to; ``on_conflict`` says what a save onto that folder does when another
    writer saved it since (``"error"``: :class:`~visualsim.errors.CatalogConflictError`).
    """
    from .catalog import CatalogState, save_catalog

    state = CatalogState(
        extractor=pipeline.get_extractor(),
        store=store,
        segments=segments,
        reducer=pipeline.get_reducer(),
        transform=pipeline.transform,
        image_root=image_root,
        failed=failed,
        saved=saved,
    )
    return save_catalog(state, Path(path), overwrite=overwrite, on_conflict=on_conflict)


__all__ = ["Pipeline", "load_state", "project", "save_state"]
