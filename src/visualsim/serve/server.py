"""Run the app under uvicorn: ``visualsim serve CATALOG`` and ``python -m visualsim.serve``.

Logs are JSON lines on stderr (one per request on ``visualsim.serve.access``);
SIGTERM and SIGINT stop accepting connections, let running requests finish,
then exit 0. The API key is read from an environment variable and never
printed or logged.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..errors import ConfigError

logger = logging.getLogger("visualsim.serve")


class JsonLogFormatter(logging.Formatter):
    """Format every record as one JSON object per line (access records pass through)."""

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


def run(
    catalog: str | os.PathLike[str] | Any,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    image_root: str | os.PathLike[str] | None = None,
    max_upload_bytes: int | None = None,
    graceful_timeout: int = 10,
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
    image_root
        Folder the item images are served from.
    max_upload_bytes
        Upload limit; default 20 MiB.
    graceful_timeout
        Seconds running requests get to finish after SIGTERM.
    """
    import uvicorn

    from .app import MAX_UPLOAD_BYTES, create_app

    configure_logging()
    app = create_app(
        catalog,
        api_key=api_key,
        image_root=image_root,
        max_upload_bytes=max_upload_bytes or MAX_UPLOAD_BYTES,
    )
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
    sock.listen(2048)  # connections made while the model warms wait instead of being refused
    sock.set_inheritable(True)
    bound = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=graceful_timeout,
        server_header=False,
    )
    server = uvicorn.Server(config)
    logger.info(json.dumps({"event": "listening", "url": f"http://{host}:{bound}", "port": bound}))
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
    logger.info("stopped")


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
    return p


def serve_from_args(args: argparse.Namespace) -> None:
    """Run the server as the parsed ``serve`` arguments say."""
    if not Path(args.catalog).is_dir():
        raise ConfigError(
            f"catalogue {str(args.catalog)!r} is not a folder; write one with "
            "`visualsim index IMAGES -o CATALOG`"
        )
    run(
        args.catalog,
        host=args.host,
        port=args.port,
        api_key=api_key_from_env(args.api_key_env),
        image_root=args.image_root,
        max_upload_bytes=max(1, int(args.max_upload_mb * 1024 * 1024)),
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m visualsim.serve CATALOG ...``; returns the exit code."""
    from ..errors import VisualsimError

    args = build_parser().parse_args(argv)
    try:
        serve_from_args(args)
    except VisualsimError as exc:
        print(f"visualsim serve: error: {exc}", file=sys.stderr)
        return 1
    return 0


__all__ = ["JsonLogFormatter", "api_key_from_env", "build_parser", "main", "run"]
