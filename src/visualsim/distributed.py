"""Extraction on Ray Data: the same vectors as ``extractor.extract``, from a pool of actors.

The driver turns the inputs into an Arrow dataset of ``(row, source)`` pairs;
a pool of actors, each rebuilding the extractor from its config, embeds them
batch by batch with :meth:`~visualsim.extractors.base.BaseExtractor.iter_batches`;
the driver puts the rows back in input order by the row number they carried.
The same code runs on a laptop (a local Ray started for you) and on a cluster
(``ray.init(address=...)`` first, or ``address=...`` here)::

    from visualsim import ColorHistogramExtractor
    from visualsim.distributed import extract, extract_to_shards

    vectors = extract(paths, ColorHistogramExtractor(), num_cpus=8)
    extract_to_shards(paths, ColorHistogramExtractor(), "shards/", shard_size=50_000)

Ray is imported only when one of these functions runs (``pip install
'visualsim[ray]'``). Paths must be readable by every worker (shared storage on
a cluster); bytes and arrays travel with the data.
"""

from __future__ import annotations

import io
import logging
import math
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import ConfigError, ImageLoadError, VisualsimError
from .extractors.base import ExtractedBatch, OnError, extractor_from_config, extractor_spec
from .ids import Id
from .inputs import iter_entries
from .shards import ShardFormat, ShardWriter

logger = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'visualsim[ray]'"
_PATH, _BYTES, _ARRAY = 0, 1, 2
_MAX_BLOCKS = 256
"""Upper bound on the Arrow blocks one run is cut into (each is one object in Ray's store)."""


class DistributedError(VisualsimError, RuntimeError):
    """Ray returned something other than one result per input (a bug, not a bad image)."""


# -- public API ------------------------------------------------------------------------


def extract(
    images: Iterable[Any],
    extractor: Any,
    *,
    num_cpus: int | None = None,
    address: str | None = None,
    batch_size: int = 64,
    concurrency: int | None = None,
    progress: bool = False,
) -> np.ndarray:
    """Return the vectors of ``images`` computed on Ray, ``(n, dim)`` float32, in input order.

    The same vectors as ``extractor.extract(images)`` (to float rounding),
    for sets whose vectors fit in memory; for bigger ones write shards with
    :func:`extract_to_shards`.

    Parameters
    ----------
    images
        Paths (``str`` / ``os.PathLike``), encoded bytes, binary files (read
        on the driver) or numpy arrays. Paths are made absolute on the driver
        and must be readable by every worker; bytes and arrays travel through
        Ray's object store, so keep them for small sets.
    extractor
        A registered extractor, or its spec ``{"name": ..., "config": {...}}``.
        Each actor rebuilds it from its config (weights included), so files
        the config names must exist on every node.
    num_cpus
        CPUs of the local Ray started when none is running (default: all).
    address
        Connect to this Ray cluster (``"auto"``, ``"ray://head:10001"``) when
        none is connected yet. Ignored, with a warning, if Ray is already
        initialised: that one is used as it is.
    batch_size
        Images per model call in each actor. Larger batches amortise the
        per-call overhead; each actor holds one batch of decoded images.
    concurrency
        Number of extractor actors (each takes one CPU and loads the model
        once). Default: one per CPU of the cluster.
    progress
        Show Ray Data's progress bars.

    Returns
    -------
    numpy.ndarray
        ``(n, dim)`` float32 with unit-length rows, row ``i`` for input ``i``.

    Raises
    ------
    ImageLoadError
        Naming the first input (in input order) that could not be read; use
        :func:`extract_batch` with ``on_error="skip"`` to carry on past bad
        inputs.
    ConfigError
        If Ray is not installed or a setting is invalid.
    """
    return extract_batch(
        images,
        extractor,
        on_error="raise",
        num_cpus=num_cpus,
        address=address,
        batch_size=batch_size,
        concurrency=concurrency,
        progress=progress,
    ).vectors


