"""The HTTP app's shared state: the catalogue served, its lock, the model threads, the limits
and the API key, in one :class:`AppState` on ``app.state.visualsim``.

The routers reach it through the :func:`app_state` dependency (and the write routes
through :func:`authorised`); nothing here is a module global.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, TypeVar

import numpy as np
from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from ..crop import Box
from ..errors import ConfigError, VisualsimError
from ..indexes.base import ReadWriteLock
from ..persistence import read_manifest, write_bytes_atomic
from . import _adapters as A
from .limits import MAX_PIXELS, MAX_UPLOAD_BYTES, QUEUE_TIMEOUT_S, RELOAD_POLL_S
from .metrics import Metrics
from .middleware import bearer_matches
from .uploads import decode_for_locate, decode_upload, draft_size, extract_region, screen_upload

logger = logging.getLogger("visualsim.serve")

T = TypeVar("T")


@dataclass
class Live:
    """One loaded catalogue, its lock and cached field descriptions."""

    rec: Any
    lock: ReadWriteLock = field(default_factory=ReadWriteLock)
    fields: dict[str, dict[str, Any]] | None = None
    generation: int = 0

    def changed(self) -> None:
        self.fields = None
        self.generation += 1


@dataclass
class AppState:
    """What every route of one app shares: the catalogue served (:class:`Live`, swapped
    whole on a reload), where it came from, the limits, the API key and the model pool."""

    live: Live
    catalog_path: Path | None
    image_root: Path | None
    api_key: str | None
    warm: bool
    mmap: bool = False
    signal_file: Path | None = None
    seen_token: str | None = None
    loaded_token: str | None = None
    reload_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _warm_lock: threading.Lock = field(default_factory=threading.Lock)
    threads: int = 2
    max_pixels: int = MAX_PIXELS
    queue_timeout: float = QUEUE_TIMEOUT_S
    max_upload_bytes: int = MAX_UPLOAD_BYTES
    max_k: int = 100
    workers: int = 1
    sync_source: tuple[Path, str, str] | None = None
    sync_allow_outside: bool = False
    _slots: tuple[Any, asyncio.Semaphore, asyncio.Semaphore] | None = None
    _pool: ThreadPoolExecutor | None = None
    _pool_lock: threading.Lock = field(default_factory=threading.Lock)
    _warmed: set[int] = field(default_factory=set)
    metrics: Metrics = field(default_factory=Metrics)

    def read_token(self) -> str | None:
        """The reload generation in the shared signal file (None: none yet, or no file)."""
        if self.signal_file is None:
            return None
        try:
            return self.signal_file.read_text(encoding="ascii").strip() or None
        except (OSError, ValueError):
            return None

    def announce(self) -> None:
        """Record a new reload generation for the other workers (atomic replace)."""
        if self.signal_file is None:
            return
        token = f"{time.time_ns()}-{os.getpid()}"
        write_bytes_atomic(self.signal_file, token.encode("ascii"))
        self.seen_token = self.loaded_token = token

    async def compute(self, fn: Callable[..., T], *args: Any, heavy: bool = False) -> T:
        """Run ``fn(*args)`` (decode, extract, search, JSON) in the app's own bounded pool.

        At most ``threads`` calls run at once, and at most ``threads - 1`` (at least 1)
        ``heavy`` ones (a big upload, see :meth:`screen`), so a few clients posting big
        images leave a thread to the others' searches; a call waits up to
        ``queue_timeout`` seconds in all for its thread, then gets 503 with
        ``Retry-After``.
        """
        pool = self._pool
        if pool is None:
            with self._pool_lock:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="visualsim")
                pool = self._pool
        loop = asyncio.get_running_loop()
        if self._slots is None or self._slots[0] is not loop:  # semaphores per event loop
            heavy_threads = max(1, self.threads - 1)
            self._slots = (loop, asyncio.Semaphore(self.threads), asyncio.Semaphore(heavy_threads))
        _, slots, heavy_slots = self._slots
        lanes = (heavy_slots, slots) if heavy else (slots,)
        metrics = self.metrics
        metrics.add("queue_waiting", 1)
        held: list[asyncio.Semaphore] = []
        deadline = loop.time() + self.queue_timeout
        try:
            for lane in lanes:  # a heavy call waits for its lane before it takes a thread
                await asyncio.wait_for(lane.acquire(), max(0.0, deadline - loop.time()))
                held.append(lane)
        except asyncio.TimeoutError:
            for lane in held:
                lane.release()
            raise HTTPException(
                503,
                f"the server is busy: all {self.threads} model threads stayed taken for "
                f"{self.queue_timeout:g} s; try again shortly",
                headers={"Retry-After": str(max(1, math.ceil(self.queue_timeout / 2)))},
            ) from None
        except BaseException:
            for lane in held:
                lane.release()
            raise
        finally:
            metrics.add("queue_waiting", -1)
        metrics.add("in_flight", 1)
        try:
            return await loop.run_in_executor(pool, fn, *args)
        finally:
            metrics.add("in_flight", -1)
            for lane in held:
                lane.release()

    def screen(self, live: Live, data: bytes) -> bool:
        """Refuse an upload over the pixel budget from its header, on the event loop,
        before it waits for a model thread; return whether it is heavy (see
        :func:`~visualsim.serve.uploads.screen_upload`)."""
        return screen_upload(data, draft_size(live.rec.extractor_), self.max_pixels)

    def close_pool(self) -> None:
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)

    def reload_info(self) -> dict[str, Any]:
        """``{"reload": token}`` of the catalogue served, for apps that share a signal file."""
        return {} if self.signal_file is None else {"reload": self.loaded_token}

    def root(self, live: Live) -> Path | None:
        return A.image_root_of(live.rec, self.image_root)

    def is_warm(self, live: Live) -> bool:
        return id(live) in self._warmed

    def warm_up(self, live: Live) -> None:
        """One extraction and one search, so the first request finds the model built."""
        with self._warm_lock:
            if id(live) in self._warmed:
                return
            t0 = time.perf_counter()
            live.rec.warm_up()  # the model outside the app's lock; its search takes the rec's
            self._warmed.add(id(live))
            logger.info("model warmed in %.0f ms", 1000 * (time.perf_counter() - t0))

    # -- an upload, through uploads.py with this app's pixel budget ---------------------
    def extract(self, live: Live, data: bytes) -> np.ndarray:
        return self.extract_region(live, data, None)[0]

    def extract_region(
        self, live: Live, data: bytes, box: Box | str | None
    ) -> tuple[np.ndarray, list[Any] | None]:
        """The upload's vector, of ``box``'s region, and that region in the photo's pixels."""
        return extract_region(live.rec.extractor_, data, box, self._decoder(live))

    def decode_for_locate(self, live: Live, data: bytes) -> np.ndarray:
        """The upload decoded for finding products in it (see :mod:`.uploads`)."""
        return decode_for_locate(live.rec.extractor_, data, self._decoder(live))

    def _decoder(self, live: Live) -> Callable[[bytes, tuple[int, int] | None], np.ndarray]:
        def decode(data: bytes, draft: tuple[int, int] | None) -> np.ndarray:
            if not self.is_warm(live) and self.warm:  # the model warmed first
                self.warm_up(live)
            return decode_upload(data, draft, self.max_pixels)

        return decode

    # -- what a search answers --------------------------------------------------------
    def where(self, live: Live, text: str | None) -> Any:
        if text is None:
            return None
        return A.parse_where(text, A.field_types(live.rec))

    def where_locked(self, live: Live, text: str | None) -> Any:
        if text is None:
            return None
        with live.lock.read():
            return self.where(live, text)

    def hints(self, live: Live, flt: Any, results: list[Any]) -> dict[str, list[str]]:
        """``{"hints": [...]}`` under an empty answer to a filter on values no item has."""
        if results or flt is None:
            return {}
        found = live.rec.filter_hints(flt)
        return {"hints": found} if found else {}

    def item_json(self, live: Live, item_id: Any) -> dict[str, Any]:
        return {
            "id": A.json_id(item_id),
            "metadata": A.metadata_of(live.rec, item_id),
            "has_image": A.image_file(live.rec, item_id, self.root(live)) is not None,
        }

    def results_json(self, live: Live, results: list[Any]) -> list[dict[str, Any]]:
        root = self.root(live)
        out = []
        for r in results:
            score = float(r.score)
            out.append(
                {
                    "rank": int(r.rank),
                    "id": A.json_id(r.id),
                    "score": max(-1.0, min(1.0, score)) if math.isfinite(score) else None,
                    "metadata": A.public_metadata(r.metadata),
                    "has_image": root is not None
                    and A.image_file(live.rec, r.id, root) is not None,
                }
            )
        return out

    def scrub(self, message: str) -> str:
        """Remove server paths from a message meant for a client."""
        for path, name in ((self.catalog_path, "<catalogue>"), (self.image_root, "<images>")):
            if path is not None:
                for form in {str(path.resolve()), str(path)}:
                    if len(form) > 1:
                        message = message.replace(form, name)
        return _ABS_PATH.sub("<path>", message)


