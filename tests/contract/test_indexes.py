"""Specification of the index contract, run against every backend."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from visualsim import (
    CatalogError,
    ConfigError,
    DimensionMismatch,
    DuplicateIdError,
    FormatVersionError,
    InvalidIdError,
    InvalidVectorsError,
    NotFittedError,
    UnknownIdError,
)
from visualsim.indexes import (
    BaseIndex,
    FlatIndex,
    HNSWIndex,
    Index,
    IVFIndex,
    IVFPQIndex,
    ShardedIndex,
    SklearnIndex,
    check_vectors,
    load_index,
    make_index,
    register_index,
)

EXACT: dict[str, Callable[[], Index]] = {
    "flat": FlatIndex,
    "sklearn-brute": lambda: SklearnIndex(algorithm="brute"),
    "sklearn-ball_tree": lambda: SklearnIndex(algorithm="ball_tree"),
    "sklearn-kd_tree": lambda: SklearnIndex(algorithm="kd_tree"),
    "sharded": lambda: ShardedIndex(n_shards=3),
}
APPROXIMATE: dict[str, Callable[[], Index]] = {
    "ivf-fallback": lambda: IVFIndex(nlist=64),  # too few vectors to train: exact
    "ivf-trained": lambda: IVFIndex(nlist=4, nprobe=4),
    "hnsw": HNSWIndex,
    "ivfpq-fallback": IVFPQIndex,  # too few vectors to train: exact
    "ivfpq-trained": lambda: IVFPQIndex(nlist=2, m=8, nbits=4, nprobe=2),
    "ivfpq-no-rerank": lambda: IVFPQIndex(nlist=2, m=8, nbits=4, nprobe=2, rerank=0),
    "sharded-hnsw": lambda: ShardedIndex(n_shards=2, shard="hnsw", shard_params={"M": 8}),
}
ALL = {**EXACT, **APPROXIMATE}
# which of ALL find exactly the neighbours numpy does on the small data used below
EXACT_ON_SMALL_DATA = [*EXACT, "ivf-fallback", "ivf-trained", "ivfpq-fallback", "hnsw"]


def clustered(n: int, d: int, *, seed: int = 0) -> np.ndarray:
    """Unit vectors in n // 50 clusters, each spread over its own 32-d subspace."""
    rng = np.random.default_rng(seed)
    n_clusters = max(10, n // 50)
    centers = rng.standard_normal((n_clusters, 64)) @ rng.standard_normal((64, d))
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    assign = rng.integers(0, n_clusters, n)
    x = centers[assign] + 0.5 * rng.standard_normal((n, d)) / np.sqrt(d)
    for c in range(n_clusters):
        rows = np.flatnonzero(assign == c)
        basis = rng.standard_normal((32, d)) / np.sqrt(d)
        x[rows] += 2.0 * (rng.standard_normal((len(rows), 32)) @ basis) / np.sqrt(32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32)


def brute_force(x: np.ndarray, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k cosine scores and row numbers by numpy, ties in row order."""
    # in float64 throughout: a float32 norm of a tiny vector (1.7e-21, found by
    # Hypothesis) squares into subnormals and loses digits the indexes keep
    x, q = x.astype(np.float64), q.astype(np.float64)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    sims = qn @ xn.T
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sims, order, axis=1), order


def assert_matches_brute_force(
    index: Index, x: np.ndarray, ids: list, q: np.ndarray, k: int, tol: float = 1e-5
) -> None:
    scores, got = index.search(q, k)
    want_scores, _ = brute_force(x, q, k)
    assert scores.dtype == np.float32
    assert scores.shape == (len(q), min(k, len(x)))
    np.testing.assert_allclose(scores, want_scores, atol=tol)
    row_of = {id_: i for i, id_ in enumerate(ids)}
    _, all_rows = brute_force(x, q, len(x))
    true_sims = brute_force(x, q, len(x))[0]
    for qi, row in enumerate(got):
        assert len(set(row)) == len(row)
        truth = dict(zip(all_rows[qi].tolist(), true_sims[qi].tolist(), strict=True))
        for id_, score in zip(row, scores[qi].tolist(), strict=True):
            # the id's true score is the score reported: right neighbour, ties aside
            assert abs(truth[row_of[id_]] - score) < tol


@pytest.fixture(scope="module")
def small() -> tuple[np.ndarray, list[str], np.ndarray]:
    x = clustered(700, 16, seed=1)
    q = clustered(20, 16, seed=2)
    return x, [f"item-{i}" for i in range(len(x))], q


def build(name: str, x: np.ndarray, ids: list) -> Index:
    index = ALL[name]()
    index.add(x, ids)
    return index


def results_equal(a: Index, b: Index, q: np.ndarray, k: int) -> None:
    sa, ia = a.search(q, k)
    sb, ib = b.search(q, k)
    assert ia == ib
    np.testing.assert_allclose(sa, sb, atol=1e-6)


# ----------------------------------------------------------------------------- exactness

vector_rows = st.integers(1, 40).flatmap(
    lambda n: st.integers(1, 6).flatmap(
        lambda d: st.tuples(
            arrays(np.float32, (n, d), elements=st.integers(-4, 4).map(float)),
            arrays(np.float32, (3, d), elements=st.floats(-10, 10, width=32)),
        )
    )
)


@pytest.mark.parametrize("name", list(EXACT))
@settings(deadline=None, max_examples=40, suppress_health_check=[HealthCheck.filter_too_much])
@given(data=vector_rows, k=st.integers(1, 50))
def test_exact_backends_agree_with_numpy_brute_force(name: str, data, k: int) -> None:
    x, q = data
    x = x[np.linalg.norm(x, axis=1) > 0]
    q = q[np.linalg.norm(q, axis=1) > 0]
    if not len(x) or not len(q):
        return
    ids = [f"v{i}" if i % 2 else i for i in range(len(x))]
    index = EXACT[name]()
    index.add(x, ids)
    assert_matches_brute_force(index, x, ids, q, k)


@pytest.mark.parametrize("name", EXACT_ON_SMALL_DATA)
def test_every_backend_matches_brute_force_on_small_data(name: str, small) -> None:
    x, ids, q = small
    assert_matches_brute_force(build(name, x, ids), x, ids, q, 10)


@pytest.mark.parametrize("name", list(ALL))
def test_ties_are_broken_by_insertion_order(name: str) -> None:
    rng = np.random.default_rng(0)
    base = rng.standard_normal((1, 16)).astype(np.float32)
    x = np.vstack([rng.standard_normal((700, 16)).astype(np.float32), np.repeat(base, 3, axis=0)])
    ids = [f"r{i}" for i in range(700)] + ["dup-c", "dup-a", "dup-b"]
    index = build(name, x, ids)
    _, got = index.search(base, 3)
    assert got == [["dup-c", "dup-a", "dup-b"]]
    index.remove(["dup-c"])
    index.add(base, ["dup-c"])
    _, got = index.search(base, 3)
    assert got == [["dup-a", "dup-b", "dup-c"]]


@pytest.mark.parametrize("name", list(ALL))
def test_raw_vectors_are_normalised(name: str, small) -> None:
    x, ids, q = small
    a = build(name, x * 7.5, ids)
    b = build(name, x, ids)
    sa, ia = a.search(q * 0.01, 5)
    sb, ib = b.search(q, 5)
    assert ia == ib
    np.testing.assert_allclose(sa, sb, atol=1e-5)
    assert sa.max() <= 1.0 + 1e-5


# ----------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("name", list(ALL))
def test_k_larger_than_index_returns_what_there_is(name: str) -> None:
    x = clustered(5, 8)
    index = build(name, x, ["a", "b", "c", "d", "e"])
    scores, got = index.search(x[:2], 50)
    assert scores.shape == (2, 5)
    assert all(sorted(row) == ["a", "b", "c", "d", "e"] for row in got)


@pytest.mark.parametrize("name", list(ALL))
def test_one_dimensional_query_is_one_row(name: str, small) -> None:
    x, ids, _ = small
    scores, got = build(name, x, ids).search(x[3], 4)
    assert scores.shape == (1, 4) and len(got) == 1
    assert got[0][0] == ids[3]


def test_no_queries_gives_empty_results(small) -> None:
    x, ids, _ = small
    scores, got = build("flat", x, ids).search(np.empty((0, 16)), 3)
    assert scores.shape == (0, 3) and got == []


def test_ids_len_dim_and_integer_ids() -> None:
    index = FlatIndex()
    assert index.dim is None and len(index) == 0 and index.ids == []
    index.add(np.eye(4)[:3], [np.int64(7), 3, "x"])
    assert index.dim == 4 and len(index) == 3 and index.ids == [7, 3, "x"]
    assert isinstance(index.ids[0], int)
    _, got = index.search(np.eye(4)[0], 1)
    assert got == [[7]]
    assert FlatIndex(dim=5).dim == 5


# ----------------------------------------------------------------------------- remove


@pytest.mark.parametrize("name", list(ALL))
def test_add_then_remove_equals_never_added(name: str, small) -> None:
    x, ids, q = small
    a = build(name, x[:600], ids[:600])
    a.add(x[600:], ids[600:])
    a.remove(ids[600:])
    b = build(name, x[:600], ids[:600])
    assert a.ids == b.ids and len(a) == len(b) == 600
    results_equal(a, b, q, 10)


@pytest.mark.parametrize("name", list(ALL))
def test_remove_then_add_back(name: str, small) -> None:
    x, ids, q = small
    index = build(name, x, ids)
    before = index.search(x[:5], 3)
    index.remove(ids[:5])
    assert not any(set(row) & set(ids[:5]) for row in index.search(q, 20)[1])
    index.add(x[:5], ids[:5])
    after = index.search(x[:5], 3)
    assert after[1] == before[1]
    np.testing.assert_allclose(after[0], before[0], atol=1e-6)
    assert index.ids[-5:] == ids[:5]


@pytest.mark.parametrize("name", list(ALL))
def test_removing_everything_leaves_an_empty_index(name: str, small) -> None:
    x, ids, _ = small
    index = build(name, x[:50], ids[:50])
    index.remove(ids[:50])
    assert len(index) == 0
    with pytest.raises(NotFittedError):
        index.search(x[0], 1)
    index.add(x[:3], ids[:3])
    assert index.search(x[0], 1)[1] == [[ids[0]]]


@pytest.mark.parametrize("name", list(ALL))
def test_unknown_id_on_remove_names_it_and_removes_nothing(name: str, small) -> None:
    x, ids, _ = small
    index = build(name, x[:20], ids[:20])
    with pytest.raises(UnknownIdError, match="nope"):
        index.remove([ids[0], "nope"])
    assert len(index) == 20 and ids[0] in index.ids


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("name", list(ALL))
def test_bad_input_raises_visualsim_errors(name: str) -> None:
    index = ALL[name]()
    with pytest.raises(NotFittedError):
        index.search(np.ones(4), 1)
    index.add(np.eye(4), ["a", "b", "c", "d"])
    with pytest.raises(DimensionMismatch):
        index.add(np.ones((1, 5)), ["e"])
    with pytest.raises(DimensionMismatch):
        index.search(np.ones(3), 1)
    for bad in (np.nan, np.inf, -np.inf):
        with pytest.raises(InvalidVectorsError, match="NaN or infinite"):
            index.add([[1.0, bad, 0.0, 0.0]], ["e"])
        with pytest.raises(InvalidVectorsError):
            index.search([[1.0, bad, 0.0, 0.0]], 1)
    with pytest.raises(InvalidVectorsError, match="zeros"):
        index.add(np.zeros((1, 4)), ["e"])
    with pytest.raises(InvalidVectorsError, match="zeros"):
        index.search(np.zeros(4), 1)
    for k in (0, -1, 1.5, True, "3"):
        with pytest.raises(ConfigError):
            index.search(np.ones(4), k)
    with pytest.raises(DuplicateIdError, match="'a'"):
        index.add(np.ones((1, 4)), ["a"])
    with pytest.raises(DuplicateIdError, match="'e'"):
        index.add(np.ones((2, 4)), ["e", "e"])
    with pytest.raises(InvalidVectorsError, match="2 row"):
        index.add(np.ones((2, 4)), ["e"])
    with pytest.raises(InvalidIdError, match="1.5"):
        index.add(np.ones((1, 4)), [1.5])
    with pytest.raises(InvalidIdError, match="wrap a single id"):
        index.add(np.ones((1, 4)), "e")
    with pytest.raises(InvalidVectorsError):
        index.add(np.ones((1, 2, 2)), ["e"])
    assert index.ids == ["a", "b", "c", "d"]


def test_errors_are_value_errors_where_python_expects() -> None:
    assert issubclass(ConfigError, ValueError)
    assert issubclass(InvalidVectorsError, ValueError)
    assert issubclass(UnknownIdError, KeyError)


def test_check_vectors_returns_unit_float32_rows() -> None:
    out = check_vectors(np.array([[3, 4], [0, 2]], dtype=np.int64))
    assert out.dtype == np.float32 and out.flags.c_contiguous
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 1.0]])
    with pytest.raises(InvalidVectorsError, match="queries"):
        check_vectors(["a", "b"], name="queries")


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("ivf", {"nlist": 0}),
        ("ivf", {"nprobe": -2}),
        ("hnsw", {"M": 1}),
        ("ivfpq", {"nbits": 16}),
        ("ivfpq", {"m": 3, "dim": 16}),
        ("ivfpq", {"rerank": -1}),
        ("sklearn", {"algorithm": "annoy"}),
        ("sharded", {"n_shards": 0}),
        ("flat", {"dim": 0}),
        ("flat", {"nlist": 3}),
        ("no-such-index", {}),
    ],
)
def test_bad_configuration_is_refused(name: str, params: dict) -> None:
    with pytest.raises(ConfigError):
        make_index(name, **params)


# ----------------------------------------------------------------------------- save / load


@pytest.mark.parametrize("name", list(ALL))
def test_save_load_search_is_identical(name: str, small, tmp_path: Path) -> None:
    x, ids, q = small
    index = build(name, x, ids)
    index.search(q, 1)  # trains / fits where the backend does that lazily
    index.save(tmp_path / "idx")
    loaded = load_index(tmp_path / "idx")
    assert type(loaded) is type(index)
    assert loaded.get_config() == index.get_config()
    assert loaded.ids == index.ids and loaded.dim == index.dim
    results_equal(index, loaded, q, 10)
    extra = clustered(3, 16, seed=9)
    index.add(extra, ["n1", "n2", "n3"])
    loaded.add(extra, ["n1", "n2", "n3"])
    results_equal(index, loaded, np.vstack([q, extra]), 10)


def test_verify_false_skips_only_the_checksums(small, tmp_path: Path) -> None:
    x, ids, q = small
    index = build("flat", x, ids)
    index.save(tmp_path / "idx")
    ids_file = tmp_path / "idx" / "ids.json"
    ids_file.write_text(ids_file.read_text() + "\n")  # same ids, different bytes
    with pytest.raises(CatalogError, match="checksum"):
        load_index(tmp_path / "idx")
    results_equal(index, load_index(tmp_path / "idx", verify=False), q, 5)
    (tmp_path / "idx" / "labels.npy").unlink()
    with pytest.raises(CatalogError, match="missing"):
        load_index(tmp_path / "idx", verify=False)


@pytest.mark.parametrize("name", ["ivf", "ivfpq", "flat", "hnsw", "sklearn", "sharded"])
def test_untrained_and_empty_indexes_save_and_load(name: str, tmp_path: Path) -> None:
    empty = make_index(name)
    empty.save(tmp_path / "empty")
    assert len(load_index(tmp_path / "empty")) == 0
    x = clustered(30, 8)
    index = make_index(name)
    index.add(x, list(range(30)))
    index.save(tmp_path / "small")
    results_equal(index, load_index(tmp_path / "small"), x[:4], 5)


def test_save_replaces_an_existing_index_but_not_other_files(small, tmp_path: Path) -> None:
    x, ids, _ = small
    build("flat", x[:5], ids[:5]).save(tmp_path / "idx")
    build("flat", x[:7], ids[:7]).save(tmp_path / "idx")
    assert len(load_index(tmp_path / "idx")) == 7
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("mine")
    with pytest.raises(CatalogError, match="refusing"):
        build("flat", x[:5], ids[:5]).save(tmp_path / "other")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx", "other"]


def test_saved_index_is_readable_json_and_npy_without_pickle(small, tmp_path: Path) -> None:
    x, ids, _ = small
    build("ivfpq-trained", x, ids).save(tmp_path / "idx")
    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert manifest["name"] == "ivfpq" and manifest["format_version"] == 1
    assert manifest["count"] == len(ids) and manifest["dim"] == 16
    for npy in (tmp_path / "idx").glob("*.npy"):
        np.load(npy, allow_pickle=False)
    assert not list((tmp_path / "idx").glob("*.pkl"))


def test_ivfpq_without_rerank_keeps_no_float_copy(small, tmp_path: Path) -> None:
    x, ids, _ = small
    build("ivfpq-no-rerank", x, ids).save(tmp_path / "idx")
    assert not (tmp_path / "idx" / "vectors.npy").exists()


def test_corrupt_file_is_refused(small, tmp_path: Path) -> None:
    x, ids, _ = small
    build("flat", x, ids).save(tmp_path / "idx")
    blob = tmp_path / "idx" / "index.faiss"
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    with pytest.raises(CatalogError, match="checksum"):
        load_index(tmp_path / "idx")


def test_truncated_file_is_refused(small, tmp_path: Path) -> None:
    x, ids, _ = small
    build("sklearn-brute", x, ids).save(tmp_path / "idx")
    npy = tmp_path / "idx" / "vectors.npy"
    npy.write_bytes(npy.read_bytes()[:100])
    with pytest.raises(CatalogError):
        load_index(tmp_path / "idx")


def test_corrupt_file_with_matching_checksum_is_still_refused(small, tmp_path: Path) -> None:
    x, ids, _ = small
    build("flat", x, ids).save(tmp_path / "idx")
    blob = tmp_path / "idx" / "index.faiss"
    blob.write_bytes(blob.read_bytes()[:64])
    manifest_path = tmp_path / "idx" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    import hashlib

    manifest["files"]["index.faiss"] = hashlib.sha256(blob.read_bytes()).hexdigest()
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(CatalogError, match="FAISS"):
        load_index(tmp_path / "idx")


def test_newer_format_version_is_refused(small, tmp_path: Path) -> None:
    x, ids, _ = small
    build("hnsw", x, ids).save(tmp_path / "idx")
    manifest_path = tmp_path / "idx" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["format_version"] = 99
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(FormatVersionError, match="upgrade"):
        load_index(tmp_path / "idx")


def test_missing_manifest_and_wrong_class_are_refused(small, tmp_path: Path) -> None:
    x, ids, _ = small
    with pytest.raises(CatalogError, match="manifest"):
        load_index(tmp_path)
    build("hnsw", x, ids).save(tmp_path / "idx")
    with pytest.raises(CatalogError, match="load_index"):
        FlatIndex.load(tmp_path / "idx")
    assert isinstance(HNSWIndex.load(tmp_path / "idx"), HNSWIndex)


def test_unregistered_index_cannot_be_saved(tmp_path: Path) -> None:
    class Unregistered(FlatIndex):
        pass

    Unregistered.name = "flat"  # inherits the attribute but is not the registered class
    index = Unregistered()
    index.add(np.eye(2), ["a", "b"])
    with pytest.raises(ConfigError, match="register"):
        index.save(tmp_path / "idx")


# ----------------------------------------------------------------------------- registry


@register_index("test-numpy", overwrite=True)
class NumpyIndex(BaseIndex):
    """A user's own exact index: numpy brute force."""

    exact = True

    def __init__(self, *, boost: float = 1.0, dim: int | None = None) -> None:
        super().__init__(dim=dim)
        self.boost = boost
        self.x_ = np.empty((0, 0), dtype=np.float32)
        self.labels_ = np.empty(0, dtype=np.int64)

    def _add(self, x: np.ndarray, labels: np.ndarray) -> None:
        self.x_ = np.vstack([self.x_.reshape(-1, x.shape[1]), x])
        self.labels_ = np.concatenate([self.labels_, labels])

    def _remove(self, labels: np.ndarray) -> None:
        keep = ~np.isin(self.labels_, labels)
        self.x_, self.labels_ = self.x_[keep], self.labels_[keep]

    def _search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        sims = q @ self.x_.T
        top = np.argsort(-sims, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(sims, top, axis=1), self.labels_[top]

    def _save_state(self, directory: Path) -> dict:
        np.save(directory / "x.npy", self.x_, allow_pickle=False)
        return {}

    def _load_state(self, directory: Path, state) -> None:
        self.x_ = np.load(directory / "x.npy", allow_pickle=False)
        self.labels_ = self._ids.labels


def test_user_registered_index_saves_and_loads(small, tmp_path: Path) -> None:
    x, ids, q = small
    index = make_index("test-numpy", boost=2.0)
    assert isinstance(index, NumpyIndex) and isinstance(index, Index)
    index.add(x, ids)
    assert_matches_brute_force(index, x, ids, q, 7)
    index.save(tmp_path / "mine")
    loaded = load_index(tmp_path / "mine")
    assert isinstance(loaded, NumpyIndex) and loaded.boost == 2.0
    results_equal(index, loaded, q, 7)


def test_sharded_index_can_shard_a_user_index(small) -> None:
    x, ids, q = small
    index = ShardedIndex(n_shards=3, shard="test-numpy")
    index.add(x, ids)
    results_equal(index, build("flat", x, ids), q, 10)


@pytest.mark.parametrize("name", list(ALL))
def test_config_round_trips_through_json(name: str) -> None:
    index = ALL[name]()
    config = json.loads(json.dumps(index.get_config()))
    rebuilt = type(index).from_config(config)
    assert rebuilt.get_config() == index.get_config()
    assert make_index(index.name, **config).get_config() == config


def test_make_index_knows_every_builtin() -> None:
    kinds = {
        "flat": FlatIndex,
        "ivf": IVFIndex,
        "hnsw": HNSWIndex,
        "ivfpq": IVFPQIndex,
        "sklearn": SklearnIndex,
        "sharded": ShardedIndex,
    }
    for name, cls in kinds.items():
        index = make_index(name)
        assert type(index) is cls and cls.name == name


# ----------------------------------------------------------------------------- IVF training


def test_ivf_searches_exactly_until_it_can_train(small) -> None:
    x, ids, q = small
    index = IVFIndex(nlist=16)
    index.add(x[:600], ids[:600])  # 39 * 16 = 624 needed
    assert_matches_brute_force(index, x[:600], ids[:600], q, 5)
    assert not index.is_trained
    with pytest.raises(NotFittedError, match="624"):
        index.train()
    index.add(x[600:], ids[600:])
    index.search(q, 5)
    assert index.is_trained and index.nlist_ == 16 and index.nprobe_ == 8


def test_ivf_adds_after_training_go_into_the_lists(small) -> None:
    x, ids, q = small
    index = IVFIndex(nlist=4, nprobe=4)
    index.add(x[:300], ids[:300])
    index.train()
    index.add(x[300:], ids[300:])
    assert_matches_brute_force(index, x, ids, q, 10)


# ----------------------------------------------------------------------------- threads


@pytest.mark.parametrize("name", list(ALL))
def test_concurrent_searches_match_serial(name: str, small) -> None:
    x, ids, q = small
    index = build(name, x, ids)
    serial = [index.search(q[i : i + 5], 10) for i in range(0, 20, 5)]
    results: dict[int, tuple] = {}

    def worker(t: int) -> None:
        for _ in range(5):
            i = (t % 4) * 5
            results[t] = index.search(q[i : i + 5], 10)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for t, (scores, got) in results.items():
        want_scores, want = serial[t % 4]
        assert got == want
        np.testing.assert_array_equal(scores, want_scores)


def test_adding_while_searching_is_safe(small) -> None:
    x, ids, q = small
    index = IVFIndex(nlist=4)
    index.add(x[:100], ids[:100])
    errors: list[BaseException] = []

    def searcher() -> None:
        try:
            for _ in range(30):
                _, got = index.search(q, 5)
                assert all(len(row) == 5 for row in got)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=searcher) for _ in range(3)]
    for t in threads:
        t.start()
    for start in range(100, 700, 50):
        index.add(x[start : start + 50], ids[start : start + 50])
        index.remove([ids[start]])
    for t in threads:
        t.join()
    assert not errors
    assert len(index) == 700 - 12


# ----------------------------------------------------------------------------- imports


def test_importing_visualsim_indexes_loads_neither_faiss_nor_sklearn() -> None:
    code = (
        "import sys, visualsim, visualsim.indexes; visualsim.Index; visualsim.make_index; "
        "print('faiss' in sys.modules, 'sklearn' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
