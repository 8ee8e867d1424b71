"""The extractor protocol, a streaming base class, and the extractor registry.

An extractor turns images into L2-normalised ``float32`` vectors. Subclasses of
:class:`BaseExtractor` supply two steps — ``_prepare`` (one decoded image →
model input, run on loader threads) and ``_embed`` (a stacked batch → raw
features, run on the calling thread) — and inherit streaming, batching,
prefetching, error handling, progress bars and normalisation.
"""

from __future__ import annotations

import itertools
import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, Literal, Protocol, TypeVar, runtime_checkable

import numpy as np
from typing_extensions import Self

from ..crop import CropMode, auto_crop, check_crop
from ..errors import ConfigError, ImageLoadError
from ..images import load_image
from ..registry import Registry
from ..validation import check_int, check_positive_int

logger = logging.getLogger(__name__)

T = TypeVar("T")
CROP_DRAFT_FACTOR = 4
"""With ``crop="auto"``, JPEGs are draft-decoded at this many times the model's input size."""
OnError = Literal["raise", "skip"]

EXTRACTORS: Registry[type] = Registry(
    "extractor",
    builtins={
        "color": "visualsim.extractors.color:ColorHistogramExtractor",
        "keras": "visualsim.extractors.keras:KerasExtractor",
        "resnet50": "visualsim.extractors.keras:ResNet50Extractor",
        "squeezenet": "visualsim.extractors.squeezenet:SqueezeNetExtractor",
        "concat": "visualsim.extractors.concat:ConcatExtractor",
        "silhouette": "visualsim.extractors.shape:SilhouetteExtractor",
        "precomputed": "visualsim.extractors.precomputed:PrecomputedVectors",
    },
)
register_extractor = EXTRACTORS.register
"""Class decorator: ``@register_extractor("mine")`` makes a custom extractor
savable in a catalogue and rebuildable from its config."""


@runtime_checkable
class Extractor(Protocol):
    """What the recommender needs from an extractor.

    Attributes
    ----------
    name
        The registry name, stored in a catalogue's manifest.
    dim
        Length of every vector.
    """

    name: ClassVar[str]

    @property
    def dim(self) -> int: ...

    def extract(
        self, images: Iterable[Any], *, batch_size: int | None = None, progress: bool = False
    ) -> np.ndarray: ...

    def get_config(self) -> dict[str, Any]: ...


