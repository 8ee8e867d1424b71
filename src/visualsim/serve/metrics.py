"""``GET /metrics``: the app's counters in the Prometheus text format (version 0.0.4).

Request counts by route template, method and status class, a latency histogram per
route template (fixed buckets), the model-work queue (requests waiting for a model
thread, requests running on one), the catalogue's size and the reloads. Labels are
route *templates* (``/items/{item_id}``), never a client's raw path: an id is user
data (unbounded label values, and characters that would break the text format).
Written by hand (the format is a few lines), so no extra dependency.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The content type of ``GET /metrics`` (Prometheus text exposition format 0.0.4)."""

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Upper bounds (seconds) of the request latency histogram's buckets (``+Inf`` added)."""

UNMATCHED = "<unmatched>"
"""The route label of a request no route matched (404 for any path)."""

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def escape_label(value: str) -> str:
    r"""A label value as the text format writes it: ``\``, ``"`` and newline escaped.

    Examples
    --------
    >>> escape_label('a"b\\c\nd')
    'a\\"b\\\\c\\nd'
    """
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Metrics:
    """Thread-safe counters of one app (``AppState.metrics``).

    Examples
    --------
    >>> m = Metrics()
    >>> m.observe("/health", "GET", 200, 0.003)
    >>> 'visualsim_requests_total{route="/health",method="GET",status="2xx"} 1' in m.render(0)
    True
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, str, str], int] = {}
        self._buckets: dict[str, list[int]] = {}  # per route: count per bucket (not cumulative)
        self._sums: dict[str, float] = {}
        self.queue_waiting = 0
        self.in_flight = 0
        self.reloads = 0
        self.reload_failures = 0
        self.refused_no_key = 0
        self.refused_rate_limit = 0
        self.held_backoff = 0

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one answered request."""
        method = method if method in _METHODS else "OTHER"
        status_class = f"{status // 100}xx" if 100 <= status < 600 else "other"
        bucket = len(LATENCY_BUCKETS)
        for i, bound in enumerate(LATENCY_BUCKETS):
            if seconds <= bound:
                bucket = i
                break
        with self._lock:
            key = (route, method, status_class)
            self._requests[key] = self._requests.get(key, 0) + 1
            counts = self._buckets.setdefault(route, [0] * (len(LATENCY_BUCKETS) + 1))
            counts[bucket] += 1
            self._sums[route] = self._sums.get(route, 0.0) + seconds

    def add(self, name: str, delta: int) -> None:
        """Move one of the gauges or counters (``queue_waiting``, ``in_flight``, ``reloads``,
        ``reload_failures``, ``refused_no_key``, ``refused_rate_limit``, ``held_backoff``) by
        ``delta``, under the lock."""
        with self._lock:
            setattr(self, name, getattr(self, name) + delta)

    def render(self, items: int) -> str:
        """The exposition text, with ``items`` as the catalogue size."""
        with self._lock:
            requests = sorted(self._requests.items())
            buckets = {r: list(c) for r, c in self._buckets.items()}
            sums = dict(self._sums)
            gauges = (self.queue_waiting, self.in_flight, self.reloads, self.reload_failures)
            refused = (self.refused_no_key, self.refused_rate_limit)
            held = self.held_backoff
        waiting, running, reloads, failures = gauges
        out = [
            "# HELP visualsim_requests_total HTTP requests answered, by route template, "
            "method and status class.",
            "# TYPE visualsim_requests_total counter",
        ]
        for (route, method, status), n in requests:
            out.append(
                f'visualsim_requests_total{{route="{escape_label(route)}",'
                f'method="{method}",status="{status}"}} {n}'
            )
        out += [
            "# HELP visualsim_request_duration_seconds Time to answer a request, by route "
            "template.",
            "# TYPE visualsim_request_duration_seconds histogram",
        ]
        for route in sorted(buckets):
            label = escape_label(route)
            cumulative = 0
            for bound, n in zip((*LATENCY_BUCKETS, None), buckets[route], strict=True):
                cumulative += n
                le = "+Inf" if bound is None else repr(float(bound))
                out.append(
                    f'visualsim_request_duration_seconds_bucket{{route="{label}",le="{le}"}} '
                    f"{cumulative}"
                )
            out.append(f'visualsim_request_duration_seconds_sum{{route="{label}"}} {sums[route]!r}')
            out.append(f'visualsim_request_duration_seconds_count{{route="{label}"}} {cumulative}')
        for name, kind, text, value in (
            ("visualsim_model_queue", "gauge", "Requests awaiting a model thread.", waiting),
            ("visualsim_model_in_flight", "gauge", "Requests running on a model thread.", running),
            ("visualsim_catalogue_items", "gauge", "Items in the catalogue served.", items),
            ("visualsim_reloads_total", "counter", "Catalogue reloads swapped in.", reloads),
            ("visualsim_reload_failures_total", "counter", "Reloads that failed.", failures),
        ):
            out += [f"# HELP {name} {text}", f"# TYPE {name} {kind}", f"{name} {value}"]
        out += [
            "# HELP visualsim_refused_total Requests refused before routing (401 without the "
            "key for reads, 429 past the rate limit), by reason.",
            "# TYPE visualsim_refused_total counter",
            f'visualsim_refused_total{{reason="no_key"}} {refused[0]}',
            f'visualsim_refused_total{{reason="rate_limit"}} {refused[1]}',
            "# HELP visualsim_backoff_held_total Requests held before routing because their "
            "client's requests kept being refused (--refusal-backoff).",
            "# TYPE visualsim_backoff_held_total counter",
            f"visualsim_backoff_held_total {held}",
        ]
        return "\n".join(out) + "\n"


def route_template(scope: Scope) -> str:
    """The template of the route that answered ``scope`` (after routing), else :data:`UNMATCHED`."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) and path else UNMATCHED


class MetricsMiddleware:
    """Count each request in ``metrics`` by the route template the router matched.

    Added innermost among the app's middlewares, so it sees the scope the router
    writes ``route`` into.
    """

    def __init__(
        self,
        app: Callable[[Scope, Receive, Send], Awaitable[None]],
        metrics: Metrics,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = self.clock()
        status = 500

        async def send_counted(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_counted)
        finally:
            self.metrics.observe(
                route_template(scope), str(scope.get("method", "")), status, self.clock() - start
            )
