"""The HTTP app: recommendations as JSON for a shop's front end, and a search-by-photo page.

:func:`create_app` returns a FastAPI (ASGI) application. Serve it with uvicorn
(``visualsim serve CATALOG`` does) or mount it inside your own app.

Read-only unless an API key is given: the write endpoints (``POST /items``,
``PUT``/``DELETE /items/{id}``, ``POST /reload``, ``POST /save``) are not even
routed without one, and with one they need ``Authorization: Bearer <key>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import math
import mimetypes
import os
import re
import secrets
import threading
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import ClientDisconnect

from .. import __version__
from ..crop import LOCATE, Box, check_box, crop_to_box, locate_product, parse_box
from ..errors import (
    ConfigError,
    DuplicateIdError,
    ImageLoadError,
    NotFittedError,
    UnknownIdError,
    VisualsimError,
)
from ..images import decode_bytes_per_pixel, encoded_size, load_image
from ..indexes.base import ReadWriteLock
from ..persistence import json_depth, write_bytes_atomic
from ..validation import check_float, check_k, check_positive_int
from . import _adapters as A

logger = logging.getLogger("visualsim.serve")
access_logger = logging.getLogger("visualsim.serve.access")

MAX_UPLOAD_BYTES = 20 * 1024 * 1024
"""Default upload limit (20 MiB): larger bodies get 413 before they are read in full."""

MAX_PIXELS = 4_000_000
"""Default pixel budget of an uploaded image (width x height, 4 megapixels).

Counted from the image's header at the scale it would be decoded (a JPEG is
decoded reduced towards the model's input size, draft mode, so a 48 MP phone
JPEG counts as about 1 MP for a 224 px model); more is refused (422) before
any pixel is decoded. The decoding memory is bounded to what an RGBA image of
this many pixels takes, so one upload costs a bounded amount of memory and time.
"""

MAX_JSON_DEPTH = 32
"""Deepest nesting of arrays and objects accepted in a client's JSON (more: 400)."""

FRAME_POLICY = "frame-ancestors 'none'"
"""The Content-Security-Policy every answer carries (the page adds it to its own): no framing."""

MAX_DUPLICATES = 100_000
"""Most pairs or groups one ``GET /duplicates`` lists (its ``limit``; default 1,000)."""

MAX_REGIONS = 8
"""Most regions one ``POST /query/regions`` searches (its ``max_regions``; default 5)."""

MAX_VALUES = 1000
"""Most values one ``GET /fields/{name}/values`` lists (its ``limit``; default 20)."""

DISTINCT_FIELD = "field:"
"""Prefix of a ``distinct`` value naming a metadata field: ``distinct=field:style_id``."""

QUEUE_TIMEOUT_S = 10.0
"""Default seconds a request waits for a model thread before it is answered 503."""

RELOAD_POLL_S = 0.2
"""How often (seconds) an app with a ``reload_signal`` file checks it for a new reload."""

MULTIPART_SLACK = 64 * 1024
"""Bytes a multipart body may carry beyond the image itself (headers, id, metadata)."""

T = TypeVar("T")
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class UploadTooLarge(Exception):
    """The request body passed the upload limit (answered with 413)."""


@dataclass
class _Live:
    """One loaded catalogue, its lock and cached field descriptions."""

    rec: Any
    lock: ReadWriteLock = field(default_factory=ReadWriteLock)
    fields: dict[str, dict[str, Any]] | None = None
    generation: int = 0

    def changed(self) -> None:
        self.fields = None
        self.generation += 1


