"""What moves retrieval quality on real catalogue photos: the search for the default.

``bench_real.py`` reports the configurations visualsim ships; this script keeps
the record of what was tried on the way to the default and how much each idea
moved leave-one-out P@10 on the real photos (``../shared/data/fashion-products-dev``):

- **descriptor variants of SqueezeNet** (no labels): fire9 average (the
  library's), max, GeM (p=3), fire7+fire8+fire9 GeM concatenated, horizontal
  flip averaged, PCA whitening learned on the catalogue itself (256-d, shrunk),
  database-side augmentation (each vector averaged with its 5 nearest);
- **unsupervised learning on the catalogue**: k-means pseudo-labels (100
  clusters) fed to :class:`visualsim.adaptation.ProjectionAdapter`;
- **colour**: colour P@10 (same ``baseColour``) and "oracle" type+colour P@10
  (results restricted to the query's own type, ranked by colour alone: how good
  the colour part is where the shape part is perfect) for the default colour
  extractor and the product settings;
- **fusion**: SqueezeNet + colour + silhouette over a grid of weights, against
  today's SqueezeNet + colour 4:1.

Run::

    python benchmarks/explore_real.py            # ~3 min on 2 cores, vectors cached
    python benchmarks/explore_real.py --limit 400

Writes ``benchmarks/results/real-explore.json`` and prints one table per part.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_real
from _common import machine_info, print_table, write_json
from bench_quality import MultiPoolSqueezeNet, concat_vectors, split_pools

from visualsim.adaptation import ProjectionAdapter
from visualsim.evaluation import evaluate_embeddings
from visualsim.extractors.auto import PRODUCT_COLOUR
from visualsim.extractors.base import l2_normalize
from visualsim.extractors.color import ColorHistogramExtractor
from visualsim.extractors.shape import SilhouetteExtractor
from visualsim.extractors.squeezenet import SqueezeNetExtractor

logger = logging.getLogger("explore_real")
OUT = Path(__file__).resolve().parent / "results" / "real-explore.json"
K = 10
WHITEN_DIM = 256
WHITEN_SHRINK = 0.5
DBA_K = 5
PSEUDO_CLUSTERS = 100
COLOUR_GRID = (0.10, 0.15, 0.20, 0.25)
SHAPE_GRID = (0.0, 0.10, 0.20, 0.30)


class FlippedSqueezeNet(SqueezeNetExtractor):
    """SqueezeNet on the mirrored photo (its vector averaged with the plain one = flip TTA)."""

    def _prepare(self, image: np.ndarray) -> np.ndarray:
        return super()._prepare(np.ascontiguousarray(image[:, ::-1]))


class LayersSqueezeNet(SqueezeNetExtractor):
    """GeM (p=3) of fire7, fire8 and fire9, each normalised, side by side (1408-d)."""

    @property
    def dim(self) -> int:
        """384 + 512 + 512 channels."""
        return 1408

    def _make_functions(self) -> tuple[Any, Any]:
        trunk, _, to_input = self._network()  # imports TensorFlow quietly, first
        import tensorflow as tf

        from visualsim.extractors.squeezenet import INPUT_SIZE, _import_keras

        names = ("fire7_concat", "fire8_concat", "fire9_concat")
        taps = _import_keras().Model(trunk.input, [trunk.get_layer(n).output for n in names])

        @tf.function(input_signature=[tf.TensorSpec([None, INPUT_SIZE, INPUT_SIZE, 3], tf.uint8)])
        def embed(images: Any) -> Any:
            pooled = []
            for fmap in taps(to_input(images), training=False):
                gem = tf.reduce_mean(tf.maximum(fmap, 1e-6) ** 3, axis=[1, 2]) ** (1 / 3)
                pooled.append(tf.math.l2_normalize(gem, axis=1))
            return tf.concat(pooled, axis=1)

        return embed, None


def p_at_k(vectors: np.ndarray, labels: Sequence[str | None]) -> float:
    """Leave-one-out P@10 (``visualsim.evaluation``, singletons not scored)."""
    return float(evaluate_embeddings(vectors, list(labels), k=K)[f"precision@{K}"])


def whiten(vectors: np.ndarray, dim: int = WHITEN_DIM, shrink: float = WHITEN_SHRINK) -> np.ndarray:
    """PCA whitening learned on the vectors themselves, eigenvalues raised to ``shrink / 2``."""
    x = l2_normalize(vectors).astype(np.float64)
    centred = x - x.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    keep = min(dim, len(s))
    scale = (s[:keep] ** 2 / len(x)) ** (shrink / 2) + 1e-9
    return l2_normalize((centred @ vt[:keep].T / scale).astype(np.float32))


def database_augment(vectors: np.ndarray, k: int = DBA_K) -> np.ndarray:
    """Each vector replaced by a weighted mean of itself and its ``k - 1`` nearest."""
    x = l2_normalize(vectors)
    nearest = np.argsort(-(x @ x.T), axis=1)[:, :k]
    weights = np.linspace(1.0, 0.5, k, dtype=np.float32)
    return l2_normalize((x[nearest] * weights[None, :, None]).sum(axis=1))


def pseudo_label_adapt(vectors: np.ndarray, clusters: int = PSEUDO_CLUSTERS) -> np.ndarray:
    """ProjectionAdapter trained on k-means clusters of the vectors (no labels used)."""
    from sklearn.cluster import KMeans

    codes = KMeans(clusters, n_init=1, random_state=0).fit_predict(vectors)
    adapter = ProjectionAdapter(mix=0.5, seed=0).fit(vectors, codes)
    return adapter.transform(vectors)


def colour_within_type(colour: np.ndarray, data: bench_real.Data) -> float:
    """Type+colour P@10 when results are restricted to the query's type, ranked by colour."""
    types = np.asarray(data.labels["articleType"])
    pairs = np.asarray(bench_real.relevance_labels(data.labels, ("articleType", "baseColour")))
    x = l2_normalize(colour)
    hits, scored = 0.0, 0
    for i in range(len(x)):
        same = np.flatnonzero((types == types[i]) & (np.arange(len(x)) != i))
        if not (pairs[same] == pairs[i]).any():
            continue  # no other photo of this type and colour: not scored
        top = same[np.argsort(-(x[same] @ x[i]), kind="stable")[:K]]
        hits += float((pairs[top] == pairs[i]).sum()) / K
        scored += 1
    return hits / max(scored, 1)


