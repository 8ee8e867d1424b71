"""Stanford Online Products (Song et al., CVPR 2016): the product-retrieval benchmark.

120,053 eBay photos of 22,634 products in 12 super-classes. The standard
protocol trains on the first 11,318 products (``Ebay_train.txt``, 59,551 images)
and measures Recall@K on the other 11,316 (``Ebay_test.txt``, 60,502 images):
every test image queries all the others, and a hit is another image of the same
``class_id``. The list files read::

    image_id class_id super_class_id path
    1 1 1 bicycle_final/111085122871_0.JPG
"""

from __future__ import annotations

import logging
import os
from typing import Any, Literal

from ..errors import ConfigError, DatasetError
from .base import BaseDataset, RowIssue, existing_dir, report_missing

logger = logging.getLogger(__name__)

_LIST_FILES = {"train": "Ebay_train.txt", "test": "Ebay_test.txt"}


class StanfordOnlineProducts(BaseDataset):
    """One split of Stanford Online Products, labelled for Recall@K.

    Ids are the integer ``image_id``; images are paths under the dataset
    directory; metadata is ``{"class_id": int, "super_class_id": int,
    "super_class": str}`` where ``super_class`` is the folder name without its
    ``_final`` suffix (``"bicycle"``). Evaluate retrieval with ``class_id`` as
    the label, as papers do.

    Parameters
    ----------
    root
        The extracted ``Stanford_Online_Products`` directory (or a directory
        containing it).
    split
        ``"test"`` (``Ebay_test.txt``) or ``"train"`` (``Ebay_train.txt``).
    check_files
        Leave out (and list in :attr:`missing`) rows whose image file does not
        exist.

    Attributes
    ----------
    missing : list of int
        Image ids without an image file.
    issues : list of RowIssue
        Malformed lines, skipped.

    Examples
    --------
    >>> sop = StanfordOnlineProducts("data/Stanford_Online_Products")  # doctest: +SKIP
    >>> rec = Recommender().fit(sop)  # doctest: +SKIP
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: Literal["test", "train"] = "test",
        *,
        check_files: bool = True,
    ) -> None:
        if split not in _LIST_FILES:
            raise ConfigError(f"split must be 'test' or 'train', got {split!r}")
        self.split = split
        base = existing_dir(root, "StanfordOnlineProducts")
        name = _LIST_FILES[split]
        if not (base / name).is_file() and (base / "Stanford_Online_Products" / name).is_file():
            base = base / "Stanford_Online_Products"
        self.root = base
        self.list_path = base / name
        if not self.list_path.is_file():
            raise DatasetError(
                f"no {name} in {os.fspath(base)}; download Stanford_Online_Products.zip from "
                "https://cvgl.stanford.edu/projects/lifted_struct/ and unzip it there"
            )
        self.issues: list[RowIssue] = []
        self.missing: list[int] = []
        self._ids: list[int] = []
        self._paths: list[str] = []
        self._meta: list[dict[str, Any]] = []
        shown = os.fspath(self.list_path)
        total = 0
        with open(self.list_path, encoding="utf-8") as fh:
            for line_no, line in enumerate(fh, start=1):
                fields = line.split()
                if not fields or (line_no == 1 and fields[0] == "image_id"):
                    continue
                total += 1
                try:
                    image_id, class_id, super_id = (int(f) for f in fields[:3])
                    rel = " ".join(fields[3:])
                    if not rel:
                        raise ValueError
                except ValueError:
                    self.issues.append(
                        RowIssue(shown, line_no, fields[0], "expected 'image_id class_id "
                                 "super_class_id path'; skipped")
                    )  # fmt: skip
                    continue
                if check_files and not (base / rel).is_file():
                    self.missing.append(image_id)
                    continue
                self._ids.append(image_id)
                self._paths.append(rel)
                folder = rel.split("/", 1)[0]
                self._meta.append(
                    {
                        "class_id": class_id,
                        "super_class_id": super_id,
                        "super_class": folder.removesuffix("_final"),
                    }
                )
        if self.issues:
            logger.warning("%s: %d malformed lines skipped (see .issues)", shown, len(self.issues))
        report_missing("StanfordOnlineProducts", self.missing, total, os.fspath(base))

    def __len__(self) -> int:
        return len(self._ids)

    def _item_id(self, index: int) -> int:
        return self._ids[index]

    def _item_image(self, index: int) -> str:
        return os.fspath(self.root / self._paths[index])

    def _item_metadata(self, index: int) -> dict[str, Any]:
        return dict(self._meta[index])

    def labels(self) -> list[int]:
        """Return every item's ``class_id``, in order (the label Recall@K uses)."""
        return [m["class_id"] for m in self._meta]

    def _describe(self) -> str:
        return f"{os.fspath(self.root)!r}, split={self.split!r}"


__all__ = ["StanfordOnlineProducts"]
