"""Compatibility names for :mod:`visualsim.persistence`, where durable writes now live.

New code imports from :mod:`visualsim.persistence`. :func:`replace_dir` here
keeps the old two-argument form for callers that name their own temporary
folder: it swaps folders atomically (``renameat2(RENAME_EXCHANGE)``) but,
unlike :func:`visualsim.persistence.replace_dir`, does not check what it
replaces; callers must check that first (:func:`~visualsim.persistence.check_replaceable`).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .persistence import (
    _RENAME_EXCHANGE,
    _RENAME_NOREPLACE,
    _rename2,
    atomic_write,
    fsync_dir,
    fsync_tree,
    read_jsonl,
    sha256_file,
    write_npy,
    write_text,
)


def replace_dir(tmp: Path, dest: Path) -> None:
    """Move the complete folder ``tmp`` to ``dest``, swapping atomically where it can.

    An existing ``dest`` is exchanged with ``tmp`` in one step and then
    deleted from its temporary name; without ``RENAME_EXCHANGE`` it is
    renamed aside first (if the second rename fails, it is put back).
    """
    src, target = Path(tmp), Path(dest)
    fsync_tree(src)
    if not os.path.lexists(target):
        if not _rename2(src, target, _RENAME_NOREPLACE):
            os.rename(src, target)
        fsync_dir(target.parent)
        return
    if _rename2(src, target, _RENAME_EXCHANGE):
        fsync_dir(target.parent)
        shutil.rmtree(src, ignore_errors=True)
        return
    old = target.parent / f".{target.name}.old-{os.getpid()}"
    os.replace(target, old)
    try:
        os.replace(src, target)
    except BaseException:
        os.replace(old, target)
        raise
    fsync_dir(target.parent)
    shutil.rmtree(old, ignore_errors=True)


__all__ = [
    "atomic_write",
    "fsync_dir",
    "read_jsonl",
    "replace_dir",
    "sha256_file",
    "write_npy",
    "write_text",
]
