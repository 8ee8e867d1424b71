"""The HTTP app's ASGI middlewares: item ids routed on the raw path, one access-log line
(plus the security headers) per answer, the optional API key for reads and rate limit
per client, and the back-off that slows a client whose requests keep being refused."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import secrets
import threading
import time
import urllib.parse
from collections import OrderedDict
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import datetime, timezone
from typing import Any

from .limits import (
    BACKOFF_FREE,
    BACKOFF_MAX_S,
    BACKOFF_STEP_S,
    BACKOFF_WINDOW_S,
    FRAME_POLICY,
)
from .metrics import Metrics

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


# -- the API key for reads, and a rate limit per client ------------------------------------
def bearer_matches(header: str, key: str | None) -> bool:
    """Whether an ``Authorization`` header is ``Bearer <key>`` (compared in constant time)."""
    scheme, _, token = header.partition(" ")
    ok = key is not None and secrets.compare_digest(
        token.strip().encode("utf-8"), key.encode("utf-8")
    )
    return scheme.lower() == "bearer" and ok


_PUBLIC = frozenset({"/health"})


def _route(scope: Scope) -> str:
    """The request's path without the prefix the app is mounted under."""
    path: str = scope.get("path", "")
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


def _authorization(scope: Scope) -> str:
    """The request's ``Authorization`` header (``""`` without one)."""
    for name, value in scope.get("headers", []):
        if name.lower() == b"authorization":
            return str(value.decode("latin-1"))
    return ""


async def _refuse(send: Send, status: int, detail: str, headers: list[tuple[bytes, bytes]]) -> None:
    body = json.dumps({"detail": detail}).encode("utf-8")
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode("ascii")),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class ReadKeyMiddleware:
    """Every request but ``GET /health`` needs ``Authorization: Bearer <key>``, else 401.

    What ``create_app(..., protect_reads=True)`` (``visualsim serve --protect-reads``)
    adds: the JSON API, ``/metrics``, the page and its static files alike, and a path
    no route has (401, not 404: a client without the key learns nothing of the routes).
    """

    def __init__(
        self,
        app: Callable[[Scope, Receive, Send], Awaitable[None]],
        key: str,
        metrics: Metrics | None = None,
    ) -> None:
        self.app = app
        self.key = key
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        public = scope["type"] != "http" or _route(scope) in _PUBLIC
        if not public and not bearer_matches(_authorization(scope), self.key):
            if self.metrics is not None:
                self.metrics.add("refused_no_key", 1)
            await _refuse(
                send,
                401,
                "this server needs the header 'Authorization: Bearer <api key>' "
                "on every request but /health",
                [(b"www-authenticate", b"Bearer")],
            )
            return
        await self.app(scope, receive, send)


class RateLimiter:
    """A token bucket per client: ``rate`` requests a second on average, ``burst`` at once.

    At most ``max_clients`` buckets are kept; the least recently seen client is
    forgotten first (it starts again with a full bucket), so memory stays bounded
    whatever the number of addresses. ``clock`` (seconds, monotonic) is injectable
    for tests.

    Examples
    --------
    >>> now = [0.0]
    >>> limit = RateLimiter(1.0, 2, clock=lambda: now[0])
    >>> [limit.take("a") for _ in range(3)]
    [0.0, 0.0, 1.0]
    >>> now[0] = 1.0
    >>> limit.take("a")
    0.0
    """

    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        max_clients: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = float(rate)
        self.burst = float(burst)
        self.max_clients = int(max_clients)
        self.clock = clock
        self._lock = threading.Lock()
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, time

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, client: str) -> float:
        """Take one token for ``client``: 0.0 when allowed, else the seconds until one is."""
        now = self.clock()
        with self._lock:
            tokens, last = self._buckets.pop(client, (self.burst, now))
            tokens = min(self.burst, tokens + max(0.0, now - last) * self.rate)
            wait = 0.0
            if tokens >= 1.0:
                tokens -= 1.0
            else:
                wait = (1.0 - tokens) / self.rate
            self._buckets[client] = (tokens, now)  # the most recently seen, last
            while len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
            return wait


class RateLimitMiddleware:
    """Answer 429 with ``Retry-After`` to a client (by address) past its :class:`RateLimiter`.

    ``/health`` is not limited (a load balancer's probe). Behind a reverse proxy every
    request comes from the proxy's address unless uvicorn takes it from
    ``X-Forwarded-For`` (it does for a proxy on 127.0.0.1; ``FORWARDED_ALLOW_IPS``).
    """

    def __init__(
        self,
        app: Callable[[Scope, Receive, Send], Awaitable[None]],
        limiter: RateLimiter,
        metrics: Metrics | None = None,
    ) -> None:
        self.app = app
        self.limiter = limiter
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and _route(scope) not in _PUBLIC:
            client = scope.get("client")
            wait = self.limiter.take(str(client[0]) if client else "")
            if wait > 0:
                if self.metrics is not None:
                    self.metrics.add("refused_rate_limit", 1)
                await _refuse(
                    send,
                    429,
                    f"too many requests from this client (at most {self.limiter.rate:g}/s, "
                    f"{self.limiter.burst:g} at once); try again shortly",
                    [(b"retry-after", str(max(1, math.ceil(wait))).encode("ascii"))],
                )
                return
        await self.app(scope, receive, send)


