"""Product feeds: a shop's catalogue as a CSV, JSON Lines or Parquet file.

One row per product: an id column, an image column (a path, relative to the
feed's folder or to ``root``) and any other columns, which become typed
metadata (``price`` a float, ``in_stock`` a bool, ...) that ``where=`` filters
on. ``visualsim index products.csv``, ``visualsim add`` and ``visualsim sync``
read feeds with :class:`ProductFeed`.

Examples
--------
>>> import tempfile, pathlib
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> _ = (folder / "products.csv").write_text("sku,image,price,in_stock\\nA1,a.jpg,9.5,true\\n")
>>> feed = ProductFeed(folder / "products.csv", id_column="sku", check_files=False)
>>> item = feed[0]
>>> item.id, pathlib.Path(item.image).name, item.metadata
('A1', 'a.jpg', {'price': 9.5, 'in_stock': True})
>>> feed.source_of(0)
'a.jpg'
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .datasets.csv import (
    MAX_TABLE_CELLS,
    MAX_TABLE_COLUMNS,
    MAX_TABLE_ROWS,
    CsvDataset,
    TableBudget,
    _python_value,
    _read_csv,
)
from .errors import DatasetError

FORMATS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".txt": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}
"""Feed file suffixes and the format each is read as."""

MAX_FEED_BYTES = 4 << 30
"""Largest feed file read (4 GiB): a bigger one is refused, not read into memory.
Its rows, columns and cells are bounded too (``MAX_TABLE_ROWS``, ``MAX_TABLE_COLUMNS``,
``MAX_TABLE_CELLS`` of :mod:`visualsim.datasets.csv`), so memory follows the file."""


def is_feed(path: str | os.PathLike[str]) -> bool:
    """Return whether ``path`` names a file in a feed format (by its suffix)."""
    return Path(path).suffix.lower() in FORMATS


class ProductFeed(CsvDataset):
    """A product feed file: one row per item, an id and an image column, typed metadata.

    Parameters
    ----------
    path
        A ``.csv`` / ``.tsv``, ``.jsonl`` / ``.ndjson`` (one JSON object per line)
        or ``.parquet`` file.
    id_column
        The column holding each product's id (unique).
    image_column
        The column holding each product's image path.
    root
        Folder that relative image paths are read from; default: the feed's folder.
    dtypes
        Declared column kinds, ``{"price": "float", "sku": "str"}``; other CSV
        columns are inferred (int, float, bool, else str), and JSON/Parquet
        columns keep their types.
    known_dtypes
        Kinds to use for those columns the feed has, without complaint about the
        others (a catalogue's ``fields_``, so an update reads a column as the
        catalogue stores it); ``dtypes`` wins.
    metadata_columns
        Columns kept as metadata; default: all but the id and image columns.
    check_files
        Leave out (and list in :attr:`missing`) rows whose image file does not exist.
    format
        ``"csv"``, ``"tsv"``, ``"jsonl"`` or ``"parquet"``; default: from the suffix.
    encoding
        Text encoding of CSV and JSON Lines files.
    allow_outside
        Read image paths that lie outside :attr:`root` (absolute paths, ``..``, a
        symbolic link out of it). Off by default: a feed may be a stranger's, and
        such a row is refused, naming it. Turn it on for a feed you trust whose
        images live elsewhere (``/data/photos/a.jpg``), or pass ``root=`` naming
        the folder that holds them.

    Attributes
    ----------
    root : Path
        The folder relative image paths were resolved against.
    missing, issues, dtypes_
        See :class:`~visualsim.datasets.CsvDataset`.

    Raises
    ------
    DatasetError
        For a missing or unreadable file, an unknown format, a missing column, a
        duplicate or empty id, a bad JSON line, a value that does not fit its
        declared kind, an image path outside :attr:`root` (unless ``allow_outside``),
        or more rows, columns or cells than a table may have (one row's many keys
        included); the message names the file, the row and the fix.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        id_column: str = "id",
        image_column: str = "image",
        root: str | os.PathLike[str] | None = None,
        dtypes: Mapping[str, str] | None = None,
        known_dtypes: Mapping[str, str] | None = None,
        metadata_columns: Sequence[str] | None = None,
        check_files: bool = True,
        format: str | None = None,
        encoding: str = "utf-8",
        allow_outside: bool = False,
    ) -> None:
        file = Path(os.fspath(path)).expanduser()
        self.source = os.fspath(file)
        fmt = format or FORMATS.get(file.suffix.lower())
        if fmt not in ("csv", "tsv", "jsonl", "parquet"):
            raise DatasetError(
                f"{self.source}: unknown feed format; name the file .csv, .tsv, .jsonl, "
                ".ndjson or .parquet, or pass format='csv'|'tsv'|'jsonl'|'parquet'"
            )
        if not file.is_file():
            raise DatasetError(f"feed {self.source!r} does not exist (or is not a file)")
        if file.stat().st_size > MAX_FEED_BYTES:
            raise DatasetError(f"feed {self.source!r} is larger than {MAX_FEED_BYTES >> 30} GiB")
        self.format = fmt
        if fmt in ("csv", "tsv"):
            columns, records = _read_csv(
                file, delimiter="\t" if fmt == "tsv" else ",", encoding=encoding
            )
            typed = False
        elif fmt == "jsonl":
            columns, records = _read_jsonl(file, encoding=encoding)
            typed = True
        else:
            columns, records = _read_parquet(file)
            typed = True
        for _, row in records:
            value = row.get(image_column)
            if value is not None and not isinstance(value, str):
                row[image_column] = str(value)
        self._build(
            columns,
            records,
            image_column=image_column,
            id_column=id_column,
            root=root,
            base_dir=file.resolve().parent,
            metadata_columns=metadata_columns,
            dtypes={
                **{k: v for k, v in (known_dtypes or {}).items() if k in columns},
                **(dtypes or {}),
            },
            typed=typed,
            check_files=check_files,
            allow_outside=allow_outside,
        )

    def source_of(self, index: int) -> str:
        """Return item ``index``'s image path relative to :attr:`root` (absolute when outside)."""
        path = Path(self._item_image(index))
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return os.fspath(path)

    def implied_root(self) -> Path | None:
        """Return the folder the feed's images imply as their image root.

        :attr:`root` when every image lies inside it (the usual feed, of paths
        relative to its folder); else the deepest folder that holds them all (a
        feed of absolute paths such as ``/data/photos/a.jpg`` implies
        ``/data/photos``); ``None`` when only the filesystem's root holds them
        all. ``visualsim index`` stores image paths relative to this folder, so
        ``visualsim serve`` finds them there.

        Returns
        -------
        Path or None
            A resolved folder, or ``None``.

        Examples
        --------
        >>> import tempfile, pathlib
        >>> folder = pathlib.Path(tempfile.mkdtemp()).resolve()
        >>> photos = folder / "photos" / "shoes"
        >>> photos.mkdir(parents=True)
        >>> _ = (photos / "a.jpg").write_bytes(b"x")
        >>> feed_dir = folder / "feeds"
        >>> feed_dir.mkdir()
        >>> _ = (feed_dir / "p.csv").write_text(f"id,image\\nA1,{photos / 'a.jpg'}\\n")
        >>> feed = ProductFeed(feed_dir / "p.csv", allow_outside=True)
        >>> feed.implied_root() == folder / "photos" / "shoes"
        True
        """
        root = self.root.resolve()
        parents: set[str] = set()
        outside = False
        for index in range(len(self)):
            path = Path(self._item_image(index)).resolve()
            outside = outside or root not in path.parents
            parents.add(os.fspath(path.parent))
        if not outside:
            return self.root
        if len(parents) == 1:
            return Path(next(iter(parents)))
        try:
            common = Path(os.path.commonpath(sorted(parents)))
        except ValueError:  # paths on different drives
            return None
        return None if common == Path(common.anchor) else common

    def _describe(self) -> str:
        return f"{self.source!r}, id_column={self.id_column!r}, image_column={self.image_column!r}"


