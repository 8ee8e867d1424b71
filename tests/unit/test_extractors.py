"""Extractors: the protocol, streaming, errors, registry, colour and Keras backbones."""

from __future__ import annotations

import io
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from visualsim import (
    BaseExtractor,
    ColorHistogramExtractor,
    ConfigError,
    Extractor,
    ImageLoadError,
    KerasExtractor,
    ResNet50Extractor,
    WeightsUnavailableError,
    extractor_from_config,
    make_extractor,
    register_extractor,
)
from visualsim.extractors.base import EXTRACTORS, extractor_spec, l2_normalize

RED, GREEN, BLUE = (220, 20, 20), (20, 200, 40), (30, 40, 220)


def solid(color: tuple[int, int, int], size: int = 40, shade: int = 0) -> np.ndarray:
    img = np.full((size, size, 3), color, dtype=np.int16) + shade
    return np.clip(img, 0, 255).astype(np.uint8)


def assert_unit_rows(v: np.ndarray) -> None:
    assert v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)


# -- colour histogram ---------------------------------------------------------


def test_color_extractor_shape_dtype_norm() -> None:
    ext = ColorHistogramExtractor()
    v = ext.extract([solid(RED), solid(GREEN), solid(BLUE)])
    # hue x sat x value + grey levels, then an 8x8 layout of 3 channels + its constant
    assert v.shape == (3, ext.dim) == (3, 16 * 4 * 4 + 6 + 3 * 8 * 8 + 1)
    assert_unit_rows(v)
    histogram = ColorHistogramExtractor(layout=0)
    assert histogram.extract([solid(RED)]).shape == (1, histogram.dim) == (1, 16 * 4 * 4 + 6)


@pytest.mark.parametrize("layout", [0, 8])
def test_color_extractor_puts_same_colours_together(layout: int) -> None:
    ext = ColorHistogramExtractor(layout=layout)
    v = ext.extract([solid(RED), solid(RED, shade=15), solid(BLUE), solid(BLUE, shade=-15)])
    sims = v @ v.T
    # soft bins: a shade 15 levels off shares most, not all, of its cells
    assert sims[0, 1] > 0.8 and sims[2, 3] > 0.8
    # two flat images share their (empty) layout: only its share of the cosine is common
    assert sims[0, 2] < (ext.layout_weight if layout else 0.0) + 0.1


def test_color_extractor_ignores_white_background() -> None:
    product = np.full((64, 64, 3), 255, np.uint8)
    product[20:44, 20:44] = RED
    v = ColorHistogramExtractor(layout=0).extract([product, solid(RED)])
    assert float(v[0] @ v[1]) > 0.85  # only anti-aliased edge pixels differ
    v_bg = ColorHistogramExtractor(layout=0, ignore_background=False).extract([product, solid(RED)])
    assert float(v_bg[0] @ v_bg[1]) < 0.6
    # the layout sees the whole frame: a square on white is not a red frame
    ext = ColorHistogramExtractor()
    v_layout = ext.extract([product, solid(RED)])
    assert 0.5 < float(v_layout[0] @ v_layout[1]) < 1 - ext.layout_weight + 0.05


def test_all_white_product_still_gets_a_vector() -> None:
    v = ColorHistogramExtractor().extract([np.full((20, 20, 3), 255, np.uint8)])
    assert_unit_rows(v)


def test_color_bins_validated() -> None:
    with pytest.raises(ConfigError, match="bins"):
        ColorHistogramExtractor(bins=(0, 2, 2))
    with pytest.raises(ConfigError, match="bins"):
        ColorHistogramExtractor(bins=(4, 4))


def test_extractor_satisfies_protocol() -> None:
    assert isinstance(ColorHistogramExtractor(), Extractor)


# -- streaming, batching, errors ---------------------------------------------------


def test_batch_size_does_not_change_vectors() -> None:
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 256, (30, 30, 3), dtype=np.uint8) for _ in range(10)]
    ext = ColorHistogramExtractor()
    np.testing.assert_allclose(
        ext.extract(imgs, batch_size=1), ext.extract(imgs, batch_size=7), atol=1e-6
    )


