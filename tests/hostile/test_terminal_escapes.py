"""Text printed to a terminal is escaped (issue 28, item 4): ids, metadata values and
failure reasons come from catalogues and feeds that may be a stranger's, and printed raw
an escape sequence (ESC, CR, a bidi override) would drive the shopper's terminal."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from visualsim.cli import main
from visualsim.cli._common import printable

RED = "a\x1b[31mred"
CONTROL = ("\x1b", "\r", "\x07", "\u202e", "\x9b")


def cli(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def _raw(text: str) -> list[str]:
    return [c for c in CONTROL if c in text]


@pytest.fixture
def catalog(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    shop = tmp_path / "shop"
    shop.mkdir()
    rows = []
    ids = [RED, "b\rfake line", "c\u202ecod.exe", "d\x07bell"]
    for i, item_id in enumerate(ids):
        # two pairs of identical pictures, so duplicates finds them
        pixels = np.full((32, 32, 3), 60 * (i // 2), dtype=np.uint8)
        Image.fromarray(pixels).save(shop / f"{i}.png")
        rows.append({"id": item_id, "image": f"{i}.png", "brand": f"x\x1b]0;pwned\x07{i}"})
    feed = shop / "products.jsonl"
    feed.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "c"
    code, _, err = cli(capsys, "index", feed, "-o", out, "--extractor", "color", "-q")
    assert code == 0, err
    return out


def test_printable_escapes_control_characters_and_keeps_unicode() -> None:
    assert printable(RED) == "a\\x1b[31mred"
    assert printable("line\nbreak\r") == "line\\nbreak\\r"
    assert printable("\u202eevil") == "\\u202eevil"
    assert printable("café — 東京") == "café — 東京"
    assert printable(42) == "42"


def test_query_and_similar_print_no_raw_escape(
    catalog: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = cli(capsys, "similar", catalog, RED, "-k", "4", "--label", "brand")
    assert code == 0, err
    assert _raw(out) == [] and _raw(err) == []
    assert "a\\x1b[31mred" in out  # shown, as an escape
    assert "brand=x\\x1b]0;pwned\\x07" in out  # the --label value too
    code, out, err = cli(capsys, "query", catalog, tmp_path / "shop" / "0.png", "-k", "4")
    assert code == 0, err
    assert _raw(out) == [] and _raw(err) == []
    assert "a\\x1b[31mred" in out and "c\\u202ecod.exe" in out


def test_duplicates_and_info_print_no_raw_escape(
    catalog: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for extra in ([], ["--groups"]):
        code, out, err = cli(capsys, "duplicates", catalog, "--min-score", "0.99", *extra)
        assert code == 0, err
        assert _raw(out) == [] and _raw(err) == []
        assert "a\\x1b[31mred" in out
    code, out, err = cli(capsys, "info", catalog)
    assert code == 0, err
    assert _raw(out) == [] and _raw(err) == []


def test_sync_reports_print_no_raw_escape(
    catalog: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    feed = tmp_path / "shop" / "products.jsonl"
    rows = [json.loads(line) for line in feed.read_text().splitlines()]
    rows.append({"id": "e\x1b[2Jgone", "image": "missing.png"})
    rows.append({"id": "f\x1b[1mbad", "image": "bad.png"})
    (tmp_path / "shop" / "bad.png").write_bytes(b"not an image")
    feed.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, out, err = cli(capsys, "sync", catalog, feed)
    assert code == 0, err
    assert _raw(out) == [] and _raw(err) == []
    assert "f\\x1b[1mbad" in err  # the unreadable image's id, escaped
