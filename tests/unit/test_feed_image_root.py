"""A feed of absolute image paths (issue 25, item 3): ``index`` stores them relative to
the folder the feed implies, so ``serve`` serves them; what it cannot serve is warned
about at ``index``/``add``/``sync`` and at ``serve`` start-up, never silent. Since issue 28
such a feed is read only when the caller trusts it (``--allow-outside-images``,
``allow_outside=True``); tests/hostile/test_feeds_hostile.py has the refusals."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from visualsim import Recommender
from visualsim.cli import main
from visualsim.feeds import ProductFeed


def _photos(folder: Path, names: list[str]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, name in enumerate(names):
        pixels = np.full((32, 32, 3), (40 * i) % 255, dtype=np.uint8)
        Image.fromarray(pixels).save(folder / name)
        out.append((folder / name).resolve())
    return out


def _feed(path: Path, images: list[Path | str]) -> Path:
    rows = [f"P{i},{image},{10 + i}" for i, image in enumerate(images)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("id,image,price\n" + "\n".join(rows) + "\n")
    return path


def cli(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_implied_root(tmp_path: Path) -> None:
    shoes = _photos(tmp_path / "photos" / "shoes", ["a.png"])
    bags = _photos(tmp_path / "photos" / "bags", ["b.png"])
    feed = ProductFeed(_feed(tmp_path / "feeds" / "p.csv", [*shoes, *bags]), allow_outside=True)
    assert feed.implied_root() == (tmp_path / "photos").resolve()
    local = _photos(tmp_path / "feeds" / "img", ["c.png"])
    feed = ProductFeed(_feed(tmp_path / "feeds" / "q.csv", ["img/c.png", str(local[0])]))
    assert feed.implied_root() == feed.root  # all inside the feed's folder: unchanged
    mixed = ProductFeed(
        _feed(tmp_path / "feeds" / "r.csv", ["img/c.png", str(shoes[0])]), allow_outside=True
    )
    assert mixed.implied_root() == tmp_path.resolve()  # the folder holding both


def test_a_feed_of_absolute_paths_is_stored_relative_and_served(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images = _photos(tmp_path / "data" / "photos", ["a.png", "b.png", "c.png"])
    feed = _feed(tmp_path / "shop" / "products.csv", images)
    code, _, err = cli(
        capsys, "index", feed, "-o", tmp_path / "c", "--extractor", "color", "-q",
        "--allow-outside-images",  # a trusted feed of absolute paths (issue 28: opt in)
    )  # fmt: skip
    assert code == 0, err
    assert "warning" not in err
    rec = Recommender.load(tmp_path / "c")
    assert rec.image_root_ == (tmp_path / "data" / "photos").resolve()
    assert rec.source_of("P0") == "a.png"

    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from visualsim.serve import create_app

    with TestClient(create_app(tmp_path / "c", warm=False)) as client:
        reply = client.get("/items/P1/image")
        assert reply.status_code == 200
        assert reply.content == images[1].read_bytes()


def test_paths_outside_the_root_warn_at_index_sync_and_serve(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    inside = _photos(tmp_path / "shop" / "img", ["a.png", "b.png"])
    elsewhere = _photos(tmp_path / "elsewhere", ["x.png"])
    feed = _feed(tmp_path / "shop" / "products.csv", ["img/a.png", str(elsewhere[0])])
    code, _, err = cli(
        capsys, "index", feed, "-o", tmp_path / "c", "--extractor", "color", "-q",
        "--root", tmp_path / "shop", "--allow-outside-images",
    )  # fmt: skip
    assert code == 0, err
    assert "warning: 1 of 2 items' images cannot be served" in err
    assert "x.png" in err and "--root" in err

    _feed(feed, ["img/a.png", str(elsewhere[0]), str(inside[1])])
    code, out, err = cli(
        capsys, "sync", tmp_path / "c", feed, "--root", tmp_path / "shop", "-q",
        "--allow-outside-images",
    )  # fmt: skip
    assert code == 0 and "1 added" in out, err
    assert "warning: 1 of 3 items' images cannot be served" in err  # b.png lies inside

    pytest.importorskip("fastapi")
    from visualsim.serve import create_app

    with caplog.at_level(logging.WARNING, logger="visualsim.serve"):
        create_app(tmp_path / "c", warm=False)
    assert "1 of 3 items' images cannot be served" in caplog.text
    assert "--image-root" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="visualsim.serve"):
        create_app(tmp_path / "c", warm=False, image_root=tmp_path)  # holds them all
    assert "cannot be served" not in caplog.text
