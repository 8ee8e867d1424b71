"""What a parsed filter pins: the values of a field every matching item must hold.

The search planner (:class:`visualsim.search.Partitions`) asks this to answer
``category == 'shoes'`` from the small index of the ``'shoes'`` partition
instead of the whole catalogue's.

Examples
--------
>>> from visualsim.filters import parse_filter
>>> sorted(implied_values(parse_filter("category in ['a', 'b'] and price < 5"), "category"))
['a', 'b']
>>> implied_values(parse_filter("category != 'a'"), "category") is None
True
"""

from __future__ import annotations

from typing import Any

from .parse import And, Compare, Expr, InList, Or


def implied_values(expr: Expr, field: str) -> set[Any] | None:
    """The values of ``field`` every item matching ``expr`` has, or ``None`` if unbounded.

    ``category == 'a'`` gives ``{'a'}``, ``category in ['a', 'b'] and price < 5``
    gives ``{'a', 'b'}``, an ``or`` the union of its branches when each is bounded;
    anything else (``not``, ``!=``, another field alone) is unbounded.

    Parameters
    ----------
    expr
        A parsed filter (:func:`visualsim.filters.to_expr`).
    field
        The field whose values are wanted (a catalogue's ``partition_by``).

    Returns
    -------
    set or None
        The values a match may hold (an empty set: nothing can match), or
        ``None`` when ``expr`` does not bound ``field``.
    """
    if isinstance(expr, Compare):
        return {expr.value} if expr.field == field and expr.op == "==" else None
    if isinstance(expr, InList):
        return set(expr.values) if expr.field == field and not expr.negate else None
    if isinstance(expr, And):
        found: set[Any] | None = None
        for item in expr.items:
            got = implied_values(item, field)
            if got is not None:
                found = got if found is None else found & got
        return found
    if isinstance(expr, Or):
        union: set[Any] = set()
        for item in expr.items:
            got = implied_values(item, field)
            if got is None:
                return None
            union |= got
        return union
    return None


__all__ = ["implied_values"]
