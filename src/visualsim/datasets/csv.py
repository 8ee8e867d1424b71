"""A table of image paths plus metadata: a CSV file or a pandas DataFrame."""

from __future__ import annotations

import csv as _csv
import logging
import os
import re
from collections.abc import Mapping, Sequence
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
    dtypes
        Declared kinds of columns, ``{"price": "float", "sku": "str"}`` (kinds:
        ``"int"``, ``"float"``, ``"bool"``, ``"str"``). Undeclared columns of a
        CSV file are inferred from their values (see Notes).
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
        Rows left out because their image cell was empty or a URL (images are
        read from local files only).
    dtypes_ : dict
        The kind of every id and metadata column, as read (declared or inferred).

    Notes
    -----
    Row numbers in messages are line numbers in the file (the header is line 1);
    for a DataFrame, the position plus 2. A CSV file's columns are typed: a
    column whose every non-empty cell is an integer becomes ``int`` (``"007"``
    stays text: leading zeros are kept), all numbers ``float``, all
    ``true``/``false`` ``bool``, anything else ``str``; an empty cell is
    ``None``. Declare ``dtypes=`` where inference would guess wrong. A
    DataFrame's values keep their types (numpy scalars become Python ones, NaN
    becomes ``None``); ``dtypes=`` converts them too.

    Examples
    --------
    >>> ds = CsvDataset("products.csv", image_column="file", id_column="sku",
    ...                 dtypes={"price": "float"})  # doctest: +SKIP
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
        dtypes: Mapping[str, str] | None = None,
        delimiter: str = ",",
        encoding: str = "utf-8",
        check_files: bool = True,
    ) -> None:
        if hasattr(csv, "to_dict") and hasattr(csv, "columns"):
            self.source = "<DataFrame>"
            columns = [str(c) for c in csv.columns]
            records = [
                (line, {str(k): _python_value(v) for k, v in row.items()})
                for line, row in enumerate(csv.to_dict("records"), start=2)
            ]
            base_dir = Path.cwd()
            typed = True
        else:
            path = Path(os.fspath(csv)).expanduser()
            self.source = os.fspath(path)
            columns, records = _read_csv(path, delimiter=delimiter, encoding=encoding)
            base_dir = path.resolve().parent
            typed = False
        self._build(
            columns,
            records,
            image_column=image_column,
            id_column=id_column,
            root=root,
            base_dir=base_dir,
            metadata_columns=metadata_columns,
            dtypes=dtypes,
            typed=typed,
            check_files=check_files,
        )

    def _build(
        self,
        columns: list[str],
        records: list[tuple[int, dict[str, Any]]],
        *,
        image_column: str,
        id_column: str | None,
        root: str | os.PathLike[str] | None,
        base_dir: Path,
        metadata_columns: Sequence[str] | None,
        dtypes: Mapping[str, str] | None,
        typed: bool,
        check_files: bool,
        allow_outside: bool = True,
    ) -> None:
        """Check the columns, type the values, resolve the images: shared by every table.

        With ``allow_outside=False`` an image path that leaves :attr:`root` (``..``,
        absolute, or through a symbolic link) is refused, naming its row.
        """
        self.image_column = image_column
        self.id_column = id_column
        self.check_files = check_files
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
        declared = dict(dtypes or {})
        unknown_types = [c for c in declared if c not in columns]
        if unknown_types:
            raise DatasetError(
                f"{self.source}: dtypes names {unknown_types}, which are not columns of the "
                f"table ({columns})"
            )
        typed_columns = [c for c in [id_column, *keep] if c]
        self.dtypes_ = type_columns(self.source, records, typed_columns, declared, infer=not typed)

        self.issues: list[RowIssue] = []
        self.missing: list[ItemId] = []
        self._ids: list[ItemId] = []
        self._images: list[str] = []
        self._meta: list[dict[str, Any]] = []
        seen: dict[ItemId, int] = {}
        for line, row in records:
            image = row.get(image_column)
            item_id: Any = row.get(id_column) if id_column else image
            if image is None or str(image).strip() == "":
                self.issues.append(
                    RowIssue(self.source, line, _str_or_none(item_id), "empty image cell; skipped")
                )
                continue
            if _URL.match(str(image)):
                self.issues.append(
                    RowIssue(
                        self.source,
                        line,
                        _str_or_none(item_id),
                        f"image {str(image)[:80]!r} is a URL; visualsim reads local files, so "
                        "download the images and list their paths; skipped",
                    )
                )
                continue
            if item_id is None or str(item_id).strip() == "":
                raise DatasetError(
                    f"{self.source}, row {line}: empty id in column {id_column!r}; every row "
                    "needs an id (or leave id_column=None to use the image path)"
                )
            if isinstance(item_id, float) and item_id.is_integer():
                item_id = int(item_id)  # a DataFrame's integer column with a gap is float
            if isinstance(item_id, bool) or not isinstance(item_id, (str, int)):
                raise DatasetError(
                    f"{self.source}, row {line}: id {item_id!r} in column {id_column!r} is a "
                    f"{type(item_id).__name__}; ids are strings or integers (declare "
                    f"dtypes={{{id_column!r}: 'str'}} to read them as text)"
                )
            if item_id in seen:
                raise DatasetError(
                    f"{self.source}, row {line}: id {item_id!r} already used on row "
                    f"{seen[item_id]}; ids must be unique (choose another id_column)"
                )
            seen[item_id] = line
            image_path = self.root / os.fspath(str(image))
            if not allow_outside:
                _check_inside(self.source, line, str(image), image_path, self.root)
            if check_files and not image_path.is_file():
                self.missing.append(item_id)
                continue
            self._ids.append(item_id)
            self._images.append(os.fspath(image_path))
            # only the cells a row has: a sparse feed costs memory per cell, not per
            # row x column; _item_metadata fills the absent ones with None
            self._meta.append({c: row[c] for c in keep if row.get(c) is not None})
        if self.issues:
            logger.warning(
                "%s: %d rows without a local image were skipped (see .issues)",
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
        meta = self._meta[index]
        return {c: meta.get(c) for c in self.metadata_columns}

    def _describe(self) -> str:
        return f"{self.source!r}, image_column={self.image_column!r}"


def _read_csv(
    path: Path, *, delimiter: str, encoding: str
) -> tuple[list[str], list[tuple[int, dict[str, Any]]]]:
    if not path.is_file():
        raise DatasetError(f"CSV file {os.fspath(path)!r} does not exist")
    try:
        return _read_csv_rows(path, delimiter=delimiter, encoding=encoding)
    except UnicodeDecodeError as exc:
        raise DatasetError(
            f"CSV file {os.fspath(path)!r} is not {encoding} text (byte {exc.start}: "
            f"{exc.reason}); pass encoding= (e.g. 'latin-1') or re-save it as UTF-8"
        ) from None
    except _csv.Error as exc:
        raise DatasetError(f"CSV file {os.fspath(path)!r} cannot be parsed: {exc}") from None


def _read_csv_rows(
    path: Path, *, delimiter: str, encoding: str
) -> tuple[list[str], list[tuple[int, dict[str, Any]]]]:
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
        budget = TableBudget(os.fspath(path))
        budget.columns(header, reader.line_num)
        records: list[tuple[int, dict[str, Any]]] = []
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            # only the non-empty cells: an empty one reads as None (row.get)
            cells = {name: row[i] for i, name in enumerate(header[: len(row)]) if row[i] != ""}
            budget.row(reader.line_num, len(cells))
            records.append((reader.line_num, cells))
    return header, records


MAX_TABLE_COLUMNS = 1_000
"""Most distinct columns a table file (CSV, a feed) may have: more is refused, naming the
row that went over, before any per-row-per-column memory is spent."""

MAX_TABLE_ROWS = 5_000_000
"""Most rows a table file may have (a Parquet file's are counted from its metadata):
a bigger catalogue is fed in parts, or through the Python API."""

MAX_TABLE_CELLS = 25_000_000
"""Most non-empty cells a table file may have: its memory, read, is about 100 bytes a
cell, so this bounds it at a few GiB whatever the file's shape."""


class TableBudget:
    """Counts a table's columns, rows and cells as it is read; refuses the one too many.

    Parameters
    ----------
    source
        The file, named in the error.

    Raises
    ------
    DatasetError
        From :meth:`columns` and :meth:`row`, naming the file, the row and the limit.

    Examples
    --------
    >>> budget = TableBudget("feed.jsonl")
    >>> budget.columns(["id", "image"], 1)
    >>> budget.row(2, 2)
    >>> budget.columns([f"k{i}" for i in range(MAX_TABLE_COLUMNS)], 3)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    visualsim.errors.DatasetError: feed.jsonl, row 3: 1,002 columns so far, more than ...
    """

    def __init__(self, source: str) -> None:
        self.source = source
        self.seen: set[str] = set()
        self.rows = 0
        self.cells = 0

    def columns(self, names: Sequence[str], line: int) -> None:
        """Count row ``line``'s column ``names``; refuse when the table passes the limit."""
        new = len(set(names) - self.seen)  # counted before the set grows by them
        if len(self.seen) + new > MAX_TABLE_COLUMNS:
            raise DatasetError(
                f"{self.source}, row {line}: {len(self.seen) + new:,} columns so far, more "
                f"than the {MAX_TABLE_COLUMNS:,} a table may have (this row adds {new:,}); "
                "a product feed has a fixed set of columns: fix the row or the file"
            )
        self.seen.update(names)

    def row(self, line: int, cells: int) -> None:
        """Count one more row of ``cells`` non-empty cells; refuse past the row/cell limits."""
        self.rows += 1
        self.cells += cells
        if self.rows > MAX_TABLE_ROWS:
            raise DatasetError(
                f"{self.source}, row {line}: more than {MAX_TABLE_ROWS:,} rows; split the file"
            )
        if self.cells > MAX_TABLE_CELLS:
            raise DatasetError(
                f"{self.source}, row {line}: more than {MAX_TABLE_CELLS:,} non-empty cells "
                "in all; split the file or drop columns"
            )


def _check_inside(source: str, line: int, image: str, path: Path, root: Path) -> None:
    """Refuse an image path that resolves outside ``root`` (``..``, absolute, a symlink)."""
    resolved = path.resolve()
    base = root.resolve()
    if resolved != base and base not in resolved.parents:
        raise DatasetError(
            f"{source}, row {line}: image {image[:200]!r} lies outside the feed's image root "
            f"{os.fspath(base)!r} (through '..', an absolute path or a symbolic link); "
            "pass allow_outside=True (visualsim: --allow-outside-images) if you trust the "
            "feed, or root= (--root) naming a folder that holds its images"
        )


KINDS = ("int", "float", "bool", "str")
"""Column kinds a table's values are typed as (the catalogue's field kinds)."""

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_INT = re.compile(r"[+-]?(0|[1-9][0-9]*)")
_BOOLS = {"true": True, "false": False}


def infer_kind(values: Sequence[str]) -> str:
    """Return the narrowest kind every text value fits: int, float, bool, else str.

    >>> infer_kind(["1", "20"]), infer_kind(["1", "2.5"]), infer_kind(["007"])
    ('int', 'float', 'str')
    >>> infer_kind(["True", "false"]), infer_kind([])
    ('bool', 'str')
    """
    if not values:
        return "str"
    stripped = [v.strip() for v in values]
    if all(_INT.fullmatch(v) for v in stripped):
        return "int"
    if all(_is_float(v) for v in stripped):
        return "float"
    if all(v.lower() in _BOOLS for v in stripped):
        return "bool"
    return "str"


def _is_float(text: str) -> bool:
    if _INT.fullmatch(text):
        return True
    if re.fullmatch(r"[+-]?0[0-9]+", text.split(".")[0] if "." in text else text):
        return False  # leading zeros: an identifier, not a number
    try:
        value = float(text)
    except ValueError:
        return False
    return value == value and value not in (float("inf"), float("-inf"))


def convert(value: Any, kind: str) -> Any:
    """Return ``value`` as ``kind`` (``None`` stays ``None``); ``ValueError`` if it cannot be."""
    if value is None:
        return None
    if kind == "str":
        return value if isinstance(value, str) else str(value)
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _BOOLS:
            return _BOOLS[value.strip().lower()]
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise ValueError(f"{value!r} is not true or false")
    if kind == "int":
        if isinstance(value, bool):
            raise ValueError(f"{value!r} is a boolean, not an integer")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str) and re.fullmatch(r"[+-]?[0-9]+", value.strip()):
            return int(value.strip())  # declared int: "00123" is 123
        raise ValueError(f"{value!r} is not an integer")
    if kind == "float":
        if isinstance(value, bool):
            raise ValueError(f"{value!r} is a boolean, not a number")
        number = float(value)
        if number != number or number in (float("inf"), float("-inf")):
            raise ValueError(f"{value!r} is not a finite number")
        return number
    raise ValueError(f"unknown kind {kind!r}; use one of {', '.join(KINDS)}")


