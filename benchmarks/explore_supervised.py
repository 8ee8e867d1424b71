"""Would a head trained on the shop's labels make a better default? A record, on real photos.

``explore_real.py`` showed that no label-free change moves type P@10 by more than
0.007. This script asks the next question: train a small head on the shop's own
labels (``articleType`` and ``baseColour``), ship it, and use it as the default.
It measures that on ``../shared/data/fashion-products-dev`` with two protocols:

- **products never seen**: the products are split in two halves, stratified by
  ``articleType``; the head learns on one half and is judged (leave-one-out
  P@10) on the other, both ways. This is what a shipped head would do on a new
  catalogue of the same kinds of products.
- **types never seen**: the ``articleType`` values are split in two halves; the
  head learns on the products of one half and is judged on the products of the
  other. This is what a shipped head would do on a catalogue of other kinds of
  products (furniture, or fashion types the training set lacks).

The head: SqueezeNet fire7+8+9 GeM, the product colour and the silhouette (the
default's parts) -> a 768-unit ReLU layer -> a 128-d type embedding and a 32-d
colour embedding, each trained with a cosine-softmax (scale 16) on its label;
the vector searched is ``[type probabilities^1/2, colour probabilities^1/2,
embeddings]`` with shares :data:`MIXES`, against the default extractor's vectors on
the same photos.

Run::

    python benchmarks/explore_supervised.py        # ~6 min on 2 cores (TensorFlow)
    python benchmarks/explore_supervised.py --limit 600 --epochs 5

Writes ``benchmarks/results/real-supervised.json`` and prints one table.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_real
from _common import machine_info, print_table, write_json
from explore_real import LayersSqueezeNet, p_at_k

from visualsim.extractors.auto import PRODUCT_COLOUR, product_extractor
from visualsim.extractors.base import l2_normalize
from visualsim.extractors.color import ColorHistogramExtractor
from visualsim.extractors.shape import SilhouetteExtractor

logger = logging.getLogger("explore_supervised")
OUT = Path(__file__).resolve().parent / "results" / "real-supervised.json"
HIDDEN = 768
TYPE_DIM = 128
COLOUR_DIM = 32
SCALE = 16.0
MIXES: tuple[tuple[float, float, float], ...] = ((0.6, 0.2, 0.2), (0.4, 0.2, 0.4), (0.3, 0.2, 0.5))
"""Shares of the cosine: type probabilities, colour probabilities, the head's embeddings
(half the default's vector, half the learned embedding)."""


def stratified_halves(labels: Sequence[str], seed: int = 0) -> np.ndarray:
    """Return 0/1 per row: each label's rows split in two halves at random."""
    labels_arr = np.asarray(labels)
    rng = np.random.default_rng(seed)
    half = np.zeros(len(labels_arr), dtype=np.int64)
    for value in np.unique(labels_arr):
        rows = np.flatnonzero(labels_arr == value)
        rng.shuffle(rows)
        half[rows[: len(rows) // 2]] = 1
    return half


def label_halves(labels: Sequence[str], seed: int = 1) -> np.ndarray:
    """Return 0/1 per row: the label values split in two halves, each row follows its value."""
    values = np.unique(np.asarray(labels))
    np.random.default_rng(seed).shuffle(values)
    second = set(values[: len(values) // 2].tolist())
    return np.array([1 if v in second else 0 for v in labels], dtype=np.int64)


def softmax_sqrt(logits: np.ndarray) -> np.ndarray:
    """Return the square root of the softmax of each row (cosine = Bhattacharyya)."""
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z)
    return np.sqrt(p / p.sum(axis=1, keepdims=True)).astype(np.float32)


def train_head(
    features: np.ndarray, types: Sequence[str], colours: Sequence[str], epochs: int, seed: int
) -> Any:
    """Train the head on labelled rows; return a Keras model: features -> 4 outputs."""
    import keras
    import tensorflow as tf

    class CosineClassifier(keras.layers.Layer):  # type: ignore[misc]
        def __init__(self, classes: int, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.classes = classes

        def build(self, shape: Any) -> None:
            self.w = self.add_weight(shape=(shape[-1], self.classes), initializer="glorot_uniform")

        def call(self, x: Any) -> Any:
            return SCALE * tf.matmul(tf.math.l2_normalize(x, 1), tf.math.l2_normalize(self.w, 0))

    keras.utils.set_random_seed(seed)
    type_names, type_codes = np.unique(np.asarray(types), return_inverse=True)
    colour_names, colour_codes = np.unique(np.asarray(colours), return_inverse=True)
    layers = keras.layers
    inputs = keras.Input((features.shape[1],))
    hidden = layers.Dropout(0.3)(
        layers.Dense(HIDDEN, activation="relu")(layers.Dropout(0.1)(inputs))
    )
    type_emb = layers.Dense(TYPE_DIM)(hidden)
    colour_emb = layers.Dense(COLOUR_DIM)(hidden)
    type_logits = CosineClassifier(len(type_names))(type_emb)
    colour_logits = CosineClassifier(len(colour_names))(colour_emb)
    model = keras.Model(inputs, [type_logits, colour_logits, type_emb, colour_emb])
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(
        keras.optimizers.Adam(1e-3), loss=[loss, loss, None, None], loss_weights=[1, 0.5, 0, 0]
    )
    model.fit(features, [type_codes, colour_codes], epochs=epochs, batch_size=64, verbose=0)
    return model


def mixes(model: Any, features: np.ndarray, default: np.ndarray) -> dict[str, np.ndarray]:
    """Return the vectors searched for each share in :data:`MIXES` (plus the embedding alone)."""
    type_logits, colour_logits, type_emb, colour_emb = (
        np.asarray(o) for o in model.predict(features, verbose=0)
    )
    look = l2_normalize(
        np.hstack([l2_normalize(type_emb), l2_normalize(colour_emb) * 0.5, default])
    )
    out = {"learned embeddings alone": l2_normalize(np.hstack([type_emb, colour_emb]))}
    for t, c, v in MIXES:
        out[f"probabilities {t:.1f}/{c:.1f}, look {v:.1f}"] = np.hstack(
            [
                np.sqrt(t) * softmax_sqrt(type_logits),
                np.sqrt(c) * softmax_sqrt(colour_logits),
                np.sqrt(v) * look,
            ]
        )
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Run both protocols and write the JSON."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(bench_real.DEFAULT_DATA))
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--cache-dir", type=Path, default=bench_real.DEFAULT_CACHE)
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    started = time.perf_counter()
    data = bench_real.load_data(bench_real.resolve_data(args.data), args.limit)

    def vectors_of(name: str, extractor: Any) -> np.ndarray:
        return bench_real.extract_vectors(extractor, data, name, args.cache_dir).vectors

    layers = vectors_of("explore squeezenet fire7-9 gem", LayersSqueezeNet())
    colour = vectors_of("explore product colour", ColorHistogramExtractor(**PRODUCT_COLOUR))
    silhouette = vectors_of("explore silhouette", SilhouetteExtractor())
    default = l2_normalize(vectors_of("default", product_extractor()))
    features = np.hstack([layers, l2_normalize(colour), l2_normalize(silhouette)])
    types = data.labels["articleType"]
    colours = data.labels["baseColour"]
    relevance = {
        name: np.array(bench_real.relevance_labels(data.labels, columns), dtype=object)
        for name, columns in bench_real.RELEVANCES.items()
    }
    protocols = {
        "products never seen": stratified_halves(types),
        "types never seen": label_halves(types),
    }
    rows: list[dict[str, Any]] = []
    for protocol, halves in protocols.items():
        sums: dict[str, dict[str, float]] = {}
        for judged in (0, 1):
            train = np.flatnonzero(halves != judged)
            test = np.flatnonzero(halves == judged)
            model = train_head(
                features[train],
                [types[i] for i in train],
                [colours[i] for i in train],
                args.epochs,
                seed=judged,
            )
            candidates = {"default (product_extractor)": default[test]}
            candidates.update(mixes(model, features[test], default[test]))
            for name, vectors in candidates.items():
                scores = sums.setdefault(name, {})
                for rel, labels in relevance.items():
                    got = p_at_k(vectors, list(labels[test]))
                    scores[rel] = scores.get(rel, 0.0) + got / 2
        for name, scores in sums.items():
            rows.append(
                {
                    "protocol": protocol,
                    "variant": name,
                    **{f"{rel} P@10": round(v, 4) for rel, v in scores.items()},
                }
            )
    print("supervised head, judged on photos it did not learn from (P@10, mean of both halves)")
    print_table(rows, ["protocol", "variant", *(f"{rel} P@10" for rel in relevance)])
    write_json(
        args.out,
        {
            "benchmark": "explore_supervised",
            "command": " ".join(["python", "benchmarks/explore_supervised.py", *(argv or [])]),
            "data": {"folder": str(data.folder), "photos": len(data)},
            "machine": machine_info(),
            "cpu": bench_real.cpu_model(),
            "epochs": args.epochs,
            "results": rows,
            "seconds": round(time.perf_counter() - started, 1),
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
