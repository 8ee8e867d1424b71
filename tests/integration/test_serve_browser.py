"""The search-by-photo page in a real headless Chromium (Debian's /usr/bin/chromium).

Run with ``make test-browser`` or
``python -m pytest -m browser tests/integration/test_serve_browser.py``.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import uvicorn

from visualsim import ColorHistogramExtractor, Recommender, SyntheticProducts
from visualsim.serve import create_app

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("VISUALSIM_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
N = 40
SHOTS = (
    Path(os.environ.get("VISUALSIM_SCREENSHOTS", ""))
    if os.environ.get("VISUALSIM_SCREENSHOTS")
    else None
)


def _catalogue(root: Path) -> tuple[Recommender, list[Path], SyntheticProducts]:
    ds = SyntheticProducts(N, size=96)
    paths = ds.write_folder(root, format="png")
    rec = Recommender(ColorHistogramExtractor(), image_root=root).fit(
        [str(p) for p in paths],
        ids=[ds[i].id for i in range(N)],
        metadata=[dict(ds[i].metadata, price=5 + i) for i in range(N)],
        progress=False,
    )
    return rec, paths, ds


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, list[Path]]]:
    root = tmp_path_factory.mktemp("browser")
    rec, paths, _ = _catalogue(root)
    with _serving(rec, root) as url:
        yield url, paths


@pytest.fixture(scope="module")
def twin_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, list[Path]]]:
    """The same catalogue with photo 3's pixels stored again as item ``twin``."""
    root = tmp_path_factory.mktemp("browser-twins")
    rec, paths, ds = _catalogue(root)
    rec.add(
        [np.asarray(ds[3].image)],
        ids=["twin"],
        metadata=[rec.metadata_of(ds[3].id)],
        progress=False,
    )
    with _serving(rec, root) as url:
        yield url, paths


@contextlib.contextmanager
def _serving(rec: Recommender, root: Path) -> Iterator[str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(rec, image_root=root), log_config=None, access_log=False)
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    for _ in range(400):
        if server.started:
            break
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture()
def page(browser: Any, site: tuple[str, list[Path]]) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.goto(site[0])
    pg.wait_for_selector("#browse button.item")
    yield pg
    context.close()
    assert not errors, errors


def shot(pg: Any, name: str, *, full_page: bool = True) -> None:
    if SHOTS is not None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        pg.screenshot(path=str(SHOTS / f"{name}.png"), full_page=full_page)


def result_ids(pg: Any) -> list[str]:
    return pg.eval_on_selector_all("#results button.item", "els => els.map(e => e.dataset.id)")


def wait_images_loaded(pg: Any, count: int) -> None:
    pg.wait_for_function(
        """n => { const imgs = [...document.querySelectorAll('#results img')];
                  return imgs.length === n
                         && imgs.every(i => i.complete && i.naturalWidth > 0); }""",
        arg=count,
    )


def wait_settled(pg: Any) -> None:
    """Until the latest search has answered (the grid is busy from request to answer)."""
    pg.wait_for_function(
        "() => document.querySelector('#results').getAttribute('aria-busy') === 'false'"
    )


def upload(pg: Any, path: Path) -> None:
    pg.set_input_files("#photo", str(path))
    wait_settled(pg)
    pg.wait_for_function(
        "() => /\\d+ results?/.test(document.querySelector('#status').textContent)"
    )


def test_upload_a_photo_and_see_k_results_load(page: Any, site: tuple[str, list[Path]]) -> None:
    page.select_option("#k", "6")
    upload(page, site[1][3])
    wait_images_loaded(page, 6)
    ids = result_ids(page)
    assert len(ids) == 6 and ids[0] == "synthetic-000003"
    # the cosine is on each card for developers (data-score), shown only on request
    scores = [
        float(s)
        for s in page.eval_on_selector_all(
            "#results button.item", "els => els.map(e => e.dataset.score)"
        )
    ]
    assert scores == sorted(scores, reverse=True) and scores[0] > 0.99
    assert not any(page.locator("#results .score").nth(i).is_visible() for i in range(6))
    assert page.is_visible("#show-scores") and not page.is_checked("#show-scores")
    label = page.get_attribute("#results button.item >> nth=0", "aria-label")
    assert label.startswith("Show items similar to synthetic-000003") and "score" not in label
    page.check("#show-scores")
    texts = page.eval_on_selector_all("#results .score", "els => els.map(e => e.innerText)")
    assert texts == [f"Match {s:.3f}" for s in scores]
    label = page.get_attribute("#results button.item >> nth=0", "aria-label")
    assert label.endswith(f"match score {scores[0]:.3f}")
    shot(page, "upload")
    page.uncheck("#show-scores")
    assert not page.locator("#results .score").first.is_visible()