# -- a client whose requests keep being refused waits ---------------------------------------
class RefusalBackoff:
    """Per client address, a fading count of refused requests, and the wait it has earned.

    Each refusal adds one to the client's count, which fades with time constant
    ``window`` seconds (a count of 20 is 7.4 after 10 s, 2.7 after 20 s). Once the
    count passes ``free``, the client's next request waits ``step`` seconds for each
    refusal past it, at most ``max_delay``: a client posting refused uploads in a loop
    settles at a few requests a second, and the server's time goes to the others. A
    shopper's occasional bad upload (a count under ``free``) is never held. At most
    ``max_clients`` addresses are remembered, the least recently seen forgotten first.
    ``clock`` (monotonic seconds) is injectable for tests.

    Examples
    --------
    >>> now = [0.0]
    >>> backoff = RefusalBackoff(free=2, step=0.1, max_delay=1.0, clock=lambda: now[0])
    >>> for _ in range(4):
    ...     backoff.refused("a")
    >>> round(backoff.delay("a"), 3), backoff.delay("b")
    (0.2, 0.0)
    >>> now[0] = 60.0  # the count has faded
    >>> backoff.delay("a")
    0.0
    """

    def __init__(
        self,
        *,
        free: float = BACKOFF_FREE,
        step: float = BACKOFF_STEP_S,
        max_delay: float = BACKOFF_MAX_S,
        window: float = BACKOFF_WINDOW_S,
        max_clients: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.free = float(free)
        self.step = float(step)
        self.max_delay = float(max_delay)
        self.window = float(window)
        self.max_clients = int(max_clients)
        self.clock = clock
        self._lock = threading.Lock()
        self._counts: OrderedDict[str, tuple[float, float]] = OrderedDict()  # count, time

    def __len__(self) -> int:
        return len(self._counts)

    def _faded(self, client: str, now: float) -> float:
        count, last = self._counts.get(client, (0.0, now))
        return count * math.exp(-max(0.0, now - last) / self.window)

    def delay(self, client: str) -> float:
        """Seconds ``client``'s next request waits (0.0 for a client in good standing)."""
        now = self.clock()
        with self._lock:
            count = self._faded(client, now)
        past = count - self.free
        return 0.0 if past <= 0 else min(self.max_delay, self.step * past)

    def refused(self, client: str) -> None:
        """Count one refused request of ``client``."""
        now = self.clock()
        with self._lock:
            count = self._faded(client, now)
            self._counts.pop(client, None)
            self._counts[client] = (count + 1.0, now)  # the most recently seen, last
            while len(self._counts) > self.max_clients:
                self._counts.popitem(last=False)


def counts_as_refusal(status: int) -> bool:
    """Whether an answer's status counts against the client: any 4xx but 404.

    A 404 is a stale link as often as a probe; everything else in 4xx (a bad or
    oversized upload, a missing key, a rate limit, a malformed query) is the
    client's own doing.

    Examples
    --------
    >>> [counts_as_refusal(s) for s in (200, 404, 413, 422, 429, 503)]
    [False, False, True, True, True, False]
    """
    return 400 <= status < 500 and status != 404


class BackoffMiddleware:
    """Hold a request from a client (by address) that :class:`RefusalBackoff` says must wait.

    The wait is an ``asyncio`` sleep before the app sees the request: it costs the
    server no CPU and no model thread, and the connection it holds counts in the
    per-client connection cap. Every answer that :func:`counts_as_refusal` adds to the
    client's count. ``GET /health`` and requests carrying the server's own API key
    (``key``; an operator's indexing job) are neither held nor counted. Behind a
    reverse proxy, the address is the one uvicorn takes from ``X-Forwarded-For``
    (as for :class:`RateLimitMiddleware`): without that header every client shares the
    proxy's address, so turn the back-off off there (``--refusal-backoff 0``).
    """

    def __init__(
        self,
        app: Callable[[Scope, Receive, Send], Awaitable[None]],
        backoff: RefusalBackoff,
        key: str | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.app = app
        self.backoff = backoff
        self.key = key
        self.metrics = metrics

    def _exempt(self, scope: Scope) -> bool:
        if _route(scope) in _PUBLIC:
            return True
        return self.key is not None and bearer_matches(_authorization(scope), self.key)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._exempt(scope):
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        address = str(client[0]) if client else ""
        wait = self.backoff.delay(address)
        if wait > 0:
            if self.metrics is not None:
                self.metrics.add("held_backoff", 1)
            await asyncio.sleep(wait)
        refused = False

        async def send_watched(message: Message) -> None:
            nonlocal refused
            if message["type"] == "http.response.start":
                refused = counts_as_refusal(int(message["status"]))
            await send(message)

        try:
            await self.app(scope, receive, send_watched)
        finally:
            if refused:
                self.backoff.refused(address)
