"""Label-free ideas for SqueezeNet on real product photos: crops, regions, layers, re-ranking.

Issue 21 asks for better retrieval on real catalogue photos without labels. This
script measures, as leave-one-out P@10 (type / type+colour / subCategory) on the
development split (``../shared/data/fashion-products-dev``), ideas that
``explore_real.py`` did not try:

1. **product-crop normalisation**: every photo cut to its product's foreground
   box and padded square on its background (``crop="auto"``, i.e.
   :func:`visualsim.crop.auto_crop`), then SqueezeNet; and crop + full photo
   concatenated or averaged;
2. **regional pooling (R-MAC)** of ``fire9``: max over square regions at
   ``L`` scales (Tolias et al. 2016: ``l`` x ``l`` regions of side
   ``2 * min(W, H) / (l + 1)``, ``l = 1..L``), each L2-normalised, summed; also
   regional average and GeM; at 227 px (the model's size) and 320 px;
3. **middle layers**: GeM (p=3) of ``fire5`` / ``fire6`` added with a small weight;
4. the best of these **fused** with the default's product colour and silhouette
   (13:3:4 and a small grid; colour and silhouette also on the cropped photo);
5. **re-ranking** of the default vectors' kNN graph, no labels: alpha query
   expansion, k-reciprocal re-ranking (Zhong et al. 2017) and diffusion
   (``(I - alpha S)^-1`` on the symmetric kNN graph, Iscen et al. 2017).

One SqueezeNet pass per input (full / cropped, 227 / 320 px) computes every
pooling at once; vectors are cached by ``bench_real.extract_vectors``.

Run::

    nice -n 19 .venv/bin/python benchmarks/explore_crop_regions.py           # ~10 min, 2 cores
    nice -n 19 .venv/bin/python benchmarks/explore_crop_regions.py --limit 400

Writes ``benchmarks/results/real-explore-crop.json`` and prints one table per part.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_real
from _common import machine_info, print_table, write_json
from bench_quality import concat_vectors

from visualsim.evaluation import evaluate_embeddings
from visualsim.extractors.auto import PRODUCT_COLOUR, PRODUCT_WEIGHTS
from visualsim.extractors.base import l2_normalize
from visualsim.extractors.color import ColorHistogramExtractor
from visualsim.extractors.shape import SilhouetteExtractor
from visualsim.extractors.squeezenet import (
    FIRES,
    POOLS,
    SqueezeNetExtractor,
    _assign_weights,
    _build_squeezenet,
    read_weights,
)
from visualsim.images import resize_image

logger = logging.getLogger("explore_crop_regions")
OUT = Path(__file__).resolve().parent / "results" / "real-explore-crop.json"
K = 10
SIDES = (227, 320)
GEM_P = 3.0
HEADS: tuple[tuple[str, int], ...] = (
    ("avg", 512),  # fire9 global average: SqueezeNetExtractor's vector at 227 px
    ("max", 512),
    ("rmac2", 512),  # R-MAC, L=2 (1 + 4 regions)
    ("rmac3", 512),  # R-MAC, L=3 (1 + 4 + 9 regions)
    ("ravg3", 512),  # regional average, L=3
    ("rgem3", 512),  # regional GeM, L=3
    ("gem5", 256),  # fire5 (before pool5) GeM
    ("gem6", 384),  # fire6 GeM
)
"""The blocks of :class:`RegionalSqueezeNet`'s vector, in order: name, width."""
LAYER_WEIGHTS = (0.1, 0.2, 0.3)
COLOUR_GRID = (0.10, 0.15, 0.20, 0.25)
SHAPE_GRID = (0.10, 0.20)
QE_ALPHA = 3.0
QE_N = (2, 3, 5)
KRECIP = tuple(
    (k1, k2, lam) for k1 in (10, 20, 30, 40) for k2 in (3, 6, 10) for lam in (0.3, 0.6, 0.8)
)
DIFFUSION = ((10, 0.8), (30, 0.9), (50, 0.99))
DIFFUSION_GAMMA = 3.0


