"""What a client sends: bodies read within the upload limit, multipart fields, its JSON, and
the photo decoded (within the pixel budget) and turned into a vector.

Every route that reads a body goes through :func:`read_limited`; every upload is
decoded by :func:`decode_upload`, whatever route it came through.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Callable, MutableMapping
from typing import Any

import numpy as np
from fastapi import Request
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException

from ..crop import LOCATE, Box, check_box, crop_to_box, locate_product
from ..errors import ImageLoadError
from ..images import decode_bytes_per_pixel, encoded_size, load_image
from ..persistence import json_depth
from .limits import HEAVY_BYTES, HEAVY_PIXELS, MAX_JSON_DEPTH, MULTIPART_SLACK

Message = MutableMapping[str, Any]
Decode = Callable[[bytes, "tuple[int, int] | None"], np.ndarray]
"""Decodes an upload at a draft size (the app's own, which warms the model first)."""


class UploadTooLarge(Exception):
    """The request body passed the upload limit (answered with 413)."""


# -- bodies ---------------------------------------------------------------------------------
async def read_limited(request: Request, limit: int) -> bytes:
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


async def read_query_image(request: Request, limit: int) -> bytes:
    """The photo of a search: the multipart field ``image`` or the raw body, else a 422."""
    data = (await read_upload(request, limit)).get("image")
    if not isinstance(data, bytes):
        raise HTTPException(
            422, "no image: send it as the multipart field 'image' or as the raw request body"
        )
    return data


async def read_upload(request: Request, limit: int, *, raw_ok: bool = True) -> dict[str, Any]:
    """Multipart fields (files as bytes, text as str), or ``{"image": body}`` for a raw upload."""
    ctype = request.headers.get("content-type", "")
    multipart = ctype.startswith(("multipart/form-data", "application/x-www-form-urlencoded"))
    body = await read_limited(request, limit + (MULTIPART_SLACK if multipart else 0))
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


def upload_openapi(names: tuple[str, ...], *, required: tuple[str, ...]) -> dict[str, Any]:
    """The OpenAPI request body of a route that reads its upload itself."""
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


# -- a client's JSON ------------------------------------------------------------------------
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


def metadata_field(raw: Any) -> dict[str, Any]:
    """The ``metadata`` multipart field (JSON text) as an item's metadata, else a 4xx."""
    if raw is None:
        return {}
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", errors="replace")
    meta = parse_json(raw, "the 'metadata' field")
    if not isinstance(meta, dict):
        raise HTTPException(422, "the 'metadata' field must be a JSON object, e.g. {\"price\": 10}")
    return {str(k): v for k, v in meta.items()}


# -- the photo ------------------------------------------------------------------------------
def decode_upload(data: bytes, draft: tuple[int, int] | None, max_pixels: int) -> np.ndarray:
    """Decode an upload: refused from its header, before decoding, over the pixel budget
    (JPEGs counted at the reduced scale draft mode decodes them at) or the memory that
    budget allows."""
    return load_image(
        data,
        max_pixels=max_pixels,
        draft_size=draft,
        max_bytes=max_pixels * decode_bytes_per_pixel("RGBA"),
    )


MAX_HEADER_SEGMENTS = 1000
"""Most PNG chunks or JPEG segments an upload may hold before its pixels (more: 422).

Real photos hold a few dozen (colour profile, EXIF, text); a file of hundreds of
thousands of empty chunks costs seconds of header parsing and no pixel at all."""

_PNG = b"\x89PNG\r\n\x1a\n"
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_JPEG_BARE = {0x01, 0xD8, *range(0xD0, 0xD8)}  # markers without a length


def _too_many_segments(what: str) -> HTTPException:
    return HTTPException(
        422,
        f"the uploaded image holds more than {MAX_HEADER_SEGMENTS:,} {what} before its pixels: "
        "refused as a likely attack on the decoder (a photo holds a few dozen)",
    )


def header_size(data: bytes) -> tuple[str, int, int] | None:
    """``(format, width, height)`` from a PNG's or a JPEG's header, else ``None``.

    Reads the chunk or segment headers only, at most :data:`MAX_HEADER_SEGMENTS` of
    them, so it costs microseconds whatever the upload holds; ``None`` for another
    format or a header that cannot be followed (the decoder then says why).

    Raises
    ------
    starlette.exceptions.HTTPException
        422 for an image with more than :data:`MAX_HEADER_SEGMENTS` chunks or segments
        before its pixels.

    Examples
    --------
    >>> import io
    >>> from PIL import Image
    >>> buf = io.BytesIO(); Image.new("RGB", (30, 20)).save(buf, "PNG")
    >>> header_size(buf.getvalue())
    ('PNG', 30, 20)
    """
    view = memoryview(data)
    if data[:8] == _PNG and data[12:16] == b"IHDR" and len(data) >= 24:
        width, height = struct.unpack(">II", view[16:24])
        i, n = 8, 0
        while i + 8 <= len(data):
            length = struct.unpack(">I", view[i : i + 4])[0]
            if bytes(view[i + 4 : i + 8]) in (b"IDAT", b"IEND"):
                break
            n += 1
            if n > MAX_HEADER_SEGMENTS:
                raise _too_many_segments("chunks")
            i += 12 + length
        return "PNG", int(width), int(height)
    if data[:2] == b"\xff\xd8":
        i, n = 2, 0
        while i + 4 <= len(data):
            if data[i] != 0xFF:
                return None
            marker = data[i + 1]
            if marker == 0xFF:  # fill byte
                i += 1
                continue
            n += 1
            if n > MAX_HEADER_SEGMENTS:
                raise _too_many_segments("segments")
            if marker in _JPEG_BARE:
                i += 2
                continue
            if marker in _JPEG_SOF:
                if i + 9 > len(data):
                    return None
                height, width = struct.unpack(">HH", view[i + 5 : i + 9])
                return "JPEG", int(width), int(height)
            if marker in (0xD9, 0xDA):  # the end, or scan data before any frame header
                return None
            i += 2 + struct.unpack(">H", view[i + 2 : i + 4])[0]
    return None


def _jpeg_scale(size: tuple[int, int], draft: tuple[int, int]) -> int:
    """The reduction draft mode decodes a JPEG of ``size`` at for ``draft`` (1, 2, 4 or 8)."""
    scale = min(size[0] // max(1, draft[0]), size[1] // max(1, draft[1]))
    return next(s for s in (8, 4, 2, 1) if scale >= s or s == 1)


def screen_upload(data: bytes, draft: tuple[int, int] | None, max_pixels: int) -> bool:
    """Refuse an upload over the pixel budget from its header; return whether it is heavy.

    Run on the event loop before the request takes a model thread, so a pixel bomb
    is answered (422) without waiting for, or holding, one. Only a PNG's or a JPEG's
    header is read, natively and bounded (:func:`header_size`); an image is refused
    here only when :func:`decode_upload` would refuse it whatever draft scale it
    picked (a JPEG counted at its smallest, 1/8), and other formats are left to it.
    An upload is *heavy* when it decodes to more than
    :data:`~visualsim.serve.limits.HEAVY_PIXELS` pixels or is more than
    :data:`~visualsim.serve.limits.HEAVY_BYTES` bytes (the entropy decoding of a large
    JPEG, the inflating of a large PNG).

    Raises
    ------
    ImageLoadError
        An image over the budget (its ``too_large`` is the size it would decode at).
    starlette.exceptions.HTTPException
        422 for a header of too many chunks or segments (see :func:`header_size`).
    """
    found = header_size(data)
    if found is None:
        return len(data) > HEAVY_BYTES
    fmt, width, height = found
    if fmt == "JPEG" and draft is not None:
        least = (math.ceil(width / 8), math.ceil(height / 8))
        scale = _jpeg_scale((width, height), draft)
        decoded = math.ceil(width / scale) * math.ceil(height / scale)
    else:
        least, decoded = (width, height), width * height
    if least[0] * least[1] > max_pixels:
        exc = ImageLoadError(
            "<upload>",
            f"{least[0]}x{least[1]} = {least[0] * least[1]:,} pixels is over the limit of "
            f"{max_pixels:,} (a possible decompression bomb)",
        )
        exc.too_large = least  # type: ignore[attr-defined]  # as load_image marks it
        raise exc
    return decoded > HEAVY_PIXELS or len(data) > HEAVY_BYTES


def draft_size(extractor: Any) -> tuple[int, int] | None:
    """The decode size the extractor asks for (JPEG draft mode), as its own loading does."""
    decode_size = getattr(extractor, "decode_size", None)  # BaseExtractor's; others: full size
    return decode_size() if callable(decode_size) else None


def decode_for_locate(extractor: Any, data: bytes, decode: Decode) -> np.ndarray:
    """The upload decoded for finding products in it: a JPEG at a reduced scale still
    twice the model's input (a product may fill a small part of the photo)."""
    draft = draft_size(extractor)
    return decode(data, None if draft is None else (draft[0] * 2, draft[1] * 2))


def extract_region(
    extractor: Any, data: bytes, box: Box | str | None, decode: Decode
) -> tuple[np.ndarray, list[Any] | None]:
    """The upload's vector, of ``box``'s region; and that region in the photo's own
    pixels (the box found with ``"locate"``, ``None`` when none was)."""
    used: list[Any] | None  # whole pixels as given, or as found
    if box == LOCATE:
        pixels = decode_for_locate(extractor, data, decode)
        found = locate_product(pixels)
        used = None if found is None else photo_box(found, pixels, data)
        if found is not None:
            pixels = crop_to_box(pixels, found)
    elif box is not None:
        # the box is in the photo's own pixels; a JPEG is decoded reduced, just enough
        # that the region still has the model's input size, and the box scaled to it
        size = encoded_size(data)
        left, top, right, bottom = check_box(box, size)
        draft = draft_size(extractor)
        if draft is not None:
            f = max(size[0] / (right - left), size[1] / (bottom - top))
            draft = (math.ceil(draft[0] * f), math.ceil(draft[1] * f))
        pixels = crop_to_box(decode(data, draft), box, size=size)
        used = [int(v) if v.is_integer() else v for v in (left, top, right, bottom)]
    else:
        pixels, used = decode(data, draft_size(extractor)), None
    vector: np.ndarray = extractor.extract([pixels], progress=False)[0]
    return vector, used


def photo_box(box: tuple[int, int, int, int], pixels: np.ndarray, data: bytes) -> list[int]:
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
