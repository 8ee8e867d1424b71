"""Filters have one owner (issue 24): ``visualsim.filters`` parses (once per query),
plans (the values a filter pins) and compiles for Milvus; the store evaluates."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

import visualsim.filters as F
from visualsim import ColorHistogramExtractor, Recommender
from visualsim.filters import And, Compare, FilterError, InList, Not, Or, parse_filter
from visualsim.filters import parse as parse_module
from visualsim.filters.milvus import to_milvus_expr
from visualsim.filters.plan import implied_values
from visualsim.serve import _adapters, create_app


# -- one parse per query ------------------------------------------------------------------
@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every filter text the one parser reads, in order (a counting spy on the parser)."""
    seen: list[str] = []
    real = parse_module._Parser.parse

    def spy(self: Any) -> Any:
        seen.append(self.text)
        return real(self)

    monkeypatch.setattr(parse_module._Parser, "parse", spy)
    return seen


def make_rec(n: int = 8) -> Recommender:
    ext = ColorHistogramExtractor()
    vectors = np.random.default_rng(0).random((n, ext.dim), dtype=np.float32)
    metas = [
        {"category": ["shoes", "bags"][i % 2], "price": 10 * i, "in_stock": i % 3 == 0}
        for i in range(n)
    ]
    return Recommender(ext).add_vectors(vectors, [f"p{i}" for i in range(n)], metas)


def png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 30, 30)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def client() -> Iterator[TestClient]:
    with TestClient(create_app(make_rec(), warm=False)) as c:
        yield c


WHERE = "category == 'shoes' and price < 50"


def test_an_http_similar_query_parses_its_where_once(client: TestClient, parses: list[str]) -> None:
    r = client.get("/items/p1/similar", params={"k": 10, "where": WHERE})
    assert r.status_code == 200, r.text
    ids = [x["id"] for x in r.json()["results"]]
    assert ids and set(ids) <= {"p0", "p2", "p4"}  # the filter really applied
    assert parses == [WHERE]


def test_an_http_photo_query_parses_its_where_once(client: TestClient, parses: list[str]) -> None:
    r = client.post("/query", params={"k": 10, "where": WHERE}, content=png())
    assert r.status_code == 200, r.text
    assert {x["id"] for x in r.json()["results"]} == {"p0", "p2", "p4"}
    assert parses == [WHERE]


def test_an_empty_answer_gives_hints_from_the_same_parse(
    client: TestClient, parses: list[str]
) -> None:
    where = "category == 'Shoes'"
    r = client.get("/items/p1/similar", params={"where": where})
    assert r.status_code == 200 and r.json()["results"] == []
    assert r.json()["hints"] == ["no item has category == 'Shoes'; did you mean 'shoes'?"]
    r = client.post("/query", params={"where": where}, content=png())
    assert r.json()["hints"] == ["no item has category == 'Shoes'; did you mean 'shoes'?"]
    assert parses == [where, where]  # one per request, hints included


