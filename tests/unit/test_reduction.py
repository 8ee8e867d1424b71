"""PCA reduction and float16 storage: what they keep, what they refuse, how they save."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from visualsim.errors import (
    CatalogError,
    ConfigError,
    DimensionMismatch,
    FormatVersionError,
    InvalidVectorsError,
    NotFittedError,
)
from visualsim.reduction import PCAReducer, from_storage, to_storage


def low_rank_clustered(n: int, d: int = 256, rank: int = 24, seed: int = 0) -> np.ndarray:
    """Unit vectors around 50 clusters in a ``rank``-dimensional subspace, plus a little noise."""
    rng = np.random.default_rng(seed)
    basis = rng.standard_normal((rank, d)) / np.sqrt(d) * 3
    spectrum = np.arange(1, rank + 1) ** -0.5
    centres = rng.standard_normal((50, rank)) * spectrum
    latent = centres[rng.integers(0, 50, n)] + 0.5 * rng.standard_normal((n, rank)) * spectrum
    x = latent @ basis + np.abs(rng.standard_normal(d)) / np.sqrt(d)
    x += 0.01 * rng.standard_normal((n, d))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32)


def knn(queries: np.ndarray, base: np.ndarray, k: int = 10) -> np.ndarray:
    return np.argsort(-(queries @ base.T), axis=1, kind="stable")[:, :k]


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    pairs = zip(found, truth, strict=True)
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in pairs]))


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    return low_rank_clustered(2000)


@pytest.fixture(scope="module")
def fitted(data: np.ndarray) -> PCAReducer:
    return PCAReducer(64, sample_size=2000).fit(data)


# --------------------------------------------------------------------------- what it keeps


def test_reduction_preserves_nearest_neighbours(data: np.ndarray, fitted: PCAReducer) -> None:
    reduced = fitted.transform(data)
    queries, base = slice(0, 200), slice(200, None)
    truth = knn(data[queries], data[base])
    assert recall(knn(reduced[queries], reduced[base]), truth) >= 0.9


def test_transform_returns_float32_unit_rows(data: np.ndarray, fitted: PCAReducer) -> None:
    out = fitted.transform(data[:50])
    assert out.dtype == np.float32 and out.shape == (50, 64)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


def test_components_are_orthonormal(fitted: PCAReducer) -> None:
    c = fitted.components_.astype(np.float64)
    np.testing.assert_allclose(c @ c.T, np.eye(64), atol=1e-5)


def test_explained_variance_is_sorted_and_mostly_kept(fitted: PCAReducer) -> None:
    ratio = fitted.explained_variance_ratio_
    assert (np.diff(ratio) <= 1e-12).all()
    assert 0.9 < ratio.sum() <= 1.0 + 1e-9


def test_a_single_row_is_one_reduced_row(data: np.ndarray, fitted: PCAReducer) -> None:
    one = fitted.transform(data[7])
    assert one.shape == (1, 64)
    np.testing.assert_allclose(one[0], fitted.transform(data[:10])[7], atol=1e-6)


def test_fit_uses_a_seeded_sample_of_sample_size_rows(data: np.ndarray) -> None:
    a = PCAReducer(8, sample_size=500, seed=3).fit(data)
    b = PCAReducer(8, sample_size=500, seed=3).fit(data)
    assert a.n_samples_seen_ == 500
    np.testing.assert_array_equal(a.components_, b.components_)


def test_fit_reads_only_the_sample_of_a_memmap(tmp_path: Path, data: np.ndarray) -> None:
    np.save(tmp_path / "x.npy", data)
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    reducer = PCAReducer(16, sample_size=1000).fit(mapped)
    np.testing.assert_allclose(
        reducer.transform(mapped[:5]),
        PCAReducer(16, sample_size=1000).fit(data).transform(data[:5]),
    )


def test_fit_transform_equals_fit_then_transform(data: np.ndarray) -> None:
    a = PCAReducer(16).fit_transform(data[:500])
    b = PCAReducer(16).fit(data[:500]).transform(data[:500])
    np.testing.assert_array_equal(a, b)


@settings(max_examples=25)
@given(
    x=arrays(
        np.float64,
        st.tuples(st.integers(12, 40), st.integers(6, 20)),
        elements=st.floats(-10, 10, allow_nan=False, width=32),
    ),
    dim=st.integers(1, 5),
)
def test_any_varied_input_gives_orthonormal_components_and_unit_rows(
    x: np.ndarray, dim: int
) -> None:
    assume(float(np.ptp(x, axis=0).max()) > 1e-2)
    reducer = PCAReducer(dim, sample_size=100).fit(x)
    c = reducer.components_.astype(np.float64)
    np.testing.assert_allclose(c @ c.T, np.eye(dim), atol=1e-4)
    raw = reducer.transform(x, normalize=False)
    nonzero = np.linalg.norm(raw, axis=1) > 1e-3
    out = reducer.transform(x[nonzero]) if nonzero.any() else np.ones((1, dim))
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-4)


# --------------------------------------------------------------------------- whitening


def test_whiten_gives_unit_variance_coordinates(data: np.ndarray) -> None:
    reducer = PCAReducer(16, whiten=True, sample_size=2000).fit(data)
    raw = reducer.transform(data, normalize=False).astype(np.float64)
    np.testing.assert_allclose(raw.var(axis=0, ddof=1), 1.0, rtol=1e-3)
    np.testing.assert_allclose(reducer.scale_, 1 / np.sqrt(reducer.explained_variance_), rtol=1e-6)


def test_without_whiten_there_is_no_scale(fitted: PCAReducer) -> None:
    assert fitted.scale_ is None


# --------------------------------------------------------------------------- rotation


def test_rotation_keeps_every_cosine(data: np.ndarray) -> None:
    rotated = PCAReducer(32, sample_size=1000).fit(data).transform(data[:100])
    plain = PCAReducer(32, rotate=False, sample_size=1000).fit(data).transform(data[:100])
    np.testing.assert_allclose(rotated @ rotated.T, plain @ plain.T, atol=1e-5)


def test_rotation_spreads_the_variance_over_the_coordinates(data: np.ndarray) -> None:
    def spread(reducer: PCAReducer) -> float:
        var = reducer.fit(data).transform(data, normalize=False).var(axis=0)
        return float(var.max() / var.min())

    assert spread(PCAReducer(32)) < spread(PCAReducer(32, rotate=False)) / 5


# --------------------------------------------------------------------------- save / load


@pytest.mark.parametrize("whiten", [False, True])
def test_save_load_round_trip_gives_identical_transform(
    tmp_path: Path, data: np.ndarray, whiten: bool
) -> None:
    reducer = PCAReducer(32, whiten=whiten, sample_size=1000).fit(data)
    reducer.save(tmp_path / "reducer")
    loaded = PCAReducer.load(tmp_path / "reducer")
    assert loaded.get_config() == reducer.get_config()
    assert loaded.n_samples_seen_ == reducer.n_samples_seen_
    np.testing.assert_array_equal(loaded.transform(data[:100]), reducer.transform(data[:100]))
    np.testing.assert_array_equal(
        loaded.explained_variance_ratio_, reducer.explained_variance_ratio_
    )


def test_saved_directory_is_npy_files_and_a_json_config(tmp_path: Path, fitted: PCAReducer) -> None:
    fitted.save(tmp_path)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [
        "components.npy",
        "explained_variance.npy",
        "explained_variance_ratio.npy",
        "mean.npy",
        "reducer.json",
        "rotation.npy",
    ]
    manifest = json.loads((tmp_path / "reducer.json").read_text())
    assert manifest["format_version"] == 1
    assert manifest["config"] == fitted.get_config()


def test_load_refuses_a_modified_array(tmp_path: Path, fitted: PCAReducer) -> None:
    fitted.save(tmp_path)
    np.save(tmp_path / "mean.npy", np.zeros_like(fitted.mean_))
    with pytest.raises(CatalogError, match="checksum"):
        PCAReducer.load(tmp_path)


def test_load_refuses_a_newer_format(tmp_path: Path, fitted: PCAReducer) -> None:
    fitted.save(tmp_path)
    manifest = json.loads((tmp_path / "reducer.json").read_text())
    manifest["format_version"] = 99
    (tmp_path / "reducer.json").write_text(json.dumps(manifest))
    with pytest.raises(FormatVersionError):
        PCAReducer.load(tmp_path)


def test_load_of_a_missing_directory_names_it(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="reducer.json"):
        PCAReducer.load(tmp_path / "nowhere")


def test_config_round_trip() -> None:
    reducer = PCAReducer(12, whiten=True, sample_size=300, seed=4)
    assert PCAReducer.from_config(reducer.get_config()).get_config() == reducer.get_config()
    with pytest.raises(ConfigError, match="unknown"):
        PCAReducer.from_config({"dim": 3, "components": 2})


# --------------------------------------------------------------------------- refusals


def test_transform_before_fit_is_refused() -> None:
    with pytest.raises(NotFittedError):
        PCAReducer(4).transform(np.ones((2, 8)))


def test_save_before_fit_is_refused(tmp_path: Path) -> None:
    with pytest.raises(NotFittedError):
        PCAReducer(4).save(tmp_path)


def test_dim_not_below_input_dim_is_refused() -> None:
    with pytest.raises(DimensionMismatch, match="smaller than 8"):
        PCAReducer(8).fit(np.random.default_rng(0).standard_normal((50, 8)))


def test_dim_above_sample_size_is_refused() -> None:
    with pytest.raises(ConfigError, match="sample_size"):
        PCAReducer(300, sample_size=200)


def test_fewer_rows_than_dim_is_refused() -> None:
    with pytest.raises(ConfigError, match="at least 10 rows"):
        PCAReducer(10).fit(np.random.default_rng(0).standard_normal((5, 20)))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_vectors_are_refused(fitted: PCAReducer, data: np.ndarray, bad: float) -> None:
    x = data[:20].copy()
    x[3, 5] = bad
    with pytest.raises(InvalidVectorsError, match=r"row\(s\) \[3\]"):
        PCAReducer(4).fit(x)
    with pytest.raises(InvalidVectorsError, match=r"row\(s\) \[3\]"):
        fitted.transform(x)


def test_wrong_input_dimension_is_refused(fitted: PCAReducer) -> None:
    with pytest.raises(DimensionMismatch, match="256"):
        fitted.transform(np.ones((2, 100)))


def test_constant_input_is_refused() -> None:
    with pytest.raises(InvalidVectorsError, match="no variance"):
        PCAReducer(2).fit(np.ones((10, 5)))


@pytest.mark.parametrize(
    "params", [{"dim": 0}, {"dim": 2.5}, {"sample_size": 1}, {"seed": -1}, {"whiten": "yes"}]
)
def test_invalid_configuration_is_refused(params: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        PCAReducer(**{"dim": 2, **params})  # type: ignore[arg-type]


# --------------------------------------------------------------------------- float16 storage


@settings(max_examples=50)
@given(
    x=arrays(
        np.float32,
        st.tuples(st.integers(1, 20), st.integers(2, 64)),
        elements=st.floats(-1, 1, allow_nan=False, width=32),
    )
)
def test_float16_storage_keeps_cosine_within_1e3(x: np.ndarray) -> None:
    x = x[np.linalg.norm(x, axis=1) > 1e-2]
    if not len(x):
        return
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    stored = to_storage(x, "float16")
    assert stored.dtype == np.float16 and stored.nbytes * 2 == x.nbytes
    back = from_storage(stored)
    assert back.dtype == np.float32
    back = back / np.linalg.norm(back, axis=1, keepdims=True)
    np.testing.assert_allclose(back @ x.T, x @ x.T, atol=1e-3)


def test_float32_storage_is_exact() -> None:
    x = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)
    np.testing.assert_array_equal(to_storage(x, "float32"), x)


def test_storage_refuses_unknown_dtype_and_bad_values() -> None:
    with pytest.raises(ConfigError, match="float16"):
        to_storage(np.ones((1, 2)), "int8")
    with pytest.raises(InvalidVectorsError, match="NaN"):
        to_storage(np.array([[np.nan, 1.0]]), "float16")
    with pytest.raises(InvalidVectorsError, match="65504"):
        to_storage(np.array([[1e6, 1.0]]), "float16")
