"""A catalogue chunk names its files by one rule, whether the reader checks the layout or reads.

Issue #28: a Hypothesis example set a chunk's ``sources`` to ``""`` and the
catalogue loaded, because the layout check asked "present, so a string?" and
the reader asked "truthy, so read it?": ``""`` passed the first and was taken
for "no sources" by the second. One rule now: ``vectors``, ``ids`` and
``metadata`` must be present; ``sources`` may be absent (catalogues of format 1
have none); a name that is present is a file inside the folder, whatever its value.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from visualsim import CatalogError, ColorHistogramExtractor, Recommender

KEYS = ["vectors", "ids", "metadata", "sources"]


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ext = ColorHistogramExtractor(bins=(4, 2, 2))
    rng = np.random.default_rng(0)
    rec = Recommender(ext, "flat").add_vectors(
        rng.normal(size=(6, ext.dim)).astype(np.float32), [f"id-{i}" for i in range(6)]
    )
    return rec.save(tmp_path_factory.mktemp("good") / "cat")


def _with_chunk(saved: Path, tmp_path: Path, change: Any) -> Path:
    path = tmp_path / "cat"
    shutil.copytree(saved, path)
    manifest = json.loads((path / "manifest.json").read_text())
    change(manifest["chunks"][0])
    (path / "manifest.json").write_text(json.dumps(manifest))
    return path


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("value", ["", ".", "a//b"])
def test_an_empty_or_malformed_chunk_file_name_is_refused(
    saved: Path, tmp_path: Path, key: str, value: str
) -> None:
    path = _with_chunk(saved, tmp_path, lambda c: c.update({key: value}))
    with pytest.raises(CatalogError, match=f"chunks\\[0\\].{key}|entry"):
        Recommender.load(path, verify=False)


@pytest.mark.parametrize("key", ["vectors", "ids", "metadata"])
def test_a_chunk_without_a_required_file_is_refused(saved: Path, tmp_path: Path, key: str) -> None:
    path = _with_chunk(saved, tmp_path, lambda c: c.pop(key))
    with pytest.raises(CatalogError, match=f"chunks\\[0\\].{key}"):
        Recommender.load(path, verify=False)


def test_a_chunk_without_sources_loads_with_none(saved: Path, tmp_path: Path) -> None:
    path = _with_chunk(saved, tmp_path, lambda c: c.pop("sources"))
    rec = Recommender.load(path, verify=False)
    assert len(rec) == 6 and rec.source_of("id-0") is None
