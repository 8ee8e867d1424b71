"""The catalogue's store: ids <-> rows, vectors, typed metadata columns, tombstones.

A store is append-only between compactions. Adding appends rows to growable
buffers (amortised O(1), never a copy of the whole catalogue); removing sets
a tombstone; :meth:`Store.compact` rewrites the live rows densely. Metadata
lives in typed columns (strings dictionary-encoded, numbers and booleans in
numpy arrays) so a filter is one vectorised pass (:func:`Store.mask`).

The store itself is not locked: :class:`visualsim.catalog.Catalog` (and so
:class:`~visualsim.Recommender`) holds one read/write lock around it.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from .duplicates import FINGERPRINT_BYTES
from .errors import ConfigError, DuplicateIdError, UnknownIdError
from .filters import And, Compare, Expr, FilterError, InList, Not, Or
from .ids import Id, preview

KINDS = ("bool", "int", "float", "str", "json")
"""Column kinds: what a metadata field holds. ``json`` is anything else (lists, mixed)."""

_INT64 = (-(2**63), 2**63 - 1)

_DENSE: dict[str, tuple[Any, Any]] = {
    "str": (np.int32, -1),
    "int": (np.int64, 0),
    "float": (np.float64, 0.0),
    "bool": (np.bool_, False),
}
"""Dense buffer dtype and fill of each typed kind (``json`` keeps Python objects)."""


class _Grow:
    """A numpy buffer that grows by doubling: appends are amortised O(1)."""

    def __init__(self, dtype: Any, width: int | None = None, fill: Any = 0) -> None:
        shape = (0,) if width is None else (0, width)
        self._buf = np.empty(shape, dtype=dtype)
        self._fill = fill
        self.n = 0

    @property
    def view(self) -> np.ndarray:
        """The filled part (a view: valid until the next append)."""
        return self._buf[: self.n]

    def reserve(self, extra: int) -> None:
        need = self.n + extra
        if need > len(self._buf):
            cap = max(need + need // 8, 2 * len(self._buf), 16)
            new = np.empty((cap, *self._buf.shape[1:]), dtype=self._buf.dtype)
            new[: self.n] = self._buf[: self.n]  # spare rows stay unwritten until used
            self._buf = new

    def append(self, values: np.ndarray) -> None:
        self.reserve(len(values))
        self._buf[self.n : self.n + len(values)] = values
        self.n += len(values)

    def pad(self, extra: int) -> None:
        """Append ``extra`` fill values."""
        self.reserve(extra)
        self._buf[self.n : self.n + extra] = self._fill
        self.n += extra

    @classmethod
    def of(cls, array: np.ndarray, fill: Any = 0) -> _Grow:
        """Return a buffer holding a copy of ``array``, with room to grow by an eighth."""
        out = cls(array.dtype, None if array.ndim == 1 else array.shape[1], fill)
        n = len(array)
        out._buf = np.empty((n + max(n // 8, 1024), *array.shape[1:]), dtype=array.dtype)
        out._buf[:n] = array
        out.n = n
        return out


class _Zeros:
    """Rows that cost no memory while all are zero: a :class:`_Grow` from the first other row.

    The duplicate detector's fingerprints (1,216 bytes a row) are all zero for
    items added as vectors; a catalogue of them keeps a row count and reads
    as a read-only zero array, instead of a gigabyte of zeros per million rows.
    """

    def __init__(self, dtype: Any, width: int) -> None:
        self._dtype = np.dtype(dtype)
        self._width = int(width)
        self._grow: _Grow | None = None
        self._n = 0

    @property
    def n(self) -> int:
        return self._grow.n if self._grow is not None else self._n

    @n.setter
    def n(self, value: int) -> None:
        if self._grow is not None:
            self._grow.n = value
        else:
            self._n = value

    @property
    def view(self) -> np.ndarray:
        """The filled part: a view, or a read-only zero array while every row is zero."""
        if self._grow is not None:
            return self._grow.view
        zero = np.zeros((1, self._width), dtype=self._dtype)
        return np.broadcast_to(zero, (self._n, self._width))

    @property
    def materialized(self) -> bool:
        """Whether a row other than zero was ever appended (the rows have memory)."""
        return self._grow is not None

    def pad(self, extra: int) -> None:
        """Append ``extra`` zero rows."""
        if self._grow is not None:
            self._grow.pad(extra)
        else:
            self._n += extra

    def append(self, values: np.ndarray) -> None:
        values = np.asarray(values, dtype=self._dtype)
        if self._grow is None:
            if not values.any():
                self._n += len(values)
                return
            self._grow = _Grow(self._dtype, self._width)
            self._grow.pad(self._n)
        self._grow.append(values)

    @classmethod
    def of(cls, array: np.ndarray) -> _Zeros:
        """Rows holding a copy of ``array`` (none at all when it is all zero)."""
        out = cls(array.dtype, array.shape[1])
        if array.any():
            out._grow = _Grow.of(array)
        else:
            out._n = len(array)
        return out


# --------------------------------------------------------------------------- columns


def check_storage(storage: Any) -> None:
    """Refuse a ``storage`` dtype other than ``float32`` and ``float16`` (``ConfigError``)."""
    from .reduction import STORAGE_DTYPES

    if storage not in STORAGE_DTYPES:
        raise ConfigError(f"storage must be one of {STORAGE_DTYPES}, got {storage!r}")


def kind_of(value: Any) -> str | None:
    """Return the column kind of one metadata value (``None`` for a missing value)."""
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)):
        return "bool"
    if isinstance(value, (int, np.integer)):
        return "int" if _INT64[0] <= int(value) <= _INT64[1] else "json"
    if isinstance(value, (float, np.floating)):
        return None if math.isnan(float(value)) else "float"
    if isinstance(value, str):
        return "str"
    return "json"


def _clean(field: str, value: Any) -> Any:
    """Return ``value`` as a plain JSON-safe Python value (NaN -> None)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        if math.isnan(value):
            return None
        raise ConfigError(f"metadata field {field!r} is {value}: only finite numbers are stored")
    if isinstance(value, (str, bool, int, float)) or value is None:
        return value
    try:
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"metadata field {field!r} holds {type(value).__name__}, which is not JSON-safe "
            f"({exc}); store strings, numbers, booleans, or lists/dicts of them"
        ) from None
    return json.loads(text)


