"""visualsim: visual product recommendation from pixels alone.

Compose an extractor (images → unit vectors) and an index (vectors → nearest
neighbours) into a :class:`Recommender`::

    from visualsim import Recommender, ColorHistogramExtractor, FlatIndex

    rec = Recommender(ColorHistogramExtractor(), FlatIndex()).fit(paths)
    for r in rec.query("red-shirt.jpg", k=5):
        print(r.rank, r.id, round(r.score, 3))

``import visualsim`` is light: TensorFlow, FAISS and matplotlib load only when
a component that needs them is used. Public names are resolved lazily.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._lazy import lazy_exports
from ._version import __version__
from .errors import (
    CatalogConflictError,
    CatalogError,
    ConfigError,
    DatasetError,
    DimensionMismatch,
    DuplicateIdError,
    DuplicateImageError,
    FormatVersionError,
    ImageLoadError,
    InvalidIdError,
    InvalidVectorsError,
    NotFittedError,
    UnknownIdError,
    VisualsimError,
    WeightsUnavailableError,
)

# public name -> module that defines it (imported on first access)
_LAZY: dict[str, str] = {
    # images
    "load_image": "images",
    "resize_image": "images",
    "ImageLike": "images",
    # extractors
    "Extractor": "extractors.base",
    "BaseExtractor": "extractors.base",
    "ExtractedBatch": "extractors.base",
    "register_extractor": "extractors.base",
    "make_extractor": "extractors.base",
    "extractor_from_config": "extractors.base",
    "ColorHistogramExtractor": "extractors.color",
    "KerasExtractor": "extractors.keras",
    "ResNet50Extractor": "extractors.keras",
    "SqueezeNetExtractor": "extractors.squeezenet",
    "ConcatExtractor": "extractors.concat",
    "SilhouetteExtractor": "extractors.shape",
    "PrecomputedVectors": "extractors.precomputed",
    "product_extractor": "extractors.auto",
    "auto_extractor": "extractors.auto",
    "CalibrationError": "extractors.openvino",
    "RuntimeMismatchWarning": "extractors.openvino",
    "check_runtime_compatible": "extractors.openvino",
    "same_vectors": "extractors.spec",
    "vector_differences": "extractors.spec",
    # indexes
    "Index": "indexes.base",
    "register_index": "indexes.base",
    "make_index": "indexes.base",
    "load_index": "indexes.base",
    "verify_index": "indexes.base",
    "SklearnIndex": "indexes.sklearn",
    "FlatIndex": "indexes.faiss",
    "IVFIndex": "indexes.faiss",
    "HNSWIndex": "indexes.faiss",
    "IVFPQIndex": "indexes.faiss",
    "ShardedIndex": "indexes.sharded",
    "MilvusIndex": "indexes.milvus",
    # recommender
    "Recommender": "recommender",
    "Recommendation": "recommender",
    "FailedInput": "recommender",
    "RegionResults": "recommender",
    "Where": "recommender",
    "Distinct": "recommender",
    # syncing a catalogue with a feed
    "SyncOptions": "sync",
    "SyncReport": "sync",
    # duplicate photos
    "DuplicateGroup": "duplicates",
    # the live catalogue's parts
    "Store": "store",
    "Segments": "search",
    "parse_filter": "filters",
    "FilterError": "filters",
    # datasets
    "DatasetItem": "datasets.base",
    "ImageFolder": "datasets.folder",
    "CsvDataset": "datasets.csv",
    "ProductFeed": "feeds",
    "KaggleDataset": "datasets.kaggle",
    "FashionProductImages": "datasets.fashion_products",
    "FashionMNIST": "datasets.fashion_mnist",
    "StanfordOnlineProducts": "datasets.stanford_products",
    "SyntheticProducts": "datasets.synthetic",
    # evaluation and plots
    "evaluate": "evaluation",
    "EvaluationReport": "evaluation",
    "recall_at_k": "evaluation",
    "precision_at_k": "evaluation",
    "average_precision_at_k": "evaluation",
    "mean_average_precision_at_k": "evaluation",
    "evaluate_embeddings": "evaluation",
    "holdout_split": "evaluation",
    "evaluate_holdout": "evaluation",
    "HoldoutSplit": "evaluation",
    # adaptation and cropping
    "ProjectionAdapter": "adaptation",
    "AdaptationReport": "adaptation",
    "adapt_recommender": "adaptation",
    "auto_crop": "crop",
    "plot_recommendations": "plotting",
    "check_index": "testing",  # conformance suites for your own backends
    "check_extractor": "testing",
}

__all__ = [
    "CatalogConflictError",
    "CatalogError",
    "ConfigError",
    "DatasetError",
    "DimensionMismatch",
    "DuplicateIdError",
    "DuplicateImageError",
    "FormatVersionError",
    "ImageLoadError",
    "InvalidIdError",
    "InvalidVectorsError",
    "NotFittedError",
    "UnknownIdError",
    "VisualsimError",
    "WeightsUnavailableError",
    "__version__",
    *sorted(_LAZY),
]


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from .adaptation import AdaptationReport, ProjectionAdapter, adapt_recommender
    from .crop import auto_crop
    from .datasets.base import DatasetItem
    from .datasets.csv import CsvDataset
    from .datasets.fashion_mnist import FashionMNIST
    from .datasets.fashion_products import FashionProductImages
    from .datasets.folder import ImageFolder
    from .datasets.kaggle import KaggleDataset
    from .datasets.stanford_products import StanfordOnlineProducts
    from .datasets.synthetic import SyntheticProducts
    from .duplicates import DuplicateGroup
    from .evaluation import (
        EvaluationReport,
        HoldoutSplit,
        average_precision_at_k,
        evaluate,
        evaluate_embeddings,
        evaluate_holdout,
        holdout_split,
        mean_average_precision_at_k,
        precision_at_k,
        recall_at_k,
    )
    from .extractors.auto import auto_extractor, product_extractor
    from .extractors.base import (
        BaseExtractor,
        ExtractedBatch,
        Extractor,
        extractor_from_config,
        make_extractor,
        register_extractor,
    )
    from .extractors.color import ColorHistogramExtractor
    from .extractors.concat import ConcatExtractor
    from .extractors.keras import KerasExtractor, ResNet50Extractor
    from .extractors.openvino import (
        CalibrationError,
        RuntimeMismatchWarning,
        check_runtime_compatible,
    )
    from .extractors.precomputed import PrecomputedVectors
    from .extractors.shape import SilhouetteExtractor
    from .extractors.spec import same_vectors, vector_differences
    from .extractors.squeezenet import SqueezeNetExtractor
    from .feeds import ProductFeed
    from .images import ImageLike, load_image, resize_image
    from .indexes.base import Index, load_index, make_index, register_index, verify_index
    from .indexes.faiss import FlatIndex, HNSWIndex, IVFIndex, IVFPQIndex
    from .indexes.milvus import MilvusIndex
    from .indexes.sharded import ShardedIndex
    from .indexes.sklearn import SklearnIndex
    from .plotting import plot_recommendations
    from .recommender import Distinct, FailedInput, Recommendation, Recommender, RegionResults
    from .sync import SyncOptions, SyncReport
    from .testing import check_extractor, check_index