def default_threads() -> int:
    """Threads an app gives the model and search work by default.

    The CPUs this process may run on (its affinity mask, else ``os.cpu_count()``),
    at least 2: the work is CPU-bound, and more threads than cores only trade
    each request's latency for a little overlap.

    Returns
    -------
    int
        The thread count, at least 2.

    Examples
    --------
    >>> default_threads() >= 2
    True
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(2, cpus)


def create_app(
    recommender_or_path: Any,
    *,
    api_key: str | None = None,
    max_upload_bytes: int = MAX_UPLOAD_BYTES,
    image_root: str | os.PathLike[str] | None = None,
    max_k: int = 100,
    max_pixels: int = MAX_PIXELS,
    warm: bool = True,
    title: str = "visualsim",
    workers: int = 1,
    reload_signal: str | os.PathLike[str] | None = None,
    mmap: bool = False,
    threads: int | None = None,
    queue_timeout: float = QUEUE_TIMEOUT_S,
    sync_feed: str | os.PathLike[str] | None = None,
    sync_id_column: str = "id",
    sync_image_column: str = "image",
) -> FastAPI:
    """Return an ASGI app serving a catalogue.

    Parameters
    ----------
    recommender_or_path
        A fitted :class:`~visualsim.Recommender`, or the folder of a saved
        catalogue (loaded now; ``POST /reload`` loads it again).
    api_key
        Enables the write endpoints, each requiring ``Authorization: Bearer
        <api_key>`` (compared in constant time). ``None`` (default): the server
        is read-only and those endpoints do not exist.
    max_upload_bytes
        Largest accepted upload; a bigger body is refused with 413 as soon as
        the limit is passed, without reading the rest.
    image_root
        Folder that ``GET /items/{id}/image`` may read from (default: the
        catalogue's own image root, when it records one). Nothing outside it
        is ever served, symlinks included.
    max_k
        Largest ``k`` a query may ask for (bigger: 422).
    max_pixels
        Pixel budget of an uploaded image (default :data:`MAX_PIXELS`, 4 MP:
        a model looks at a few hundred pixels a side). Checked from the
        image's header at the scale it would be decoded (JPEGs are decoded in
        draft mode, reduced towards the extractor's input size) before any
        pixel is decoded; more is refused with 422 naming the limit. The
        decoding memory is bounded by what an RGBA image of ``max_pixels``
        takes (a 16-bit or palette image gets fewer pixels).
    warm
        Run one extraction and one search at start-up, so the first real
        request does not pay for building the model.
    title
        The OpenAPI title.
    workers
        How many server processes run this same app on one socket (what
        ``visualsim serve --workers N`` passes). With more than one, each holds
        its own copy of the catalogue, so the item writes and ``POST /save``
        answer 405 naming ``--workers`` (change the catalogue on disk and
        ``POST /reload`` instead), and ``/health`` reports the answering
        worker's process id as ``worker``.
    reload_signal
        A file the worker processes share (``visualsim serve --workers`` makes
        one in a private temporary folder). A successful ``POST /reload``
        replaces it atomically with a new generation token; every app checks
        it (one ``stat``) every :data:`RELOAD_POLL_S` seconds and, when the
        token changed, loads the catalogue on disk off the event loop and swaps
        it in, so a reload sent to any worker reaches them all. ``POST /reload``
        answers with the new token as ``reload``, and ``/health`` reports the
        token of the catalogue the answering worker serves (``null`` before the
        first reload), so a client can wait until every worker has it.
    mmap
        Memory-map the catalogue's stored vectors (shared, read-only, through
        the page cache between worker processes) instead of reading them in.
    threads
        Threads for the model and search work of ``/query``, ``/items/{id}/similar``,
        ``/duplicates`` and the item writes: the app's own pool, so 16 clients queue for a few
        threads instead of running 16 extractions at once on a 2-core box.
        Default :func:`default_threads` (the CPUs this process may use, at
        least 2). Other endpoints use Starlette's thread pool.
    queue_timeout
        Seconds a request waits for one of those ``threads`` when all are busy
        (default :data:`QUEUE_TIMEOUT_S`); after that it is answered 503 with
        ``Retry-After``, so a burst of uploads cannot pile up unbounded waits.
    sync_feed
        A feed file the operator chose (``visualsim serve --sync-feed PATH``):
        ``POST /sync`` (with the API key, one worker) makes the catalogue match
        it with :meth:`~visualsim.Recommender.sync` and answers the
        :class:`~visualsim.sync.SyncReport` as JSON. The server reads only this
        path; a client never names one. ``None`` (default): ``POST /sync``
        answers 404.
    sync_id_column, sync_image_column
        The feed's id and image columns (default ``id`` and ``image``).

    Returns
    -------
    fastapi.FastAPI
        The app; ``app.state.visualsim`` holds its state.

    Examples
    --------
    >>> import numpy as np
    >>> from fastapi.testclient import TestClient
    >>> from visualsim import ColorHistogramExtractor, Recommender
    >>> from visualsim.serve import create_app
    >>> ext = ColorHistogramExtractor()
    >>> rec = Recommender(ext).add_vectors(
    ...     np.eye(3, ext.dim), ["a", "b", "c"], [{"colour": "red"}] * 3)
    >>> client = TestClient(create_app(rec))
    >>> client.get("/health").json()["items"]
    3
    """
    max_upload_bytes = check_positive_int("max_upload_bytes", max_upload_bytes)
    max_k = check_positive_int("max_k", max_k)  # 2.5, "5", True: refused, naming max_k
    workers = check_positive_int("workers", workers)
    threads = default_threads() if threads is None else check_positive_int("threads", threads)
    queue_timeout = check_float("queue_timeout", queue_timeout, minimum=0, open_minimum=True)
    if api_key is not None and (not isinstance(api_key, str) or len(api_key) < 8):
        raise ConfigError("api_key must be a string of at least 8 characters (it was not shown)")
    max_pixels = check_positive_int("max_pixels", max_pixels)
    sync_source = _sync_source(sync_feed, sync_id_column, sync_image_column, api_key, workers)

    catalog_path: Path | None = None
    if isinstance(recommender_or_path, (str, os.PathLike)):
        catalog_path = Path(recommender_or_path)
        rec = _load(catalog_path, None, mmap=mmap)
    else:
        rec = recommender_or_path
    state = _State(
        live=_Live(rec),
        catalog_path=catalog_path,
        image_root=None if image_root is None else Path(image_root),
        api_key=api_key,
        warm=warm,
        mmap=mmap,
        threads=threads,
        signal_file=None if reload_signal is None else Path(reload_signal),
        max_pixels=max_pixels,
        queue_timeout=float(queue_timeout),
    )
    state.seen_token = state.loaded_token = state.read_token()
    unservable = A.outside_warning(
        rec,
        state.root(state.live),
        "serve with --image-root (image_root=) FOLDER holding them, or re-index with --root",
    )
    if unservable is not None:
        logger.warning("%s", unservable)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if warm:
            await run_in_threadpool(state.warm_up, state.live)
        logger.info(
            "serving %d items (read-only: %s, threads: %d)",
            len(state.live.rec),
            api_key is None,
            threads,
        )
        watcher = None
        if state.signal_file is not None:
            watcher = asyncio.create_task(_follow_reloads(state))
        try:
            yield
        finally:
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
            await run_in_threadpool(state.close_pool)
            logger.info("shutting down")

    app = FastAPI(
        title=title,
        version=__version__,
        description="Visually similar catalogue items, and search by photo.",
        lifespan=lifespan,
        # FastAPI's /docs loads Swagger UI from a CDN with no integrity check: /docs is
        # this package's own reference page instead (below), with no third-party script
        docs_url=None,
        redoc_url=None,
    )
    app.state.visualsim = state
    app.state.max_upload_bytes = max_upload_bytes
    app.state.max_k = max_k  # a bad k is answered in check_k's words
    app.add_middleware(ItemPathMiddleware)
    app.add_middleware(AccessLogMiddleware)
    _install_error_handlers(app, state)

    static_dir = Path(str(resources.files("visualsim.serve") / "static"))
    app.mount("/static", StaticFiles(directory=static_dir), name="static")
    page = (static_dir / "index.html").read_text(encoding="utf-8")
    reference = (static_dir / "docs.html").read_text(encoding="utf-8")

    k_query = Query(10, ge=1, le=max_k, description=f"how many results, 1 to {max_k}")
    where_query = Query(
        None,
        max_length=2000,
        description="filter on metadata, e.g. category == 'shoes' and price < 50",
    )
    min_score_query = Query(None, ge=-1.0, le=1.0, description="drop results scoring below this")
    distinct_query = Query(
        "true",
        max_length=1000,
        description="true (default): one result per photo, the same picture under two ids "
        "shown once; false: every item, repeats included; field:NAME: one result per value "
        "of the metadata field NAME",
    )

    # -- read endpoints ----------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    async def index_page() -> HTMLResponse:
        return _own_page(page, "img-src 'self' blob: data:; ")

    @app.get("/docs", include_in_schema=False)
    async def api_reference() -> HTMLResponse:
        return _own_page(reference)

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> Response:
        # browsers ask for it on every page; a 404 there is noise in every log
        return Response(
            _favicon_ico(),
            media_type="image/x-icon",
            headers={"Cache-Control": "public, max-age=86400"},
        )

    @app.get("/health", summary="Liveness and catalogue size")
    async def health() -> JSONResponse:
        live = state.live
        rec = live.rec
        doc: dict[str, Any] = {
            "status": "ok",
            "items": len(rec),
            "dim": _safe_dim(rec),
            "read_only": api_key is None or workers > 1,
            "warm": state.is_warm(live),
            "version": __version__,
        }
        if workers > 1:
            doc["worker"] = os.getpid()
        return JSONResponse(doc | state.reload_info())

    @app.get("/fields", summary="The catalogue's metadata fields, for building filters")
    def fields() -> JSONResponse:
        live = state.live
        with live.lock.read():
            if live.fields is None:
                live.fields = A.describe_fields(live.rec)
            return JSONResponse({"fields": live.fields})

    @app.get(
        "/fields/{name}/values",
        summary="A text field's values, for autocomplete (prefix first, most common first)",
    )
    def field_values(
        name: str,
        prefix: str = Query("", max_length=200, description="what the user typed so far"),
        limit: int = Query(20, ge=1, le=MAX_VALUES, description=f"most listed, 1 to {MAX_VALUES}"),
    ) -> JSONResponse:
        from ..filters import FilterError

        live = state.live
        with live.lock.read():
            rec = live.rec
            if not hasattr(rec, "field_values"):
                raise HTTPException(404, "this catalogue cannot list field values")
            try:
                found = rec.field_values(name, prefix, limit=limit)
            except FilterError as exc:
                raise HTTPException(404, str(exc)) from None
        return JSONResponse({"field": name, "values": [{"value": v, "count": n} for v, n in found]})

    @app.get("/items", summary="List catalogue items (paged)")
    def list_items(
        offset: int = Query(0, ge=0), limit: int = Query(24, ge=1, le=500)
    ) -> JSONResponse:
        live = state.live
        with live.lock.read():
            rec = live.rec
            ids = rec.ids_[offset : offset + limit]
            items = [state.item_json(live, i) for i in ids]
            return JSONResponse(
                {"items": items, "total": len(rec), "offset": offset, "limit": limit}
            )

    @app.get("/items/{item_id}/similar", summary="Items that look like a catalogue item")
    async def similar(
        item_id: str,
        k: int = k_query,
        where: str | None = where_query,
        min_score: float | None = min_score_query,
        distinct: str = distinct_query,
    ) -> JSONResponse:
        item_id = _path_id(item_id)
        live = state.live
        collapse = parse_distinct(distinct)

        def work() -> JSONResponse:  # the JSON is rendered here too, off the event loop
            with live.lock.read():
                rec = live.rec
                key = A.resolve_id(rec, item_id)
                flt = state.where(live, where)
                results = rec.similar_to(key, k, where=flt, min_score=min_score, distinct=collapse)
                found = state.results_json(live, results)
                hints = state.hints(live, flt, results)
            return JSONResponse({"id": A.json_id(key), "results": found, **hints})

        return await state.compute(work)

    @app.get("/items/{item_id}/image", summary="A catalogue item's image")
    def item_image(item_id: str) -> Response:
        item_id = _path_id(item_id)
        live = state.live
        with live.lock.read():
            key = A.resolve_id(live.rec, item_id)
            path = A.image_file(live.rec, key, state.root(live))
        if path is None:
            raise HTTPException(404, f"no image is served for item {item_id!r}")
        kind = mimetypes.guess_type(path.name)[0]
        if kind is None or not kind.startswith("image/"):
            kind = "application/octet-stream"
        return FileResponse(
            path,
            media_type=kind,
            headers={"Cache-Control": "public, max-age=3600"},
            content_disposition_type="inline",
            filename=None,
        )

    @app.get("/items/{item_id}", summary="A catalogue item's metadata")
    def get_item(item_id: str) -> JSONResponse:
        item_id = _path_id(item_id)
        live = state.live
        with live.lock.read():
            key = A.resolve_id(live.rec, item_id)
            return JSONResponse(state.item_json(live, key))

    @app.post(
        "/query",
        summary="Search by photo",
        openapi_extra=_upload_openapi(("image",), required=("image",)),
    )
    async def query(
        request: Request,
        k: int = k_query,
        where: str | None = where_query,
        min_score: float | None = min_score_query,
        distinct: str = distinct_query,
        box: str | None = Query(
            None,
            max_length=200,
            description="search only this region of the photo: left,top,right,bottom in the "
            "photo's own pixels (after its EXIF orientation), e.g. 40,60,400,520; or 'locate': "
            "the region where the product is found automatically",
        ),
    ) -> JSONResponse:
        live = state.live
        collapse = parse_distinct(distinct)
        region = None if box is None else parse_box(box)  # its form, before the upload is read
        data = await _read_query_image(request, max_upload_bytes)

        def work() -> JSONResponse:
            # one thread hand-off per request: parse the filter, decode + extract (outside
            # the lock, so a writer is not held up by a slow model), search, build the
            # JSON; a bad filter is still refused before any image work
            flt = state.where_locked(live, where)
            vector, used = state.extract_region(live, data, region)
            with live.lock.read():
                try:
                    results = live.rec.query_vector(
                        vector, k, where=flt, min_score=min_score, distinct=collapse
                    )
                except NotFittedError:
                    results = []
                found = state.results_json(live, results)
                hints = state.hints(live, flt, results)
            doc: dict[str, Any] = {"results": found, **hints}
            if region is not None:  # the region searched, in the photo's own pixels
                doc["box"] = used
            return JSONResponse(doc)  # rendered here, off the event loop

        return await state.compute(work)

    @app.post(
        "/query/regions",
        summary="Find the products in a photo and search for each",
        openapi_extra=_upload_openapi(("image",), required=("image",)),
    )
    async def query_regions(
        request: Request,
        k: int = k_query,
        where: str | None = where_query,
        min_score: float | None = min_score_query,
        distinct: str = distinct_query,
        max_regions: int = Query(
            5, ge=1, le=MAX_REGIONS, description=f"most regions, 1 to {MAX_REGIONS}"
        ),
    ) -> JSONResponse:
        live = state.live
        collapse = parse_distinct(distinct)
        data = await _read_query_image(request, max_upload_bytes)

        def work() -> JSONResponse:
            flt = state.where_locked(live, where)
            pixels = state.decode_for_locate(live, data)
            with live.lock.read():
                try:
                    found = live.rec.query_regions(
                        pixels,
                        k,
                        max_regions=max_regions,
                        where=flt,
                        min_score=min_score,
                        distinct=collapse,
                    )
                except NotFittedError:
                    found = []
                regions = [
                    {
                        "box": _photo_box(r.box, pixels, data),
                        "score": round(float(r.score), 6),
                        "results": state.results_json(live, r.results),
                    }
                    for r in found
                ]
            return JSONResponse({"regions": regions})

        return await state.compute(work)

    @app.get("/duplicates", summary="Duplicate photos in the catalogue (pairs, or groups)")
    async def duplicates(
        min_score: float | None = Query(
            None,
            ge=0.0,
            le=1.0,
            description="the duplicate detector's score from which two photos are "
            "duplicates, 0 to 1 (1: the same pixels); default: its calibrated threshold",
        ),
        groups: bool = Query(
            False, description="true: groups of duplicates, the member to keep first"
        ),
        limit: int = Query(
            1000, ge=1, le=MAX_DUPLICATES, description=f"most listed, 1 to {MAX_DUPLICATES:,}"
        ),
    ) -> JSONResponse:
        from ..duplicates import check_min_score

        live = state.live
        threshold = check_min_score(min_score)  # what the detector uses for None

        def work() -> JSONResponse:  # a scan takes seconds on a large catalogue: the pool
            with live.lock.read():
                if groups:
                    found = [_group_json(g) for g in live.rec.duplicate_groups(min_score)]
                else:
                    found = [
                        {"a": A.json_id(a), "b": A.json_id(b), "score": _dup_score(s)}
                        for a, b, s in live.rec.find_duplicates(min_score)
                    ]
            return JSONResponse(
                {
                    "min_score": threshold,
                    "total": len(found),
                    "truncated": len(found) > limit,
                    "groups" if groups else "pairs": found[:limit],
                }
            )

        return await state.compute(work)

    # -- write endpoints (only with a key) -------------------------------------------
    if api_key is not None:
        key_bytes = api_key.encode("utf-8")

        def authorised(request: Request) -> None:
            header = request.headers.get("authorization", "")
            scheme, _, token = header.partition(" ")
            ok = secrets.compare_digest(token.strip().encode("utf-8"), key_bytes)
            if scheme.lower() != "bearer" or not ok:
                raise HTTPException(
                    401,
                    "this endpoint needs the header 'Authorization: Bearer <api key>'",
                    headers={"WWW-Authenticate": "Bearer"},
                )

        auth = [Depends(authorised)]
        if workers > 1:
            _refuse_writes(app, workers)
        item_form = _upload_openapi(("image", "id", "metadata"), required=("image", "id"))

    if api_key is not None and workers == 1:

        @app.post(
            "/items",
            status_code=201,
            dependencies=auth,
            summary="Add an item",
            openapi_extra=item_form,
        )
        async def add_item(request: Request) -> JSONResponse:
            live = state.live
            parts = await _read_upload(request, max_upload_bytes, raw_ok=False)
            raw_id, data = parts.get("id"), parts.get("image")
            if not isinstance(raw_id, str) or not raw_id.strip():
                raise HTTPException(422, "missing the multipart field 'id' (the new item's id)")
            if not isinstance(data, bytes):
                raise HTTPException(422, "missing the multipart field 'image'")
            meta = _metadata_field(parts.get("metadata"))
            item_id = A.new_id(live.rec, raw_id.strip())
            if item_id in live.rec:
                raise DuplicateIdError(
                    f"item {raw_id!r} already exists; PUT /items/{{id}} replaces it"
                )
            vector = await state.compute(state.extract, live, data)

            def write() -> int:
                with live.lock.write():
                    A.add_vector(live.rec, vector, item_id, meta)
                    live.changed()
                    return len(live.rec)

            n = await run_in_threadpool(write)
            return JSONResponse({"id": A.json_id(item_id), "items": n}, status_code=201)

        @app.put(
            "/items/{item_id}",
            dependencies=auth,
            summary="Insert or replace an item",
            openapi_extra=_upload_openapi(("image", "metadata"), required=()),
        )
        async def put_item(item_id: str, request: Request) -> JSONResponse:
            item_id = _path_id(item_id)
            live = state.live
            if request.headers.get("content-type", "").startswith("application/json"):
                body = await _read_limited(request, max_upload_bytes)
                doc = parse_json(body, "the JSON body")
                if not isinstance(doc, dict) or "metadata" not in doc:
                    raise HTTPException(422, 'a JSON body must be {"metadata": {...}}')
                parts: dict[str, Any] = {"metadata": json.dumps(doc["metadata"])}
            else:
                parts = await _read_upload(request, max_upload_bytes, raw_ok=False)
            data = parts.get("image")
            meta = _metadata_field(parts.get("metadata")) if "metadata" in parts else None
            if data is None and meta is None:
                raise HTTPException(422, "send an 'image', a 'metadata' JSON object, or both")
            vector = None
            if isinstance(data, bytes):
                vector = await state.compute(state.extract, live, data)

            def write() -> tuple[Any, bool, int]:
                with live.lock.write():
                    rec = live.rec
                    try:
                        key: Any = A.resolve_id(rec, item_id)
                    except UnknownIdError:
                        if vector is None:
                            raise
                        key = A.new_id(rec, item_id)
                    if vector is None:
                        assert meta is not None
                        A.update_metadata(rec, key, meta)
                        replaced = True
                    else:
                        keep = meta
                        if keep is None:
                            keep = dict(rec.metadata_of(key)) if key in rec else {}
                        replaced = A.upsert_vector(rec, vector, key, keep)
                    live.changed()
                    return key, replaced, len(rec)

            key, replaced, n = await run_in_threadpool(write)
            return JSONResponse(
                {"id": A.json_id(key), "replaced": replaced, "items": n},
                status_code=200 if replaced else 201,
            )

        @app.delete("/items/{item_id}", dependencies=auth, summary="Remove an item")
        def delete_item(item_id: str) -> JSONResponse:
            item_id = _path_id(item_id)
            live = state.live
            with live.lock.write():
                key = A.resolve_id(live.rec, item_id)
                A.remove(live.rec, key)
                live.changed()
                return JSONResponse({"id": A.json_id(key), "removed": True, "items": len(live.rec)})

    if api_key is not None:

        @app.post("/reload", dependencies=auth, summary="Swap in the catalogue on disk")
        async def reload() -> JSONResponse:
            if state.catalog_path is None:
                raise HTTPException(
                    409,
                    "this app was given a recommender, not a catalogue folder: nothing to reload",
                )
            async with state.reload_lock:
                n = await _swap_in(state)
                await run_in_threadpool(state.announce)  # the other workers follow
            return JSONResponse({"status": "reloaded", "items": n} | state.reload_info())

    if api_key is not None and workers == 1:

        @app.post("/save", dependencies=auth, summary="Write the catalogue back to its folder")
        def save() -> JSONResponse:
            if state.catalog_path is None:
                raise HTTPException(409, "this app was given a recommender, not a catalogue folder")
            live = state.live
            with live.lock.read():
                live.rec.save(state.catalog_path, overwrite=True)
                return JSONResponse({"status": "saved", "items": len(live.rec)})

    # -- POST /sync: the feed the operator chose at start-up, never one a client names --
    if sync_source is not None:

        @app.post("/sync", dependencies=auth, summary="Sync the catalogue with the server's feed")
        async def sync_catalogue(
            request: Request,
            dry_run: bool = Query(False, description="report what would change; change nothing"),
            remove_missing: bool = Query(
                True, description="remove the items the feed no longer lists"
            ),
        ) -> JSONResponse:
            unknown = sorted(set(request.query_params) - {"dry_run", "remove_missing"})
            body = await _read_limited(request, 1 << 16)
            if unknown or body.strip():
                raise HTTPException(
                    422,
                    "POST /sync takes no feed, path or body: it syncs the feed the server was "
                    "started with (--sync-feed); only dry_run and remove_missing may be given",
                )
            assert sync_source is not None
            path, id_column, image_column = sync_source
            async with state.reload_lock:  # one sync at a time, never during a reload
                live = state.live
                report = await run_in_threadpool(
                    functools.partial(
                        live.rec.sync,
                        path,
                        dry_run=dry_run,
                        remove_missing=remove_missing,
                        id_column=id_column,
                        image_column=image_column,
                        progress=False,
                    )
                )
                if report.changed:
                    await run_in_threadpool(_note_change, live)
            doc = report.to_dict()  # a failure's source may be a server path: left out
            doc["failed"] = [
                {"id": f["id"], "reason": _scrub(f["reason"], state)} for f in doc["failed"]
            ]
            return JSONResponse(doc | {"items": len(live.rec)})

    else:

        @app.post("/sync", include_in_schema=False)
        async def sync_off() -> JSONResponse:
            raise HTTPException(
                404,
                "POST /sync is off: the server syncs only a feed its operator names at start-up "
                "(visualsim serve --sync-feed PATH --api-key-env NAME; create_app(sync_feed=...))",
            )

    return app


# -- state ----------------------------------------------------------------------------------
@dataclass
class _State:
    live: _Live
    catalog_path: Path | None
    image_root: Path | None
    api_key: str | None
    warm: bool
    mmap: bool = False
    signal_file: Path | None = None
    seen_token: str | None = None
    loaded_token: str | None = None
    reload_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _warm_lock: threading.Lock = field(default_factory=threading.Lock)
    threads: int = 2
    max_pixels: int = MAX_PIXELS
    queue_timeout: float = QUEUE_TIMEOUT_S
    _slots: tuple[Any, asyncio.Semaphore] | None = None
    _pool: ThreadPoolExecutor | None = None
    _pool_lock: threading.Lock = field(default_factory=threading.Lock)
    _warmed: set[int] = field(default_factory=set)

    def read_token(self) -> str | None:
        """The reload generation in the shared signal file (None: none yet, or no file)."""
        if self.signal_file is None:
            return None
        try:
            return self.signal_file.read_text(encoding="ascii").strip() or None
        except (OSError, ValueError):
            return None

    def announce(self) -> None:
        """Record a new reload generation for the other workers (atomic replace)."""
        if self.signal_file is None:
            return
        token = f"{time.time_ns()}-{os.getpid()}"
        write_bytes_atomic(self.signal_file, token.encode("ascii"))
        self.seen_token = self.loaded_token = token

    async def compute(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` (decode, extract, search, JSON) in the app's own bounded pool.

        At most ``threads`` calls run at once; another waits up to ``queue_timeout``
        seconds for a free thread, then gets 503 with ``Retry-After``.
        """
        pool = self._pool
        if pool is None:
            with self._pool_lock:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="visualsim")
                pool = self._pool
        loop = asyncio.get_running_loop()
        if self._slots is None or self._slots[0] is not loop:  # one semaphore per event loop
            self._slots = (loop, asyncio.Semaphore(self.threads))
        slots = self._slots[1]
        try:
            await asyncio.wait_for(slots.acquire(), self.queue_timeout)
        except asyncio.TimeoutError:
            raise HTTPException(
                503,
                f"the server is busy: all {self.threads} model threads stayed taken for "
                f"{self.queue_timeout:g} s; try again shortly",
                headers={"Retry-After": str(max(1, math.ceil(self.queue_timeout / 2)))},
            ) from None
        try:
            return await loop.run_in_executor(pool, fn, *args)
        finally:
            slots.release()

    def close_pool(self) -> None:
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)

    def reload_info(self) -> dict[str, Any]:
        """``{"reload": token}`` of the catalogue served, for apps that share a signal file."""
        return {} if self.signal_file is None else {"reload": self.loaded_token}

    def root(self, live: _Live) -> Path | None:
        return A.image_root_of(live.rec, self.image_root)

    def is_warm(self, live: _Live) -> bool:
        return id(live) in self._warmed

    def warm_up(self, live: _Live) -> None:
        """One extraction and one search, so the first request finds the model built."""
        with self._warm_lock:
            if id(live) in self._warmed:
                return
            t0 = time.perf_counter()
            live.rec.warm_up()  # the model outside the app's lock; its search takes the rec's
            self._warmed.add(id(live))
            logger.info("model warmed in %.0f ms", 1000 * (time.perf_counter() - t0))

    def extract(self, live: _Live, data: bytes) -> np.ndarray:
        return self.extract_region(live, data, None)[0]

    def extract_region(
        self, live: _Live, data: bytes, box: Box | str | None
    ) -> tuple[np.ndarray, list[Any] | None]:
        """The upload's vector, of ``box``'s region; and that region in the photo's own
        pixels (the box found with ``"locate"``, ``None`` when none was)."""
        ext = live.rec.extractor_
        used: list[Any] | None  # whole pixels as given, or as found
        if box == LOCATE:
            pixels = self.decode_for_locate(live, data)
            found = locate_product(pixels)
            used = None if found is None else _photo_box(found, pixels, data)
            if found is not None:
                pixels = crop_to_box(pixels, found)
        elif box is not None:
            # the box is in the photo's own pixels; a JPEG is decoded reduced, just enough
            # that the region still has the model's input size, and the box scaled to it
            size = encoded_size(data)
            left, top, right, bottom = check_box(box, size)
            draft = _draft_size(ext)
            if draft is not None:
                f = max(size[0] / (right - left), size[1] / (bottom - top))
                draft = (math.ceil(draft[0] * f), math.ceil(draft[1] * f))
            pixels = crop_to_box(self._decode(live, data, draft), box, size=size)
            used = [int(v) if v.is_integer() else v for v in (left, top, right, bottom)]
        else:
            pixels, used = self._decode(live, data, _draft_size(ext)), None
        vector: np.ndarray = ext.extract([pixels], progress=False)[0]
        return vector, used

    def decode_for_locate(self, live: _Live, data: bytes) -> np.ndarray:
        """The upload decoded for finding products in it: a JPEG at a reduced scale still
        twice the model's input (a product may fill a small part of the photo)."""
        draft = _draft_size(live.rec.extractor_)
        return self._decode(live, data, None if draft is None else (draft[0] * 2, draft[1] * 2))

    def _decode(self, live: _Live, data: bytes, draft: tuple[int, int] | None) -> np.ndarray:
        """Decode an upload (the model warmed first): refused from its header, before
        decoding, over the pixel budget (JPEGs counted at the reduced scale draft mode
        decodes them at) or the memory that budget allows."""
        if not self.is_warm(live) and self.warm:
            self.warm_up(live)
        return load_image(
            data,
            max_pixels=self.max_pixels,
            draft_size=draft,
            max_bytes=self.max_pixels * decode_bytes_per_pixel("RGBA"),
        )

    def where(self, live: _Live, text: str | None) -> Any:
        if text is None:
            return None
        return A.parse_where(text, A.field_types(live.rec))

    def where_locked(self, live: _Live, text: str | None) -> Any:
        if text is None:
            return None
        with live.lock.read():
            return self.where(live, text)

    def hints(self, live: _Live, flt: Any, results: list[Any]) -> dict[str, list[str]]:
        """``{"hints": [...]}`` under an empty answer to a filter on values no item has."""
        if results or flt is None:
            return {}
        found = live.rec.filter_hints(flt)
        return {"hints": found} if found else {}

    def item_json(self, live: _Live, item_id: Any) -> dict[str, Any]:
        return {
            "id": A.json_id(item_id),
            "metadata": A.metadata_of(live.rec, item_id),
            "has_image": A.image_file(live.rec, item_id, self.root(live)) is not None,
        }

    def results_json(self, live: _Live, results: list[Any]) -> list[dict[str, Any]]:
        root = self.root(live)
        out = []
        for r in results:
            score = float(r.score)
            out.append(
                {
                    "rank": int(r.rank),
                    "id": A.json_id(r.id),
                    "score": max(-1.0, min(1.0, score)) if math.isfinite(score) else None,
                    "metadata": A.public_metadata(r.metadata),
                    "has_image": root is not None
                    and A.image_file(live.rec, r.id, root) is not None,
                }
            )
        return out


