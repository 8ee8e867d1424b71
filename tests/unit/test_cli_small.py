"""Small things of the command line (issue 25, item 9): a repeated ``--label``, the
``--where`` help, singular counts, and ``evaluate``'s progress bar off a terminal."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from visualsim import ColorHistogramExtractor, Recommender
from visualsim.cli import build_parser, main


@pytest.fixture
def catalog(tmp_path: Path) -> Path:
    ext = ColorHistogramExtractor()
    rng = np.random.default_rng(0)
    vectors = rng.random((6, ext.dim), dtype=np.float32)
    metas = [{"category": ["shoes", "bags"][i % 2], "color": "red"} for i in range(6)]
    rec = Recommender(ext).add_vectors(vectors, [f"p{i}" for i in range(6)], metas)
    return rec.save(tmp_path / "c.catalog")


def cli(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_a_repeated_label_of_evaluate_is_a_usage_error_naming_both(
    catalog: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = cli(
        capsys, "evaluate", catalog, "--label", "category", "--label", "color", "-k", "1"
    )
    assert code == 2 and not out
    assert "--label given twice ('category', then 'color')" in err
    code, _, err = cli(capsys, "adapt", catalog, "--label", "a", "--label", "b", "-o", "x")
    assert code == 2 and "--label given twice" in err


def test_query_shows_every_label_given(catalog: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "similar", catalog, "p0", "-k", "2", "--label", "category")
    assert code == 0 and "category=" in out and "color=" not in out
    code, out, _ = cli(
        capsys, "similar", catalog, "p0", "-k", "2", "--label", "category", "--label", "color"
    )
    assert code == 0
    rows = [line for line in out.splitlines() if line.strip()[:1].isdigit()]
    assert rows and all("category=" in r and "color=red" in r for r in rows)


def test_one_removed_item_is_singular(catalog: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "remove", catalog, "p1")
    assert code == 0 and out.startswith("removed 1 item from ") and "(5 left)" in out
    code, out, _ = cli(capsys, "remove", catalog, "p2", "p3")
    assert code == 0 and out.startswith("removed 2 items from ")


def test_one_failed_image_is_singular(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from PIL import Image

    (tmp_path / "imgs").mkdir()
    Image.new("RGB", (16, 16), (200, 0, 0)).save(tmp_path / "imgs" / "red.png")
    (tmp_path / "imgs" / "broken.jpg").write_bytes(b"not an image")
    code, out, err = cli(
        capsys, "index", tmp_path / "imgs", "-o", tmp_path / "c", "--extractor", "color", "-q"
    )
    assert code == 0 and out.startswith("indexed 1 image into ")
    assert "1 could not be read and was skipped:" in err


def test_where_help_describes_the_filter_language() -> None:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    helptext = next(a.help for a in sub.choices["query"]._actions if a.dest == "where")  # type: ignore[attr-defined]
    assert helptext is not None
    for part in ("==", "<=", "in [", "not in", "and", "or", "backticks", "in_stock", "KEY=VALUE"):
        assert part in helptext, part


def test_evaluate_uses_the_one_progress_bar_owner(
    catalog: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Off a terminal (here: captured stderr) the bar refreshes once a minute, as extraction's."""
    from visualsim.evaluation import evaluate
    from visualsim.extractors import base

    bars = []
    real = base._progress_bar

    def recording(*args: object, **kwargs: object) -> object:
        bar = real(*args, **kwargs)  # type: ignore[arg-type]
        bars.append((kwargs, bar))
        return bar

    monkeypatch.setattr(base, "_progress_bar", recording)
    evaluate(Recommender.load(catalog), "category", k=1, progress=True)
    assert bars, "evaluate did not use extractors.base._progress_bar"
    kwargs, bar = bars[0]
    assert kwargs["unit"] == "query" and bar.mininterval == 60.0
    assert "6/6" in capsys.readouterr().err