def main(argv: Sequence[str] | None = None) -> int:
    """Run every part and write the JSON."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(bench_real.DEFAULT_DATA))
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--cache-dir", type=Path, default=bench_real.DEFAULT_CACHE)
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    started = time.perf_counter()
    data = bench_real.load_data(bench_real.resolve_data(args.data), args.limit)
    labels = {
        name: bench_real.relevance_labels(data.labels, columns)
        for name, columns in bench_real.RELEVANCES.items()
    }
    colour_labels = bench_real.relevance_labels(data.labels, ("baseColour",))

    def vectors_of(name: str, make: Callable[[], Any]) -> np.ndarray:
        return bench_real.extract_vectors(make(), data, name, args.cache_dir).vectors

    pools = split_pools(vectors_of("explore squeezenet pools", MultiPoolSqueezeNet))
    flipped = vectors_of("explore squeezenet flipped", FlippedSqueezeNet)
    layers = vectors_of("explore squeezenet fire7-9 gem", LayersSqueezeNet)
    colour_default = vectors_of("colour", ColorHistogramExtractor)
    colour_product = vectors_of(
        "explore product colour", lambda: ColorHistogramExtractor(**PRODUCT_COLOUR)
    )
    silhouette = vectors_of("explore silhouette", SilhouetteExtractor)
    avg = pools["avg"]

    def row(name: str, vectors: np.ndarray) -> dict[str, Any]:
        out: dict[str, Any] = {"variant": name}
        for relevance, labs in labels.items():
            out[f"{relevance} P@10"] = round(p_at_k(vectors, labs), 4)
        return out

    descriptor_rows = [
        row("fire9 average (SqueezeNetExtractor)", avg),
        row("fire9 max", pools["max"]),
        row("fire9 GeM p=3", pools["gem"]),
        row("fire7+8+9 GeM", layers),
        row("fire9 average + flip", l2_normalize(avg) + l2_normalize(flipped)),
        row(f"fire9 average, PCA-whitened {WHITEN_DIM}-d", whiten(avg)),
        row(f"fire9 average, DBA k={DBA_K}", database_augment(avg)),
        row(
            f"fire9 average, pseudo-label adapted ({PSEUDO_CLUSTERS} clusters)",
            pseudo_label_adapt(avg),
        ),
    ]
    colour_rows = []
    for name, vectors in (("default colour", colour_default), ("product colour", colour_product)):
        colour_rows.append(
            {
                "colour part": name,
                "colour P@10": round(p_at_k(vectors, colour_labels), 4),
                "type+colour P@10 within type": round(colour_within_type(vectors, data), 4),
            }
        )
    fusion_rows = [
        {
            **row("squeezenet+colour 4:1 (before)", concat_vectors([avg, colour_default], [4, 1])),
            "colour": 0.2,
            "silhouette": 0.0,
        },
    ]
    for c in COLOUR_GRID:
        for s in SHAPE_GRID:
            mix = concat_vectors([avg, colour_product, silhouette], [1 - c - s, c, s])
            fusion_rows.append(
                {**row("squeezenet+product colour+silhouette", mix), "colour": c, "silhouette": s}
            )
    columns = ["variant", *(f"{r} P@10" for r in labels)]
    print_table(descriptor_rows, columns)
    print_table(colour_rows, list(colour_rows[0]))
    print_table(fusion_rows, ["variant", "colour", "silhouette", *columns[1:]])
    write_json(
        args.out,
        {
            "benchmark": "explore_real",
            "command": " ".join(["python", "benchmarks/explore_real.py", *(argv or sys.argv[1:])]),
            "data": {"folder": str(data.folder), "photos": len(data)},
            "machine": machine_info(),
            "cpu": bench_real.cpu_model(),
            "descriptors": descriptor_rows,
            "colour": colour_rows,
            "fusion": fusion_rows,
            "seconds": round(time.perf_counter() - started, 1),
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