def test_a_filter_narrows_the_results(page: Any, site: tuple[str, list[Path]]) -> None:
    page.select_option("#k", "12")
    upload(page, site[1][0])
    page.select_option("#f-category", "shoes")
    page.wait_for_function(
        "() => document.querySelector('#status').textContent.includes(\"category == 'shoes'\")"
    )
    metas = page.eval_on_selector_all(
        "#results .fact[data-field=category]", "els => els.map(e => e.textContent)"
    )
    assert len(metas) == len(result_ids(page)) > 0 and set(metas) == {"Category: shoes"}
    page.fill("#f-price-max", "20")
    page.dispatch_event("#f-price-max", "change")
    page.wait_for_function(
        "() => document.querySelector('#status').textContent.includes('price <= 20')"
    )
    ids = result_ids(page)
    shoes = [f"synthetic-{i:06d}" for i in range(N) if i % 5 == 2 and 5 + i <= 20]
    assert sorted(ids) == sorted(shoes)
    shot(page, "filtered")


def test_click_a_result_to_see_its_similar_items(page: Any, site: tuple[str, list[Path]]) -> None:
    page.select_option("#k", "6")
    upload(page, site[1][8])
    wait_images_loaded(page, 6)
    second = result_ids(page)[1]
    page.click(f"#results button.item[data-id='{second}']")
    page.wait_for_function(
        "id => document.querySelector('#query-label').textContent === 'Similar to ' + id",
        arg=second,
    )
    # the label changes at once, the grid only when the answer arrives: until then it
    # still shows the photo's results, which include `second`
    wait_settled(page)
    wait_images_loaded(page, 6)
    assert second not in result_ids(page)
    assert page.evaluate("document.querySelector('#query-image').naturalWidth") > 0


def test_click_a_catalogue_item(page: Any) -> None:
    page.click("#browse button.item[data-id='synthetic-000004']")
    page.wait_for_function(
        "() => document.querySelector('#query-label').textContent === 'Similar to synthetic-000004'"
    )
    wait_images_loaded(page, 12)
    assert "synthetic-000004" not in result_ids(page)


def test_everything_is_reachable_by_keyboard(page: Any, site: tuple[str, list[Path]]) -> None:
    seen: list[str] = []
    for _ in range(30):
        page.keyboard.press("Tab")
        seen.append(
            page.evaluate(
                "() => { const e = document.activeElement; "
                "return e.id || e.className || e.tagName; }"
            )
        )
    assert "photo" in seen and "k" in seen and "f-category" in seen and "item" in seen
    # choose a catalogue item with the keyboard alone
    page.focus("#browse button.item[data-id='synthetic-000002']")
    page.keyboard.press("Enter")
    page.wait_for_function(
        "() => document.querySelector('#query-label').textContent === 'Similar to synthetic-000002'"
    )
    # once the results are in, focus moves to their heading for screen-reader users
    page.wait_for_function("() => document.activeElement.id === 'results-heading'")
    labels = page.eval_on_selector_all(
        "input, select",
        "els => els.filter(e => !e.labels.length && !e.getAttribute('aria-label')).map(e => e.id)",
    )
    assert labels == []


