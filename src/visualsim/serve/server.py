"""Run the app under uvicorn: ``visualsim serve CATALOG`` and ``python -m visualsim.serve``.

Logs are JSON lines on stderr (one per request on ``visualsim.serve.access``);
SIGTERM and SIGINT stop accepting connections, let running requests finish,
then exit 0. The API key is read from an environment variable and never
printed or logged.

With ``workers=N > 1`` uvicorn's own supervisor runs N worker processes on one
listening socket. Each builds the app with :func:`worker_app` (an app factory)
from the options in the environment variable :data:`WORKER_ENV` (no secret in
it: the API key travels as the *name* of its environment variable, which the
workers inherit), loads the catalogue itself (memory-mapped vectors) and
refuses writes (405); ``POST /reload`` reaches every worker through a signal
file in a private temporary folder the supervisor creates and removes.

Slow and idle clients are bounded per process by the connection guard of
:mod:`visualsim.serve._connections`: a request head must arrive within
``header_timeout`` seconds, a body may not stall longer than ``body_timeout``,
keep-alive lasts ``keep_alive`` seconds, and past ``max_connections`` open
connections the one idle the longest is closed to admit a new one. At start-up the
process raises its own soft limit of open files (``RLIMIT_NOFILE``) to its hard
limit, and logs it.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..validation import check_float, check_positive_int
from .limits import BACKOFF_FREE, BACKOFF_MAX_S, BACKOFF_STEP_S

logger = logging.getLogger("visualsim.serve")

WORKER_ENV = "VISUALSIM_SERVE_WORKER"
"""Environment variable carrying a worker's options (JSON, never a secret) to its process."""


class JsonLogFormatter(logging.Formatter):
    """Format every record as one JSON object per line (access records pass through).

    A record logged with ``extra={"fields": {...}}`` carries those fields at the top
    level of its line (``{"ts", "level", "logger", "message", "event": ..., ...}``),
    never as JSON inside the message string.
    """

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.name == "visualsim.serve.access":
            return message
        doc: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": message,
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            doc.update({k: v for k, v in fields.items() if k not in doc})
        if record.exc_info:
            doc["error"] = self.formatException(record.exc_info)
        return json.dumps(doc)


def configure_logging(level: int = logging.INFO) -> None:
    """Send visualsim's and uvicorn's logs to stderr as JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLogFormatter())
    for name in ("visualsim", "uvicorn", "uvicorn.error"):
        log = logging.getLogger(name)
        log.handlers[:] = [handler]
        log.setLevel(level)
        log.propagate = False
    logging.getLogger("uvicorn.access").disabled = True


def api_key_from_env(name: str | None) -> str | None:
    """The key in environment variable ``name`` (None when no name is given).

    Raises
    ------
    ConfigError
        When the variable is unset or empty (its value is never shown).
    """
    if name is None:
        return None
    value = os.environ.get(name, "")
    if not value.strip():
        raise ConfigError(
            f"--api-key-env {name}: the environment variable {name} is not set or empty; "
            f"export {name}=<a long random key> or leave the option out for a read-only server"
        )
    return value.strip()


def raise_fd_limit() -> tuple[int, int]:
    """Raise this process's soft limit of open files to its hard limit.

    Returns ``(before, now)``, the soft limit before and after. Where it cannot be
    raised (no ``resource`` module, or the kernel refuses) it stays as it was.
    """
    try:
        import resource
    except ImportError:  # pragma: no cover - not on POSIX
        return 1 << 20, 1 << 20
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    big = 1 << 20  # what an unlimited one counts as
    before = big if soft == resource.RLIM_INFINITY else int(soft)
    target = big if hard == resource.RLIM_INFINITY else int(hard)
    if before < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            return before, before
        return before, target
    return before, before


def _check_seconds(name: str, value: Any) -> float:
    """A timeout in seconds: a number (or its text, as a config file may hold it) > 0."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ConfigError(f"{name} must be a number of seconds, got {value!r}") from None
    return check_float(name, value, minimum=0, open_minimum=True)


