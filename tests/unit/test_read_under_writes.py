"""A reader racing a writer that commits all the time still reads (issue 28, item 3).

Optimistic reads retry when a save replaced the manifest under them; after a few lost
races the reader takes the folder's shared lock, which every save into an existing
catalogue respects (``writer_lock``), so a slow read on a busy machine still finishes.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

from visualsim import persistence as P
from visualsim.errors import CatalogError
from visualsim.io import retry
from visualsim.io.folders import reader_lock, writer_lock


def _commit(folder: Path, n: int) -> None:
    tmp = folder / f".manifest-{n}.tmp"
    tmp.write_text(json.dumps({"generation": n}))
    tmp.replace(folder / "manifest.json")  # a new manifest: the folder's identity changes


def _busy_writer(folder: Path, stop: threading.Event, counts: list[int]) -> None:
    n = 0
    while not stop.is_set():
        with writer_lock(folder):
            n += 1
            _commit(folder, n)
        counts[0] = n
        time.sleep(0.002)


COUNTS = [0]


def _slow_read(folder: Path) -> int:
    """Read, then last until the writer has committed again (or 1 s: it is held back)."""
    first = int(json.loads((folder / "manifest.json").read_text())["generation"])
    deadline = time.monotonic() + 1.0
    while COUNTS[0] <= first and time.monotonic() < deadline:  # until the next commit
        time.sleep(0.001)
    return first


@pytest.mark.parametrize("optimistic", [retry.OPTIMISTIC_READS, 10**6])
def test_a_slow_reader_beats_a_busy_writer_by_taking_the_shared_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, optimistic: int
) -> None:
    _commit(tmp_path, 0)
    monkeypatch.setattr(retry, "OPTIMISTIC_READS", optimistic)
    stop, counts = threading.Event(), COUNTS
    counts[0] = 0
    writer = threading.Thread(target=_busy_writer, args=(tmp_path, stop, counts))
    writer.start()
    try:
        while counts[0] < 3:  # the writer is committing
            time.sleep(0.001)
        if optimistic > 100:  # never locking: every read loses the race
            with pytest.raises(CatalogError, match="kept changing while it was read"):
                P.read_consistent(tmp_path, _slow_read, attempts=8)
        else:
            got = P.read_consistent(tmp_path, _slow_read, attempts=8)
            assert got >= 1
        before, deadline = counts[0], time.monotonic() + 10
        while counts[0] == before and time.monotonic() < deadline:
            time.sleep(0.001)
        assert counts[0] > before  # the writer goes on once the read is done
    finally:
        stop.set()
        writer.join()


def test_the_shared_lock_waits_for_a_writer_and_gives_up_in_time(tmp_path: Path) -> None:
    with writer_lock(tmp_path):
        start = time.monotonic()
        with reader_lock(tmp_path, timeout=0.2) as held:
            assert not held  # the writer (here, on another descriptor) holds it
        assert 0.15 <= time.monotonic() - start < 5
    with reader_lock(tmp_path) as held:
        assert held
        with reader_lock(tmp_path, timeout=0.1) as again:
            assert again  # shared: many readers at once
    with reader_lock(tmp_path / "missing") as held:
        assert not held


def test_a_commit_that_keeps_inode_times_and_size_still_changes_the_identity(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where file times tick coarsely and a freed inode comes back, the bytes decide."""
    _commit(tmp_path, 11)
    frozen = os.stat(tmp_path / "manifest.json")
    monkeypatch.setattr(retry.os, "fstat", lambda fd: frozen)  # a filesystem that hides it
    before = retry.read_identity(tmp_path)
    _commit(tmp_path, 12)  # the same size
    assert retry.read_identity(tmp_path) != before
    _commit(tmp_path, 11)  # the same bytes again: the same catalogue, nothing to retry
    assert retry.read_identity(tmp_path) == before
