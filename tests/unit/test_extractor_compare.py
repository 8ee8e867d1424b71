"""A catalogue queried with another extractor's settings is caught, not silently mixed."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from visualsim import (
    ColorHistogramExtractor,
    ConcatExtractor,
    ResNet50Extractor,
    SqueezeNetExtractor,
)
from visualsim.errors import ConfigError
from visualsim.extractors.base import extractor_spec
from visualsim.extractors.compare import (
    ExtractorMismatchWarning,
    check_extractor_config,
    compare_extractor_configs,
)


def test_resize_mode_and_weights_differences_are_named() -> None:
    saved = extractor_spec(SqueezeNetExtractor(resize="pad"))
    assert compare_extractor_configs(saved, SqueezeNetExtractor(resize="pad")) == []
    assert compare_extractor_configs(saved, SqueezeNetExtractor(resize="stretch")) == [
        "resize: saved 'pad', given 'stretch'"
    ]
    imagenet = extractor_spec(ResNet50Extractor(input_size=64))
    diffs = compare_extractor_configs(imagenet, ResNet50Extractor(weights=None, input_size=64))
    assert diffs == ["weights: saved 'imagenet', given None (random weights)"]
    assert compare_extractor_configs(imagenet, SqueezeNetExtractor()) == [
        "extractor: saved 'resnet50', given 'squeezenet'"
    ]


def test_speed_settings_are_not_differences() -> None:
    saved = extractor_spec(ColorHistogramExtractor(batch_size=8))
    assert compare_extractor_configs(saved, ColorHistogramExtractor(batch_size=64)) == []
    older = {"name": "color", "config": {"bins": [16, 4, 4]}}  # a key newer versions add
    newer = {"name": "color", "config": {"bins": [16, 4, 4], "crop": None}}
    assert compare_extractor_configs(older, newer) == []


def test_concat_parts_are_compared_one_by_one() -> None:
    saved = ConcatExtractor([SqueezeNetExtractor(), ColorHistogramExtractor()], weights=[4, 1])
    other = ConcatExtractor(
        [SqueezeNetExtractor(), ColorHistogramExtractor(bins=(8, 4, 4))], weights=[1, 1]
    )
    diffs = compare_extractor_configs(extractor_spec(saved), other)
    assert diffs == [
        "extractors[1].bins: saved [16, 4, 4], given [8, 4, 4]",
        "weights: saved [4.0, 1.0], given [1.0, 1.0]",
    ]


def test_check_refuses_unless_allowed() -> None:
    saved = extractor_spec(SqueezeNetExtractor(resize="pad"))
    with pytest.raises(ConfigError, match="resize: saved 'pad', given 'stretch'.*allow_mismatch"):
        check_extractor_config(saved, SqueezeNetExtractor(resize="stretch"), source="shop.catalog")
    with pytest.warns(ExtractorMismatchWarning, match="shop.catalog"):
        diffs = check_extractor_config(
            saved, SqueezeNetExtractor(resize="stretch"), allow_mismatch=True, source="shop.catalog"
        )
    assert len(diffs) == 1
    assert check_extractor_config(saved, SqueezeNetExtractor()) == []


@given(
    st.tuples(*(st.integers(1, 16) for _ in range(3))),
    st.integers(16, 256),
    st.booleans(),
)
def test_an_extractor_matches_its_own_spec(
    bins: tuple[int, int, int], size: int, sqrt: bool
) -> None:
    ext = ColorHistogramExtractor(bins=bins, size=size, sqrt=sqrt)
    assert compare_extractor_configs(extractor_spec(ext), ext) == []
    other = ColorHistogramExtractor(bins=bins, size=size, sqrt=not sqrt)
    assert compare_extractor_configs(extractor_spec(ext), other) == [
        f"sqrt: saved {sqrt!r}, given {not sqrt!r}"
    ]