def check_connection_options(
    header_timeout: Any, body_timeout: Any, keep_alive: Any, max_connections: Any, fd_limit: int
) -> tuple[float, float, float, int]:
    """Validate the connection guard's options; ``max_connections=None`` picks the default.

    Raises
    ------
    ConfigError
        For a timeout that is not a positive finite number, or a cap that is not a
        positive integer or leaves too few of the process's ``fd_limit`` files for
        the server itself and a burst of 16 new connections.
    """
    from ._connections import FD_RESERVE, default_max_connections

    times = (
        _check_seconds("header_timeout", header_timeout),
        _check_seconds("body_timeout", body_timeout),
        _check_seconds("keep_alive", keep_alive),
    )
    if max_connections is None:
        cap = default_max_connections(fd_limit)
    else:
        cap = check_positive_int("max_connections", max_connections)
        most = max(1, fd_limit - FD_RESERVE - 16)
        if cap > most:
            raise ConfigError(
                f"max_connections={cap} leaves too few of this process's {fd_limit} open-file "
                f"limit (RLIMIT_NOFILE) for the server; use at most {most}, "
                "or raise the hard limit (`ulimit -Hn`, systemd LimitNOFILE=) first"
            )
    return (*times, cap)


def check_client_options(
    max_connections_per_client: Any, min_upload_rate: Any, upload_grace: Any, max_connections: int
) -> tuple[int, float, float]:
    """Validate the per-client options of the connection guard; ``None`` picks each default.

    Returns ``(max_connections_per_client, min_upload_rate, upload_grace)``; a limit
    above ``max_connections`` is that cap, and ``0`` turns the limit (or the rate) off.

    Raises
    ------
    ConfigError
        For a per-client limit that is not a whole number >= 0, a rate that is not a
        finite number >= 0, or a grace that is not a positive number of seconds.
    """
    from ._connections import (
        MIN_UPLOAD_RATE,
        UPLOAD_GRACE_S,
        default_max_connections_per_client,
    )

    if max_connections_per_client is None:
        per_client = default_max_connections_per_client(max_connections)
    elif isinstance(max_connections_per_client, bool) or not isinstance(
        max_connections_per_client, int
    ):
        raise ConfigError(
            "max_connections_per_client must be a whole number (0: no limit), got "
            f"{max_connections_per_client!r}"
        )
    elif max_connections_per_client < 0:
        raise ConfigError(
            "max_connections_per_client must be 0 (no limit) or more, got "
            f"{max_connections_per_client}"
        )
    else:
        per_client = min(max_connections_per_client, max_connections)
    rate = MIN_UPLOAD_RATE if min_upload_rate is None else min_upload_rate
    if isinstance(rate, str):
        try:
            rate = float(rate)
        except ValueError:
            raise ConfigError(
                f"min_upload_rate must be bytes a second, got {min_upload_rate!r}"
            ) from None
    rate = check_float("min_upload_rate", rate, minimum=0)
    grace = _check_seconds("upload_grace", UPLOAD_GRACE_S if upload_grace is None else upload_grace)
    return per_client, rate, grace


