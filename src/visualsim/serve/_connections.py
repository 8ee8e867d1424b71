"""A connection guard for uvicorn: header and body read timeouts and a connection cap.

Uvicorn bounds keep-alive between requests (``timeout_keep_alive``) but not the time a
client may take to send a request head, nor the number of idle sockets it keeps open:
1,100 half-sent requests exhaust a 1,024 file-descriptor limit and lock everyone out.
The protocol classes here are uvicorn's own HTTP protocols (h11, or httptools when it is
installed, the one uvicorn's ``auto`` would pick) with a guard added:

- a request head must be complete within ``header_timeout`` seconds of its first byte
  (of the connection's opening, for a new connection): else the connection is answered
  408 (when it sent anything) and closed;
- a request body may not stall (no byte received while the server is ready to read)
  for longer than ``body_timeout`` seconds: else 408 when no response was started, and
  closed; the app sees the client as gone;
- a request body must keep up an average of ``min_upload_rate`` bytes a second: it may
  take ``upload_grace`` seconds plus one second per ``min_upload_rate`` bytes received
  (time the server itself was not reading does not count), so a client trickling a
  byte a second (which never stalls) cannot hold a connection and its request for
  hours: else 408 as for a stall, and closed;
- at most ``max_connections`` connections are open per process: a new one past the cap
  closes the connection that has been idle (no request in flight: new, between
  keep-alive requests, or with an incomplete head) the longest, so idle clients cannot
  lock out real ones; a connection with a request in flight is never closed for the cap.
  When every open connection has a request in flight the new one is answered 503 with
  ``Retry-After`` and closed;
- at most ``max_connections_per_client`` connections are open per client address (the
  peer's IP address; 0: no such limit): past it the address's own connection idle the
  longest is closed, or, when all of its connections have a request in flight, the new
  one is answered 503 with ``Retry-After`` and closed. Other addresses are not touched,
  so one address cannot take the whole cap. Behind a reverse proxy every connection
  comes from the proxy's address: raise the limit to ``max_connections`` there (or 0).

Closures are counted and logged as one JSON line per :data:`LOG_EVERY_S` seconds at
most (a flood of idle sockets does not flood the log).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, OrderedDict
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

logger = logging.getLogger("visualsim.serve")

HEADER_TIMEOUT_S = 10.0
"""Default seconds a client has to send a whole request head."""
BODY_TIMEOUT_S = 30.0
"""Default seconds a request body may stall (no byte received) before the connection closes."""
KEEP_ALIVE_S = 5.0
"""Default seconds an idle keep-alive connection stays open between requests."""
MAX_CONNECTIONS = 1000
"""Upper bound of the default connection cap (also kept below the fd limit)."""
PER_CLIENT_SHARE = 4
"""The default per-address limit is the connection cap divided by this (at least 1)."""
MIN_UPLOAD_RATE = 1024.0
"""Default bytes a second a request body must average (after :data:`UPLOAD_GRACE_S`)."""
UPLOAD_GRACE_S = 10.0
"""Default seconds a request body gets before :data:`MIN_UPLOAD_RATE` applies."""
RATE_CHECK_S = 1.0
"""Seconds between checks of a body's rate while the server is not reading it."""
FD_RESERVE = 64
"""File descriptors kept free of client connections (catalogue files, logs, threads)."""
BACKLOG = 2048
"""Largest listen backlog (connections the kernel holds before the server accepts them)."""
ACCEPT_BATCHES = 4
"""Accept batches (of up to a backlog each) that can be open before the guard closes any."""
LOG_EVERY_S = 10.0
"""At most one log line per this many seconds about closed connections."""

_TIMEOUT_408 = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"connection: close\r\ncontent-length: 16\r\n\r\nrequest timeout\n"
)
_CLIENT_503 = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"retry-after: 1\r\nconnection: close\r\ncontent-length: 43\r\n\r\n"
    b"too many open connections from this address"
)
_FULL_503 = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"retry-after: 1\r\nconnection: close\r\ncontent-length: 25\r\n\r\n"
    b"too many open connections"
)