def test_one_per_photo_hides_a_repeated_photo_until_unticked(
    browser: Any, twin_site: tuple[str, list[Path]]
) -> None:
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.goto(twin_site[0])
    pg.wait_for_selector("#browse button.item")
    box = pg.locator("#distinct")
    assert box.is_visible() and box.is_checked()
    assert pg.evaluate("document.querySelector('#distinct').labels[0].textContent") == (
        "One per photo"
    )
    copies = {"synthetic-000003", "twin"}
    pg.select_option("#k", "6")
    upload(pg, twin_site[1][3])
    wait_images_loaded(pg, 6)
    once = result_ids(pg)
    assert len(once) == 6 and once[0] in copies and len(copies & set(once)) == 1
    pg.uncheck("#distinct")  # re-runs the search: both copies, at the top
    pg.wait_for_function(
        "() => [...document.querySelectorAll('#results button.item')]"
        ".filter(e => ['synthetic-000003', 'twin'].includes(e.dataset.id)).length === 2"
    )
    wait_settled(pg)
    every = result_ids(pg)
    assert len(every) == 6 and set(every[:2]) == copies
    assert every[2:] == once[1:5]  # the next photo moved down to make room for the copy
    shot(pg, "every-copy")
    pg.check("#distinct")  # and back
    pg.wait_for_function(
        "() => [...document.querySelectorAll('#results button.item')]"
        ".filter(e => ['synthetic-000003', 'twin'].includes(e.dataset.id)).length === 1"
    )
    wait_settled(pg)
    assert result_ids(pg) == once
    context.close()
    assert not errors, errors


def test_fits_a_phone_screen(browser: Any, site: tuple[str, list[Path]]) -> None:
    context = browser.new_context(viewport={"width": 375, "height": 740}, is_mobile=True)
    pg = context.new_page()
    pg.goto(site[0])
    pg.wait_for_selector("#browse button.item")
    pg.set_input_files("#photo", str(site[1][1]))
    wait_images_loaded(pg, 12)
    overflow = pg.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0
    shot(pg, "phone")
    context.close()


def test_drop_a_photo_on_the_page(page: Any, site: tuple[str, list[Path]]) -> None:
    import base64

    data = base64.b64encode(site[1][6].read_bytes()).decode()
    transfer = page.evaluate_handle(
        """b64 => { const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
                    const dt = new DataTransfer();
                    dt.items.add(new File([bytes], 'dropped.png', {type: 'image/png'}));
                    return dt; }""",
        data,
    )
    page.select_option("#k", "6")
    page.dispatch_event("#drop", "drop", {"dataTransfer": transfer})
    wait_images_loaded(page, 6)
    assert result_ids(page)[0] == "synthetic-000006"
    assert page.text_content("#query-label") == "Your photo"


def test_a_file_that_is_not_an_image_shows_the_servers_reason(page: Any, tmp_path: Path) -> None:
    bogus = tmp_path / "notes.png"
    bogus.write_bytes(b"this is not a picture")
    page.set_input_files("#photo", str(bogus))
    page.wait_for_function("() => document.querySelector('#status').classList.contains('error')")
    assert "not an image" in page.text_content("#status")