def run(
    catalog: str | os.PathLike[str] | Any,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    image_root: str | os.PathLike[str] | None = None,
    max_upload_bytes: int | None = None,
    graceful_timeout: int = 10,
    workers: int = 1,
    api_key_env: str | None = None,
    threads: int | None = None,
    max_pixels: int | None = None,
    queue_timeout: float | None = None,
    header_timeout: float | None = None,
    body_timeout: float | None = None,
    keep_alive: float | None = None,
    max_connections: int | None = None,
    sync_feed: str | os.PathLike[str] | None = None,
    sync_id_column: str = "id",
    sync_image_column: str = "image",
    protect_reads: bool = False,
    rate_limit: float | None = None,
    burst: int | None = None,
    max_connections_per_client: int | None = None,
    min_upload_rate: float | None = None,
    upload_grace: float | None = None,
    sync_allow_outside: bool = False,
    refusal_backoff: float | None = None,
) -> None:
    """Serve a catalogue until SIGTERM/SIGINT.

    Parameters
    ----------
    catalog
        A catalogue folder (or a fitted recommender).
    host, port
        Where to listen; ``port=0`` picks a free port (logged as ``listening``).
    api_key
        Enables the write endpoints (see :func:`~visualsim.serve.create_app`).
        With ``workers > 1`` pass ``api_key_env`` instead.
    image_root
        Folder the item images are served from.
    max_upload_bytes
        Upload limit; default 20 MiB.
    graceful_timeout
        Seconds running requests get to finish after SIGTERM.
    workers
        Worker processes on the one socket (uvicorn's supervisor restarts any
        that dies). With more than one, ``catalog`` must be a folder, each
        worker loads it (vectors memory-mapped, so shared through the page
        cache), the item writes and ``/save`` answer 405, and ``POST /reload``
        sent to any worker reaches all of them within about
        :data:`~visualsim.serve.app.RELOAD_POLL_S` seconds plus their load time.
    api_key_env
        Name of the environment variable holding the API key (read by every
        worker; the key itself is never put in argv or a file). Used when
        ``api_key`` is None.
    threads
        Threads per worker for the model and search work (default
        :func:`~visualsim.serve.app.default_threads`).
    max_pixels
        Pixel budget of an uploaded image (default
        :data:`~visualsim.serve.app.MAX_PIXELS`, 4 megapixels), checked from its
        header before decoding.
    queue_timeout
        Seconds a request waits for a model thread before 503 with ``Retry-After``
        (default :data:`~visualsim.serve.app.QUEUE_TIMEOUT_S`).
    header_timeout
        Seconds a client has to send a whole request head, from its first byte (from
        the connection's opening for a new one); then 408 and the connection closes.
        Default 10.
    body_timeout
        Seconds a request body may stall (nothing received while the server waits for
        it) before 408 and the connection closes. Default 30.
    keep_alive
        Seconds an idle keep-alive connection stays open between requests. Default 5.
    max_connections
        Open connections per process (per worker). Past it the connection idle the
        longest is closed to admit the new one (one with a request in flight never
        is); when all have one in flight the new one gets 503. Default: 1,000, kept
        below the open-file limit (which the process raises to its hard limit first)
        by 64 plus one burst of accepted connections (an eighth of the limit, at most
        2,048); the listen backlog is sized to that burst.
    max_connections_per_client
        Open connections per client address (per worker); past it that address's
        connection idle the longest is closed, or, when all of them have a request in
        flight, the new one gets 503; other addresses are not touched. ``0``: no such
        limit. Default: a quarter of ``max_connections``. Behind a reverse proxy every
        connection comes from the proxy: set it to ``max_connections`` (or 0) there.
    min_upload_rate, upload_grace
        A request body may take ``upload_grace`` seconds (default 10) plus one
        second per ``min_upload_rate`` bytes (default 1,024) received; a slower one
        (a client trickling its upload) gets 408 and the connection closes.
        ``min_upload_rate=0`` turns the check off.
    sync_feed, sync_id_column, sync_image_column
        A feed file the operator chose, and its id and image columns: ``POST
        /sync`` makes the catalogue match it (see
        :func:`~visualsim.serve.create_app`). Needs the API key and one worker.
    sync_allow_outside
        Let ``POST /sync`` read the feed's image paths that lie outside the feed's
        folder (as ``visualsim index --allow-outside-images``); refused by default.
    protect_reads, rate_limit, burst
        The API key for every request but ``/health``, and the rate limit per
        client address (see :func:`~visualsim.serve.create_app`); with
        ``workers > 1`` each worker keeps its own buckets.
    refusal_backoff
        Longest wait before a request from a client whose requests keep being
        refused (``create_app``'s ``refusal_backoff``; ``None``: its default,
        :data:`~visualsim.serve.app.BACKOFF_MAX_S`; ``0``: off). Each worker counts
        its own refusals.

    Raises
    ------
    ConfigError
        For a bad ``workers`` or connection option, ``workers > 1`` without a catalogue folder or
        with ``api_key`` given as a value, an unset ``api_key_env``, or an
        address that cannot be bound.
    """
    import uvicorn

    from .app import MAX_PIXELS, MAX_UPLOAD_BYTES, QUEUE_TIMEOUT_S, create_app

    max_pixels = MAX_PIXELS if max_pixels is None else check_positive_int("max_pixels", max_pixels)
    workers = check_positive_int("workers", workers)
    if sync_feed is not None and workers > 1:
        raise ConfigError(
            f"--sync-feed needs --workers 1: each of {workers} workers holds its own copy of "
            "the catalogue (run `visualsim sync` and POST /reload instead)"
        )
    if threads is not None:
        threads = check_positive_int("threads", threads)
    if api_key is None and api_key_env is not None:
        api_key = api_key_from_env(api_key_env)
    if protect_reads and api_key is None:
        raise ConfigError("protect_reads needs the API key (api_key_env=NAME, --api-key-env)")
    if rate_limit is not None:
        rate_limit = check_float("rate_limit", rate_limit, minimum=0, open_minimum=True)
    if burst is not None:
        burst = check_positive_int("burst", burst)
    from ._connections import BODY_TIMEOUT_S, HEADER_TIMEOUT_S, KEEP_ALIVE_S, listen_backlog

    # checked before anything starts; the workers (spawned later) inherit the raised limit
    fd_before, fd_limit = raise_fd_limit()
    header_s, body_s, keep_alive_s, cap = check_connection_options(
        HEADER_TIMEOUT_S if header_timeout is None else header_timeout,
        BODY_TIMEOUT_S if body_timeout is None else body_timeout,
        KEEP_ALIVE_S if keep_alive is None else keep_alive,
        max_connections,
        fd_limit,
    )
    per_client, min_rate, grace = check_client_options(
        max_connections_per_client, min_upload_rate, upload_grace, cap
    )
    if not isinstance(sync_allow_outside, bool):
        raise ConfigError(f"sync_allow_outside must be True or False, got {sync_allow_outside!r}")
    if sync_allow_outside and sync_feed is None:
        raise ConfigError("sync_allow_outside (--allow-outside-images) needs sync_feed")
    configure_logging()
    if fd_limit != fd_before:
        logger.info(
            "open-file limit raised from %d to %d",
            fd_before,
            fd_limit,
            extra={"fields": {"event": "fd_limit", "soft_was": fd_before, "soft": fd_limit}},
        )
    guard = {
        "header_timeout": header_s,
        "body_timeout": body_s,
        "keep_alive": keep_alive_s,
        "max_connections": cap,
        "max_connections_per_client": per_client,
        "min_upload_rate": min_rate,
        "upload_grace": grace,
        "backlog": listen_backlog(fd_limit, cap),
    }
    reload_dir: str | None = None
    if workers == 1:
        app: Any = create_app(
            catalog,
            api_key=api_key,
            image_root=image_root,
            max_upload_bytes=max_upload_bytes or MAX_UPLOAD_BYTES,
            threads=threads,
            max_pixels=max_pixels,
            queue_timeout=QUEUE_TIMEOUT_S if queue_timeout is None else queue_timeout,
            sync_feed=sync_feed,
            sync_id_column=sync_id_column,
            sync_image_column=sync_image_column,
            sync_allow_outside=sync_allow_outside,
            protect_reads=protect_reads,
            rate_limit=rate_limit,
            burst=burst,
            refusal_backoff=BACKOFF_MAX_S if refusal_backoff is None else refusal_backoff,
        )
    else:
        if not isinstance(catalog, (str, os.PathLike)) or not Path(catalog).is_dir():
            raise ConfigError(
                f"workers={workers} needs a catalogue folder (each worker process loads it), "
                f"not {type(catalog).__name__}"
            )
        if api_key is not None and api_key_env is None:
            raise ConfigError(
                f"workers={workers}: pass the API key as api_key_env=NAME (the name of an "
                "environment variable), so it reaches the workers without argv or a file"
            )
        reload_dir = tempfile.mkdtemp(prefix="visualsim-serve-")  # mode 0700
        options = {
            "catalog": str(Path(catalog).resolve()),
            "api_key_env": api_key_env,
            "image_root": None if image_root is None else str(Path(image_root).resolve()),
            "max_upload_bytes": max_upload_bytes or MAX_UPLOAD_BYTES,
            "workers": workers,
            "reload_signal": str(Path(reload_dir) / "generation"),
            "threads": threads,
            "max_pixels": max_pixels,
            "queue_timeout": queue_timeout,
            "protect_reads": protect_reads,
            "rate_limit": rate_limit,
            "burst": burst,
            "refusal_backoff": refusal_backoff,
        }
        app = "visualsim.serve.server:worker_app"
        previous_env = os.environ.get(WORKER_ENV)
        os.environ[WORKER_ENV] = json.dumps(options)  # the spawned workers inherit it
    try:
        _serve(uvicorn, app, host, port, graceful_timeout, workers, guard)
    finally:
        if reload_dir is not None:
            if previous_env is None:
                os.environ.pop(WORKER_ENV, None)
            else:
                os.environ[WORKER_ENV] = previous_env
            shutil.rmtree(reload_dir, ignore_errors=True)
    logger.info("stopped")


