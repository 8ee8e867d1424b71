"""Serve a catalogue over HTTP: JSON endpoints for a shop and a search-by-photo page.

Needs the ``serve`` extra (``pip install visualsim[serve]``: FastAPI, uvicorn,
python-multipart). ``import visualsim.serve`` stays light; FastAPI loads when
:func:`create_app` or :func:`run` is first used.

``create_app("catalogue/")`` returns the ASGI app for a saved catalogue;
``visualsim serve catalogue/`` runs it (see ``docs/serving.md``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

_LAZY = {
    "create_app": "app",
    "AccessLogMiddleware": "app",
    "MAX_UPLOAD_BYTES": "app",
    "default_threads": "app",
    "run": "server",
}

__all__ = ["MAX_UPLOAD_BYTES", "AccessLogMiddleware", "create_app", "default_threads", "run"]

__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())

if TYPE_CHECKING:  # pragma: no cover
    from .app import MAX_UPLOAD_BYTES, AccessLogMiddleware, create_app, default_threads
    from .server import run
