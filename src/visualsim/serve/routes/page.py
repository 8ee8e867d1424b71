"""The pages a browser asks for: the search-by-photo page, the API reference, the icon."""

from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response

from ..limits import FRAME_POLICY


def static_dir() -> Path:
    """The package's ``static`` folder (the page, its script and style, the reference)."""
    return Path(str(resources.files("visualsim.serve") / "static"))


def router(static: Path) -> APIRouter:
    """``GET /``, ``GET /docs`` and ``GET /favicon.ico``, the pages read from ``static`` now."""
    page = (static / "index.html").read_text(encoding="utf-8")
    reference = (static / "docs.html").read_text(encoding="utf-8")
    routes = APIRouter()

    @routes.get("/", include_in_schema=False)
    async def index_page() -> HTMLResponse:
        return _own_page(page, "img-src 'self' blob: data:; ")

    @routes.get("/docs", include_in_schema=False)
    async def api_reference() -> HTMLResponse:
        return _own_page(reference)

    @routes.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> Response:
        # browsers ask for it on every page; a 404 there is noise in every log
        return Response(
            _favicon_ico(),
            media_type="image/x-icon",
            headers={"Cache-Control": "public, max-age=86400"},
        )

    return routes


@functools.cache
def _favicon_ico() -> bytes:
    """The page's icon, drawn once: a magnifying glass on the page's blue (16 and 32 px)."""
    import io

    from PIL import Image, ImageDraw

    size = 64  # drawn large, scaled down into the icon's sizes
    img = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    draw = ImageDraw.Draw(img)
    draw.rounded_rectangle((0, 0, size - 1, size - 1), radius=12, fill=(31, 95, 168, 255))
    draw.ellipse((12, 10, 42, 40), outline=(255, 255, 255, 255), width=6)
    draw.line((38, 36, 52, 52), fill=(255, 255, 255, 255), width=8)
    out = io.BytesIO()
    img.save(out, format="ICO", sizes=[(16, 16), (32, 32)])
    return out.getvalue()


def _own_page(html: str, extra_sources: str = "") -> HTMLResponse:
    """One of this package's static pages: only its own scripts and styles, never framed."""
    return HTMLResponse(
        html,
        headers={
            "Content-Security-Policy": f"default-src 'self'; {extra_sources}style-src 'self'; "
            "script-src 'self'; object-src 'none'; base-uri 'none'; " + FRAME_POLICY,
            "Cache-Control": "no-cache",
        },
    )
