"""The filter language: parsing, errors, and evaluation over typed columns."""

from __future__ import annotations

import builtins
import operator
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from visualsim import Recommender
from visualsim.filters import (
    MAX_DEPTH,
    And,
    Compare,
    FilterError,
    InList,
    Not,
    Or,
    from_mapping,
    parse_filter,
    to_expr,
)
from visualsim.store import Store

# -- parsing -----------------------------------------------------------------------------


def test_precedence_not_binds_tighter_than_and_than_or() -> None:
    expr = parse_filter("a == 1 or not b == 2 and c == 3")
    assert expr == Or(
        (Compare("a", "==", 1), And((Not(Compare("b", "==", 2)), Compare("c", "==", 3))))
    )


def test_every_operator_and_literal_kind() -> None:
    expr = parse_filter(
        "a != 'x' and b < 1.5 and c <= -2 and d > 1e3 and e >= 0 and f == true and g in [1, 'y']"
        " and h not in [false]"
    )
    assert isinstance(expr, And)
    assert [type(i).__name__ for i in expr.items] == ["Compare"] * 6 + ["InList", "InList"]
    assert expr.items[3] == Compare("d", ">", 1000.0)
    assert expr.items[7] == InList("h", (False,), negate=True)


def test_round_trip_through_text() -> None:
    text = "(`odd name` == 'it\\'s' or n in [1, 2.5]) and not flag"
    expr = parse_filter(text)
    assert parse_filter(str(expr)) == expr


def test_dict_form_is_the_same_tree() -> None:
    assert from_mapping({"a": 1, "b": ["x", "y"]}) == And(
        (Compare("a", "==", 1), InList("b", ("x", "y")))
    )
    assert to_expr({"a": 1}) == parse_filter("a == 1")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a = 1", "single '='"),
        ("a ==", "expected a value"),
        ("a == b", "quote text values"),
        ("== 1", "expected a field name"),
        ("a == 1 and", "expected a field name"),
        ("(a == 1", r"expected '\)'"),
        ("a in [1, 2", "',' or ']'"),
        ("a in []", "at least one value"),
        ("a == 'open", "unclosed string"),
        ("a == 1 b == 2", "expected 'and', 'or'"),
        ("a ~ 1", "unexpected character"),
        ("", "empty"),
        ("a == " + "9" * 40, "too long"),
    ],
)
def test_bad_filters_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(FilterError, match=message):
        parse_filter(text)


def test_depth_and_length_are_bounded() -> None:
    with pytest.raises(FilterError, match="nesting deeper"):
        parse_filter("(" * (MAX_DEPTH + 5) + "a == 1" + ")" * (MAX_DEPTH + 5))
    with pytest.raises(FilterError, match="characters long"):
        parse_filter("a == 1 or " * 2000 + "a == 1")
    with pytest.raises(FilterError, match="must be a string"):
        parse_filter(42)  # type: ignore[arg-type]


@settings(max_examples=400)
@given(st.text(max_size=80))
def test_garbage_never_evaluates_code_and_fails_cleanly(text: str) -> None:
    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the filter parser must never evaluate code")

    with pytest.MonkeyPatch.context() as m:
        m.setattr(builtins, "eval", forbidden)
        m.setattr(builtins, "exec", forbidden)
        m.setattr(builtins, "__import__", forbidden)
        try:
            expr = parse_filter(text)
        except FilterError:
            return
    assert parse_filter(str(expr)) == expr  # whatever parses prints back to itself


@settings(max_examples=200)
@given(
    st.lists(
        st.sampled_from(
            [
                "a",
                "b",
                "==",
                "<",
                "in",
                "not",
                "and",
                "or",
                "(",
                ")",
                "[",
                "]",
                ",",
                "'x'",
                "1",
                "2.5",
                "true",
                "__import__('os')",
                ";",
                "`b`",
            ]
        ),
        max_size=14,
    )
)
def test_token_soup_parses_or_raises_filter_error(tokens: list[str]) -> None:
    try:
        parse_filter(" ".join(tokens))
    except FilterError:
        pass


# -- evaluation --------------------------------------------------------------------------


def _store(rows: list[dict[str, Any]]) -> Store:
    store = Store(2)
    store.append(np.ones((len(rows), 2), np.float32), list(range(len(rows))), rows)
    return store


ROWS: list[dict[str, Any]] = [
    {"category": "shoes", "price": 10, "in_stock": True},
    {"category": "shoes", "price": 55.5, "in_stock": False},
    {"category": "bags", "price": 30, "in_stock": True},
    {"category": "bags", "code": "x"},
    {"price": 5, "in_stock": True, "code": 7},
]


