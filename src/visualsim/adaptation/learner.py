"""The learner: a projection of frozen vectors, trained with the Proxy-Anchor loss.

:class:`ProjectionAdapter` learns a small MLP (or a linear map) on a catalogue's
stored vectors so that items sharing a label come together; one segment of the
learned vector per label field with ``combine="split"``. Training needs
TensorFlow; :meth:`ProjectionAdapter.transform` is plain numpy. With ``mix=None``
the guard (:mod:`visualsim.adaptation.guard`) picks the blend with the original
vectors on validation splits of the training data.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from .. import persistence as P
from ..errors import CatalogError, ConfigError, InvalidVectorsError, NotFittedError
from ..evaluation.leave_one_out import _encode_labels
from ..validation import (
    check_bool,
    check_choice,
    check_float,
    check_int,
    normalize_rows,
    unit_rows,
)
from .guard import (
    ADAPT_HOLDOUTS,
    _split,
    candidates,
    choose_mix,
    default_weights,
    score_mixes,
)
from .labels import _compact_columns, _joint, _label_columns
from .vectors import _blend, _check_weights, _weigh

logger = logging.getLogger(__name__)

FORMAT_TAG = P.format_of("adapter").tag
FORMAT_VERSION = P.format_of("adapter").version
"""How a split holds out: ``"both"`` (whole labels, and new items of the kept labels),
``"items"`` or ``"labels"`` (see :func:`~visualsim.evaluation.holdout_split`)."""
COMBINES: tuple[str, ...] = ("split", "sum", "joint")


class ProjectionAdapter:
    """A learned projection of frozen vectors, trained with the Proxy-Anchor loss.

    Parameters
    ----------
    dim
        Length of the learned vectors (of each field's segment, with
        ``combine="split"`` and several fields).
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
        With ``mix=None``, what the validation splits hold out of the training
        vectors (by the first label field): ``"both"`` (default) whole labels
        *and* new items of the kept labels (:func:`combined_split`),
        ``"items"`` only new items, ``"labels"`` only whole labels. The
        projection is trained on the rest; every candidate ``mix`` (and, with
        several fields and no ``weights``, every split of the weights) is
        scored on each part (labels trained on; labels never seen, ranked among
        all held-out items and among themselves) and for each label field and
        their combination; the candidate with the best mean Precision@10 that
        loses on no part and field beyond noise and wins beyond it
        (:data:`NOISE_SE`, :data:`MIN_GAIN`) is kept, else ``mix=0``: the
        original vectors.
    validation_size
        Share of the kept labels' items held out for that. Half, by default:
        the unseen labels' items are then ranked among about three times as
        many items of trained labels, as in a catalogue, where the learned
        clusters of the trained labels are the distractors that hurt a new
        kind of product.
    validation_labels
        Share of the labels held out whole for that.
    folds
        With ``mix=None``: how many validation splits (seeded ``seed``,
        ``seed + 1``, ...) to train on and score; their queries are pooled, so
        the choice rests on more held-out labels than one split holds.
    combine
        With several label fields: ``"split"`` (default) learns each field on
        its own segment of the learned vector, with its own proxies, so
        learning the colour does not blur the types a projection never saw;
        the learned similarity is the segments' cosines weighted by
        ``weights``. ``"sum"`` learns all fields on one vector, the losses
        summed; ``"joint"`` one proxy per combination of values (both measured
        to lose more on labels never trained on).
    weights
        With ``combine="split"``: each field's share of the learned
        similarity (normalised to sum to 1). ``None``: chosen with ``mix`` on
        the validation split (:data:`FIRST_WEIGHT_GRID`), or, with a fixed
        ``mix``, :data:`DEFAULT_FIRST_WEIGHT` for the first field and the
        rest shared equally.
    refit
        With ``mix=None`` and a ``mix`` above 0 chosen: train again on all the
        training vectors (the validation splits included) and keep that
        projection (default); ``False`` keeps the first split's projection,
        which saw less.
    seed
        Seeds the initialisation, the batches and the validation split.

    Attributes
    ----------
    n_features_in_ : int
        Length of the input vectors.
    fields_ : tuple of str
        The label fields learned (``("label",)`` for a plain sequence of labels).
    mix_ : float
        The ``mix`` in use.
    weights_ : tuple of float
        Share of each segment of the learned vector in the learned similarity
        (one segment, ``(1.0,)``, unless ``combine="split"`` with several fields).
    validation_ : dict
        How ``mix`` was chosen (when ``mix=None``, else ``{}``): ``"by"``,
        ``"folds"`` (per split: ``"n_train"``, ``"n_validation"``,
        ``"held_out_labels"``, ``"queries"`` scorable per part and field),
        ``"n_validation"`` (all splits), ``"precision@10"`` (``{candidate: mean
        over parts and fields}``, pooled), ``"parts"`` (``{candidate: {part:
        {field: precision@10}}}``), ``"refused"`` (``{candidate: why}`` for one
        that lost somewhere), ``"chosen"`` and ``"refit"``. A candidate is
        ``"mix"`` (``"0.5"``), or ``"mix|first field's weight"`` (``"0.5|0.65"``)
        when the weights are chosen too.
    history_ : list of float
        Mean training loss per epoch.
    n_labels_ : int
        Distinct labels of the first field trained on.
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
        validation: str = "both",
        validation_size: float = 0.5,
        validation_labels: float = 0.2,
        folds: int = 3,
        combine: str = "split",
        weights: Sequence[float] | None = None,
        refit: bool = True,
        seed: int = 0,
    ) -> None:
        self.dim_out = check_int("dim", dim, minimum=1, maximum=65_536)
        self.hidden = check_int("hidden", hidden, minimum=0, maximum=65_536)
        self.epochs = check_int("epochs", epochs, minimum=1, maximum=10_000)
        self.min_steps = check_int("min_steps", min_steps, minimum=0, maximum=10_000_000)
        self.batch_size = check_int("batch_size", batch_size, minimum=2, maximum=1 << 20)
        self.learning_rate = check_float(
            "learning_rate", learning_rate, minimum=0.0, maximum=10.0, open_minimum=True
        )
        self.weight_decay = check_float("weight_decay", weight_decay, minimum=0.0, maximum=1.0)
        self.alpha = check_float("alpha", alpha, minimum=0.0, maximum=1000.0, open_minimum=True)
        self.margin = check_float("margin", margin, minimum=0.0, maximum=1.0)
        self.mix = None if mix is None else check_float("mix", mix, minimum=0.0, maximum=1.0)
        self.validation = check_choice("validation", validation, ADAPT_HOLDOUTS)
        self.validation_size = check_float(
            "validation_size", validation_size, minimum=0.0, maximum=0.5, open_minimum=True
        )
        self.validation_labels = check_float(
            "validation_labels", validation_labels, minimum=0.0, maximum=0.5, open_minimum=True
        )
        self.folds = check_int("folds", folds, minimum=1, maximum=100)
        self.combine = check_choice("combine", combine, COMBINES)
        self.weights = None if weights is None else _check_weights(weights)
        self.refit = check_bool("refit", refit)
        self.seed = check_int("seed", seed, minimum=0, maximum=2**32 - 1)
        self.n_features_in_: int | None = None
        self.fields_: tuple[str, ...] = ()
        self.mix_: float | None = None
        self.weights_: tuple[float, ...] = (1.0,)
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
            "validation_labels": self.validation_labels,
            "folds": self.folds,
            "combine": self.combine,
            "weights": None if self.weights is None else list(self.weights),
            "refit": self.refit,
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
        learned = self.dim_out * sum(w > 0 for w in self.weights_)
        if self.mix_ == 1.0:
            return learned
        if self.mix_ == 0.0:
            return self.n_features_in_
        return learned + self.n_features_in_

    # ------------------------------------------------------------------ fitting
    def fit(
        self,
        vectors: ArrayLike,
        labels: Sequence[Any] | np.ndarray | Mapping[str, Sequence[Any] | np.ndarray],
    ) -> ProjectionAdapter:
        """Learn the projection from labelled vectors; return ``self``.

        Parameters
        ----------
        vectors
            ``(n, d)`` finite vectors (re-normalised to unit length).
        labels
            One label per row, or a mapping ``field name -> one label per
            row`` to learn several fields at once (``{"articleType": [...],
            "baseColour": [...]}``; see ``combine``). Rows whose first field
            is ``None``/NaN are left out; a missing value of a later field only
            leaves the row out of that field's loss.

        Raises
        ------
        InvalidVectorsError
            Not a non-empty 2-d finite array.
        ConfigError
            Labels of another length, fewer than two labels (of the first
            field) with at least two items each, or (with ``mix=None``) too
            little data to hold out a validation split.
        """
        x = unit_rows(vectors, name="vectors")
        names, columns = _label_columns(labels, len(x))
        codes = np.stack([_encode_labels(col, len(x))[0] for col in columns], axis=1)
        keep = codes[:, 0] >= 0
        x = x[keep]
        codes = _compact_columns(codes[keep])
        n_first = int(codes[:, 0].max()) + 1 if len(codes) else 0
        counts = np.bincount(codes[:, 0], minlength=n_first)
        if int((counts >= 2).sum()) < 2:
            raise ConfigError(
                f"adaptation needs at least two labels with two or more items each; got "
                f"{n_first} label(s) of {names[0]!r} over {len(x)} labelled vectors"
            )
        start = time.perf_counter()
        self.n_features_in_ = int(x.shape[1])
        self.fields_ = names
        self.validation_ = {}
        folds: list[dict[str, Any]] = []
        targets, segments = self._targets(codes)
        n_segments = max(segments) + 1
        if self.weights is not None and n_segments > 1 and len(self.weights) != n_segments:
            raise ConfigError(
                f"weights has {len(self.weights)} entries for {n_segments} label fields"
            )
        choices = candidates(n_segments, self.weights)
        if self.mix is None:
            splits = [
                _split(
                    codes[:, 0],
                    self.validation,
                    test_size=self.validation_size,
                    label_size=self.validation_labels,
                    seed=self.seed + f,
                )
                for f in range(self.folds)
            ]
            if min(min(sp.test.size, sp.train.size) for sp in splits) < 4:
                raise ConfigError(
                    f"too few labelled vectors ({len(x)}) to hold out a validation split; "
                    "pass mix=1.0 (or another fixed mix) to train on them all"
                )
            scored = []
            first: tuple[dict[str, np.ndarray], list[float]] = ({}, [])
            for f, split in enumerate(splits):
                self._train(x[split.train], _compact_columns(targets[split.train]), segments)
                if f == 0:
                    first = (self.arrays_, self.history_)
                per_query, queries = score_mixes(
                    self._segments, self.fields_, x, codes, split, choices, self.seed
                )
                scored.append(per_query)
                folds.append(
                    {
                        "n_train": int(split.train.size),
                        "n_validation": int(split.test.size),
                        "held_out_labels": len(split.test_labels),
                        "queries": queries,
                    }
                )
            chosen, record = choose_mix(scored, choices)
            self.mix_, self.weights_ = choices[chosen]
            refit = self.refit and self.mix_ > 0.0
            if refit:
                self._train(x, targets, segments)
            else:
                self.arrays_, self.history_ = first
            self.validation_ = {
                "by": splits[0].by,
                "folds": folds,
                "n_validation": sum(fold["n_validation"] for fold in folds),
                **record,
                "chosen": chosen,
                "refit": refit,
            }
        else:
            self._train(x, targets, segments)
            self.mix_, self.weights_ = self.mix, default_weights(n_segments, self.weights)
        self.n_labels_ = n_first
        self.fit_seconds_ = time.perf_counter() - start
        logger.info(
            "adapter trained on %d vectors, %d labels (%s) in %.1f s; mix=%.2f",
            len(x),
            n_first,
            "+".join(names),
            self.fit_seconds_,
            self.mix_,
        )
        return self

    def _targets(self, codes: np.ndarray) -> tuple[np.ndarray, list[int]]:
        """The label columns the loss learns, and the output segment each one trains."""
        if codes.shape[1] == 1:
            return codes, [0]
        if self.combine == "joint":
            return _joint(codes)[:, np.newaxis], [0]
        if self.combine == "sum":
            return codes, [0] * codes.shape[1]
        return codes, list(range(codes.shape[1]))

    def _train(self, x: np.ndarray, targets: np.ndarray, segments: Sequence[int]) -> None:
        """Fit the projection: one Proxy-Anchor loss per column of ``targets``, summed.

        The projection's output is ``max(segments) + 1`` segments of ``dim`` values;
        column ``j`` of ``targets`` is learned on segment ``segments[j]``.
        """
        import os

        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        import tensorflow as tf

        n, d = x.shape
        sizes = [max(int(targets[:, j].max()) + 1, 1) for j in range(targets.shape[1])]
        k = self.dim_out
        width = k * (max(segments) + 1)
        rng = np.random.default_rng(self.seed)
        tf.random.set_seed(self.seed)
        mean = x.mean(axis=0).astype(np.float32)
        if self.hidden:
            shapes = {
                "w1": (d, self.hidden, math.sqrt(2.0 / d)),
                "b1": (self.hidden, 0, 0.0),
                "w2": (self.hidden, width, math.sqrt(1.0 / self.hidden)),
                "b2": (width, 0, 0.0),
            }
        else:
            shapes = {"w": (d, width, math.sqrt(1.0 / d)), "b": (width, 0, 0.0)}
        variables = {}
        for name, (a, b, std) in shapes.items():
            init = rng.normal(0.0, std, size=(a, b)) if b else np.zeros(a)
            variables[name] = tf.Variable(init.astype(np.float32), name=name)
        proxies = [
            tf.Variable(rng.normal(0.0, 1.0, size=(size, self.dim_out)).astype(np.float32))
            for size in sizes
        ]
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
            return z

        def proxy_anchor(z: Any, labels: Any, proxy: Any, size: int) -> Any:
            sim = tf.matmul(z, tf.nn.l2_normalize(proxy, axis=1), transpose_b=True)
            pos = tf.one_hot(labels, size)  # an unlabelled row (-1) is all zeros
            labelled = tf.cast(labels >= 0, tf.float32)[:, tf.newaxis]
            pos_term = tf.reduce_sum(tf.exp(-alpha * (sim - margin)) * pos, axis=0)
            neg = (1.0 - pos) * labelled
            neg_term = tf.reduce_sum(tf.exp(alpha * (sim + margin)) * neg, axis=0)
            with_pos = tf.reduce_sum(tf.cast(tf.reduce_sum(pos, axis=0) > 0, tf.float32))
            loss = tf.reduce_sum(tf.math.log1p(pos_term)) / tf.maximum(with_pos, 1.0)
            return loss + tf.reduce_sum(tf.math.log1p(neg_term)) / float(size)

        @tf.function(reduce_retracing=True)
        def step(batch: Any, labels: Any) -> Any:
            with tf.GradientTape() as tape:
                z = project(batch)
                losses = []
                for j, (proxy, size) in enumerate(zip(proxies, sizes, strict=True)):
                    part = z[:, segments[j] * k : (segments[j] + 1) * k]
                    losses.append(
                        proxy_anchor(tf.nn.l2_normalize(part, axis=1), labels[:, j], proxy, size)
                    )
                loss = tf.add_n(losses)
            grads = tape.gradient(loss, [*trainable, *proxies])
            opt.apply_gradients(zip(grads[: len(trainable)], trainable, strict=True))
            opt_proxy.apply_gradients(zip(grads[len(trainable) :], proxies, strict=True))
            return loss

        xs = x.astype(np.float32)
        ys = targets.astype(np.int32)
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
    def _segments(self, x: np.ndarray) -> list[np.ndarray]:
        """The projection of ``x``: one unit vector per output segment."""
        a = self.arrays_
        c = x - a["mean"]
        if "w1" in a:
            h = np.maximum(c @ a["w1"] + a["b1"], 0.0)
            z = h @ a["w2"] + a["b2"]
        else:
            z = c @ a["w"] + a["b"]
        k = self.dim_out
        return [
            normalize_rows(z[:, s * k : (s + 1) * k].astype(np.float32))
            for s in range(z.shape[1] // k)
        ]

    def _project(self, x: np.ndarray) -> np.ndarray:
        """The learned unit vectors of ``x`` (segments weighted by ``weights_``)."""
        return _weigh(self._segments(x), self.weights_)

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
        x = unit_rows(vectors, name="vectors", allow_empty=True)
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
            "adapter",
            {
                "config": self.get_config(),
                "n_features_in": self.n_features_in_,
                "mix": self.mix_,
                "n_labels": self.n_labels_,
                "fields": list(self.fields_),
                "weights": list(self.weights_),
                "validation": self.validation_,
                "history": self.history_,
            },
            files=files,
        )

    @classmethod
    def load(cls, directory: str | Path, *, verify: bool = True) -> ProjectionAdapter:
        """Return the adapter saved in ``directory`` by :meth:`save`.

        Reads this version's format and version 1 (one label field, saved
        before ``combine`` and ``fields`` existed).

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
            "adapter",
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
        weights: tuple[float, ...] = (1.0,)
        if "weights" in manifest:  # version 2
            listed = P.field_list(where, "weights", manifest["weights"], max_len=1000)
            try:
                weights = _check_weights(listed)
            except ConfigError as exc:
                raise CatalogError(f"{where}: field 'weights' is invalid: {exc}") from None
        h, k = adapter.hidden, adapter.dim_out * len(weights)
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
        adapter.weights_ = weights
        validation = manifest.get("validation")
        adapter.validation_ = dict(validation) if isinstance(validation, Mapping) else {}
        history = manifest.get("history")
        if isinstance(history, list):
            adapter.history_ = [float(v) for v in history if isinstance(v, (int, float))]
        n_labels = manifest.get("n_labels")
        adapter.n_labels_ = int(n_labels) if isinstance(n_labels, int) else 0
        if "fields" in manifest:  # version 2
            names = P.field_list(where, "fields", manifest["fields"], max_len=1000)
            if not all(isinstance(name, str) and name for name in names):
                raise CatalogError(f"{where}: field 'fields' must list label field names")
            adapter.fields_ = tuple(names)
        return adapter
