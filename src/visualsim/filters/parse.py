"""The one parser of the filter language: text or a dict to an expression tree.

``where="category == 'shoes' and price < 50"`` is parsed here, once per query,
by a small recursive-descent parser (never ``eval``) into a tree of
:class:`Compare`, :class:`InList`, :class:`And`, :class:`Or` and :class:`Not`;
everything downstream (the catalogue's vectorised evaluator, the partition
planner in :mod:`visualsim.filters.plan`, the Milvus compiler in
:mod:`visualsim.filters.milvus`) takes the tree, never the text.

Grammar (keywords are case-insensitive)::

    expr       := or_expr
    or_expr    := and_expr ("or" and_expr)*
    and_expr   := not_expr ("and" not_expr)*
    not_expr   := "not" not_expr | "(" expr ")" | comparison
    comparison := field op literal
                | field ["not"] "in" "[" literal ("," literal)* "]"
                | field                      (a bare field: field == true)
    op         := "==" | "!=" | "<" | "<=" | ">" | ">="
    field      := name | `any name in backticks`
    literal    := 'string' | "string" | number | true | false

An item that lacks a field matches no comparison on it (``not`` then makes
it match). Comparing a string field with a number, or naming a field no item
has, is a :class:`FilterError` that names the field and lists those present.

Examples
--------
>>> expr = parse_filter("category == 'shoes' and price < 50")
>>> expr.items[1]
Compare(field='price', op='<', value=50)
>>> str(expr)
"(category == 'shoes' and price < 50)"
>>> sorted(expr.fields())
['category', 'price']
>>> print(parse_filter("colour not in ['red', 'blue'] or not in_stock"))
(colour not in ['red', 'blue'] or not in_stock == true)
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, TypeAlias

from ..errors import FilterError

Literal_: TypeAlias = str | int | float | bool

MAX_FILTER_LENGTH = 10_000
"""Longest filter text accepted (characters)."""
MAX_DEPTH = 64
"""Deepest nesting of parentheses / ``not`` accepted."""
MAX_LIST = 10_000
"""Most values in one ``in [...]`` list."""

OPERATORS = ("==", "!=", "<", "<=", ">", ">=")


# --------------------------------------------------------------------------- the tree


@dataclass(frozen=True)
class Compare:
    """``field op value``: one comparison."""

    field: str
    op: str
    value: Literal_

    def fields(self) -> set[str]:
        """Return the field names the expression reads."""
        return {self.field}

    def __str__(self) -> str:
        return f"{_field_text(self.field)} {self.op} {_literal_text(self.value)}"


@dataclass(frozen=True)
class InList:
    """``field in [v, ...]`` (``negate``: ``not in``)."""

    field: str
    values: tuple[Literal_, ...]
    negate: bool = False

    def fields(self) -> set[str]:
        """Return the field names the expression reads."""
        return {self.field}

    def __str__(self) -> str:
        word = "not in" if self.negate else "in"
        values = ", ".join(_literal_text(v) for v in self.values)
        return f"{_field_text(self.field)} {word} [{values}]"


@dataclass(frozen=True)
class _Joined:
    """Items joined by ``and`` / ``or`` (the subclass's :attr:`word`)."""

    items: tuple[Expr, ...]
    word: ClassVar[str]

    def fields(self) -> set[str]:
        """Return the field names the expression reads."""
        return set().union(*(i.fields() for i in self.items))

    def __str__(self) -> str:
        return "(" + f" {self.word} ".join(str(i) for i in self.items) + ")"


@dataclass(frozen=True)
class And(_Joined):
    """Every item holds."""

    word: ClassVar[str] = "and"


@dataclass(frozen=True)
class Or(_Joined):
    """At least one item holds."""

    word: ClassVar[str] = "or"


@dataclass(frozen=True)
class Not:
    """The item does not hold."""

    item: Expr

    def fields(self) -> set[str]:
        """Return the field names the expression reads."""
        return self.item.fields()

    def __str__(self) -> str:
        return f"not {self.item}"


Expr: TypeAlias = Compare | InList | And | Or | Not
"""A parsed filter: one of the node classes above."""


def _field_text(name: str) -> str:
    return name if _NAME.fullmatch(name) and name.lower() not in _KEYWORDS else f"`{name}`"


def _literal_text(value: Literal_) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return repr(value)


# --------------------------------------------------------------------------- tokens

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
_NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")
_KEYWORDS = {"and", "or", "not", "in", "true", "false"}
_ESCAPES = {"n": "\n", "t": "\t", "\\": "\\", "'": "'", '"': '"'}


@dataclass(frozen=True)
class _Token:
    kind: str  # name, field, string, number, op, punct, keyword, end
    value: Any
    pos: int


def _tokenize(text: str) -> list[_Token]:
    out: list[_Token] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
            continue
        if c in "()[],":
            out.append(_Token("punct", c, i))
            i += 1
            continue
        if text.startswith(("==", "!=", "<=", ">="), i):
            out.append(_Token("op", text[i : i + 2], i))
            i += 2
            continue
        if c in "<>":
            out.append(_Token("op", c, i))
            i += 1
            continue
        if c == "=":
            raise _error(text, i, "a single '=' is not an operator; use '==' to compare")
        if c in "'\"":
            value, i = _read_string(text, i)
            out.append(_Token("string", value, i))
            continue
        if c == "`":
            end = text.find("`", i + 1)
            if end < 0:
                raise _error(text, i, "unclosed ` around a field name")
            if end == i + 1:
                raise _error(text, i, "empty field name between backticks")
            out.append(_Token("field", text[i + 1 : end], i))
            i = end + 1
            continue
        m = _NUMBER.match(text, i)
        if m and (c.isdigit() or c in "+-."):
            out.append(_Token("number", _number(m.group(), text, i), i))
            i = m.end()
            continue
        m = _NAME.match(text, i)
        if m:
            word = m.group()
            kind = "keyword" if word.lower() in _KEYWORDS else "name"
            out.append(_Token(kind, word.lower() if kind == "keyword" else word, i))
            i = m.end()
            continue
        raise _error(text, i, f"unexpected character {c!r}")
    out.append(_Token("end", None, n))
    return out


def _read_string(text: str, start: int) -> tuple[str, int]:
    quote = text[start]
    parts: list[str] = []
    i = start + 1
    while i < len(text):
        c = text[i]
        if c == "\\":
            if i + 1 >= len(text):
                break
            parts.append(_ESCAPES.get(text[i + 1], text[i + 1]))
            i += 2
            continue
        if c == quote:
            return "".join(parts), i + 1
        parts.append(c)
        i += 1
    raise _error(text, start, "unclosed string")


def _number(word: str, text: str, pos: int) -> int | float:
    if re.fullmatch(r"[-+]?\d+", word):
        if len(word) > 30:
            raise _error(text, pos, f"number {word[:20]}... is too long")
        return int(word)
    value = float(word)
    if not math.isfinite(value):
        raise _error(text, pos, f"number {word} is not finite")
    return value


def _error(text: str, pos: int, what: str) -> FilterError:
    snippet = text if len(text) <= 80 else text[max(0, pos - 30) : pos + 30]
    return FilterError(f"bad filter {snippet!r}: {what} (at character {pos})")


# --------------------------------------------------------------------------- parser


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.i = 0
        self.depth = 0

    def peek(self) -> _Token:
        return self.tokens[self.i]

    def take(self) -> _Token:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def is_(self, kind: str, value: Any = None) -> bool:
        tok = self.peek()
        return tok.kind == kind and (value is None or tok.value == value)

    def expect(self, kind: str, value: Any, what: str) -> _Token:
        if not self.is_(kind, value):
            raise self.fail(f"expected {what}")
        return self.take()

    def fail(self, what: str) -> FilterError:
        tok = self.peek()
        found = "the end" if tok.kind == "end" else repr(tok.value)
        return _error(self.text, tok.pos, f"{what}, found {found}")

    def parse(self) -> Expr:
        expr = self.or_expr()
        if not self.is_("end"):
            raise self.fail("expected 'and', 'or' or the end of the filter")
        return expr

    def or_expr(self) -> Expr:
        items = [self.and_expr()]
        while self.is_("keyword", "or"):
            self.take()
            items.append(self.and_expr())
        return items[0] if len(items) == 1 else Or(tuple(items))

    def and_expr(self) -> Expr:
        items = [self.not_expr()]
        while self.is_("keyword", "and"):
            self.take()
            items.append(self.not_expr())
        return items[0] if len(items) == 1 else And(tuple(items))

    def not_expr(self) -> Expr:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.fail(f"nesting deeper than {MAX_DEPTH}")
        try:
            if self.is_("keyword", "not"):
                self.take()
                return Not(self.not_expr())
            if self.is_("punct", "("):
                self.take()
                expr = self.or_expr()
                self.expect("punct", ")", "')'")
                return expr
            return self.comparison()
        finally:
            self.depth -= 1

    def comparison(self) -> Expr:
        tok = self.peek()
        if tok.kind not in ("name", "field"):
            raise self.fail("expected a field name")
        field = self.take().value
        if self.is_("keyword", "in") or self.is_("keyword", "not"):
            negate = self.take().value == "not"
            if negate:
                self.expect("keyword", "in", "'in' after 'not'")
            return InList(field, self.literal_list(), negate)
        if not self.is_("op"):
            ends = self.is_("keyword", "and") or self.is_("keyword", "or")
            if ends or self.is_("punct", ")") or self.is_("end"):
                # a bare field: `in_stock` means `in_stock == true`
                return Compare(field, "==", True)
            ops = ", ".join(OPERATORS)
            raise self.fail(f"expected an operator ({ops}) or 'in' after {field!r}")
        op = self.take().value
        return Compare(field, op, self.literal())

    def literal_list(self) -> tuple[Literal_, ...]:
        self.expect("punct", "[", "'[' to open the list")
        values: list[Literal_] = []
        if self.is_("punct", "]"):
            raise self.fail("expected at least one value in the list")
        while True:
            values.append(self.literal())
            if len(values) > MAX_LIST:
                raise self.fail(f"more than {MAX_LIST} values in one list")
            if self.is_("punct", ","):
                self.take()
                continue
            self.expect("punct", "]", "',' or ']'")
            return tuple(values)

    def literal(self) -> Literal_:
        tok = self.peek()
        if tok.kind in ("string", "number"):
            self.take()
            value: Literal_ = tok.value
            return value
        if tok.kind == "keyword" and tok.value in ("true", "false"):
            self.take()
            return tok.value == "true"
        if tok.kind == "name":
            raise self.fail(
                f"expected a value; quote text values, e.g. '{tok.value}' "
                "(field names go on the left)"
            )
        raise self.fail("expected a value (a 'string', a number, true or false)")


def parse_filter(text: str) -> Expr:
    """Return the expression tree of a filter written in the filter language.

    Parameters
    ----------
    text
        For example ``"category == 'shoes' and price < 50"``.

    Raises
    ------
    FilterError
        Not a string, too long or too deep, or not in the language; the
        message points at the first offending character.
    """
    if not isinstance(text, str):
        raise FilterError(f"a filter must be a string, got {type(text).__name__}")
    if len(text) > MAX_FILTER_LENGTH:
        raise FilterError(f"filter is {len(text)} characters long; at most {MAX_FILTER_LENGTH}")
    if not text.strip():
        raise FilterError("filter is empty; pass None for no filter")
    return _Parser(text).parse()


def from_mapping(where: Mapping[str, Any]) -> Expr:
    """Return the tree for the dict form: ``{"a": 1, "b": [2, 3]}`` is ``a == 1 and b in [2, 3]``.

    Raises
    ------
    FilterError
        An empty dict, a non-string key, or a value that is not a literal
        (string, number, boolean) or a list of them.
    """
    if not where:
        raise FilterError("where is an empty dict; pass None for no filter")
    items: list[Expr] = []
    for key, value in where.items():
        if not isinstance(key, str):
            raise FilterError(f"where keys must be field names (str), got {key!r}")
        if isinstance(value, (list, tuple, set, frozenset)):
            values = tuple(_check_literal(key, v) for v in value)
            if not values:
                raise FilterError(f"where[{key!r}] is an empty list: nothing could match")
            items.append(InList(key, values))
        else:
            items.append(Compare(key, "==", _check_literal(key, value)))
    return items[0] if len(items) == 1 else And(tuple(items))


def _check_literal(key: str, value: Any) -> Literal_:
    if isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    if hasattr(value, "item") and not isinstance(value, (list, dict)):  # numpy scalars
        return _check_literal(key, value.item())
    raise FilterError(
        f"where[{key!r}] = {value!r}: values must be strings, numbers or booleans "
        "(or a list of them)"
    )


def to_expr(where: str | Mapping[str, Any] | Expr) -> Expr:
    """Return the tree for a filter in any form: text, dict, or a tree already."""
    if isinstance(where, str):
        return parse_filter(where)
    if isinstance(where, Mapping):
        return from_mapping(where)
    if isinstance(where, (Compare, InList, And, Or, Not)):
        return where
    raise FilterError(
        "where must be a filter string, a dict or a function of metadata, "
        f"got {type(where).__name__}"
    )