# -- the extractor -------------------------------------------------------------------
def regions(side: int, levels: int) -> list[tuple[int, int, int, int]]:
    """Return R-MAC's square regions ``(top, left, height, width)`` of a ``side`` x ``side`` map."""
    out = []
    for level in range(1, levels + 1):
        width = max(1, math.floor(2 * side / (level + 1))) if level > 1 else side
        step = (side - width) / (level - 1) if level > 1 else 0.0
        starts = [round(i * step) for i in range(level)]
        out.extend((top, left, width, width) for top in starts for left in starts)
    return out


def build_trunk(keras: Any, side: int) -> Any:
    """Return SqueezeNet's trunk for a ``side`` px input with outputs fire5, fire6 and fire9."""
    import visualsim.extractors.squeezenet as sq

    # _build_squeezenet sizes its input from the module's INPUT_SIZE: build at ``side``
    saved = sq.INPUT_SIZE
    sq.INPUT_SIZE = side
    try:
        trunk, _ = _build_squeezenet(keras)
    finally:
        sq.INPUT_SIZE = saved
    outputs = [trunk.get_layer(n).output for n in ("fire5_concat", "fire6_concat")]
    return keras.Model(trunk.input, [*outputs, trunk.output]), trunk


class RegionalSqueezeNet(SqueezeNetExtractor):
    """SqueezeNet whose vector holds every pooling of :data:`HEADS`, side by side."""

    def __init__(self, *, side: int = 227, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.side = side

    @property
    def dim(self) -> int:
        """The widths of :data:`HEADS`, summed."""
        return sum(width for _, width in HEADS)

    def get_config(self) -> dict[str, Any]:
        """SqueezeNet's config, the input side and the heads (the cache key)."""
        return {**super().get_config(), "side": self.side, "heads": [h for h, _ in HEADS]}

    def _draft_size(self) -> tuple[int, int]:
        return (self.side, self.side)

    def _prepare(self, image: np.ndarray) -> np.ndarray:
        return resize_image(image, self.side, self.resize)

    def _make_functions(self) -> tuple[Any, Any]:
        from visualsim.extractors.squeezenet import _import_keras

        _, _, to_input = self._network()  # imports TensorFlow quietly, first
        import tensorflow as tf

        keras = _import_keras()
        taps, trunk = build_trunk(keras, self.side)
        _assign_weights(trunk.layers, read_weights(self._resolve_weights_path()))
        assert FIRES[-1][0] == "fire9" and "fire5" in POOLS

        def gem(fmap: Any) -> Any:
            return tf.reduce_mean(tf.maximum(fmap, 1e-6) ** GEM_P, axis=[1, 2]) ** (1 / GEM_P)

        def regional(fmap: Any, levels: int, pool: Callable[[Any], Any]) -> Any:
            side = int(fmap.shape[1])
            total = 0.0
            for top, left, h, w in regions(side, levels):
                part = pool(fmap[:, top : top + h, left : left + w, :])
                total = total + tf.math.l2_normalize(part, axis=1)
            return total

        def rmax(x: Any) -> Any:
            return tf.reduce_max(x, axis=[1, 2])

        def ravg(x: Any) -> Any:
            return tf.reduce_mean(x, axis=[1, 2])

        @tf.function(input_signature=[tf.TensorSpec([None, self.side, self.side, 3], tf.uint8)])
        def embed(images: Any) -> Any:
            fire5, fire6, fire9 = taps(to_input(images), training=False)
            blocks = {
                "avg": ravg(fire9),
                "max": rmax(fire9),
                "rmac2": regional(fire9, 2, rmax),
                "rmac3": regional(fire9, 3, rmax),
                "ravg3": regional(fire9, 3, ravg),
                "rgem3": regional(fire9, 3, gem),
                "gem5": gem(fire5),
                "gem6": gem(fire6),
            }
            return tf.concat([blocks[name] for name, _ in HEADS], axis=1)

        return embed, None


def split_heads(vectors: np.ndarray) -> dict[str, np.ndarray]:
    """Return :class:`RegionalSqueezeNet`'s vector cut into its :data:`HEADS`, each normalised."""
    cuts = np.cumsum([width for _, width in HEADS])[:-1]
    blocks = np.split(vectors, cuts, axis=1)
    return {name: l2_normalize(b) for (name, _), b in zip(HEADS, blocks, strict=True)}


# -- scoring -------------------------------------------------------------------------
def label_codes(labels: Sequence[str | None]) -> tuple[np.ndarray, np.ndarray]:
    """Return integer codes (-1 unlabelled) and a mask of the scored queries (not singletons)."""
    values = {v: i for i, v in enumerate(sorted({lab for lab in labels if lab is not None}))}
    codes = np.array([-1 if lab is None else values[lab] for lab in labels])
    counts = np.bincount(codes[codes >= 0], minlength=len(values))
    scored = (codes >= 0) & (counts[np.maximum(codes, 0)] >= 2)
    return codes, scored


def p_at_k_neighbours(neighbours: np.ndarray, labels: Sequence[str | None]) -> float:
    """P@10 of given top-10 lists (self excluded), scored as ``evaluate_embeddings`` does."""
    codes, scored = label_codes(labels)
    hits = codes[neighbours[scored, :K]] == codes[scored, None]
    return float(hits.mean(axis=1).mean())


def top_k(scores: np.ndarray, k: int = K) -> np.ndarray:
    """Return the ``k`` best columns of each row of ``scores``, the diagonal (self) left out."""
    s = scores.copy()
    np.fill_diagonal(s, -np.inf)
    part = np.argpartition(-s, k, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(s, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


# -- re-ranking ----------------------------------------------------------------------
def query_expansion(x: np.ndarray, n: int, alpha: float = QE_ALPHA) -> np.ndarray:
    """Alpha-QE: each query re-issued as itself + its ``n`` nearest, weighted ``sim^alpha``."""
    sims = x @ x.T
    nn = top_k(sims, n)
    w = np.maximum(np.take_along_axis(sims, nn, axis=1), 0.0) ** alpha
    queries = l2_normalize(x + (x[nn] * w[:, :, None]).sum(axis=1))
    return queries @ x.T


def k_reciprocal(x: np.ndarray, k1: int, k2: int, lam: float) -> np.ndarray:
    """Zhong et al. 2017 re-ranking; returns scores (higher = nearer), the query in its gallery."""
    n = len(x)
    original = np.clip(2.0 - 2.0 * (x @ x.T), 0.0, None)  # squared euclidean of unit vectors
    original = original / original.max(axis=0, keepdims=True)
    rank = np.argsort(original, axis=1, kind="stable")[:, : k1 + 1]
    v = np.zeros((n, n), np.float32)
    half = round(k1 / 2) + 1
    for i in range(n):
        forward = rank[i]
        recip = forward[(rank[forward] == i).any(axis=1)]
        expansion = recip
        for cand in recip:
            cand_forward = rank[cand, :half]
            cand_recip = cand_forward[(rank[cand_forward, :half] == cand).any(axis=1)]
            if len(np.intersect1d(cand_recip, recip)) > 2 / 3 * len(cand_recip):
                expansion = np.union1d(expansion, cand_recip)
        expansion = np.unique(expansion)
        weight = np.exp(-original[i, expansion])
        v[i, expansion] = weight / weight.sum()
    if k2 > 1:
        v = v[rank[:, :k2]].mean(axis=1)
    inverted = [np.flatnonzero(v[:, j]) for j in range(n)]
    jaccard = np.zeros((n, n), np.float32)
    for i in range(n):
        mins = np.zeros(n, np.float32)
        for j in np.flatnonzero(v[i]):
            rows = inverted[j]
            mins[rows] += np.minimum(v[i, j], v[rows, j])
        jaccard[i] = 1.0 - mins / (2.0 - mins)
    return -(jaccard * (1 - lam) + original * lam)


def diffusion(x: np.ndarray, k: int, alpha: float, gamma: float = DIFFUSION_GAMMA) -> np.ndarray:
    """Scores ``(I - alpha S)^-1`` of the symmetric kNN graph (weights ``sim^gamma``)."""
    n = len(x)
    sims = x @ x.T
    nn = top_k(sims, k)
    w = np.zeros((n, n), np.float64)
    rows = np.repeat(np.arange(n), k)
    w[rows, nn.ravel()] = np.maximum(sims[rows, nn.ravel()], 0.0) ** gamma
    w = np.minimum(w, w.T)  # mutual neighbours only
    d = w.sum(axis=1)
    d[d == 0] = 1.0
    s = w / np.sqrt(d)[:, None] / np.sqrt(d)[None, :]
    return np.linalg.inv(np.eye(n) - alpha * s)


# -- the run -------------------------------------------------------------------------
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

    def vectors_of(name: str, make: Callable[[], Any]) -> np.ndarray:
        return bench_real.extract_vectors(make(), data, name, args.cache_dir).vectors

    def row(name: str, vectors: np.ndarray, **extra: Any) -> dict[str, Any]:
        out: dict[str, Any] = {"variant": name, **extra}
        for relevance, labs in labels.items():
            report = evaluate_embeddings(vectors, list(labs), k=K)
            out[f"{relevance} P@10"] = round(float(report[f"precision@{K}"]), 4)
        logger.info("%s", out)
        return out

    def ranked_row(name: str, scores: Callable[[], np.ndarray], **extra: Any) -> dict[str, Any]:
        start = time.perf_counter()
        nn = top_k(scores())
        seconds = time.perf_counter() - start
        out: dict[str, Any] = {"variant": name, **extra, "seconds": round(seconds, 1)}
        for relevance, labs in labels.items():
            out[f"{relevance} P@10"] = round(p_at_k_neighbours(nn, labs), 4)
        logger.info("%s", out)
        return out

    heads: dict[tuple[str, int], dict[str, np.ndarray]] = {}
    for side in SIDES:
        for crop in (None, "auto"):
            tag = f"explore regional squeezenet {side} {'crop' if crop else 'full'}"
            heads[(tag.split()[-1], side)] = split_heads(
                vectors_of(tag, lambda s=side, c=crop: RegionalSqueezeNet(side=s, crop=c))
            )
    plain = vectors_of("explore squeezenet", SqueezeNetExtractor)
    colour = vectors_of("explore product colour", lambda: ColorHistogramExtractor(**PRODUCT_COLOUR))
    silhouette = vectors_of("explore silhouette", SilhouetteExtractor)
    colour_crop = vectors_of(
        "explore product colour crop",
        lambda: ColorHistogramExtractor(**PRODUCT_COLOUR, crop="auto"),
    )
    silhouette_crop = vectors_of(
        "explore silhouette crop", lambda: SilhouetteExtractor(crop="auto")
    )
    full, crop = heads[("full", 227)], heads[("crop", 227)]
    drift = float(np.abs(l2_normalize(plain) - full["avg"]).max())
    logger.info("RegionalSqueezeNet avg vs SqueezeNetExtractor: max abs diff %.2e", drift)

    # 1-3: descriptors
    descriptor_rows = [row("SqueezeNetExtractor (fire9 avg, 227 full)", plain)]
    for (where, side), h in heads.items():
        for name in ("avg", "max", "rmac2", "rmac3", "ravg3", "rgem3"):
            descriptor_rows.append(row(f"{name} {side} {where}", h[name]))
    candidates: dict[str, np.ndarray] = {}
    for name in ("avg", "rmac3", "rgem3"):
        candidates[f"{name} full+crop concat"] = concat_vectors([full[name], crop[name]], [1, 1])
        candidates[f"{name} full+crop mean"] = full[name] + crop[name]
    for name, vec in candidates.items():
        descriptor_rows.append(row(f"{name} (227)", vec))
    for w in LAYER_WEIGHTS:
        for layer in ("gem5", "gem6"):
            descriptor_rows.append(
                row(
                    f"avg + {layer} (227 full)",
                    concat_vectors([full["avg"], full[layer]], [1 - w, w]),
                    layer_weight=w,
                )
            )
        descriptor_rows.append(
            row(
                "avg + gem5 + gem6 (227 full)",
                concat_vectors([full["avg"], full["gem5"], full["gem6"]], [1 - w, w / 2, w / 2]),
                layer_weight=w,
            )
        )

    # 4: fusion of the best descriptors with colour and silhouette
    pool: dict[str, np.ndarray] = {"avg 227 full": full["avg"]}
    for (where, side), h in heads.items():
        for name in ("avg", "rmac2", "rmac3", "ravg3", "rgem3"):
            pool[f"{name} {side} {where}"] = h[name]
    pool.update({f"{k} (227)": v for k, v in candidates.items()})
    pool["avg + gem5 + gem6 (227 full)"] = concat_vectors(
        [full["avg"], full["gem5"], full["gem6"]], [0.7, 0.15, 0.15]
    )
    by_type = {r["variant"]: r["type P@10"] for r in descriptor_rows}
    best = sorted(
        (k for k in pool if k in by_type and k != "avg 227 full"),  # mixes: the w=0.3 row
        key=lambda k: -by_type[k],
    )[:3]
    shares = [w / sum(PRODUCT_WEIGHTS) for w in PRODUCT_WEIGHTS]
    fusion_rows = []
    for name in ["avg 227 full", *best]:
        for parts_name, col, sil in (
            ("full", colour, silhouette),
            ("crop", colour_crop, silhouette_crop),
        ):
            grid = [(shares[1], shares[2])]
            grid += [(c, s) for c in COLOUR_GRID for s in SHAPE_GRID if (c, s) != grid[0]]
            for c, s in grid:
                mix = concat_vectors([pool[name], col, sil], [1 - c - s, c, s])
                fusion_rows.append(
                    row(
                        f"{name} + colour + silhouette ({parts_name} photo)",
                        mix,
                        colour=round(c, 3),
                        silhouette=round(s, 3),
                    )
                )

    # 5: re-ranking of the default's vectors (and of the best fused mix)
    default = l2_normalize(concat_vectors([plain, colour, silhouette], list(PRODUCT_WEIGHTS)))
    rerank_rows = [ranked_row("default 13:3:4, cosine", lambda: default @ default.T)]
    for n in QE_N:
        rerank_rows.append(
            ranked_row(
                "default, alpha-QE", lambda n=n: query_expansion(default, n), n=n, alpha=QE_ALPHA
            )
        )
    for k1, k2, lam in KRECIP:
        rerank_rows.append(
            ranked_row(
                "default, k-reciprocal",
                lambda k1=k1, k2=k2, lam=lam: k_reciprocal(default, k1, k2, lam),
                k1=k1,
                k2=k2,
                **{"lambda": lam},
            )
        )
    for k, alpha in DIFFUSION:
        rerank_rows.append(
            ranked_row(
                "default, diffusion",
                lambda k=k, alpha=alpha: diffusion(default, k, alpha),
                k=k,
                alpha=alpha,
            )
        )

    columns = [f"{r} P@10" for r in labels]
    print_table(descriptor_rows, ["variant", "layer_weight", *columns])
    print_table(fusion_rows, ["variant", "colour", "silhouette", *columns])
    print_table(
        rerank_rows, ["variant", "n", "k1", "k2", "lambda", "k", "alpha", *columns, "seconds"]
    )
    # the winners: rows at least as good as their baseline on all three relevances
    summary = []
    for part, rows, base in (
        ("descriptor (vs SqueezeNetExtractor)", descriptor_rows, descriptor_rows[0]),
        ("fusion (vs the default 13:3:4)", fusion_rows, fusion_rows[0]),
        ("re-ranking (vs the default 13:3:4)", rerank_rows, rerank_rows[0]),
    ):
        better = [r for r in rows[1:] if all(r[c] >= base[c] for c in columns)]
        for r in sorted(better, key=lambda r: -sum(r[c] - base[c] for c in columns))[:3]:
            deltas = {f"{c} gain": round(r[c] - base[c], 4) for c in columns}
            summary.append({"part": part, **r, **deltas})
    settings = ["layer_weight", "colour", "silhouette", "k1", "k2", "lambda"]
    print_table(summary, ["part", "variant", *settings, *(f"{c} gain" for c in columns)])
    write_json(
        args.out,
        {
            "benchmark": "explore_crop_regions",
            "command": " ".join(
                ["python", "benchmarks/explore_crop_regions.py", *(argv or sys.argv[1:])]
            ),
            "data": {"folder": str(data.folder), "photos": len(data)},
            "machine": machine_info(),
            "cpu": bench_real.cpu_model(),
            "regional_avg_vs_squeezenet_max_abs_diff": drift,
            "descriptors": descriptor_rows,
            "fusion": fusion_rows,
            "rerank": rerank_rows,
            "best": summary,
            "seconds": round(time.perf_counter() - started, 1),
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