def extract_batch(
    images: Iterable[Any],
    extractor: Any,
    *,
    on_error: OnError = "skip",
    num_cpus: int | None = None,
    address: str | None = None,
    batch_size: int = 64,
    concurrency: int | None = None,
    progress: bool = False,
) -> ExtractedBatch[Any]:
    """Return the vectors of the readable ``images`` with the inputs that failed, computed on Ray.

    The distributed counterpart of
    :meth:`~visualsim.extractors.base.BaseExtractor.iter_batches`: the whole
    input comes back as one :class:`~visualsim.extractors.base.ExtractedBatch`.

    Parameters
    ----------
    images, extractor, num_cpus, address, batch_size, concurrency, progress
        As for :func:`extract`.
    on_error
        ``"skip"`` leaves unreadable inputs out and lists them in ``failed``;
        ``"raise"`` raises the :class:`~visualsim.errors.ImageLoadError` of the
        first one in input order (after the run, since workers run ahead).

    Returns
    -------
    ExtractedBatch
        ``vectors`` and ``items`` (the readable inputs) and their
        ``positions``, in input order; ``failed`` lists ``(input, error)``.
    """
    _check_on_error(on_error)
    spec, dim = _spec_and_dim(extractor)
    items = list(images)
    vectors, errors = _collect(
        _run(
            items,
            spec,
            dim,
            num_cpus=num_cpus,
            address=address,
            batch_size=batch_size,
            concurrency=concurrency,
            progress=progress,
        ),
        len(items),
        dim,
    )
    bad = np.flatnonzero(errors != "")
    if len(bad) and on_error == "raise":
        raise _load_error(items[bad[0]], errors[bad[0]])
    failed = []
    for i in bad:
        exc = _load_error(items[i], errors[i])
        logger.warning("skipping input %d: %s", i, exc)
        failed.append((items[i], exc))
    ok = np.flatnonzero(errors == "")
    return ExtractedBatch(vectors[ok], [items[i] for i in ok], ok.tolist(), failed)


@dataclass
class ShardReport:
    """What :func:`extract_to_shards` did.

    Attributes
    ----------
    path
        The shard folder.
    inputs
        Inputs seen in total.
    written
        Shards extracted and written by this call.
    skipped
        Shards already complete from an earlier run, left as they were.
    count
        Vectors stored in the folder.
    failed
        ``(position, input, error)`` for inputs of this call's shards that
        could not be read.
    """

    path: str
    inputs: int
    written: list[int]
    skipped: list[int]
    count: int
    failed: list[tuple[int, Any, ImageLoadError]]


