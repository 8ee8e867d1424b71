"""``visualsim serve --sync-feed F --allow-outside-images``: POST /sync may read the feed's
image paths outside the feed's folder only when the operator says so; and the CLI passes
the connection guard's per-client options through to ``run``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from visualsim import ColorHistogramExtractor, Recommender
from visualsim.errors import ConfigError
from visualsim.serve import create_app
from visualsim.serve import server as serve_server

KEY = "sync-outside-key-123"
AUTH = {"Authorization": f"Bearer {KEY}"}


def photo(path: Path, colour: tuple[int, int, int]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((32, 32, 3), colour, dtype=np.uint8)).save(path)
    return path


@pytest.fixture()
def shop(tmp_path: Path) -> tuple[Path, Path]:
    """A catalogue of one item, and a feed listing it and an image outside the feed's folder."""
    inside = photo(tmp_path / "feed" / "a.png", (200, 0, 0))
    outside = photo(tmp_path / "elsewhere" / "b.png", (0, 0, 200))
    feed = tmp_path / "feed" / "products.csv"
    feed.write_text(f"id,image\nA,a.png\nB,{outside}\nC,../elsewhere/b.png\n")
    rec = Recommender(ColorHistogramExtractor(), image_root=tmp_path / "feed")
    rec.fit([str(inside)], ids=["A"], progress=False)
    return rec.save(tmp_path / "shop.catalog"), feed


def test_sync_refuses_images_outside_the_feeds_folder_unless_allowed(
    shop: tuple[Path, Path],
) -> None:
    catalog, feed = shop
    with TestClient(create_app(catalog, api_key=KEY, warm=False, sync_feed=feed)) as client:
        reply = client.post("/sync", headers=AUTH)
        assert reply.status_code == 422  # the whole feed is refused, nothing changed
        assert "lies outside the feed's image root" in reply.json()["detail"]
        assert "--allow-outside-images" in reply.json()["detail"]
        assert str(feed.parent) not in reply.text
        assert client.get("/health").json()["items"] == 1
    app = create_app(catalog, api_key=KEY, warm=False, sync_feed=feed, sync_allow_outside=True)
    with TestClient(app) as client:
        reply = client.post("/sync", headers=AUTH)
        assert reply.status_code == 200, reply.text
        doc = reply.json()
        assert doc["failed"] == [] and sorted(doc["added"]) == ["B", "C"] and doc["items"] == 3
        assert str(feed.parent.parent) not in reply.text  # no server path in the answer


def test_allow_outside_images_needs_a_sync_feed(shop: tuple[Path, Path]) -> None:
    catalog, feed = shop
    with pytest.raises(ConfigError, match="needs sync_feed"):
        create_app(catalog, api_key=KEY, warm=False, sync_allow_outside=True)
    with pytest.raises(ConfigError, match="True or False"):
        create_app(catalog, api_key=KEY, warm=False, sync_feed=feed, sync_allow_outside="yes")
    args = serve_server.build_parser().parse_args([str(catalog), "--allow-outside-images"])
    with pytest.raises(ConfigError, match="--allow-outside-images needs --sync-feed"):
        serve_server.serve_from_args(args)


def test_the_cli_passes_the_new_options_to_run(
    shop: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    catalog, feed = shop
    seen: dict[str, Any] = {}
    monkeypatch.setattr(serve_server, "run", lambda catalog, **kw: seen.update(kw))
    argv = [str(catalog), "--sync-feed", str(feed), "--api-key-env", "K"]
    argv += ["--allow-outside-images", "--max-connections-per-client", "7"]
    argv += ["--min-upload-rate", "512", "--upload-grace", "3"]
    serve_server.serve_from_args(serve_server.build_parser().parse_args(argv))
    assert seen["sync_allow_outside"] is True and seen["max_connections_per_client"] == 7
    assert (seen["min_upload_rate"], seen["upload_grace"]) == (512.0, 3.0)
    serve_server.serve_from_args(serve_server.build_parser().parse_args([str(catalog)]))
    assert seen["sync_allow_outside"] is False and seen["max_connections_per_client"] is None
    for flag, value, match in (
        ("--max-connections-per-client", "-1", "0 \\(no limit\\) or more"),
        ("--min-upload-rate", "-5", "--min-upload-rate"),
        ("--upload-grace", "0", "--upload-grace must be a positive"),
    ):
        args = serve_server.build_parser().parse_args([str(catalog), flag, value])
        with pytest.raises(ConfigError, match=match):
            serve_server.serve_from_args(args)


def test_client_options_are_checked_and_defaulted() -> None:
    check = serve_server.check_client_options
    assert check(None, None, None, 1000) == (250, 1024.0, 10.0)  # a quarter of the cap
    assert check(None, None, None, 3) == (1, 1024.0, 10.0)
    assert check(0, 0, 1, 1000) == (0, 0.0, 1.0)  # 0: no per-address limit, no rate
    assert check(5000, "2048", 2.5, 1000) == (1000, 2048.0, 2.5)  # at most the cap
    for bad, match in (
        ((-1, None, None), "0 \\(no limit\\) or more"),
        ((2.5, None, None), "whole number"),
        ((True, None, None), "whole number"),
        ((None, -1, None), "min_upload_rate"),
        ((None, "fast", None), "bytes a second"),
        ((None, float("inf"), None), "min_upload_rate"),
        ((None, None, 0), "upload_grace must be a positive"),
    ):
        with pytest.raises(ConfigError, match=match):
            check(*bad, 1000)
