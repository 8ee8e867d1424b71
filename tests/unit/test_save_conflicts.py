"""No lost update (issue 28): a save onto a folder another writer saved since fails.

Optimistic concurrency on the catalogue's generation: a recommender remembers the
generation of the folder it was loaded from (or last saved to); saving back onto
that folder after another writer saved it raises ``CatalogConflictError`` and
leaves the other writer's items in place, unless ``on_conflict="overwrite"``.
"""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from support import VectorExtractor, _unit
from visualsim import CatalogConflictError, CatalogError, ConfigError, Recommender
from visualsim.catalog import read_manifest
from visualsim.errors import EXIT_DATA

KEY = "conflict-test-key-0001"


def _catalogue(folder: Path, n: int = 6) -> Path:
    rng = np.random.default_rng(0)
    rec = Recommender(VectorExtractor(), "flat")
    rec.add_vectors(_unit(rng, n), [f"base-{i}" for i in range(n)])
    return rec.save(folder)


def _add(rec: Recommender, name: str, seed: int) -> Recommender:
    return rec.add_vectors(_unit(np.random.default_rng(seed), 1), [name])


def test_second_writer_of_the_same_generation_gets_a_conflict(tmp_path: Path) -> None:
    folder = _catalogue(tmp_path / "cat")
    first, second = Recommender.load(folder), Recommender.load(folder)
    _add(first, "first", 1).save(folder, overwrite=True)
    _add(second, "second", 2)
    with pytest.raises(CatalogConflictError) as info:
        second.save(folder, overwrite=True)
    err = info.value
    assert isinstance(err, CatalogError)
    assert err.http_status == 409 and err.exit_code == EXIT_DATA
    assert (err.path, err.expected, err.found) == (str(folder), 1, 2)
    text = str(err)
    assert str(folder) in text and "generation 2" in text and "generation 1" in text
    assert "on_conflict='overwrite'" in text and "Load the catalogue again" in text
    kept = Recommender.load(folder)
    assert "first" in kept and "second" not in kept and len(kept) == 7
    assert read_manifest(folder)["generation"] == 2


def test_on_conflict_overwrite_keeps_this_writers_version(tmp_path: Path) -> None:
    folder = _catalogue(tmp_path / "cat")
    first, second = Recommender.load(folder), Recommender.load(folder)
    _add(first, "first", 1).save(folder, overwrite=True)
    _add(second, "second", 2).save(folder, overwrite=True, on_conflict="overwrite")
    kept = Recommender.load(folder)
    assert "second" in kept and "first" not in kept and len(kept) == 7
    assert read_manifest(folder)["generation"] == 3
    # the overwriting writer now knows generation 3: its next save is a plain one
    _add(second, "again", 3).save(folder, overwrite=True)
    assert "again" in Recommender.load(folder)


def test_a_fresh_load_after_a_conflict_saves(tmp_path: Path) -> None:
    folder = _catalogue(tmp_path / "cat")
    first, second = Recommender.load(folder), Recommender.load(folder)
    _add(first, "first", 1).save(folder, overwrite=True)
    with pytest.raises(CatalogConflictError):
        _add(second, "second", 2).save(folder, overwrite=True)
    again = _add(Recommender.load(folder), "second", 2)
    again.save(folder, overwrite=True)
    kept = Recommender.load(folder)
    assert "first" in kept and "second" in kept and len(kept) == 8


def test_the_same_writer_saves_back_again_and_again(tmp_path: Path) -> None:
    folder = _catalogue(tmp_path / "cat")
    rec = Recommender.load(folder)
    for i in range(3):
        _add(rec, f"n{i}", i).save(folder, overwrite=True)
    assert len(Recommender.load(folder)) == 9


def test_a_folder_never_loaded_is_replaced_as_before(tmp_path: Path) -> None:
    folder = _catalogue(tmp_path / "cat")
    other = tmp_path / "other"
    rec = _add(Recommender.load(folder), "x", 1)
    _catalogue(other, n=3)
    rec.save(other, overwrite=True)  # knows folder's generation, not other's
    assert len(Recommender.load(other)) == 7
    fresh = Recommender(VectorExtractor(), "flat").add_vectors(
        _unit(np.random.default_rng(5), 2), ["a", "b"]
    )
    fresh.save(folder, overwrite=True)
    assert len(Recommender.load(folder)) == 2
    with pytest.raises(CatalogError, match="overwrite=True"):
        fresh.save(other)  # overwrite=False still refuses an existing catalogue


def test_a_new_path_is_written_whatever_the_recommender_knows(tmp_path: Path) -> None:
    folder = _catalogue(tmp_path / "cat")
    first, second = Recommender.load(folder), Recommender.load(folder)
    _add(first, "first", 1).save(folder, overwrite=True)
    _add(second, "second", 2).save(tmp_path / "new")
    assert "second" in Recommender.load(tmp_path / "new")