def extract_to_shards(
    images: Iterable[Any],
    extractor: Any,
    out_dir: str | os.PathLike[str],
    *,
    ids: Iterable[Any] | None = None,
    metadata: Iterable[Mapping[str, Any] | None] | None = None,
    shard_size: int = 10_000,
    format: ShardFormat = "npy",
    on_error: OnError = "skip",
    num_cpus: int | None = None,
    address: str | None = None,
    batch_size: int = 64,
    concurrency: int | None = None,
    progress: bool = False,
) -> ShardReport:
    """Extract ``images`` on Ray into a folder of vector shards, resuming an interrupted run.

    Shard ``k`` holds inputs ``k * shard_size`` to ``(k + 1) * shard_size``.
    Each shard is written atomically on the driver as soon as all its inputs
    are done (so ``out_dir`` need only be on the driver's disk), and shards a
    previous run completed are skipped without re-extracting them; pass the
    same inputs in the same order to resume. The inputs are listed on the
    driver (a million paths take about 100 MB); the vectors of unfinished
    shards wait there too. Turn the folder into a catalogue
    with :meth:`visualsim.Recommender.from_shards`
    (``Recommender.from_shards``) or :func:`visualsim.shards.load_into`.

    Parameters
    ----------
    images
        As for :func:`extract`, or :class:`~visualsim.datasets.DatasetItem` /
        ``(id, image[, metadata])`` items that bring their own ids and metadata.
    extractor
        A registered extractor or its spec.
    out_dir
        The shard folder (created if missing).
    ids
        One id per input (strings or integers, unique). Default as
        :meth:`Recommender.fit <visualsim.Recommender.fit>`: the item's id,
        else the path, else the input position.
    metadata
        One dict per input. Paths also get ``"path"`` (absolute), as in ``fit``.
    shard_size
        Inputs per shard: smaller loses less work to a crash and resumes more
        finely; larger makes fewer files.
    format
        ``"npy"`` (``.npy`` + JSON) or ``"parquet"`` (needs ``pyarrow``; ids
        of one type). See :mod:`visualsim.shards`.
    on_error
        ``"skip"`` (default) records unreadable inputs in the manifest and
        carries on; ``"raise"`` raises when the first shard holding one is
        complete (shards written before stay, so a fixed rerun resumes).
    num_cpus, address, batch_size, concurrency, progress
        As for :func:`extract`.

    Returns
    -------
    ShardReport
        Shards written and skipped, vectors stored, inputs that failed.

    Raises
    ------
    ConfigError
        If ``out_dir`` holds shards of another extractor, other settings or
        other inputs, or an id repeats.
    ImageLoadError
        With ``on_error="raise"``, for the first unreadable input.
    """
    _check_on_error(on_error)
    spec, dim = _spec_and_dim(extractor)
    writer = ShardWriter(out_dir, extractor=spec, dim=dim, shard_size=shard_size, format=format)
    entries = list(iter_entries(images, ids, metadata))
    n = len(entries)
    n_shards = math.ceil(n / shard_size)
    if format == "parquet" and len({type(e[0]) for e in entries}) > 1:
        raise ConfigError(
            "Parquet shards need ids of one type (all strings or all integers); "
            "pass ids=... or use format='npy'"
        )
    beyond = [k for k in writer.done_indices() if k >= n_shards]
    if beyond:
        raise ConfigError(
            f"{os.fspath(out_dir)!r} holds shard(s) {beyond} beyond the {n} inputs given: "
            "it was written from a longer input; pass the same images to resume, "
            "or write to a new folder"
        )
    skipped: list[int] = []
    pending: list[int] = []
    for k in range(n_shards):
        chunk = entries[k * shard_size : (k + 1) * shard_size]
        (skipped if writer.is_done(k, [e[0] for e in chunk]) else pending).append(k)
    if skipped:
        logger.info("%s: %d shard(s) already complete, skipped", os.fspath(out_dir), len(skipped))
    todo = [i for k in pending for i in range(k * shard_size, min((k + 1) * shard_size, n))]
    failed: list[tuple[int, Any, ImageLoadError]] = []
    written: list[int] = []
    if todo:
        buffers: dict[int, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}
        remaining = {k: min((k + 1) * shard_size, n) - k * shard_size for k in pending}
        results = _run(
            [entries[i][1] for i in todo],
            spec,
            dim,
            num_cpus=num_cpus,
            address=address,
            batch_size=batch_size,
            concurrency=concurrency,
            progress=progress,
        )
        todo_positions = np.asarray(todo, dtype=np.int64)
        for rows, vectors, errors in results:
            positions = todo_positions[rows]
            shard_of = positions // shard_size
            for k in np.unique(shard_of):
                mine = shard_of == k
                buffers.setdefault(int(k), []).append(
                    (positions[mine], vectors[mine], errors[mine])
                )
                remaining[int(k)] -= int(mine.sum())
                if remaining[int(k)] < 0:
                    raise DistributedError(f"Ray returned more results than inputs for shard {k}")
                if remaining[int(k)] == 0:
                    bad = _write_shard(writer, int(k), buffers.pop(int(k)), entries, on_error)
                    failed.extend(bad)
                    written.append(int(k))
        if any(remaining.values()):
            missing = sum(remaining.values())
            raise DistributedError(f"Ray returned no result for {missing} input(s)")
    manifest = writer.finish(n)
    return ShardReport(
        os.fspath(out_dir), n, sorted(written), skipped, int(manifest["count"]), failed
    )


# -- Ray -------------------------------------------------------------------------------


def _import_ray() -> Any:
    try:
        import ray
        import ray.data  # the extra installs it; fail here, not in a worker
    except ImportError as exc:
        raise ConfigError(
            f"distributed extraction needs Ray Data, which is not installed: {INSTALL_HINT}"
        ) from exc
    return ray


def init_ray(*, num_cpus: int | None = None, address: str | None = None) -> bool:
    """Start or connect to Ray unless it is already initialised; return whether this call did.

    A Ray this function starts stays up for the next call (Ray shuts it down
    when the process exits, or call ``ray.shutdown()``); a Ray the caller
    started is used as it is and never shut down here.

    Parameters
    ----------
    num_cpus
        CPUs of a new local Ray (default: all of this machine's).
    address
        A cluster to connect to instead (``"auto"``, ``"ray://head:10001"``).

    Raises
    ------
    ConfigError
        If Ray is missing, or both ``num_cpus`` and ``address`` are given (a
        cluster's CPUs are set where it was started).
    """
    if num_cpus is not None and (
        isinstance(num_cpus, bool) or not isinstance(num_cpus, int) or num_cpus < 1
    ):
        raise ConfigError(f"num_cpus must be a positive integer, got {num_cpus!r}")
    if num_cpus is not None and address is not None:
        raise ConfigError(
            "pass num_cpus or address, not both: a cluster's CPUs are set where it started"
        )
    ray = _import_ray()
    if ray.is_initialized():
        if num_cpus is not None or address is not None:
            logger.warning("Ray is already initialised; num_cpus/address are ignored")
        return False
    if address is not None:
        ray.init(address=address)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    return True


