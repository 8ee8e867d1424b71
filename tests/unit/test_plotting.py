"""Plots a person can read: ids cut in the middle, rows that wrap, the query named."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from visualsim.plotting import _short, plot_recommendations, save_figure
from visualsim.recommender import Recommendation


def _image(value: int) -> np.ndarray:
    img = np.full((40, 40, 3), 255, np.uint8)
    img[10:30, 10:30] = (value, 80, 255 - value)
    return img


def _results(n: int, *, label: str | None = "shoes") -> list[Recommendation]:
    return [
        Recommendation(
            f"fashion/very-long-folder-name/s{i}-crop-tl.jpg",
            1.0 - i / 20,
            i + 1,
            {} if label is None else {"kind": label},
        )
        for i in range(n)
    ]


def _labels(fig: object) -> list[str]:
    return [ax.get_xlabel() for ax in fig.axes if ax.axison]  # type: ignore[attr-defined]


@given(st.text(min_size=0, max_size=80), st.integers(min_value=5, max_value=40))
def test_short_keeps_both_ends(text: str, width: int) -> None:
    short = _short(text, width)
    assert len(short) <= width
    if len(text) <= width:
        assert short == text
    else:
        head, _, tail = short.partition("…")
        assert text.startswith(head) and text.endswith(tail)
        assert len(head) >= (width - 1) // 2 - 1 and len(tail) >= (width - 1) // 2


def test_long_ids_keep_the_file_name() -> None:
    fig = plot_recommendations(_image(0), _results(3), image_of=lambda r: _image(100))
    labels = _labels(fig)
    assert any("tl.jpg" in t and t.startswith("#1 fashion") for t in labels), labels


def test_ten_results_wrap_into_rows_of_five(tmp_path: Path) -> None:
    fig = plot_recommendations(_image(0), _results(10), image_of=lambda r: _image(50))
    visible = [ax for ax in fig.axes if ax.axison]
    assert len(visible) == 11  # the query + 10 results
    width, height = fig.get_size_inches()
    assert width / height < 3  # not a 2080x226 strip
    rows = {round(ax.get_position().y0, 3) for ax in visible}
    assert len(rows) == 2
    out = save_figure(fig, tmp_path / "ten.png")
    with Image.open(out) as img:
        assert img.size[0] / img.size[1] < 3

    narrow = plot_recommendations(_image(0), _results(10), image_of=lambda r: _image(50), per_row=3)
    assert len({round(ax.get_position().y0, 3) for ax in narrow.axes if ax.axison}) == 4
    with pytest.raises(ValueError, match="per_row"):
        plot_recommendations(_image(0), _results(2), image_of=lambda r: _image(5), per_row=0)


def test_missing_labels_are_not_printed_as_none() -> None:
    recs = [*_results(2, label=None), Recommendation("x", 0.5, 3, {"kind": None})]
    fig = plot_recommendations(_image(0), recs, image_of=lambda r: _image(9), label_key="kind")
    assert not any("None" in t for t in _labels(fig))
    labelled = plot_recommendations(
        _image(0), _results(1), image_of=lambda r: _image(9), label_key="kind"
    )
    assert any(t.endswith("shoes") for t in _labels(labelled))


def test_the_query_panel_is_named(tmp_path: Path) -> None:
    query = tmp_path / "new-arrival.jpg"
    Image.fromarray(_image(10)).save(query)
    fig = plot_recommendations(query, _results(2), image_of=lambda r: _image(9))
    assert _labels(fig)[0] == "query\nnew-arrival.jpg"
    named = plot_recommendations(
        [_image(1), _image(2)],
        [_results(1), _results(1)],
        image_of=lambda r: _image(9),
        query_label=["sku-1 (shoes)", None],
    )
    firsts = [t for t in _labels(named) if t.startswith("query")]
    assert firsts == ["query\nsku-1 (shoes)", "query"]
    with pytest.raises(ValueError, match="query labels"):
        plot_recommendations(
            [_image(1)], [_results(1)], image_of=lambda r: _image(9), query_label=["a", "b"]
        )


def test_a_long_title_is_wrapped_not_cut(tmp_path: Path) -> None:
    title = "visualsim demo: " + "SqueezeNet 1.1 + colour histogram, 4:1 " * 4
    fig = plot_recommendations(_image(0), _results(2), image_of=lambda r: _image(9), title=title)
    text = fig._suptitle.get_text()  # type: ignore[union-attr]
    assert "\n" in text and text.replace("\n", " ").split() == title.split()
    out = save_figure(fig, tmp_path / "t.png")
    with Image.open(out) as img:
        pixels = np.asarray(img.convert("L"))
    assert pixels.std() > 10


def test_scores_over_one_are_shown_as_one() -> None:
    fig = plot_recommendations(
        _image(0), [Recommendation("a", 1.0000002, 1, {})], image_of=lambda r: _image(9)
    )
    assert _labels(fig)[1] == "#1 a\n1.000"


def test_long_labels_wrap_instead_of_being_cut_and_the_width_is_an_option() -> None:
    long = "Sports Shoes for Men and Women"
    recs = _results(2, label=long)
    fig = plot_recommendations(_image(0), recs, image_of=lambda r: _image(9), label_key="kind")
    result = _labels(fig)[1]
    assert result.endswith("Sports Shoes for Men\nand Women")  # whole, on two lines
    assert "#1 fashion/" in result and "tl.jpg" in result  # the id keeps both ends
    narrow = plot_recommendations(
        _image(0), recs, image_of=lambda r: _image(9), label_key="kind", label_width=10
    )
    lines = _labels(narrow)[1].splitlines()
    assert all(len(line) <= 10 for line in lines)
    assert lines[-2] == "Sports" and lines[-1].endswith("Women")  # cut in the middle, last
    wide = plot_recommendations(
        _image(0), recs, image_of=lambda r: _image(9), label_key="kind", label_width=60
    )
    assert _labels(wide)[1].endswith(long) and "very-long-folder-name" in _labels(wide)[1]
    with pytest.raises(ValueError, match="label_width"):
        plot_recommendations(_image(0), recs, image_of=lambda r: _image(9), label_width=2)