def type_columns(
    source: str,
    records: list[tuple[int, dict[str, Any]]],
    columns: Sequence[str],
    declared: Mapping[str, str],
    *,
    infer: bool,
) -> dict[str, str]:
    """Convert ``records``' values in place to their columns' kinds; return the kinds.

    Declared kinds win; other columns are inferred from their text values when
    ``infer`` (a CSV file), else left as they are (typed sources: JSON, Parquet,
    a DataFrame) and reported by their values' type.

    Raises
    ------
    DatasetError
        For an unknown kind, or a value that does not fit its column's kind
        (naming the file, the row, the column and the value).
    """
    for column, kind in declared.items():
        if kind not in KINDS:
            raise DatasetError(
                f"{source}: dtypes[{column!r}] is {kind!r}; use one of {', '.join(KINDS)}"
            )
    kinds: dict[str, str] = {}
    for column in columns:
        values = [row[column] for _, row in records if row.get(column) is not None]
        if column in declared:
            kinds[column] = declared[column]
        elif infer:
            kinds[column] = infer_kind([str(v) for v in values])
        else:
            kinds[column] = _kind_of(values)
            continue  # typed already
        for line, row in records:
            if row.get(column) is None:
                continue  # an absent cell stays absent (it reads as None)
            try:
                row[column] = convert(row[column], kinds[column])
            except (ValueError, TypeError) as exc:
                raise DatasetError(
                    f"{source}, row {line}: column {column!r} holds {row.get(column)!r}, which "
                    f"is not {kinds[column]} ({exc}); fix the cell or declare "
                    f"dtypes={{{column!r}: 'str'}}"
                ) from None
    return kinds


def _kind_of(values: Sequence[Any]) -> str:
    seen = {type(v) for v in values}
    if seen and seen <= {bool}:
        return "bool"
    if seen and seen <= {int}:
        return "int"
    if seen and seen <= {int, float}:
        return "float"
    return "str" if seen <= {str} else "mixed"


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


__all__ = [
    "KINDS",
    "MAX_TABLE_CELLS",
    "MAX_TABLE_COLUMNS",
    "MAX_TABLE_ROWS",
    "CsvDataset",
    "TableBudget",
    "convert",
    "infer_kind",
    "type_columns",
]
