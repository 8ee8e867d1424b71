"""Fashion-MNIST: 70,000 greyscale 28x28 Zalando product images in 10 classes.

Read from the original IDX files (gzipped or not). Where they come from, in
order: the ``root`` you pass; Debian's ``dataset-fashion-mnist`` package
(``/usr/share/datasets/fashion-mnist``, or the directory named by the
``VISUALSIM_FASHION_MNIST_DIR`` environment variable); the Keras cache
(``~/.keras/datasets/fashion-mnist``); and, when online,
``keras.datasets.fashion_mnist`` (which downloads into that cache) unless the
``VISUALSIM_NO_DOWNLOAD`` environment variable is set (the test suite sets it).
"""

from __future__ import annotations

import gzip
import logging
import os
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..errors import ConfigError, DatasetError
from .base import BaseDataset

logger = logging.getLogger(__name__)

DEBIAN_DIR = Path(
    os.environ.get("VISUALSIM_FASHION_MNIST_DIR") or "/usr/share/datasets/fashion-mnist"
)
"""Where Debian's ``dataset-fashion-mnist`` package installs the IDX files; the
``VISUALSIM_FASHION_MNIST_DIR`` environment variable (read at import) puts another
directory in its place."""

NO_DOWNLOAD_ENV = "VISUALSIM_NO_DOWNLOAD"
"""Environment variable that, set to anything but ``""`` or ``"0"``, forbids downloads."""

KERAS_CACHE_DIR = Path("~/.keras/datasets/fashion-mnist")
"""Where ``keras.datasets.fashion_mnist`` caches the files it downloads."""

CLASS_NAMES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
"""The class names, indexed by label."""

_PREFIX = {"train": "train", "test": "t10k"}


class FashionMNIST(BaseDataset):
    """One split of Fashion-MNIST, held in memory as uint8 arrays (47 MB for both).

    Item ``i`` has id ``"fmnist-{split}-{i:05d}"``, a read-only 28x28 uint8
    greyscale array as image, and metadata ``{"label": int, "class_name": str}``.

    Parameters
    ----------
    root
        Directory holding ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``.
        ``None`` tries :data:`DEBIAN_DIR`, then :data:`KERAS_CACHE_DIR`, then
        ``keras.datasets.fashion_mnist`` (downloads; needs TensorFlow and the
        network). When ``root`` is given, only ``root`` is read.
    split
        ``"test"`` (10,000 images) or ``"train"`` (60,000).

    Attributes
    ----------
    source : str
        Where the data was read from.

    Examples
    --------
    >>> ds = FashionMNIST(split="test")  # doctest: +SKIP
    >>> images, labels = ds.arrays()  # doctest: +SKIP
    >>> images.shape, ds[0].metadata  # doctest: +SKIP
    ((10000, 28, 28), {'label': 9, 'class_name': 'Ankle boot'})
    """

    classes = CLASS_NAMES

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        split: Literal["test", "train"] = "test",
    ) -> None:
        if split not in _PREFIX:
            raise ConfigError(f"split must be 'test' or 'train', got {split!r}")
        self.root = Path(root).expanduser() if root is not None else None
        self.split = split
        images, labels, source = _load(self.root, split)
        if images.shape[0] != labels.shape[0]:
            raise DatasetError(
                f"Fashion-MNIST in {source}: {images.shape[0]} images but {labels.shape[0]} "
                "labels; the files are from different splits or truncated"
            )
        if labels.size and int(labels.max()) >= len(CLASS_NAMES):
            raise DatasetError(f"Fashion-MNIST in {source}: labels beyond 0-9; wrong files?")
        images.setflags(write=False)
        labels.setflags(write=False)
        self._images = images
        self._labels = labels
        self.source = source
        logger.info("Fashion-MNIST %s split: %d images from %s", split, len(labels), source)

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Return all images, ``(n, 28, 28)`` uint8, and labels, ``(n,)`` int64 (read-only)."""
        return self._images, self._labels

    def __len__(self) -> int:
        return int(self._labels.shape[0])

    def _item_id(self, index: int) -> str:
        return f"fmnist-{self.split}-{index:05d}"

    def _item_image(self, index: int) -> np.ndarray:
        return self._images[index]

    def _item_metadata(self, index: int) -> dict[str, Any]:
        label = int(self._labels[index])
        return {"label": label, "class_name": CLASS_NAMES[label]}

    def _describe(self) -> str:
        return f"split={self.split!r}, source={self.source!r}"


def idx_paths(directory: Path, split: str) -> tuple[Path, Path] | None:
    """Return the (images, labels) IDX files of a split in ``directory``, or ``None``.

    Accepts gzipped or raw files and both the ``-idx3-ubyte`` and ``.idx3-ubyte``
    spellings.

    Parameters
    ----------
    directory
        Where to look.
    split
        ``"test"`` or ``"train"``.
    """
    prefix = _PREFIX[split]
    found = []
    for kind, dims in (("images", 3), ("labels", 1)):
        match = None
        for sep in ("-", "."):
            for suffix in (".gz", ""):
                candidate = directory / f"{prefix}-{kind}{sep}idx{dims}-ubyte{suffix}"
                if candidate.is_file():
                    match = candidate
                    break
            if match:
                break
        if match is None:
            return None
        found.append(match)
    return found[0], found[1]


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Return the array stored in an IDX file (gzipped when the name ends in ``.gz``).

    Parameters
    ----------
    path
        An IDX file of unsigned bytes (``idx1`` labels or ``idx3`` images).

    Raises
    ------
    DatasetError
        The file is not IDX unsigned-byte data, or is truncated.
    """
    path = Path(path)
    opener: Any = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as fh:
            data = fh.read()
    except (OSError, EOFError) as exc:
        raise DatasetError(f"cannot read IDX file {os.fspath(path)}: {exc}") from exc
    if len(data) < 4:
        raise DatasetError(f"IDX file {os.fspath(path)} is truncated ({len(data)} bytes)")
    magic = int.from_bytes(data[:4], "big")
    if magic >> 8 != 0x08:  # 0x0000 08 ndim: unsigned bytes
        raise DatasetError(
            f"{os.fspath(path)} is not an IDX file of unsigned bytes (magic {magic:#010x})"
        )
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetError(f"IDX file {os.fspath(path)} is truncated in its header")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(shape)) if shape else 0
    if len(data) - header != expected:
        raise DatasetError(
            f"IDX file {os.fspath(path)} should hold {expected} bytes of data for shape {shape} "
            f"but holds {len(data) - header}; it is truncated or corrupt — download it again"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape).copy()


