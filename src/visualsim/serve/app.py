"""The HTTP app: recommendations as JSON for a shop's front end, and a search-by-photo page.

:func:`create_app` returns a FastAPI (ASGI) application. Serve it with uvicorn
(``visualsim serve CATALOG`` does) or mount it inside your own app.

Read-only unless an API key is given: the write endpoints (``POST /items``,
``PUT``/``DELETE /items/{id}``, ``POST /reload``, ``POST /save``) are not even
routed without one, and with one they need ``Authorization: Bearer <key>``.

This module assembles the app; the parts live beside it: the shared state
(``state.py``: the catalogue served, its lock, the model pool, the limits and the
key), what a client sends (``uploads.py``), the error answers (``handlers.py``),
the middlewares (``middleware.py``), the limits (``limits.py``) and one router
module per resource under ``routes/`` (``page``, ``items``, ``search``,
``catalogue``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from .._version import __version__
from ..errors import ConfigError
from ..validation import check_float, check_positive_int
from . import _adapters as A
from .handlers import install_error_handlers
from .limits import (
    BACKOFF_FREE,
    BACKOFF_MAX_S,
    BACKOFF_STEP_S,
    BACKOFF_WINDOW_S,
    DISTINCT_FIELD,
    MAX_DUPLICATES,
    MAX_JSON_DEPTH,
    MAX_PIXELS,
    MAX_UPLOAD_BYTES,
    QUEUE_TIMEOUT_S,
    RELOAD_POLL_S,
)
from .metrics import MetricsMiddleware
from .middleware import (
    AccessLogMiddleware,
    BackoffMiddleware,
    ItemPathMiddleware,
    RateLimiter,
    RateLimitMiddleware,
    ReadKeyMiddleware,
    RefusalBackoff,
)
from .routes import catalogue, items, page, search
from .state import AppState, Live, follow_reloads, load_catalogue
from .uploads import parse_json

logger = logging.getLogger("visualsim.serve")

_load = load_catalogue  # the name tests and older callers import from here


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
    sync_allow_outside: bool = False,
    protect_reads: bool = False,
    rate_limit: float | None = None,
    burst: int | None = None,
    rate_limit_clients: int = 10_000,
    refusal_backoff: float = BACKOFF_MAX_S,
    clock: Callable[[], float] = time.monotonic,
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
    sync_allow_outside
        Let ``POST /sync`` read the feed's image paths that lie outside the feed's
        folder (absolute, ``..``, a symlink out), as ``visualsim index
        --allow-outside-images`` does (``visualsim serve --allow-outside-images``).
        ``False`` (default): such a row is refused and listed as failed. Needs
        ``sync_feed``.
    protect_reads
        With ``True`` (``visualsim serve --protect-reads``), every request but
        ``GET /health`` needs ``Authorization: Bearer <api_key>`` too, else 401:
        the JSON API, ``/metrics``, the search page and its static files alike
        (a browser cannot send the header, so the page is for servers that do not
        protect reads). Needs ``api_key``. Default ``False``: reads are open.
    rate_limit, burst
        Requests a second each client address may make on average, and at once
        (a token bucket; ``burst`` defaults to ``max(1, ceil(rate_limit))``).
        A client past it is answered 429 with ``Retry-After`` (seconds until
        its next token). ``/health`` is not limited. ``None`` (default): no limit.
    rate_limit_clients
        Most client addresses the rate limit remembers; past that, the least
        recently seen is forgotten first, so memory stays bounded.
    refusal_backoff
        Longest wait, in seconds, before a request from a client address whose
        requests keep being refused (any 4xx but 404: bombs, oversized or bad
        uploads, a wrong key, the rate limit). Past :data:`BACKOFF_FREE` recent
        refusals, each one more adds :data:`BACKOFF_STEP_S` of wait, up to this; the
        count fades over :data:`BACKOFF_WINDOW_S`. The wait costs no CPU, so a client
        posting refused uploads in a loop slows itself, not the others. ``/health``
        and requests with ``api_key`` are exempt. ``0`` turns it off (do so behind a
        proxy that does not send ``X-Forwarded-For``: every client would share one
        address). Default :data:`BACKOFF_MAX_S`.
    clock
        Monotonic seconds for the rate limit and the back-off (a test passes a fake
        clock).

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
    if not isinstance(protect_reads, bool):
        raise ConfigError(f"protect_reads must be True or False, not {protect_reads!r}")
    if protect_reads and api_key is None:
        raise ConfigError(
            "protect_reads=True needs api_key (visualsim serve --protect-reads needs --api-key-env)"
        )
    limiter = None
    if rate_limit is not None:
        rate = check_float("rate_limit", rate_limit, minimum=0, open_minimum=True)
        size = max(1, math.ceil(rate)) if burst is None else check_positive_int("burst", burst)
        clients = check_positive_int("rate_limit_clients", rate_limit_clients)
        limiter = RateLimiter(float(rate), size, max_clients=clients, clock=clock)
    elif burst is not None:
        raise ConfigError("burst needs rate_limit (requests a second per client)")
    max_wait = check_float("refusal_backoff", refusal_backoff, minimum=0)
    backoff = RefusalBackoff(max_delay=max_wait, clock=clock) if max_wait > 0 else None
    sync_source = catalogue.check_sync_feed(
        sync_feed, sync_id_column, sync_image_column, api_key, workers
    )
    if not isinstance(sync_allow_outside, bool):
        raise ConfigError(f"sync_allow_outside must be True or False, got {sync_allow_outside!r}")
    if sync_allow_outside and sync_source is None:
        raise ConfigError("sync_allow_outside needs sync_feed (the feed whose images it allows)")

    catalog_path: Path | None = None
    if isinstance(recommender_or_path, (str, os.PathLike)):
        catalog_path = Path(recommender_or_path)
        rec = load_catalogue(catalog_path, None, mmap=mmap)
    else:
        rec = recommender_or_path
    state = AppState(
        live=Live(rec),
        catalog_path=catalog_path,
        image_root=None if image_root is None else Path(image_root),
        api_key=api_key,
        warm=warm,
        mmap=mmap,
        threads=threads,
        signal_file=None if reload_signal is None else Path(reload_signal),
        max_pixels=max_pixels,
        queue_timeout=float(queue_timeout),
        max_upload_bytes=max_upload_bytes,
        max_k=max_k,
        workers=workers,
        sync_source=sync_source,
        sync_allow_outside=sync_allow_outside,
    )
    state.seen_token = state.loaded_token = state.read_token()
    unservable = A.outside_warning(
        rec,
        state.root(state.live),
        "serve with --image-root (image_root=) FOLDER holding them, or re-index with --root",
    )
    if unservable is not None:
        logger.warning("%s", unservable)

    app = FastAPI(
        title=title,
        version=__version__,
        description="Visually similar catalogue items, and search by photo.",
        lifespan=_lifespan(state),
        # FastAPI's /docs loads Swagger UI from a CDN with no integrity check: /docs is
        # this package's own reference page instead (routes/page.py), with no third-party script
        docs_url=None,
        redoc_url=None,
    )
    app.state.visualsim = state  # what every route reaches through state.app_state
    app.state.max_upload_bytes = max_upload_bytes
    app.state.max_k = max_k  # a bad k is answered in check_k's words
    # innermost: it reads the route template the router wrote into the scope
    app.add_middleware(MetricsMiddleware, metrics=state.metrics)
    app.add_middleware(ItemPathMiddleware)
    if protect_reads:
        assert api_key is not None
        app.add_middleware(ReadKeyMiddleware, key=api_key, metrics=state.metrics)
    if limiter is not None:  # outside the key check: guessing keys is limited too
        app.add_middleware(RateLimitMiddleware, limiter=limiter, metrics=state.metrics)
    if backoff is not None:  # outside both: a 401 or a 429 counts against the client too
        app.add_middleware(BackoffMiddleware, backoff=backoff, key=api_key, metrics=state.metrics)
    app.add_middleware(AccessLogMiddleware)
    install_error_handlers(app, state)

    static = page.static_dir()
    app.mount("/static", StaticFiles(directory=static), name="static")
    # the order routes are included in is the order they are matched and listed in
    # /openapi.json (and /docs): reads first, then the writes on the same paths
    params = search.search_params(max_k)
    app.include_router(page.router(static))
    app.include_router(catalogue.status_router())
    app.include_router(items.read_router(params))
    app.include_router(search.router(params))
    if api_key is not None:
        app.include_router(items.write_router(workers))
    app.include_router(
        catalogue.admin_router(
            writes=api_key is not None, workers=workers, sync=sync_source is not None
        )
    )
    return app


def _lifespan(state: AppState) -> Any:
    """Warm the model at start-up, follow other workers' reloads, close the pool at the end."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if state.warm:
            await run_in_threadpool(state.warm_up, state.live)
        logger.info(
            "serving %d items (read-only: %s, threads: %d)",
            len(state.live.rec),
            state.api_key is None,
            state.threads,
        )
        watcher = None
        if state.signal_file is not None:
            watcher = asyncio.create_task(follow_reloads(state))
        try:
            yield
        finally:
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
            await run_in_threadpool(state.close_pool)
            logger.info("shutting down")

    return lifespan


__all__ = [
    "BACKOFF_FREE",
    "BACKOFF_MAX_S",
    "BACKOFF_STEP_S",
    "BACKOFF_WINDOW_S",
    "DISTINCT_FIELD",
    "MAX_DUPLICATES",
    "MAX_JSON_DEPTH",
    "MAX_PIXELS",
    "MAX_UPLOAD_BYTES",
    "QUEUE_TIMEOUT_S",
    "RELOAD_POLL_S",
    "AccessLogMiddleware",
    "ItemPathMiddleware",
    "RefusalBackoff",
    "create_app",
    "default_threads",
    "parse_json",
]