def test_draw_a_box_on_the_photo_to_search_that_region(
    page: Any, site: tuple[str, list[Path]], tmp_path: Path
) -> None:
    from PIL import Image

    # product 11 pasted on a 5x5 mosaic of other products: 480 px, shown scaled to fit
    ds = SyntheticProducts(N, size=96)
    tiles = [[ds[(11 + 1 + 5 * r + c) % N].image for c in range(5)] for r in range(5)]
    scene = np.concatenate([np.concatenate(row, 1) for row in tiles])
    left, top = 200, 150
    scene[top : top + 96, left : left + 96] = ds[11].image
    path = tmp_path / "scene.png"
    Image.fromarray(scene).save(path)
    requests: list[str] = []
    page.on("request", lambda req: requests.append(req.url) if "/query" in req.url else None)
    page.select_option("#k", "6")
    upload(page, path)
    wait_images_loaded(page, 6)
    before = result_ids(page)
    assert page.is_visible("#box-help") and not page.is_visible("#clear-box")
    rect = page.evaluate(
        "() => { const r = document.querySelector('#query-image').getBoundingClientRect();"
        " return [r.left, r.top, r.width, r.height]; }"
    )
    x, y, w, h = rect
    scale = w / scene.shape[1]
    assert abs(h / scene.shape[0] - scale) < 0.01  # the whole photo, its aspect kept
    assert scale < 0.95  # shown smaller than its own pixels: the box must be scaled back
    page.mouse.move(x + (left + 1) * scale, y + (top + 1) * scale)
    page.mouse.down()
    page.mouse.move(x + (left + 50) * scale, y + (top + 50) * scale, steps=4)
    page.mouse.move(x + (left + 95) * scale, y + (top + 95) * scale, steps=4)
    assert page.is_visible("#box-overlay")  # drawn while dragging
    page.mouse.up()
    page.wait_for_function(
        "() => document.querySelector('#status').textContent.includes('for the boxed region')"
    )
    wait_settled(page)
    wait_images_loaded(page, 6)
    boxed = [u for u in requests if "box=" in u]
    assert len(boxed) == 1
    from urllib.parse import parse_qs, urlparse

    sent = [float(v) for v in parse_qs(urlparse(boxed[0]).query)["box"][0].split(",")]
    want = [left + 1, top + 1, left + 95, top + 95]
    assert all(abs(a - b) <= 2 / scale for a, b in zip(sent, want, strict=True)), sent
    after = result_ids(page)
    assert after[0] == "synthetic-000011" and after != before
    assert page.is_visible("#clear-box") and page.is_visible("#box-overlay")
    shot(page, "boxed")
    # clearing the box searches the whole photo again
    page.click("#clear-box")
    page.wait_for_function(
        "() => !document.querySelector('#status').textContent.includes('boxed')"
        " && document.querySelector('#results').getAttribute('aria-busy') === 'false'"
    )
    assert not page.is_visible("#box-overlay") and not page.is_visible("#clear-box")
    assert "box=" not in requests[-1]
    wait_images_loaded(page, 6)
    assert result_ids(page) == before


def _blurred_scene(tmp_path: Path, target: int) -> tuple[Path, tuple[int, int, int, int]]:
    """Product ``target``'s photo, sharp, on an out-of-focus scene of coloured blocks (480 px)."""
    from PIL import Image, ImageFilter

    ds = SyntheticProducts(N, size=96)
    rng = np.random.default_rng(target)
    blocks = rng.integers(0, 255, (6, 6, 3)).astype(np.uint8)
    scene = Image.fromarray(blocks).resize((480, 480), Image.NEAREST)
    scene = scene.filter(ImageFilter.GaussianBlur(10))
    left, top = 260, 120
    scene.paste(Image.fromarray(ds[target].image), (left, top))
    path = tmp_path / f"scene-{target}.png"
    scene.save(path)
    return path, (left, top, left + 96, top + 96)


def test_find_the_product_searches_the_region_the_server_found(page: Any, tmp_path: Path) -> None:
    path, (left, top, right, bottom) = _blurred_scene(tmp_path, 14)
    requests: list[str] = []
    page.on("request", lambda req: requests.append(req.url) if "/query" in req.url else None)
    page.select_option("#k", "6")
    upload(page, path)
    assert page.is_visible("#locate-box")
    page.click("#locate-box")
    page.wait_for_function(
        "() => document.querySelector('#status').textContent.includes('for the boxed region')"
    )
    wait_settled(page)
    assert any("box=locate" in u for u in requests)
    assert result_ids(page)[0] == "synthetic-000014"
    assert page.is_visible("#box-overlay") and page.is_visible("#clear-box")
    text = page.text_content("#box-text")
    numbers = [int(v) for v in re.findall(r"\d+", text)[:4]]
    want = [left, top, right, bottom]
    assert all(abs(a - b) <= 16 for a, b in zip(numbers, want, strict=True)), numbers
    shot(page, "located")