def test_on_conflict_must_be_a_known_word(tmp_path: Path) -> None:
    folder = _catalogue(tmp_path / "cat")
    with pytest.raises(ConfigError, match="on_conflict"):
        Recommender.load(folder).save(folder, overwrite=True, on_conflict="merge")  # type: ignore[arg-type]


def test_http_save_answers_409_and_keeps_the_other_writers_items(tmp_path: Path) -> None:
    from visualsim.serve import create_app

    folder = _catalogue(tmp_path / "cat")
    with TestClient(create_app(folder, api_key=KEY, warm=False)) as c:
        auth = {"Authorization": f"Bearer {KEY}"}
        _add(Recommender.load(folder), "other-process", 1).save(folder, overwrite=True)
        assert c.delete("/items/base-0", headers=auth).status_code == 200
        r = c.post("/save", headers=auth)
        assert r.status_code == 409
        detail = r.json()["detail"]  # the app names no server path: <catalogue>
        assert "another writer" in detail and "generation 2" in detail
        assert "generation 1" in detail and "on_conflict='overwrite'" in detail
        assert c.post("/reload", headers=auth).json()["items"] == 7
        assert c.delete("/items/base-0", headers=auth).status_code == 200
        assert c.post("/save", headers=auth).json() == {"status": "saved", "items": 6}
    kept = Recommender.load(folder)
    assert "other-process" in kept and "base-0" not in kept


def test_cli_remove_fails_with_the_conflict_and_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from visualsim import cli
    from visualsim.cli import catalogue

    folder = _catalogue(tmp_path / "cat")
    real = catalogue._load

    def load_then_another_writer_saves(path: Path) -> Any:
        rec = real(path)
        _add(Recommender.load(path), "other-process", 1).save(path, overwrite=True)
        return rec

    monkeypatch.setattr(catalogue, "_load", load_then_another_writer_saves)
    assert cli.main(["remove", str(folder), "base-1"]) == EXIT_DATA
    err = capsys.readouterr().err
    assert "another writer" in err and "run the command again" in err
    kept = Recommender.load(folder)
    assert "other-process" in kept and "base-1" in kept
    monkeypatch.setattr(catalogue, "_load", real)
    assert cli.main(["remove", str(folder), "base-1"]) == 0
    kept = Recommender.load(folder)
    assert "other-process" in kept and "base-1" not in kept


def _save_after(folder: str, name: str, ready: Any, go: Any, out: Any) -> None:
    rec = _add(Recommender.load(folder), name, len(name))
    ready.set()
    go.wait(30)
    try:
        rec.save(folder, overwrite=True)
        out.put((name, "saved"))
    except CatalogConflictError:
        out.put((name, "conflict"))


def test_two_processes_saving_at_once_one_wins_one_conflicts(tmp_path: Path) -> None:
    folder = _catalogue(tmp_path / "cat")
    ctx = multiprocessing.get_context("fork")
    go, out = ctx.Event(), ctx.Queue()
    readies = [ctx.Event(), ctx.Event()]
    procs = [
        ctx.Process(target=_save_after, args=(str(folder), name, ready, go, out))
        for name, ready in zip(("alpha", "beta"), readies, strict=True)
    ]
    for p in procs:
        p.start()
    for ready in readies:
        assert ready.wait(60)
    go.set()
    results = dict(out.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert sorted(results.values()) == ["conflict", "saved"]
    winner = next(n for n, r in results.items() if r == "saved")
    loser = next(n for n, r in results.items() if r == "conflict")
    kept = Recommender.load(folder)
    assert winner in kept and loser not in kept and len(kept) == 7
    assert read_manifest(folder)["generation"] == 2


def test_compact_keeps_the_known_generation(tmp_path: Path) -> None:
    folder = _catalogue(tmp_path / "cat")
    first, second = Recommender.load(folder), Recommender.load(folder)
    second.remove(["base-0"]).compact()
    _add(first, "first", 1).save(folder, overwrite=True)
    with pytest.raises(CatalogConflictError):
        second.save(folder, overwrite=True)
    assert "first" in Recommender.load(folder)
    fresh = Recommender.load(folder).remove(["base-0"]).compact()
    _add(fresh, "after", 4).save(folder, overwrite=True)
    kept = Recommender.load(folder)
    assert "first" in kept and "after" in kept and "base-0" not in kept and len(kept) == 7


def test_writer_lock_is_exclusive_and_names_a_vanished_folder(tmp_path: Path) -> None:
    import fcntl
    import os

    from visualsim.io import writer_lock

    with writer_lock(tmp_path) as held:
        assert held is True
        fd = os.open(tmp_path, os.O_RDONLY)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
    fd = os.open(tmp_path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released on leaving
    finally:
        os.close(fd)
    gone = writer_lock(tmp_path / "gone")
    with pytest.raises(CatalogError, match="removed or replaced while being saved"):
        gone.__enter__()
