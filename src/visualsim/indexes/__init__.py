"""Nearest-neighbour indexes over unit vectors, behind one contract.

Pick one with :func:`make_index` (``"flat"``, ``"ivf"``, ``"hnsw"``,
``"ivfpq"``, ``"sklearn"``, ``"sharded"``, ``"milvus"``) or by class; reload any saved one
with :func:`load_index`. ``docs/indexes.md`` says which to choose.

FAISS and scikit-learn are imported only when a backend needs them; the
classes below are resolved lazily too, so importing this package is cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports
from .base import (
    FORMAT_VERSION,
    INDEXES,
    BaseIndex,
    Id,
    IdMap,
    Index,
    check_ids,
    check_k,
    check_vectors,
    load_array,
    load_index,
    make_index,
    register_index,
    save_array,
    verify_index,
)

# class name -> submodule, read from the registry's built-ins (one list of backends)
_LAZY = {
    target.partition(":")[2]: target.partition(":")[0].rpartition(".")[2]
    for target in INDEXES.builtins.values()
}

__all__ = [
    "FORMAT_VERSION",
    "INDEXES",
    "BaseIndex",
    "FlatIndex",
    "HNSWIndex",
    "IVFIndex",
    "IVFPQIndex",
    "Id",
    "IdMap",
    "Index",
    "MilvusIndex",
    "ShardedIndex",
    "SklearnIndex",
    "check_ids",
    "check_k",
    "check_vectors",
    "load_array",
    "load_index",
    "make_index",
    "register_index",
    "save_array",
    "verify_index",
]


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from .faiss import FlatIndex, HNSWIndex, IVFIndex, IVFPQIndex
    from .milvus import MilvusIndex
    from .sharded import ShardedIndex
    from .sklearn import SklearnIndex