def test_draw_a_box_with_a_finger(
    browser: Any, site: tuple[str, list[Path]], tmp_path: Path
) -> None:
    path, (left, top, _, _) = _blurred_scene(tmp_path, 17)
    context = browser.new_context(viewport={"width": 390, "height": 800}, has_touch=True)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.goto(site[0])
    pg.wait_for_selector("#browse button.item")
    pg.select_option("#k", "6")
    upload(pg, path)
    pg.locator("#query-image").scroll_into_view_if_needed()
    x, y, w, _h = pg.evaluate(
        "() => { const r = document.querySelector('#query-image').getBoundingClientRect();"
        " return [r.left, r.top, r.width, r.height]; }"
    )
    scale = w / 480
    cdp = context.new_cdp_session(pg)

    def touch(kind: str, px: float, py: float) -> None:
        points = [] if kind == "touchEnd" else [{"x": x + px * scale, "y": y + py * scale}]
        cdp.send("Input.dispatchTouchEvent", {"type": kind, "touchPoints": points})

    touch("touchStart", left + 2, top + 2)
    for f in (0.3, 0.6, 1.0):
        touch("touchMove", left + 2 + f * 90, top + 2 + f * 90)
    touch("touchEnd", 0, 0)
    pg.wait_for_function(
        "() => document.querySelector('#status').textContent.includes('for the boxed region')"
    )
    wait_settled(pg)
    assert result_ids(pg)[0] == "synthetic-000017"
    assert pg.is_visible("#box-overlay")
    shot(pg, "touch-box")
    context.close()
    assert not errors, errors


@pytest.fixture(scope="module")
def styles_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, list[Path]]]:
    """70 items, each its own ``style`` (too many values for a drop-down)."""
    root = tmp_path_factory.mktemp("browser-styles")
    ds = SyntheticProducts(70, size=64)
    paths = ds.write_folder(root, format="png")
    rec = Recommender(ColorHistogramExtractor(), image_root=root).fit(
        [str(p) for p in paths],
        ids=[ds[i].id for i in range(70)],
        metadata=[{"style": f"Style {i:03d}"} for i in range(70)],
        progress=False,
    )
    with _serving(rec, root) as url:
        yield url, paths


def test_a_field_with_many_values_suggests_them_and_hints_at_a_wrong_case(
    browser: Any, styles_site: tuple[str, list[Path]]
) -> None:
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.goto(styles_site[0])
    pg.wait_for_selector("#browse button.item")
    assert pg.get_attribute("#f-style", "list") == "dl-style"  # a text box, not a drop-down
    pg.click("#f-style")
    pg.keyboard.type("style 01")
    pg.wait_for_function("() => document.querySelectorAll('#dl-style option').length === 10")
    options = pg.eval_on_selector_all("#dl-style option", "els => els.map(e => e.value)")
    assert options == [f"Style {i:03d}" for i in range(10, 20)]
    upload(pg, styles_site[1][12])
    pg.fill("#f-style", "style 012")  # the wrong case: no item has it
    pg.dispatch_event("#f-style", "change")
    pg.wait_for_function(
        "() => document.querySelector('#status').textContent.includes('did you mean')"
    )
    assert "did you mean 'Style 012'?" in pg.text_content("#status")
    pg.fill("#f-style", "Style 012")
    pg.dispatch_event("#f-style", "change")
    pg.wait_for_function("() => /^1 result/.test(document.querySelector('#status').textContent)")
    assert result_ids(pg) == ["synthetic-000012"]
    context.close()
    assert not errors, errors


def test_products_in_this_photo_marks_each_and_picks_one(
    page: Any, site: tuple[str, list[Path]], tmp_path: Path
) -> None:
    from PIL import Image

    shots = [Image.open(site[1][i]).convert("RGB").resize((150, 150)) for i in (4, 21)]
    lay = Image.new("RGB", (420, 200), "white")  # a flat lay: two products on white
    lay.paste(shots[0], (30, 25))
    lay.paste(shots[1], (240, 25))
    photo = tmp_path / "flat-lay.png"
    lay.save(photo)
    page.select_option("#k", "6")
    upload(page, photo)
    page.click("#find-regions")
    page.wait_for_function("() => document.querySelectorAll('#regions .region-pick').length === 2")
    assert page.eval_on_selector_all("#region-marks .region-mark", "els => els.length") == 2
    wait_settled(page)
    first = result_ids(page)
    boxes = page.eval_on_selector_all("#regions .region-pick", "els => els.map(e => e.dataset.box)")
    lefts = sorted(int(b.split(",")[0]) for b in boxes)
    assert lefts[0] < 200 <= lefts[1]  # one box on each product, in the photo's pixels
    tops = {first[0]}
    page.click("#regions .region-pick:nth-child(2)")
    page.wait_for_function(
        "first => { const b = document.querySelector('#results button.item');"
        " return b && b.dataset.id !== first; }",
        arg=first[0],
    )
    wait_settled(page)
    tops.add(result_ids(page)[0])
    assert tops == {"synthetic-000004", "synthetic-000021"}
    assert not page.is_hidden("#box-text")  # the picked product's box is the search region
    shot(page, "regions")