def test_extract_streams_a_generator_without_materialising_it() -> None:
    pulled = 0

    def endless() -> Iterator[np.ndarray]:
        nonlocal pulled
        for i in itertools.count():
            pulled += 1
            yield solid(RED, shade=i % 30)

    ext = ColorHistogramExtractor(num_workers=1)
    batches = ext.iter_batches(endless(), batch_size=4)
    first = next(batches)
    assert first.vectors.shape == (4, ext.dim)
    assert first.positions == [0, 1, 2, 3]
    # the current batch plus one batch read ahead, never the whole stream
    assert pulled <= 8
    batches.close()  # type: ignore[attr-defined]


def test_extract_empty_input_gives_empty_matrix() -> None:
    v = ColorHistogramExtractor().extract([])
    assert v.shape == (0, 16 * 4 * 4 + 6 + 3 * 8 * 8 + 1) and v.dtype == np.float32


def test_on_error_raise_names_the_bad_input(tmp_path: Path) -> None:
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(ImageLoadError, match="broken.jpg"):
        ColorHistogramExtractor().extract([solid(RED), bad])


def test_on_error_skip_reports_failures_and_keeps_alignment(tmp_path: Path) -> None:
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    items = [("a", solid(RED)), ("b", bad), ("c", solid(BLUE)), ("d", tmp_path / "gone.png")]
    batches = list(
        ColorHistogramExtractor().iter_batches(
            items, batch_size=3, image_of=lambda it: it[1], on_error="skip"
        )
    )
    ok = [it[0] for b in batches for it in b.items]
    failed = {it[0]: err for b in batches for it, err in b.failed}
    assert ok == ["a", "c"]
    assert set(failed) == {"b", "d"}
    assert "no such file" in str(failed["d"])
    assert [p for b in batches for p in b.positions] == [0, 2]
    vectors = np.concatenate([b.vectors for b in batches])
    single = ColorHistogramExtractor().extract([solid(RED), solid(BLUE)])
    np.testing.assert_allclose(vectors, single, atol=1e-6)


def test_paths_bytes_and_arrays_give_identical_vectors(tmp_path: Path) -> None:
    img = solid(GREEN, size=32)
    path = tmp_path / "g.png"
    Image.fromarray(img).save(path)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    v = ColorHistogramExtractor().extract([img, path, str(path), buf.getvalue()])
    np.testing.assert_allclose(v, np.repeat(v[:1], 4, axis=0), atol=1e-6)


def test_progress_bar_is_optional(capsys: pytest.CaptureFixture[str]) -> None:
    ColorHistogramExtractor().extract([solid(RED)] * 3, progress=True)
    assert "3/3" in capsys.readouterr().err


def test_invalid_settings() -> None:
    with pytest.raises(ConfigError):
        ColorHistogramExtractor(batch_size=0)
    with pytest.raises(ConfigError):
        ColorHistogramExtractor(num_workers=-1)
    with pytest.raises(ConfigError, match="on_error"):
        list(ColorHistogramExtractor().iter_batches([solid(RED)], on_error="ignore"))  # type: ignore[arg-type]


def test_l2_normalize_handles_zero_rows() -> None:
    out = l2_normalize(np.array([[3.0, 4.0], [0.0, 0.0]]))
    np.testing.assert_allclose(out, [[0.6, 0.8], [2**-0.5, 2**-0.5]], rtol=1e-6)


# -- registry and config round trip --------------------------------------------------


def test_config_round_trip_rebuilds_equal_extractor() -> None:
    ext = ColorHistogramExtractor(bins=(8, 3, 3), size=48, ignore_background=False)
    spec = extractor_spec(ext)
    assert spec["name"] == "color"
    clone = extractor_from_config(spec)
    assert isinstance(clone, ColorHistogramExtractor)
    assert clone.get_config() == ext.get_config()
    img = solid(RED)
    np.testing.assert_array_equal(clone.extract([img]), ext.extract([img]))


def test_make_extractor_by_name_and_unknown_name() -> None:
    assert make_extractor("color", bins=(4, 2, 2), grey_bins=0, layout=0).dim == 16
    with pytest.raises(ConfigError, match="unknown extractor 'nope'"):
        make_extractor("nope")


