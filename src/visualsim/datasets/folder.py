"""A directory of images, optionally one sub-folder per class."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .base import BaseDataset, existing_dir

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
)
"""File extensions :class:`ImageFolder` treats as images by default (any case)."""


class ImageFolder(BaseDataset):
    """Every image file under a directory, labelled by its first-level folder.

    The class-per-folder layout (``root/shoes/a.jpg``, ``root/bags/b.png``)
    gives each item the metadata ``{"label": "shoes"}``; files directly in
    ``root`` get ``{"label": None}``. Ids are the paths relative to ``root``
    with forward slashes (``"shoes/a.jpg"``) on every platform; the image is
    the absolute path, read only when an extractor asks for it.

    What counts as an image is decided by extension, not by decoding, so
    scanning a large folder is fast; hidden files and folders (names starting
    with ``.``) are skipped. A file that has an image extension but cannot be
    decoded is reported by the recommender (``failed_``), not here. Files are
    listed once, at construction, in sorted order.

    Parameters
    ----------
    root
        The directory to scan.
    recursive
        Descend into sub-folders (default). With ``False`` only files directly
        in ``root`` are listed.
    extensions
        The file extensions to accept, with or without the dot, any case;
        default :data:`IMAGE_EXTENSIONS`.
    follow_symlinks
        Follow symbolic links to directories while scanning.

    Examples
    --------
    >>> ds = ImageFolder("catalogue/")  # doctest: +SKIP
    >>> ds[0]  # doctest: +SKIP
    DatasetItem(id='bags/b1.jpg', image='/data/catalogue/bags/b1.jpg', metadata={'label': 'bags'})
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        recursive: bool = True,
        extensions: Iterable[str] | None = None,
        follow_symlinks: bool = False,
    ) -> None:
        self.root = existing_dir(root, "ImageFolder")
        self.recursive = recursive
        self.extensions = normalise_extensions(extensions)
        self.follow_symlinks = follow_symlinks
        self.skipped: list[str] = []
        self._paths = self._scan()
        if not self._paths:
            logger.warning(
                "ImageFolder: no image files (%s) found under %s",
                ", ".join(sorted(self.extensions)),
                self.root,
            )

    def _scan(self) -> list[str]:
        found: list[str] = []
        for dirpath, dirnames, filenames in os.walk(self.root, followlinks=self.follow_symlinks):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            if not self.recursive:
                dirnames[:] = []
            rel_dir = Path(dirpath).relative_to(self.root)
            for name in sorted(filenames):
                rel = (rel_dir / name).as_posix()
                if name.startswith("."):
                    continue
                if os.path.splitext(name)[1].lower() not in self.extensions:
                    self.skipped.append(rel)
                    continue
                found.append(rel)
        found.sort()
        if self.skipped:
            logger.info(
                "ImageFolder: skipped %d non-image files under %s (see .skipped)",
                len(self.skipped),
                self.root,
            )
        return found

    def __len__(self) -> int:
        return len(self._paths)

    def _item_id(self, index: int) -> str:
        return self._paths[index]

    def _item_image(self, index: int) -> str:
        return os.fspath(self.root / self._paths[index])

    def _item_metadata(self, index: int) -> dict[str, Any]:
        rel = self._paths[index]
        label = rel.split("/", 1)[0] if "/" in rel else None
        return {"label": label}

    @property
    def classes(self) -> list[str]:
        """Return the sorted first-level folder names that hold at least one image."""
        return sorted({r.split("/", 1)[0] for r in self._paths if "/" in r})

    def _describe(self) -> str:
        return f"{os.fspath(self.root)!r}"


def normalise_extensions(extensions: Iterable[str] | None) -> frozenset[str]:
    """Return extensions as a lower-case set with leading dots (the default when ``None``).

    Parameters
    ----------
    extensions
        Extensions such as ``["jpg", ".PNG"]``, or ``None`` for :data:`IMAGE_EXTENSIONS`.
    """
    if extensions is None:
        return IMAGE_EXTENSIONS
    if isinstance(extensions, str):
        extensions = [extensions]
    result = frozenset("." + e.lower().lstrip(".") for e in extensions if e.strip("."))
    if not result:
        from ..errors import ConfigError

        raise ConfigError("extensions must name at least one file extension, e.g. ['jpg', 'png']")
    return result


__all__ = ["IMAGE_EXTENSIONS", "ImageFolder", "normalise_extensions"]