# -- the page for customers: nothing empty before a search, cards a shop would show, a
# phone taken to its results, and the screenshots in docs/serving.md --------------------


def test_nothing_empty_shows_before_a_search(page: Any) -> None:
    # [hidden] beats the query view's display:flex, and the grid waits for results
    assert page.evaluate("getComputedStyle(document.querySelector('#query-view')).display") == (
        "none"
    )
    for sel in ("#query-view", "#results", "#status", "#score-toggle"):
        assert not page.is_visible(sel), sel
    assert page.is_visible("#results-intro")
    panel = page.evaluate(
        "() => { const s = document.querySelector('#results-heading').parentElement;"
        " const kids = [...s.children].filter(e => e.getBoundingClientRect().height > 0);"
        " return kids.map(e => e.id); }"
    )
    assert panel == ["results-heading", "results-intro"]


@pytest.fixture(scope="module")
def shop_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, list[Path]]]:
    """A shop's catalogue: names, prices in cents, stock as booleans, snake_case fields."""
    root = tmp_path_factory.mktemp("browser-shop")
    ds = SyntheticProducts(N, size=128)
    paths = ds.write_folder(root, format="png")
    metadata = [
        {
            "name": f"{ds[i].metadata['color'].title()} {ds[i].metadata['category']}",
            "category": ds[i].metadata["category"],
            "price": round(7.4 + 2.35 * i, 2),
            "in_stock": i % 3 != 0,
            "product_colour": ds[i].metadata["color"],
            "pattern": ds[i].metadata["pattern"],
        }
        for i in range(N)
    ]
    rec = Recommender(ColorHistogramExtractor(), image_root=root).fit(
        [str(p) for p in paths],
        ids=[ds[i].id for i in range(N)],
        metadata=metadata,
        progress=False,
    )
    with _serving(rec, root) as url:
        yield url, paths


def _open(browser: Any, url: str, **options: Any) -> tuple[Any, Any, list[str]]:
    context = browser.new_context(**options)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.goto(url)
    pg.wait_for_selector("#browse button.item")
    return context, pg, errors


def test_cards_read_like_a_shop(browser: Any, shop_site: tuple[str, list[Path]]) -> None:
    context, pg, errors = _open(
        browser, shop_site[0], viewport={"width": 1200, "height": 900}, locale="en-US"
    )
    pg.select_option("#k", "6")
    upload(pg, shop_site[1][0])
    wait_images_loaded(pg, 6)
    first = pg.locator("#results button.item").first
    assert first.get_attribute("data-id") == "synthetic-000000"
    facts = first.locator(".fact").all_inner_texts()
    # the name as the card's title; the price first, to two decimals; booleans as yes/no;
    # field names humanised; four facts at most (the pattern left out)
    assert facts == ["Price: 7.40", "Category: t-shirt", "In stock: no", "Product colour: black"]
    assert first.locator(".name").inner_text() == "Black t-shirt"
    assert first.locator(".id").inner_text() == "synthetic-000000"  # still there, smaller
    in_stock = pg.eval_on_selector_all(
        "#results .fact[data-field=in_stock]", "els => els.map(e => e.textContent)"
    )
    assert set(in_stock) <= {"In stock: yes", "In stock: no"} and len(in_stock) == 6
    assert "_" not in "".join(facts)
    label = first.get_attribute("aria-label")
    assert label.startswith("Show items similar to ") and "Price 7.40" in label
    # the filters use the same words, and filter on the field's own values
    assert pg.inner_text("label[for=f-in_stock]") == "In stock"
    assert pg.inner_text("label[for=f-product_colour]") == "Product colour"
    options = pg.eval_on_selector_all(
        "#f-in_stock option", "els => els.map(e => [e.value, e.textContent])"
    )
    assert options == [["", "any"], ["true", "yes"], ["false", "no"]]
    pg.select_option("#f-in_stock", "true")
    pg.wait_for_function(
        "() => document.querySelector('#status').textContent.includes('in_stock == true')"
    )
    wait_settled(pg)
    stock = pg.eval_on_selector_all(
        "#results .fact[data-field=in_stock]", "els => els.map(e => e.textContent)"
    )
    assert stock and set(stock) == {"In stock: yes"}
    browse = pg.locator("#browse button.item").first.locator(".fact").all_inner_texts()
    assert browse == ["Price: 7.40", "Category: t-shirt"]  # the browse strip: two facts
    context.close()
    assert not errors, errors