def worker_app() -> Any:
    """The app factory each worker process calls (options from :data:`WORKER_ENV`).

    Returns
    -------
    fastapi.FastAPI
        The app for this worker.

    Raises
    ------
    ConfigError
        When :data:`WORKER_ENV` is missing or not the JSON that :func:`run` writes.
    """
    from .app import MAX_PIXELS, QUEUE_TIMEOUT_S, create_app

    raw = os.environ.get(WORKER_ENV)
    try:
        options = json.loads(raw or "")
        catalog = options["catalog"]
    except (ValueError, KeyError, TypeError):
        raise ConfigError(
            f"the environment variable {WORKER_ENV} is missing or malformed; worker_app is "
            "started by visualsim.serve.run(..., workers=N), not by hand"
        ) from None
    configure_logging()
    return create_app(
        catalog,
        api_key=api_key_from_env(options.get("api_key_env")),
        image_root=options.get("image_root"),
        max_upload_bytes=int(options["max_upload_bytes"]),
        workers=int(options["workers"]),
        reload_signal=options["reload_signal"],
        mmap=True,
        threads=options.get("threads"),
        max_pixels=int(options.get("max_pixels") or MAX_PIXELS),
        queue_timeout=float(options.get("queue_timeout") or QUEUE_TIMEOUT_S),
        protect_reads=bool(options.get("protect_reads", False)),
        rate_limit=options.get("rate_limit"),
        burst=options.get("burst"),
        refusal_backoff=(
            BACKOFF_MAX_S
            if options.get("refusal_backoff") is None
            else float(options["refusal_backoff"])
        ),
    )