def test_custom_registered_extractor_round_trips() -> None:
    @register_extractor("test-mean-rgb", overwrite=True)
    class MeanRGB(BaseExtractor):
        def __init__(self, *, gain: float = 1.0, **kw: Any) -> None:
            super().__init__(**kw)
            self.gain = gain

        @property
        def dim(self) -> int:
            return 3

        def _prepare(self, image: np.ndarray) -> np.ndarray:
            return image.reshape(-1, 3).mean(axis=0)

        def _embed(self, batch: np.ndarray) -> np.ndarray:
            return batch * self.gain + 1.0

        def get_config(self) -> dict[str, Any]:
            return {"gain": self.gain}

    ext = MeanRGB(gain=2.0)
    spec = extractor_spec(ext)
    assert spec == {"name": "test-mean-rgb", "config": {"gain": 2.0}}
    clone = extractor_from_config(spec)
    assert type(clone) is MeanRGB and clone.gain == 2.0
    assert_unit_rows(clone.extract([solid(RED)]))
    assert "test-mean-rgb" in EXTRACTORS.names()


def test_unregistered_extractor_cannot_be_specced() -> None:
    class Loose(ColorHistogramExtractor):
        pass

    with pytest.raises(ConfigError, match="not a registered extractor"):
        extractor_spec(Loose())


def test_registering_a_taken_name_needs_overwrite() -> None:
    with pytest.raises(ConfigError, match="already registered"):

        @register_extractor("color")
        class Other(ColorHistogramExtractor):
            pass


def test_a_built_in_name_not_yet_imported_is_not_taken_silently() -> None:
    from visualsim.registry import Registry

    reg: Registry[type] = Registry(
        "extractor", builtins={"silhouette": "visualsim.extractors.shape:SilhouetteExtractor"}
    )

    class Mine(ColorHistogramExtractor):
        pass

    with pytest.raises(ConfigError, match="built-in"):
        reg.add("silhouette", Mine)
    from visualsim.extractors.shape import SilhouetteExtractor

    reg.add("silhouette", SilhouetteExtractor)  # the built-in itself registers
    assert reg.get("silhouette") is SilhouetteExtractor
    reg.add("silhouette", Mine, overwrite=True)
    assert reg.get("silhouette") is Mine


# -- Keras backbones (no download: weights=None or a local file) -------------------


@pytest.fixture(scope="module")
def resnet() -> ResNet50Extractor:
    return ResNet50Extractor(weights=None, input_size=64, batch_size=4)


@pytest.fixture(scope="module")
def photos() -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    return [rng.integers(0, 256, (48 + 7 * i, 60, 3), dtype=np.uint8) for i in range(9)]


@pytest.mark.slow
def test_resnet50_shape_dtype_norm(resnet: ResNet50Extractor, photos: list[np.ndarray]) -> None:
    v = resnet.extract(photos)
    assert v.shape == (9, 2048)
    assert_unit_rows(v)
    assert resnet.weights_source_ == "random (seed=0)"


@pytest.mark.slow
def test_resnet50_batch_size_independent(
    resnet: ResNet50Extractor, photos: list[np.ndarray]
) -> None:
    np.testing.assert_allclose(
        resnet.extract(photos, batch_size=1), resnet.extract(photos, batch_size=7), atol=1e-5
    )


@pytest.mark.slow
def test_resnet50_random_weights_are_deterministic_from_config(
    resnet: ResNet50Extractor, photos: list[np.ndarray]
) -> None:
    clone = extractor_from_config(extractor_spec(resnet))
    assert isinstance(clone, ResNet50Extractor)
    assert clone.get_config() == resnet.get_config()
    np.testing.assert_allclose(clone.extract(photos[:3]), resnet.extract(photos[:3]), atol=1e-6)
    other_seed = ResNet50Extractor(weights=None, input_size=64, seed=1)
    assert not np.allclose(other_seed.extract(photos[:1]), resnet.extract(photos[:1]), atol=1e-3)


@pytest.mark.slow
def test_resnet50_local_weights_file_written_by_the_test(
    tmp_path: Path, resnet: ResNet50Extractor, photos: list[np.ndarray]
) -> None:
    path = tmp_path / "resnet50-test.weights.h5"
    resnet.build().save_weights(str(path))
    loaded = ResNet50Extractor(weights=path, input_size=64)
    np.testing.assert_allclose(loaded.extract(photos[:2]), resnet.extract(photos[:2]), atol=1e-5)
    assert loaded.weights_source_ == str(path)
    assert loaded.get_config()["weights"] == str(path)


