"""The catalogue as a whole: ``GET /health``, ``GET /metrics``, and with an API key
``POST /reload``, ``POST /save`` and ``POST /sync`` (the feed the operator chose at start-up)."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from ..._version import __version__
from ...errors import ConfigError
from ..metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from ..state import State, authorised, note_change, swap_in
from ..uploads import read_limited
from .items import refused_writes


def status_router() -> APIRouter:
    """``GET /health``: liveness, the catalogue's size, and which reload it serves."""
    routes = APIRouter()

    @routes.get("/health", summary="Liveness and catalogue size")
    async def health(state: State) -> JSONResponse:
        live = state.live
        rec = live.rec
        doc: dict[str, Any] = {
            "status": "ok",
            "items": len(rec),
            "dim": _safe_dim(rec),
            "read_only": state.api_key is None or state.workers > 1,
            "warm": state.is_warm(live),
            "version": __version__,
        }
        if state.workers > 1:
            doc["worker"] = os.getpid()
        return JSONResponse(doc | state.reload_info())

    @routes.get("/metrics", summary="Counters in the Prometheus text format")
    async def metrics(state: State) -> Response:
        text = state.metrics.render(len(state.live.rec))
        return Response(text, media_type=METRICS_CONTENT_TYPE)

    return routes


def admin_router(*, writes: bool, workers: int, sync: bool) -> APIRouter:
    """``POST /reload`` and ``POST /save`` (with ``writes``: an API key; ``/save`` answers 405
    with ``workers > 1``), and ``POST /sync`` (404 without ``sync``: no ``--sync-feed``)."""
    routes = APIRouter()
    auth = [Depends(authorised)]
    if writes and workers > 1:
        routes.include_router(refused_writes(workers, ("/save",)))
    if writes:

        @routes.post("/reload", dependencies=auth, summary="Swap in the catalogue on disk")
        async def reload(state: State) -> JSONResponse:
            if state.catalog_path is None:
                raise HTTPException(
                    409,
                    "this app was given a recommender, not a catalogue folder: nothing to reload",
                )
            async with state.reload_lock:
                n = await swap_in(state)
                await run_in_threadpool(state.announce)  # the other workers follow
            return JSONResponse({"status": "reloaded", "items": n} | state.reload_info())

    if writes and workers == 1:

        @routes.post("/save", dependencies=auth, summary="Write the catalogue back to its folder")
        def save(state: State) -> JSONResponse:
            if state.catalog_path is None:
                raise HTTPException(409, "this app was given a recommender, not a catalogue folder")
            live = state.live
            with live.lock.read():
                live.rec.save(state.catalog_path, overwrite=True)
                return JSONResponse({"status": "saved", "items": len(live.rec)})

    # -- POST /sync: the feed the operator chose at start-up, never one a client names --
    if sync:

        @routes.post(
            "/sync", dependencies=auth, summary="Sync the catalogue with the server's feed"
        )
        async def sync_catalogue(
            state: State,
            request: Request,
            dry_run: bool = Query(False, description="report what would change; change nothing"),
            remove_missing: bool = Query(
                True, description="remove the items the feed no longer lists"
            ),
        ) -> JSONResponse:
            unknown = sorted(set(request.query_params) - {"dry_run", "remove_missing"})
            body = await read_limited(request, 1 << 16)
            if unknown or body.strip():
                raise HTTPException(
                    422,
                    "POST /sync takes no feed, path or body: it syncs the feed the server was "
                    "started with (--sync-feed); only dry_run and remove_missing may be given",
                )
            assert state.sync_source is not None
            path, id_column, image_column = state.sync_source
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
                        allow_outside=state.sync_allow_outside,
                    )
                )
                if report.changed:
                    await run_in_threadpool(note_change, live)
            doc = report.to_dict()  # a failure's source may be a server path: left out
            doc["failed"] = [
                {"id": f["id"], "reason": state.scrub(f["reason"])} for f in doc["failed"]
            ]
            return JSONResponse(doc | {"items": len(live.rec)})

    else:

        @routes.post("/sync", include_in_schema=False)
        async def sync_off() -> JSONResponse:
            raise HTTPException(
                404,
                "POST /sync is off: the server syncs only a feed its operator names at start-up "
                "(visualsim serve --sync-feed PATH --api-key-env NAME; create_app(sync_feed=...))",
            )

    return routes


def check_sync_feed(
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
    from ...feeds import is_feed

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


def _safe_dim(rec: Any) -> int | None:
    try:
        return int(rec.dim)
    except Exception:  # an empty catalogue has no dimension yet
        return None
