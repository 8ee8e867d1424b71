"""The one retry loop for reading a folder that a concurrent save may be replacing.

Part of :mod:`visualsim.io`; :mod:`visualsim.persistence` re-exports every public name.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import CatalogError, VisualsimError
from .folders import reader_lock
from .manifests import MAX_MANIFEST_BYTES, format_of
from .paths import MANIFEST, PathLike, T, _err_path

OPTIMISTIC_READS = 3
"""Reads tried without a lock before :func:`read_consistent` takes the folder's shared lock."""


def folder_identity(path: PathLike) -> tuple[int, int, int, int] | None:
    """Return ``(st_dev, st_ino, st_ctime_ns, st_mtime_ns)`` of the folder at ``path`` (not
    following a link), or ``None``.

    The times matter: a folder removed after a swap frees its inode number, and the
    file system may hand it to the next folder written, so ``(st_dev, st_ino)`` alone
    can say "same folder" across two swaps (seen under load, with a writer swapping
    several times during one read).
    """
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_ctime_ns, st.st_mtime_ns)


def read_identity(path: PathLike, *, name: str = MANIFEST) -> tuple[Any, ...] | None:
    """What :func:`read_consistent` compares: the folder and its manifest file, or ``None``.

    ``(st_dev, st_ino)`` of the folder at ``path`` (not following a link) and
    ``(st_ino, st_ctime_ns, st_mtime_ns, st_size)`` of its manifest ``name``.
    Every writer commits by renaming a new manifest into place (inside the
    folder, or with a whole new folder swapped in), so a commit changes it;
    files written beside the live manifest before the commit do not. The
    manifest's times matter: a folder removed after a swap frees its inode
    numbers, which the next folder written may get back.
    """
    root = Path(path)
    try:
        st = os.lstat(root)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, _manifest_identity(root / name))


def _manifest_identity(file: Path) -> tuple[Any, ...] | None:
    """The manifest's inode, times, size and a digest of its bytes (``None`` if unreadable).

    The digest matters: a file's times tick coarsely (a few milliseconds) and a
    freed inode number comes back at once, so two commits within one tick
    could leave inode, times and size as they were (seen with a writer
    committing every few milliseconds). Every save writes a manifest naming
    new files, so its bytes differ.
    """
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(file, flags)
    except OSError:
        return None
    try:
        mf = os.fstat(fd)
        if mf.st_size > MAX_MANIFEST_BYTES:
            digest = b""  # read_manifest refuses it; the stat fields still tell changes
        else:
            with os.fdopen(os.dup(fd), "rb") as fh:
                digest = hashlib.blake2b(fh.read(MAX_MANIFEST_BYTES + 1), digest_size=16).digest()
    except OSError:
        return None
    finally:
        os.close(fd)
    return (mf.st_ino, mf.st_ctime_ns, mf.st_mtime_ns, mf.st_size, digest)


def read_consistent(
    path: PathLike,
    read: Callable[[Path], T],
    *,
    attempts: int = 20,
    name: str | None = None,
    kind: str | None = None,
) -> T:
    """Return ``read(path)``, retried if a save replaced the folder during the read.

    The one retry loop for reading a folder that a concurrent save may be
    replacing. A writer commits by renaming a new manifest into place (a whole
    folder swapped in by :func:`replace_dir`, or a new manifest beside files
    it never changes, as a catalogue's incremental save); a read that saw the
    same :func:`read_identity` before and after is complete and unmixed. One
    that raced a commit (and failed with a :class:`~visualsim.errors.VisualsimError`
    or ``OSError``, or may have mixed old and new files) is run again, with a
    short growing pause, up to ``attempts`` times. A read that fails on a
    folder nobody changed raises its own error at once.

    Parameters
    ----------
    path
        The folder.
    read
        Reads it; called with ``Path(path)``.
    attempts
        Tries before giving up.
    name, kind
        The manifest's file name, or the folder's format (a key of
        :data:`FORMATS`) to take it from; ``manifest.json`` by default.

    Raises
    ------
    CatalogError
        The folder changed during every one of the ``attempts`` reads; the
        message names the folder and the last try's error.
    """
    root = Path(path)
    manifest = name or (format_of(kind).name if kind is not None else MANIFEST)
    last: BaseException | None = None
    for attempt in range(max(1, attempts)):
        # after a few lost races, read holding the folder's shared lock: writers that
        # take writer_lock (every save into an existing catalogue) wait for this read
        locked = attempt >= OPTIMISTIC_READS
        with reader_lock(root) if locked else contextlib.nullcontext(False):
            before = read_identity(root, name=manifest)
            try:
                result = read(root)
            except (VisualsimError, OSError) as exc:
                if read_identity(root, name=manifest) == before:
                    raise  # nothing changed under the read: the folder itself is wrong
                last = exc
            else:
                if before is not None and read_identity(root, name=manifest) == before:
                    return result
                last = None
        time.sleep(min(0.001 * 2**attempt, 0.05))
    because = "" if last is None else f"; the last try failed with: {str(last)[:300]}"
    raise CatalogError(
        f"{_err_path(root)} kept changing while it was read ({attempts} tries: a save "
        f"replaced it each time){because}; try again"
    ) from last