@pytest.mark.parametrize(
    ("text", "rows"),
    [
        ("category == 'shoes'", [0, 1]),
        ("category != 'shoes'", [2, 3]),
        ("price < 30", [0, 4]),
        ("price >= 30", [1, 2]),
        ("price > 9 and price <= 55.5", [0, 1, 2]),
        ("in_stock", [0, 2, 4]),
        ("not in_stock", [1, 3]),
        ("category in ['bags', 'hats']", [2, 3]),
        ("category not in ['bags']", [0, 1]),
        ("category < 'c'", [2, 3]),
        ("(category == 'bags' or price < 6) and in_stock", [2, 4]),
        ("code == 'x'", [3]),
        ("code == 7", [4]),
        ("code != 7", [3]),
    ],
)
def test_mask_matches_python_semantics(text: str, rows: list[int]) -> None:
    assert np.flatnonzero(_store(ROWS).mask(parse_filter(text))).tolist() == rows


def test_unknown_field_and_kind_mismatches_name_the_field() -> None:
    store = _store(ROWS)
    with pytest.raises(FilterError, match=r"'lable'.*fields present: category, code, in_stock"):
        store.mask(parse_filter("lable == 'coffee'"))
    with pytest.raises(FilterError, match="'category' holds text"):
        store.mask(parse_filter("category == 3"))
    with pytest.raises(FilterError, match="'price' holds numbers"):
        store.mask(parse_filter("price == '12.5'"))
    with pytest.raises(FilterError, match="true/false"):
        store.mask(parse_filter("in_stock < true"))
    with pytest.raises(FilterError, match="mixed or nested"):
        store.mask(parse_filter("code < 1"))


OPS = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


@settings(max_examples=150)
@given(
    prices=st.lists(st.one_of(st.none(), st.integers(-50, 50)), min_size=1, max_size=30),
    op=st.sampled_from(sorted(OPS)),
    value=st.integers(-60, 60),
)
def test_numeric_comparisons_equal_a_python_loop(
    prices: list[int | None], op: str, value: int
) -> None:
    rows = [{} if p is None else {"price": p} for p in prices]
    if all(p is None for p in prices):
        rows[0] = {"price": 0}
        prices[0] = 0
    mask = _store(rows).mask(Compare("price", op, value))
    want = [p is not None and OPS[op](p, value) for p in prices]
    assert mask.tolist() == want


def test_typed_numbers_from_text_columns_filter_as_numbers() -> None:
    """A CSV's '12.5' declared float filters as a number (never silently empty)."""
    x = np.eye(3, dtype=np.float32)
    rec = Recommender("color", dtypes={"price": "float", "sku": "str"})
    rec.add_vectors(
        np.pad(x, ((0, 0), (0, rec.dim - 3))),
        ["a", "b", "c"],
        [{"price": "12.5", "sku": 1}, {"price": "30"}, {"price": 8}],
    )
    assert rec.fields_ == {"price": "float", "sku": "str"}
    q = rec.vector_of("a")
    assert [r.id for r in rec.query_vector(q, where={"price": 12.5})] == ["a"]
    assert [r.id for r in rec.query_vector(q, where="price < 20")] == ["a", "c"]
    assert rec.metadata_of("a") == {"price": 12.5, "sku": "1"}


@pytest.mark.parametrize(
    ("text", "hints"),
    [
        ("category == 'shoes'", []),  # a value items have: nothing to say
        ("category == 'Shoes'", ["no item has category == 'Shoes'; did you mean 'shoes'?"]),
        ("category != 'BAGS'", ["no item has category == 'BAGS'; did you mean 'bags'?"]),
        ("category in ['bags', 'shoe']", ["no item has category == 'shoe'; did you mean 'shoes'?"]),
        ("not (category == 'hats' and price < 3)", ["no item has category == 'hats'"]),
        ("price < 3 or in_stock", []),  # numbers and booleans: no hint
        ("code == 'y'", []),  # a mixed-kind (json) field: no dictionary to suggest from
    ],
)
def test_value_hints_say_what_was_meant(text: str, hints: list[str]) -> None:
    assert _store(ROWS).value_hints(parse_filter(text)) == hints


def test_filter_hints_through_the_recommender() -> None:
    from visualsim import ColorHistogramExtractor

    rec = Recommender(ColorHistogramExtractor())
    rec.add_vectors(np.eye(3, 455, dtype=np.float32), ["a", "b", "c"], ROWS[:3])
    assert rec.filter_hints({"category": "Bags"}) == [
        "no item has category == 'Bags'; did you mean 'bags'?"
    ]
    assert rec.filter_hints(lambda m: True) == []
    assert rec.query_vector(np.eye(1, 455, dtype=np.float32)[0], where={"category": "Bags"}) == []
