"""A table of image paths plus metadata: a CSV file or a pandas DataFrame."""

from __future__ import annotations

import csv as _csv
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

from ..errors import DatasetError
from .base import BaseDataset, ItemId, RowIssue, report_missing

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

logger = logging.getLogger(__name__)

TableSource = Union[str, "os.PathLike[str]", "pd.DataFrame"]


class CsvDataset(BaseDataset):
    """Images listed in a table, one row per item, the other columns as metadata.

    Parameters
    ----------
    csv
        A CSV file (with a header row) or a pandas DataFrame.
    image_column
        The column holding each image's path; relative paths are resolved
        against ``root``.
    id_column
        The column holding each item's id; ``None`` uses the image column's
        value as written. Ids must be unique.
    root
        Directory relative image paths are resolved against; default: the CSV
        file's directory (the current directory for a DataFrame).
    metadata_columns
        The columns to keep as metadata; default: every column except the
        image and id columns.
    delimiter
        The CSV field separator.
    encoding
        The CSV file's text encoding.
    check_files
        Check that every image file exists; rows whose file is missing are left
        out and listed in :attr:`missing` (with one warning). ``False`` keeps
        every row and lets the recommender report unreadable files.

    Attributes
    ----------
    missing : list
        Ids whose image file does not exist (with ``check_files=True``).
    issues : list of RowIssue
        Rows left out because their image cell was empty.

    Notes
    -----
    Row numbers in messages are line numbers in the file (the header is line 1);
    for a DataFrame, the position plus 2. Values read from a CSV file are strings
    (an empty cell is ``None``); a DataFrame's values keep their types (numpy
    scalars become Python ones, NaN becomes ``None``).

    Examples
    --------
    >>> ds = CsvDataset("products.csv", image_column="file", id_column="sku")  # doctest: +SKIP
    >>> rec = Recommender().fit(ds)  # doctest: +SKIP
    """

    def __init__(
        self,
        csv: TableSource,
        image_column: str = "image",
        id_column: str | None = None,
        root: str | os.PathLike[str] | None = None,
        *,
        metadata_columns: Sequence[str] | None = None,
        delimiter: str = ",",
        encoding: str = "utf-8",
        check_files: bool = True,
    ) -> None:
        self.image_column = image_column
        self.id_column = id_column
        self.check_files = check_files
        if hasattr(csv, "to_dict") and hasattr(csv, "columns"):
            self.source = "<DataFrame>"
            columns = [str(c) for c in csv.columns]
            records = [
                (line, {str(k): _python_value(v) for k, v in row.items()})
                for line, row in enumerate(csv.to_dict("records"), start=2)
            ]
            base_dir = Path.cwd()
        else:
            path = Path(os.fspath(csv)).expanduser()
            self.source = os.fspath(path)
            columns, records = _read_csv(path, delimiter=delimiter, encoding=encoding)
            base_dir = path.resolve().parent
        self.root = Path(root).expanduser().resolve() if root is not None else base_dir
        self.columns = columns

        needed = [image_column] + ([id_column] if id_column else [])
        absent = [c for c in needed if c not in columns]
        if absent:
            raise DatasetError(
                f"{self.source}: no column {', '.join(map(repr, absent))}; the columns are "
                f"{columns}. Pass image_column=/id_column= naming the right ones."
            )
        if metadata_columns is None:
            keep = [c for c in columns if c not in (image_column, id_column)]
        else:
            unknown = [c for c in metadata_columns if c not in columns]
            if unknown:
                raise DatasetError(
                    f"{self.source}: metadata_columns {unknown} are not columns of the table "
                    f"({columns})"
                )
            keep = list(metadata_columns)
        self.metadata_columns = keep

        self.issues: list[RowIssue] = []
        self.missing: list[ItemId] = []
        self._ids: list[ItemId] = []
        self._images: list[str] = []
        self._meta: list[dict[str, Any]] = []
        seen: dict[ItemId, int] = {}
        for line, row in records:
            image = row.get(image_column)
            item_id: ItemId = row.get(id_column) if id_column else image  # type: ignore[assignment]
            if image is None or str(image).strip() == "":
                self.issues.append(
                    RowIssue(self.source, line, _str_or_none(item_id), "empty image cell; skipped")
                )
                continue
            if item_id is None or str(item_id).strip() == "":
                raise DatasetError(
                    f"{self.source}, row {line}: empty id in column {id_column!r}; every row "
                    "needs an id (or leave id_column=None to use the image path)"
                )
            if item_id in seen:
                raise DatasetError(
                    f"{self.source}, row {line}: id {item_id!r} already used on row "
                    f"{seen[item_id]}; ids must be unique (choose another id_column)"
                )
            seen[item_id] = line
            image_path = self.root / os.fspath(str(image))
            if check_files and not image_path.is_file():
                self.missing.append(item_id)
                continue
            self._ids.append(item_id)
            self._images.append(os.fspath(image_path))
            self._meta.append({c: row.get(c) for c in keep})
        if self.issues:
            logger.warning(
                "%s: %d rows without an image were skipped (see .issues)",
                self.source,
                len(self.issues),
            )
        report_missing("CsvDataset", self.missing, len(records), os.fspath(self.root))

    def __len__(self) -> int:
        return len(self._ids)

    def _item_id(self, index: int) -> ItemId:
        return self._ids[index]

    def _item_image(self, index: int) -> str:
        return self._images[index]

    def _item_metadata(self, index: int) -> dict[str, Any]:
        return dict(self._meta[index])

    def _describe(self) -> str:
        return f"{self.source!r}, image_column={self.image_column!r}"


def _read_csv(
    path: Path, *, delimiter: str, encoding: str
) -> tuple[list[str], list[tuple[int, dict[str, Any]]]]:
    if not path.is_file():
        raise DatasetError(f"CSV file {os.fspath(path)!r} does not exist")
    with open(path, newline="", encoding=encoding) as fh:
        reader = _csv.reader(fh, delimiter=delimiter)
        try:
            header = next(reader)
        except StopIteration:
            raise DatasetError(
                f"CSV file {os.fspath(path)!r} is empty; it needs a header row"
            ) from None
        header = [h.strip() for h in header]
        if header and header[0].startswith("\ufeff"):
            header[0] = header[0][1:]
        records: list[tuple[int, dict[str, Any]]] = []
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            cells = {
                name: (row[i] if i < len(row) and row[i] != "" else None)
                for i, name in enumerate(header)
            }
            records.append((reader.line_num, cells))
    return header, records


def _python_value(value: Any) -> Any:
    """Return numpy scalars as Python scalars and NaN as None, so metadata stays JSON-safe."""
    item = getattr(value, "item", None)
    if callable(item) and getattr(value, "shape", None) == ():
        value = item()
    if isinstance(value, float) and value != value:
        return None
    return value


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


__all__ = ["CsvDataset"]