def default_max_connections(fd_soft_limit: int) -> int:
    """The default cap: :data:`MAX_CONNECTIONS`, kept below the fd limit.

    Room is left for :data:`FD_RESERVE` files of the server's own and for one burst of
    connections accepted at once (:data:`ACCEPT_BATCHES` listen backlogs, see
    :func:`listen_backlog`): asyncio accepts up to a backlog of connections in one go,
    and a few more batches before the guard sees the first of them (and closes the ones
    idle the longest), and an accept that fails with "too many open files" stops
    accepting for a second.
    """
    burst = min(BACKLOG, fd_soft_limit // 16)
    return max(1, min(MAX_CONNECTIONS, fd_soft_limit - FD_RESERVE - ACCEPT_BATCHES * burst))


def default_max_connections_per_client(max_connections: int) -> int:
    """The default per-address limit: the cap divided by :data:`PER_CLIENT_SHARE`."""
    return max(1, max_connections // PER_CLIENT_SHARE)


def listen_backlog(fd_soft_limit: int, max_connections: int) -> int:
    """The listen backlog: :data:`BACKLOG`, or what the fd limit leaves past the cap (>= 16).

    It is also how many connections asyncio accepts in one go, so
    :data:`ACCEPT_BATCHES` of them must fit in the files the cap leaves.
    """
    room = (fd_soft_limit - FD_RESERVE - max_connections) // ACCEPT_BATCHES
    return max(16, min(BACKLOG, room))


class GuardedConfig(uvicorn.Config):
    """``uvicorn.Config`` carrying the guard's settings to every connection (picklable)."""

    def __init__(
        self,
        app: Any,
        *,
        header_timeout: float = HEADER_TIMEOUT_S,
        body_timeout: float = BODY_TIMEOUT_S,
        max_connections: int = MAX_CONNECTIONS,
        max_connections_per_client: int | None = None,
        min_upload_rate: float = MIN_UPLOAD_RATE,
        upload_grace: float = UPLOAD_GRACE_S,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("http", guarded_protocol())
        super().__init__(app, **kwargs)
        self.header_timeout = float(header_timeout)
        self.body_timeout = float(body_timeout)
        self.max_connections = int(max_connections)
        self.max_connections_per_client = int(
            default_max_connections_per_client(self.max_connections)
            if max_connections_per_client is None
            else max_connections_per_client
        )
        self.min_upload_rate = float(min_upload_rate)
        self.upload_grace = float(upload_grace)


class _Registry:
    """The open connections of one uvicorn server (one per process), idle ones in order."""

    def __init__(self, config: Any) -> None:
        self.header_timeout = float(getattr(config, "header_timeout", HEADER_TIMEOUT_S))
        self.body_timeout = float(getattr(config, "body_timeout", BODY_TIMEOUT_S))
        self.max_connections = int(getattr(config, "max_connections", MAX_CONNECTIONS))
        per_client = getattr(config, "max_connections_per_client", None)
        self.per_client = int(
            default_max_connections_per_client(self.max_connections)
            if per_client is None
            else per_client
        )
        self.min_upload_rate = float(getattr(config, "min_upload_rate", MIN_UPLOAD_RATE))
        self.upload_grace = float(getattr(config, "upload_grace", UPLOAD_GRACE_S))
        self.by_client: dict[str, set[Any]] = {}
        self.open: set[Any] = set()
        self.idle: OrderedDict[Any, None] = OrderedDict()  # longest idle first
        self.closed: Counter[str] = Counter()
        self.flush: asyncio.TimerHandle | None = None

    def count(self, reason: str, loop: asyncio.AbstractEventLoop) -> None:
        self.closed[reason] += 1
        if self.flush is None:
            self.flush = loop.call_later(LOG_EVERY_S, self.log)

    def log(self) -> None:
        self.flush = None
        if self.closed:
            doc = {"event": "connections_closed", **self.closed}
            doc.update(open=len(self.open), max_connections=self.max_connections)
            doc.update(clients=len(self.by_client))
            logger.info("closed %d connection(s)", sum(self.closed.values()), extra={"fields": doc})
            self.closed.clear()


def _registry(server_state: Any, config: Any) -> _Registry:
    reg = getattr(server_state, "_visualsim_connections", None)
    if reg is None:
        reg = _Registry(config)
        server_state._visualsim_connections = reg
    return reg


def _guarded(base: Any, name: str) -> Any:
    """``base`` (a uvicorn HTTP protocol class) with the guard; see the module's docs."""

    class Guarded(base):
        def connection_made(self, transport: asyncio.Transport) -> None:
            super().connection_made(transport)
            self._vs_reg = reg = _registry(self.server_state, self.config)
            self._vs_off = False  # the connection was upgraded (a websocket): not ours
            self._vs_active = False  # a request head is complete and its response is not
            self._vs_head_bytes = False  # bytes of a request head arrived since it went idle
            self._vs_body_timer: asyncio.TimerHandle | None = None
            self._vs_rate_timer: asyncio.TimerHandle | None = None
            self._vs_body_start = 0.0  # when the body began (less time the server paused)
            self._vs_body_bytes = 0  # body bytes received since
            self._vs_header_timer: asyncio.TimerHandle | None = self.loop.call_later(
                reg.header_timeout, self._vs_header_timeout
            )
            peer = transport.get_extra_info("peername")
            self._vs_client = peer[0] if isinstance(peer, tuple) and peer else None
            reg.open.add(self)
            reg.idle[self] = None
            if self._vs_client is not None and reg.per_client > 0:
                mine = reg.by_client.setdefault(self._vs_client, set())
                mine.add(self)
                if len(mine) > reg.per_client:
                    victim = next((p for p in reg.idle if p is not self and p in mine), None)
                    if victim is not None:
                        victim._vs_close("evicted_client_idle")
                    else:  # all of this address's others have a request in flight
                        self._vs_close("refused_client_full", _CLIENT_503)
                        return
            if len(reg.open) > reg.max_connections:
                victim = next((p for p in reg.idle if p is not self), None)
                if victim is not None:
                    victim._vs_close("evicted_idle")
                else:  # every other connection has a request in flight
                    self._vs_close("refused_full", _FULL_503)

        def connection_lost(self, exc: Exception | None) -> None:
            self._vs_forget()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self._vs_off:
                super().data_received(data)
                return
            if not self._vs_active:
                self._vs_head_bytes = True
                if self._vs_header_timer is None:  # first byte of a keep-alive request
                    self._vs_header_timer = self.loop.call_later(
                        self._vs_reg.header_timeout, self._vs_header_timeout
                    )
            was_active = self._vs_active
            super().data_received(data)
            self._vs_sync()
            if self._vs_active and self.cycle.more_body:
                self._vs_arm_body()
                if was_active:  # body bytes (the head's own packet is not counted)
                    self._vs_body_bytes += len(data)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._vs_sync()

        # -- the guard's own state ----------------------------------------------------
        def _vs_sync(self) -> None:
            """Follow the request cycle: head complete -> in flight; response sent -> idle."""
            if getattr(self, "_vs_off", True):
                return
            if self.transport.get_protocol() is not self:  # upgraded (a websocket): let go
                self._vs_forget()
                self._vs_off = True
                return
            cycle = self.cycle
            active = cycle is not None and not cycle.response_complete
            if active and not self._vs_active:
                self._vs_active, self._vs_head_bytes = True, False
                self._vs_reg.idle.pop(self, None)
                self._vs_cancel_header()
                if cycle.more_body:
                    self._vs_arm_body()
                    self._vs_start_rate()
            elif not active and self._vs_active:
                self._vs_active = False
                if self in self._vs_reg.open:
                    self._vs_reg.idle[self] = None  # the newest idle one
                self._vs_cancel_body()
                self._vs_cancel_rate()

        def _vs_arm_body(self) -> None:
            self._vs_cancel_body()
            self._vs_body_timer = self.loop.call_later(
                self._vs_reg.body_timeout, self._vs_body_timeout
            )

        def _vs_cancel_body(self) -> None:
            if self._vs_body_timer is not None:
                self._vs_body_timer.cancel()
                self._vs_body_timer = None

        def _vs_cancel_rate(self) -> None:
            if self._vs_rate_timer is not None:
                self._vs_rate_timer.cancel()
                self._vs_rate_timer = None

        def _vs_start_rate(self) -> None:
            """Start the body's clock: grace + bytes / min_upload_rate seconds for it."""
            self._vs_cancel_rate()
            if self._vs_reg.min_upload_rate <= 0:
                return
            self._vs_body_start, self._vs_body_bytes = self.loop.time(), 0
            self._vs_rate_timer = self.loop.call_later(
                self._vs_reg.upload_grace, self._vs_rate_check
            )

        def _vs_rate_check(self) -> None:
            self._vs_rate_timer = None
            cycle = self.cycle
            if not self._vs_active or cycle is None or not cycle.more_body:
                return  # the body is all in
            reg, now = self._vs_reg, self.loop.time()
            if self.flow.read_paused or self.transport.is_closing():
                # the app is not reading: that time is the server's, not the client's
                self._vs_body_start += RATE_CHECK_S
                self._vs_rate_timer = self.loop.call_later(RATE_CHECK_S, self._vs_rate_check)
                return
            allowed = reg.upload_grace + self._vs_body_bytes / reg.min_upload_rate
            if now - self._vs_body_start < allowed:
                wait = max(RATE_CHECK_S, self._vs_body_start + allowed - now)
                self._vs_rate_timer = self.loop.call_later(wait, self._vs_rate_check)
                return
            started = getattr(cycle, "response_started", True)
            self._vs_close("slow_upload", b"" if started else _TIMEOUT_408)

        def _vs_cancel_header(self) -> None:
            if self._vs_header_timer is not None:
                self._vs_header_timer.cancel()
                self._vs_header_timer = None

        def _vs_header_timeout(self) -> None:
            self._vs_header_timer = None
            if self._vs_active or self.transport.is_closing():
                return
            self._vs_close("header_timeout", _TIMEOUT_408 if self._vs_head_bytes else b"")

        def _vs_body_timeout(self) -> None:
            self._vs_body_timer = None
            cycle = self.cycle
            if not self._vs_active or cycle is None or not cycle.more_body:
                return
            if self.flow.read_paused or self.transport.is_closing():
                # the app has not read what came: the wait is ours, not the client's
                self._vs_arm_body()
                return
            started = getattr(cycle, "response_started", True)
            self._vs_close("body_timeout", b"" if started else _TIMEOUT_408)

        def _vs_close(self, reason: str, answer: bytes = b"") -> None:
            self._vs_reg.count(reason, self.loop)
            self._vs_forget()
            if not self.transport.is_closing():
                if answer:
                    self.transport.write(answer)
                self.transport.close()

        def _vs_forget(self) -> None:
            reg = getattr(self, "_vs_reg", None)
            if reg is None:
                return
            self._vs_cancel_header()
            self._vs_cancel_body()
            self._vs_cancel_rate()
            reg.open.discard(self)
            reg.idle.pop(self, None)
            mine = reg.by_client.get(getattr(self, "_vs_client", None) or "")
            if mine is not None:
                mine.discard(self)
                if not mine:
                    del reg.by_client[self._vs_client]

    Guarded.__name__ = Guarded.__qualname__ = name
    Guarded.__module__ = __name__
    return Guarded


GuardedH11Protocol: Any = _guarded(H11Protocol, "GuardedH11Protocol")
"""uvicorn's h11 protocol with the guard."""

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # httptools is not installed: uvicorn's "auto" would pick h11 too
    GuardedHttpToolsProtocol: Any = None
else:
    GuardedHttpToolsProtocol = _guarded(HttpToolsProtocol, "GuardedHttpToolsProtocol")
    """uvicorn's httptools protocol with the guard."""


def guarded_protocol() -> Any:
    """The protocol class uvicorn's ``http="auto"`` would pick, with the guard."""
    return GuardedHttpToolsProtocol or GuardedH11Protocol


__all__ = [
    "BODY_TIMEOUT_S",
    "HEADER_TIMEOUT_S",
    "KEEP_ALIVE_S",
    "MAX_CONNECTIONS",
    "MIN_UPLOAD_RATE",
    "UPLOAD_GRACE_S",
    "GuardedConfig",
    "GuardedH11Protocol",
    "default_max_connections",
    "default_max_connections_per_client",
    "guarded_protocol",
    "listen_backlog",
]
