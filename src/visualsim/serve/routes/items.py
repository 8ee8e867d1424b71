"""The catalogue's items: its fields and their values, the items (paged, one, its image, its
neighbours), and the item writes (``POST /items``, ``PUT``/``DELETE /items/{id}``, only with
an API key and one worker process)."""

from __future__ import annotations

import json
import mimetypes
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from ...errors import DuplicateIdError, UnknownIdError
from .. import _adapters as A
from ..limits import MAX_VALUES
from ..middleware import path_id
from ..state import State, authorised
from ..uploads import metadata_field, parse_json, read_limited, read_upload, upload_openapi
from .search import SearchParams, parse_distinct


def read_router(params: SearchParams) -> APIRouter:
    """``GET /fields``, ``/fields/{name}/values``, ``/items``, ``/items/{id}/similar``,
    ``/items/{id}/image`` and ``/items/{id}``."""
    routes = APIRouter()

    @routes.get("/fields", summary="The catalogue's metadata fields, for building filters")
    def fields(state: State) -> JSONResponse:
        live = state.live
        with live.lock.read():
            if live.fields is None:
                live.fields = A.describe_fields(live.rec)
            return JSONResponse({"fields": live.fields})

    @routes.get(
        "/fields/{name}/values",
        summary="A text field's values, for autocomplete (prefix first, most common first)",
    )
    def field_values(
        state: State,
        name: str,
        prefix: str = Query("", max_length=200, description="what the user typed so far"),
        limit: int = Query(20, ge=1, le=MAX_VALUES, description=f"most listed, 1 to {MAX_VALUES}"),
    ) -> JSONResponse:
        from ...filters import FilterError

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

    @routes.get("/items", summary="List catalogue items (paged)")
    def list_items(
        state: State,
        offset: int = Query(0, ge=0),
        limit: int = Query(24, ge=1, le=500),
    ) -> JSONResponse:
        live = state.live
        with live.lock.read():
            rec = live.rec
            ids = rec.ids_[offset : offset + limit]
            items = [state.item_json(live, i) for i in ids]
            return JSONResponse(
                {"items": items, "total": len(rec), "offset": offset, "limit": limit}
            )

    @routes.get("/items/{item_id}/similar", summary="Items that look like a catalogue item")
    async def similar(
        state: State,
        item_id: str,
        k: int = params.k,
        where: str | None = params.where,
        min_score: float | None = params.min_score,
        distinct: str = params.distinct,
    ) -> JSONResponse:
        item_id = path_id(item_id)
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

    @routes.get("/items/{item_id}/image", summary="A catalogue item's image")
    def item_image(state: State, item_id: str) -> Response:
        item_id = path_id(item_id)
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

    @routes.get("/items/{item_id}", summary="A catalogue item's metadata")
    def get_item(state: State, item_id: str) -> JSONResponse:
        item_id = path_id(item_id)
        live = state.live
        with live.lock.read():
            key = A.resolve_id(live.rec, item_id)
            return JSONResponse(state.item_json(live, key))

    return routes


def write_router(workers: int) -> APIRouter:
    """The item writes, each needing the API key; with ``workers > 1`` they answer 405."""
    if workers > 1:
        return refused_writes(workers, ("/items", "/items/{item_id}"))
    routes = APIRouter()
    auth = [Depends(authorised)]

    @routes.post(
        "/items",
        status_code=201,
        dependencies=auth,
        summary="Add an item",
        openapi_extra=upload_openapi(("image", "id", "metadata"), required=("image", "id")),
    )
    async def add_item(state: State, request: Request) -> JSONResponse:
        live = state.live
        parts = await read_upload(request, state.max_upload_bytes, raw_ok=False)
        raw_id, data = parts.get("id"), parts.get("image")
        if not isinstance(raw_id, str) or not raw_id.strip():
            raise HTTPException(422, "missing the multipart field 'id' (the new item's id)")
        if not isinstance(data, bytes):
            raise HTTPException(422, "missing the multipart field 'image'")
        meta = metadata_field(parts.get("metadata"))
        item_id = A.new_id(live.rec, raw_id.strip())
        if item_id in live.rec:
            raise DuplicateIdError(f"item {raw_id!r} already exists; PUT /items/{{id}} replaces it")
        vector = await state.compute(state.extract, live, data, heavy=state.screen(live, data))

        def write() -> int:
            with live.lock.write():
                A.add_vector(live.rec, vector, item_id, meta)
                live.changed()
                return len(live.rec)

        n = await run_in_threadpool(write)
        return JSONResponse({"id": A.json_id(item_id), "items": n}, status_code=201)

    @routes.put(
        "/items/{item_id}",
        dependencies=auth,
        summary="Insert or replace an item",
        openapi_extra=upload_openapi(("image", "metadata"), required=()),
    )
    async def put_item(state: State, item_id: str, request: Request) -> JSONResponse:
        item_id = path_id(item_id)
        live = state.live
        if request.headers.get("content-type", "").startswith("application/json"):
            body = await read_limited(request, state.max_upload_bytes)
            doc = parse_json(body, "the JSON body")
            if not isinstance(doc, dict) or "metadata" not in doc:
                raise HTTPException(422, 'a JSON body must be {"metadata": {...}}')
            parts: dict[str, Any] = {"metadata": json.dumps(doc["metadata"])}
        else:
            parts = await read_upload(request, state.max_upload_bytes, raw_ok=False)
        data = parts.get("image")
        meta = metadata_field(parts.get("metadata")) if "metadata" in parts else None
        if data is None and meta is None:
            raise HTTPException(422, "send an 'image', a 'metadata' JSON object, or both")
        vector = None
        if isinstance(data, bytes):
            vector = await state.compute(state.extract, live, data, heavy=state.screen(live, data))

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

    @routes.delete("/items/{item_id}", dependencies=auth, summary="Remove an item")
    def delete_item(state: State, item_id: str) -> JSONResponse:
        item_id = path_id(item_id)
        live = state.live
        with live.lock.write():
            key = A.resolve_id(live.rec, item_id)
            A.remove(live.rec, key)
            live.changed()
            return JSONResponse({"id": A.json_id(key), "removed": True, "items": len(live.rec)})

    return routes


_WRITES = {  # path: (its Allow header, the write methods refused)
    "/items": ("GET", ["POST"]),
    "/items/{item_id}": ("GET", ["PUT", "DELETE"]),
    "/save": ("", ["POST"]),
}


def refused_writes(workers: int, paths: tuple[str, ...]) -> APIRouter:
    """405 for the writes at ``paths`` (of ``/items``, ``/items/{item_id}``, ``/save``):
    ``workers`` processes hold independent copies of the catalogue."""
    detail = (
        f"this server runs {workers} worker processes (--workers {workers}), each with its "
        "own copy of the catalogue, so it takes no writes; change the catalogue on disk and "
        "POST /reload (every worker follows), or run one worker (--workers 1) to write"
    )

    def refuse(allow: str) -> Callable[[], Awaitable[JSONResponse]]:
        async def endpoint() -> JSONResponse:
            raise HTTPException(405, detail, headers={"Allow": allow})

        return endpoint

    routes = APIRouter()
    for path in paths:
        allow, methods = _WRITES[path]
        routes.add_api_route(path, refuse(allow), methods=methods, include_in_schema=False)
    return routes
