"""TensorFlow's C++ start-up lines are filtered in both forms it has printed them in."""

from __future__ import annotations

import pytest

from visualsim.extractors.keras import _NATIVE_NOISE


@pytest.mark.parametrize(
    "line",
    [
        # absl's form (TensorFlow 2.21)
        "E1207 23:23:36.220335  1234 cuda_platform.cc:51] failed call to cuInit: INTERNAL",
        "I1207 23:23:36.220335  1234 cpu_feature_guard.cc:210] This TensorFlow binary is",
        # the older form (TensorFlow 2.18 to 2.20)
        "2026-12-07 23:23:36.220335: E external/local_xla/xla/stream_executor/cuda/"
        "cuda_driver.cc:152] failed call to cuInit: UNKNOWN ERROR (303)",
        "2026-12-07 23:23:36.220335: I tensorflow/core/platform/cpu_feature_guard.cc:210] x",
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    ],
)
def test_start_up_noise_is_recognised(line: str) -> None:
    assert _NATIVE_NOISE.match(line)


@pytest.mark.parametrize(
    "line",
    [
        "Traceback (most recent call last):",
        "visualsim: error: cannot read products.csv",
        "2026-12-07 23:23:36.220335: E external/other/thing.cc:3] a real failure",
        "E1207 23:23:36.220335  1234 model_loader.cc:9] a real failure",
    ],
)
def test_other_lines_are_kept(line: str) -> None:
    assert not _NATIVE_NOISE.match(line)