def test_a_cli_query_parses_its_where_once(
    tmp_path: Path, parses: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    from visualsim.cli import main

    path = make_rec().save(tmp_path / "c.catalog")
    assert main(["similar", str(path), "p1", "-k", "10", "--where", WHERE]) == 0
    out = capsys.readouterr().out
    assert "p0" in out and "p3" not in out
    assert parses == [WHERE]


def test_the_facade_takes_a_parsed_filter_as_it_is(parses: list[str]) -> None:
    rec = make_rec()
    expr = parse_filter(WHERE)
    got = rec.similar_to("p1", 10, where=expr)
    assert {r.id for r in got} == {"p0", "p2", "p4"}
    assert [r.id for r in got] == [r.id for r in rec.similar_to("p1", 10, where=WHERE)]
    assert parses == [WHERE, WHERE]  # once for the tree, once for the text: never again


def test_parse_where_returns_the_tree_and_names_unknown_fields() -> None:
    fields = {"category": "str", "price": "int"}
    expr = _adapters.parse_where(WHERE, fields)
    assert expr == parse_filter(WHERE)
    with pytest.raises(FilterError, match=r"unknown field\(s\) 'colour'.*category, price"):
        _adapters.parse_where("colour == 'red'", fields)
    with pytest.raises(FilterError, match="bad where"):
        _adapters.parse_where("price <", fields)
    with pytest.raises(FilterError, match="empty"):
        _adapters.parse_where("  ", fields)


def test_http_never_filters_on_the_server_path_field(tmp_path: Path) -> None:
    ext = ColorHistogramExtractor()
    vectors = np.random.default_rng(1).random((2, ext.dim), dtype=np.float32)
    metas = [{"path": str(tmp_path / f"{i}.jpg"), "category": "a"} for i in range(2)]
    rec = Recommender(ext).add_vectors(vectors, ["a", "b"], metas)
    with TestClient(create_app(rec, warm=False)) as c:
        r = c.get("/items/a/similar", params={"where": f"path == '{tmp_path / '1.jpg'}'"})
        assert r.status_code == 400 and "'path'" in r.json()["detail"]
        assert str(tmp_path) not in r.json()["detail"].split("where names")[1]
    assert [x.id for x in rec.similar_to("a", 5, where=f"path == '{tmp_path / '1.jpg'}'")] == [
        "b"
    ]  # Python callers, who own the catalogue, may


def test_the_cli_where_help_shows_each_form_once_and_every_example_parses() -> None:
    from visualsim.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for command in ("query", "similar"):
        helptext = next(
            a.help
            for a in sub.choices[command]._actions  # type: ignore[attr-defined]
            if a.dest == "where"
        )
        examples = [parse_filter(e) for e in re.findall(r'"([^"]+)"', helptext)]
        kinds = [type(e).__name__ for e in examples]
        # comparisons (a number, a text), in, not in, a bare field, and/or/not, backticks
        assert kinds == ["Compare", "Compare", "InList", "InList", "Compare", "And", "Compare"]
        assert [str(e) for e in examples] == [
            "price <= 50",
            "category == 'shoes'",
            "colour in ['red', 'blue']",
            "colour not in ['red']",
            "in_stock == true",
            "((price < 50 or on_sale == true) and not brand == 'acme')",
            "`size (EU)` >= 40",
        ]
        assert "KEY=VALUE, category=shoes|bags" in helptext


# -- the package keeps every public name; the old homes still work ----------------------
def test_public_names_are_importable_from_visualsim_filters() -> None:
    for name in F.__all__:
        assert getattr(F, name) is not None, name
    from visualsim import FilterError as top
    from visualsim import parse_filter as top_parse
    from visualsim.indexes import milvus as index_milvus
    from visualsim.search import implied_values as search_implied

    assert top is F.FilterError and top_parse is F.parse_filter
    assert index_milvus.to_milvus_expr is F.to_milvus_expr is to_milvus_expr
    assert search_implied is F.implied_values is implied_values
    assert {"vs_label", "vs_id", "vs_vector"} == index_milvus.RESERVED_FIELDS


def test_a_bare_field_may_close_a_parenthesis() -> None:
    assert parse_filter("not (in_stock)") == Not(Compare("in_stock", "==", True))
    assert parse_filter("(on_sale or in_stock) and price < 5") == And(
        (
            Or((Compare("on_sale", "==", True), Compare("in_stock", "==", True))),
            Compare("price", "<", 5),
        )
    )
    with pytest.raises(FilterError, match="expected an operator"):
        parse_filter("in_stock true")


# -- plan: the values a filter pins --------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "values"),
    [
        ("category == 'a'", {"a"}),
        ("category in ['a', 'b'] and price < 5", {"a", "b"}),
        ("category == 'a' or category in ['b', 'c']", {"a", "b", "c"}),
        ("category in ['a', 'b'] and category in ['b', 'c']", {"b"}),
        ("category == 'a' and category == 'b'", set()),
        ("category == 'a' or price < 5", None),
        ("category != 'a'", None),
        ("category not in ['a']", None),
        ("not category == 'a'", None),
        ("price < 5", None),
        ("category < 'b'", None),
    ],
)
def test_plan_gives_the_values_a_filter_pins(text: str, values: set[str] | None) -> None:
    assert implied_values(parse_filter(text), "category") == values