def _sync_source(
    feed: str | os.PathLike[str] | None,
    id_column: str,
    image_column: str,
    api_key: str | None,
    workers: int,
) -> tuple[Path, str, str] | None:
    """``create_app(sync_feed=...)`` checked: the operator's feed, its id and image columns."""
    if feed is None:
        return None
    if not isinstance(feed, (str, os.PathLike)):
        raise ConfigError(f"sync_feed must be the path of a feed file, got {type(feed).__name__}")
    if api_key is None:
        raise ConfigError("sync_feed needs api_key: POST /sync changes the catalogue")
    if workers > 1:
        raise ConfigError(
            f"sync_feed needs workers=1: each of {workers} worker processes holds its own copy "
            "of the catalogue (sync it with `visualsim sync` and POST /reload instead)"
        )
    from ..feeds import is_feed

    path = Path(os.fspath(feed)).expanduser().resolve()
    if not path.is_file() or not is_feed(path):
        raise ConfigError(
            f"sync_feed {os.fspath(feed)!r} is not a feed file (.csv, .tsv, .jsonl, .ndjson, "
            ".parquet)"
        )
    for name, column in (("sync_id_column", id_column), ("sync_image_column", image_column)):
        if not isinstance(column, str) or not column:
            raise ConfigError(f"{name} must be a column name (a non-empty string), got {column!r}")
    return path, id_column, image_column