@dataclass
class ExtractedBatch(Generic[T]):
    """One batch out of :meth:`BaseExtractor.iter_batches`.

    Attributes
    ----------
    vectors
        ``(len(items), dim)`` float32, rows L2-normalised.
    items
        The input items that were read, in input order, aligned with ``vectors``.
    positions
        Each item's 0-based position in the input stream.
    failed
        ``(item, error)`` for inputs of this batch that could not be read
        (only with ``on_error="skip"``).
    """

    vectors: np.ndarray
    items: list[T]
    positions: list[int]
    failed: list[tuple[T, ImageLoadError]] = field(default_factory=list)


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Return ``x`` as float32 with unit-length rows.

    A row of zeros (an image that produced no features at all) becomes the
    constant unit vector ``1/sqrt(dim)`` so every row stays comparable.
    """
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    zero = norms[:, 0] <= np.finfo(np.float32).tiny
    out = x / np.where(norms > 0, norms, 1.0).astype(np.float32)
    if zero.any():
        out[zero] = 1.0 / np.sqrt(x.shape[1])
    return np.ascontiguousarray(out, dtype=np.float32)


def _default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


class BaseExtractor(ABC):
    """Streaming, batched extraction on top of two small hooks.

    Parameters
    ----------
    batch_size
        Images per model call. Larger batches amortise per-call overhead;
        memory grows linearly with it.
    num_workers
        Threads that decode and resize the next batch while the current one
        runs through the model. ``0`` decodes on the calling thread.
    crop
        ``"auto"`` trims the uniform background (near-white, or the border's
        colour) to the product's bounding box plus a margin before the
        extractor's own resize (:func:`visualsim.crop.auto_crop`), so the same
        product shot at another scale or offset gives nearly the same vector;
        ``None`` (the default) uses the whole image.

    Notes
    -----
    Subclasses implement :attr:`dim`, :meth:`_prepare`, :meth:`_embed` and
    :meth:`get_config`; the constructor must accept the config's keys.
    """

    name: ClassVar[str] = ""
    default_batch_size: ClassVar[int] = 32

    def __init__(
        self,
        *,
        batch_size: int | None = None,
        num_workers: int | None = None,
        crop: str | None = None,
    ) -> None:
        # bools are not counts: batch_size=True is refused, as every other check does
        self.batch_size: int | None = check_positive_int("batch_size", batch_size, allow_none=True)
        self.num_workers: int | None = check_int(
            "num_workers", num_workers, minimum=0, allow_none=True
        )
        self.crop: CropMode | None = check_crop(crop)

    # -- hooks for subclasses -------------------------------------------------
    @property
    @abstractmethod
    def dim(self) -> int:
        """Length of every vector this extractor returns."""

    @abstractmethod
    def _prepare(self, image: np.ndarray) -> np.ndarray:
        """Turn one RGB ``uint8`` image into a model input (runs on loader threads)."""

    @abstractmethod
    def _embed(self, batch: np.ndarray) -> np.ndarray:
        """Turn a stacked batch of prepared inputs into raw ``(n, dim)`` features."""

    @abstractmethod
    def get_config(self) -> dict[str, Any]:
        """Return the JSON-safe constructor arguments that rebuild this extractor."""

    def _draft_size(self) -> tuple[int, int] | None:
        """A decode-size hint passed to :func:`~visualsim.images.load_image`."""
        return None

    # -- public API -----------------------------------------------------------
    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Self:
        """Rebuild an extractor from :meth:`get_config` output."""
        return cls(**dict(config))

    def decode_size(self) -> tuple[int, int] | None:
        """The size to decode inputs at (JPEG draft mode), ``None`` for full size.

        The model's own size hint, enlarged by :data:`CROP_DRAFT_FACTOR` with
        ``crop="auto"`` (the product may fill a small part of the canvas).
        """
        draft = self._draft_size()
        if draft is not None and self.crop is not None:
            return (draft[0] * CROP_DRAFT_FACTOR, draft[1] * CROP_DRAFT_FACTOR)
        return draft

    def load(self, source: Any) -> np.ndarray:
        """Return one input decoded, cropped (with ``crop="auto"``) and prepared for the model."""
        return self._preprocess(load_image(source, draft_size=self.decode_size()))

    def _preprocess(self, image: np.ndarray) -> np.ndarray:
        """Crop (with ``crop="auto"``), then :meth:`_prepare` one decoded image."""
        if self.crop is not None:
            image = auto_crop(image)
        return self._prepare(image)

    def iter_batches(
        self,
        items: Iterable[T],
        *,
        batch_size: int | None = None,
        image_of: Callable[[T], Any] | None = None,
        on_error: OnError = "raise",
        progress: bool = False,
        total: int | None = None,
    ) -> Iterator[ExtractedBatch[T]]:
        """Yield vectors batch by batch, streaming over ``items``.

        At most two batches of decoded images are in memory at once, so an
        iterable of a million paths is never materialised.

        Parameters
        ----------
        items
            Any iterable. Each item is an image-like, or something from which
            ``image_of`` picks the image (e.g. a dataset item).
        batch_size
            Images per model call; default the extractor's.
        image_of
            Function from an item to its image; default: the item itself.
        on_error
            ``"raise"`` stops at the first unreadable input with its
            :class:`~visualsim.errors.ImageLoadError`; ``"skip"`` leaves it out
            and reports it in :attr:`ExtractedBatch.failed`.
        progress
            Show a ``tqdm`` progress bar (counting inputs).
        total
            Number of inputs, for the progress bar (default ``len(items)``
            when it has one).

        Yields
        ------
        ExtractedBatch
            Vectors with the items they came from, and this batch's failures.
        """
        if on_error not in ("raise", "skip"):
            raise ConfigError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        size = check_positive_int(
            "batch_size",
            batch_size if batch_size is not None else self.batch_size or self.default_batch_size,
        )
        pick: Callable[[T], Any] = image_of or (lambda item: item)
        workers = _default_workers() if self.num_workers is None else self.num_workers
        if total is None and hasattr(items, "__len__"):
            total = len(items)  # type: ignore[arg-type]
        bar = _progress_bar(total, progress, desc=f"extract[{self.name or type(self).__name__}]")

        def load_one(item: T) -> np.ndarray | ImageLoadError:
            try:
                return self.load(pick(item))
            except ImageLoadError as exc:
                return exc

        chunks = _chunked(enumerate(items), size)
        first = next(chunks, None)
        if first is not None and len(first) == 1 < size:
            # one image in all (a query): decode it on this thread; handing it to a
            # pool thread and back cost 2-5 ms a call on a busy 2-core machine
            workers = 0
        pool = ThreadPoolExecutor(workers, thread_name_prefix="visualsim-load") if workers else None
        try:
            pending = _submit(pool, load_one, first)
            while pending is not None:
                chunk, futures = pending
                # start decoding the next batch before running the model on this one
                pending = _submit(pool, load_one, next(chunks, None))
                batch = self._finish(chunk, futures, on_error)
                if bar is not None:
                    bar.update(len(chunk))
                yield batch
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
            if bar is not None:
                bar.close()

    def _finish(
        self,
        chunk: list[tuple[int, T]],
        results: list[Future[np.ndarray | ImageLoadError]] | list[np.ndarray | ImageLoadError],
        on_error: OnError,
    ) -> ExtractedBatch[T]:
        arrays: list[np.ndarray] = []
        ok_items: list[T] = []
        positions: list[int] = []
        failed: list[tuple[T, ImageLoadError]] = []
        for (pos, item), res in zip(chunk, results, strict=True):
            value = res.result() if isinstance(res, Future) else res
            if isinstance(value, ImageLoadError):
                if on_error == "raise":
                    raise value
                logger.warning("skipping input %d: %s", pos, value)
                failed.append((item, value))
            else:
                arrays.append(value)
                ok_items.append(item)
                positions.append(pos)
        if arrays:
            vectors = l2_normalize(self._embed(np.stack(arrays)))
        else:
            vectors = np.zeros((0, self.dim), dtype=np.float32)
        return ExtractedBatch(vectors, ok_items, positions, failed)

    def extract(
        self,
        images: Iterable[Any],
        *,
        batch_size: int | None = None,
        progress: bool = False,
    ) -> np.ndarray:
        """Return the vectors of ``images`` as one ``(n, dim)`` float32 array.

        Parameters
        ----------
        images
            Any iterable of image-likes (consumed as a stream).
        batch_size
            Images per model call; default the extractor's.
        progress
            Show a progress bar.

        Returns
        -------
        numpy.ndarray
            ``(n, dim)`` float32 with unit-length rows, in input order.

        Raises
        ------
        ImageLoadError
            If any input cannot be read (use :meth:`iter_batches` with
            ``on_error="skip"`` to carry on past bad inputs).
        """
        parts = [
            b.vectors for b in self.iter_batches(images, batch_size=batch_size, progress=progress)
        ]
        if not parts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.concatenate(parts, axis=0)

    def extract_one(self, image: Any) -> np.ndarray:
        """Return the ``(dim,)`` vector of a single image."""
        return self.extract([image])[0]

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


def _chunked(iterable: Iterable[T], size: int) -> Iterator[list[T]]:
    it = iter(iterable)
    while chunk := list(itertools.islice(it, size)):
        yield chunk


def _submit(
    pool: ThreadPoolExecutor | None,
    fn: Callable[[Any], np.ndarray | ImageLoadError],
    chunk: list[tuple[int, Any]] | None,
) -> tuple[list[tuple[int, Any]], list[Any]] | None:
    if chunk is None:
        return None
    if pool is None:
        return chunk, [fn(item) for _, item in chunk]
    return chunk, [pool.submit(fn, item) for _, item in chunk]


def _progress_bar(total: int | None, enabled: bool, desc: str, unit: str = "img") -> Any:
    """Return a tqdm bar (or ``None`` when not ``enabled``): every long loop's one owner.

    Off a terminal and outside a notebook it refreshes once a minute instead of
    every 0.1 s, so a log file gets a line a minute, not ten a second.
    """
    if not enabled:
        return None
    import sys

    from tqdm.auto import tqdm
    from tqdm.autonotebook import tqdm as plain_or_notebook

    # Off a terminal (a log file, CI) every refresh is a new line: refresh once a
    # minute, so a log shows progress without repeating the last line at the end.
    # (tqdm.auto's class always lives in tqdm.asyncio; autonotebook's tells a notebook.)
    in_notebook = plain_or_notebook.__module__ != "tqdm.std"
    interactive = getattr(sys.stderr, "isatty", lambda: False)() or in_notebook
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        dynamic_ncols=True,
        mininterval=0.1 if interactive else 60.0,
    )


def make_extractor(name: str, **params: Any) -> Any:
    """Return a new extractor registered under ``name``, built with ``params``.

    Examples
    --------
    >>> make_extractor("color", bins=(4, 2, 2), grey_bins=2, layout=0).dim
    18
    """
    return EXTRACTORS.build(name, params)


def saved_weights_config(
    config: Any,
    key: str,
    *,
    name: str,
    cls_name: str,
    default: str,
    allowed: tuple[str, ...] = (),
    trusted: bool = False,
) -> dict[str, Any]:
    """Return ``config`` as a dict, refusing a weights file it names unless ``trusted``.

    A config read from a file (a catalogue's manifest, a shard folder) is the
    file author's data, so it may not choose which local file this process
    opens as weights: ``config[key]`` must be ``None`` or one of ``allowed``
    (names such as ``"imagenet"``, not paths). Nothing is opened or looked up
    to decide, so the answer says nothing about which files exist.

    Parameters
    ----------
    config
        The extractor config (a mapping).
    key
        The config field naming the weights (``"weights_path"``, ``"weights"``).
    name, cls_name
        The extractor's registered name and class name, for the message.
    default
        Where the weights come from instead, for the message.
    allowed
        Values of ``config[key]`` that name no file.
    trusted
        Accept any value (``from_config(config, trust_weights_path=True)``,
        for a config the caller wrote).

    Raises
    ------
    ConfigError
        ``config`` is not a mapping, or names a weights file and ``trusted``
        is false.
    """
    if not isinstance(config, dict):
        try:
            config = dict(config)
        except (TypeError, ValueError):
            raise ConfigError(
                f"{cls_name} config must be a mapping, got {type(config).__name__}"
            ) from None
    value = config.get(key)
    if trusted or value is None or (isinstance(value, str) and value in allowed):
        return config
    shown = repr(value)[:200]
    raise ConfigError(
        f"the {name} extractor config sets {key}={shown}: a saved config may not choose the "
        f"weights file this process reads (a crafted file is an attack); {default}. To use "
        f"another copy, pass extractor={cls_name}({key}=...) to Recommender.load, or call "
        f"{cls_name}.from_config(config, trust_weights_path=True) for a config you wrote yourself"
    )


def extractor_from_config(spec: Mapping[str, Any]) -> Any:
    """Rebuild an extractor from ``{"name": ..., "config": {...}}`` (a manifest entry)."""
    return EXTRACTORS.from_spec(spec)


def extractor_spec(extractor: Any) -> dict[str, Any]:
    """Return ``{"name": ..., "config": {...}}`` for a registered extractor."""
    return EXTRACTORS.to_spec(extractor)


__all__ = [
    "EXTRACTORS",
    "BaseExtractor",
    "ExtractedBatch",
    "Extractor",
    "extractor_from_config",
    "extractor_spec",
    "l2_normalize",
    "make_extractor",
    "register_extractor",
    "saved_weights_config",
]
