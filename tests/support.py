"""Helpers several test layers share: a vector-level extractor and a live uvicorn.

``tests/`` is on ``sys.path`` (``conftest.py`` lives here), so a test in any layer
imports these as ``from support import ...``; so do the subprocesses some tests start
(they put ``tests/`` on their path).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import uvicorn

from visualsim import register_extractor
from visualsim.extractors.base import BaseExtractor

DIM = 8


@register_extractor("live-test-vectors", overwrite=True)
class VectorExtractor(BaseExtractor):
    """A tiny extractor for vector-level tests (the tests add vectors directly)."""

    name = "live-test-vectors"

    def __init__(self, *, dim: int = DIM) -> None:
        self.dim_ = dim

    @property
    def dim(self) -> int:
        return self.dim_

    def get_config(self) -> dict[str, Any]:
        return {"dim": self.dim_}

    def _prepare(self, image: np.ndarray) -> np.ndarray:
        return np.resize(image.astype(np.float32).ravel() + 1.0, self.dim_)

    def _embed(self, batch: np.ndarray) -> np.ndarray:
        return batch


def _unit(rng: np.random.Generator, n: int, dim: int = DIM) -> np.ndarray:
    x = rng.normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@contextlib.contextmanager
def uvicorn_in_thread(app: Any) -> Iterator[str]:
    """Serve ``app`` with uvicorn in a thread on a free loopback port; yield its URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        for _ in range(600):
            if server.started:
                break
            time.sleep(0.05)
        assert server.started, "uvicorn never started"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()