_ABS_PATH = re.compile(r"(?<![\w.:/])/(?:[\w.@+-]+/)+[\w.@+-]*")


# -- what the routers depend on -----------------------------------------------------------
async def app_state(request: Request) -> AppState:
    """The state of the app answering ``request`` (a FastAPI dependency)."""
    state: AppState = request.app.state.visualsim
    return state


State = Annotated[AppState, Depends(app_state)]
"""An endpoint's parameter ``state: State`` is its app's :class:`AppState`."""


def authorised(request: Request) -> None:
    """The write routes' dependency: ``Authorization: Bearer <api key>``, compared in
    constant time, else 401."""
    key = request.app.state.visualsim.api_key
    if not bearer_matches(request.headers.get("authorization", ""), key):
        raise HTTPException(
            401,
            "this endpoint needs the header 'Authorization: Bearer <api key>'",
            headers={"WWW-Authenticate": "Bearer"},
        )


# -- loading and reloading the catalogue --------------------------------------------------
def load_catalogue(path: Path, current: Any, *, mmap: bool = False) -> Any:
    """Load the catalogue at ``path``, reusing ``current``'s extractor when it is the same one."""
    from ..recommender import Recommender

    extractor = None
    if current is not None:
        try:
            from ..extractors.spec import same_vectors

            manifest = read_manifest(path, "catalog", verify=False)
            if same_vectors(manifest.get("extractor"), current.extractor_):
                extractor = current.extractor_
        except (OSError, ValueError, KeyError, TypeError, VisualsimError):
            extractor = None
    if extractor is not None:
        try:
            return Recommender.load(path, extractor=extractor, mmap=mmap)
        except ConfigError:  # the catalogue's own check says it is not the same extractor
            pass
    return Recommender.load(path, mmap=mmap)


