"""Datasets: catalogues as streams of ``(id, image, metadata)`` items.

Every adapter here is an iterable of :class:`DatasetItem` with a length,
random access (``dataset[i]``) and :meth:`~BaseDataset.to_frame` for its
metadata; images are paths or arrays made on demand, so iterating a large
catalogue never holds it in memory. Pass any of them to
``Recommender.fit(dataset)``; ids and metadata come from the items.

- :class:`ImageFolder` — a directory, one sub-folder per class;
- :class:`CsvDataset` — a table of image paths plus metadata;
- :class:`KaggleDataset` — a Kaggle dataset, downloaded once with the official client;
- :class:`FashionProductImages` — Kaggle's Myntra fashion catalogue (44k products);
- :class:`FashionMNIST` — 70k 28x28 Zalando product images, 10 classes;
- :class:`StanfordOnlineProducts` — the product-retrieval benchmark;
- :class:`SyntheticProducts` — drawn, labelled, seeded products for demos and tests.

Importing this package loads neither pandas nor the Kaggle client nor TensorFlow.
"""

from __future__ import annotations

from .base import (
    BaseDataset,
    Dataset,
    DatasetItem,
    ItemId,
    MissingImagesWarning,
    RowIssue,
    iter_items,
)
from .csv import CsvDataset
from .fashion_mnist import FashionMNIST
from .fashion_products import FashionProductImages
from .folder import IMAGE_EXTENSIONS, ImageFolder
from .kaggle import (
    KaggleCredentials,
    KaggleCredentialsWarning,
    KaggleDataset,
    download_kaggle_dataset,
    find_kaggle_credentials,
)
from .stanford_products import StanfordOnlineProducts
from .synthetic import SyntheticProducts

__all__ = [
    "IMAGE_EXTENSIONS",
    "BaseDataset",
    "CsvDataset",
    "Dataset",
    "DatasetItem",
    "FashionMNIST",
    "FashionProductImages",
    "ImageFolder",
    "ItemId",
    "KaggleCredentials",
    "KaggleCredentialsWarning",
    "KaggleDataset",
    "MissingImagesWarning",
    "RowIssue",
    "StanfordOnlineProducts",
    "SyntheticProducts",
    "download_kaggle_dataset",
    "find_kaggle_credentials",
    "iter_items",
]
