"""Loading a catalogue with another runtime warns unless the vectors agree within the guard."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from visualsim import ImageFolder, Recommender, SqueezeNetExtractor, SyntheticProducts
from visualsim.extractors.openvino import RuntimeMismatchWarning


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("rt")
    SyntheticProducts(12, seed=0, size=64).write_folder(root / "shop", label="category")
    rec = Recommender(SqueezeNetExtractor(), image_root=root / "shop")
    rec.fit(ImageFolder(root / "shop"), progress=False)
    return rec.save(root / "cat")


def test_another_runtime_that_agrees_loads_quietly(catalogue: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeMismatchWarning)
        rec = Recommender.load(
            catalogue, extractor=SqueezeNetExtractor(runtime="openvino", precision="f32")
        )
    assert len(rec) == 12


def test_another_runtime_without_readable_images_warns(catalogue: Path, tmp_path: Path) -> None:
    import shutil

    moved = tmp_path / "cat"
    shutil.copytree(catalogue, moved)  # the images stay behind: relative sources break
    with pytest.warns(RuntimeMismatchWarning, match="no catalogue image is readable"):
        Recommender.load(moved, extractor=SqueezeNetExtractor(runtime="openvino", precision="f32"))
