"""``--extractor SPEC [--extractor-config JSON]`` and ``--index NAME [--index-config
JSON_OR_PATH]``: the extractor and the index a command line describes, built through
the registries."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ._common import UsageError, _did_you_mean, _existing, _extractor_names

KERAS_EXTRACTORS = ("resnet50", "keras")


def parse_extractor_spec(spec: str) -> tuple[list[str], list[float] | None]:
    """Split ``"squeezenet+color:4:1"`` into ``(["squeezenet", "color"], [4.0, 1.0])``.

    Parts are registered extractor names joined by ``+``; ``:w`` suffixes give one
    weight per part (a :class:`~visualsim.ConcatExtractor`).

    Raises
    ------
    UsageError
        For an unknown name (with a "did you mean"), empty parts, or weights that
        are not one finite non-negative number per part.
    """
    text = spec.strip()
    names_part, *weight_texts = text.split(":")
    names = [n.strip() for n in names_part.split("+")]
    if not text or any(not n for n in names):
        raise UsageError(
            f"--extractor {spec!r}: expected NAME or NAME+NAME[:W:W], e.g. squeezenet+color:4:1"
        )
    known = _extractor_names()
    for name in names:
        if name not in known:
            raise UsageError(
                f"unknown extractor {name!r}{_did_you_mean(name, known)} Known: "
                f"{', '.join(known)}; combine them as NAME+NAME[:W:W]"
            )
    if "concat" in names:
        raise UsageError(
            "--extractor concat: name the parts joined by '+', with optional weights, "
            "e.g. --extractor squeezenet+color:4:1"
        )
    if not weight_texts:
        return names, None
    if len(names) < 2:
        raise UsageError(f"--extractor {spec!r}: weights (':W') need two or more parts")
    if len(weight_texts) != len(names):
        raise UsageError(
            f"--extractor {spec!r}: {len(names)} parts but {len(weight_texts)} weights; "
            "give one weight per part"
        )
    weights = []
    for w in weight_texts:
        try:
            value = float(w)
        except ValueError:
            raise UsageError(f"--extractor {spec!r}: weight {w!r} is not a number") from None
        if not math.isfinite(value) or value < 0:
            raise UsageError(f"--extractor {spec!r}: weight {w!r} must be finite and >= 0")
        weights.append(value)
    if not sum(weights) > 0:
        raise UsageError(f"--extractor {spec!r}: the weights must not all be zero")
    return names, weights


def build_extractor(
    spec: str,
    config: str | None = None,
    *,
    weights: str | None = None,
    runtime: str | None = None,
    precision: str | None = None,
) -> Any:
    """Return the extractor that ``--extractor SPEC [--extractor-config JSON]`` describes.

    Parameters
    ----------
    spec
        ``"auto"`` (:func:`~visualsim.extractors.auto.auto_extractor`: ResNet50
        where its weights are on disk, else the offline product mix), a
        registered name (``"color"``), or parts joined by ``+`` with optional
        weights (``"squeezenet+color:4:1"``, a ConcatExtractor).
    config
        JSON: the constructor options of a single extractor (``{"bins": [8, 4, 4]}``);
        for a combination, an object of options per part name
        (``{"color": {"bins": [8, 4, 4]}}``); or a whole registry spec
        ``{"name": ..., "config": {...}}`` as ``visualsim info --json`` prints it.
    weights, runtime, precision
        ``--weights`` (applied to the resnet50/keras parts), ``--runtime`` and
        ``--precision`` (applied to the CNN parts: resnet50, keras, squeezenet).

    Raises
    ------
    UsageError
        On any bad name, option or JSON.
    """
    from ..extractors.base import extractor_from_config, make_extractor

    options: Any = {}
    if config is not None:
        try:
            options = json.loads(config)
        except json.JSONDecodeError as exc:
            raise UsageError(f"--extractor-config is not valid JSON: {exc}") from None
        if not isinstance(options, dict):
            raise UsageError(
                f"--extractor-config must be a JSON object, got {type(options).__name__}"
            )
    if isinstance(options, dict) and "name" in options and "config" in options:
        if weights is not None or runtime is not None or precision is not None:
            raise UsageError("--weights/--runtime/--precision cannot be combined with a full spec")
        try:
            return extractor_from_config(options)
        except ConfigError as exc:
            raise UsageError(f"--extractor-config: {exc}") from None
    if spec == "auto":
        return _auto_extractor(config, weights, runtime, precision)[0]
    names, mix = parse_extractor_spec(spec)
    if len(names) == 1:
        per_part = [dict(options)]
    else:
        unknown = sorted(set(options) - set(names))
        if unknown:
            raise UsageError(
                f"--extractor-config: {', '.join(map(repr, unknown))} is not a part of "
                f"{spec!r}; for a combination give options per part: "
                f'{{"{names[-1]}": {{...}}}}'
            )
        per_part = []
        for name in names:
            part = options.get(name, {})
            if not isinstance(part, dict):
                raise UsageError(f"--extractor-config: options of {name!r} must be an object")
            per_part.append(dict(part))
    keras_parts = [i for i, n in enumerate(names) if n in KERAS_EXTRACTORS]
    cnn_parts = [i for i, n in enumerate(names) if n in (*KERAS_EXTRACTORS, "squeezenet")]
    for flag, value, key, targets, what in (
        ("--weights", weights, "weights", keras_parts, "the resnet50 and keras extractors"),
        (
            "--runtime",
            runtime,
            "runtime",
            cnn_parts,
            "the resnet50, keras and squeezenet extractors",
        ),
        ("--precision", precision, "precision", cnn_parts, "the CNN extractors"),
    ):
        if value is None:
            continue
        if not targets:
            raise UsageError(f"{flag} applies to {what}")
        for i in targets:
            per_part[i][key] = None if key == "weights" and value.lower() == "none" else value
    try:
        parts = [make_extractor(n, **p) for n, p in zip(names, per_part, strict=True)]
        if len(parts) == 1:
            return parts[0]
        from ..extractors.concat import ConcatExtractor

        return ConcatExtractor(parts, weights=mix)
    except ConfigError as exc:
        raise UsageError(f"--extractor {spec}: {exc}") from None


def _auto_extractor(
    config: str | None, weights: str | None, runtime: str | None, precision: str | None
) -> tuple[Any, str]:
    """``--extractor auto``: :func:`~visualsim.extractors.auto.auto_extractor`'s choice and
    its one-line description; the options it would ignore are a usage error."""
    if config is not None or weights is not None or runtime is not None or precision:
        raise UsageError(
            "--extractor auto picks its own settings; name the extractor to set "
            "--extractor-config/--weights/--runtime/--precision (e.g. --extractor squeezenet)"
        )
    from ..extractors.auto import auto_extractor

    return auto_extractor()


MAX_INDEX_CONFIG_BYTES = 1 << 20
"""Largest ``--index-config`` file read (1 MiB): an index configuration is a few lines."""


def build_index(name: str | None, config: str | None = None) -> Any:
    """Return the index that ``--index NAME [--index-config JSON_OR_PATH]`` describes.

    Parameters
    ----------
    name
        A registered index name (``"flat"``, ``"hnsw"``, ...); ``None`` when
        ``--index`` was not given (``"flat"``, or the name of a whole spec).
    config
        JSON text, or the path of a JSON file (text that does not start with
        ``{`` or ``[``): the constructor options of the index
        (``{"M": 16, "ef_search": 128}``), or a whole registry spec
        ``{"name": ..., "config": {...}}`` as ``visualsim info --json`` prints
        it under ``"index"``. The index is built with the registry's
        ``from_config``.

    Returns
    -------
    str or Index
        The name itself when there is no ``config`` (the catalogue builds it),
        else a new, empty index.

    Raises
    ------
    UsageError
        On a missing or unreadable file, bad JSON, an unknown name, an option
        the index does not take, or a spec naming another index than ``--index``.

    Examples
    --------
    >>> build_index("hnsw", '{"M": 8}').get_config()["M"]
    8
    >>> build_index(None, '{"name": "ivf", "config": {"nlist": 4}}').get_config()["nlist"]
    4
    >>> build_index("flat", '{"M": 8}')
    Traceback (most recent call last):
    ...
    visualsim.cli.UsageError: --index-config: invalid config for FlatIndex: ...
    """
    from ..indexes.base import INDEXES

    if config is None:
        return name or "flat"
    text = config
    if not config.lstrip().startswith(("{", "[")):
        path = _existing(Path(config), "--index-config", directory=False)
        try:
            if path.stat().st_size > MAX_INDEX_CONFIG_BYTES:
                raise UsageError(
                    f"--index-config {config!r} is larger than "
                    f"{MAX_INDEX_CONFIG_BYTES >> 20} MiB; it should hold one JSON object"
                )
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"--index-config {config!r} cannot be read: {exc}") from None
    try:
        options = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"--index-config is not valid JSON: {exc}") from None
    if not isinstance(options, dict):
        raise UsageError(f"--index-config must be a JSON object, got {type(options).__name__}")
    try:
        if "name" in options and "config" in options:
            if name is not None and options["name"] != name:
                raise UsageError(
                    f"--index {name} and --index-config naming index {options['name']!r} "
                    "disagree; give one of them"
                )
            if not isinstance(options["config"], dict):
                raise UsageError("--index-config: 'config' must be a JSON object")
            return INDEXES.from_spec(options)
        return INDEXES.build(name or "flat", options)
    except ConfigError as exc:
        raise UsageError(f"--index-config: {exc}") from None
