"""Smaller stored vectors: PCA reduction and float16 storage.

Two ways to spend less memory per catalogue item, each with a recall cost
measured in ``docs/scale-one-machine.md``:

* :class:`PCAReducer` projects vectors onto their top principal components
  (2048 → 256 dimensions is 8x smaller) and L2-normalises the result, so
  cosine scores keep their meaning. It is fitted on a sample, saved as plain
  ``.npy`` files beside a JSON config, and applied to queries the same way.
* :func:`to_storage` / :func:`from_storage` keep the stored copy of the vectors
  in float16 (half the bytes). Search indexes are still fed float32 (FAISS
  only takes float32), so float16 halves the stored copy, not the index.

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> x = rng.standard_normal((500, 32)).astype(np.float32)
>>> reducer = PCAReducer(8).fit(x)
>>> reducer.transform(x).shape
(500, 8)
>>> reducer.transform(x[0]).shape  # one row in, one row out (still 2-d)
(1, 8)
>>> from_storage(to_storage(x, "float16")).dtype
dtype('float32')
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Union

import numpy as np
from numpy.typing import ArrayLike

from . import persistence as P
from .errors import (
    CatalogError,
    ConfigError,
    DimensionMismatch,
    InvalidVectorsError,
    NotFittedError,
)
from .validation import check_bool, check_int, check_rows

PathLike = Union[str, "os.PathLike[str]"]
StorageDtype = Literal["float32", "float16"]

STORAGE_DTYPES: tuple[str, ...] = ("float32", "float16")
"""The dtypes :func:`to_storage` accepts for the stored copy of the vectors."""

_KIND = "reducer.pca"
FORMAT_VERSION = P.format_of(_KIND).version
"""Version of the directory layout written by :meth:`PCAReducer.save`."""

CONFIG_NAME = P.format_of(_KIND).name
_CHUNK_ROWS = 65_536
_FLOAT16_MAX = float(np.finfo(np.float16).max)


# --------------------------------------------------------------------------- storage


def to_storage(vectors: ArrayLike, dtype: str = "float32") -> np.ndarray:
    """Return ``vectors`` as a C-contiguous array of the storage ``dtype``.

    ``"float16"`` halves the bytes of the stored copy (``2 * dim`` bytes per
    item instead of ``4 * dim``) at a cosine error below ``1e-3`` for unit
    vectors. It does not shrink a search index: indexes are fed float32 (see
    :func:`from_storage`), because FAISS computes in float32 only.

    Parameters
    ----------
    vectors
        Finite numbers, any shape (usually ``(n, dim)`` unit rows).
    dtype
        ``"float32"`` (default, exact) or ``"float16"``.

    Raises
    ------
    ConfigError
        ``dtype`` is not one of :data:`STORAGE_DTYPES`.
    InvalidVectorsError
        NaN or infinite values, or values too large for float16 (above 65504).

    Examples
    --------
    >>> to_storage([[0.6, 0.8]], "float16")
    array([[0.6, 0.8]], dtype=float16)
    """
    if dtype not in STORAGE_DTYPES:
        raise ConfigError(f"storage dtype must be one of {STORAGE_DTYPES}, got {dtype!r}")
    arr = np.asarray(vectors)
    if arr.dtype.kind not in "biuf":
        raise InvalidVectorsError(f"vectors must be real numbers, got dtype {arr.dtype}")
    if not np.isfinite(arr).all():
        raise InvalidVectorsError("vectors contain NaN or infinite values; drop or repair them")
    if dtype == "float16" and arr.size and float(np.abs(arr).max()) > _FLOAT16_MAX:
        raise InvalidVectorsError(
            f"vectors hold values above {_FLOAT16_MAX:g}, the float16 maximum; "
            "L2-normalise them first or store float32"
        )
    return np.ascontiguousarray(arr, dtype=np.dtype(dtype))


def from_storage(stored: ArrayLike) -> np.ndarray:
    """Return stored vectors (float16 or float32) as C-contiguous float32, what indexes take.

    Examples
    --------
    >>> from_storage(np.ones((1, 2), dtype=np.float16)).dtype
    dtype('float32')
    """
    return np.ascontiguousarray(stored, dtype=np.float32)


# --------------------------------------------------------------------------- PCA


def _check_finite(chunk: np.ndarray, *, name: str, offset: int = 0) -> None:
    finite = np.isfinite(chunk).all(axis=1)
    if not finite.all():
        rows = (np.flatnonzero(~finite)[:5] + offset).tolist()
        raise InvalidVectorsError(
            f"{name} contain NaN or infinite values in row(s) {rows}; drop or repair those rows"
        )


class PCAReducer:
    """Project vectors onto their top ``dim`` principal components, then L2-normalise.

    Fitted on a random sample of at most ``sample_size`` rows: the sample's
    mean is subtracted, the covariance is formed in float64 and
    diagonalised with :func:`numpy.linalg.eigh`. For ``2048``-d features and
    the default 20,000 rows that is about 5 s and 350 MB, and it is exact
    and deterministic (sign fixed so each component's largest loading is
    positive). scikit-learn's ``PCA`` gives the same subspace; it is not
    used because its full SVD of the sample is slower than the eigenproblem
    of a ``dim x dim`` covariance, its randomized solver is approximate, and
    the learned state here is four plain arrays saved without pickle.

    ``transform`` returns unit rows, so the cosine of two reduced vectors is
    the cosine of their centred projections. On data whose variance lives in
    a few hundred directions (CNN features) neighbours survive the
    reduction; the recall cost is measured in ``docs/scale-one-machine.md``.

    Parameters
    ----------
    dim
        Output dimension; must be smaller than the input dimension and at
        most the number of sample rows. Fewer: less memory (``4 * dim``
        bytes per float32 item) and faster search, lower recall.
    whiten
        Divide each component by its standard deviation before
        normalising, so every kept direction counts equally. It helps only
        when all ``dim`` directions carry signal; kept noise directions are
        amplified and recall against the original space drops.
    rotate
        Apply a seeded random rotation after the projection (default).
        Cosines are unchanged; what changes is that every output coordinate
        carries a similar share of the variance instead of the first few
        carrying most of it. Product quantisation (``IVFPQIndex``) splits
        coordinates into groups and needs that balance: on the 200,000-item
        benchmark IVF-PQ recall@10 after PCA without rotation fell to 0.64.
        FAISS calls this ``PCAR``.
    sample_size
        Rows the fit uses at most (a seeded random sample when there are
        more). More: a more accurate subspace, ``8 * d**2 + 8 * d *
        sample_size`` bytes and time linear in it.
    seed
        Seed of the sample choice.

    Attributes
    ----------
    mean_ : numpy.ndarray
        ``(n_features_in_,)`` float32 mean of the sample.
    components_ : numpy.ndarray
        ``(dim, n_features_in_)`` float32, orthonormal rows, by decreasing variance.
    explained_variance_ : numpy.ndarray
        ``(dim,)`` float64 variance of the sample along each component.
    explained_variance_ratio_ : numpy.ndarray
        ``(dim,)`` share of the sample's total variance per component; its sum
        is the share kept.
    scale_ : numpy.ndarray or None
        ``(dim,)`` float32 ``1 / std`` per component with ``whiten``, else ``None``.
    rotation_ : numpy.ndarray or None
        ``(dim, dim)`` float32 orthogonal matrix applied last with ``rotate``,
        else ``None``. Output coordinates are ``components_`` coordinates
        times ``rotation_``.
    n_features_in_ : int
        Input dimension.
    n_samples_seen_ : int
        Rows the fit used.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(1).standard_normal((200, 16))
    >>> reducer = PCAReducer(4, sample_size=100).fit(x)
    >>> reducer.n_samples_seen_, reducer.components_.shape
    (100, (4, 16))
    >>> bool(np.allclose(np.linalg.norm(reducer.transform(x), axis=1), 1.0))
    True
    """

    def __init__(
        self,
        dim: int = 256,
        *,
        whiten: bool = False,
        rotate: bool = True,
        sample_size: int = 20_000,
        seed: int = 0,
    ) -> None:
        self.dim = check_int("dim", dim, minimum=1, maximum=1 << 20)
        self.sample_size = check_int("sample_size", sample_size, minimum=2, maximum=1 << 40)
        self.seed = check_int("seed", seed, minimum=0, maximum=2**63 - 1)
        self.whiten = check_bool("whiten", whiten)
        self.rotate = check_bool("rotate", rotate)
        if self.dim > self.sample_size:
            raise ConfigError(
                f"dim={self.dim} is larger than sample_size={self.sample_size}; a sample "
                "of n rows has at most n principal components. Raise sample_size"
            )
        self.mean_: np.ndarray | None = None
        self.components_: np.ndarray | None = None
        self.explained_variance_: np.ndarray | None = None
        self.explained_variance_ratio_: np.ndarray | None = None
        self.scale_: np.ndarray | None = None
        self.rotation_: np.ndarray | None = None
        self.n_features_in_: int | None = None
        self.n_samples_seen_: int | None = None

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({params})"

    # ----------------------------------------------------------------- config

    def get_config(self) -> dict[str, Any]:
        """Return the constructor parameters, JSON-safe, as :meth:`from_config` takes them."""
        return {
            "dim": self.dim,
            "whiten": self.whiten,
            "rotate": self.rotate,
            "sample_size": self.sample_size,
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> PCAReducer:
        """Return a new, unfitted reducer from :meth:`get_config` output.

        Raises
        ------
        ConfigError
            Unknown keys or invalid values.
        """
        unknown = set(config) - {"dim", "whiten", "rotate", "sample_size", "seed"}
        if unknown:
            raise ConfigError(
                f"unknown PCAReducer parameter(s) {sorted(unknown)}; "
                "expected dim, whiten, rotate, sample_size, seed"
            )
        return cls(**dict(config))

    # ----------------------------------------------------------------- fitting

    @property
    def is_fitted(self) -> bool:
        """Whether :meth:`fit` (or :meth:`load`) has run."""
        return self.components_ is not None

    def fit(self, x: ArrayLike) -> PCAReducer:
        """Learn the mean and top components from (a sample of) ``x``; return ``self``.

        Parameters
        ----------
        x
            ``(n, d)`` real array; a :class:`numpy.memmap` works and only the
            sampled rows are read.

        Raises
        ------
        InvalidVectorsError
            Not 2-d numbers, NaN/inf in the sample, or a sample with no variance.
        DimensionMismatch
            ``dim`` is not smaller than ``d``.
        ConfigError
            Fewer sample rows than ``dim``.
        """
        arr = check_rows(x, name="vectors")
        n, d = arr.shape
        if self.dim >= d:
            raise DimensionMismatch(
                f"cannot reduce {d}-dimensional vectors to dim={self.dim}; "
                f"dim must be smaller than {d}"
            )
        if n > self.sample_size:
            rows = np.sort(
                np.random.default_rng(self.seed).choice(n, self.sample_size, replace=False)
            )
            sample = np.asarray(arr[rows], dtype=np.float64)
        else:
            sample = np.array(arr, dtype=np.float64)
        if len(sample) < self.dim:
            raise ConfigError(
                f"PCA to dim={self.dim} needs at least {self.dim} rows, got {len(sample)}; "
                "fit on more vectors or lower dim"
            )
        _check_finite(sample, name="vectors")
        mean = sample.mean(axis=0)
        sample -= mean
        cov = sample.T @ sample
        cov /= max(len(sample) - 1, 1)
        del sample
        total = float(np.trace(cov))
        if not total > 0.0:
            raise InvalidVectorsError(
                "the sample has no variance (all rows equal); PCA needs varied vectors"
            )
        values, vectors = np.linalg.eigh(cov)
        order = np.argsort(values)[::-1][: self.dim]
        values = np.clip(values[order], 0.0, None)
        comps = vectors[:, order].T
        signs = np.sign(comps[np.arange(self.dim), np.abs(comps).argmax(axis=1)])
        comps *= np.where(signs == 0, 1.0, signs)[:, None]

        self.n_features_in_ = int(d)
        self.n_samples_seen_ = int(n if n <= self.sample_size else self.sample_size)
        self.mean_ = mean.astype(np.float32)
        self.components_ = np.ascontiguousarray(comps, dtype=np.float32)
        self.explained_variance_ = values
        self.explained_variance_ratio_ = values / total
        self.scale_ = self._scale(values) if self.whiten else None
        self.rotation_ = self._rotation() if self.rotate else None
        return self

    def _rotation(self) -> np.ndarray:
        """A seeded random orthogonal ``(dim, dim)`` matrix (QR of a Gaussian, signs fixed)."""
        gauss = np.random.default_rng([self.seed, 1]).standard_normal((self.dim, self.dim))
        q, r = np.linalg.qr(gauss)
        q *= np.where(np.diag(r) < 0, -1.0, 1.0)
        return np.ascontiguousarray(q, dtype=np.float32)

    @staticmethod
    def _scale(values: np.ndarray) -> np.ndarray:
        floor = max(float(values.max()) * 1e-12, np.finfo(np.float64).tiny)
        return (1.0 / np.sqrt(np.maximum(values, floor))).astype(np.float32)

    def fit_transform(self, x: ArrayLike) -> np.ndarray:
        """Fit on (a sample of) ``x`` and return ``transform(x)``."""
        return self.fit(x).transform(x)

    # ----------------------------------------------------------------- transforming

    def transform(self, x: ArrayLike, *, normalize: bool = True) -> np.ndarray:
        """Return ``x`` projected to ``(n, dim)`` float32 rows of unit length.

        Parameters
        ----------
        x
            ``(n, n_features_in_)`` real array, or one 1-d row (a query),
            which gives a ``(1, dim)`` result. Large inputs (memmaps
            included) are processed in chunks of 65,536 rows.
        normalize
            L2-normalise the rows (default). ``False`` returns the raw
            (centred, projected, whitened if configured) coordinates.

        Raises
        ------
        NotFittedError
            Before :meth:`fit` or :meth:`load`.
        InvalidVectorsError
            Not numbers, NaN/inf, or (with ``normalize``) a row equal to
            the mean, whose projection has no direction.
        DimensionMismatch
            Rows of another length than the fitted ``n_features_in_``.
        """
        if self.components_ is None or self.mean_ is None:
            raise NotFittedError("PCAReducer is not fitted; call fit(vectors) or load(directory)")
        arr = check_rows(x, name="vectors")
        if arr.shape[1] != self.n_features_in_:
            raise DimensionMismatch(
                f"vectors have dimension {arr.shape[1]}, but the reducer was fitted on "
                f"{self.n_features_in_}-dimensional vectors; use the same extractor"
            )
        out = np.empty((len(arr), self.dim), dtype=np.float32)
        weights = self.components_.T
        for start in range(0, len(arr), _CHUNK_ROWS):
            chunk = np.asarray(arr[start : start + _CHUNK_ROWS], dtype=np.float32)
            _check_finite(chunk, name="vectors", offset=start)
            y = (chunk - self.mean_) @ weights
            if self.scale_ is not None:
                y *= self.scale_
            if self.rotation_ is not None:
                y = y @ self.rotation_
            if normalize:
                norms = np.linalg.norm(y, axis=1, keepdims=True)
                zero = np.flatnonzero(norms[:, 0] == 0)
                if len(zero):
                    raise InvalidVectorsError(
                        f"vectors row(s) {(zero[:5] + start).tolist()} project to zero "
                        "(they equal the fitted mean) and have no direction; drop them"
                    )
                y /= norms
            out[start : start + len(chunk)] = y
        return out

    # ----------------------------------------------------------------- persistence

    def _arrays(self) -> dict[str, np.ndarray]:
        arrays = {
            "mean": self.mean_,
            "components": self.components_,
            "explained_variance": self.explained_variance_,
            "explained_variance_ratio": self.explained_variance_ratio_,
            "scale": self.scale_,
            "rotation": self.rotation_,
        }
        return {name: a for name, a in arrays.items() if a is not None}

    def save(self, directory: PathLike) -> None:
        """Write the fitted reducer to the folder ``directory``, atomically.

        The folder holds ``reducer.json`` (format, versions, config, shapes
        and the SHA-256 of every file) and one ``.npy`` per learned array,
        written without pickle into a temporary sibling that replaces
        ``directory`` in one step. An existing saved reducer (or an empty
        folder) at ``directory`` is replaced; anything else is refused.

        Raises
        ------
        NotFittedError
            Before :meth:`fit`.
        CatalogError
            ``directory`` exists and is not a saved reducer or empty folder.
        """
        if not self.is_fitted:
            raise NotFittedError("PCAReducer is not fitted; nothing to save")
        with P.atomic_dir(Path(directory), kind=_KIND) as tmp:
            entries: dict[str, dict[str, Any]] = {}
            for name, array in self._arrays().items():
                file = tmp / f"{name}.npy"
                P.write_npy(file, array)
                entries[name] = {
                    "file": file.name,
                    "shape": list(array.shape),
                    "dtype": str(array.dtype),
                    "sha256": P.sha256_file(file),
                }
            P.write_manifest(
                tmp,
                _KIND,
                {
                    "config": self.get_config(),
                    "n_features_in": self.n_features_in_,
                    "n_samples_seen": self.n_samples_seen_,
                    "arrays": entries,
                },
                files={e["file"]: e["sha256"] for e in entries.values()},
            )

    @classmethod
    def load(cls, directory: PathLike) -> PCAReducer:
        """Return the fitted reducer saved in ``directory`` by :meth:`save`.

        Every field is checked (type and range) and every array's header
        (dtype, shape) before it is read; nothing outside the folder is opened.

        Raises
        ------
        CatalogError
            Missing or unreadable files, a checksum or shape that does not
            match, a field of the wrong type or out of range, or non-finite
            values.
        FormatVersionError
            Written by a newer format version.
        """
        path = Path(directory)
        if not os.path.lexists(path / CONFIG_NAME):
            raise CatalogError(f"{path / CONFIG_NAME} is missing: {path} is not a saved reducer")
        manifest = P.read_manifest(
            path,
            _KIND,
            required=("config", "n_features_in", "n_samples_seen", "arrays"),
            upgrade=_files_from_arrays,
        )
        where = str(path / CONFIG_NAME)
        config = P.field_dict(where, "config", manifest["config"])
        try:
            reducer = cls.from_config(config)
        except (ConfigError, TypeError) as exc:
            raise CatalogError(f"{where}: field 'config' is not valid: {exc}") from None
        d = P.field_int(
            where, "n_features_in", manifest["n_features_in"], minimum=1, maximum=P.MAX_DIM
        )
        seen = P.field_int(where, "n_samples_seen", manifest["n_samples_seen"], minimum=1)
        assert d is not None and seen is not None
        k = reducer.dim
        if k > d:
            raise CatalogError(f"{where}: dim {k} is more components than the {d} features")
        expected: dict[str, tuple[int, ...]] = {
            "mean": (d,),
            "components": (k, d),
            "explained_variance": (k,),
            "explained_variance_ratio": (k,),
        }
        if reducer.whiten:
            expected["scale"] = (k,)
        if reducer.rotate:
            expected["rotation"] = (k, k)
        entries = P.field_dict(where, "arrays", manifest["arrays"])
        arrays: dict[str, np.ndarray] = {}
        for name, shape in expected.items():
            entry = P.field_dict(where, f"arrays.{name}", entries.get(name))
            rel = P.field_str(where, f"arrays.{name}.file", entry.get("file"), max_len=255)
            if rel not in manifest["files"]:
                raise CatalogError(f"{where}: {rel!r} is not among the checksummed files")
            arrays[name] = P.load_npy(
                P.safe_child(path, rel), dtypes=("float32", "float64"), shape=shape, finite=True
            )
        reducer.n_features_in_, reducer.n_samples_seen_ = d, seen
        reducer.mean_ = arrays["mean"].astype(np.float32, copy=False)
        reducer.components_ = arrays["components"].astype(np.float32, copy=False)
        reducer.explained_variance_ = arrays["explained_variance"]
        reducer.explained_variance_ratio_ = arrays["explained_variance_ratio"]
        reducer.scale_ = arrays["scale"].astype(np.float32) if reducer.whiten else None
        reducer.rotation_ = arrays["rotation"].astype(np.float32) if reducer.rotate else None
        return reducer


def _files_from_arrays(manifest: dict[str, Any]) -> dict[str, Any]:
    """Fill ``files`` of a reducer saved before it was written (checksums were per array)."""
    if "files" not in manifest and isinstance(manifest.get("arrays"), dict):
        files: dict[str, Any] = {}
        for entry in manifest["arrays"].values():
            if isinstance(entry, dict) and isinstance(entry.get("file"), str):
                files[entry["file"]] = entry.get("sha256")
        manifest["files"] = files
    return manifest


__all__ = [
    "FORMAT_VERSION",
    "STORAGE_DTYPES",
    "PCAReducer",
    "StorageDtype",
    "from_storage",
    "to_storage",
]