_MISSING = object()


class _Snapshot:
    """A read-only dense copy standing where a :class:`_Grow` is read (``.view``)."""

    def __init__(self, array: np.ndarray) -> None:
        array.flags.writeable = False
        self.view = array
        self.n = len(array)


class Column:
    """One metadata field over every row: typed values and which rows have one.

    A column is *sparse* (a dict row -> value) while few rows have a value, so a
    key that one item of many has costs memory for that item only; it becomes
    *dense* (numpy buffers over every row) once more than :attr:`DENSE_FILL` of
    the rows have one. Both answer the same reads; :meth:`Store.compacted`
    chooses again from the live values.
    """

    DENSE_FILL = 1 / 16
    """A sparse column holding values on more than this share of its rows becomes dense."""

    def __init__(self, kind: str, n: int = 0) -> None:
        if kind not in KINDS:
            raise ConfigError(f"column kind must be one of {KINDS}, got {kind!r}")
        self.kind = kind
        self.categories: list[str] = []
        self._code: dict[str, int] = {}
        self._kinds: dict[str, int] = {}  # json: how many present values of each kind
        self.count = 0  # rows with a value
        self._n = int(n)
        self._sparse: dict[int, Any] | None = {}
        self._present = _Grow(np.bool_, fill=False)
        self._values = _Grow(np.int8)
        self._objects: list[Any] = []

    def __len__(self) -> int:
        return self._n

    @classmethod
    def from_arrays(
        cls,
        kind: str,
        present: np.ndarray,
        values: np.ndarray,
        categories: Sequence[str] = (),
    ) -> Column:
        """A column over ``len(present)`` rows holding ``values`` where ``present``.

        For ``kind="str"`` the values are codes into ``categories``. The column
        is sparse or dense by the same rule as one filled value by value.
        """
        if kind not in _DENSE:
            raise ConfigError(f"a column from arrays must be one of {tuple(_DENSE)}, got {kind!r}")
        present = np.asarray(present, dtype=bool)
        n = len(present)
        out = cls(kind, n)
        if kind == "str":
            out.categories = list(categories)
            out._code = {c: i for i, c in enumerate(out.categories)}
        dtype, fill = _DENSE[kind]
        rows = np.flatnonzero(present)
        out.count = len(rows)
        vals = np.asarray(values).astype(dtype, copy=False)
        if out.count <= n * cls.DENSE_FILL:
            out._sparse = dict(zip(rows.tolist(), vals[rows].tolist(), strict=True))
            return out
        dense = np.where(present, vals, np.asarray(fill, dtype=dtype))
        out._sparse = None
        out._present = _Grow.of(present, fill=False)
        out._values = _Grow.of(dense, fill=fill)
        return out

    # ------------------------------------------------------------- representation
    @property
    def sparse(self) -> bool:
        """Whether the values live in a dict row -> value (few rows have one)."""
        return self._sparse is not None

    @property
    def nbytes(self) -> int:
        """Bytes this column holds for its rows (buffers, or the sparse dict's table)."""
        if self._sparse is not None:
            return sys.getsizeof(self._sparse)
        out = self._present._buf.nbytes
        if self.kind == "json":
            return out + 8 * len(self._objects)
        return out + self._values._buf.nbytes

    def _densify(self) -> None:
        entries, self._sparse = self._sparse, None
        n = self._n
        self._present = _Grow(np.bool_, fill=False)
        self._present.pad(n)
        if self.kind == "json":
            self._objects = [None] * n
            for row, value in (entries or {}).items():
                self._objects[row] = value
        else:
            dtype, fill = _DENSE[self.kind]
            self._values = _Grow(dtype, fill=fill)
            self._values.pad(n)
            if entries:
                rows = np.fromiter(entries.keys(), np.int64, len(entries))
                self._values.view[rows] = np.asarray(list(entries.values()), dtype=dtype)
        if entries:
            self._present.view[np.fromiter(entries.keys(), np.int64, len(entries))] = True

    @property
    def present(self) -> Any:
        """Which rows have a value: ``.view`` is a bool array over every row."""
        if self._sparse is None:
            return self._present
        return _Snapshot(self.present_mask())

    @property
    def values(self) -> Any:
        """The encoded values: ``.view`` over every row (string codes, numbers, booleans)."""
        if self._sparse is None:
            return self._values
        dtype, fill = _DENSE.get(self.kind, (np.int8, 0))
        out = np.full(self._n if self.kind != "json" else 0, fill, dtype=dtype)
        if self.kind != "json" and self._sparse:
            rows, vals = self.entries()
            out[rows] = vals
        return _Snapshot(out)

    def present_mask(self) -> np.ndarray:
        """A bool array over every row: which have a value (a view when dense)."""
        if self._sparse is None:
            return self._present.view
        out = np.zeros(self._n, dtype=bool)
        out[np.fromiter(self._sparse.keys(), np.int64, len(self._sparse))] = True
        return out

    def entries(self) -> tuple[np.ndarray, Any]:
        """``(rows, values)`` of the rows that have a value: encoded values (a list for json)."""
        if self._sparse is None:
            rows = np.flatnonzero(self._present.view)
            if self.kind == "json":
                return rows, [self._objects[r] for r in rows.tolist()]
            return rows, self._values.view[rows]
        rows = np.fromiter(self._sparse.keys(), np.int64, len(self._sparse))
        vals = list(self._sparse.values())
        if self.kind == "json":
            return rows, vals
        return rows, np.asarray(vals, dtype=_DENSE[self.kind][0])

    def any_live(self, alive: np.ndarray) -> bool:
        """Whether a row marked in ``alive`` has a value."""
        if self._sparse is None:
            return bool((self._present.view & alive).any())
        return any(alive[r] for r in self._sparse)

    # ------------------------------------------------------------- rows
    def pad(self, extra: int) -> None:
        """Append ``extra`` rows without a value."""
        self._n += extra
        if self._sparse is None:
            self._present.pad(extra)
            if self.kind == "json":
                self._objects.extend([None] * extra)
            else:
                self._values.pad(extra)

    def truncate(self, n: int) -> None:
        """Drop the rows from ``n`` on."""
        if n >= self._n:
            return
        if self._sparse is not None:
            for row in [r for r in self._sparse if r >= n]:
                self._forget(self._sparse.pop(row))
        else:
            for row in (np.flatnonzero(self._present.view[n:]) + n).tolist():
                self._forget(self._objects[row] if self.kind == "json" else None)
            self._present.n = n
            if self.kind == "json":
                del self._objects[n:]
            else:
                self._values.n = n
        self._n = n

    def _note(self, value: Any) -> None:
        self.count += 1
        if self.kind == "json":
            k = kind_of(value) or "json"
            self._kinds[k] = self._kinds.get(k, 0) + 1

    def _forget(self, value: Any) -> None:
        self.count -= 1
        if self.kind == "json":
            k = kind_of(value) or "json"
            self._kinds[k] -= 1

    def narrowest(self) -> str:
        """The kind the values held now need (``json`` for none, mixed or nested)."""
        if self.kind != "json":
            return self.kind
        return _common_kind({k for k, c in self._kinds.items() if c})

    def _encode(self, value: Any) -> Any:
        if self.kind == "str":
            code = self._code.get(value)
            if code is None:
                code = self._code[value] = len(self.categories)
                self.categories.append(value)
            return code
        if self.kind == "float":
            return float(value)
        return value

    def _decode(self, raw: Any) -> Any:
        if self.kind == "str":
            return self.categories[int(raw)]
        return raw.item() if isinstance(raw, np.generic) else raw

    def append(self, values: Sequence[Any]) -> None:
        """Append one value per new row (``None`` = missing); values fit the kind."""
        start = self._n
        self.pad(len(values))
        self.set_many([(start + i, v) for i, v in enumerate(values) if v is not None])

    def set_many(self, pairs: Sequence[tuple[int, Any]]) -> None:
        """Set ``(row, value)`` pairs (distinct rows; ``None`` = missing)."""
        if not pairs:
            return
        if self._sparse is not None and self.count + len(pairs) > self._n * self.DENSE_FILL:
            self._densify()
        if self._sparse is not None or self.kind == "json":
            for row, value in pairs:
                self.set(row, value)
            return
        rows = np.fromiter((r for r, _ in pairs), np.int64, len(pairs))
        have = np.fromiter((v is not None for _, v in pairs), bool, len(pairs))
        self.count += int(have.sum()) - int(self._present.view[rows].sum())
        self._present.view[rows] = have
        if have.any():
            encoded = [self._encode(v) for _, v in pairs if v is not None]
            self._values.view[rows[have]] = np.asarray(encoded, dtype=self._values.view.dtype)

    def set(self, row: int, value: Any) -> None:
        """Replace one row's value (``None`` = missing)."""
        if self._sparse is not None:
            old = self._sparse.pop(row, _MISSING)
            if old is not _MISSING:
                self._forget(old)
            if value is not None:
                self._sparse[row] = self._encode(value)
                self._note(value)
                if self.count > self._n * self.DENSE_FILL:
                    self._densify()
            return
        if self._present.view[row]:
            self._forget(self._objects[row] if self.kind == "json" else None)
        self._present.view[row] = value is not None
        if value is not None:
            self._note(value)
            if self.kind == "json":
                self._objects[row] = value
            else:
                self._values.view[row] = self._encode(value)
        elif self.kind == "json":
            self._objects[row] = None

    def is_present(self, row: int) -> bool:
        """Whether ``row`` has a value."""
        if self._sparse is not None:
            return row in self._sparse
        return bool(self._present.view[row])

    def get(self, row: int) -> Any:
        """Return one row's value as a plain Python value (``None`` if missing)."""
        if self._sparse is not None:
            raw = self._sparse.get(row, _MISSING)
            return None if raw is _MISSING else self._decode(raw)
        if not self._present.view[row]:
            return None
        if self.kind == "json":
            return self._objects[row]
        return self._decode(self._values.view[row])

    def accepts(self, kind: str) -> bool:
        return kind == self.kind or (self.kind == "float" and kind == "int")

    def widened(self, kind: str) -> Column:
        """Return a copy able to hold values of ``kind`` as well (int -> float, else json)."""
        target = "float" if {self.kind, kind} == {"int", "float"} else "json"
        return self.retyped(target)

    def retyped(self, kind: str) -> Column:
        """Return a copy of kind ``kind`` (the values must fit it)."""
        rows, vals = self.entries()
        out = Column(kind, self._n)
        out.set_many(list(zip(rows.tolist(), self._decoded(vals), strict=True)))
        return out

    def _decoded(self, vals: Any) -> list[Any]:
        if self.kind == "json":
            return list(vals)
        if self.kind == "str":
            cats = self.categories
            return [cats[c] for c in vals.tolist()]
        return vals.tolist()

    def take(self, rows: np.ndarray, *, retype: bool = False) -> Column:
        """Return a new column of the given rows (increasing), in order.

        With ``retype`` a ``json`` column takes the narrowest kind its kept values need.
        """
        rows = np.asarray(rows, dtype=np.int64)
        held, vals = self.entries()
        at = np.searchsorted(rows, held)
        inside = at < len(rows)
        kept = np.zeros(len(held), dtype=bool)
        kept[inside] = rows[at[inside]] == held[inside]
        values = self._decoded(vals)
        pairs = [
            (int(a), values[i])
            for i, a in zip(np.flatnonzero(kept).tolist(), at[kept].tolist(), strict=True)
        ]
        kind = self.kind
        if retype and kind == "json":
            kind = _common_kind({k for _, v in pairs if (k := kind_of(v)) is not None})
        out = Column(kind, len(rows))
        out.set_many(pairs)
        return out


