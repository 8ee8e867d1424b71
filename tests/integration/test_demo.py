"""The demo picks local data and a pretrained extractor, and says which."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from visualsim.datasets import fashion_mnist
from visualsim.demo import choose_data, choose_extractor
from visualsim.errors import ConfigError, DatasetError


def test_demo_uses_fashion_mnist_when_it_is_on_the_machine(
    fashion_mnist_dir: Callable[..., Path],
) -> None:
    fashion_mnist_dir(80)
    data, label, desc = choose_data("auto", 50)
    assert len(data) == 50 and label == "class_name"
    assert "Fashion-MNIST" in desc and str(fashion_mnist.DEBIAN_DIR) in desc


def test_demo_falls_back_to_generated_products_without_a_local_copy(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", tmp_path / "none")
    monkeypatch.setattr(fashion_mnist, "KERAS_CACHE_DIR", tmp_path / "cache")
    data, label, desc = choose_data("auto", 30)
    assert label == "category" and "generated products" in desc
    assert len(data) == 30 and data[0].metadata["category"]
    with pytest.raises(DatasetError, match="no local copy"):
        choose_data("fashion-mnist", 30)


def test_demo_prefers_resnet50_imagenet_weights_found_on_disk(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("VISUALSIM_WEIGHTS", raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    extractor, desc = choose_extractor("auto")
    assert extractor.name == "concat" and "SqueezeNet" in desc and "VISUALSIM_WEIGHTS" in desc
    weights = tmp_path / "resnet50.h5"
    weights.write_bytes(b"only its presence is checked here")
    monkeypatch.setenv("VISUALSIM_WEIGHTS", str(weights))
    extractor, desc = choose_extractor("auto")
    assert extractor.name == "resnet50" and str(weights) in desc


def test_demo_rejects_unknown_data() -> None:
    with pytest.raises(ConfigError, match="data must be"):
        choose_data("imagenet")