class _ExtractorActor:
    """The callable class Ray Data instantiates once per actor."""

    def __init__(self, spec: Mapping[str, Any]) -> None:
        self.extractor = extractor_from_config(spec)
        self.dim = int(self.extractor.dim)

    def __call__(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = np.asarray(batch["row"], dtype=np.int64)
        sources = [
            _decode(int(k), p, d)
            for k, p, d in zip(batch["kind"], batch["path"], batch["data"], strict=True)
        ]
        vectors = np.zeros((len(rows), self.dim), dtype=np.float32)
        errors = [""] * len(rows)
        for i, exc in _encode_errors(batch):
            errors[i] = exc
        todo = [i for i in range(len(rows)) if not errors[i]]
        if hasattr(self.extractor, "iter_batches"):
            for part in self.extractor.iter_batches(
                todo,
                image_of=sources.__getitem__,
                batch_size=max(1, len(todo)),
                on_error="skip",
            ):
                vectors[part.items] = part.vectors
                for i, err in part.failed:
                    errors[i] = err.reason
        else:  # a protocol-only extractor: one image at a time
            for i in todo:
                try:
                    vectors[i] = self.extractor.extract([sources[i]])[0]
                except ImageLoadError as err:
                    errors[i] = err.reason
        return {"row": rows, "vector": vectors, "error": np.asarray(errors, dtype=object)}


def _run(
    sources: Sequence[Any],
    spec: Mapping[str, Any],
    dim: int,
    *,
    num_cpus: int | None,
    address: str | None,
    batch_size: int,
    concurrency: int | None,
    progress: bool,
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Yield ``(rows, vectors, errors)`` batches from Ray, in whatever order they finish."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    if concurrency is not None and (
        isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1
    ):
        raise ConfigError(f"concurrency must be a positive integer, got {concurrency!r}")
    ray = _import_ray()
    pa = _import_pyarrow()
    if not sources:
        return
    init_ray(num_cpus=num_cpus, address=address)
    actors = concurrency or max(1, int(ray.cluster_resources().get("CPU", 1)))
    ds = ray.data.from_arrow(_tables(sources, batch_size, pa))
    context = getattr(ds, "context", None)
    if context is not None:  # a per-dataset copy: the caller's global settings stay as they are
        context.enable_progress_bars = progress
    ds = ds.map_batches(
        _ExtractorActor,
        fn_constructor_kwargs={"spec": dict(spec)},
        batch_size=batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=actors),
    )
    for out in ds.iter_batches(batch_size=None, batch_format="numpy"):
        vectors = np.asarray(out["vector"], dtype=np.float32).reshape(-1, dim)
        yield (
            np.asarray(out["row"], dtype=np.int64),
            vectors,
            np.asarray(out["error"], dtype=object),
        )


def _tables(sources: Sequence[Any], batch_size: int, pa: Any) -> list[Any]:
    """Cut the encoded inputs into Arrow tables of whole batches, at most ``_MAX_BLOCKS`` of them.

    One batch per block while that stays under the cap balances the actors
    best; past it, blocks grow so the object store holds few, larger objects.
    """
    schema = pa.schema(
        [
            ("row", pa.int64()),
            ("kind", pa.int8()),
            ("path", pa.string()),
            ("data", pa.binary()),
            ("error", pa.string()),
        ]
    )
    n = len(sources)
    step = max(1, math.ceil(math.ceil(n / batch_size) / _MAX_BLOCKS)) * batch_size
    tables = []
    for start in range(0, n, step):
        cols: dict[str, list[Any]] = {"row": [], "kind": [], "path": [], "data": [], "error": []}
        for row in range(start, min(start + step, n)):
            kind, path, data, error = _encode(sources[row])
            cols["row"].append(row)
            cols["kind"].append(kind)
            cols["path"].append(path)
            cols["data"].append(data)
            cols["error"].append(error)
        tables.append(pa.table(cols, schema=schema))
    return tables