# -- the Milvus compiler: output unchanged by the move (captured before it) ---------------
FIELDS = {"category": "str", "price": "float", "n": "int", "in_stock": "bool", "tags": "json"}
COMPILED = {
    "category == 'shoes'": 'category == "shoes"',
    "category != 'shoes'": 'category is not null and category != "shoes"',
    "price < 50": "price < 50",
    "price <= 50.5": "price <= 50.5",
    "price > -3": "price > -3",
    "price >= 1e3": "price >= 1000.0",
    "price == 2.5": "price == 2.5",
    "n == 3": "n == 3",
    "n != 3": "n is not null and n != 3",
    "in_stock": "in_stock == true",
    "in_stock == false": "in_stock == false",
    "in_stock != true": "in_stock is not null and in_stock != true",
    "category in ['a', 'b']": 'category in ["a", "b"]',
    "category not in ['a', 'b']": 'category is not null and category not in ["a", "b"]',
    "n in [1, 2, 3]": "n in [1, 2, 3]",
    "not price < 50": "not (price is not null and price < 50)",
    "not (category == 'a' or n > 2)": (
        'not ((category is not null and category == "a") or (n is not null and n > 2))'
    ),
    "not category in ['a']": 'not (category is not null and category in ["a"])',
    "not category not in ['a']": 'not (category is not null and category not in ["a"])',
    "not not n == 1": "not (not (n is not null and n == 1))",
    "category == 'shoes' and price < 50": '(category == "shoes") and (price < 50)',
    "category == 'a' or category == 'b' or n >= 2": (
        '(category == "a") or (category == "b") or (n >= 2)'
    ),
    "(category == 'a' or n == 1) and not (price > 2 and in_stock == true)": (
        '((category == "a") or (n == 1)) and (not ((price is not null and price > 2) and '
        "(in_stock is not null and in_stock == true)))"
    ),
    'category == "x\' or 1==1"': 'category == "x\' or 1==1"',
    "category == 'a\\\\b\"c'": 'category == "a\\\\b\\"c"',
    "category == 'line\\nbreak\\ttab'": 'category == "line\\nbreak\\ttab"',
}


@pytest.mark.parametrize(("text", "want"), sorted(COMPILED.items()))
def test_the_milvus_compiler_output_is_unchanged(text: str, want: str) -> None:
    assert to_milvus_expr(parse_filter(text)) == want
    assert to_milvus_expr(parse_filter(text), FIELDS) == want
    assert to_milvus_expr(text) == want  # text is parsed first, to the same tree


def test_the_milvus_compiler_edge_nodes_are_unchanged() -> None:
    assert to_milvus_expr({"c": ["x", "y"], "n": 2}) == '(c in ["x", "y"]) and (n == 2)'
    assert to_milvus_expr(InList("n", ())) == "vs_label < 0"
    assert to_milvus_expr(InList("n", (), negate=True)) == "vs_label >= 0"
    assert to_milvus_expr(Not(InList("n", ()))) == "not (vs_label < 0)"
    assert to_milvus_expr(And((Compare("n", "==", 1),))) == "n == 1"


@pytest.mark.parametrize(
    ("where", "fields", "message"),
    [
        (
            "colour == 'red'",
            FIELDS,
            "filter field 'colour' is not a metadata field of this Milvus collection "
            "(fields: category, in_stock, n, price, tags); declare it in "
            "MilvusIndex(fields=...) before adding items",
        ),
        (
            "tags == 'x'",
            FIELDS,
            "filter field 'tags' holds lists, dicts or mixed values, which the Milvus backend "
            "does not store; filter on a string, number or boolean field",
        ),
        (
            "category == 3",
            FIELDS,
            "filter compares 'category' (a str field) with 3 (int); compare it with a str",
        ),
        (
            "price < 'cheap'",
            FIELDS,
            "filter compares 'price' (a float field) with 'cheap' (str); compare it with a float",
        ),
        (
            "n == true",
            FIELDS,
            "filter compares 'n' (a int field) with True (bool); compare it with a int",
        ),
        (
            "in_stock < true",
            None,
            "filter compares the boolean 'in_stock' with '<'; use == or != with true/false",
        ),
        (
            "vs_label == 1",
            None,
            "filter field 'vs_label' is not a valid Milvus field name (letters, digits and _, "
            "not starting with a digit, not vs_label/vs_id/vs_vector)",
        ),
        (
            "`a b` == 1",
            None,
            "filter field 'a b' is not a valid Milvus field name (letters, digits and _, "
            "not starting with a digit, not vs_label/vs_id/vs_vector)",
        ),
        (Or(()), None, "an empty Or has no Milvus equivalent"),
        (Compare("n", "=~", 1), None, "filter operator '=~' has no Milvus equivalent"),
        (Compare("p", "<", float("nan")), None, "filter value nan for 'p' is not a finite number"),
        (
            Compare("p", "==", [1]),  # type: ignore[arg-type]
            None,
            "filter value [1] for 'p' is a list; Milvus compares strings, integers, floats "
            "and booleans",
        ),
    ],
)
def test_the_milvus_compiler_refuses_as_before(
    where: Any, fields: dict[str, str] | None, message: str
) -> None:
    with pytest.raises(FilterError, match=f"^{re.escape(message)}$"):
        to_milvus_expr(where, fields)