def _note_change(live: _Live) -> None:
    """Forget what the app cached about a catalogue that changed under its own lock."""
    with live.lock.write():
        live.changed()


async def _swap_in(state: _State) -> int:
    """Load the catalogue on disk off the event loop, warm it, swap it in; return its size.

    Requests already running finish on the old catalogue, so none is dropped.
    """
    assert state.catalog_path is not None
    old = state.live
    rec = await run_in_threadpool(_load, state.catalog_path, old.rec, mmap=state.mmap)
    new = _Live(rec)
    if state.warm:
        await run_in_threadpool(state.warm_up, new)
    state.live = new
    return len(rec)


async def _follow_reloads(state: _State) -> None:
    """Swap in the catalogue on disk whenever another worker records a new reload generation.

    Checks the signal file's identity with one ``stat`` every :data:`RELOAD_POLL_S`
    seconds; reads it only when that changed.
    """
    assert state.signal_file is not None
    last: tuple[int, int, int] | None = None
    while True:
        await asyncio.sleep(RELOAD_POLL_S)
        try:
            st = os.stat(state.signal_file)
        except OSError:
            continue
        ident = (st.st_ino, st.st_mtime_ns, st.st_size)
        if ident == last:
            continue
        last = ident
        token = state.read_token()
        if token is None or token == state.seen_token:
            continue
        async with state.reload_lock:
            if token == state.seen_token:
                continue
            state.seen_token = token  # a catalogue that fails to load is not retried
            try:
                n = await _swap_in(state)
            except Exception as exc:  # keep serving the old catalogue
                detail = str(exc) if isinstance(exc, VisualsimError) else type(exc).__name__
                logger.error("reload from another worker failed: %s", _scrub(detail, state))
                continue
            state.loaded_token = token
            logger.info("reloaded %d items (a reload sent to another worker)", n)


