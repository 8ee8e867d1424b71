"""Searches: by photo (``POST /query``), by the products found in a photo
(``POST /query/regions``), and the catalogue's duplicate photos (``GET /duplicates``).

The search parameters every search route shares (``k``, ``where``, ``min_score``,
``distinct``) are built here for one app's ``max_k``; ``items`` uses them for an
item's neighbours.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from ...crop import parse_box
from ...errors import NotFittedError
from .. import _adapters as A
from ..limits import DISTINCT_FIELD, MAX_DUPLICATES, MAX_REGIONS
from ..state import State
from ..uploads import photo_box, read_query_image, upload_openapi


@dataclass(frozen=True)
class SearchParams:
    """The query parameters of a search (FastAPI ``Query`` defaults), for one ``max_k``."""

    k: Any
    where: Any
    min_score: Any
    distinct: Any


def search_params(max_k: int) -> SearchParams:
    """``k`` (1 to ``max_k``), ``where``, ``min_score`` and ``distinct`` as routes take them."""
    return SearchParams(
        k=Query(10, ge=1, le=max_k, description=f"how many results, 1 to {max_k}"),
        where=Query(
            None,
            max_length=2000,
            description="filter on metadata, e.g. category == 'shoes' and price < 50",
        ),
        min_score=Query(None, ge=-1.0, le=1.0, description="drop results scoring below this"),
        distinct=Query(
            "true",
            max_length=1000,
            description="true (default): one result per photo, the same picture under two ids "
            "shown once; false: every item, repeats included; field:NAME: one result per value "
            "of the metadata field NAME",
        ),
    )


def router(params: SearchParams) -> APIRouter:
    """``POST /query``, ``POST /query/regions`` and ``GET /duplicates``."""
    routes = APIRouter()

    @routes.post(
        "/query",
        summary="Search by photo",
        openapi_extra=upload_openapi(("image",), required=("image",)),
    )
    async def query(
        state: State,
        request: Request,
        k: int = params.k,
        where: str | None = params.where,
        min_score: float | None = params.min_score,
        distinct: str = params.distinct,
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
        data = await read_query_image(request, state.max_upload_bytes)

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

        return await state.compute(work, heavy=state.screen(live, data))

    @routes.post(
        "/query/regions",
        summary="Find the products in a photo and search for each",
        openapi_extra=upload_openapi(("image",), required=("image",)),
    )
    async def query_regions(
        state: State,
        request: Request,
        k: int = params.k,
        where: str | None = params.where,
        min_score: float | None = params.min_score,
        distinct: str = params.distinct,
        max_regions: int = Query(
            5, ge=1, le=MAX_REGIONS, description=f"most regions, 1 to {MAX_REGIONS}"
        ),
    ) -> JSONResponse:
        live = state.live
        collapse = parse_distinct(distinct)
        data = await read_query_image(request, state.max_upload_bytes)

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
                        "box": photo_box(r.box, pixels, data),
                        "score": round(float(r.score), 6),
                        "results": state.results_json(live, r.results),
                    }
                    for r in found
                ]
            return JSONResponse({"regions": regions})

        return await state.compute(work, heavy=state.screen(live, data))

    @routes.get("/duplicates", summary="Duplicate photos in the catalogue (pairs, or groups)")
    async def duplicates(
        state: State,
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
        from ...duplicates import check_min_score

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

    return routes


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