def _encode(source: Any) -> tuple[int, str | None, bytes | None, str | None]:
    """Return ``(kind, path, data, error)``: how one input travels to the workers."""
    if isinstance(source, (str, os.PathLike)):
        return _PATH, os.path.abspath(os.fspath(source)), None, None
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _BYTES, None, bytes(source), None
    if isinstance(source, np.ndarray):
        buffer = io.BytesIO()
        try:
            np.save(buffer, source, allow_pickle=False)
        except ValueError as exc:
            return _ARRAY, None, None, f"the array cannot be sent to Ray workers: {exc}"
        return _ARRAY, None, buffer.getvalue(), None
    if hasattr(source, "read"):
        try:
            data = source.read()
        except Exception as exc:  # a broken stream is the caller's input problem
            return _BYTES, None, None, f"reading the file object failed: {exc}"
        if not isinstance(data, (bytes, bytearray)):
            return _BYTES, None, None, "the file object must be opened in binary mode ('rb')"
        return _BYTES, None, bytes(data), None
    return (
        _BYTES,
        None,
        None,
        f"distributed extraction takes paths, bytes, binary files or numpy arrays, "
        f"not {type(source).__name__}; pass the file's path or np.asarray(image)",
    )


def _encode_errors(batch: Mapping[str, np.ndarray]) -> Iterator[tuple[int, str]]:
    for i, error in enumerate(batch["error"]):
        if error:
            yield i, str(error)


def _decode(kind: int, path: Any, data: Any) -> Any:
    if kind == _PATH:
        return str(path)
    if kind == _ARRAY and data is not None:
        return np.load(io.BytesIO(data), allow_pickle=False)
    return b"" if data is None else bytes(data)


def _collect(
    batches: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]], n: int, dim: int
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(vectors, errors)`` in input order, checking that every row came back once."""
    vectors = np.zeros((n, dim), dtype=np.float32)
    errors = np.full(n, "", dtype=object)
    seen = np.zeros(n, dtype=bool)
    for rows, vecs, errs in batches:
        if len(rows) and (rows.min() < 0 or rows.max() >= n or seen[rows].any()):
            raise DistributedError("Ray returned a row twice or a row that was never sent")
        seen[rows] = True
        vectors[rows] = vecs
        errors[rows] = errs
    if not seen.all():
        raise DistributedError(f"Ray returned no result for {int((~seen).sum())} input(s)")
    return vectors, errors


# -- driver-side helpers ---------------------------------------------------------------


def _write_shard(
    writer: ShardWriter,
    k: int,
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
    entries: Sequence[tuple[Id, Any, dict[str, Any]]],
    on_error: OnError,
) -> list[tuple[int, Any, ImageLoadError]]:
    positions = np.concatenate([p for p, _, _ in parts])
    order = np.argsort(positions, kind="stable")
    positions = positions[order]
    vectors = np.concatenate([v for _, v, _ in parts])[order]
    errors = np.concatenate([e for _, _, e in parts])[order]
    bad = [
        (int(p), entries[p][1], _load_error(entries[p][1], str(errors[j])))
        for j, p in enumerate(positions)
        if errors[j]
    ]
    if bad and on_error == "raise":
        raise bad[0][2]
    for p, _, exc in bad:
        logger.warning("skipping input %d: %s", p, exc)
    ok = errors == ""
    good = positions[ok]
    writer.write(
        k,
        vectors=vectors[ok],
        ids=[entries[p][0] for p in good],
        metadata=[entries[p][2] for p in good],
        input_ids=[entries[p][0] for p in positions],
        failed=[
            {"position": p, "id": entries[p][0], "source": exc.source, "reason": exc.reason}
            for p, _, exc in bad
        ],
    )
    return bad


def _spec_and_dim(extractor: Any) -> tuple[dict[str, Any], int]:
    if isinstance(extractor, Mapping):
        spec = dict(extractor)
        return spec, int(extractor_from_config(spec).dim)
    return extractor_spec(extractor), int(extractor.dim)


def _load_error(source: Any, reason: str) -> ImageLoadError:
    return ImageLoadError(source, reason)


def _check_on_error(on_error: str) -> None:
    if on_error not in ("raise", "skip"):
        raise ConfigError(f"on_error must be 'raise' or 'skip', got {on_error!r}")


def _import_pyarrow() -> Any:
    try:
        import pyarrow
    except ImportError as exc:
        raise ConfigError(
            f"distributed extraction needs pyarrow, which is not installed: {INSTALL_HINT}"
        ) from exc
    return pyarrow


__all__ = [
    "DistributedError",
    "ShardReport",
    "extract",
    "extract_batch",
    "extract_to_shards",
    "init_ray",
]
