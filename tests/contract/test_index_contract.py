"""The index conformance suite (`visualsim.testing.check_index`) on every backend.

The toy backend below is the whole of what a new backend needs: its module
(a class) and its registration. It passes the suite and a `Recommender` uses
it, searching through it, saving and loading it.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from visualsim import Recommender, UnknownIdError
from visualsim.indexes import (
    BaseIndex,
    FlatIndex,
    HNSWIndex,
    IVFIndex,
    IVFPQIndex,
    ShardedIndex,
    SklearnIndex,
    register_index,
)
from visualsim.indexes.base import INDEXES, load_array, save_array
from visualsim.indexes.milvus import MILVUS_URI_ENV, MilvusIndex
from visualsim.search import Segments
from visualsim.testing import check_index, clustered_vectors

# ----------------------------------------------------------------------------- the toy backend


@register_index("toy-numpy", overwrite=True)
class ToyIndex(BaseIndex):
    """Brute force in numpy: a third-party backend written against the contract."""

    is_exact = True
    retrains = False
    filters_natively = False
    searches: ClassVar[int] = 0  # how often any toy index was searched (for the tests)

    def __init__(self, *, dim: int | None = None) -> None:
        super().__init__(dim=dim)
        self.x_ = np.empty((0, dim or 0), dtype=np.float32)
        self.labels_ = np.empty(0, dtype=np.int64)

    def _add(self, x: np.ndarray, labels: np.ndarray) -> None:
        self.x_ = np.vstack([self.x_.reshape(-1, x.shape[1]), x])
        self.labels_ = np.concatenate([self.labels_, labels])

    def _remove(self, labels: np.ndarray) -> None:
        keep = ~np.isin(self.labels_, labels)
        self.x_, self.labels_ = self.x_[keep], self.labels_[keep]

    def _search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        ToyIndex.searches += 1
        sims = q @ self.x_.T
        top = np.argsort(-sims, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(sims, top, axis=1), self.labels_[top]

    def _stored_rows(self, labels: np.ndarray) -> np.ndarray | None:
        return self.x_[np.searchsorted(self.labels_, labels)] if len(labels) else None

    def _save_state(self, directory: Path) -> dict[str, Any]:
        save_array(directory / "x.npy", self.x_)
        return {}

    def _load_state(self, directory: Path, state: Mapping[str, Any]) -> None:
        shape = (len(self), self.dim) if len(self) else (0, None)
        self.x_ = load_array(directory / "x.npy", dtypes=("float32",), shape=shape)
        self.labels_ = self.labels  # the stored labels, in the order the rows were saved


@register_index("toy-numpy-approximate", overwrite=True)
class ApproximateToyIndex(ToyIndex):
    """The same index declared approximate: a catalogue then keeps and searches it."""

    is_exact = False


# ----------------------------------------------------------------------------- every backend

_collections = itertools.count()
FLAGS = ("is_exact", "retrains", "filters_natively")


@pytest.fixture(scope="module")
def milvus_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("milvus") / "contract.db")


BACKENDS: dict[str, Callable[[], Any]] = {
    "flat": FlatIndex,
    "sklearn-brute": lambda: SklearnIndex(algorithm="brute"),
    "sklearn-ball_tree": lambda: SklearnIndex(algorithm="ball_tree"),
    "sklearn-kd_tree": lambda: SklearnIndex(algorithm="kd_tree"),
    "sharded-flat": lambda: ShardedIndex(n_shards=3),
    "sharded-hnsw": lambda: ShardedIndex(n_shards=2, shard="hnsw", shard_params={"M": 8}),
    "ivf-untrained": lambda: IVFIndex(nlist=64),  # too few vectors to train: exact
    "ivf-trained": lambda: IVFIndex(nlist=4, nprobe=2),
    "hnsw": HNSWIndex,
    "ivfpq-untrained": IVFPQIndex,
    "ivfpq-trained": lambda: IVFPQIndex(nlist=2, m=8, nbits=4, nprobe=2),
    "toy": ToyIndex,
    "toy-approximate": ApproximateToyIndex,
}
# enough vectors for IVF-PQ (2 lists, 16 codes a sub-vector) to train
SIZES = {"ivfpq-trained": 1000, "ivfpq-no-rerank": 1000}


@pytest.mark.parametrize("name", list(BACKENDS))
def test_every_backend_passes_the_index_contract(name: str, tmp_path: Path) -> None:
    check_index(BACKENDS[name], n=SIZES.get(name, 500), directory=tmp_path)


def test_the_suite_trains_what_it_should() -> None:
    # the trained variants really search approximately (the suite covers that path)
    for factory in (BACKENDS["ivf-trained"], BACKENDS["ivfpq-trained"]):
        index = factory()
        index.add(clustered_vectors(1000, 16), list(range(1000)))
        index.search(clustered_vectors(1, 16), 1)
        assert index.is_trained


def test_ivfpq_without_reranking_keeps_the_contract_within_its_code_error(tmp_path: Path) -> None:
    # scores come from the compressed codes: approximate scores, lower recall
    factory = lambda: IVFPQIndex(nlist=2, m=8, nbits=4, nprobe=2, rerank=0)  # noqa: E731
    check_index(factory, n=1000, min_recall=0.35, score_tolerance=0.35, directory=tmp_path)
    with pytest.raises(AssertionError, match="scores are off"):
        check_index(factory, n=1000, min_recall=0.35, directory=tmp_path)


def test_milvus_lite_passes_the_index_contract(
    milvus_db: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(MILVUS_URI_ENV, milvus_db)  # a saved index names no server itself

    def factory() -> MilvusIndex:
        return MilvusIndex(uri=milvus_db, collection=f"contract_{next(_collections)}")

    check_index(factory, directory=tmp_path)


# ----------------------------------------------------------------------------- the flags


def test_backends_declare_what_the_catalogue_relies_on() -> None:
    flags = {
        cls: (cls.is_exact, cls.retrains, cls.filters_natively)
        for cls in (FlatIndex, SklearnIndex, IVFIndex, IVFPQIndex, HNSWIndex, ShardedIndex)
    }
    assert flags == {
        FlatIndex: (True, False, False),
        SklearnIndex: (True, False, False),
        IVFIndex: (False, True, False),
        IVFPQIndex: (False, True, False),
        HNSWIndex: (False, False, False),
        ShardedIndex: (False, False, False),
    }
    assert (MilvusIndex.is_exact, MilvusIndex.retrains, MilvusIndex.filters_natively) == (
        False,
        False,
        True,
    )
    # the earlier names still answer, and setting either one sets both
    assert FlatIndex.exact and not HNSWIndex.exact and MilvusIndex.supports_where

    class OldStyle(ToyIndex):
        exact = False

    assert OldStyle.is_exact is False and ToyIndex.exact is True


def test_every_builtin_is_registered_exported_and_flagged() -> None:
    import visualsim.indexes

    assert sorted(INDEXES.builtins) == sorted(
        ["flat", "ivf", "hnsw", "ivfpq", "sklearn", "sharded", "milvus"]
    )
    for name in INDEXES.builtins:
        cls = INDEXES.get(name)
        assert cls.name == name and getattr(visualsim.indexes, cls.__name__) is cls
        assert cls.__name__ in visualsim.indexes.__all__
        assert all(type(getattr(cls, f)) is bool for f in FLAGS)


def test_the_catalogue_follows_the_flags_not_the_class() -> None:
    assert Segments(ToyIndex()).exact and not Segments(ApproximateToyIndex()).exact
    assert Segments(IVFIndex()).retrains() and not Segments(HNSWIndex()).retrains()

    class Filtering(ApproximateToyIndex):
        filters_natively = True

    assert Segments(Filtering()).native and not Segments(FlatIndex()).native


def test_stored_vectors_are_public_where_a_backend_keeps_them() -> None:
    x = clustered_vectors(100, 8)
    for cls in (FlatIndex, HNSWIndex, SklearnIndex, ToyIndex):
        index = cls()
        index.add(x * 3.0, list(range(100)))
        np.testing.assert_allclose(index.stored_vectors([7, 3, 7]), x[[7, 3, 7]], atol=1e-6)
        with pytest.raises(UnknownIdError, match="'nope'"):
            index.stored_vectors([7, "nope"])
    ivf = IVFIndex(nlist=2)
    ivf.add(x, list(range(100)))
    assert ivf.stored_vectors([7]) is None  # IVF does not hand its vectors out


# ----------------------------------------------------------------------------- the toy in use


@pytest.mark.parametrize("cls", [ToyIndex, ApproximateToyIndex])
def test_a_recommender_runs_on_the_toy_backend(cls: type[ToyIndex], tmp_path: Path) -> None:
    x = clustered_vectors(300, 12, seed=4)
    ids = [f"p{i}" for i in range(300)]
    rec = Recommender.from_vectors(x, ids, index=cls())
    rec.compact()  # every row into the index (an approximate one is then searched)
    before = ToyIndex.searches
    got = rec.query_vector(x[17], k=3)
    assert got[0].id == "p17" and got[0].score == pytest.approx(1.0, abs=1e-5)
    searched = ToyIndex.searches > before
    assert searched == (not cls.is_exact)  # an exact one is scored from the store instead
    rec.save(tmp_path / "shop")
    loaded = Recommender.load(tmp_path / "shop")
    assert [r.id for r in loaded.query_vector(x[17], k=3)] == [r.id for r in got]
    assert loaded.index_.name == cls.name


# ----------------------------------------------------------------------------- the suite can fail


class _OffScores(ApproximateToyIndex):
    def _search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores, labels = super()._search(q, k)
        return scores * 0.5, labels


class _Pickles(ToyIndex):
    def _save_state(self, directory: Path) -> dict[str, Any]:
        np.save(directory / "x.npy", np.array([self.x_], dtype=object), allow_pickle=True)
        return {}


class _Forgetful(ApproximateToyIndex):
    def _search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        sims = q @ self.x_.T  # searches only the first half of what it holds
        half = max(k, len(self.labels_) // 2)
        top = np.argsort(-sims[:, :half], axis=1, kind="stable")[:, :k]
        return np.take_along_axis(sims, top, axis=1), self.labels_[top]


class _NoFlags:
    """Not a BaseIndex and without the flags the catalogue reads."""

    name = "no-flags"


register_index("toy-off-scores", overwrite=True)(_OffScores)
register_index("toy-pickles", overwrite=True)(_Pickles)
register_index("toy-forgetful", overwrite=True)(_Forgetful)


@pytest.mark.parametrize(
    ("factory", "kwargs", "message"),
    [
        (_OffScores, {}, "cosine"),
        (_Pickles, {}, "pickle"),
        (_Forgetful, {"min_recall": 0.9}, "recall"),
        (_NoFlags, {}, "is_exact must be a bool"),
        (lambda: _Forgetful(), {"exact": True}, "differ from brute force"),
    ],
)
def test_the_suite_names_a_broken_promise(
    factory: Callable[[], Any], kwargs: dict[str, Any], message: str, tmp_path: Path
) -> None:
    with pytest.raises(AssertionError, match=message):
        check_index(factory, directory=tmp_path, **kwargs)


def test_an_unregistered_index_is_refused_by_name(tmp_path: Path) -> None:
    class Unregistered(ToyIndex):
        pass

    Unregistered.name = "toy-numpy"  # inherits the attribute but is not the registered class
    with pytest.raises(AssertionError, match="cannot be saved"):
        check_index(Unregistered, directory=tmp_path)