def _heading_in_view(pg: Any) -> None:
    """Until the page has stopped scrolling with the results heading on screen."""
    where = (
        "() => { const r = document.querySelector('#results-heading').getBoundingClientRect();"
        " return [window.scrollY, r.top >= 0 && r.bottom <= window.innerHeight]; }"
    )
    last = pg.evaluate(where)
    for _ in range(50):
        time.sleep(0.1)
        now = pg.evaluate(where)
        if now == last and now[1]:
            return
        last = now
    raise AssertionError(f"the results heading is not on screen: {last}")


def test_a_phone_is_taken_to_its_results(browser: Any, shop_site: tuple[str, list[Path]]) -> None:
    context, pg, errors = _open(
        browser,
        shop_site[0],
        viewport={"width": 390, "height": 844},
        is_mobile=True,
        has_touch=True,
    )
    top = pg.evaluate("document.querySelector('#results-heading').getBoundingClientRect().top")
    assert top > 844  # below the fold before the search: the reason for scrolling
    upload(pg, shop_site[1][5])
    _heading_in_view(pg)
    assert pg.evaluate("document.activeElement.id") == "results-heading"
    assert pg.evaluate("window.scrollY") > 0
    first_card = pg.evaluate(
        "document.querySelector('#results button.item').getBoundingClientRect().top"
    )
    assert first_card < 844  # the first results are on screen, not below the fold
    shot(pg, "serve-phone", full_page=False)
    # a catalogue item far down the page: back up to its similar items
    pg.locator("#browse button.item").nth(20).scroll_into_view_if_needed()
    pg.locator("#browse button.item").nth(20).click()
    pg.wait_for_function(
        "() => document.querySelector('#query-label').textContent.startsWith('Similar to')"
    )
    wait_settled(pg)
    _heading_in_view(pg)
    assert pg.evaluate("document.activeElement.id") == "results-heading"
    context.close()
    assert not errors, errors


def test_reduced_motion_jumps_to_the_results(
    browser: Any, shop_site: tuple[str, list[Path]]
) -> None:
    context, pg, errors = _open(
        browser, shop_site[0], viewport={"width": 390, "height": 844}, reduced_motion="reduce"
    )
    pg.evaluate(
        "() => { window.smooth = []; const f = Element.prototype.scrollIntoView;"
        " Element.prototype.scrollIntoView = function (o) { window.smooth.push(o.behavior);"
        " return f.call(this, o); }; }"
    )
    upload(pg, shop_site[1][2])
    _heading_in_view(pg)
    assert pg.evaluate("window.smooth") == ["auto"]
    context.close()
    assert not errors, errors


def test_desktop_screenshot_for_the_docs(browser: Any, shop_site: tuple[str, list[Path]]) -> None:
    """Also the docs' picture: ``VISUALSIM_SCREENSHOTS=docs/images ... -k screenshot_for``."""
    context, pg, errors = _open(browser, shop_site[0], viewport={"width": 1200, "height": 900})
    top = pg.evaluate("window.scrollY")
    upload(pg, shop_site[1][7])
    wait_images_loaded(pg, 12)
    # the results are on screen already: no scrolling, focus stays where the shopper was
    assert pg.evaluate("window.scrollY") == top
    assert pg.evaluate("document.activeElement.id") != "results-heading"
    shot(pg, "serve-desktop", full_page=False)
    context.close()
    assert not errors, errors
