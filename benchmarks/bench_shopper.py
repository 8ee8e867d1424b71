"""Search by a shopper's photo: the product pasted in a cluttered scene, found whole, by its box,
or by automatic localisation (issue 23).

The data is the development split of the Kaggle "Fashion Product Images (Small)"
dataset in ``../shared/data/fashion-products-dev`` (``images/<id>.jpg``, product
photos on white, and ``labels.csv``). The catalogue is every photo, indexed by
``visualsim.Recommender`` with the extractor chosen by ``--extractor``
(``colour``: ``ColorHistogramExtractor()``, fast; ``default``:
``visualsim.product_extractor()``, SqueezeNet + colour + silhouette).

Queries (fixed seed): ``--queries`` products are cut out of their white
background (``visualsim.crop.foreground_mask``), scaled to 50-60 % of their
photo's size and pasted at a random place on a canvas twice as large as the
photo, filled with the products of 16 other random catalogue photos (each
one's bounding box, stretched to a tile, 4 x 4) and Gaussian-blurred (what is
behind a product in a phone photo is out of focus). Each scene is
searched

* ``full``: the whole scene, as a user who draws nothing;
* ``box given``: ``query(box=...)`` with the pasted product's bounding box, as a
  user who draws it;
* ``located``: ``query(box="locate")``, the box from
  ``visualsim.crop.locate_product`` (the whole scene when it finds none).

And the product's own catalogue photo re-encoded as JPEG quality 90 (a packshot
query) is searched whole and with ``box="locate"``, to show that localisation
does not hurt those. Reported: the exact product's top-1 and top-5 rate (``k=5``,
``distinct=False``, so another copy of the same picture cannot take its place),
and the median milliseconds ``locate_product`` takes per decoded query photo.

Usage::

    .venv/bin/python benchmarks/bench_shopper.py                    # colour, 300 queries
    .venv/bin/python benchmarks/bench_shopper.py --extractor default
    .venv/bin/python benchmarks/bench_shopper.py --queries 50 --limit 600   # quick
    .venv/bin/python benchmarks/bench_shopper.py --blur 0 \\
        --out benchmarks/results/shopper-sharp.json
    # (a sharp background: what the localisation cannot rely on)

Prints a Markdown table and writes ``benchmarks/results/shopper.json``
(``shopper-<extractor>.json`` for another extractor than colour).
"""

from __future__ import annotations

import argparse
import csv
import io
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
from _common import machine_info, median, print_table, write_json
from PIL import Image, ImageFilter

import visualsim
from visualsim import ColorHistogramExtractor, Recommender
from visualsim.crop import foreground_mask, locate_product
from visualsim.images import load_image

logger = logging.getLogger("bench_shopper")

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_DATA = Path("..", "shared", "data", "fashion-products-dev")
DEFAULT_OUT = HERE / "results" / "shopper.json"
SEED = 23
K = 5
SCALE = (0.5, 0.6)
"""The product's size in the scene, as a share of its photo's size."""
CANVAS = 2
"""The scene is this many times the photo's width and height."""
TILES = 4
"""Clutter photos along each side of the scene."""
BLUR = 3.0
"""Gaussian blur radius (pixels) of the clutter."""
JPEG_QUALITY = 90


def build_extractor(name: str) -> Any:
    if name == "colour":
        return ColorHistogramExtractor()
    if name == "default":
        return visualsim.product_extractor()
    raise SystemExit(f"bench_shopper: unknown --extractor {name!r} (colour or default)")


def read_ids(folder: Path, limit: int | None) -> list[str]:
    labels = folder / "labels.csv"
    if not labels.is_file():
        raise SystemExit(
            f"bench_shopper: no labels.csv in {folder}: pass --data with a folder holding "
            "labels.csv and images/<id>.jpg"
        )
    with labels.open(newline="", encoding="utf-8") as f:
        ids = [row["id"] for row in csv.DictReader(f)]
    ids = [i for i in ids if (folder / "images" / f"{i}.jpg").is_file()]
    return ids[:limit] if limit is not None else ids