def _refuse_writes(app: FastAPI, workers: int) -> None:
    """405 for the item writes and /save: worker processes hold independent copies."""
    detail = (
        f"this server runs {workers} worker processes (--workers {workers}), each with its "
        "own copy of the catalogue, so it takes no writes; change the catalogue on disk and "
        "POST /reload (every worker follows), or run one worker (--workers 1) to write"
    )

    def refuse(allow: str) -> Callable[[], Awaitable[JSONResponse]]:
        async def endpoint() -> JSONResponse:
            raise HTTPException(405, detail, headers={"Allow": allow})

        return endpoint

    app.add_api_route("/items", refuse("GET"), methods=["POST"], include_in_schema=False)
    app.add_api_route(
        "/items/{item_id}", refuse("GET"), methods=["PUT", "DELETE"], include_in_schema=False
    )
    app.add_api_route("/save", refuse(""), methods=["POST"], include_in_schema=False)


def _load(path: Path, current: Any, *, mmap: bool = False) -> Any:
    """Load the catalogue at ``path``, reusing ``current``'s extractor when it is the same one."""
    from ..recommender import Recommender

    extractor = None
    if current is not None:
        try:
            from ..extractors.spec import same_vectors

            manifest = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
            if same_vectors(manifest.get("extractor"), current.extractor_):
                extractor = current.extractor_
        except (OSError, ValueError, KeyError, TypeError, VisualsimError):
            extractor = None
    if extractor is not None:
        try:
            return Recommender.load(path, extractor=extractor, mmap=mmap)
        except ConfigError:  # the catalogue's own check says it is not the same extractor
            pass
    return Recommender.load(path, mmap=mmap)


