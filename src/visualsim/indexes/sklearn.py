"""Exact search with scikit-learn's ``NearestNeighbors`` (brute force or a tree).

scikit-learn is imported inside the methods that need it. The model is never
pickled: ``save`` stores the vectors and ``load`` refits.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CatalogError, ConfigError
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

    exact = True

    def __init__(
        self,
        *,
        algorithm: str = "brute",
        leaf_size: int = 30,
        n_jobs: int | None = None,
        dim: int | None = None,
    ) -> None:
        if algorithm not in _ALGORITHMS:
            raise ConfigError(
                f"algorithm must be one of {', '.join(map(repr, _ALGORITHMS))}, got {algorithm!r}"
            )
        if isinstance(leaf_size, bool) or not isinstance(leaf_size, int) or leaf_size < 1:
            raise ConfigError(f"leaf_size must be a positive integer, got {leaf_size!r}")
        if n_jobs is not None and (isinstance(n_jobs, bool) or not isinstance(n_jobs, int)):
            raise ConfigError(f"n_jobs must be an integer or None, got {n_jobs!r}")
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

    def _load_state(self, directory: Path, state: Mapping[str, Any]) -> None:
        x = load_array(directory / _VECTORS_FILE)
        if x.dtype != np.float32 or x.ndim != 2 or len(x) != len(self):
            raise CatalogError(f"{directory / _VECTORS_FILE} does not match the stored ids")
        if len(x) and x.shape[1] != self.dim:
            raise CatalogError(f"{directory / _VECTORS_FILE} has dimension {x.shape[1]}")
        self.vectors_ = x
        self.labels_ = self._ids.labels
        self.model_ = None


__all__ = ["SklearnIndex"]