def make_scene(
    photo: np.ndarray, clutter: list[np.ndarray], rng: np.random.Generator, blur: float = BLUR
) -> tuple[np.ndarray, tuple[int, int, int, int]] | None:
    """The product of ``photo`` cut out and pasted on a blurred mosaic of ``clutter``; its box."""
    mask = foreground_mask(photo)
    if mask is None or mask.sum() < 50:
        return None
    rows, cols = np.nonzero(mask)
    top, bottom, left, right = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    h, w = photo.shape[:2]
    scale = rng.uniform(*SCALE)
    part = Image.fromarray(photo[top:bottom, left:right])
    alpha = Image.fromarray((mask[top:bottom, left:right] * 255).astype(np.uint8))
    size = (max(1, round(part.width * scale)), max(1, round(part.height * scale)))
    part, alpha = part.resize(size, Image.LANCZOS), alpha.resize(size, Image.BILINEAR)
    side_h, side_w = h * CANVAS, w * CANVAS
    tile_h, tile_w = -(-side_h // TILES), -(-side_w // TILES)
    canvas = Image.new("RGB", (side_w, side_h))
    for r in range(TILES):
        for c in range(TILES):
            tile = Image.fromarray(_product_part(clutter[(r * TILES + c) % len(clutter)]))
            canvas.paste(tile.resize((tile_w, tile_h)), (c * tile_w, r * tile_h))
    if blur > 0:
        canvas = canvas.filter(ImageFilter.GaussianBlur(blur))
    x = int(rng.integers(0, side_w - size[0] + 1))
    y = int(rng.integers(0, side_h - size[1] + 1))
    canvas.paste(part, (x, y), alpha)
    return np.asarray(canvas), (x, y, x + size[0], y + size[1])


def _product_part(photo: np.ndarray) -> np.ndarray:
    """The product's bounding box in a catalogue photo (its middle half when none is found):
    clutter made of things, not of white studio background."""
    mask = foreground_mask(photo)
    h, w = photo.shape[:2]
    if mask is None or mask.sum() < 50:
        return photo[h // 4 : h - h // 4, w // 4 : w - w // 4]
    rows, cols = np.nonzero(mask)
    return photo[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]


def jpeg(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "JPEG", quality=JPEG_QUALITY)
    return buf.getvalue()


def rank_of(results: Sequence[Any], want: str) -> int | None:
    for r in results:
        if str(r.id) == want:
            return int(r.rank)
    return None


def cpu_model() -> str:
    """The CPU model as ``lscpu`` names it (``/proc/cpuinfo``'s when it cannot run)."""
    import subprocess

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


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(DEFAULT_DATA), help="relative to the repository root")
    p.add_argument("--extractor", default="colour", choices=("colour", "default"))
    p.add_argument("--queries", type=int, default=300)
    p.add_argument("--limit", type=int, default=None, help="only the first N photos (catalogue)")
    p.add_argument("--seed", type=int, default=SEED)
    p.add_argument(
        "--blur",
        type=float,
        default=BLUR,
        help=f"Gaussian blur radius of the clutter (default {BLUR}; 0: as sharp as the product)",
    )
    p.add_argument("--out", type=Path, default=None)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    args = parse_args(argv)
    started = time.perf_counter()
    folder = Path(args.data).expanduser()
    folder = folder if folder.is_absolute() else (ROOT / folder).resolve()
    if not folder.is_dir():
        raise SystemExit(f"bench_shopper: data folder {folder} does not exist")
    ids = read_ids(folder, args.limit)
    paths = [str(folder / "images" / f"{i}.jpg") for i in ids]
    logger.info("%d catalogue photos from %s", len(ids), folder)
    t0 = time.perf_counter()
    rec = Recommender(build_extractor(args.extractor)).fit(paths, ids=ids, progress=False)
    index_s = time.perf_counter() - t0
    logger.info("indexed in %.0f s", index_s)

    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(ids))
    conditions = ("full", "box given", "located", "packshot", "packshot located")
    ranks: dict[str, list[int | None]] = {c: [] for c in conditions}
    locate_ms: list[float] = []
    packshot_locate_ms: list[float] = []
    located_none = packshot_boxed = 0
    used = 0
    for q in order.tolist():
        if used >= args.queries:
            break
        photo = load_image(paths[q])
        others = rng.choice(len(ids) - 1, TILES * TILES, replace=False)
        clutter = [load_image(paths[int(o) + (o >= q)]) for o in others]
        made = make_scene(photo, clutter, rng, args.blur)
        if made is None:
            continue
        used += 1
        scene, box = made
        want = ids[q]
        data = jpeg(scene)  # a phone photo arrives as a JPEG
        decoded = load_image(data)
        t = time.perf_counter()
        found = locate_product(decoded)
        locate_ms.append(1000 * (time.perf_counter() - t))
        located_none += found is None
        search = {"k": K, "distinct": False}
        ranks["full"].append(rank_of(rec.query(data, **search), want))
        ranks["box given"].append(rank_of(rec.query(data, box=box, **search), want))
        ranks["located"].append(rank_of(rec.query(data, box="locate", **search), want))
        pack = jpeg(photo)
        pack_decoded = load_image(pack)
        t = time.perf_counter()
        pack_found = locate_product(pack_decoded)
        packshot_locate_ms.append(1000 * (time.perf_counter() - t))
        packshot_boxed += pack_found is not None
        ranks["packshot"].append(rank_of(rec.query(pack, **search), want))
        ranks["packshot located"].append(rank_of(rec.query(pack, box="locate", **search), want))
        if used % 50 == 0:
            logger.info("%d queries", used)

    rows = []
    for c in conditions:
        got = ranks[c]
        rows.append(
            {
                "query": c,
                "top-1": round(sum(r == 1 for r in got) / len(got), 3),
                f"top-{K}": round(sum(r is not None for r in got) / len(got), 3),
                "n": len(got),
            }
        )
    print(
        f"\nExact product in the top 1 / top {K} among {len(ids):,} catalogue photos "
        f"({args.extractor} extractor), {used} query products:\n"
    )
    table = print_table(rows, ["query", "top-1", f"top-{K}", "n"])
    ms = round(median(locate_ms), 2)
    pack_ms = round(median(packshot_locate_ms), 2)
    cpu = cpu_model()
    print(
        f"\nlocate_product: median {ms} ms per scene photo ({decoded.shape[1]}x"
        f"{decoded.shape[0]}), {pack_ms} ms per packshot; no box found for "
        f"{located_none}/{used} scenes; a box found on {packshot_boxed}/{used} packshots "
        f"(CPU: {cpu})"
    )
    command = "python benchmarks/bench_shopper.py " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    payload = {
        "benchmark": "shopper photos: a product pasted on a cluttered blurred scene, exact "
        "product found whole, by its box, by automatic localisation; packshots whole/located",
        "command": command.strip(),
        "visualsim_version": visualsim.__version__,
        "data": {"folder": folder.name, "n_catalogue": len(ids), "limit": args.limit},
        "machine": {**machine_info(), "cpu_lscpu": cpu},
        "settings": {
            "extractor": args.extractor,
            "extractor_config": rec.extractor_.get_config(),
            "k": K,
            "distinct": False,
            "seed": args.seed,
            "product_scale": list(SCALE),
            "canvas_times_photo": CANVAS,
            "clutter_tiles_per_side": TILES,
            "clutter_blur_radius": args.blur,
            "query_jpeg_quality": JPEG_QUALITY,
        },
        "results": rows,
        "table": table,
        "locate_ms_median": ms,
        "locate_ms_median_packshot": pack_ms,
        "scene_size": [int(decoded.shape[1]), int(decoded.shape[0])],
        "located_none": located_none,
        "packshots_given_a_box": packshot_boxed,
        "index_seconds": round(index_s, 1),
        "total_seconds": round(time.perf_counter() - started, 1),
    }
    out = args.out or (
        DEFAULT_OUT
        if args.extractor == "colour"
        else DEFAULT_OUT.with_name(f"shopper-{args.extractor}.json")
    )
    write_json(out, payload)
    logger.info("wrote %s in %.0f s", out, payload["total_seconds"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
