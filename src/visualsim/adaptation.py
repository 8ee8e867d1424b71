"""Adapt frozen vectors to a catalogue: a projection learned with a metric-learning loss.

Off-the-shelf features know ImageNet, not your shop. :class:`ProjectionAdapter`
learns a small MLP (or a linear map) on the catalogue's own stored vectors so
that items sharing a label (a category, or a product-group field holding
several photos of one product) come together, with the Proxy-Anchor loss (Kim
et al., CVPR 2020: one learned proxy per label; every item is pulled to its
label's proxy and pushed from the others, weighted towards the hard ones). The
extractor stays frozen, so training is seconds to minutes on a CPU, and
:meth:`ProjectionAdapter.transform` is plain numpy: queries and new arrivals
go through it without TensorFlow.

The learned similarity can be blended with the original one,
``cos = mix * cos_adapted + (1 - mix) * cos_original``, by concatenating the
two unit vectors scaled by ``sqrt(mix)`` and ``sqrt(1 - mix)``. With
``mix=None`` the adapter picks ``mix`` on a validation split of its own
training data, held out the way it will be used: new items of known labels
(``validation="items"``) or labels it never saw (``validation="labels"``,
where a projection trained on other classes often hurts, and a small ``mix``
or none at all is the honest answer).

:func:`adapt_recommender` does all of it for a fitted recommender and reports
before/after metrics on a held-out split it never trained on
(:func:`visualsim.evaluation.holdout_split`).

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> centres = rng.normal(size=(4, 16))
>>> labels = np.repeat(np.arange(4), 50)
>>> x = centres[labels] + rng.normal(scale=2.0, size=(200, 16))
>>> adapter = ProjectionAdapter(dim=8, hidden=0, epochs=5, mix=1.0).fit(x, labels)
>>> adapter.transform(x[:3]).shape
(3, 8)
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from . import persistence as P
from .errors import CatalogError, ConfigError, InvalidVectorsError, NotFittedError
from .evaluation import (
    HOLDOUT_MODES,
    EvaluationReport,
    HoldoutSplit,
    evaluate_embeddings,
    evaluate_holdout,
    holdout_split,
)

logger = logging.getLogger(__name__)

FORMAT_TAG = "visualsim-adapter"
FORMAT_VERSION = 1
MIX_GRID: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 0.9, 1.0)
"""The ``mix`` values tried on the validation split when ``mix=None``."""
MIN_GAIN = 0.005
"""With ``mix=None`` the projection is used only if it beats the original vectors on the
validation split by at least this much Precision@10; smaller gains are noise."""
MAX_VALIDATION_ITEMS = 10_000
"""At most this many validation items are scored per ``mix`` tried (exact kNN)."""
_ARRAYS_MLP = ("mean", "w1", "b1", "w2", "b2")
_ARRAYS_LINEAR = ("mean", "w", "b")


def _check_int(name: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not lo <= value <= hi:
        raise ConfigError(f"{name} must be an integer from {lo} to {hi:,}, got {value!r}")
    return int(value)


def _check_float(name: str, value: Any, lo: float, hi: float, *, open_lo: bool = False) -> float:
    bad = isinstance(value, bool) or not isinstance(value, (int, float, np.floating))
    if not bad:
        v = float(value)
        bad = not math.isfinite(v) or v > hi or v < lo or (open_lo and v == lo)
    if bad:
        side = "(" if open_lo else "["
        raise ConfigError(f"{name} must be a number in {side}{lo}, {hi}], got {value!r}")
    return float(value)


class ProjectionAdapter:
    """A learned projection of frozen vectors, trained with the Proxy-Anchor loss.

    Parameters
    ----------
    dim
        Length of the learned vectors.
    hidden
        Width of the MLP's hidden layer (ReLU); ``0`` learns a linear map.
    epochs
        Passes over the training vectors (more when that is fewer than
        ``min_steps`` gradient steps).
    min_steps
        Least number of gradient steps, so a small catalogue still trains
        enough (1,000 steps take a few seconds).
    batch_size
        Vectors per gradient step.
    learning_rate
        AdamW step size of the projection (the proxies learn 100x faster, as
        in the paper).
    weight_decay
        AdamW weight decay.
    alpha, margin
        Proxy-Anchor's scale (32) and margin (0.1).
    mix
        Share of the similarity that comes from the learned projection, in
        ``[0, 1]``; the rest is the original cosine. ``None`` picks it from
        :data:`MIX_GRID` on a validation split (see ``validation``).
    validation
        With ``mix=None``: ``"items"`` holds out new items of known labels,
        ``"labels"`` holds out whole labels; the projection is trained on the
        rest, and the ``mix`` with the best validation Precision@10 is kept
        (``0``, the original vectors, unless it wins by :data:`MIN_GAIN`).
    validation_size
        Share of the training vectors held out for that.
    seed
        Seeds the initialisation, the batches and the validation split.

    Attributes
    ----------
    n_features_in_ : int
        Length of the input vectors.
    mix_ : float
        The ``mix`` in use.
    validation_ : dict
        ``{"by", "n_train", "n_validation", "precision@10": {mix: value}}``
        when ``mix`` was chosen on validation, else ``{}``.
    history_ : list of float
        Mean training loss per epoch.
    n_labels_ : int
        Distinct labels trained on.
    fit_seconds_ : float
        Wall-clock training time.
    """

    def __init__(
        self,
        *,
        dim: int = 256,
        hidden: int = 1024,
        epochs: int = 20,
        min_steps: int = 1000,
        batch_size: int = 256,
        learning_rate: float = 1e-3,
        weight_decay: float = 1e-4,
        alpha: float = 32.0,
        margin: float = 0.1,
        mix: float | None = None,
        validation: str = "items",
        validation_size: float = 0.15,
        seed: int = 0,
    ) -> None:
        self.dim_out = _check_int("dim", dim, 1, 65_536)
        self.hidden = _check_int("hidden", hidden, 0, 65_536)
        self.epochs = _check_int("epochs", epochs, 1, 10_000)
        self.min_steps = _check_int("min_steps", min_steps, 0, 10_000_000)
        self.batch_size = _check_int("batch_size", batch_size, 2, 1 << 20)
        self.learning_rate = _check_float("learning_rate", learning_rate, 0.0, 10.0, open_lo=True)
        self.weight_decay = _check_float("weight_decay", weight_decay, 0.0, 1.0)
        self.alpha = _check_float("alpha", alpha, 0.0, 1000.0, open_lo=True)
        self.margin = _check_float("margin", margin, 0.0, 1.0)
        self.mix = None if mix is None else _check_float("mix", mix, 0.0, 1.0)
        if validation not in HOLDOUT_MODES:
            raise ConfigError(
                f"validation must be one of {', '.join(HOLDOUT_MODES)}, got {validation!r}"
            )
        self.validation = validation
        self.validation_size = _check_float(
            "validation_size", validation_size, 0.0, 0.5, open_lo=True
        )
        self.seed = _check_int("seed", seed, 0, 2**32 - 1)
        self.n_features_in_: int | None = None
        self.mix_: float | None = None
        self.arrays_: dict[str, np.ndarray] = {}
        self.validation_: dict[str, Any] = {}
        self.history_: list[float] = []
        self.n_labels_: int = 0
        self.fit_seconds_: float = 0.0

    # ------------------------------------------------------------------ config
    def get_config(self) -> dict[str, Any]:
        """Return the constructor arguments as JSON-safe values."""
        return {
            "dim": self.dim_out,
            "hidden": self.hidden,
            "epochs": self.epochs,
            "min_steps": self.min_steps,
            "batch_size": self.batch_size,
            "learning_rate": self.learning_rate,
            "weight_decay": self.weight_decay,
            "alpha": self.alpha,
            "margin": self.margin,
            "mix": self.mix,
            "validation": self.validation,
            "validation_size": self.validation_size,
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ProjectionAdapter:
        """Rebuild an unfitted adapter from :meth:`get_config` output."""
        if not isinstance(config, Mapping):
            raise ConfigError(f"an adapter config must be a mapping, got {type(config).__name__}")
        try:
            return cls(**dict(config))
        except TypeError as exc:
            raise ConfigError(f"invalid adapter config: {exc}") from None

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"ProjectionAdapter({args})"

    @property
    def is_fitted(self) -> bool:
        """Whether :meth:`fit` (or :meth:`load`) has run."""
        return self.mix_ is not None

    @property
    def dim(self) -> int:
        """Length of :meth:`transform`'s vectors (depends on the ``mix`` in use)."""
        if self.mix_ is None or self.n_features_in_ is None:
            raise NotFittedError("ProjectionAdapter is not fitted; call fit(vectors, labels)")
        if self.mix_ == 1.0:
            return self.dim_out
        if self.mix_ == 0.0:
            return self.n_features_in_
        return self.dim_out + self.n_features_in_

    # ------------------------------------------------------------------ fitting
    def fit(self, vectors: ArrayLike, labels: Sequence[Any] | np.ndarray) -> ProjectionAdapter:
        """Learn the projection from labelled vectors; return ``self``.

        Parameters
        ----------
        vectors
            ``(n, d)`` finite vectors (re-normalised to unit length).
        labels
            One label per row; ``None``/NaN rows are left out.

        Raises
        ------
        InvalidVectorsError
            Not a non-empty 2-d finite array.
        ConfigError
            Labels of another length, fewer than two labels with at least two
            items each, or (with ``mix=None``) too little data to hold out a
            validation split.
        """
        x = _unit_rows(vectors, "vectors")
        values = list(labels)
        if len(values) != len(x):
            raise ConfigError(f"labels has {len(values)} entries for {len(x)} vectors")
        keep = np.array([not _missing(v) for v in values], dtype=bool)
        x = x[keep]
        y = [
            v.item() if isinstance(v, np.generic) else v
            for v, k in zip(values, keep, strict=True)
            if k
        ]
        try:
            names, codes = np.unique(np.asarray(y, dtype=object).astype(str), return_inverse=True)
        except TypeError:
            raise ConfigError("labels must be str, int or other plain values") from None
        counts = np.bincount(codes, minlength=len(names))
        if int((counts >= 2).sum()) < 2:
            raise ConfigError(
                f"adaptation needs at least two labels with two or more items each; got "
                f"{len(names)} label(s) over {len(x)} labelled vectors"
            )
        start = time.perf_counter()
        self.n_features_in_ = int(x.shape[1])
        self.validation_ = {}
        if self.mix is None:
            split = holdout_split(
                codes,
                by=self.validation,
                test_size=self.validation_size,
                seed=self.seed,
            )
            if split.test.size < 4 or split.train.size < 4:
                raise ConfigError(
                    f"too few labelled vectors ({len(x)}) to hold out a validation split; "
                    "pass mix=1.0 (or another fixed mix) to train on them all"
                )
            self._train(x[split.train], codes[split.train])
            self.mix_ = self._choose_mix(x, codes, split)
        else:
            self._train(x, codes)
            self.mix_ = self.mix
        self.n_labels_ = len(names)
        self.fit_seconds_ = time.perf_counter() - start
        logger.info(
            "adapter trained on %d vectors, %d labels in %.1f s; mix=%.2f",
            len(x),
            len(names),
            self.fit_seconds_,
            self.mix_,
        )
        return self

    def _choose_mix(self, x: np.ndarray, codes: np.ndarray, split: HoldoutSplit) -> float:
        test = split.test
        if test.size > MAX_VALIDATION_ITEMS:
            rng = np.random.default_rng(self.seed)
            test = np.sort(rng.choice(test, MAX_VALIDATION_ITEMS, replace=False))
        original = x[test]
        learned = self._project(original)
        scores: dict[float, float] = {}
        for mix in MIX_GRID:
            blended = _blend(learned, original, mix)
            scores[mix] = evaluate_embeddings(blended, codes[test], k=10)["precision@10"]
        # ties (to 4 decimals) go to the smaller mix: change the vectors no more than helps
        best = max(MIX_GRID, key=lambda m: (round(scores[m], 4), -m))
        if scores[best] - scores[0.0] < MIN_GAIN:
            best = 0.0  # within validation noise: keep the original vectors
        self.validation_ = {
            "by": split.by,
            "n_train": int(split.train.size),
            "n_validation": int(test.size),
            "precision@10": {str(m): round(v, 6) for m, v in scores.items()},
        }
        return best

    def _train(self, x: np.ndarray, codes: np.ndarray) -> None:
        import os

        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        import tensorflow as tf

        n, d = x.shape
        n_labels = int(codes.max()) + 1
        rng = np.random.default_rng(self.seed)
        tf.random.set_seed(self.seed)
        mean = x.mean(axis=0).astype(np.float32)
        if self.hidden:
            shapes = {
                "w1": (d, self.hidden, math.sqrt(2.0 / d)),
                "b1": (self.hidden, 0, 0.0),
                "w2": (self.hidden, self.dim_out, math.sqrt(1.0 / self.hidden)),
                "b2": (self.dim_out, 0, 0.0),
            }
        else:
            shapes = {"w": (d, self.dim_out, math.sqrt(1.0 / d)), "b": (self.dim_out, 0, 0.0)}
        variables = {}
        for name, (a, b, std) in shapes.items():
            init = rng.normal(0.0, std, size=(a, b)) if b else np.zeros(a)
            variables[name] = tf.Variable(init.astype(np.float32), name=name)
        proxies = tf.Variable(
            rng.normal(0.0, 1.0, size=(n_labels, self.dim_out)).astype(np.float32)
        )
        mean_t = tf.constant(mean)
        trainable = list(variables.values())
        opt = tf.keras.optimizers.AdamW(self.learning_rate, weight_decay=self.weight_decay)
        opt_proxy = tf.keras.optimizers.Adam(self.learning_rate * 100)
        alpha, margin = float(self.alpha), float(self.margin)
        hidden = bool(self.hidden)

        def project(batch: Any) -> Any:
            c = batch - mean_t
            if hidden:
                h = tf.nn.relu(tf.matmul(c, variables["w1"]) + variables["b1"])
                z = tf.matmul(h, variables["w2"]) + variables["b2"]
            else:
                z = tf.matmul(c, variables["w"]) + variables["b"]
            return tf.nn.l2_normalize(z, axis=1)

        @tf.function(reduce_retracing=True)
        def step(batch: Any, labels: Any) -> Any:
            with tf.GradientTape() as tape:
                z = project(batch)
                sim = tf.matmul(z, tf.nn.l2_normalize(proxies, axis=1), transpose_b=True)
                pos = tf.one_hot(labels, n_labels)
                pos_term = tf.reduce_sum(tf.exp(-alpha * (sim - margin)) * pos, axis=0)
                neg_term = tf.reduce_sum(tf.exp(alpha * (sim + margin)) * (1.0 - pos), axis=0)
                with_pos = tf.reduce_sum(tf.cast(tf.reduce_sum(pos, axis=0) > 0, tf.float32))
                loss = tf.reduce_sum(tf.math.log1p(pos_term)) / tf.maximum(with_pos, 1.0)
                loss += tf.reduce_sum(tf.math.log1p(neg_term)) / float(n_labels)
            grads = tape.gradient(loss, [*trainable, proxies])
            opt.apply_gradients(zip(grads[:-1], trainable, strict=True))
            opt_proxy.apply_gradients([(grads[-1], proxies)])
            return loss

        xs = x.astype(np.float32)
        ys = codes.astype(np.int32)
        self.history_ = []
        size = min(self.batch_size, n)
        per_epoch = max(1, n // size)
        epochs = max(self.epochs, -(-self.min_steps // per_epoch))
        for epoch in range(epochs):
            order = rng.permutation(n)
            losses = []
            for i in range(0, n - size + 1, size):  # full batches: one trace
                idx = order[i : i + size]
                losses.append(float(step(tf.constant(xs[idx]), tf.constant(ys[idx]))))
            self.history_.append(float(np.mean(losses)))
            logger.debug("epoch %d: loss %.4f", epoch + 1, self.history_[-1])
        self.arrays_ = {"mean": mean, **{k: v.numpy() for k, v in variables.items()}}

    # --------------------------------------------------------------- transform
    def _project(self, x: np.ndarray) -> np.ndarray:
        a = self.arrays_
        c = x - a["mean"]
        if "w1" in a:
            h = np.maximum(c @ a["w1"] + a["b1"], 0.0)
            z = h @ a["w2"] + a["b2"]
        else:
            z = c @ a["w"] + a["b"]
        return _normalize(z.astype(np.float32))

    def transform(self, vectors: ArrayLike) -> np.ndarray:
        """Return the adapted unit vectors, ``(n, dim)`` float32 (numpy only).

        Raises
        ------
        NotFittedError
            Before :meth:`fit`.
        InvalidVectorsError
            Not a 2-d finite array of ``n_features_in_`` columns.
        """
        if self.mix_ is None or self.n_features_in_ is None:
            raise NotFittedError("ProjectionAdapter is not fitted; call fit(vectors, labels)")
        x = _unit_rows(vectors, "vectors", allow_empty=True)
        if x.shape[1] != self.n_features_in_:
            raise InvalidVectorsError(
                f"vectors have dimension {x.shape[1]}; this adapter was fitted on "
                f"{self.n_features_in_}-d vectors (the catalogue's stored vectors)"
            )
        if self.mix_ == 0.0:
            return x
        return _blend(self._project(x), x, self.mix_)

    def fit_transform(self, vectors: ArrayLike, labels: Sequence[Any] | np.ndarray) -> np.ndarray:
        """:meth:`fit`, then :meth:`transform` the same vectors."""
        return self.fit(vectors, labels).transform(vectors)

    # -------------------------------------------------------------- persistence
    def save(self, directory: str | Path) -> None:
        """Write the fitted adapter to ``directory`` (created if missing).

        One ``.npy`` per learned array (never pickled) and ``manifest.json``
        (config, ``mix_``, shapes, SHA-256 of each file), written last and
        atomically.

        Raises
        ------
        NotFittedError
            Before :meth:`fit`.
        """
        if not self.is_fitted:
            raise NotFittedError("ProjectionAdapter is not fitted; nothing to save")
        root = Path(directory)
        root.mkdir(parents=True, exist_ok=True)
        files = {}
        for name, array in self.arrays_.items():
            P.write_npy_atomic(root / f"{name}.npy", np.ascontiguousarray(array, np.float32))
            files[f"{name}.npy"] = P.sha256_file(root / f"{name}.npy")
        P.write_manifest(
            root,
            tag=FORMAT_TAG,
            version=FORMAT_VERSION,
            fields={
                "config": self.get_config(),
                "n_features_in": self.n_features_in_,
                "mix": self.mix_,
                "n_labels": self.n_labels_,
                "validation": self.validation_,
                "history": self.history_,
            },
            files=files,
        )

    @classmethod
    def load(cls, directory: str | Path, *, verify: bool = True) -> ProjectionAdapter:
        """Return the adapter saved in ``directory`` by :meth:`save`.

        Raises
        ------
        CatalogError
            A missing, changed or malformed file, naming it and the field.
        FormatVersionError
            Written by a newer visualsim.
        """
        root = Path(directory)
        manifest = P.read_manifest(
            root,
            tag=FORMAT_TAG,
            max_version=FORMAT_VERSION,
            verify=verify,
            required=("config", "n_features_in", "mix"),
        )
        where = str(root / P.MANIFEST)
        try:
            adapter = cls.from_config(P.field_dict(where, "config", manifest["config"]))
        except ConfigError as exc:
            raise CatalogError(f"{where}: field 'config' is invalid: {exc}") from None
        d = int(
            P.field_int(
                where, "n_features_in", manifest["n_features_in"], minimum=1, maximum=P.MAX_DIM
            )
            or 0
        )
        mix = P.field_float(where, "mix", manifest["mix"], minimum=0.0, maximum=1.0)
        h, k = adapter.hidden, adapter.dim_out
        if h:
            shapes = {"mean": (d,), "w1": (d, h), "b1": (h,), "w2": (h, k), "b2": (k,)}
        else:
            shapes = {"mean": (d,), "w": (d, k), "b": (k,)}
        arrays = {}
        for name, shape in shapes.items():
            if f"{name}.npy" not in manifest["files"]:
                raise CatalogError(f"{where}: field 'files' lacks {name}.npy")
            path = P.safe_child(root, f"{name}.npy")
            arrays[name] = P.load_npy(path, dtypes=("float32",), shape=shape, finite=True)
        adapter.arrays_ = arrays
        adapter.n_features_in_ = d
        adapter.mix_ = mix
        validation = manifest.get("validation")
        adapter.validation_ = dict(validation) if isinstance(validation, Mapping) else {}
        history = manifest.get("history")
        if isinstance(history, list):
            adapter.history_ = [float(v) for v in history if isinstance(v, (int, float))]
        n_labels = manifest.get("n_labels")
        adapter.n_labels_ = int(n_labels) if isinstance(n_labels, int) else 0
        return adapter


def _missing(value: Any) -> bool:
    if value is None:
        return True
    return isinstance(value, (float, np.floating)) and math.isnan(value)


def _normalize(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.where(norms > 0, norms, 1.0), dtype=np.float32)


def _unit_rows(vectors: ArrayLike, name: str, *, allow_empty: bool = False) -> np.ndarray:
    try:
        x = np.asarray(vectors, dtype=np.float32)
    except (TypeError, ValueError):
        raise InvalidVectorsError(f"{name} must be a numeric (n, dim) array") from None
    if x.ndim != 2 or x.shape[1] == 0 or (x.shape[0] == 0 and not allow_empty):
        raise InvalidVectorsError(f"{name} must be a non-empty (n, dim) array, got {x.shape}")
    if not np.isfinite(x).all():
        bad = int(np.flatnonzero(~np.isfinite(x).all(axis=1))[0])
        raise InvalidVectorsError(f"{name} row {bad} holds NaN or infinite values")
    return _normalize(x)


def _blend(learned: np.ndarray, original: np.ndarray, mix: float) -> np.ndarray:
    if mix >= 1.0:
        return learned
    if mix <= 0.0:
        return original
    return np.ascontiguousarray(
        np.concatenate(
            [learned * np.float32(math.sqrt(mix)), original * np.float32(math.sqrt(1 - mix))],
            axis=1,
        ),
        dtype=np.float32,
    )


# ---------------------------------------------------------------------------
# a recommender, adapted
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class AdaptationReport:
    """Before/after retrieval quality of an adaptation, on items it never trained on.

    Attributes
    ----------
    label
        The metadata field the adapter learned.
    split
        The held-out split (``by="items"`` or ``"labels"``, seed, counts).
    before, after
        Leave-one-out quality over the held-out items only, with the original
        and with the adapted vectors.
    mix
        The blend of learned and original similarity in use.
    fit_seconds
        Training time.
    validation
        How ``mix`` was chosen (:attr:`ProjectionAdapter.validation_`).
    """

    label: str
    split: HoldoutSplit = field(repr=False)
    before: EvaluationReport = field(repr=False)
    after: EvaluationReport = field(repr=False)
    mix: float
    fit_seconds: float
    validation: Mapping[str, Any] = field(default_factory=dict, repr=False, hash=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe summary."""
        return {
            "label": self.label,
            "split": self.split.to_dict(),
            "mix": self.mix,
            "fit_seconds": round(self.fit_seconds, 2),
            "validation": dict(self.validation),
            "before": dict(self.before.metrics),
            "after": dict(self.after.metrics),
        }

    def __str__(self) -> str:
        s = self.split
        held = "new items of known labels" if s.by == "items" else "labels never trained on"
        lines = [
            f"Adapted to {self.label!r}: trained on {s.train.size:,} items, scored on "
            f"{s.test.size:,} held-out items ({held}; seed {s.seed})",
            f"mix {self.mix:g} (learned share of the similarity), {self.fit_seconds:.1f} s",
            f"{'metric':>13}  {'before':>7}  {'after':>7}  {'change':>7}",
        ]
        for name in self.before.metrics:
            b, a = self.before.metrics[name], self.after.metrics[name]
            lines.append(f"{name:>13}  {b:>7.4f}  {a:>7.4f}  {a - b:>+7.4f}")
        return "\n".join(lines)


def adapt_recommender(
    rec: Any,
    label: str,
    *,
    holdout: str = "items",
    test_size: float = 0.2,
    groups: str | None = None,
    seed: int = 0,
    adapter: ProjectionAdapter | None = None,
    k: Sequence[int] = (1, 5, 10),
) -> tuple[Any, AdaptationReport]:
    """Learn an adapter on a fitted recommender's catalogue; return the adapted copy and a report.

    The catalogue's labelled items are split (seeded) into a training part and
    a held-out part (:func:`~visualsim.evaluation.holdout_split`); the adapter
    learns on the training part only, and the report scores both the original
    and the adapted vectors on the held-out part against itself, so no
    training item is ever scored. The returned recommender holds every item
    (unlabelled ones too) through the adapter, and applies it to every later
    query and addition.

    Parameters
    ----------
    rec
        A fitted :class:`~visualsim.Recommender`.
    label
        Metadata field to learn (a category, or a product-group id).
    holdout
        ``"items"`` (new products of known labels) or ``"labels"`` (labels
        never seen in training).
    test_size
        Share of items (or labels) held out for the report.
    groups
        Optional metadata field of product ids: photos of one product stay on
        one side of an ``"items"`` split.
    seed
        Seeds the split and the training.
    adapter
        An unfitted adapter to train; default ``ProjectionAdapter(seed=seed,
        validation=holdout)``.
    k
        Cut-offs of the report.

    Returns
    -------
    (Recommender, AdaptationReport)

    Raises
    ------
    ConfigError
        An unknown field, too few labels, or a bad ``holdout``.
    NotFittedError
        An empty recommender.
    """
    if holdout not in HOLDOUT_MODES:
        raise ConfigError(f"holdout must be one of {', '.join(HOLDOUT_MODES)}, got {holdout!r}")
    if not len(rec):
        raise NotFittedError("the catalogue is empty: fit() it before adapting")
    vectors = np.asarray(rec.embeddings_, dtype=np.float32)
    ids = list(rec.ids_)
    metadata = list(rec.metadata_)
    if not any(label in m for m in metadata):
        known = sorted({key for m in metadata[:1000] for key in m})
        raise ConfigError(
            f"no catalogue item has metadata field {label!r}; fields: {', '.join(known) or 'none'}"
        )
    labels = [m.get(label) for m in metadata]
    group_values = None if groups is None else [m.get(groups) for m in metadata]
    split = holdout_split(
        labels,
        by=holdout,
        test_size=test_size,
        groups=group_values,
        seed=seed,
    )
    if split.test.size < 2 or split.train.size < 4:
        raise ConfigError(
            f"{len(ids)} items with {label!r}: too few to hold out a test split and train; "
            "add more labelled items"
        )
    learner = adapter if adapter is not None else ProjectionAdapter(seed=seed, validation=holdout)
    learner.fit(vectors[split.train], [labels[i] for i in split.train])
    before = evaluate_holdout(vectors, labels, split, k, label_name=label)
    after = evaluate_holdout(
        learner.transform(vectors[split.test]), labels, split, k, label_name=label
    )
    report = AdaptationReport(
        label=label,
        split=split,
        before=before,
        after=after,
        mix=float(learner.mix_ or 0.0),
        fit_seconds=learner.fit_seconds_,
        validation=dict(learner.validation_),
    )
    return _with_transform(rec, learner, vectors, ids, metadata), report


def _with_transform(
    rec: Any, transform: ProjectionAdapter, vectors: np.ndarray, ids: list[Any], metadata: list[Any]
) -> Any:
    """A copy of ``rec`` whose stored vectors, queries and additions go through ``transform``."""
    hook = getattr(rec, "with_transform", None)
    if callable(hook):
        return hook(transform)
    if getattr(rec, "reducer_", None) is not None or getattr(rec, "transform_", None) is not None:
        raise ConfigError(
            "this Recommender reduces (or already adapts) its vectors; adapting it needs "
            "Recommender.with_transform, which this version lacks"
        )
    from .recommender import Recommender

    index = rec.index
    if index is not None and not isinstance(index, str):
        from .indexes.base import INDEXES

        index = INDEXES.from_spec(INDEXES.to_spec(index))
    new = Recommender(
        rec.extractor_,
        index,
        storage=rec.storage,
        image_root=rec.image_root,
        dtypes=rec.dtypes,
        partition_by=getattr(rec, "partition_by", None),
    )
    new._transform_ = transform  # the lead's hook: applied to every stored vector and query
    new.add_vectors(vectors, ids, metadata)
    return new


__all__ = [
    "FORMAT_VERSION",
    "MIX_GRID",
    "AdaptationReport",
    "ProjectionAdapter",
    "adapt_recommender",
]
