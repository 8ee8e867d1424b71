"""How the HTTP app answers an error: each one as ``{"detail": ...}`` with its status, server
paths scrubbed, a bad ``k`` in :func:`~visualsim.validation.check_k`'s words, and never a
traceback."""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from ..errors import ConfigError, ImageLoadError, VisualsimError
from ..validation import check_k
from .state import AppState
from .uploads import UploadTooLarge

logger = logging.getLogger("visualsim.serve")


def install_error_handlers(app: FastAPI, state: AppState) -> None:
    """Answer every error ``app`` meets as JSON (server paths removed, see ``state.scrub``)."""

    def reply(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
        return JSONResponse({"detail": state.scrub(detail)}, status_code=status, headers=headers)

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
            {"detail": f"the upload is larger than the limit of {_size(request)}"},
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


def _size(request: Request) -> str:
    limit = getattr(request.app.state, "max_upload_bytes", None)
    return f"{limit} bytes" if limit else "this server"
