"""Does an extractor make the same vectors as the one a catalogue was built with?

A catalogue's vectors only mean something next to query vectors from the same
network, weights and preprocessing. ``Recommender.load(path, extractor=...)``
uses :func:`compare_extractor_configs` to list what differs between the saved
extractor spec and the one given (``resize`` ``pad`` vs ``stretch``, random vs
ImageNet weights, another backbone), so mixed vector spaces are never silent.
Settings that change speed but not the vectors (batch size, worker threads, the
inference runtime and precision, whose numeric drift
:func:`visualsim.extractors.openvino.check_runtime_compatible` measures) are
not differences.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

from ..errors import ConfigError

NOT_VECTOR_SETTINGS = frozenset(
    {"batch_size", "num_workers", "runtime", "precision", "calibration", "calibration_size"}
)
"""Config keys that change how fast vectors are made, not which vectors."""


class ExtractorMismatchWarning(UserWarning):
    """A catalogue is being queried with an extractor configured differently from its own."""


def _spec(extractor: Any) -> dict[str, Any]:
    if isinstance(extractor, Mapping):
        if "name" not in extractor:
            raise ConfigError(f"an extractor spec needs a 'name', got {dict(extractor)!r}")
        return {"name": extractor["name"], "config": dict(extractor.get("config") or {})}
    from .base import extractor_spec

    return extractor_spec(extractor)


def _describe(key: str, value: Any) -> str:
    if key == "weights" and value is None:
        return "None (random weights)"
    return repr(value)


def compare_extractor_configs(saved: Mapping[str, Any], given: Any) -> list[str]:
    """Return what differs between a saved extractor spec and ``given``, one line each.

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
        ``"resize: saved 'pad', given 'stretch'"``. Parts of a
        :class:`~visualsim.ConcatExtractor` are compared part by part
        (``"extractors[1].bins: ..."``).

    Examples
    --------
    >>> saved = {"name": "color", "config": {"bins": [16, 4, 4], "batch_size": 8}}
    >>> compare_extractor_configs(saved, {"name": "color", "config": {"bins": [8, 4, 4]}})
    ['bins: saved [16, 4, 4], given [8, 4, 4]']
    >>> compare_extractor_configs(saved, {"name": "color", "config": {"bins": [16, 4, 4]}})
    []
    """
    return _compare(_spec(saved), _spec(given), "")


def _compare(saved: Mapping[str, Any], given: Mapping[str, Any], prefix: str) -> list[str]:
    if saved["name"] != given["name"]:
        return [f"{prefix}extractor: saved {saved['name']!r}, given {given['name']!r}"]
    a, b = dict(saved.get("config") or {}), dict(given.get("config") or {})
    diffs: list[str] = []
    if saved["name"] == "concat":
        parts_a, parts_b = a.pop("extractors", []), b.pop("extractors", [])
        if len(parts_a) != len(parts_b):
            diffs.append(f"{prefix}extractors: saved {len(parts_a)} parts, given {len(parts_b)}")
        else:
            for i, (pa, pb) in enumerate(zip(parts_a, parts_b, strict=True)):
                diffs += _compare(_spec(pa), _spec(pb), f"{prefix}extractors[{i}].")
    for key in sorted(set(a) | set(b)):
        if key in NOT_VECTOR_SETTINGS:
            continue
        va, vb = a.get(key, _MISSING), b.get(key, _MISSING)
        if _same(va, vb):
            continue
        if va is _MISSING or vb is _MISSING:
            # a setting one version of visualsim records and the other does not:
            # compare against the given extractor's default only when it is None
            present = vb if va is _MISSING else va
            if present is None:
                continue
        shown_a = "(not recorded)" if va is _MISSING else _describe(key, va)
        shown_b = "(not set)" if vb is _MISSING else _describe(key, vb)
        diffs.append(f"{prefix}{key}: saved {shown_a}, given {shown_b}")
    return diffs


_MISSING: Any = object()


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return float(a) == float(b)
    return bool(a == b)


def check_extractor_config(
    saved: Mapping[str, Any],
    given: Any,
    *,
    allow_mismatch: bool = False,
    source: str = "the catalogue",
) -> list[str]:
    """Refuse (or, with ``allow_mismatch``, warn about) an extractor unlike the saved one.

    Returns the differences (empty when none).

    Raises
    ------
    ConfigError
        Naming ``source`` and every difference, unless ``allow_mismatch``; then an
        :class:`ExtractorMismatchWarning` says the same.
    """
    diffs = compare_extractor_configs(saved, given)
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


__all__ = [
    "NOT_VECTOR_SETTINGS",
    "ExtractorMismatchWarning",
    "check_extractor_config",
    "compare_extractor_configs",
]
