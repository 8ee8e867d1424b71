"""Extractor specs and the one rule for "do these two extractors give the same vectors?".

An extractor is saved as a spec, ``{"name": ..., "config": {...}}``
(:func:`extractor_spec` writes it, :func:`~visualsim.extractors.base.extractor_from_config`
reads it). Stored vectors only mean something next to vectors from the same
network, weights and preprocessing, so every place that meets two extractors
asks this module, and only this module, whether they are interchangeable:
``Recommender.load(path, extractor=...)``, resuming a fit's checkpoint, resuming
a shard folder and adding one to a catalogue, the HTTP server reloading a
catalogue with the extractor it already holds, and
:func:`~visualsim.extractors.openvino.check_runtime_compatible`.

The rule (:func:`same_vectors`, with :func:`vector_differences` naming what differs)
sorts every config key into one of three kinds:

* **speed settings** (:data:`SPEED_SETTINGS`: ``batch_size``, ``num_workers``)
  change how fast vectors are made, never which: ignored;
* **runtime settings** (:data:`RUNTIME_SETTINGS`: ``runtime``, ``precision``,
  ``calibration``, ``calibration_size``) choose how the *same* network is
  computed (Keras, a frozen graph or OpenVINO at FP32, BF16 or INT8). Every one
  is held to a measured cosine to Keras FP32 (``GUARDS`` in
  :mod:`visualsim.extractors.openvino`: 0.999 at FP32, 0.99 at BF16 and INT8,
  checked when an INT8 model is calibrated and when ``"auto"`` picks one), and
  the library itself changes them under a running job: ``precision="auto"``
  resolves to what the CPU runs fastest, an INT8 model missing from the cache
  falls back to BF16 or FP32. A textual comparison would therefore refuse what
  the library does by design, so they are not differences here; whether two
  runtimes really agree is measured on images by
  :func:`~visualsim.extractors.openvino.check_runtime_compatible`, the one owner
  of that question (``Recommender.load`` calls it when the runtimes differ), and
  :func:`runtimes` lists what it compares;
* **every other key** changes the vectors (the extractor's name, weights,
  backbone, pooling, input size, ``resize``, ``crop``, the colour histogram's
  bins and layout, a :class:`~visualsim.ConcatExtractor`'s weights and, part by
  part, its parts) and must be equal. ``1`` and ``1.0`` are equal, ``True`` and
  ``1`` are not. A key only one side records (a setting an older visualsim did
  not write) counts only when the side that records it sets it to something
  other than ``None``.

Examples
--------
>>> from visualsim import ColorHistogramExtractor
>>> a = ColorHistogramExtractor(batch_size=8)
>>> same_vectors(a, ColorHistogramExtractor(batch_size=64))
True
>>> vector_differences(a, ColorHistogramExtractor(bins=(8, 4, 4)))
['bins: saved [16, 4, 4], given [8, 4, 4]']
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

from ..errors import ConfigError
from .base import extractor_spec

SPEED_SETTINGS = frozenset({"batch_size", "num_workers"})
"""Config keys that change how fast vectors are made, never which vectors."""

RUNTIME_SETTINGS = frozenset({"runtime", "precision", "calibration", "calibration_size"})
"""Config keys that choose how the same network is computed; measured, not compared
(:func:`~visualsim.extractors.openvino.check_runtime_compatible`)."""

NOT_VECTOR_SETTINGS = SPEED_SETTINGS | RUNTIME_SETTINGS
"""Every config key :func:`same_vectors` ignores."""


class ExtractorMismatchWarning(UserWarning):
    """A catalogue is being queried with an extractor configured differently from its own."""


def as_spec(extractor: Any, *, name: str = "extractor") -> dict[str, Any]:
    """Return ``extractor`` as a ``{"name": ..., "config": {...}}`` spec.

    Parameters
    ----------
    extractor
        A registered extractor object, or such a spec already (a manifest entry).
    name
        What to call it in an error message (``"saved"``, ``"given"``).

    Returns
    -------
    dict
        A new spec; ``config`` is a plain dict (empty when the spec has none).

    Raises
    ------
    ConfigError
        A mapping without a string ``name`` or with a ``config`` that is not a
        mapping, or an object that is not a registered extractor.
    """
    if isinstance(extractor, Mapping):
        kind = extractor.get("name")
        config = extractor.get("config")
        if not isinstance(kind, str):
            raise ConfigError(
                f"the {name} extractor spec needs a 'name' string, got {str(dict(extractor))[:200]}"
            )
        if config is not None and not isinstance(config, Mapping):
            raise ConfigError(
                f"the {name} extractor spec's 'config' must be a mapping, "
                f"got {type(config).__name__}"
            )
        return {"name": kind, "config": dict(config or {})}
    if extractor is None or isinstance(extractor, (str, bytes, int, float, list, tuple)):
        raise ConfigError(
            f"the {name} extractor must be an extractor or a {{'name', 'config'}} spec, "
            f"got {type(extractor).__name__}"
        )
    return extractor_spec(extractor)


def vector_differences(a: Any, b: Any, *, names: tuple[str, str] = ("saved", "given")) -> list[str]:
    """Return what makes ``a`` and ``b`` give different vectors, one line per setting.

    See the module docstring for the rule: speed and runtime settings are
    ignored, every other setting must be equal.

    Parameters
    ----------
    a, b
        Extractor objects (registered) or ``{"name": ..., "config": {...}}`` specs.
    names
        How the lines call ``a`` and ``b``.

    Returns
    -------
    list of str
        Empty when they give the same vectors; else lines such as
        ``"resize: saved 'pad', given 'stretch'"``, in key order. Parts of a
        :class:`~visualsim.ConcatExtractor` are compared part by part
        (``"extractors[1].bins: ..."``).

    Raises
    ------
    ConfigError
        If either is neither a registered extractor nor a spec.

    Examples
    --------
    >>> saved = {"name": "color", "config": {"bins": [16, 4, 4], "batch_size": 8}}
    >>> vector_differences(saved, {"name": "color", "config": {"bins": [8, 4, 4]}})
    ['bins: saved [16, 4, 4], given [8, 4, 4]']
    >>> vector_differences(saved, {"name": "shape", "config": {}}, names=("shards", "catalogue"))
    ["extractor: shards 'color', catalogue 'shape'"]
    """
    first, second = names
    return _compare(as_spec(a, name=first), as_spec(b, name=second), "", names)


def same_vectors(a: Any, b: Any) -> bool:
    """Return whether extractors (or specs) ``a`` and ``b`` give the same vectors.

    The one rule every "same extractor?" check uses (see the module docstring):
    ``not vector_differences(a, b)``.

    Parameters
    ----------
    a, b
        Extractor objects (registered) or ``{"name": ..., "config": {...}}`` specs.

    Returns
    -------
    bool
        ``True`` when only speed settings (``batch_size``, ``num_workers``) or
        runtime settings (``runtime``, ``precision``, calibration) differ.

    Raises
    ------
    ConfigError
        If either is neither a registered extractor nor a spec.

    Examples
    --------
    >>> saved = {"name": "color", "config": {"bins": [16, 4, 4], "batch_size": 8}}
    >>> same_vectors(saved, {"name": "color", "config": {"bins": [16, 4, 4], "batch_size": 64}})
    True
    >>> same_vectors(saved, {"name": "color", "config": {"bins": [8, 4, 4]}})
    False
    """
    return not vector_differences(a, b)


def runtimes(extractor: Any) -> list[tuple[str, str]]:
    """Return the ``(runtime, precision)`` of every part of ``extractor`` that has a runtime.

    What :func:`~visualsim.extractors.openvino.check_runtime_compatible`
    compares before measuring: two extractors that :func:`same_vectors` calls
    the same but whose lists differ are checked on images. A runtime without a
    precision (Keras, a frozen graph) computes in FP32.

    Parameters
    ----------
    extractor
        An extractor object (registered) or a ``{"name": ..., "config": {...}}`` spec.

    Returns
    -------
    list of tuple
        In part order; empty for extractors without a runtime (the colour histogram).

    Examples
    --------
    >>> runtimes({"name": "squeezenet", "config": {"runtime": "keras"}})
    [('keras', 'f32')]
    >>> runtimes({"name": "concat", "config": {"extractors": [
    ...     {"name": "squeezenet", "config": {"runtime": "openvino", "precision": "int8"}},
    ...     {"name": "color", "config": {}}]}})
    [('openvino', 'int8')]
    """
    spec = as_spec(extractor)
    config = spec["config"]
    found: list[tuple[str, str]] = []
    if "runtime" in config:
        found.append((str(config["runtime"]), str(config.get("precision") or "f32")))
    parts = config.get("extractors")
    if isinstance(parts, (list, tuple)):
        for part in parts:
            found.extend(runtimes(part))
    return found


def check_extractor_config(
    saved: Mapping[str, Any],
    given: Any,
    *,
    allow_mismatch: bool = False,
    source: str = "the catalogue",
) -> list[str]:
    """Refuse (or, with ``allow_mismatch``, warn about) an extractor unlike the saved one.

    ``Recommender.load(path, extractor=...)``'s check, by :func:`vector_differences`.

    Parameters
    ----------
    saved
        The catalogue's ``{"name": ..., "config": {...}}`` extractor entry.
    given
        The extractor (or spec) it is about to be queried with.
    allow_mismatch
        Warn instead of raising.
    source
        What the saved spec belongs to, for the message.

    Returns
    -------
    list of str
        The differences (empty when none).

    Raises
    ------
    ConfigError
        Naming ``source`` and every difference, unless ``allow_mismatch``; then an
        :class:`ExtractorMismatchWarning` says the same.
    """
    diffs = vector_differences(saved, given)
    if not diffs:
        return diffs
    message = (
        f"the extractor given for {source} is configured differently from the one its "
        f"vectors were made with ({'; '.join(diffs)}): its query vectors would not be "
        "comparable with the stored ones. Load without extractor= to use the saved one"
    )
    if not allow_mismatch:
        raise ConfigError(message + ", or pass allow_mismatch=True if you know better")
    warnings.warn(message, ExtractorMismatchWarning, stacklevel=2)
    return diffs


def compare_extractor_configs(saved: Mapping[str, Any], given: Any) -> list[str]:
    """Return what differs between a saved extractor spec and ``given``, one line each.

    :func:`vector_differences` under its older name.

    Parameters
    ----------
    saved
        A catalogue's ``{"name": ..., "config": {...}}`` extractor entry.
    given
        An extractor object (registered) or another such spec.

    Returns
    -------
    list of str
        Empty when both make the same vectors; else lines such as
        ``"resize: saved 'pad', given 'stretch'"``.

    Examples
    --------
    >>> saved = {"name": "color", "config": {"bins": [16, 4, 4], "batch_size": 8}}
    >>> compare_extractor_configs(saved, {"name": "color", "config": {"bins": [8, 4, 4]}})
    ['bins: saved [16, 4, 4], given [8, 4, 4]']
    >>> compare_extractor_configs(saved, {"name": "color", "config": {"bins": [16, 4, 4]}})
    []
    """
    return vector_differences(saved, given)


# -- the comparison --------------------------------------------------------------------


_MISSING: Any = object()


def _compare(
    a: Mapping[str, Any], b: Mapping[str, Any], prefix: str, names: tuple[str, str]
) -> list[str]:
    first, second = names
    if a["name"] != b["name"]:
        return [f"{prefix}extractor: {first} {a['name']!r}, {second} {b['name']!r}"]
    config_a, config_b = dict(a["config"]), dict(b["config"])
    diffs: list[str] = []
    if a["name"] == "concat":
        parts_a, parts_b = config_a.pop("extractors", []), config_b.pop("extractors", [])
        if not isinstance(parts_a, (list, tuple)) or not isinstance(parts_b, (list, tuple)):
            raise ConfigError(
                f"a concat extractor spec's 'extractors' must be a list, got "
                f"{type(parts_a).__name__} and {type(parts_b).__name__}"
            )
        if len(parts_a) != len(parts_b):
            diffs.append(
                f"{prefix}extractors: {first} {len(parts_a)} parts, {second} {len(parts_b)}"
            )
        else:
            for i, (part_a, part_b) in enumerate(zip(parts_a, parts_b, strict=True)):
                where = f"{prefix}extractors[{i}]"
                diffs += _compare(
                    as_spec(part_a, name=f"{first} {where}"),
                    as_spec(part_b, name=f"{second} {where}"),
                    where + ".",
                    names,
                )
    for key in sorted(set(config_a) | set(config_b)):
        if key in NOT_VECTOR_SETTINGS:
            continue
        value_a, value_b = config_a.get(key, _MISSING), config_b.get(key, _MISSING)
        if _same(value_a, value_b):
            continue
        one_side = value_a is _MISSING or value_b is _MISSING
        if one_side and (value_b if value_a is _MISSING else value_a) is None:
            # a setting one version of visualsim records and the other does not:
            # it counts only when the side that records it sets it
            continue
        shown_a = "(not recorded)" if value_a is _MISSING else _describe(key, value_a)
        shown_b = "(not set)" if value_b is _MISSING else _describe(key, value_b)
        diffs.append(f"{prefix}{key}: {first} {shown_a}, {second} {shown_b}")
    return diffs


def _describe(key: str, value: Any) -> str:
    if key == "weights" and value is None:
        return "None (random weights)"
    return repr(value)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return set(a) == set(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return float(a) == float(b)
    return bool(a == b)


__all__ = [
    "NOT_VECTOR_SETTINGS",
    "RUNTIME_SETTINGS",
    "SPEED_SETTINGS",
    "ExtractorMismatchWarning",
    "as_spec",
    "check_extractor_config",
    "compare_extractor_configs",
    "extractor_spec",
    "runtimes",
    "same_vectors",
    "vector_differences",
]