def _safe_dim(rec: Any) -> int | None:
    try:
        return int(rec.dim)
    except Exception:  # an empty catalogue has no dimension yet
        return None


# -- uploads --------------------------------------------------------------------------------
async def _read_limited(request: Request, limit: int) -> bytes:
    """The whole body, refusing (413) as soon as it passes ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise UploadTooLarge()
        except ValueError:
            raise HTTPException(400, "the Content-Length header is not a number") from None
    buf = bytearray()
    async for chunk in request.stream():
        buf += chunk
        if len(buf) > limit:
            raise UploadTooLarge()
    return bytes(buf)


def _photo_box(box: tuple[int, int, int, int], pixels: np.ndarray, data: bytes) -> list[int]:
    """A box in the decoded ``pixels`` back in the photo's own pixels (a JPEG may have
    been decoded at a reduced scale)."""
    width, height = encoded_size(data)
    sx, sy = width / pixels.shape[1], height / pixels.shape[0]
    return [
        math.floor(box[0] * sx),
        math.floor(box[1] * sy),
        min(width, math.ceil(box[2] * sx)),
        min(height, math.ceil(box[3] * sy)),
    ]


async def _read_query_image(request: Request, limit: int) -> bytes:
    """The photo of a search: the multipart field ``image`` or the raw body, else a 422."""
    data = (await _read_upload(request, limit)).get("image")
    if not isinstance(data, bytes):
        raise HTTPException(
            422, "no image: send it as the multipart field 'image' or as the raw request body"
        )
    return data


async def _read_upload(request: Request, limit: int, *, raw_ok: bool = True) -> dict[str, Any]:
    """Multipart fields (files as bytes, text as str), or ``{"image": body}`` for a raw upload."""
    ctype = request.headers.get("content-type", "")
    multipart = ctype.startswith(("multipart/form-data", "application/x-www-form-urlencoded"))
    body = await _read_limited(request, limit + (MULTIPART_SLACK if multipart else 0))
    if not multipart:
        if not raw_ok:
            raise HTTPException(
                415, "send multipart/form-data (fields: id, image, metadata as JSON)"
            )
        return {"image": body} if body else {}
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, receive=replay).form(max_files=4, max_fields=16)
    except MultiPartException as exc:
        raise HTTPException(422, f"malformed multipart body: {exc.message}") from None
    out: dict[str, Any] = {}
    for name, value in form.multi_items():
        if isinstance(value, str):
            out[name] = value
        else:
            data = await value.read()
            if len(data) > limit:
                raise UploadTooLarge()
            out[name] = data
    await form.close()
    return out


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


def _draft_size(extractor: Any) -> tuple[int, int] | None:
    """The decode size the extractor asks for (JPEG draft mode), as its own loading does."""
    decode_size = getattr(extractor, "decode_size", None)  # BaseExtractor's; others: full size
    return decode_size() if callable(decode_size) else None


def _too_large_message(size: tuple[int, int], max_pixels: int) -> str:
    w, h = size
    if w * h > max_pixels:
        what = f"{w}x{h} = {w * h:,} pixels as decoded, over this server's limit of {max_pixels:,}"
    else:
        what = (
            f"{w}x{h} in a colour mode that takes more memory to decode than this server "
            f"allows one upload (its limit is {max_pixels:,} RGB(A) pixels)"
        )
    return (
        f"the uploaded image is {what}: refused from its header, before decoding, as a "
        "possible decompression bomb; send a smaller image (the model looks at a few "
        "hundred pixels a side)"
    )


def parse_json(raw: str | bytes, what: str, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Parse a client's JSON, refusing nesting deeper than ``max_depth`` (400).

    The one parser for JSON a client sends (the ``PUT`` body, the multipart
    ``metadata`` field): a document nested too deep for the parser (a
    ``RecursionError``) or deeper than ``max_depth`` is a 400 naming the limit,
    never a 500, and nothing deeper reaches the code that stores and serves it.

    Parameters
    ----------
    raw
        The JSON text (bytes are decoded as UTF-8).
    what
        The part of the request it came from, for the error message.
    max_depth
        Deepest nesting of arrays and objects accepted.

    Returns
    -------
    Any
        The parsed document.

    Raises
    ------
    starlette.exceptions.HTTPException
        400 for a document nested too deep, 422 for one that is not JSON.

    Examples
    --------
    >>> parse_json('{"a": [1, 2]}', "the body")
    {'a': [1, 2]}
    """
    too_deep = HTTPException(
        400, f"{what} is nested deeper than {max_depth} levels of arrays and objects"
    )
    try:
        doc = json.loads(raw)
    except RecursionError:
        raise too_deep from None
    except ValueError as exc:
        raise HTTPException(422, f"{what} is not valid JSON: {exc}") from None
    # the text as json.loads read it (bytes in any JSON encoding), for the bracket count
    text = raw if isinstance(raw, str) else raw.decode(json.detect_encoding(raw), "surrogatepass")
    if json_depth(text.encode("utf-8", "surrogatepass")) > max_depth:
        raise too_deep
    return doc