def uvicorn_config(
    app: Any,
    *,
    header_timeout: float,
    body_timeout: float,
    keep_alive: float,
    max_connections: int,
    **kwargs: Any,
) -> Any:
    """A ``uvicorn.Config`` for ``app`` with the connection guard (the values already checked).

    Extra keyword arguments go to ``uvicorn.Config``. The server's own logging and
    headers are off (``JsonLogFormatter`` and the app do both).
    """
    from ._connections import GuardedConfig

    kwargs.setdefault("log_config", None)
    kwargs.setdefault("access_log", False)
    kwargs.setdefault("server_header", False)
    return GuardedConfig(
        app,
        header_timeout=header_timeout,
        body_timeout=body_timeout,
        max_connections=max_connections,
        timeout_keep_alive=keep_alive,
        **kwargs,
    )


def _serve(
    uvicorn: Any,
    app: Any,
    host: str,
    port: int,
    graceful_timeout: int,
    workers: int,
    guard: dict[str, Any],
) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # accepted connections inherit this: a response's header and body writes go out at
    # once instead of the body waiting ~40 ms for the client's delayed ACK (Nagle)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    # connections made while the model warms wait instead of being refused; no more than
    # the fd limit has room for past the connection cap (asyncio accepts them all at once)
    sock.listen(guard.get("backlog", 2048))
    sock.set_inheritable(True)
    bound = sock.getsockname()[1]
    config = uvicorn_config(
        app,
        **guard,
        timeout_graceful_shutdown=graceful_timeout,
        factory=workers > 1,
        workers=workers,
        # a worker loads and warms the catalogue before it serves: give it time to answer
        timeout_worker_healthcheck=60,
    )
    logger.info(
        "listening on http://%s:%d",
        host,
        bound,
        extra={
            "fields": {
                "event": "listening",
                "url": f"http://{host}:{bound}",
                "port": bound,
                "workers": workers,
                **guard,
            }
        },
    )
    if workers > 1:
        from uvicorn.supervisors import Multiprocess

        try:
            Multiprocess(config, sockets=[sock]).run()  # handles SIGTERM/SIGINT itself
        finally:
            sock.close()
        return
    server = uvicorn.Server(config)
    # uvicorn re-raises the stop signal after its graceful shutdown; these handlers take
    # it, so a SIGTERM'd server exits 0 once the running requests have finished
    stopped_by: list[int] = []
    previous = {
        sig: signal.signal(sig, lambda signum, frame: stopped_by.append(signum))
        for sig in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """Add the ``serve`` arguments to ``parser`` (a new one by default)."""
    p = parser or argparse.ArgumentParser(
        prog="visualsim serve", description="Serve a catalogue over HTTP."
    )
    p.add_argument("catalog", type=Path, help="catalogue folder written by `visualsim index`")
    p.add_argument("--host", default="127.0.0.1", help="interface (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: any free)")
    p.add_argument(
        "--api-key-env",
        metavar="NAME",
        help="enable the write endpoints, with the key in environment variable NAME",
    )
    p.add_argument("--image-root", type=Path, help="folder the item images are served from")
    p.add_argument(
        "--max-upload-mb", type=float, default=20.0, help="upload limit in MiB (default 20)"
    )
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="worker processes on one socket (default 1); with N > 1 the item writes and "
        "/save answer 405, and POST /reload reaches every worker",
    )
    p.add_argument(
        "--threads",
        type=int,
        metavar="T",
        help="threads per worker for decoding, extraction and search (default: the CPUs "
        "this process may use, at least 2)",
    )
    p.add_argument(
        "--max-megapixels",
        type=float,
        default=4.0,
        metavar="MP",
        help="largest uploaded image in megapixels, checked from its header before decoding "
        "(JPEGs count at the reduced scale they are decoded at for the model; default 4)",
    )
    p.add_argument(
        "--queue-timeout",
        type=float,
        default=10.0,
        metavar="S",
        help="seconds a request waits for a model thread when all are busy before it is "
        "answered 503 with Retry-After (default 10)",
    )
    p.add_argument(
        "--header-timeout",
        type=float,
        default=10.0,
        metavar="S",
        help="seconds a client has to send a whole request head, else 408 and the "
        "connection closes (default 10)",
    )
    p.add_argument(
        "--body-timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="seconds a request body may stall (nothing received) before 408 and the "
        "connection closes (default 30)",
    )
    p.add_argument(
        "--keep-alive",
        type=float,
        default=5.0,
        metavar="S",
        help="seconds an idle keep-alive connection stays open between requests (default 5)",
    )
    p.add_argument(
        "--max-connections",
        type=int,
        metavar="N",
        help="open connections per worker; past it the one idle the longest is closed to "
        "admit a new one, never one with a request in flight (default: 1000, kept 64 below "
        "the open-file limit, which is first raised to its hard limit)",
    )
    p.add_argument(
        "--max-connections-per-client",
        type=int,
        metavar="N",
        help="open connections per client address and worker; past it that address's "
        "connection idle the longest is closed, or 503 when all have a request in flight "
        "(default: a quarter of --max-connections; 0: no limit; behind a reverse proxy, "
        "where every connection is the proxy's, use --max-connections or 0)",
    )
    p.add_argument(
        "--min-upload-rate",
        type=float,
        metavar="BYTES/s",
        help="a request body may take --upload-grace seconds plus 1 s per this many bytes; "
        "a slower upload gets 408 and the connection closes (default 1024; 0: off)",
    )
    p.add_argument(
        "--upload-grace",
        type=float,
        metavar="S",
        help="seconds a request body gets before --min-upload-rate applies (default 10)",
    )
    p.add_argument(
        "--sync-feed",
        type=Path,
        metavar="PATH",
        help="a product feed (.csv, .tsv, .jsonl, .parquet) that POST /sync makes the catalogue "
        "match (needs --api-key-env; one worker); the server never reads a feed a client names",
    )
    p.add_argument(
        "--sync-id-column", default="id", metavar="COL", help="--sync-feed's id column (id)"
    )
    p.add_argument(
        "--sync-image-column",
        default="image",
        metavar="COL",
        help="--sync-feed's image column (image)",
    )
    p.add_argument(
        "--allow-outside-images",
        action="store_true",
        help="let POST /sync read --sync-feed's image paths outside the feed's folder "
        "(absolute, '..', a symlink out); without it such a row is refused",
    )
    p.add_argument(
        "--protect-reads",
        action="store_true",
        help="every request but /health needs 'Authorization: Bearer <key>' (the key of "
        "--api-key-env), the search page included (default: reads are open)",
    )
    p.add_argument(
        "--rate-limit",
        metavar="R/s",
        help="requests a second each client address may make on average (e.g. 5 or 5/s); "
        "past it: 429 with Retry-After (default: no limit)",
    )
    p.add_argument(
        "--burst",
        type=int,
        metavar="B",
        help="requests a client may make at once under --rate-limit (default: the rate, "
        "at least 1)",
    )
    p.add_argument(
        "--refusal-backoff",
        type=float,
        metavar="S",
        help="longest wait in seconds before a request from a client address whose requests "
        f"keep being refused (4xx but 404); past {BACKOFF_FREE} recent refusals each adds "
        f"{BACKOFF_STEP_S:g} s (default {BACKOFF_MAX_S:g}; 0: off, as behind a proxy that "
        "sends no X-Forwarded-For)",
    )
    return p


