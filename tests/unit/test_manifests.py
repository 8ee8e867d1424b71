"""One on-disk scheme: every format's manifest through ``visualsim.persistence``.

Every kind round-trips through :func:`~visualsim.persistence.write_manifest` /
:func:`~visualsim.persistence.read_manifest` with the tag ``"visualsim.<kind>"``;
the hyphenated tags that shipped (``visualsim-catalog`` ...) still load; a manifest
too large, too deep, of another kind or of a newer version is a clear error naming
the file; and the one retry loop (:func:`~visualsim.persistence.read_consistent`)
retries a read that raced a save and gives up with a clear error.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from support import VectorExtractor, _unit
from visualsim import Recommender, search
from visualsim import persistence as P
from visualsim.errors import CatalogError, ConfigError, FormatVersionError


def _manifest(folder: Path, name: str = "manifest.json") -> dict[str, Any]:
    data: dict[str, Any] = json.loads((folder / name).read_text(encoding="utf-8"))
    return data


def _rewrite(folder: Path, name: str = "manifest.json", **fields: Any) -> None:
    """Edit a saved manifest by hand (the files it lists are untouched)."""
    data = _manifest(folder, name)
    data.update(fields)
    (folder / name).write_text(json.dumps(data), encoding="utf-8")


@pytest.mark.parametrize("kind", sorted(P.FORMATS))
def test_every_kind_round_trips_through_the_owner(tmp_path: Path, kind: str) -> None:
    fmt = P.format_of(kind)
    (tmp_path / "data.bin").write_bytes(b"\x00\x01payload")
    written = P.write_manifest(tmp_path, kind, {"answer": 42, "nested": {"a": [1, 2]}})
    assert (tmp_path / fmt.name).is_file()
    assert written["format"] == f"visualsim.{kind}" == fmt.tag
    assert written["format_version"] == fmt.version
    assert written["files"] == {"data.bin": P.sha256_file(tmp_path / "data.bin")}
    read = P.read_manifest(tmp_path, kind)
    assert read == written and read["answer"] == 42 and read["nested"] == {"a": [1, 2]}
    (tmp_path / "data.bin").write_bytes(b"changed")
    with pytest.raises(CatalogError, match="does not match its checksum"):
        P.read_manifest(tmp_path, kind)


def test_a_payload_cannot_change_the_tag_version_or_files(tmp_path: Path) -> None:
    written = P.write_manifest(
        tmp_path, "index", {"format": "other", "format_version": 99, "files": {"x": "y"}}
    )
    assert written["format"] == "visualsim.index" and written["format_version"] == 1
    assert written["files"] == {}


@pytest.fixture
def partitioned(monkeypatch: pytest.MonkeyPatch) -> None:
    """Index even a small catalogue (no exact shortcut), so partitions are saved."""
    monkeypatch.setattr(search, "EXACT_LIMIT", 0)
    monkeypatch.setattr(search, "EXACT_WORK", 0)


def test_every_saved_folder_carries_the_one_scheme(tmp_path: Path, partitioned: None) -> None:
    rng = np.random.default_rng(1)
    rec = Recommender(VectorExtractor(), "hnsw", reduce_dim=4, partition_by="category")
    meta = [{"category": "ab"[i % 2]} for i in range(40)]
    rec.add_vectors(_unit(rng, 40), list(range(40)), meta).compact()
    path = rec.save(tmp_path / "cat")
    top = _manifest(path)
    assert top["format"] == "visualsim.catalog"
    assert _manifest(path / top["index_dir"])["format"] == "visualsim.index"
    assert _manifest(path / top["reducer_dir"], "reducer.json")["format"] == "visualsim.reducer.pca"
    parts = _manifest(path / top["partitions_dir"])
    assert parts["format"] == "visualsim.partitions"
    assert set(parts["files"]) == {e["rows"] for e in parts["parts"]}
    loaded = Recommender.load(path)
    assert len(loaded) == 40 and loaded.partition_by == "category"


def test_catalogues_saved_with_the_old_tag_spellings_still_load(
    tmp_path: Path, partitioned: None
) -> None:
    rng = np.random.default_rng(2)
    rec = Recommender(VectorExtractor(), "hnsw", partition_by="category")
    vectors = _unit(rng, 30)
    meta = [{"category": "xy"[i % 2]} for i in range(30)]
    rec.add_vectors(vectors, list(range(30)), meta).compact()
    path = rec.save(tmp_path / "cat")
    top = _manifest(path)
    # what visualsim wrote before the one scheme, by hand: the files are unchanged
    _rewrite(path, format="visualsim-catalog")
    _rewrite(path / top["partitions_dir"], format="visualsim-partitions")
    parts = path / top["partitions_dir"] / "manifest.json"
    old = json.loads(parts.read_text())
    del old["files"]  # partition manifests listed no files then
    parts.write_text(json.dumps(old))
    files = {**top["files"], parts.relative_to(path).as_posix(): P.sha256_file(parts)}
    _rewrite(path, format="visualsim-catalog", files=files)  # the old catalogue hashed it
    assert P.read_manifest(path, "catalog")["format"] == "visualsim.catalog"  # read as today's
    loaded = Recommender.load(path)
    assert len(loaded) == 30
    hits = loaded.query_vector(vectors[3], 3, where={"category": "y"})
    assert hits[0].id == 3 and all(h.id % 2 == 1 for h in hits)
    # saving it again writes today's spelling over the old one
    loaded.save(path, overwrite=True)
    assert _manifest(path)["format"] == "visualsim.catalog"


@pytest.mark.parametrize("kind", sorted(k for k, f in P.FORMATS.items() if f.old_tags))
def test_each_listed_old_tag_reads_as_its_kind_only(tmp_path: Path, kind: str) -> None:
    fmt = P.format_of(kind)
    for old in fmt.old_tags:
        (tmp_path / fmt.name).write_text(
            json.dumps({"format": old, "format_version": 1, "files": {}})
        )
        assert P.read_manifest(tmp_path, kind)["format"] == fmt.tag
        other = "index" if kind != "index" else "catalog"
        with pytest.raises(CatalogError, match=f"not a visualsim.{other} manifest"):
            P.read_manifest(tmp_path, other, name=fmt.name)


def test_a_manifest_too_large_is_refused_before_it_is_read(tmp_path: Path) -> None:
    P.write_manifest(tmp_path, "index", {"pad": "x" * 5000})
    with pytest.raises(CatalogError, match=r"manifest\.json' is [\d,]+ bytes, more than the 4,096"):
        P.read_manifest(tmp_path, "index", max_bytes=4096)
    assert P.read_manifest(tmp_path, "index")["pad"] == "x" * 5000


def test_a_manifest_nested_too_deep_is_refused_before_it_is_parsed(tmp_path: Path) -> None:
    deep: Any = 0
    for _ in range(P.MAX_JSON_DEPTH + 5):
        deep = [deep]
    text = json.dumps({"format": "visualsim.index", "format_version": 1, "files": {}, "x": deep})
    (tmp_path / "manifest.json").write_text(text)
    with pytest.raises(CatalogError, match=r"manifest\.json' nests \d+ levels deep, more than"):
        P.read_manifest(tmp_path, "index")


def test_a_manifest_of_another_kind_names_the_file_and_both_formats(tmp_path: Path) -> None:
    P.write_manifest(tmp_path, "index", {})
    with pytest.raises(CatalogError) as err:
        P.read_manifest(tmp_path, "catalog")
    message = str(err.value)
    assert "manifest.json' is not a visualsim.catalog manifest" in message
    assert "'visualsim.index'" in message
    with pytest.raises(CatalogError, match="not a visualsim.catalog manifest"):
        Recommender.load(tmp_path)


def test_a_newer_version_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    P.write_manifest(tmp_path, "catalog", {})
    _rewrite(tmp_path, format_version=P.format_of("catalog").version + 1)
    newest = P.format_of("catalog").version
    with pytest.raises(
        FormatVersionError, match=f"reads versions up to {newest}; upgrade visualsim"
    ):
        P.read_manifest(tmp_path, "catalog")
    _rewrite(tmp_path, format_version="2")
    with pytest.raises(FormatVersionError, match="must be an integer >= 1"):
        P.read_manifest(tmp_path, "catalog")


def test_an_unknown_kind_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown on-disk format 'catalogue'"):
        P.read_manifest(tmp_path, "catalogue")
    with pytest.raises(ConfigError, match="unknown on-disk format"):
        P.write_manifest(tmp_path, "catalogue", {})
    with pytest.raises(ConfigError, match="not both"):
        P.write_manifest(tmp_path, "index", {}, tag="visualsim.index")


# --------------------------------------------------------------------------- the retry loop


def _save(dest: Path, value: int) -> None:
    with P.atomic_dir(dest, kind="index") as tmp:
        P.write_text(tmp / "value.txt", str(value))
        P.write_manifest(tmp, "index", {"value": value})


def _read(dest: Path) -> int:
    manifest = P.read_manifest(dest, "index")
    value = int(P.safe_child(dest, "value.txt").read_text())
    if value != manifest["value"]:
        raise CatalogError(f"{dest}: a mix of two saves")
    return value


def test_the_retry_loop_retries_a_read_that_raced_a_swap(tmp_path: Path) -> None:
    dest = tmp_path / "folder"
    _save(dest, 1)
    calls: list[int] = []

    def racing_read(folder: Path) -> int:
        calls.append(1)
        value = _read(folder)
        if len(calls) == 1:
            _save(dest, 2)  # a concurrent save swaps the folder in mid-read
        return value

    assert P.read_consistent(dest, racing_read, kind="index") == 2
    assert len(calls) == 2

    calls.clear()

    def failing_read(folder: Path) -> int:
        calls.append(1)
        if len(calls) == 1:
            _save(dest, 3)
            raise CatalogError(f"{folder}: a file vanished")
        return _read(folder)

    assert P.read_consistent(dest, failing_read, kind="index") == 3 and len(calls) == 2


def test_the_retry_loop_sees_a_new_manifest_committed_in_place(tmp_path: Path) -> None:
    dest = tmp_path / "folder"
    _save(dest, 1)
    seen: list[int] = []

    def read(folder: Path) -> int:
        value = _read(folder)
        seen.append(value)
        if len(seen) == 1:  # a writer commits a new manifest in the same folder
            P.write_text(folder / "value.txt", "5")
            P.write_manifest(folder, "index", {"value": 5})
        return value

    assert P.read_consistent(dest, read, kind="index") == 5 and seen == [1, 5]


def test_the_retry_loop_gives_up_with_a_clear_error(tmp_path: Path) -> None:
    dest = tmp_path / "folder"
    _save(dest, 0)
    calls: list[int] = []

    def always_racing(folder: Path) -> int:
        calls.append(1)
        _save(dest, len(calls))
        raise CatalogError(f"{folder}: a file vanished")

    with pytest.raises(CatalogError, match=r"kept changing while it was read \(4 tries") as err:
        P.read_consistent(dest, always_racing, attempts=4, kind="index")
    assert "a file vanished" in str(err.value) and len(calls) == 4


def test_a_read_failing_on_an_unchanged_folder_is_not_retried(tmp_path: Path) -> None:
    dest = tmp_path / "folder"
    _save(dest, 1)
    (dest / "value.txt").write_text("9")  # damaged, and nobody is saving
    calls: list[int] = []

    def read(folder: Path) -> int:
        calls.append(1)
        return _read(folder)

    with pytest.raises(CatalogError, match="does not match its checksum"):
        P.read_consistent(dest, read, kind="index")
    assert len(calls) == 1


def test_a_catalogue_load_racing_a_save_gets_one_whole_catalogue(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    small = Recommender(VectorExtractor(), "hnsw").add_vectors(_unit(rng, 10), list(range(10)))
    big = Recommender(VectorExtractor(), "hnsw").add_vectors(_unit(rng, 20), list(range(20)))
    path = small.save(tmp_path / "cat")
    other = big.save(tmp_path / "other")
    real = P.read_manifest

    swapped: list[int] = []

    def racing(folder: Any, kind: Any = None, **kw: Any) -> dict[str, Any]:
        manifest = real(folder, kind, **kw)
        if kind == "catalog" and not swapped:  # another process replaces the folder
            swapped.append(1)
            shutil.rmtree(path)
            shutil.copytree(other, path)
        return manifest

    mp = pytest.MonkeyPatch()
    mp.setattr(P, "read_manifest", racing)
    try:
        loaded = Recommender.load(path)
    finally:
        mp.undo()
    assert swapped and len(loaded) == 20