# --------------------------------------------------------------------------- the store


class Store:
    """Rows of ``(id, vector, metadata, source)`` with tombstones.

    Parameters
    ----------
    dim
        Vector length.
    dtype
        Storage dtype of the vectors: ``float32`` or ``float16``.
    """

    def __init__(self, dim: int, dtype: str = "float32") -> None:
        self.dim = int(dim)
        self.dtype = np.dtype(dtype)
        self.vectors = _Grow(self.dtype, self.dim)
        self.alive = _Grow(np.bool_, fill=False)
        self.ids: list[Id] = []  # row -> id (kept for dead rows too)
        self.rows: dict[Id, int] = {}  # live id -> row
        self.columns: dict[str, Column] = {}
        self.declared: dict[str, str] = {}
        self.sources: list[str | None] = []
        self.hashes: list[str | None] = []
        # duplicate-detector fingerprints (visualsim.duplicates); ``printed`` marks the rows
        # that have one (items added as vectors, or from an older catalogue, have none)
        self.fingerprints = _Zeros(np.uint8, FINGERPRINT_BYTES)
        self.printed = _Grow(np.bool_, fill=False)
        self.n_dead = 0
        self._copies_scan: tuple[int, int, int, bool] | None = None

    # ----------------------------------------------------------------- sizes
    @property
    def n_rows(self) -> int:
        """Rows ever appended since the last compaction (dead ones included)."""
        return self.vectors.n

    def __len__(self) -> int:
        return len(self.rows)

    def __contains__(self, item_id: object) -> bool:
        try:
            return item_id in self.rows
        except TypeError:
            return False

    def row_of(self, item_id: Id) -> int:
        """Return the live row of ``item_id``."""
        try:
            return self.rows[item_id]
        except (KeyError, TypeError):
            raise UnknownIdError(f"id {item_id!r} is not in the catalogue") from None

    def live_rows(self) -> np.ndarray:
        """Rows of the live items, in insertion order."""
        return np.flatnonzero(self.alive.view)

    def live_ids(self) -> list[Id]:
        """Ids of the live items, in insertion order."""
        ids = self.ids
        return [ids[r] for r in self.live_rows().tolist()]

    # ----------------------------------------------------------------- fields
    @property
    def fields(self) -> dict[str, str]:
        """Metadata field -> kind, for fields at least one live item has."""
        alive = self.alive.view
        return {name: col.kind for name, col in sorted(self.columns.items()) if col.any_live(alive)}

    def _has_field(self, name: str) -> bool:
        col = self.columns.get(name)
        return col is not None and col.any_live(self.alive.view)

    @property
    def metadata_nbytes(self) -> int:
        """Bytes the metadata columns hold for their rows (see :attr:`Column.nbytes`)."""
        return sum(col.nbytes for col in self.columns.values())

    def retype(self) -> None:
        """Give each ``json`` column the narrowest kind its values need (not declared json)."""
        for name, col in list(self.columns.items()):
            self._narrow(name, col)

    def _narrow(self, name: str, col: Column) -> None:
        if col.kind == "json" and self.declared.get(name) != "json":
            kind = col.narrowest()
            if kind != "json":
                self.columns[name] = col.retyped(kind)

    def declare(self, dtypes: Mapping[str, str]) -> None:
        """Fix the kind of some fields (``"str"``, ``"int"``, ``"float"``, ``"bool"``)."""
        for name, kind in dtypes.items():
            if kind not in KINDS:
                raise ConfigError(f"dtype of field {name!r} must be one of {KINDS}, got {kind!r}")
            col = self.columns.get(name)
            if col is not None and col.kind != kind:
                raise ConfigError(
                    f"field {name!r} already holds {col.kind} values; cannot declare it {kind}"
                )
            self.declared[name] = kind

    def _coerce(self, name: str, value: Any) -> Any:
        kind = self.declared.get(name)
        value = _clean(name, value)
        if kind is None or value is None or kind == "json":
            return value
        try:
            return _convert(kind, value)
        except (TypeError, ValueError) as exc:
            raise ConfigError(
                f"metadata field {name!r} is declared {kind} but got {value!r} ({exc})"
            ) from None

    def clean_metadata(self, metadata: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Return the metadata as stored (declared kinds applied), or raise ``ConfigError``.

        Changes nothing, so a caller can check new rows before touching old ones.
        """
        out = []
        for meta in metadata:
            for name in meta:
                if not isinstance(name, str):
                    raise ConfigError(f"metadata keys must be strings, got {name!r}")
            out.append({k: self._coerce(k, v) for k, v in meta.items()})
        return out

    def typed_arrays(
        self, start: int, stop: int
    ) -> tuple[list[dict[str, Any]], np.ndarray, np.ndarray, np.ndarray]:
        """The dense typed columns of rows ``[start, stop)`` as arrays, to save them as such.

        Returns ``(fields, present, ints, floats)``: ``fields`` lists
        ``{"name", "kind", "column"}`` (plus ``"categories"`` for ``str``: the
        values its codes name) in the order of ``present``'s columns; ``column``
        is the field's column in ``ints`` (int, bool, str codes; ``int64``) or
        ``floats`` (``float64``). Sparse and ``json`` columns are left out: their
        values go row by row (:meth:`metadata` with ``only``).
        """
        n = stop - start
        fields: list[dict[str, Any]] = []
        present_cols: list[np.ndarray] = []
        int_cols: list[np.ndarray] = []
        float_cols: list[np.ndarray] = []
        for name, col in self.columns.items():
            if col.sparse or col.kind == "json":
                continue
            present = col.present.view[start:stop]
            values = col.values.view[start:stop]
            entry: dict[str, Any] = {"name": name, "kind": col.kind}
            if col.kind == "float":
                entry["column"] = len(float_cols)
                float_cols.append(np.where(present, values, 0.0).astype(np.float64))
            else:
                if col.kind == "str":
                    used, local = np.unique(values[present], return_inverse=True)
                    codes = np.zeros(n, dtype=np.int64)
                    codes[present] = local
                    entry["categories"] = [col.categories[int(c)] for c in used]
                    values = codes
                entry["column"] = len(int_cols)
                int_cols.append(np.where(present, values, 0).astype(np.int64))
            fields.append(entry)
            present_cols.append(np.asarray(present, dtype=bool))

        def stack(cols: list[np.ndarray], dtype: Any) -> np.ndarray:
            return np.stack(cols, axis=1) if cols else np.zeros((n, 0), dtype=dtype)

        return (
            fields,
            stack(present_cols, np.bool_),
            stack(int_cols, np.int64),
            stack(float_cols, np.float64),
        )

    def _set_column_values(self, start: int, metas: Sequence[Mapping[str, Any]]) -> None:
        """Fill the columns for rows ``start..start+len(metas)`` (already padded)."""
        by_field: dict[str, list[tuple[int, Any]]] = {}
        for offset, meta in enumerate(metas):
            for name, value in meta.items():
                if not isinstance(name, str):
                    raise ConfigError(f"metadata keys must be strings, got {name!r}")
                by_field.setdefault(name, []).append((start + offset, self._coerce(name, value)))
        for name, pairs in by_field.items():
            kinds = {k for _, v in pairs if (k := kind_of(v)) is not None}
            col = self.columns.get(name)
            if col is None:
                kind = self.declared.get(name) or _common_kind(kinds)
                col = self.columns[name] = Column(kind, self.n_rows)
            for kind in kinds:
                if not col.accepts(kind):
                    col = self.columns[name] = col.widened(kind)
            col.set_many(pairs)
            self._narrow(name, col)

    # ----------------------------------------------------------------- mutation
    def append(
        self,
        vectors: np.ndarray,
        ids: Sequence[Id],
        metadata: Sequence[Mapping[str, Any]],
        sources: Sequence[str | None] | None = None,
        hashes: Sequence[str | None] | None = None,
        fingerprints: np.ndarray | None = None,
        printed: np.ndarray | None = None,
    ) -> np.ndarray:
        """Append new items (ids not yet live) and return their rows.

        Metadata is validated before anything changes, so a bad value leaves
        the store as it was. ``fingerprints`` (``(n, FINGERPRINT_BYTES)``
        ``uint8``) and ``printed`` (which of them are real) are the duplicate
        detector's; without them the rows have none.
        """
        n = len(ids)
        clash = [i for i in ids if i in self.rows]
        if clash or len(set(ids)) != n:
            repeated = clash or [i for i in ids if list(ids).count(i) > 1]
            raise DuplicateIdError(
                f"id(s) {preview(repeated)} are already in the catalogue (or repeated); "
                "use upsert() to replace an item"
            )
        cleaned = self.clean_metadata(metadata)
        start = self.n_rows
        self.vectors.append(np.asarray(vectors, dtype=self.dtype))
        self.alive.append(np.ones(n, dtype=bool))
        for col in self.columns.values():
            col.pad(n)
        try:
            self._set_column_values(start, cleaned)
        except BaseException:
            self._truncate(start)
            raise
        self.ids.extend(ids)
        for offset, item_id in enumerate(ids):
            self.rows[item_id] = start + offset
        self.sources.extend(sources if sources is not None else [None] * n)
        self.hashes.extend(hashes if hashes is not None else [None] * n)
        if fingerprints is None:
            self.fingerprints.pad(n)
            self.printed.pad(n)
        else:
            self.fingerprints.append(np.asarray(fingerprints, dtype=np.uint8))
            self.printed.append(
                np.ones(n, dtype=bool) if printed is None else np.asarray(printed, dtype=bool)
            )
        return np.arange(start, start + n, dtype=np.int64)

    def _truncate(self, n: int) -> None:
        self.vectors.n = min(self.vectors.n, n)
        self.alive.n = min(self.alive.n, n)
        self.fingerprints.n = min(self.fingerprints.n, n)
        self.printed.n = min(self.printed.n, n)
        for col in self.columns.values():
            col.truncate(n)

    def kill(self, ids: Iterable[Id]) -> np.ndarray:
        """Tombstone live items and return their rows (all ids must be live)."""
        wanted = list(dict.fromkeys(ids))
        missing = [i for i in wanted if i not in self]
        if missing:
            raise UnknownIdError(
                f"id(s) {preview(missing)} are not in the catalogue; nothing was removed"
            )
        rows = np.fromiter((self.rows.pop(i) for i in wanted), np.int64, len(wanted))
        self.alive.view[rows] = False
        self.n_dead += len(rows)
        return rows

    def update_metadata(self, item_id: Id, fields: Mapping[str, Any], *, replace: bool) -> int:
        """Change one item's metadata; return its row."""
        row = self.row_of(item_id)
        new = dict(fields) if replace else {**self.metadata(row), **fields}
        cleaned = {k: self._coerce(k, v) for k, v in new.items()}
        for name, col in self.columns.items():
            if name not in cleaned and col.is_present(row):
                col.set(row, None)
        self._set_column_values(row, [cleaned])
        return row

    # ----------------------------------------------------------------- reading
    def may_hold_copies(self) -> bool:
        """Whether any row has a fingerprint or an image hash (what tells copies apart).

        Without either, one-per-photo results are the plain ranking. Only rows
        added since the last call are scanned (rows change only by being added).
        """
        n = len(self.hashes)
        scan = self._copies_scan  # (the hashes list, the printed buffer, rows scanned, found)
        if scan is None or scan[0] != id(self.hashes) or scan[1] != id(self.printed) or scan[2] > n:
            scan = (id(self.hashes), id(self.printed), 0, False)
        if not scan[3] and scan[2] < n:  # rows are only appended: scan the new ones
            lo = scan[2]
            found = bool(self.printed.view[lo:n].any()) or any(
                h is not None for h in self.hashes[lo:n]
            )
            scan = (scan[0], scan[1], n, found)
        self._copies_scan = scan
        return scan[3]

    def metadata_rows(self, rows: Sequence[int]) -> list[dict[str, Any]]:
        """Each row's metadata as a fresh plain dict: :meth:`metadata` a column at a time."""
        out: list[dict[str, Any]] = [{} for _ in rows]
        if not len(rows):
            return out
        at = np.asarray(rows, dtype=np.int64)
        for name, col in self.columns.items():
            if col.sparse or col.kind == "json":
                for d, r in zip(out, at.tolist(), strict=True):
                    value = col.get(r)
                    if value is not None:
                        d[name] = value
                continue
            present = col.present.view[at].tolist()
            raw = col.values.view[at].tolist()
            if col.kind == "str":
                cats = col.categories
                raw = [cats[c] if p else None for c, p in zip(raw, present, strict=True)]
            for d, p, value in zip(out, present, raw, strict=True):
                if p:
                    d[name] = value
        return out

    def metadata(self, row: int, only: Iterable[str] | None = None) -> dict[str, Any]:
        """Return one row's metadata as a fresh plain dict (of the fields ``only``, if given)."""
        out: dict[str, Any] = {}
        columns = self.columns
        pairs = columns.items() if only is None else ((n, columns[n]) for n in only)
        for name, col in pairs:
            value = col.get(row)
            if value is not None:
                out[name] = value
        return out

    def vector(self, item_id: Id, *, unit: bool = False) -> np.ndarray:
        """Return one live item's vector as a float32 ``(dim,)`` copy (unit length if ``unit``)."""
        row = self.row_of(item_id)
        out = np.array(self.vectors_f32(slice(row, row + 1))[0], dtype=np.float32)
        norm = float(np.linalg.norm(out)) if unit else 0.0
        return out / norm if norm else out

    def live_vectors(self) -> np.ndarray:
        """Return the live rows' vectors as read-only float32 (no copy when it can)."""
        if not self.n_dead and self.dtype == np.float32:
            out = self.vectors.view.view()  # no copy (a memory map stays one)
        else:
            out = np.array(self.vectors_f32(self.live_rows()), dtype=np.float32)
        out.flags.writeable = False
        return out

    def vectors_f32(self, rows: Any = slice(None)) -> np.ndarray:
        """Return stored vectors as float32 (a copy for float16 storage or fancy rows)."""
        part = self.vectors.view[rows]
        return part if part.dtype == np.float32 else part.astype(np.float32)

    # ----------------------------------------------------------------- filters
    def mask(self, expr: Expr) -> np.ndarray:
        """Return a boolean row mask of the rows matching ``expr`` (dead rows included).

        Raises
        ------
        FilterError
            A field no live item has, or a comparison that does not fit the
            field's kind (a string field compared with a number).
        """
        for name in sorted(expr.fields()):
            if not self._has_field(name):
                fields = self.fields
                near = ", ".join(fields) or "(none: the items have no metadata)"
                raise FilterError(f"no item has a field {name!r}; fields present: {near}")
        return self._mask(expr)

    def _mask(self, expr: Expr) -> np.ndarray:
        if isinstance(expr, And):
            out = self._mask(expr.items[0])
            for item in expr.items[1:]:
                out &= self._mask(item)
            return out
        if isinstance(expr, Or):
            out = self._mask(expr.items[0])
            for item in expr.items[1:]:
                out |= self._mask(item)
            return out
        if isinstance(expr, Not):
            return ~self._mask(expr.item)
        if isinstance(expr, InList):
            col = self.columns[expr.field]
            out = np.zeros(self.n_rows, dtype=bool)
            for value in expr.values:
                out |= _compare(expr.field, col, "==", value)
            return ~out & col.present_mask() if expr.negate else out
        assert isinstance(expr, Compare)
        return _compare(expr.field, self.columns[expr.field], expr.op, expr.value)

    def value_counts(
        self, field: str, prefix: str = "", limit: int | None = None
    ) -> list[tuple[str, int]]:
        """Return a text field's values on live items, with how many items have each.

        Values starting with ``prefix`` (case-insensitive) come first, then the
        other values containing it; most frequent first within each, then
        alphabetical. A field that is not text gives ``[]``; one no live item
        has is a ``FilterError`` naming the fields present.
        """
        if not self._has_field(field):
            fields = self.fields
            known = ", ".join(fields) or "none"
            raise FilterError(f"no item has a field {field!r}; fields present: {known}")
        col = self.columns.get(field)
        if col is None or col.kind != "str" or not col.categories:
            return []
        rows, codes = col.entries()
        counts = np.bincount(codes[self.alive.view[rows]], minlength=len(col.categories))
        folded = prefix.casefold()
        starts: list[tuple[int, str]] = []
        inside: list[tuple[int, str]] = []
        for code, value in enumerate(col.categories):
            n = int(counts[code])
            if n == 0:
                continue
            low = value.casefold()
            if low.startswith(folded):
                starts.append((-n, value))
            elif folded and folded in low:
                inside.append((-n, value))
        ranked = sorted(starts) + sorted(inside)
        if limit is not None:
            ranked = ranked[:limit]
        return [(value, -neg) for neg, value in ranked]

    def value_hints(self, expr: Expr) -> list[str]:
        """Say which text values in ``expr`` no item has, and what was likely meant.

        For ``category == 'casual shoes'`` when the items say ``'Casual Shoes'``:
        ``["no item has category == 'casual shoes'; did you mean 'Casual Shoes'?"]``.
        The same text in another case comes first, then close spellings
        (:func:`difflib.get_close_matches`, case-insensitive). Values an item has
        give no hint; neither do numbers, booleans or fields that are not text.
        """
        import difflib

        hints: list[str] = []
        for field, value in _text_values(expr):
            col = self.columns.get(field)
            if col is None or col.kind != "str" or value in col._code:
                continue
            folded: dict[str, list[str]] = {}
            for known in col.categories:
                folded.setdefault(known.casefold(), []).append(known)
            near = list(folded.get(value.casefold(), []))
            if not near:
                for match in difflib.get_close_matches(value.casefold(), list(folded), n=3):
                    near.extend(folded[match])
            text = f"no item has {field} == {value!r}"
            if near:
                text += "; did you mean " + " or ".join(repr(v) for v in near[:3]) + "?"
            if text not in hints:
                hints.append(text)
        return hints

    # ----------------------------------------------------------------- compaction
    def compacted(self) -> tuple[Store, np.ndarray]:
        """Return a dense copy holding only the live rows, and the old rows it kept."""
        keep = self.live_rows()
        out = Store(self.dim, self.dtype.name)
        out.declared = dict(self.declared)
        out.vectors = _Grow.of(self.vectors.view[keep])
        out.alive = _Grow.of(np.ones(len(keep), dtype=bool), fill=False)
        out.ids = [self.ids[r] for r in keep.tolist()]
        out.rows = {i: r for r, i in enumerate(out.ids)}
        out.sources = [self.sources[r] for r in keep.tolist()]
        out.hashes = [self.hashes[r] for r in keep.tolist()]
        out.fingerprints = (
            _Zeros.of(self.fingerprints.view[keep])
            if self.fingerprints.materialized
            else _Zeros.of(np.zeros((len(keep), FINGERPRINT_BYTES), np.uint8))
        )
        out.printed = _Grow.of(self.printed.view[keep], fill=False)
        for name, col in self.columns.items():
            taken = col.take(keep, retype=self.declared.get(name) != "json")
            if taken.count:
                out.columns[name] = taken
        return out, keep

    def iter_metadata(self, rows: Iterable[int]) -> Iterator[dict[str, Any]]:
        """Yield each row's metadata dict."""
        for r in rows:
            yield self.metadata(int(r))


def _text_values(expr: Expr) -> Iterator[tuple[str, str]]:
    """``(field, text)`` for every text a filter compares a field to (== / != / in)."""
    if isinstance(expr, Compare):
        if expr.op in ("==", "!=") and isinstance(expr.value, str):
            yield expr.field, expr.value
    elif isinstance(expr, InList):
        for value in expr.values:
            if isinstance(value, str):
                yield expr.field, value
    elif isinstance(expr, (And, Or)):
        for item in expr.items:
            yield from _text_values(item)
    elif isinstance(expr, Not):
        yield from _text_values(expr.item)


def _convert(kind: str, value: Any) -> Any:
    """Convert a clean value to a declared kind, or raise ValueError."""
    if kind == "str":
        return (
            value
            if isinstance(value, str)
            else json.dumps(value)
            if not isinstance(value, (int, float))
            else str(value)
        )
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise ValueError("not a boolean")
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError("not a number")
    number = float(value) if kind == "float" else value
    if kind == "int":
        if isinstance(value, str):
            number = int(value.strip())
        elif isinstance(value, float):
            if not value.is_integer():
                raise ValueError("not a whole number")
            number = int(value)
    elif not math.isfinite(float(number)):
        raise ValueError("not finite")
    return number


_TRUE = {"true", "yes", "1"}
_FALSE = {"false", "no", "0"}


def _common_kind(kinds: set[str]) -> str:
    if not kinds:
        return "json"
    if len(kinds) == 1:
        return next(iter(kinds))
    if kinds == {"int", "float"}:
        return "float"
    return "json"


def _compare(field: str, col: Column, op: str, value: Any) -> np.ndarray:
    """The rows of ``col`` where ``value op value`` holds (a sparse column: over its entries)."""
    if not col.sparse:
        present = col.present_mask()
        held = col._objects if col.kind == "json" else col.values.view
        return _compare_held(field, col, op, value, present, held)
    rows, held = col.entries()
    out = np.zeros(len(col), dtype=bool)
    out[rows] = _compare_held(field, col, op, value, np.ones(len(rows), dtype=bool), held)
    return out


def _compare_held(
    field: str, col: Column, op: str, value: Any, present: np.ndarray, held: Any
) -> np.ndarray:
    kind = col.kind
    if kind == "json":
        if op not in ("==", "!="):
            raise FilterError(
                f"field {field!r} holds mixed or nested values; only == and != apply to it"
            )
        hits = np.fromiter(
            (p and _equal(v, value) for p, v in zip(present, held, strict=True)),
            bool,
            len(present),
        )
        return hits if op == "==" else present & ~hits
    value_kind = kind_of(value)
    if kind == "str":
        if value_kind != "str":
            raise FilterError(
                f"field {field!r} holds text; compare it with a quoted string, "
                f"e.g. {field} {op} '{value}', not {value!r}"
            )
        codes = held
        if op in ("==", "!="):
            code = col._code.get(value, -2)
            hits = codes == code
        else:
            cats = np.asarray(col.categories, dtype=object)
            truth = _OPS[op](cats, value) if len(cats) else np.zeros(0, bool)
            lookup = np.append(np.asarray(truth, dtype=bool), False)  # code -1 -> False
            hits = lookup[codes]
        return hits & present if op != "!=" else present & ~hits
    if kind == "bool":
        if value_kind != "bool":
            raise FilterError(
                f"field {field!r} holds true/false; compare it with true or false, not {value!r}"
            )
        if op not in ("==", "!="):
            raise FilterError(f"field {field!r} holds true/false; only == and != apply to it")
    elif value_kind not in ("int", "float"):
        raise FilterError(f"field {field!r} holds numbers; compare it with a number, not {value!r}")
    hits = np.asarray(_OPS[op](held, value), dtype=bool)
    return present & ~hits if op == "!=" else hits & present


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    return bool(a == b)


_OPS: dict[str, Any] = {
    "==": np.equal,
    "!=": np.equal,  # negated by the caller with the presence mask
    "<": np.less,
    "<=": np.less_equal,
    ">": np.greater,
    ">=": np.greater_equal,
}


__all__ = ["KINDS", "Column", "Store", "kind_of"]