def sha256_of(path: str | os.PathLike[str]) -> str | None:
    """Return the SHA-256 of a file's bytes (as the catalogue records it), or ``None``."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            while block := fh.read(1 << 20):
                digest.update(block)
    except (OSError, ValueError):
        return None
    return digest.hexdigest()


def _read_jsonl(path: Path, *, encoding: str) -> tuple[list[str], list[tuple[int, dict[str, Any]]]]:
    try:
        return _read_jsonl_rows(path, encoding=encoding)
    except UnicodeDecodeError as exc:
        raise DatasetError(
            f"feed {str(path)!r} is not {encoding} text (byte {exc.start}: {exc.reason}); "
            "pass encoding= or re-save it as UTF-8"
        ) from None


def _read_jsonl_rows(
    path: Path, *, encoding: str
) -> tuple[list[str], list[tuple[int, dict[str, Any]]]]:
    columns: dict[str, None] = {}
    records: list[tuple[int, dict[str, Any]]] = []
    budget = TableBudget(os.fspath(path))
    with open(path, encoding=encoding) as fh:
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line, parse_constant=_no_constant)
            except (json.JSONDecodeError, ValueError, RecursionError) as exc:
                raise DatasetError(
                    f"{path}, line {line_no}: not valid JSON ({exc}); each line must be one "
                    "JSON object"
                ) from None
            if not isinstance(row, dict):
                raise DatasetError(
                    f"{path}, line {line_no}: a JSON {type(row).__name__}, not an object; each "
                    'line must be one object such as {"id": ..., "image": ...}'
                )
            cells = {str(k): v for k, v in row.items() if v is not None}
            budget.columns(list(map(str, row)), line_no)  # before the columns grow
            budget.row(line_no, len(cells))
            for key in row:
                columns.setdefault(str(key), None)
            records.append((line_no, cells))
    if not records:
        raise DatasetError(f"feed {str(path)!r} holds no rows")
    return list(columns), records


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _read_parquet(path: Path) -> tuple[list[str], list[tuple[int, dict[str, Any]]]]:
    try:
        import pyarrow.parquet as pq
    except ModuleNotFoundError as exc:  # pragma: no cover - pyarrow ships with the dev extras
        raise ModuleNotFoundError(
            "reading a Parquet feed needs pyarrow: pip install pyarrow", name="pyarrow"
        ) from exc
    try:
        meta = pq.ParquetFile(path).metadata
    except Exception as exc:  # pyarrow raises its own ArrowInvalid / OSError variants
        raise DatasetError(f"{path}: cannot be read as Parquet ({exc})") from None
    # refused by what the footer claims, before a row is read (a few KiB can claim 8M)
    rows, width = int(meta.num_rows), int(meta.num_columns)
    if width > MAX_TABLE_COLUMNS or rows > MAX_TABLE_ROWS or rows * width > MAX_TABLE_CELLS:
        raise DatasetError(
            f"{path}: its metadata says {rows:,} rows x {width:,} columns, more than a feed "
            f"may have ({MAX_TABLE_ROWS:,} rows, {MAX_TABLE_COLUMNS:,} columns, "
            f"{MAX_TABLE_CELLS:,} cells); split the file"
        )
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises its own ArrowInvalid / OSError variants
        raise DatasetError(f"{path}: cannot be read as Parquet ({exc})") from None
    if table.num_rows != rows:
        raise DatasetError(f"{path}: holds {table.num_rows:,} rows, its metadata {rows:,}")
    columns = [str(c) for c in table.column_names]
    records = []
    for i, row in enumerate(table.to_pylist(), 2):
        cells = {str(k): _python_value(v) for k, v in row.items()}
        records.append((i, {k: v for k, v in cells.items() if v is not None}))
    return columns, records


__all__ = ["FORMATS", "ProductFeed", "is_feed", "sha256_of"]
