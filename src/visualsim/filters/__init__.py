"""The filter language: ``where="category == 'shoes' and price < 50"``, in one place.

One language for Python, the command line and HTTP, with one owner for each
step of a filter's walk:

* :mod:`~visualsim.filters.parse`: text or a ``{field: value}`` dict to an
  expression tree (:func:`parse_filter`, :func:`from_mapping`,
  :func:`to_expr`): the one parser. A front end parses once and passes the
  tree down; :func:`to_expr` hands a tree back unchanged.
* :mod:`~visualsim.filters.plan`: the values a filter pins
  (:func:`implied_values`), which the search planner uses to pick partitions.
* :mod:`~visualsim.filters.milvus`: the compiler for a backend that filters
  natively (:func:`to_milvus_expr`).

The catalogue's :class:`~visualsim.store.Store` keeps the vectorised
evaluator (a tree to a boolean row mask over typed columns).

The grammar is in :mod:`~visualsim.filters.parse`; docs/filters.md is the guide.

An item that lacks a field matches no comparison on it (``not`` then makes
it match). Comparing a string field with a number, or naming a field no item
has, is a :class:`FilterError` that names the field and lists those present.

Examples
--------
>>> expr = parse_filter("category == 'shoes' and price < 50")
>>> expr.items[1]
Compare(field='price', op='<', value=50)
>>> to_expr(expr) is expr
True
>>> implied_values(expr, "category")
{'shoes'}
>>> to_milvus_expr(expr)
'(category == "shoes") and (price < 50)'
"""

from __future__ import annotations

from ..errors import FilterError
from .milvus import to_milvus_expr
from .parse import (
    MAX_DEPTH,
    MAX_FILTER_LENGTH,
    MAX_LIST,
    OPERATORS,
    And,
    Compare,
    Expr,
    InList,
    Literal_,
    Not,
    Or,
    from_mapping,
    parse_filter,
    to_expr,
)
from .plan import implied_values

__all__ = [
    "MAX_DEPTH",
    "MAX_FILTER_LENGTH",
    "MAX_LIST",
    "OPERATORS",
    "And",
    "Compare",
    "Expr",
    "FilterError",
    "InList",
    "Literal_",
    "Not",
    "Or",
    "from_mapping",
    "implied_values",
    "parse_filter",
    "to_expr",
    "to_milvus_expr",
]
