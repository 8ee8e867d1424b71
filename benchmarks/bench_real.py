"""Retrieval quality on real product photos: leave-one-out P@10, R@1 and mAP@10 per extractor.

The data is the development split of the Kaggle "Fashion Product Images (Small)"
dataset in ``../shared/data/fashion-products-dev`` (``images/<id>.jpg``, 224x224,
and ``labels.csv``; see its README). Every photo queries all the others (itself
left out), ranked by exact cosine similarity (``visualsim.evaluation.evaluate_embeddings``:
numpy, in memory-bounded query chunks). A result is relevant when it has

* ``type``: the same ``articleType``;
* ``type+colour``: the same ``articleType`` and the same ``baseColour``;
* ``subCategory``: the same ``subCategory``.

Reported per configuration and relevance: P@10, R@1 (the top hit is relevant),
mAP@10 (``AP@10 = sum_j P@j * rel_j / min(10, R)``) and the upper bound of P@10,
the mean of ``min(10, R) / 10``: a query whose label has only 3 other photos
cannot score more than 0.3. Queries alone in their label (``R = 0``) are not
scored (``n_singleton`` in the JSON), as in ``visualsim.evaluation``.

Configurations are the library's own extractors, so the figures describe what a
user gets; add one with one line in :data:`CONFIGS`. Each extracts every photo
once (throughput in img/s, after a short untimed warm-up); vectors are cached
in ``/tmp/visualsim-bench-real/`` keyed by the extractor's ``get_config()``,
the data and the extractor source files (``--no-cache`` to re-extract).

Also measured: the end-to-end latency of one photo through
``visualsim.Recommender`` (fitted on the whole set with its default index;
``rec.query(path, k=10)`` on 50 fixed photos; p50 ms) for the default
configuration (``visualsim.auto_extractor()``: what ``Recommender()`` uses when
no extractor is named), and a grid of 8 fixed queries with their top 7 results
(``docs/images/real-grid-<config>.png``; titles green = same type and colour,
blue = same type, red = other).

Usage::

    .venv/bin/python benchmarks/bench_real.py            # all configs, ~1 min per CNN config
    .venv/bin/python benchmarks/bench_real.py --configs pixels32,colour --limit 500
    .venv/bin/python benchmarks/bench_real.py --quick    # 400 photos, cheap configs, seconds

Prints the tables and writes ``benchmarks/results/real.json``.
"""

from __future__ import annotations

import argparse
import csv
import functools
import hashlib
import io
import json
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np
from _common import machine_info, median, print_table, timed, write_json

import visualsim
from visualsim.evaluation import evaluate_embeddings
from visualsim.extractors import (
    BaseExtractor,
    ColorHistogramExtractor,
    ConcatExtractor,
    Extractor,
    SqueezeNetExtractor,
)
from visualsim.images import resize_image

logger = logging.getLogger("bench_real")

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_DATA = Path("..", "shared", "data", "fashion-products-dev")
"""The dev split, relative to the repository root."""
DEFAULT_OUT = HERE / "results" / "real.json"
DEFAULT_GRIDS = ROOT / "docs" / "images"
DEFAULT_CACHE = Path("/tmp/visualsim-bench-real")

K = 10
GRID_QUERIES = 8
GRID_RESULTS = 7
GRID_SEED = 0
GRID_DPI = 90
GREEN, BLUE, RED = "#1a9641", "#2166ac", "#d7191c"
"""Title and frame colours of a grid's results: same type and colour, same type, other."""
LATENCY_QUERIES = 50
LATENCY_SEED = 1
WARMUP_IMAGES = 8
QUICK_LIMIT = 400
QUICK_CONFIGS = "pixels32,colour"
FULL_CONFIGS = (
    "pixels32",
    "colour",
    "squeezenet",
    "squeezenet+colour 4:1",
    "squeezenet+colour 1:1",
    "default",
)
"""What a run without ``--configs`` measures."""

RELEVANCES: dict[str, tuple[str, ...]] = {
    "type": ("articleType",),
    "type+colour": ("articleType", "baseColour"),
    "subCategory": ("subCategory",),
}
"""Relevance name -> the labels.csv columns a relevant result must share with the query."""