def parse_distinct(text: str | None) -> bool | str:
    """The ``distinct`` of a search request, as :meth:`Recommender.query` takes it.

    ``true`` (the default, also for no value) gives one result per photo,
    ``false`` every item, repeats included (both in any letter case), and
    ``field:NAME`` one result per value of the metadata field ``NAME`` (everything
    after the prefix, exactly as sent, so a field named ``true`` is
    ``field:true``). A field no item has is the recommender's
    :class:`~visualsim.filters.FilterError` (400) when the search runs.

    Raises
    ------
    starlette.exceptions.HTTPException
        422 for any other value, naming the accepted forms.

    Examples
    --------
    >>> parse_distinct("true"), parse_distinct("False"), parse_distinct("field:style_id")
    (True, False, 'style_id')
    >>> parse_distinct("field:true")
    'true'
    """
    if text is None or text.lower() == "true":
        return True
    if text.lower() == "false":
        return False
    if text.startswith(DISTINCT_FIELD) and len(text) > len(DISTINCT_FIELD):
        return text[len(DISTINCT_FIELD) :]
    hint = ""
    if text and not text.startswith(DISTINCT_FIELD):
        hint = f" (one result per value of a field {text!r}: distinct={DISTINCT_FIELD}{text})"
    raise HTTPException(
        422,
        "invalid request: distinct: must be true (one result per photo), false (every "
        f"item) or {DISTINCT_FIELD}NAME (one result per value of a metadata field), "
        f"got {text!r}{hint}",
    )


def _dup_score(value: float) -> float:
    """A duplicate detector score as JSON: rounded as DuplicateGroup.to_dict rounds it."""
    return round(min(1.0, max(0.0, float(value))), 6)


def _group_json(group: Any) -> dict[str, Any]:
    doc: dict[str, Any] = group.to_dict()
    doc["representative"] = A.json_id(doc["representative"])
    doc["members"] = [A.json_id(m) for m in doc["members"]]
    doc["score"] = _dup_score(doc["score"])
    return doc


def _path_id(segment: str) -> str:
    """The item id in a path segment :class:`ItemPathMiddleware` left percent-encoded."""
    return urllib.parse.unquote(segment)


def _metadata_field(raw: Any) -> dict[str, Any]:
    if raw is None:
        return {}
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", errors="replace")
    meta = parse_json(raw, "the 'metadata' field")
    if not isinstance(meta, dict):
        raise HTTPException(422, "the 'metadata' field must be a JSON object, e.g. {\"price\": 10}")
    return {str(k): v for k, v in meta.items()}


def _upload_openapi(names: tuple[str, ...], *, required: tuple[str, ...]) -> dict[str, Any]:
    props: dict[str, Any] = {}
    for name in names:
        if name == "image":
            props[name] = {"type": "string", "format": "binary", "description": "the photo"}
        elif name == "metadata":
            props[name] = {"type": "string", "description": "a JSON object of the item's fields"}
        else:
            props[name] = {"type": "string"}
    content: dict[str, Any] = {
        "multipart/form-data": {
            "schema": {"type": "object", "properties": props, "required": list(required)}
        }
    }
    if names == ("image",):
        content["image/*"] = {"schema": {"type": "string", "format": "binary"}}
    return {"requestBody": {"content": content, "required": bool(required)}}


