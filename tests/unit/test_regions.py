"""Several products in one photo: locate_products, query_regions, the CLI and HTTP."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from visualsim import ColorHistogramExtractor, Recommender, SyntheticProducts
from visualsim.crop import Region, locate_products
from visualsim.errors import ConfigError
from visualsim.serve import create_app

PRODUCTS = SyntheticProducts(20, seed=5, size=96)


def flat_lay(picks: list[int], *, scale: float = 1.0) -> np.ndarray:
    """Catalogue products laid side by side on white, a gap between them."""
    side = int(96 * scale)
    canvas = np.full((side + 40, len(picks) * (side + 40) + 40, 3), 255, np.uint8)
    for n, i in enumerate(picks):
        img = Image.fromarray(PRODUCTS[i].image).resize((side, side))
        x = 40 + n * (side + 40)
        canvas[20 : 20 + side, x : x + side] = np.asarray(img)
    return canvas


def test_flat_lay_gives_one_region_per_product() -> None:
    regions = locate_products(flat_lay([2, 7, 11]))
    assert len(regions) == 3 and all(isinstance(r, Region) for r in regions)
    assert sum(r.score for r in regions) <= 1.0 + 1e-9
    assert [r.score for r in regions] == sorted((r.score for r in regions), reverse=True)
    lefts = sorted(r.box[0] for r in regions)
    assert lefts[0] < 136 <= lefts[1] < 272 <= lefts[2]  # one in each product's slot
    assert locate_products(flat_lay([2, 7, 11]), max_regions=2) == regions[:2]


def test_specks_and_blank_photos_give_nothing() -> None:
    blank = np.full((120, 200, 3), 255, np.uint8)
    assert locate_products(blank) == []
    specked = blank.copy()
    specked[10:12, 10:12] = 0  # dust, not a product
    assert locate_products(specked) == []
    assert locate_products(np.zeros((8, 8, 3), np.uint8)) == []
    with pytest.raises(ConfigError, match="max_regions"):
        locate_products(blank, max_regions=0)


def test_a_scene_gives_the_regions_in_focus() -> None:
    rng = np.random.default_rng(0)
    scene = np.zeros((240, 360, 3), np.uint8)
    scene[..., 0] = np.linspace(60, 200, 360).astype(np.uint8)  # smooth, out of focus
    scene[..., 1] = 120
    scene[30:110, 30:110] = rng.integers(0, 255, (80, 80, 3))  # two detailed products
    scene[130:220, 220:330] = rng.integers(0, 255, (90, 110, 3))
    boxes = sorted(r.box for r in locate_products(scene))
    assert len(boxes) == 2
    (l1, t1, r1, b1), (l2, t2, r2, b2) = boxes
    assert abs(l1 - 30) <= 6 and abs(t1 - 30) <= 6 and abs(r1 - 110) <= 6 and abs(b1 - 110) <= 6
    assert abs(l2 - 220) <= 6 and abs(t2 - 130) <= 6 and abs(r2 - 330) <= 6 and abs(b2 - 220) <= 6


@pytest.fixture(scope="module")
def rec() -> Recommender:
    return Recommender(ColorHistogramExtractor()).fit(PRODUCTS, progress=False)


def test_query_regions_finds_each_product(rec: Recommender) -> None:
    picks = [3, 14]
    found = rec.query_regions(flat_lay(picks, scale=1.5), k=3)
    assert len(found) == 2
    tops = {r.results[0].id for r in found}
    assert tops == {PRODUCTS[i].id for i in picks}
    doc = json.loads(json.dumps(found[0].to_dict()))
    assert set(doc) == {"box", "score", "results"} and len(doc["results"]) == 3
    # nothing stands out: one region, the whole photo
    blank = np.full((50, 80, 3), 255, np.uint8)
    whole = rec.query_regions(blank, k=2)
    assert [(r.box, r.score) for r in whole] == [((0, 0, 80, 50), 1.0)]
    assert len(rec.query_regions(flat_lay([1, 2, 3, 4]), max_regions=2)) == 2


def png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "PNG")
    return buf.getvalue()


def test_http_query_regions(rec: Recommender) -> None:
    lay = flat_lay([3, 14], scale=1.5)
    with TestClient(create_app(rec)) as client:
        r = client.post("/query/regions", params={"k": 2}, content=png(lay))
        assert r.status_code == 200, r.text
        regions = r.json()["regions"]
        assert {x["results"][0]["id"] for x in regions} == {PRODUCTS[3].id, PRODUCTS[14].id}
        for x in regions:
            left, top, right, bottom = x["box"]
            assert 0 <= left < right <= lay.shape[1] and 0 <= top < bottom <= lay.shape[0]
            assert 0 < x["score"] <= 1 and len(x["results"]) == 2
        files = {"image": ("lay.png", png(lay), "image/png")}
        one = client.post("/query/regions", params={"max_regions": 1}, files=files).json()
        assert len(one["regions"]) == 1
        bad = client.post("/query/regions", params={"max_regions": 0}, content=png(lay))
        assert bad.status_code == 422
        assert client.post("/query/regions", content=b"not an image").status_code == 422


def test_cli_query_regions(
    rec: Recommender, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from visualsim.cli import main

    rec.save(tmp_path / "c")
    photo = tmp_path / "lay.png"
    photo.write_bytes(png(flat_lay([3, 14], scale=1.5)))
    assert main(["query", str(tmp_path / "c"), str(photo), "--regions", "-k", "1"]) == 0
    out = capsys.readouterr().out
    assert out.count("product ") == 2 and PRODUCTS[3].id in out and PRODUCTS[14].id in out
    assert main(["query", str(tmp_path / "c"), str(photo), "--regions", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert len(doc["regions"]) == 2 and doc["query"] == str(photo)
    assert main(["query", str(tmp_path / "c"), str(photo), "--regions", "--box", "0,0,5,5"]) == 2
    assert "--regions" in capsys.readouterr().err
