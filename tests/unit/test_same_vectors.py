"""One rule for "do these two extractors give the same vectors?", and every caller agrees.

The rule (:mod:`visualsim.extractors.spec`): speed settings (batch size, workers) and
runtime settings (runtime, precision, calibration: measured by
``check_runtime_compatible``, not compared) are ignored; every other setting, concat
parts and weights included, must be equal. Each place that meets two extractors
(``Recommender.load``, a fit's checkpoint, a shard folder resumed or added, the HTTP
server's reload, the runtime check) is driven through the same table below.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import visualsim
from visualsim import (
    ColorHistogramExtractor,
    ConcatExtractor,
    Recommender,
    SqueezeNetExtractor,
    SyntheticProducts,
)
from visualsim.checkpoint import ExtractionCheckpoint
from visualsim.errors import CatalogError, ConfigError
from visualsim.extractors import compare
from visualsim.extractors.base import extractor_spec as base_extractor_spec
from visualsim.extractors.openvino import RuntimeMismatchWarning, check_runtime_compatible
from visualsim.extractors.spec import (
    as_spec,
    check_extractor_config,
    extractor_spec,
    runtimes,
    same_vectors,
    vector_differences,
)
from visualsim.serve.app import _load
from visualsim.shards import ShardWriter, load_into, same_extractor

COLOUR = ColorHistogramExtractor(bins=(4, 2, 2))
SQUEEZE = SqueezeNetExtractor()


def _concat(**changes: Any) -> ConcatExtractor:
    parts = [
        SqueezeNetExtractor(**changes.pop("squeeze", {})),
        ColorHistogramExtractor(bins=(4, 2, 2)),
    ]
    return ConcatExtractor(parts, **changes)


# (saved, given, the differences the rule names: empty means the same vectors)
TABLE: list[tuple[str, Any, Any, list[str]]] = [
    ("batch_size", COLOUR, ColorHistogramExtractor(bins=(4, 2, 2), batch_size=3), []),
    ("num_workers", COLOUR, ColorHistogramExtractor(bins=(4, 2, 2), num_workers=0), []),
    ("cnn batch_size", SQUEEZE, SqueezeNetExtractor(batch_size=7, num_workers=1), []),
    ("runtime f32", SQUEEZE, SqueezeNetExtractor(runtime="openvino", precision="f32"), []),
    ("precision", SQUEEZE, SqueezeNetExtractor(runtime="openvino", precision="int8"), []),
    (
        "precision vs precision",
        SqueezeNetExtractor(runtime="openvino", precision="bf16"),
        SqueezeNetExtractor(runtime="openvino", precision="int8", calibration_size=8),
        [],
    ),
    (
        "resize",
        SQUEEZE,
        SqueezeNetExtractor(resize="stretch"),
        ["resize: saved 'pad', given 'stretch'"],
    ),
    (
        "resize under another precision",
        SQUEEZE,
        SqueezeNetExtractor(resize="stretch", runtime="openvino", precision="int8"),
        ["resize: saved 'pad', given 'stretch'"],
    ),
    ("crop", SQUEEZE, SqueezeNetExtractor(crop="auto"), ["crop: saved None, given 'auto'"]),
    (
        "weights",
        {"name": "resnet50", "config": {"weights": "imagenet", "input_size": 64}},
        {"name": "resnet50", "config": {"weights": None, "input_size": 64, "batch_size": 2}},
        ["weights: saved 'imagenet', given None (random weights)"],
    ),
    (
        "pooling",
        {"name": "resnet50", "config": {"pooling": "avg"}},
        {"name": "resnet50", "config": {"pooling": "gem"}},
        ["pooling: saved 'avg', given 'gem'"],
    ),
    (
        "bins",
        COLOUR,
        ColorHistogramExtractor(bins=(4, 2, 3)),
        ["bins: saved [4, 2, 2], given [4, 2, 3]"],
    ),
    (
        "colour sqrt",
        COLOUR,
        ColorHistogramExtractor(bins=(4, 2, 2), sqrt=False),
        ["sqrt: saved True, given False"],
    ),
    ("another extractor", COLOUR, SQUEEZE, ["extractor: saved 'color', given 'squeezenet'"]),
    ("concat itself", _concat(weights=[3, 1]), _concat(weights=[3, 1], batch_size=5), []),
    (
        "concat part precision",
        _concat(),
        _concat(squeeze={"runtime": "openvino", "precision": "int8"}),
        [],
    ),
    (
        "concat weights",
        _concat(weights=[3, 1]),
        _concat(weights=[1, 1]),
        ["weights: saved [3.0, 1.0], given [1.0, 1.0]"],
    ),
    (
        "concat part",
        _concat(),
        _concat(squeeze={"resize": "stretch"}),
        ["extractors[0].resize: saved 'pad', given 'stretch'"],
    ),
    (
        "concat parts",
        _concat(),
        ConcatExtractor([SqueezeNetExtractor()]),
        ["extractors: saved 2 parts, given 1", "weights: saved [1.0, 1.0], given [1.0]"],
    ),
    (
        "a key only one side records, unset",
        {"name": "color", "config": {"bins": [16, 4, 4]}},
        {"name": "color", "config": {"bins": [16, 4, 4], "crop": None}},
        [],
    ),
    (
        "a key only one side records, set",
        {"name": "color", "config": {"bins": [16, 4, 4]}},
        {"name": "color", "config": {"bins": [16, 4, 4], "crop": "auto"}},
        ["crop: saved (not recorded), given 'auto'"],
    ),
    (
        "numbers",
        {"name": "color", "config": {"size": 64}},
        {"name": "color", "config": {"size": 64.0}},
        [],
    ),
    (
        "a bool is not a number",
        {"name": "color", "config": {"layout": 1}},
        {"name": "color", "config": {"layout": True}},
        ["layout: saved 1, given True"],
    ),
]
CASES = [pytest.param(saved, given, diffs, id=name) for name, saved, given, diffs in TABLE]
SHARD_CASES = [  # extractor objects of one dimension: a shard folder fits both
    pytest.param(saved, given, diffs, id=name)
    for name, saved, given, diffs in TABLE
    if not isinstance(saved, dict) and saved.dim == given.dim
]
COLOUR_CASES = [  # a catalogue to reload, without TensorFlow
    pytest.param(saved, given, diffs, id=name)
    for name, saved, given, diffs in TABLE
    if not isinstance(saved, dict) and saved.name == given.name == "color"
]


@pytest.mark.parametrize(("saved", "given", "diffs"), CASES)
def test_the_rule(saved: Any, given: Any, diffs: list[str]) -> None:
    assert vector_differences(saved, given) == diffs
    assert same_vectors(saved, given) is (not diffs)
    # symmetric, and the same whether given as objects or as their specs
    assert same_vectors(given, saved) is (not diffs)
    assert same_vectors(as_spec(saved), as_spec(given)) is (not diffs)
    assert compare.compare_extractor_configs(as_spec(saved), given) == diffs
    assert same_extractor(as_spec(saved), as_spec(given)) is (not diffs)


def test_the_lines_can_name_both_sides() -> None:
    got = vector_differences(COLOUR, SQUEEZE, names=("shards", "recommender"))
    assert got == ["extractor: shards 'color', recommender 'squeezenet'"]


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (None, "saved extractor must be an extractor or a"),
        ("color", "got str"),
        ({"config": {}}, "saved extractor spec needs a 'name'"),
        ({"name": "color", "config": [1, 2]}, "'config' must be a mapping, got list"),
        (object(), "is not a registered extractor"),
        (
            {"name": "concat", "config": {"extractors": [{"config": {}}]}},
            "saved extractors\\[0\\] extractor spec needs a 'name'",
        ),
    ],
)
def test_what_is_not_an_extractor_is_a_config_error(bad: Any, match: str) -> None:
    good = {"name": "concat", "config": {"extractors": [{"name": "color", "config": {}}]}}
    with pytest.raises(ConfigError, match=match):
        same_vectors(bad, good)


def test_runtimes_lists_every_part_with_one() -> None:
    assert runtimes(COLOUR) == []
    assert runtimes(SQUEEZE) == [("keras", "f32")]
    both = _concat(squeeze={"runtime": "openvino", "precision": "int8"})
    assert runtimes(both) == [("openvino", "int8")]
    assert runtimes(extractor_spec(both)) == [("openvino", "int8")]


def test_public_names_and_the_old_paths() -> None:
    assert visualsim.same_vectors is same_vectors
    assert visualsim.vector_differences is vector_differences
    assert extractor_spec is base_extractor_spec
    assert compare.check_extractor_config is check_extractor_config
    assert same_extractor is same_vectors


# -- every call site decides by the same table ------------------------------------------


@pytest.mark.parametrize(("saved", "given", "diffs"), CASES)
def test_load_check_agrees(saved: Any, given: Any, diffs: list[str]) -> None:
    if diffs:
        with pytest.raises(ConfigError, match="configured differently") as info:
            check_extractor_config(as_spec(saved), given, source="shop.catalog")
        assert all(line in str(info.value) for line in diffs)
    else:
        assert check_extractor_config(as_spec(saved), given) == []


@pytest.mark.parametrize(("saved", "given", "diffs"), CASES)
def test_checkpoint_resume_agrees(tmp_path: Path, saved: Any, given: Any, diffs: list[str]) -> None:
    ExtractionCheckpoint(tmp_path / "ckpt", as_spec(saved))
    if diffs:
        with pytest.raises(CatalogError, match="made with extractor") as info:
            ExtractionCheckpoint(tmp_path / "ckpt", as_spec(given))
        assert all(line in str(info.value) for line in diffs)
    else:
        resumed = ExtractionCheckpoint(tmp_path / "ckpt", as_spec(given))
        assert resumed.consumed == 0


def test_a_checkpoint_with_a_damaged_extractor_entry_is_a_catalog_error(tmp_path: Path) -> None:
    ExtractionCheckpoint(tmp_path, as_spec(COLOUR))
    state = json.loads((tmp_path / "progress.json").read_text())
    state["extractor"] = {"config": {}}
    (tmp_path / "progress.json").write_text(json.dumps(state))
    with pytest.raises(CatalogError, match="progress.json.*needs a 'name'"):
        ExtractionCheckpoint(tmp_path, as_spec(COLOUR))


def test_a_fit_resumes_its_checkpoint_with_another_batch_size(tmp_path: Path) -> None:
    images = [item.image for item in SyntheticProducts(6, seed=1, size=32)]
    ckpt = tmp_path / "ckpt"

    def interrupted() -> Any:
        yield from images[:4]
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Recommender(ColorHistogramExtractor(batch_size=2)).fit(
            interrupted(), batch_size=2, checkpoint_dir=ckpt, progress=False
        )
    assert json.loads((ckpt / "progress.json").read_text())["consumed"] >= 2
    rec = Recommender(ColorHistogramExtractor(batch_size=64)).fit(
        images, batch_size=2, checkpoint_dir=ckpt, progress=False
    )
    fresh = Recommender(ColorHistogramExtractor()).fit(images, progress=False)
    np.testing.assert_allclose(rec.embeddings_, fresh.embeddings_, atol=1e-6)


def _shards(path: Path, spec: dict[str, Any], dim: int) -> None:
    writer = ShardWriter(path, extractor=spec, dim=dim, shard_size=2)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    writer.write(0, vectors=x, ids=["a", "b"], metadata=[{}, {}], input_ids=["a", "b"])


@pytest.mark.parametrize(("saved", "given", "diffs"), SHARD_CASES)
def test_shard_resume_and_load_into_agree(
    tmp_path: Path, saved: Any, given: Any, diffs: list[str]
) -> None:
    _shards(tmp_path, as_spec(saved), int(saved.dim))

    def resume() -> ShardWriter:
        return ShardWriter(tmp_path, extractor=as_spec(given), dim=int(saved.dim), shard_size=2)

    def into() -> Recommender:
        return load_into(Recommender(given, "flat"), tmp_path)

    if diffs:
        with pytest.raises(ConfigError, match="holds vectors of extractor") as info:
            resume()
        assert all(line in str(info.value) for line in diffs)
        with pytest.raises(ConfigError, match="were made by") as info:
            into()
        shown = [line.replace("saved", "shards").replace("given", "recommender") for line in diffs]
        assert all(line in str(info.value) for line in shown)
    else:
        resume()
        assert len(into()) == 2


@pytest.mark.parametrize(("saved", "given", "diffs"), COLOUR_CASES)
def test_the_server_reuses_its_extractor_exactly_when_the_rule_says_so(
    tmp_path: Path, saved: Any, given: Any, diffs: list[str]
) -> None:
    path = (
        Recommender(saved, "flat")
        .fit(SyntheticProducts(3, size=32), progress=False)
        .save(tmp_path / "c")
    )
    current = Recommender(given, "flat")
    loaded = _load(path, current)
    assert (loaded.extractor_ is given) is (not diffs)
    assert same_vectors(loaded.extractor_, saved)


def test_the_runtime_check_measures_only_what_the_rule_calls_the_same() -> None:
    saved = as_spec(SQUEEZE)
    other_network = SqueezeNetExtractor(resize="stretch", runtime="openvino", precision="f32")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_runtime_compatible(saved, other_network) is None  # not its business
        assert check_runtime_compatible(saved, SqueezeNetExtractor(batch_size=3)) is None
    same_network = SqueezeNetExtractor(runtime="openvino", precision="f32", batch_size=3)
    with pytest.warns(RuntimeMismatchWarning, match="no images"):
        assert check_runtime_compatible(saved, same_network) is None
