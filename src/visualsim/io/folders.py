"""Folder swaps and marked temporaries: a saved folder is replaced whole or not at all.

Part of :mod:`visualsim.io`; :mod:`visualsim.persistence` re-exports every public name.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import json
import os
import shutil
import stat
import sys
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ..errors import CatalogError
from .manifests import _format_args
from .paths import (
    _FILE_TMP,
    _MARKER_MAGIC,
    MANIFEST,
    MARKER_SUFFIX,
    TMP_PREFIX,
    PathLike,
    _err_path,
    safe_child,
)
from .reads import read_json
from .writes import _tmp_file_name, fsync_dir, fsync_tree

# --------------------------------------------------------------------------- folders

_AT_FDCWD = -100
_RENAME_NOREPLACE = 1
_RENAME_EXCHANGE = 2
_renameat2: Any = None
_renameat2_loaded = False


def _get_renameat2() -> Any:
    global _renameat2, _renameat2_loaded
    if not _renameat2_loaded:
        _renameat2_loaded = True
        if sys.platform.startswith("linux"):
            with contextlib.suppress(OSError, AttributeError):
                libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
                fn = libc.renameat2
                fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p]
                fn.argtypes += [ctypes.c_uint]
                fn.restype = ctypes.c_int
                _renameat2 = fn
    return _renameat2


def _rename2(src: Path, dst: Path, flags: int) -> bool:
    """``renameat2(src, dst, flags)``; ``False`` where the system or filesystem lacks it."""
    fn = _get_renameat2()
    if fn is None:
        return False
    rc = fn(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), flags)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), os.fspath(src), None, os.fspath(dst))


def exchange_supported(folder: PathLike) -> bool:
    """Whether atomic folder exchange works in ``folder`` (Linux ``renameat2``, local disks)."""
    base = Path(folder)
    a = base / f"{TMP_PREFIX}probe-{uuid.uuid4().hex[:12]}"
    b = base / f"{TMP_PREFIX}probe-{uuid.uuid4().hex[:12]}"
    try:
        a.mkdir()
        b.mkdir()
        return _rename2(a, b, _RENAME_EXCHANGE)
    except OSError:
        return False
    finally:
        for p in (a, b):
            with contextlib.suppress(OSError):
                p.rmdir()


def _marker_of(tmp: Path) -> Path:
    return tmp.with_name(tmp.name + MARKER_SUFFIX)


def make_temp_dir(dest: PathLike) -> Path:
    """Create and return an empty temporary folder next to ``dest`` (same filesystem).

    Its sibling marker file records this process, so :func:`remove_stale_temps`
    can remove the folder if this process dies before :func:`replace_dir`.
    Stale temporaries of earlier, dead processes are removed first.
    """
    target = Path(dest)
    parent = target.parent
    parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(parent)
    tmp = parent / f"{TMP_PREFIX}{target.name[:100]}-{uuid.uuid4().hex[:12]}"
    marker = _marker_of(tmp)
    record = json.dumps(
        {"marker": _MARKER_MAGIC, "pid": os.getpid(), "host": _host(), "dest": target.name}
    )
    # the marker appears whole or not at all (a kill mid-write leaves only a .part file
    # named for this process, which remove_stale_temps clears once the process is gone)
    part = _tmp_file_name(marker)
    with open(part, "x", encoding="utf-8") as fh:
        fh.write(record)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(part, marker)
    try:
        tmp.mkdir()
    except BaseException:
        marker.unlink()
        raise
    fsync_dir(parent)
    return tmp


def discard_temp_dir(tmp: PathLike) -> None:
    """Delete a folder made by :func:`make_temp_dir` (whatever it holds now) and its marker."""
    path = Path(tmp)
    if not path.name.startswith(TMP_PREFIX):
        raise CatalogError(f"{_err_path(path)} is not a visualsim temporary folder; not deleted")
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    with contextlib.suppress(OSError):
        _marker_of(path).unlink()


def _host() -> str:
    import socket

    return socket.gethostname()


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (OSError, OverflowError):
        return False
    return True


def remove_stale_temps(folder: PathLike) -> list[str]:
    """Remove visualsim temporaries in ``folder`` left by processes that are gone.

    A temporary folder is ours only if its sibling marker (written before
    the folder) names visualsim and a process id; a temporary file only if
    its name is ``.visualsim-tmp-<pid>-<12 hex>.<name>.part``. Either is
    removed once that process no longer runs. Anything else, whatever its
    name, is never touched. Returns the names removed.
    """
    base = Path(folder)
    removed: list[str] = []
    try:
        entries = list(os.scandir(base))
    except OSError:
        return removed
    for entry in entries:
        name = entry.name
        if not name.startswith(TMP_PREFIX):
            continue
        with contextlib.suppress(OSError):
            if name.endswith(MARKER_SUFFIX) and entry.is_file(follow_symlinks=False):
                if entry.stat(follow_symlinks=False).st_size > 4096:
                    continue
                try:
                    record = json.loads(Path(entry.path).read_text(encoding="utf-8"))
                except ValueError:
                    continue
                if not isinstance(record, dict) or record.get("marker") != _MARKER_MAGIC:
                    continue
                pid = record.get("pid")
                if record.get("host") != _host():
                    continue  # another machine's writer on a shared folder: not ours to judge
                if not isinstance(pid, int) or isinstance(pid, bool) or _pid_alive(pid):
                    continue
                tmp = base / name[: -len(MARKER_SUFFIX)]
                if tmp.is_dir() and not tmp.is_symlink():
                    shutil.rmtree(tmp)
                    removed.append(tmp.name)
                os.unlink(entry.path)
                removed.append(name)
            elif entry.is_file(follow_symlinks=False):
                match = _FILE_TMP.fullmatch(name)
                if match and not _pid_alive(int(match.group(1))):
                    os.unlink(entry.path)
                    removed.append(name)
    if removed:
        fsync_dir(base)
    return removed


def folder_tag(folder: PathLike, *, name: str = MANIFEST) -> str | None:
    """Return the ``format`` of the visualsim manifest in ``folder``, or ``None``.

    ``None`` when there is no readable manifest (missing, not JSON, another
    program's file); never raises for a damaged manifest.
    """
    try:
        manifest = read_json(safe_child(folder, name), max_bytes=64 * 1024 * 1024)
    except CatalogError:
        return None
    value = manifest.get("format") if isinstance(manifest, dict) else None
    return value if isinstance(value, str) else None


def check_replaceable(
    dest: PathLike,
    *,
    tag: str | Sequence[str] | None = None,
    name: str | None = None,
    kind: str | None = None,
) -> bool:
    """Check that ``dest`` may be replaced by a folder of format ``kind`` (or ``tag``).

    Returns ``False`` if nothing is at ``dest``, ``True`` if it is an empty
    folder or one whose manifest carries that format's tag (or an old
    spelling of it, see :data:`FORMATS`).

    Raises
    ------
    CatalogError
        ``dest`` is a symbolic link, a file, or a folder that is not empty and
        not a visualsim folder of that format (a photo folder, a PDF ...):
        visualsim never replaces what it did not write.
    """
    target = Path(dest)
    tags, _, name, _ = _format_args(kind, tag, None, name)
    try:
        st = os.lstat(target)
    except FileNotFoundError:
        return False
    if stat.S_ISLNK(st.st_mode):
        raise CatalogError(
            f"refusing to replace {_err_path(target)}: it is a symbolic link; "
            "pass the real path or remove the link"
        )
    if not stat.S_ISDIR(st.st_mode):
        raise CatalogError(
            f"refusing to replace {_err_path(target)}: it is a file, not a saved visualsim "
            "folder; choose another path or remove it yourself"
        )
    with os.scandir(target) as it:
        empty = next(it, None) is None
    if empty:
        return True
    found = folder_tag(target, name=name)
    if found in tags:
        return True
    what = "holds no visualsim manifest" if found is None else f"holds a {found!r} folder"
    raise CatalogError(
        f"refusing to replace {_err_path(target)}: it {what}, not a {tags[0]} one, and "
        "visualsim replaces only what it wrote; choose another path or remove it yourself"
    )


def replace_dir(
    tmp: PathLike,
    dest: PathLike,
    *,
    tag: str | Sequence[str] | None = None,
    name: str | None = None,
    kind: str | None = None,
) -> None:
    """Put the complete folder ``tmp`` at ``dest``, atomically at every instant.

    ``tmp`` must come from :func:`make_temp_dir` next to ``dest``. If
    ``dest`` exists, it must be an empty folder or one carrying a manifest
    of format ``kind`` (or ``tag``; see :func:`check_replaceable`); the two are swapped by
    one ``renameat2(RENAME_EXCHANGE)`` and the old folder, now under the
    temporary name, is deleted. Readers see the old folder or the new one,
    never neither and never a mix; a crash at any moment leaves one of them
    at ``dest`` and, at worst, a marked temporary that the next write removes.

    Fallback (not Linux, or a filesystem without ``RENAME_EXCHANGE``, such as
    some network filesystems): the old folder is renamed aside and the new
    one into place; between those two renames nothing is at ``dest`` (a
    crash there leaves the old folder under a marked temporary name, which
    the next write removes).

    Raises
    ------
    CatalogError
        ``dest`` is not replaceable; nothing is touched (``tmp`` stays for the
        caller to discard).
    """
    src = Path(tmp)
    target = Path(dest)
    if not src.name.startswith(TMP_PREFIX) or src.parent != target.parent:
        raise CatalogError(
            f"{_err_path(src)} is not a temporary folder made by make_temp_dir({_err_path(target)})"
        )
    fsync_tree(src)
    for _attempt in range(3):
        if check_replaceable(target, tag=tag, name=name, kind=kind):
            if _rename2(src, target, _RENAME_EXCHANGE):
                break
            _replace_by_two_renames(src, target)
            return
        try:
            if not _rename2(src, target, _RENAME_NOREPLACE):
                if os.path.lexists(target):
                    continue
                os.rename(src, target)  # POSIX: replaces at most an empty folder
            break
        except OSError as exc:
            if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                continue  # something appeared at dest meanwhile: check it again
            raise
    else:
        raise CatalogError(f"{_err_path(target)} kept changing while being replaced; try again")
    fsync_dir(target.parent)
    discard_temp_dir(src)  # the old folder (after an exchange), or nothing
    fsync_dir(target.parent)


@contextlib.contextmanager
def writer_lock(folder: PathLike) -> Iterator[bool]:
    """Hold an exclusive advisory lock on ``folder`` (an existing folder) while writing it.

    Two visualsim writers that save into the same folder in place take this lock
    around "read the manifest, check it, write, commit the new manifest", so the
    check and the write are one step against each other. The lock is a
    ``flock`` on the folder itself: it creates no file, readers never take it,
    and the operating system drops it if the holder dies. Yields ``True`` when
    the lock is held, ``False`` where it cannot be taken (no ``fcntl``, as on
    Windows, or a filesystem that refuses ``flock``): the caller then goes on
    unlocked, as before this lock existed.

    It protects only against writers that take it: a program (or an older
    visualsim) that writes the folder without it, or that swaps a whole new
    folder in at the same path, is not held back.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield False
        return
    try:
        fd = os.open(os.fspath(folder), os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except (FileNotFoundError, NotADirectoryError):
        raise CatalogError(
            f"{_err_path(Path(folder))} was removed or replaced while being saved; save again"
        ) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:  # pragma: no cover - a filesystem without flock
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@contextlib.contextmanager
def reader_lock(folder: PathLike, *, timeout: float = 30.0) -> Iterator[bool]:
    """Hold a shared advisory lock on ``folder`` while reading it: writers wait.

    The other side of :func:`writer_lock`: while a reader holds it, no writer
    that takes :func:`writer_lock` commits to the folder, so the read sees one
    catalogue whole. Readers take it only after optimistic reads kept losing the
    race (:func:`read_consistent`), so a busy writer does not wait for every
    reader. It is tried without blocking until ``timeout`` seconds have passed
    (a writer in this very process must never wait on its own reader). Yields
    ``True`` when held, ``False`` when it could not be taken (no ``fcntl``, no
    ``flock``, the folder gone, or the timeout): the caller reads unlocked.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield False
        return
    try:
        fd = os.open(os.fspath(folder), os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        yield False
        return
    try:
        import time

        held = False
        deadline = time.monotonic() + timeout
        pause = 0.001
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                held = True
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    break
                time.sleep(pause)
                pause = min(pause * 2, 0.05)
            except OSError:  # pragma: no cover - a filesystem without flock
                break
        try:
            yield held
        finally:
            if held:
                fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _replace_by_two_renames(src: Path, target: Path) -> None:
    aside = make_temp_dir(target)
    aside.rmdir()
    os.rename(target, aside)
    try:
        os.rename(src, target)
    except BaseException:
        os.rename(aside, target)
        raise
    fsync_dir(target.parent)
    discard_temp_dir(aside)
    discard_temp_dir(src)
    fsync_dir(target.parent)


@contextlib.contextmanager
def atomic_dir(
    dest: PathLike,
    *,
    tag: str | Sequence[str] | None = None,
    overwrite: bool = True,
    name: str | None = None,
    kind: str | None = None,
) -> Iterator[Path]:
    """Yield a temporary folder to fill; on success it replaces ``dest`` (see :func:`replace_dir`).

    ``overwrite=False`` refuses an existing ``dest`` up front; otherwise
    :func:`check_replaceable` runs before anything is written and again at
    the swap. On an exception the temporary folder is deleted and ``dest``
    is untouched.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from visualsim.persistence import read_manifest, write_manifest
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> with atomic_dir(root / "out", kind="partitions") as tmp:
    ...     _ = write_manifest(tmp, "partitions", {"rows": 0})
    >>> read_manifest(root / "out", "partitions")["format"]
    'visualsim.partitions'
    """
    target = Path(dest)
    exists = check_replaceable(target, tag=tag, name=name, kind=kind)
    if exists and not overwrite:
        raise CatalogError(f"{_err_path(target)} already exists; pass overwrite=True to replace it")
    tmp = make_temp_dir(target)
    try:
        yield tmp
        replace_dir(tmp, target, tag=tag, name=name, kind=kind)
    except BaseException:
        discard_temp_dir(tmp)
        raise