def note_change(live: Live) -> None:
    """Forget what the app cached about a catalogue that changed under its own lock."""
    with live.lock.write():
        live.changed()


async def swap_in(state: AppState) -> int:
    """Load the catalogue on disk off the event loop, warm it, swap it in; return its size.

    Requests already running finish on the old catalogue, so none is dropped.
    """
    assert state.catalog_path is not None
    old = state.live
    rec = await run_in_threadpool(load_catalogue, state.catalog_path, old.rec, mmap=state.mmap)
    new = Live(rec)
    if state.warm:
        await run_in_threadpool(state.warm_up, new)
    state.live = new
    state.metrics.add("reloads", 1)
    return len(rec)


async def follow_reloads(state: AppState) -> None:
    """Swap in the catalogue on disk whenever another worker records a new reload generation.

    Checks the signal file's identity with one ``stat`` every :data:`RELOAD_POLL_S`
    seconds; reads it only when that changed.
    """
    assert state.signal_file is not None
    last: tuple[int, int, int] | None = None
    while True:
        await asyncio.sleep(RELOAD_POLL_S)
        try:
            st = os.stat(state.signal_file)
        except OSError:
            continue
        ident = (st.st_ino, st.st_mtime_ns, st.st_size)
        if ident == last:
            continue
        last = ident
        token = state.read_token()
        if token is None or token == state.seen_token:
            continue
        async with state.reload_lock:
            if token == state.seen_token:
                continue
            state.seen_token = token  # a catalogue that fails to load is not retried
            try:
                n = await swap_in(state)
            except Exception as exc:  # keep serving the old catalogue
                state.metrics.add("reload_failures", 1)
                detail = str(exc) if isinstance(exc, VisualsimError) else type(exc).__name__
                logger.error("reload from another worker failed: %s", state.scrub(detail))
                continue
            state.loaded_token = token
            logger.info("reloaded %d items (a reload sent to another worker)", n)