def parse_rate(text: str) -> float:
    """``--rate-limit``'s value: ``5``, ``5/s`` or ``0.5/s`` requests a second.

    Examples
    --------
    >>> parse_rate("5/s"), parse_rate("0.5")
    (5.0, 0.5)
    """
    number = text.strip()
    if number.endswith("/s"):
        number = number[:-2].strip()
    try:
        rate = float(number)
    except ValueError:
        rate = math.nan
    if not math.isfinite(rate) or rate <= 0:
        raise ConfigError(
            f"--rate-limit must be requests a second above 0, like 5 or 5/s, not {text!r}"
        )
    return rate


def serve_from_args(args: argparse.Namespace) -> None:
    """Run the server as the parsed ``serve`` arguments say."""
    if not Path(args.catalog).is_dir():
        raise ConfigError(
            f"catalogue {str(args.catalog)!r} is not a folder; write one with "
            "`visualsim index IMAGES -o CATALOG`"
        )
    workers = check_positive_int("--workers", getattr(args, "workers", 1))
    threads = getattr(args, "threads", None)
    megapixels = check_float(
        "--max-megapixels", getattr(args, "max_megapixels", 4.0), minimum=0, open_minimum=True
    )
    for flag in ("header_timeout", "body_timeout", "keep_alive"):
        if getattr(args, flag, None) is not None:
            _check_seconds("--" + flag.replace("_", "-"), getattr(args, flag))
    if getattr(args, "max_connections", None) is not None:
        check_positive_int("--max-connections", args.max_connections)
    per_client = getattr(args, "max_connections_per_client", None)
    if per_client is not None and per_client < 0:
        raise ConfigError(
            f"--max-connections-per-client must be 0 (no limit) or more, not {per_client}"
        )
    min_rate = getattr(args, "min_upload_rate", None)
    if min_rate is not None:
        check_float("--min-upload-rate", min_rate, minimum=0)
    if getattr(args, "upload_grace", None) is not None:
        _check_seconds("--upload-grace", args.upload_grace)
    allow_outside = bool(getattr(args, "allow_outside_images", False))
    if allow_outside and getattr(args, "sync_feed", None) is None:
        raise ConfigError(
            "--allow-outside-images needs --sync-feed (it lets POST /sync read that feed's "
            "image paths outside the feed's folder)"
        )
    rate, burst = getattr(args, "rate_limit", None), getattr(args, "burst", None)
    if burst is not None and rate is None:
        raise ConfigError("--burst needs --rate-limit (requests a second per client)")
    backoff = getattr(args, "refusal_backoff", None)
    if backoff is not None:
        check_float("--refusal-backoff", backoff, minimum=0)
    if getattr(args, "protect_reads", False) and args.api_key_env is None:
        raise ConfigError("--protect-reads needs --api-key-env NAME (the key reads then need)")
    run(  # reads the key from --api-key-env before anything else: a missing one fails at once
        args.catalog,
        host=args.host,
        port=args.port,
        api_key_env=args.api_key_env,
        image_root=args.image_root,
        max_upload_bytes=max(1, int(args.max_upload_mb * 1024 * 1024)),
        workers=workers,
        threads=None if threads is None else check_positive_int("--threads", threads),
        max_pixels=max(1, int(megapixels * 1_000_000)),
        queue_timeout=float(getattr(args, "queue_timeout", 10.0)),
        header_timeout=getattr(args, "header_timeout", None),
        body_timeout=getattr(args, "body_timeout", None),
        keep_alive=getattr(args, "keep_alive", None),
        max_connections=getattr(args, "max_connections", None),
        sync_feed=getattr(args, "sync_feed", None),
        sync_id_column=getattr(args, "sync_id_column", "id"),
        sync_image_column=getattr(args, "sync_image_column", "image"),
        sync_allow_outside=allow_outside,
        protect_reads=bool(getattr(args, "protect_reads", False)),
        rate_limit=None if rate is None else parse_rate(rate),
        burst=None if burst is None else check_positive_int("--burst", burst),
        max_connections_per_client=per_client,
        min_upload_rate=min_rate,
        upload_grace=getattr(args, "upload_grace", None),
        refusal_backoff=backoff,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m visualsim.serve CATALOG ...``; returns the exit code."""
    from ..errors import VisualsimError

    args = build_parser().parse_args(argv)
    try:
        serve_from_args(args)
    except VisualsimError as exc:
        print(f"visualsim serve: error: {exc}", file=sys.stderr)
        return exc.exit_code  # each error class carries its exit code
    return 0


__all__ = [
    "WORKER_ENV",
    "JsonLogFormatter",
    "api_key_from_env",
    "build_parser",
    "check_client_options",
    "check_connection_options",
    "main",
    "raise_fd_limit",
    "run",
    "uvicorn_config",
    "worker_app",
]
