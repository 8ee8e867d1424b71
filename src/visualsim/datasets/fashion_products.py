"""The Kaggle "Fashion Product Images" dataset (Myntra catalogue, 44,446 products).

``styles.csv`` joined to ``images/{id}.jpg``. The archive's quirks are handled
here rather than in every user's notebook:

- it nests differently by variant and by download tool (``myntradataset/``,
  ``fashion-dataset/``, ``fashion-dataset/fashion-dataset/`` ...), so
  ``styles.csv`` is searched for under ``root``;
- 22 rows carry an unquoted comma inside ``productDisplayName`` (pandas:
  "Expected 10 fields ... saw 11"). They are kept: the first 9 fields are
  fixed and the rest, commas restored, is the name; each is listed in
  :attr:`FashionProductImages.issues`;
- ``year`` is sometimes a float (``2014.0``) or empty: it becomes an ``int`` or
  ``None``;
- some ids have no image file: they are left out, listed in
  :attr:`FashionProductImages.missing`, and reported with one warning;
- the full variant's ``images.csv`` (``filename,link``) adds a ``link`` field,
  and its ``styles/{id}.json`` files (price, brand ...) are available through
  :meth:`FashionProductImages.style_details` and the ``details`` option.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from ..errors import ConfigError, DatasetError
from .base import BaseDataset, RowIssue, existing_dir, report_missing
from .kaggle import dataset_url, download_kaggle_dataset, is_downloaded

logger = logging.getLogger(__name__)

SLUGS: dict[str, str] = {
    "small": "paramaggarwal/fashion-product-images-small",
    "full": "paramaggarwal/fashion-product-images-dataset",
}
"""Kaggle slugs of the two variants: ``small`` (~570 MB, 60x80 images) and ``full`` (~25 GB)."""

STYLE_COLUMNS: tuple[str, ...] = (
    "gender",
    "masterCategory",
    "subCategory",
    "articleType",
    "baseColour",
    "season",
    "year",
    "usage",
    "productDisplayName",
)
"""The metadata columns of ``styles.csv`` after ``id``, in file order."""

_N_FIXED = 9  # id + 8 columns; whatever follows is the display name
_SEARCH_DEPTH = 4
_DO_NOT_DESCEND = {"images", "styles"}


class FashionProductImages(BaseDataset):
    """Kaggle's Fashion Product Images: one item per ``styles.csv`` row with an image.

    Ids are the integer style ids; images are the paths ``images/{id}.jpg``;
    metadata holds :data:`STYLE_COLUMNS` (empty cells are ``None``, ``year`` an
    ``int``), plus ``link`` when ``images.csv`` is present, plus the scalar
    fields of ``styles/{id}.json`` when ``details`` asks for them.

    Parameters
    ----------
    root
        Directory holding (at any nesting) ``styles.csv`` and ``images/``.
    variant
        ``"small"`` (``paramaggarwal/fashion-product-images-small``) or ``"full"``
        (``paramaggarwal/fashion-product-images-dataset``); chooses what to download.
    download
        Download the variant into ``root`` with the Kaggle client when it is not
        there yet (needs Kaggle credentials; see ``docs/datasets.md``).
    force
        With ``download``, download again even when the data is there.
    api
        A Kaggle client to use instead of the official one (tests).
    details
        Merge fields from ``styles/{id}.json`` (full variant) into each item's
        metadata: ``True`` for every scalar field, or a list of field names
        (``["price", "brandName"]``). Read per item, when the item is made.
        Fields of ``styles.csv`` are never overridden.
    quiet
        Hide the Kaggle client's progress bar while downloading.

    Attributes
    ----------
    styles_path : Path
        The ``styles.csv`` that was read.
    images_dir : Path
        The directory holding ``{id}.jpg``.
    missing : list of int
        Ids listed in ``styles.csv`` without an image file (left out).
    issues : list of RowIssue
        Rows that were repaired (commas in the name) or skipped (no valid id).

    Examples
    --------
    >>> ds = FashionProductImages("data/fashion", download=True)  # doctest: +SKIP
    >>> rec = Recommender().fit(ds)  # doctest: +SKIP
    >>> rec.query("my-dress.jpg", k=5, where={"gender": "Women"})  # doctest: +SKIP
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        variant: Literal["small", "full"] = "small",
        download: bool = False,
        force: bool = False,
        api: Any = None,
        details: bool | Sequence[str] = False,
        quiet: bool = True,
    ) -> None:
        if variant not in SLUGS:
            raise ConfigError(f"variant must be 'small' or 'full', got {variant!r}")
        self.variant = variant
        self.slug = SLUGS[variant]
        self.details = details if isinstance(details, bool) else tuple(details)
        root_path = Path(root).expanduser()
        if download:
            if force or not (
                is_downloaded(self.slug, root_path)
                or (root_path.is_dir() and find_styles_csv(root_path))
            ):
                download_kaggle_dataset(self.slug, root_path, force=force, api=api, quiet=quiet)
            else:
                logger.info("%s: data already in %s; not downloading", self.slug, root_path)
        self.root = existing_dir(root_path, "FashionProductImages")
        styles = find_styles_csv(self.root)
        if styles is None:
            raise DatasetError(
                f"no styles.csv under {os.fspath(self.root)} (searched {_SEARCH_DEPTH} levels "
                f"deep). Download it with FashionProductImages({os.fspath(root)!r}, "
                f"variant={variant!r}, download=True) (needs Kaggle credentials), or by hand from "
                f"{dataset_url(self.slug)} and unzip it into that directory."
            )
        self.styles_path = styles
        self.images_dir = _find_images_dir(styles, self.root)
        self.styles_dir: Path | None = (
            styles.parent / "styles" if (styles.parent / "styles").is_dir() else None
        )
        self.issues: list[RowIssue] = []
        rows = self._read_styles()
        self.links = self._read_links()

        present = {name for name in os.listdir(self.images_dir) if name.endswith(".jpg")}
        self.missing: list[int] = []
        self._ids: list[int] = []
        self._meta: list[dict[str, Any]] = []
        for style_id, meta in rows:
            if f"{style_id}.jpg" not in present:
                self.missing.append(style_id)
                continue
            if self.links:
                meta["link"] = self.links.get(style_id)
            self._ids.append(style_id)
            self._meta.append(meta)
        if self.issues:
            logger.info(
                "%s: %d rows needed attention (names with commas joined, bad ids skipped): "
                "see .issues",
                self.styles_path,
                len(self.issues),
            )
        report_missing("FashionProductImages", self.missing, len(rows), os.fspath(self.images_dir))

    def _read_styles(self) -> list[tuple[int, dict[str, Any]]]:
        path = self.styles_path
        shown = os.fspath(path)
        rows: list[tuple[int, dict[str, Any]]] = []
        seen: set[int] = set()
        with open(path, newline="", encoding="utf-8", errors="replace") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header and header[0].startswith("\ufeff"):
                header[0] = header[0][1:]
            if not header or header[0].strip() != "id" or len(header) < _N_FIXED + 1:
                raise DatasetError(
                    f"{shown} does not look like Fashion Product Images' styles.csv: its header "
                    f"should be id,{','.join(STYLE_COLUMNS)} but is {','.join(header or [])!r}"
                )
            for row in reader:
                line = reader.line_num
                if not any(cell.strip() for cell in row):
                    continue
                raw_id = row[0].strip()
                try:
                    style_id = int(raw_id)
                except ValueError:
                    self.issues.append(
                        RowIssue(shown, line, raw_id, "id is not an integer; skipped")
                    )
                    continue
                if style_id in seen:
                    self.issues.append(RowIssue(shown, line, raw_id, "duplicate id; skipped"))
                    continue
                seen.add(style_id)
                if len(row) > _N_FIXED + 1:
                    self.issues.append(
                        RowIssue(
                            shown,
                            line,
                            raw_id,
                            f"{len(row)} fields instead of {_N_FIXED + 1}: productDisplayName "
                            "contained unquoted commas; kept, with the extra fields joined into "
                            "the name",
                        )
                    )
                    row = [*row[:_N_FIXED], ",".join(row[_N_FIXED:])]
                elif len(row) < _N_FIXED + 1:
                    self.issues.append(
                        RowIssue(
                            shown,
                            line,
                            raw_id,
                            f"only {len(row)} fields; the missing ones are empty",
                        )
                    )
                    row = row + [""] * (_N_FIXED + 1 - len(row))
                meta: dict[str, Any] = {}
                for name, cell in zip(STYLE_COLUMNS, row[1 : _N_FIXED + 1], strict=True):
                    value = cell.strip()
                    meta[name] = value if value else None
                meta["year"] = self._parse_year(meta["year"], shown, line, raw_id)
                rows.append((style_id, meta))
        return rows

    def _parse_year(self, value: str | None, path: str, line: int, raw_id: str) -> int | None:
        if value is None:
            return None
        try:
            year = float(value)
        except ValueError:
            self.issues.append(
                RowIssue(path, line, raw_id, f"year {value!r} is not a number; None")
            )
            return None
        if year != year or year in (float("inf"), float("-inf")):
            return None
        return int(year)

    def _read_links(self) -> dict[int, str]:
        path = self.styles_path.parent / "images.csv"
        if not path.is_file():
            return {}
        links: dict[int, str] = {}
        with open(path, newline="", encoding="utf-8", errors="replace") as fh:
            for row in csv.DictReader(fh):
                filename, link = (
                    (row.get("filename") or "").strip(),
                    (row.get("link") or "").strip(),
                )
                stem = filename.rsplit(".", 1)[0]
                if stem.isdigit() and link and link != "undefined":
                    links[int(stem)] = link
        return links

    def style_details(self, style_id: int) -> dict[str, Any]:
        """Return the product record of ``styles/{style_id}.json`` (full variant), or ``{}``.

        The record is the file's ``data`` object: price, discountedPrice,
        brandName, ageGroup, productDescriptors, styleImages ...

        Parameters
        ----------
        style_id
            A style id from ``styles.csv``.
        """
        if self.styles_dir is None:
            return {}
        path = self.styles_dir / f"{int(style_id)}.json"
        try:
            document = json.loads(path.read_text(encoding="utf-8", errors="replace"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            logger.warning("cannot read %s: %s", path, exc)
            return {}
        data = document.get("data", document) if isinstance(document, dict) else None
        return data if isinstance(data, dict) else {}

    def __len__(self) -> int:
        return len(self._ids)

    def _item_id(self, index: int) -> int:
        return self._ids[index]

    def _item_image(self, index: int) -> str:
        return os.fspath(self.images_dir / f"{self._ids[index]}.jpg")

    def _item_metadata(self, index: int) -> dict[str, Any]:
        meta = dict(self._meta[index])
        if self.details and self.styles_dir is not None:
            record = self.style_details(self._ids[index])
            wanted = self.details if isinstance(self.details, tuple) else list(record)
            for key in wanted:
                value = record.get(key)
                if key not in meta and not isinstance(value, (dict, list)):
                    meta[key] = value
        return meta

    def _describe(self) -> str:
        return f"{os.fspath(self.root)!r}, variant={self.variant!r}"


def find_styles_csv(root: str | os.PathLike[str]) -> Path | None:
    """Return the ``styles.csv`` under ``root`` to read, or ``None`` when there is none.

    Searches a few levels deep (not inside ``images/`` or ``styles/``); prefers
    a ``styles.csv`` with an ``images/`` directory beside it, then the
    shallowest, then the first in sorted order.

    Parameters
    ----------
    root
        The directory the archive was extracted into.
    """
    found: list[tuple[int, int, str, Path]] = []
    queue: deque[tuple[Path, int]] = deque([(Path(root), 0)])
    while queue:
        directory, depth = queue.popleft()
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError:
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.name == "styles.csv" and entry.is_file():
                path = Path(entry.path)
                has_images = (path.parent / "images").is_dir()
                found.append((0 if has_images else 1, depth, entry.path, path))
            elif (
                depth < _SEARCH_DEPTH
                and entry.name not in _DO_NOT_DESCEND
                and entry.is_dir(follow_symlinks=False)
            ):
                queue.append((Path(entry.path), depth + 1))
    return min(found)[3] if found else None


def _find_images_dir(styles: Path, root: Path) -> Path:
    beside = styles.parent / "images"
    if beside.is_dir():
        return beside
    candidates = sorted(
        p
        for p in root.glob("**/images")
        if p.is_dir() and len(p.relative_to(root).parts) <= _SEARCH_DEPTH + 1
    )
    if candidates:
        return candidates[0]
    raise DatasetError(
        f"found {os.fspath(styles)} but no images/ directory beside it or under "
        f"{os.fspath(root)}; the archive looks partly extracted: download again with "
        "download=True, force=True, or unzip it again"
    )


__all__ = ["SLUGS", "STYLE_COLUMNS", "FashionProductImages", "find_styles_csv"]
