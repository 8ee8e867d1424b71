"""The HTTP app's two ASGI middlewares: item ids routed on the raw path, and one access-log
line (plus the security headers) per answer."""

from __future__ import annotations

import json
import logging
import time
import urllib.parse
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import datetime, timezone
from typing import Any

from .limits import FRAME_POLICY

access_logger = logging.getLogger("visualsim.serve.access")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

# -- item paths -----------------------------------------------------------------------------
_ITEM_TAILS = frozenset({"similar", "image"})


def path_id(segment: str) -> str:
    """The item id in a path segment :class:`ItemPathMiddleware` left percent-encoded."""
    return urllib.parse.unquote(segment)


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