def write_idx(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Write ``array`` (values 0-255) as an IDX file of unsigned bytes; gzipped if ``.gz``.

    The inverse of :func:`read_idx`; handy for a stand-in copy of Fashion-MNIST.
    The file is written to a temporary sibling and renamed into place.
    """
    path = Path(path)
    data = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    data += np.asarray(array).astype(np.uint8).tobytes()
    if path.name.endswith(".gz"):
        data = gzip.compress(data, mtime=0)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _from_dir(directory: Path, split: str) -> tuple[np.ndarray, np.ndarray, str] | None:
    paths = idx_paths(directory, split)
    if paths is None:
        return None
    images, labels = read_idx(paths[0]), read_idx(paths[1])
    if images.ndim != 3 or labels.ndim != 1:
        raise DatasetError(
            f"Fashion-MNIST files in {os.fspath(directory)} have shapes {images.shape} and "
            f"{labels.shape}; expected (n, 28, 28) images and (n,) labels"
        )
    return images, labels.astype(np.int64), os.fspath(directory)


def _load(root: Path | None, split: str) -> tuple[np.ndarray, np.ndarray, str]:
    prefix = _PREFIX[split]
    wanted = f"{prefix}-images-idx3-ubyte[.gz] and {prefix}-labels-idx1-ubyte[.gz]"
    if root is not None:
        loaded = _from_dir(root, split)
        if loaded is None:
            raise DatasetError(
                f"no Fashion-MNIST {split} files ({wanted}) in {os.fspath(root)}. Put them "
                f"there, or use FashionMNIST(root=None) to read {DEBIAN_DIR} (Debian: apt install "
                "dataset-fashion-mnist) or download with keras.datasets.fashion_mnist"
            )
        return loaded
    for directory in (DEBIAN_DIR, KERAS_CACHE_DIR.expanduser()):
        loaded = _from_dir(directory, split)
        if loaded is not None:
            return loaded
    if os.environ.get(NO_DOWNLOAD_ENV, "") not in ("", "0"):
        raise DatasetError(
            f"Fashion-MNIST {split} files ({wanted}) are not in {DEBIAN_DIR} or "
            f"{KERAS_CACHE_DIR}, and downloads are off ({NO_DOWNLOAD_ENV} is set). Pass root= "
            "a directory holding them, install Debian's dataset-fashion-mnist, or unset "
            f"{NO_DOWNLOAD_ENV} to let keras.datasets.fashion_mnist download them"
        )
    try:
        return _from_keras(split)
    except Exception as exc:  # keras missing, offline, or a broken download
        raise DatasetError(
            f"Fashion-MNIST is not available ({type(exc).__name__}: {exc}). Any one of these "
            f"works: (1) pass root= a directory holding {wanted}; (2) on Debian/Ubuntu, "
            f"`apt install dataset-fashion-mnist` (installs them into {DEBIAN_DIR}); "
            "(3) go online once with TensorFlow installed so keras.datasets.fashion_mnist can "
            f"download them into {KERAS_CACHE_DIR}."
        ) from exc


def _from_keras(split: str) -> tuple[np.ndarray, np.ndarray, str]:
    from keras.datasets import fashion_mnist

    logger.info("Fashion-MNIST not found locally; trying keras.datasets.fashion_mnist")
    (x_train, y_train), (x_test, y_test) = fashion_mnist.load_data()
    images, labels = (x_train, y_train) if split == "train" else (x_test, y_test)
    return (
        np.ascontiguousarray(images, dtype=np.uint8),
        np.asarray(labels, dtype=np.int64),
        "keras.datasets.fashion_mnist",
    )


__all__ = [
    "CLASS_NAMES",
    "DEBIAN_DIR",
    "KERAS_CACHE_DIR",
    "NO_DOWNLOAD_ENV",
    "FashionMNIST",
    "idx_paths",
    "read_idx",
    "write_idx",
]
