"""Exact search with scikit-learn's ``NearestNeighbors`` (brute force or a tree).

scikit-learn is imported inside the methods that need it. The model is never
pickled: ``save`` stores the vectors and ``load`` refits.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .. import persistence as P
from ..errors import CatalogError, ConfigError
from ..validation import check_choice, check_int
from .base import BaseIndex, load_array, register_index, save_array

_ALGORITHMS = ("brute", "ball_tree", "kd_tree")
_VECTORS_FILE = "vectors.npy"


@register_index("sklearn")
class SklearnIndex(BaseIndex):
    """Exact search with :class:`sklearn.neighbors.NearestNeighbors`.

    The model runs on euclidean distance, which on unit vectors ranks exactly
    as cosine similarity (``cos = 1 - d**2 / 2``); the returned scores are then
    recomputed as float32 dot products so they match the FAISS backends.
    The model is refitted lazily, at the first search after ``add``/``remove``.

    Parameters
    ----------
    algorithm
        ``"brute"`` (one matrix product per batch; the right choice for image
        embeddings), ``"ball_tree"`` or ``"kd_tree"`` (trees only pay off in
        low dimensions, say under 20; in 2048-d they are slower than brute).
    leaf_size
        Leaf size of the trees: smaller leaves, deeper trees, more memory;
        ignored by ``"brute"``.
    n_jobs
        Parallel jobs for queries (``None``: one, ``-1``: all cores).
    dim
        Dimension, if known before the first ``add``.

    Notes
    -----
    Memory: a float32 copy of the vectors (``4 * dim`` bytes each), plus the
    model's own (float64 for the trees).
    """

    is_exact = True
    retrains = False
    filters_natively = False

    def __init__(
        self,
        *,
        algorithm: str = "brute",
        leaf_size: int = 30,
        n_jobs: int | None = None,
        dim: int | None = None,
    ) -> None:
        check_choice("algorithm", algorithm, _ALGORITHMS)
        check_int("leaf_size", leaf_size, minimum=1, maximum=1 << 20)
        check_int("n_jobs", n_jobs, minimum=-(1 << 10), maximum=1 << 10, allow_none=True)
        if n_jobs == 0:
            raise ConfigError("n_jobs must not be 0; pass None (one job), a count, or -1 (all)")
        super().__init__(dim=dim)
        self.algorithm = algorithm
        self.leaf_size = leaf_size
        self.n_jobs = n_jobs
        self.vectors_ = np.empty((0, dim or 0), dtype=np.float32)
        self.labels_ = np.empty(0, dtype=np.int64)
        self.model_: Any = None

    def _add(self, x: np.ndarray, labels: np.ndarray) -> None:
        if not len(self.vectors_):
            self.vectors_ = np.empty((0, x.shape[1]), dtype=np.float32)
        self.vectors_ = np.concatenate([self.vectors_, x])
        self.labels_ = np.concatenate([self.labels_, labels])
        self.model_ = None

    def _remove(self, labels: np.ndarray) -> None:
        keep = ~np.isin(self.labels_, labels)
        self.vectors_, self.labels_ = self.vectors_[keep], self.labels_[keep]
        self.model_ = None

    def _is_ready(self) -> bool:
        return self.model_ is not None

    def _prepare(self) -> None:
        from sklearn.neighbors import NearestNeighbors

        self.model_ = NearestNeighbors(
            algorithm=self.algorithm,
            leaf_size=self.leaf_size,
            metric="euclidean",
            n_jobs=self.n_jobs,
        ).fit(self.vectors_)

    def _search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        rows = self.model_.kneighbors(q, n_neighbors=k, return_distance=False)
        scores = np.einsum("qd,qkd->qk", q, self.vectors_[rows], dtype=np.float32)
        return scores, self.labels_[rows]

    def _save_state(self, directory: Path) -> dict[str, Any]:
        save_array(directory / _VECTORS_FILE, self.vectors_)
        return {}

    def _stored_rows(self, labels: np.ndarray) -> np.ndarray | None:
        if not len(labels):
            return None
        return np.asarray(self.vectors_[np.searchsorted(self.labels_, labels)])

    def _load_state(self, directory: Path, state: Mapping[str, Any]) -> None:
        file = P.safe_child(directory, _VECTORS_FILE)
        shape = (len(self), self.dim) if len(self) else (0, None)
        x = load_array(file, dtypes=("float32",), shape=shape, finite=True)
        if len(x):
            norms = np.linalg.norm(x.astype(np.float64), axis=1)
            bad = np.flatnonzero(np.abs(norms - 1.0) > 1e-3)
            if len(bad):
                raise CatalogError(
                    f"{file} holds row(s) {bad[:5].tolist()} that are not unit vectors (zero "
                    "or unnormalised: every score would be wrong); the index is damaged"
                )
        self.vectors_ = x
        self.labels_ = self._ids.labels
        self.model_ = None


__all__ = ["SklearnIndex"]