# -- errors ---------------------------------------------------------------------------------
_ABS_PATH = re.compile(r"(?<![\w.:/])/(?:[\w.@+-]+/)+[\w.@+-]*")


def _scrub(message: str, state: _State) -> str:
    """Remove server paths from a message meant for a client."""
    for path, name in ((state.catalog_path, "<catalogue>"), (state.image_root, "<images>")):
        if path is not None:
            for form in {str(path.resolve()), str(path)}:
                if len(form) > 1:
                    message = message.replace(form, name)
    return _ABS_PATH.sub("<path>", message)


def _install_error_handlers(app: FastAPI, state: _State) -> None:
    def reply(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
        return JSONResponse({"detail": _scrub(detail, state)}, status_code=status, headers=headers)

    async def visualsim_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, VisualsimError)
        status = exc.http_status  # each error class carries its status (errors.py)
        if isinstance(exc, ImageLoadError):  # an upload: say so, and name the pixel budget
            size = getattr(exc, "too_large", None)
            if size is not None:
                return reply(status, _too_large_message(size, state.max_pixels))
            return reply(status, f"the uploaded image cannot be read: {exc.reason}")
        return reply(status, str(exc))

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        return reply(exc.status_code, str(exc.detail), dict(exc.headers or {}))

    async def too_large(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(
            {"detail": f"the upload is larger than the limit of {_size(state, request)}"},
            status_code=413,
            headers={"Connection": "close"},
        )

    async def invalid(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        problems = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("query", "path"))
            msg = err.get("msg", "invalid")
            if loc == "k":  # the library's one wording of a bad k
                msg = _k_problem(err.get("input"), getattr(request.app.state, "max_k", None), msg)
            problems.append(f"{loc}: {msg}")
        return reply(422, "invalid request: " + "; ".join(problems))

    async def went_away(request: Request, exc: Exception) -> Response:
        # the client closed the connection before sending its whole body: nobody reads
        # the answer, and nothing went wrong on the server; one line, no traceback
        logger.info(
            "client went away before sending the whole request body (%s %s); nothing done",
            request.method,
            request.url.path,
        )
        return Response(status_code=499)

    async def crashed(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(
            {"detail": "internal server error; the server log has the details"}, status_code=500
        )

    app.add_exception_handler(VisualsimError, visualsim_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(UploadTooLarge, too_large)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(ClientDisconnect, went_away)
    app.add_exception_handler(Exception, crashed)


def _k_problem(raw: Any, max_k: int | None, fallback: str) -> str:
    """What :func:`~visualsim.validation.check_k` says of a ``k`` the route refused."""
    value: Any = raw
    with contextlib.suppress(TypeError, ValueError):
        value = int(raw)
    try:
        check_k(value, maximum=max_k)
    except ConfigError as exc:
        return str(exc)
    return fallback


def _size(state: _State, request: Request) -> str:
    limit = getattr(request.app.state, "max_upload_bytes", None)
    return f"{limit} bytes" if limit else "this server"


# -- item paths -----------------------------------------------------------------------------
_ITEM_TAILS = frozenset({"similar", "image"})


class ItemPathMiddleware:
    """Route ``/items/{id}...`` on the raw, still percent-encoded path: ids hold any character.

    ASGI servers decode the path before routing, so ``GET /items/s1%2Fimage`` would
    reach item ``s1``'s image route, and an id with a newline matched no route. This
    splits the *raw* path after ``/items/`` on its literal slashes: a last segment
    ``similar`` or ``image`` names that route, and the segments before it are the id
    (an id's own ``/`` must be sent as ``%2F``; literal slashes between id segments
    are kept as ``/`` for old links). It rewrites ``scope["path"]`` so the id is one
    segment, still percent-encoded, which the endpoints decode exactly once.
    Without a ``raw_path`` in the scope, the decoded path's segments are used.
    """

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            rewritten = _item_route_path(scope)
            if rewritten is not None:
                scope = dict(scope, path=rewritten)
        await self.app(scope, receive, send)


def _item_route_path(scope: Scope) -> str | None:
    """``scope["path"]`` with an item id encoded into one segment, or None to leave it."""
    path: str = scope.get("path", "")
    root: str = scope.get("root_path", "")
    route = path[len(root) :] if root and path.startswith(root) else path
    if not route.startswith("/items/"):
        return None
    segments = _raw_route_segments(scope, root, route)
    if segments is None:  # no usable raw path: the decoded segments, each re-encoded
        segments = [urllib.parse.quote(seg, safe="") for seg in route.split("/")[2:]]
    tail = ""
    if len(segments) > 1 and segments[-1] in _ITEM_TAILS:
        tail = "/" + segments.pop()
    prefix = path[: len(path) - len(route)]
    return prefix + "/items/" + "%2F".join(segments) + tail


def _raw_route_segments(scope: Scope, root: str, route: str) -> list[str] | None:
    """The raw segments after ``/items/``, when the raw path decodes to ``route``."""
    raw = scope.get("raw_path")
    if not isinstance(raw, (bytes, bytearray)):
        return None
    try:
        text = bytes(raw).decode("ascii")
    except UnicodeDecodeError:
        return None
    parts = text.split("/")
    raw_route = "/" + "/".join(parts[root.count("/") + 1 :])  # without the mount prefix
    if urllib.parse.unquote(raw_route) != route:
        return None
    return raw_route.split("/")[2:]


# -- access log -----------------------------------------------------------------------------
class AccessLogMiddleware:
    """One JSON line per request on the ``visualsim.serve.access`` logger.

    Fields: ``ts``, ``method``, ``path``, ``status``, ``ms``, ``bytes``, ``client``.
    No headers, no query string (filters may be long), no bodies: nothing secret.
    """

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        sent = 0

        async def send_logged(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = list(message.get("headers", []))
                headers.append((b"x-content-type-options", b"nosniff"))
                # no page or answer of this app may be framed by another site (clickjacking)
                headers.append((b"x-frame-options", b"DENY"))
                if not any(k.lower() == b"content-security-policy" for k, _ in headers):
                    headers.append((b"content-security-policy", FRAME_POLICY.encode("ascii")))
                message["headers"] = headers
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, send_logged)
        finally:
            if access_logger.isEnabledFor(logging.INFO):
                client = scope.get("client")
                access_logger.info(
                    json.dumps(
                        {
                            "ts": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
                            "method": scope.get("method"),
                            "path": scope.get("path"),
                            "status": status,
                            "ms": round(1000 * (time.perf_counter() - start), 3),
                            "bytes": sent,
                            "client": client[0] if client else None,
                        }
                    )
                )


__all__ = [
    "DISTINCT_FIELD",
    "MAX_DUPLICATES",
    "MAX_PIXELS",
    "MAX_UPLOAD_BYTES",
    "QUEUE_TIMEOUT_S",
    "RELOAD_POLL_S",
    "AccessLogMiddleware",
    "ItemPathMiddleware",
    "create_app",
    "default_threads",
]