# -- configurations ------------------------------------------------------------------
class RawPixels(BaseExtractor):
    """The no-model baseline: the photo shrunk to ``side`` x ``side`` RGB, pixels as the vector.

    A small :class:`~visualsim.extractors.BaseExtractor` (threaded decoding,
    unit-length rows), so it is timed and queried like every other configuration.
    """

    name: ClassVar[str] = "pixels"
    default_batch_size: ClassVar[int] = 64

    def __init__(self, side: int = 32, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.side = side

    @property
    def dim(self) -> int:
        """``side * side * 3`` pixel values."""
        return self.side * self.side * 3

    def _prepare(self, image: np.ndarray) -> np.ndarray:
        return resize_image(image, self.side, "stretch")

    def _embed(self, batch: np.ndarray) -> np.ndarray:
        return batch.reshape(len(batch), -1).astype(np.float32)

    def get_config(self) -> dict[str, Any]:
        """The side length."""
        return {"side": self.side}


def squeezenet_colour(shape: float, colour: float) -> ConcatExtractor:
    """Return SqueezeNet and the colour histogram concatenated with weights ``shape:colour``."""
    return ConcatExtractor(
        [SqueezeNetExtractor(), ColorHistogramExtractor()], weights=[shape, colour]
    )


def default_extractor() -> Extractor:
    """Return what a user gets without choosing: ``visualsim.auto_extractor()``'s extractor.

    Where the library has no ``auto_extractor`` (before issue 21, part 2) it is
    SqueezeNet + colour 4:1, the mix the docs recommended then.
    """
    auto = getattr(visualsim, "auto_extractor", None)
    if auto is None:
        return squeezenet_colour(4, 1)
    extractor, _ = auto()
    return extractor


def default_description() -> str:
    """Return the library's one line on which default it picked (or what stands in for it)."""
    auto = getattr(visualsim, "auto_extractor", None)
    if auto is None:
        return "SqueezeNet + colour 4:1 (this visualsim has no auto_extractor)"
    return str(auto()[1])


CONFIGS: dict[str, Callable[[], Extractor]] = {
    "pixels32": RawPixels,
    "colour": ColorHistogramExtractor,
    "squeezenet": SqueezeNetExtractor,
    "squeezenet+colour 4:1": lambda: squeezenet_colour(4, 1),
    "squeezenet+colour 1:1": lambda: squeezenet_colour(1, 1),
    "default": default_extractor,  # visualsim.auto_extractor(): what a user gets by default
}
"""Configuration name -> a function that builds its extractor. One line per configuration."""


# -- data ----------------------------------------------------------------------------
@dataclass
class Data:
    """The photos of the benchmark and their labels, row-aligned."""

    folder: Path
    ids: list[str]
    paths: list[str]
    labels: dict[str, list[str]]
    """Column of labels.csv -> one value per photo ("" where missing)."""

    def __len__(self) -> int:
        return len(self.ids)


def resolve_data(data: str | os.PathLike[str]) -> Path:
    """Return the data folder, a relative path taken from the repository root."""
    path = Path(data).expanduser()
    return path if path.is_absolute() else (ROOT / path).resolve()


def load_data(folder: Path, limit: int | None = None) -> Data:
    """Read ``labels.csv`` (its first ``limit`` rows) and check every photo is there."""
    labels_csv = folder / "labels.csv"
    if not labels_csv.is_file():
        raise SystemExit(
            f"bench_real: no labels.csv in {folder}: pass --data with a folder holding "
            "labels.csv and images/<id>.jpg (the dev split lives in "
            f"{DEFAULT_DATA.as_posix()}, relative to the repository root)"
        )
    with labels_csv.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if limit is not None:
        rows = rows[:limit]
    columns = {c for r in RELEVANCES.values() for c in r}
    missing_cols = columns - set(rows[0] if rows else ())
    if not rows or missing_cols:
        raise SystemExit(f"bench_real: {labels_csv} has no rows or lacks {sorted(missing_cols)}")
    ids = [r["id"] for r in rows]
    paths = [str(folder / "images" / f"{i}.jpg") for i in ids]
    absent = [p for p in paths if not Path(p).is_file()]
    if absent:
        raise SystemExit(f"bench_real: {len(absent)} photos missing, e.g. {absent[0]}")
    labels = {c: [(r.get(c) or "").strip() for r in rows] for c in sorted(columns)}
    return Data(folder, ids, paths, labels)


def relevance_labels(labels: dict[str, list[str]], columns: Sequence[str]) -> list[str | None]:
    """Return one label per photo joining ``columns`` with "/"; ``None`` if any part is empty."""
    out: list[str | None] = []
    for parts in zip(*(labels[c] for c in columns), strict=True):
        out.append(None if any(not p for p in parts) else "/".join(parts))
    return out


def precision_upper_bound(labels: Sequence[str | None], k: int = K) -> float:
    """Return the best P@k any ranking can reach: mean of ``min(k, R) / k`` over scored queries.

    ``R`` is the number of other photos with the query's label; queries with
    no label or ``R = 0`` are not scored, as in ``evaluate_embeddings``.
    """
    known = [lab for lab in labels if lab is not None]
    _, inverse, counts = np.unique(known, return_inverse=True, return_counts=True)
    others = counts[inverse] - 1
    others = others[others > 0]
    return float(np.mean(np.minimum(others, k) / k)) if others.size else float("nan")


# -- extraction, cached --------------------------------------------------------------
@functools.cache
def _source_fingerprint() -> str:
    """Hash of the extractor code (extractors/, images.py, crop.py) so edits invalidate caches.

    Taken once per run, near when the code was imported: edits made while a run
    goes on do not split its cache.
    """
    pkg = Path(visualsim.__file__).resolve().parent
    files = [*sorted((pkg / "extractors").glob("*.py")), pkg / "images.py", pkg / "crop.py"]
    h = hashlib.sha1()
    for f in files:
        if f.is_file():
            h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:12]


