"""The Milvus compiler: a parsed filter as a Milvus boolean expression.

:class:`visualsim.indexes.milvus.MilvusIndex` filters inside Milvus; it hands
the tree the query parsed (:mod:`visualsim.filters.parse`) to
:func:`to_milvus_expr` and passes the text it returns to Milvus. The names a
collection reserves for itself and the rule for a Milvus field name live here
too, so the index and the compiler refuse the same names.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import FilterError
from ..ids import short_repr
from .parse import And, Compare, InList, Not, Or, to_expr

LABEL_FIELD = "vs_label"
"""Primary key field of a visualsim Milvus collection: the internal label (insertion order)."""
ID_FIELD = "vs_id"
"""The caller's id, JSON-encoded."""
VECTOR_FIELD = "vs_vector"
"""The unit vector."""
RESERVED_FIELDS = frozenset({LABEL_FIELD, ID_FIELD, VECTOR_FIELD})
"""Field names a collection keeps for itself: no metadata field and no filter may use them."""
FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")
"""A Milvus field (and collection, database) name: letters, digits and ``_``."""


def to_milvus_expr(expr: Any, fields: Mapping[str, str] | None = None) -> str:
    """Return the Milvus boolean expression equivalent to a visualsim filter.

    Every string value is written as a double-quoted Milvus literal with its
    quotes and backslashes escaped, so a value such as ``"x' or 1==1"`` stays
    one literal and never becomes part of the expression.

    Parameters
    ----------
    expr
        A parsed filter (:func:`visualsim.filters.parse_filter`'s ``Compare``,
        ``InList``, ``And``, ``Or``, ``Not``), filter text, or the dict form
        (``{"category": "shoes"}``), parsed first.
    fields
        The collection's metadata fields and their types (``"str"``,
        ``"int"``, ``"float"``, ``"bool"``). When given, a field not in it, or
        a value of the wrong type for its field, is refused here rather than
        by Milvus.

    Returns
    -------
    str
        A Milvus expression, e.g. ``'(category == "shoes") and (price < 50)'``.

    Raises
    ------
    FilterError
        The filter text does not parse, a field is unknown or not a valid
        Milvus field name, a value has the wrong type for its field, or the
        expression holds a node Milvus cannot express.

    Examples
    --------
    >>> to_milvus_expr("category == 'shoes' and price < 50")
    '(category == "shoes") and (price < 50)'
    """
    node = to_expr(expr) if isinstance(expr, (str, Mapping)) else expr
    return _translate(node, None if fields is None else dict(fields), guard=False)


def _translate(node: Any, fields: dict[str, str] | None, *, guard: bool) -> str:
    """Translate one node; ``guard`` (under a ``not``) makes a missing value a plain false.

    visualsim's rule is that an item lacking a field matches no comparison on
    it, so ``not`` makes it match. Milvus stores a missing value as null, and
    ``not (price < 50)`` is null (no match) there; ``price is not null and
    price < 50`` is false for a null price, so its ``not`` matches, as here.
    ``!=`` and ``not in`` are always guarded: Milvus Lite lets a null through
    ``cat not in ["a"]``, the filter language does not.
    """
    if isinstance(node, Compare):
        if node.op not in ("==", "!=", "<", "<=", ">", ">="):
            raise FilterError(f"filter operator {node.op!r} has no Milvus equivalent")
        kind = _field_kind(node.field, fields)
        if isinstance(node.value, bool) and node.op not in ("==", "!="):
            raise FilterError(
                f"filter compares the boolean {node.field!r} with {node.op!r}; "
                "use == or != with true/false"
            )
        text = f"{node.field} {node.op} {_literal(node.value, node.field, kind)}"
        return f"{node.field} is not null and {text}" if guard or node.op == "!=" else text
    if isinstance(node, InList):
        kind = _field_kind(node.field, fields)
        if not node.values:
            # `x in []` matches nothing, `x not in []` everything; say it with the key
            return f"{LABEL_FIELD} >= 0" if node.negate else f"{LABEL_FIELD} < 0"
        values = ", ".join(_literal(v, node.field, kind) for v in node.values)
        text = f"{node.field} {'not in' if node.negate else 'in'} [{values}]"
        return f"{node.field} is not null and {text}" if guard or node.negate else text
    if isinstance(node, (And, Or)):
        items = tuple(node.items)
        if not items:
            raise FilterError(f"an empty {type(node).__name__} has no Milvus equivalent")
        if len(items) == 1:
            return _translate(items[0], fields, guard=guard)
        word = " and " if isinstance(node, And) else " or "
        return word.join(f"({_translate(item, fields, guard=guard)})" for item in items)
    if isinstance(node, Not):
        return f"not ({_translate(node.item, fields, guard=True)})"
    raise FilterError(
        f"filter node {type(node).__name__} ({short_repr(node)}) has no Milvus equivalent; "
        "Milvus filters support ==, !=, <, <=, >, >=, in, not in, and, or, not"
    )


def _field_kind(field: Any, fields: dict[str, str] | None) -> str | None:
    if not isinstance(field, str) or not FIELD_NAME.match(field) or field in RESERVED_FIELDS:
        raise FilterError(
            f"filter field {short_repr(field)} is not a valid Milvus field name "
            "(letters, digits and _, not starting with a digit, not vs_label/vs_id/vs_vector)"
        )
    if fields is None:
        return None
    if field not in fields:
        known = ", ".join(sorted(fields)) or "none"
        raise FilterError(
            f"filter field {field!r} is not a metadata field of this Milvus collection "
            f"(fields: {known}); declare it in MilvusIndex(fields=...) before adding items"
        )
    if fields[field] == "json":
        raise FilterError(
            f"filter field {field!r} holds lists, dicts or mixed values, which the Milvus "
            "backend does not store; filter on a string, number or boolean field"
        )
    return fields[field]


def _literal(value: Any, field: str, kind: str | None) -> str:
    if isinstance(value, (bool, np.bool_)):
        if kind not in (None, "bool"):
            raise _wrong_type(field, value, kind)
        return "true" if value else "false"
    if isinstance(value, numbers.Integral):
        if kind not in (None, "int", "float"):
            raise _wrong_type(field, value, kind)
        return str(int(value))
    if isinstance(value, numbers.Real):
        if kind not in (None, "float", "int"):
            raise _wrong_type(field, value, kind)
        if not math.isfinite(float(value)):
            raise FilterError(f"filter value {value!r} for {field!r} is not a finite number")
        return repr(float(value))
    if isinstance(value, str):
        if kind not in (None, "str"):
            raise _wrong_type(field, value, kind)
        return _quote(value)
    raise FilterError(
        f"filter value {short_repr(value)} for {field!r} is a {type(value).__name__}; "
        "Milvus compares strings, integers, floats and booleans"
    )


def _wrong_type(field: str, value: Any, kind: str) -> FilterError:
    return FilterError(
        f"filter compares {field!r} (a {kind} field) with {short_repr(value)} "
        f"({type(value).__name__}); compare it with a {kind}"
    )


def _quote(text: str) -> str:
    """Return ``text`` as a double-quoted Milvus string literal (C escapes)."""
    out = (
        text.replace("\\", "\\\\")
        .replace('"', '\\"')
        .replace("\n", "\\n")
        .replace("\r", "\\r")
        .replace("\t", "\\t")
    )
    return f'"{out}"'


__all__ = [
    "FIELD_NAME",
    "ID_FIELD",
    "LABEL_FIELD",
    "RESERVED_FIELDS",
    "VECTOR_FIELD",
    "to_milvus_expr",
]