@pytest.mark.slow
def test_visualsim_weights_env_replaces_download(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    resnet: ResNet50Extractor,
    photos: list[np.ndarray],
) -> None:
    path = tmp_path / "env.weights.h5"
    resnet.build().save_weights(str(path))
    monkeypatch.setenv("VISUALSIM_WEIGHTS", str(path))
    # network-free: weights default to "imagenet", which VISUALSIM_WEIGHTS serves from a local file
    ext = ResNet50Extractor(input_size=64)
    np.testing.assert_allclose(ext.extract(photos[:1]), resnet.extract(photos[:1]), atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("pooling", ["max", "gem"])
def test_resnet50_other_poolings(pooling: str, photos: list[np.ndarray]) -> None:
    v = ResNet50Extractor(weights=None, input_size=64, pooling=pooling).extract(photos[:2])
    assert v.shape == (2, 2048)
    assert_unit_rows(v)


def test_missing_weights_file_is_a_clear_error(tmp_path: Path) -> None:
    # when constructed, not at the first extraction minutes later
    with pytest.raises(WeightsUnavailableError, match="absent.h5.*does not exist"):
        ResNet50Extractor(weights=tmp_path / "absent.h5", input_size=64)
    with pytest.raises(WeightsUnavailableError, match="missing.h5"):
        KerasExtractor("resnet50", weights="/missing.h5")


def test_corrupt_weights_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "junk.weights.h5"
    path.write_bytes(b"junk" * 10)
    with pytest.raises(WeightsUnavailableError, match="cannot load weights file"):
        ResNet50Extractor(weights=path, input_size=64).extract([solid(RED)])


def test_failed_imagenet_download_explains_offline_options(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import keras

    def offline(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("weights") == "imagenet":
            raise Exception("URL fetch failure: network is unreachable")
        return original(*args, **kwargs)

    original = keras.applications.ResNet50
    monkeypatch.delenv("VISUALSIM_WEIGHTS", raising=False)
    monkeypatch.setattr(keras.applications, "ResNet50", offline)
    with pytest.raises(WeightsUnavailableError) as info:
        ResNet50Extractor(input_size=64).extract([solid(RED)])
    message = str(info.value)
    assert "VISUALSIM_WEIGHTS" in message
    assert "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5" in message
    # and it names the CNN that works offline
    assert "SqueezeNetExtractor" in message and "--extractor squeezenet" in message
    assert "visualsim[squeezenet]" in message


def test_keras_generic_backbone_plugs_in() -> None:
    ext = KerasExtractor("mobilenetv3small", weights=None, input_size=64)
    v = ext.extract([solid(RED), solid(BLUE)])
    assert v.shape == (2, 576)
    assert_unit_rows(v)
    assert extractor_spec(ext)["config"]["backbone"] == "mobilenetv3small"


def test_keras_extractor_validates_its_settings() -> None:
    with pytest.raises(ConfigError, match="unknown backbone"):
        KerasExtractor("alexnet")
    with pytest.raises(ConfigError, match="pooling"):
        ResNet50Extractor(pooling="median")
    with pytest.raises(ConfigError, match="resize"):
        ResNet50Extractor(resize="squash")


@pytest.mark.slow
def test_frozen_runtime_gives_the_same_vectors_as_keras(
    resnet: ResNet50Extractor, photos: list[np.ndarray]
) -> None:
    keras_v = resnet.extract(photos[:3])
    frozen = ResNet50Extractor(weights=None, input_size=64, runtime="frozen")
    frozen_v = frozen.extract(photos[:3])
    assert frozen_v.dtype == np.float32 and frozen_v.shape == keras_v.shape
    assert np.min(np.sum(keras_v * frozen_v, axis=1)) > 1 - 1e-4
    assert extractor_from_config(extractor_spec(frozen)).runtime == "frozen"


def test_unknown_runtime_is_refused() -> None:
    with pytest.raises(ConfigError, match="runtime"):
        ResNet50Extractor(runtime="onnx")


def test_progress_off_a_terminal_prints_the_last_line_once(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from visualsim import Recommender

    images = [np.full((8, 8, 3), i, np.uint8) for i in range(70)]
    Recommender(ColorHistogramExtractor()).fit(images, batch_size=16, progress=True)
    err = capsys.readouterr().err
    assert err.count("70/70") == 1, err


def test_decode_size_is_the_model_hint_enlarged_for_cropping() -> None:
    from visualsim.extractors.base import CROP_DRAFT_FACTOR

    plain, cropping = (
        ColorHistogramExtractor(size=64),
        ColorHistogramExtractor(size=64, crop="auto"),
    )
    assert plain.decode_size() == (64, 64)
    assert cropping.decode_size() == (64 * CROP_DRAFT_FACTOR, 64 * CROP_DRAFT_FACTOR)