def cache_key(extractor_config: dict[str, Any], data: Data) -> str:
    """Return the cache digest of one extractor's vectors on ``data``."""
    ids_hash = hashlib.sha1("\n".join(data.ids).encode()).hexdigest()
    key = {
        "config": extractor_config,
        "data": str(data.folder),
        "n": len(data),
        "ids": ids_hash,
        "source": _source_fingerprint(),
        "v": 1,
    }
    return hashlib.sha1(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


def slug(name: str) -> str:
    """Return ``name`` safe for a file name ("squeezenet+colour 4:1" -> "squeezenet+colour-4-1")."""
    return re.sub(r"[^A-Za-z0-9+._]+", "-", name).strip("-")


def extractor_config(extractor: Extractor) -> dict[str, Any]:
    """Return ``{"class": ..., "config": get_config()}`` of an extractor."""
    return {"class": type(extractor).__name__, "config": extractor.get_config()}


@dataclass
class Vectors:
    """One configuration's vectors and how fast they were extracted."""

    vectors: np.ndarray
    extraction: dict[str, Any]


def extract_vectors(extractor: Extractor, data: Data, name: str, cache_dir: Path | None) -> Vectors:
    """Return the vectors of every photo (from the cache when it has them) and their timing."""
    config = extractor_config(extractor)
    digest = cache_key(config, data)
    if cache_dir is not None:
        for hit in sorted(cache_dir.glob(f"*-{digest}.npy")):
            meta = json.loads(hit.with_suffix(".json").read_text(encoding="utf-8"))
            logger.info("%s: cached vectors %s", name, hit.name)
            return Vectors(np.load(hit), {**meta, "cached": True})
    logger.info("%s: extracting %d photos", name, len(data))
    extractor.extract(data.paths[:WARMUP_IMAGES], progress=False)  # builds the model, untimed
    out: list[np.ndarray] = []

    def run() -> int:
        out.append(extractor.extract(data.paths, progress=False))
        return len(data)

    load_before = os.getloadavg()[0]
    took = timed(run)
    vectors = out[0]
    meta = {
        "images": took.items,
        "seconds": round(took.wall_s, 2),
        "img_per_s": round(took.per_s, 1),
        "img_per_cpu_s": round(took.per_cpu_s, 1),
        "measured_at": time.strftime("%Y-%m-%d %H:%M:%S"),
        "loadavg_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "cached": False,
    }
    logger.info("%s: %.0f img/s", name, took.per_s)
    if cache_dir is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        stem = cache_dir / f"{slug(name)}-{digest}"
        tmp = stem.with_name(stem.name + ".tmp.npy")
        np.save(tmp, vectors)
        stem.with_suffix(".json").write_text(json.dumps(meta), encoding="utf-8")
        tmp.replace(stem.with_name(stem.name + ".npy"))
    return Vectors(vectors, meta)


# -- metrics -------------------------------------------------------------------------
def score(vectors: np.ndarray, data: Data, config: str) -> list[dict[str, Any]]:
    """Return one row of leave-one-out metrics per relevance for ``vectors``."""
    rows = []
    for relevance, columns in RELEVANCES.items():
        labels = relevance_labels(data.labels, columns)
        report = evaluate_embeddings(vectors, labels, k=(1, K), label_name=relevance)
        rows.append(
            {
                "config": config,
                "relevance": relevance,
                f"P@{K}": round(report[f"precision@{K}"], 4),
                "R@1": round(report["recall@1"], 4),
                f"mAP@{K}": round(report[f"map@{K}"], 4),
                f"P@{K} bound": round(precision_upper_bound(labels, K), 4),
                "chance P": round(report.chance_precision, 4),
                "n_queries": report.n_queries,
                "n_singleton": report.n_singleton,
                "n_unlabelled": report.n_unlabelled,
            }
        )
    return rows


def nearest(vectors: np.ndarray, rows: Sequence[int], k: int) -> np.ndarray:
    """Return the ``k`` nearest other rows of each of ``rows`` by cosine (ties: lower row first)."""
    scores = vectors[np.asarray(rows)] @ vectors.T
    scores[np.arange(len(rows)), np.asarray(rows)] = -np.inf
    order = np.lexsort((np.broadcast_to(np.arange(scores.shape[1]), scores.shape), -scores))
    return order[:, :k]


# -- latency -------------------------------------------------------------------------
def query_latency(
    make: Callable[[], Extractor], data: Data, n_queries: int = LATENCY_QUERIES
) -> dict[str, Any]:
    """Return ms per ``Recommender.query(path, k=10)`` on fixed photos, fitted on ``data``."""
    rec = visualsim.Recommender(make())
    start = time.perf_counter()
    rec.fit(data.paths, ids=data.ids, progress=False)
    fit_s = time.perf_counter() - start
    rng = np.random.default_rng(LATENCY_SEED)
    picks = rng.choice(len(data), size=min(n_queries, len(data)), replace=False)
    rec.query(data.paths[int(picks[0])], k=K)  # warm-up, untimed
    times = []
    for i in picks:
        t = time.perf_counter()
        rec.query(data.paths[int(i)], k=K)
        times.append((time.perf_counter() - t) * 1000)
    times.sort()
    return {
        "queries": len(times),
        "p50_ms": round(median(times), 2),
        "p90_ms": round(float(np.percentile(times, 90)), 2),
        "min_ms": round(times[0], 2),
        "index": rec.index_.name,
        "fit_seconds": round(fit_s, 1),
    }


# -- grid ----------------------------------------------------------------------------
def title_colour(query: dict[str, str], result: dict[str, str]) -> str:
    """Green: same articleType and baseColour; blue: same articleType; red: other."""
    if query["articleType"] != result["articleType"]:
        return RED
    return GREEN if query["baseColour"] == result["baseColour"] else BLUE


def write_grid(vectors: np.ndarray, data: Data, config: str, path: Path) -> dict[str, Any]:
    """Draw 8 fixed queries and their top 7 results; write a palette PNG to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    rng = np.random.default_rng(GRID_SEED)
    queries = sorted(rng.choice(len(data), size=min(GRID_QUERIES, len(data)), replace=False))
    found = nearest(vectors, queries, min(GRID_RESULTS, len(data) - 1))
    cols = found.shape[1] + 1

    def label(i: int) -> dict[str, str]:
        return {c: data.labels[c][i] for c in ("articleType", "baseColour")}

    fig, axes = plt.subplots(
        len(queries), cols, figsize=(1.45 * cols, 1.65 * len(queries)), squeeze=False
    )
    for r, (q, row) in enumerate(zip(queries, found, strict=True)):
        for c, i in enumerate([q, *row]):
            ax = axes[r][c]
            ax.imshow(Image.open(data.paths[int(i)]).convert("RGB"))
            ax.set_xticks([])
            ax.set_yticks([])
            lab = label(int(i))
            colour = "black" if c == 0 else title_colour(label(int(q)), lab)
            text = f"{lab['articleType']} / {lab['baseColour']}"
            ax.set_title(("query: " if c == 0 else "") + text, fontsize=6.5, color=colour, pad=2)
            for spine in ax.spines.values():
                spine.set_color(colour)
                spine.set_linewidth(1.0 if c == 0 else 2.5)
    fig.suptitle(
        f"{config}: query, then its top {cols - 1} (green: same type and colour, "
        "blue: same type, red: other)",
        fontsize=8,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.98), h_pad=0.6, w_pad=0.2)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=GRID_DPI)
    plt.close(fig)
    buf.seek(0)
    path.parent.mkdir(parents=True, exist_ok=True)
    # an adaptive 256-colour palette keeps a grid of photos well under 400 KB
    Image.open(buf).convert("RGB").quantize(256).save(path, optimize=True)
    return {
        "path": str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path),
        "config": config,
        "seed": GRID_SEED,
        "queries": [data.ids[int(q)] for q in queries],
        "bytes": path.stat().st_size,
    }


# -- run -----------------------------------------------------------------------------
def cpu_model() -> str:
    """Return the CPU model as ``lscpu`` names it (``/proc/cpuinfo``'s when it cannot run)."""
    try:
        text = subprocess.run(
            ["lscpu"], capture_output=True, text=True, check=True, timeout=10
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return str(machine_info()["cpu"])
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "Model name":
            return value.strip()
    return str(machine_info()["cpu"])


def code_info() -> dict[str, Any]:
    """Return which visualsim code ran: its folder, its git commit, uncommitted edits in it."""
    pkg = Path(visualsim.__file__).resolve().parent
    info: dict[str, Any] = {"imported_from": str(pkg), "extractor_source": _source_fingerprint()}
    git = ["git", "-C", str(pkg)]
    try:
        info["commit"] = subprocess.run(
            [*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        status = subprocess.run(
            [*git, "status", "--porcelain", "--", "."],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout
        info["uncommitted_edits"] = bool(status.strip())
    except (OSError, subprocess.SubprocessError):
        info["commit"] = None  # not a git checkout
    return info


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Return the command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--data",
        default=str(DEFAULT_DATA),
        help="folder with labels.csv and images/<id>.jpg; relative to the repository root "
        f"(default {DEFAULT_DATA.as_posix()})",
    )
    p.add_argument(
        "--configs",
        default=None,
        help=f"comma-separated names from: {', '.join(CONFIGS)} (default {','.join(FULL_CONFIGS)})",
    )
    p.add_argument("--limit", type=int, default=None, help="only the first N rows of labels.csv")
    p.add_argument(
        "--out", type=Path, default=None, help="JSON to write (default results/real.json)"
    )
    p.add_argument(
        "--grids", type=Path, default=None, help="folder for the grid PNG (default docs/images)"
    )
    p.add_argument("--grid-config", default=None, help="configuration drawn (default 'default')")
    p.add_argument("--no-grid", action="store_true", help="draw no grid")
    p.add_argument(
        "--latency-config", default=None, help="configuration timed end to end (default 'default')"
    )
    p.add_argument("--latency-queries", type=int, default=LATENCY_QUERIES)
    p.add_argument("--no-latency", action="store_true", help="skip the query-latency figure")
    p.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    p.add_argument("--no-cache", action="store_true", help="neither read nor write cached vectors")
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke run: first {QUICK_LIMIT} photos, {QUICK_CONFIGS}; writes real-quick.json "
        "and the grid into the cache folder",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.limit = args.limit or QUICK_LIMIT
        args.configs = args.configs or QUICK_CONFIGS
        args.grid_config = args.grid_config or "colour"
        args.latency_config = args.latency_config or "colour"
        args.out = args.out or args.cache_dir / "real-quick.json"
        args.grids = args.grids or args.cache_dir
    args.configs = [c.strip() for c in (args.configs or ",".join(FULL_CONFIGS)).split(",")]
    args.grid_config = args.grid_config or "default"
    args.latency_config = args.latency_config or "default"
    args.out = args.out or DEFAULT_OUT
    args.grids = args.grids or DEFAULT_GRIDS
    unknown = [
        c for c in [*args.configs, args.grid_config, args.latency_config] if c not in CONFIGS
    ]
    if unknown:
        p.error(f"unknown configuration(s) {unknown}; known: {', '.join(CONFIGS)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; print the tables; write the JSON and the grid."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    args = parse_args(argv)
    started = time.perf_counter()
    folder = resolve_data(args.data)
    if not folder.is_dir():
        raise SystemExit(
            f"bench_real: data folder {folder} does not exist (from --data {args.data!r}, "
            "relative to the repository root); it should hold labels.csv and images/<id>.jpg"
        )
    data = load_data(folder, args.limit)
    logger.info("%d photos from %s", len(data), folder)
    cache_dir = None if args.no_cache else args.cache_dir

    configs: dict[str, Any] = {}
    vectors: dict[str, np.ndarray] = {}
    wanted = list(dict.fromkeys([*args.configs, *([] if args.no_grid else [args.grid_config])]))
    _source_fingerprint()  # the code this run imported
    done: dict[str, Vectors] = {}  # one extraction per distinct extractor config, cache or not
    for name in wanted:
        extractor = CONFIGS[name]()
        key = json.dumps(extractor_config(extractor), sort_keys=True, default=str)
        got = done.get(key) or extract_vectors(extractor, data, name, cache_dir)
        done[key] = got
        vectors[name] = got.vectors
        configs[name] = {
            **extractor_config(extractor),
            "dim": int(got.vectors.shape[1]),
            "extraction": got.extraction,
        }

    results = [row for name in args.configs for row in score(vectors[name], data, name)]
    latency = None
    if not args.no_latency:
        logger.info("%s: timing single-photo queries", args.latency_config)
        latency = {
            "config": args.latency_config,
            **query_latency(CONFIGS[args.latency_config], data, args.latency_queries),
        }
    grid = None
    if not args.no_grid:
        path = args.grids / f"real-grid-{slug(args.grid_config)}.png"
        grid = write_grid(vectors[args.grid_config], data, args.grid_config, path)

    by = {(r["config"], r["relevance"]): r for r in results}
    summary = []
    for name in args.configs:
        extraction = configs[name]["extraction"]
        row: dict[str, Any] = {
            "config": name,
            "img/s": extraction["img_per_s"],
            "img/cpu-s": extraction["img_per_cpu_s"],
        }
        for rel in RELEVANCES:
            row[f"{rel} P@{K}"] = by[(name, rel)][f"P@{K}"]
        summary.append(row)
    bound: dict[str, Any] = {"config": f"(upper bound of P@{K})"}
    bound |= {f"{rel} P@{K}": by[(args.configs[0], rel)][f"P@{K} bound"] for rel in RELEVANCES}
    print(f"\nLeave-one-out on {len(data):,} real photos ({folder.name}), exact cosine:\n")
    print_table(
        [*summary, bound],
        ["config", *(f"{r} P@{K}" for r in RELEVANCES), "img/s", "img/cpu-s"],
    )
    print()
    print_table(
        results, ["config", "relevance", f"P@{K}", "R@1", f"mAP@{K}", f"P@{K} bound", "n_queries"]
    )
    if latency is not None:
        print(
            f"\nsingle-photo query through Recommender ({latency['config']}, {latency['index']}, "
            f"k={K}): p50 {latency['p50_ms']} ms, p90 {latency['p90_ms']} ms "
            f"over {latency['queries']} photos"
        )
    if grid is not None:
        print(f"grid: {grid['path']} ({grid['bytes'] / 1024:.0f} KB)")

    command = "python benchmarks/bench_real.py " + " ".join(sys.argv[1:] if argv is None else argv)
    payload = {
        "benchmark": "retrieval quality on real product photos, leave-one-out, exact cosine",
        "command": command.strip(),
        "visualsim_version": visualsim.__version__,
        "visualsim": code_info(),
        "data": {
            "folder": str(
                folder.relative_to(ROOT.parent) if folder.is_relative_to(ROOT.parent) else folder
            ),
            "n_images": len(data),
            "limit": args.limit,
            "n_labels": {c: len(set(v)) for c, v in data.labels.items()},
        },
        "machine": {**machine_info(), "cpu_lscpu": cpu_model()},
        "settings": {
            "k": K,
            "relevance": {rel: list(cols) for rel, cols in RELEVANCES.items()},
            "metrics": {
                f"P@{K}": f"share of the top {K} that is relevant",
                "R@1": "the top hit is relevant",
                f"mAP@{K}": f"mean of sum_j P@j * rel_j / min({K}, R)",
                f"P@{K} bound": f"mean of min({K}, R) / {K}: the best any ranking can do",
            },
            "skipped": "queries with no other photo of their label (n_singleton) are not scored",
            "warmup_images": WARMUP_IMAGES,
        },
        "default": default_description(),
        "configs": configs,
        "results": results,
        "latency": latency,
        "grid": grid,
        "total_seconds": round(time.perf_counter() - started, 1),
    }
    write_json(args.out, payload)
    logger.info("wrote %s in %.0f s", args.out, payload["total_seconds"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
