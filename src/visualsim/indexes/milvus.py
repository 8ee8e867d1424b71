"""A Milvus index: the vectors and the filters live in Milvus, the contract stays the same.

:class:`MilvusIndex` keeps a catalogue's vectors in a Milvus collection, on a
cluster (``uri="http://host:19530"``) or in Milvus Lite (``uri="shop.db"``,
the Milvus engine in this process, for tests and laptops). It answers the same
contract as the FAISS backends (cosine scores, the caller's ids, ``k > len``
returns what there is, the same validation messages) and filters inside Milvus:
metadata become typed scalar fields and the parsed :mod:`visualsim.filters`
expression of a query is compiled to a Milvus boolean expression by
:func:`visualsim.filters.milvus.to_milvus_expr` (importable from here too).

What is stored where:

* in Milvus, one row per item: ``vs_label`` (the primary key, an internal
  ``int64`` that orders ties by insertion), ``vs_id`` (the caller's id as JSON,
  so ``3`` and ``"3"`` stay apart), ``vs_vector`` (the unit vector) and one
  nullable scalar field per metadata field;
* in a saved index folder: the ids and labels, the connection (the URI with
  credentials removed, never a token) and the collection name, and a digest of
  the collection's ids, which :meth:`MilvusIndex.load` checks against the live
  collection before trusting it.

Credentials come from the environment variable named by ``token_env`` when the
client connects; they are never stored in the index, its config, a saved
folder, a log line or an error message.

A saved folder is data, never instructions: loaded from a file (a catalogue, a
saved index), the index connects where the *caller* says, never where the
file says. A server URI or a ``token_env`` recorded in the file is refused
unless the caller names the connection itself, with
``Recommender.load(path, milvus_uri=..., milvus_token_env=...)``,
:func:`milvus_connection` around the load, or the environment variables
:data:`MILVUS_URI_ENV` and :data:`MILVUS_TOKEN_ENV_ENV` (for ``visualsim
serve``, ``info``, ``similar``, ...); the caller's connection then replaces the
file's. A Milvus Lite database named by the file must be a real folder
``NAME.db`` inside or beside the saved folder (or beside its catalogue), and a
load never creates it.

Milvus Lite paths: a relative ``.db`` path is resolved against the current
directory when the index is made (as ``open`` does). A saved index records the
database's path relative to the saved folder, so a catalogue folder and its
``.db`` beside it (``shop/`` and ``shop.db``) move together. The database may
not lie *inside* the folder being saved: saving replaces that folder, and
with it the live database.

pymilvus is imported only when an index connects, so ``import visualsim`` stays light.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import logging
import math
import numbers
import os
import re
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

import numpy as np
from numpy.typing import ArrayLike

from .. import persistence as P
from ..errors import CatalogError, ConfigError, InvalidVectorsError, VisualsimError
from ..filters.milvus import (
    FIELD_NAME,
    ID_FIELD,
    LABEL_FIELD,
    RESERVED_FIELDS,
    VECTOR_FIELD,
    to_milvus_expr,
)
from ..ids import Id, check_ids, short_repr
from ..ids import preview as _preview
from .base import MANIFEST_NAME, BaseIndex, check_k, check_vectors, register_index

logger = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'visualsim[milvus]'"

FIELD_TYPES = ("str", "int", "float", "bool", "json")
"""Metadata field types: the four scalar kinds become typed Milvus fields, ``"json"``
(lists, dicts, mixed values) is kept out of Milvus and cannot be filtered on there."""

INDEX_TYPES = (
    "FLAT",
    "HNSW",
    "HNSW_SQ",
    "IVF_FLAT",
    "IVF_SQ8",
    "IVF_PQ",
    "AUTOINDEX",
    "DISKANN",
    "SCANN",
)
"""Vector index types accepted by ``index_type`` (Milvus Lite: FLAT, HNSW, IVF_FLAT, IVF_SQ8)."""

SEARCH_PARAMS = frozenset({"ef", "nprobe", "search_list", "level", "reorder_k", "refine_k"})
"""Parameters passed to Milvus at search time; every other parameter is an index build parameter."""

BUILD_PARAMS = frozenset(
    {"M", "efConstruction", "nlist", "m", "nbits", "sq_type", "refine", "refine_type"}
)
"""Index build parameters ``MilvusIndex`` accepts (Milvus checks their values)."""

MAX_TOPK = 16_384
"""The most neighbours Milvus returns per query."""

ID_MAX_LENGTH = 4096
"""Longest JSON-encoded id stored (Milvus ``VARCHAR`` needs a bound)."""

_QUERY_CHUNK = 1024
_DELETE_CHUNK = 10_000
_ITER_BATCH = 10_000
_TMP_DIRS = (  # temporary folders a save writes into before renaming them into place
    re.compile(r"^\.visualsim-tmp-(?P<name>.+)-[0-9a-f]{12}$"),
    re.compile(r"^\.(?P<name>.+)\.tmp-[0-9a-f]{8,}$"),
)
_CONSISTENCY = ("Strong", "Bounded", "Session", "Eventually")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

MILVUS_URI_ENV = "VISUALSIM_MILVUS_URI"
"""Environment variable: the Milvus URI that catalogues and indexes loaded from files connect to.

The operator's choice (``VISUALSIM_MILVUS_URI=http://milvus:19530 visualsim serve
shop``); a saved file never chooses a server itself."""

MILVUS_TOKEN_ENV_ENV = "VISUALSIM_MILVUS_TOKEN_ENV"
"""Environment variable: the NAME of the variable holding the token for loaded catalogues."""

_LITE_LEVELS = 2
"""How far up a saved folder may name its Milvus Lite database: ``../../shop.db`` is
beside the catalogue that holds the index folder."""

_GRANT: contextvars.ContextVar[tuple[str | None, str | None] | None] = contextvars.ContextVar(
    "visualsim_milvus_grant", default=None
)
_SAVED: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "visualsim_milvus_saved", default=None
)


class MilvusError(VisualsimError, RuntimeError):
    """Milvus refused a request or could not be reached (the message never holds a credential)."""


# --------------------------------------------------------------------------- connection


def redact_uri(uri: str) -> str:
    """Return ``uri`` without credentials: no user/password, query string or fragment.

    Examples
    --------
    >>> redact_uri("https://root:hunter2@milvus.example.com:19530/?token=abc")
    'https://milvus.example.com:19530/'
    """
    if not is_lite_uri(uri):
        parts = urlsplit(uri)
        host = parts.hostname or ""
        if ":" in host:  # IPv6 literal
            host = f"[{host}]"
        try:
            port = parts.port
        except ValueError:
            port = None
        netloc = host + (f":{port}" if port is not None else "")
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    return uri


def is_lite_uri(uri: str) -> bool:
    """Whether ``uri`` names a Milvus Lite database (a local path) rather than a server."""
    return "://" not in uri


def _check_uri(uri: Any) -> str:
    if not isinstance(uri, (str, os.PathLike)):
        raise ConfigError(
            f"uri must be a Milvus Lite path ending in .db or a server URI such as "
            f"'http://localhost:19530', got {type(uri).__name__}"
        )
    text = os.fspath(uri)
    if not text:
        raise ConfigError("uri is empty; pass a Milvus Lite path ending in .db or a server URI")
    if is_lite_uri(text):
        if not text.endswith(".db"):
            raise ConfigError(
                f"uri {text!r} is neither a server URI (http://host:19530) nor a Milvus Lite "
                "path ending in .db; add the .db suffix or the scheme"
            )
        return str(Path(text).expanduser().resolve())
    scheme = urlsplit(text).scheme
    if scheme not in ("http", "https", "tcp", "grpc", "unix"):
        raise ConfigError(
            f"uri {redact_uri(text)!r} has scheme {scheme!r}; Milvus takes http://, https://, "
            "tcp://, grpc:// or unix:// (or a Milvus Lite path ending in .db)"
        )
    return text


def _check_token_env(token_env: Any, name: str = "token_env") -> str | None:
    if token_env is not None and (not isinstance(token_env, str) or not _ENV_NAME.match(token_env)):
        raise ConfigError(
            f"{name} must be the NAME of an environment variable holding the token "
            "(e.g. 'MILVUS_TOKEN'), not the token itself"
        )
    return token_env


@contextlib.contextmanager
def milvus_connection(
    uri: str | os.PathLike[str] | None = None, *, token_env: str | None = None
) -> Iterator[None]:
    """Say where Milvus indexes loaded from files in this block connect, and with which token.

    A saved catalogue or index never chooses a server or a secret: loaded in
    this block (by ``Recommender.load``, :func:`~visualsim.indexes.load_index`,
    ...), a :class:`MilvusIndex` connects to ``uri`` with the token in the
    environment variable ``token_env``, whatever its file recorded. Outside
    any block, :data:`MILVUS_URI_ENV` and :data:`MILVUS_TOKEN_ENV_ENV` say it.

    Parameters
    ----------
    uri
        A Milvus Lite path (``.db``) or a server URI; ``None``: the file's
        Milvus Lite database beside it, and no server.
    token_env
        Name of the environment variable holding the token; ``None``: no token.

    Raises
    ------
    ConfigError
        ``uri`` is not a Milvus URI, or ``token_env`` is not a variable name.

    Examples
    --------
    >>> with milvus_connection(uri="http://milvus:19530", token_env="MILVUS_TOKEN"):
    ...     pass  # Recommender.load("shop") here connects there
    """
    if uri is not None:
        _check_uri(uri)
    grant = (None if uri is None else os.fspath(uri), _check_token_env(token_env))
    reset = _GRANT.set(grant)
    try:
        yield
    finally:
        _GRANT.reset(reset)


@contextlib.contextmanager
def loading_saved(
    where: str, *, uri: str | os.PathLike[str] | None = None, token_env: str | None = None
) -> Iterator[None]:
    """Treat every :class:`MilvusIndex` made in this block as built from the saved file ``where``.

    What ``Recommender.load`` wraps a catalogue's load in: the index's URI
    and ``token_env`` come from the caller (``uri``/``token_env`` here,
    else :func:`milvus_connection`, else the environment), never from the file.

    Raises
    ------
    ConfigError
        ``uri`` or ``token_env`` is malformed.
    """
    with contextlib.ExitStack() as stack:
        if uri is not None or token_env is not None:
            stack.enter_context(milvus_connection(uri, token_env=token_env))
        reset = _SAVED.set(where)
        try:
            yield
        finally:
            _SAVED.reset(reset)


def _caller_grant() -> tuple[str | None, str | None]:
    """The caller's ``(uri, token_env)``: from :func:`milvus_connection`, else the environment."""
    grant = _GRANT.get()
    if grant is not None:
        return grant
    uri = os.environ.get(MILVUS_URI_ENV) or None
    token_env = os.environ.get(MILVUS_TOKEN_ENV_ENV) or None
    if uri is not None:
        try:
            _check_uri(uri)
        except ConfigError as exc:
            raise ConfigError(f"environment variable {MILVUS_URI_ENV}: {exc}") from None
    return uri, _check_token_env(token_env, f"environment variable {MILVUS_TOKEN_ENV_ENV}")


_HOW = (
    "pass it yourself: Recommender.load(path, milvus_uri=..., milvus_token_env=...), "
    f"visualsim.indexes.milvus.milvus_connection(...) around the load, or {MILVUS_URI_ENV} "
    f"and {MILVUS_TOKEN_ENV_ENV} in the environment"
)


def _saved_lite_db(directory: Path, rel: Any) -> Path:
    """Return the Milvus Lite database a saved index folder names (``state.lite_path``), checked.

    Only ``NAME.db`` inside or beside ``directory``, or beside the catalogue
    holding it (``../../NAME.db``), a real folder or not there yet; never a
    path elsewhere, absolute, or through a symbolic link.
    """
    field = f"{directory / MANIFEST_NAME}: field 'state.lite_path'"
    parts = rel.replace(os.sep, "/").split("/") if isinstance(rel, str) else []
    ups = 0
    while ups < len(parts) and parts[ups] == "..":
        ups += 1
    if ups > _LITE_LEVELS or len(parts) != ups + 1 or not parts[-1].endswith(".db"):
        raise CatalogError(
            f"{field} is {short_repr(rel)}; a saved index may name only a Milvus Lite "
            "database NAME.db inside or beside its folder or its catalogue (e.g. "
            f"'../../shop.db'), never another place. To use another database, {_HOW}"
        )
    home = directory.resolve()
    for _ in range(ups):
        home = home.parent
    try:
        return P.safe_child(home, parts[-1], kind="dir", must_exist=False)
    except CatalogError as exc:
        raise CatalogError(f"{field}: {exc}") from None


def _final_location(directory: Path) -> Path:
    """Where ``directory`` ends up once the temporary folders it sits in are renamed."""
    parts = list(directory.resolve().parts)
    for i, part in enumerate(parts):
        for pattern in _TMP_DIRS:
            m = pattern.match(part)
            if m:
                parts[i] = m.group("name")
                break
    return Path(*parts)


# --------------------------------------------------------------------------- the index


@register_index("milvus")
class MilvusIndex(BaseIndex):
    """Vectors in a Milvus collection: Milvus Lite in tests, a Milvus cluster in production.

    Parameters
    ----------
    uri
        ``"path/to/file.db"`` for Milvus Lite (a relative path is resolved
        against the current directory now) or a server URI such as
        ``"http://milvus:19530"``. Credentials in a URI are used to connect but
        never stored or saved; prefer ``token_env``.
    collection
        Collection name (letters, digits, ``_``). The index creates it at the
        first ``add`` and refuses a collection that already exists (load the
        saved index that wrote it instead, or :meth:`drop` it).
    index_type
        Milvus vector index: ``"FLAT"`` (exact, the default), ``"HNSW"``,
        ``"IVF_FLAT"``, ... (see :data:`INDEX_TYPES`). Scores are always cosine.
    token_env
        Name of the environment variable holding the token (``"user:password"``
        or an API key) for a secured cluster; read at connect time only.
    fields
        Metadata fields and their types, e.g. ``{"category": "str", "price":
        "float"}``. ``None``: taken from the metadata of the first ``add``
        (a Milvus collection's schema is fixed, so later adds cannot bring
        new fields: declare them here if they will).
    batch_size
        Rows per insert request; ``add`` of a large array is sent in batches.
    consistency_level
        Milvus consistency of searches and queries; ``"Strong"`` (default)
        makes every search see every finished ``add``/``remove``.
    db_name
        Milvus database on a cluster (``None``: the default database).
    timeout
        Seconds to wait for each Milvus request (``None``: pymilvus's default).
    dim
        Vector dimension if known before the first ``add``.
    **params
        Index build parameters (``M``, ``efConstruction``, ``nlist``, ...)
        and search parameters (``ef``, ``nprobe``); see :data:`BUILD_PARAMS`
        and :data:`SEARCH_PARAMS`.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> db = tempfile.mkdtemp() + "/shop.db"
    >>> index = MilvusIndex(uri=db, collection="doc_example")
    >>> index.add(np.eye(3), ["a", "b", "c"], metadata=[{"n": 1}, {"n": 2}, {"n": 3}])
    >>> index.search([1.0, 0.2, 0.0], k=2)[1]
    [['a', 'b']]
    >>> index.search([1.0, 0.2, 0.0], k=2, where="n >= 2")[1]
    [['b', 'c']]
    >>> index.drop()
    """

    is_exact = False  # FLAT is exact, but a catalogue hands every item to Milvus anyway
    retrains = False  # Milvus builds and compacts its own index
    filters_natively = True
    """Filters run inside Milvus: ``search(..., where=expr)`` and ``add(..., metadata=...)``."""
    supports_where: ClassVar[bool] = True
    """The same as :attr:`filters_natively` (its earlier name)."""

    def __init__(
        self,
        *,
        uri: str,
        collection: str = "visualsim",
        index_type: str = "FLAT",
        token_env: str | None = None,
        fields: Mapping[str, str] | None = None,
        batch_size: int = 10_000,
        consistency_level: str = "Strong",
        db_name: str | None = None,
        timeout: float | None = None,
        dim: int | None = None,
        **params: Any,
    ) -> None:
        raw_uri = _check_uri(uri)
        if not isinstance(collection, str) or not FIELD_NAME.match(collection):
            raise ConfigError(
                f"collection must be a Milvus collection name (letters, digits and _, "
                f"not starting with a digit), got {short_repr(collection)}"
            )
        if not isinstance(index_type, str) or index_type.upper() not in INDEX_TYPES:
            raise ConfigError(
                f"index_type must be one of {', '.join(INDEX_TYPES)}, got {short_repr(index_type)}"
            )
        _check_token_env(token_env)
        if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral):
            raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
        if consistency_level not in _CONSISTENCY:
            raise ConfigError(
                f"consistency_level must be one of {', '.join(_CONSISTENCY)}, "
                f"got {short_repr(consistency_level)}"
            )
        if db_name is not None and (not isinstance(db_name, str) or not FIELD_NAME.match(db_name)):
            raise ConfigError(f"db_name must be a Milvus database name, got {short_repr(db_name)}")
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, numbers.Real) or timeout <= 0
        ):
            raise ConfigError(
                f"timeout must be a positive number of seconds or None, got {timeout!r}"
            )
        for key, value in params.items():
            if key not in BUILD_PARAMS and key not in SEARCH_PARAMS:
                raise ConfigError(
                    f"unknown MilvusIndex parameter {key!r}; build parameters: "
                    f"{', '.join(sorted(BUILD_PARAMS))}; search parameters: "
                    f"{', '.join(sorted(SEARCH_PARAMS))}"
                )
            if isinstance(value, bool) or not isinstance(value, (numbers.Real, str)):
                raise ConfigError(f"{key} must be a number or a string, got {short_repr(value)}")
            if isinstance(value, numbers.Real) and not value > 0:
                raise ConfigError(f"{key} must be positive, got {value!r}")
        super().__init__(dim=dim)
        self._raw_uri: str = raw_uri  # may hold credentials: used to connect, never shown/saved
        self.uri: str = redact_uri(raw_uri)
        if self.uri != raw_uri:
            logger.warning(
                "credentials in the Milvus URI for %s are used to connect but not saved; "
                "put the token in an environment variable and pass token_env",
                self.uri,
            )
        self.collection: str = collection
        self.index_type: str = index_type.upper()
        self.token_env: str | None = token_env
        self.fields: dict[str, str] | None = None if fields is None else _check_fields(fields)
        self.batch_size: int = int(batch_size)
        self.consistency_level: str = consistency_level
        self.db_name: str | None = db_name
        self.timeout: float | None = None if timeout is None else float(timeout)
        self.params: dict[str, Any] = dict(params)
        self.fields_: dict[str, str] | None = None if fields is None else dict(self.fields or {})
        self._client: Any = None
        self._client_lock: threading.Lock = threading.Lock()
        self._created: bool = False
        self._from_file: bool = False  # uri/token_env came from a saved file
        self._lite_checked: bool = True  # False: a file's Lite path not yet checked
        self._caller_uri: bool = False  # the caller named the connection at load
        saved = _SAVED.get()
        if saved is not None:
            self._adopt_caller_connection(saved)

    def _adopt_caller_connection(self, where: str) -> None:
        """Replace the file's connection by the caller's, or refuse it (never read the file's).

        A server URI or a ``token_env`` from a file is refused unless the caller
        names a connection; the caller's URI (and its ``token_env``, or none)
        then replaces the file's. A Lite path is kept but not opened until the
        saved folder's ``lite_path`` has been checked (:meth:`_load_state`).
        """
        self._from_file = True
        uri, token_env = _caller_grant()
        if uri is not None:
            raw = _check_uri(uri)
            self._raw_uri, self.uri = raw, redact_uri(raw)
            self.token_env = token_env
            self._caller_uri = True
            return
        if not self.is_lite:
            raise CatalogError(
                f"{where}: field 'uri' of the saved Milvus index names the server "
                f"{short_repr(self.uri)}; a saved catalogue does not choose where to connect (nor "
                f"which secret to send there). To connect to your Milvus server, {_HOW}"
            )
        if self.token_env is not None and token_env is None:
            raise CatalogError(
                f"{where}: field 'token_env' of the saved Milvus index names the environment "
                f"variable {self.token_env!r}; a saved catalogue does not choose which secret "
                f"is read. To use a token, {_HOW}"
            )
        self.token_env = token_env if self.token_env is not None else None
        self._lite_checked = False

    # ----------------------------------------------------------------- config

    def get_config(self) -> dict[str, Any]:
        """Return the constructor parameters, JSON-safe and free of credentials."""
        config = super().get_config()
        config.update(self.params)
        return config

    # ----------------------------------------------------------------- public API

    @property
    def is_lite(self) -> bool:
        """Whether the index lives in a Milvus Lite database file."""
        return is_lite_uri(self.uri)

    def add(
        self,
        vectors: ArrayLike,
        ids: Sequence[Id],
        *,
        metadata: Sequence[Mapping[str, Any] | None] | None = None,
    ) -> None:
        """Store ``vectors`` under ``ids`` (with their ``metadata``), in batches of ``batch_size``.

        Parameters
        ----------
        vectors
            ``(n, dim)`` array-like; rows are L2-normalised.
        ids
            ``n`` new, distinct ids (``str`` or ``int``).
        metadata
            ``n`` mappings (or ``None``) of scalar metadata; a field missing from
            a row is stored as null, which no comparison matches.

        Raises
        ------
        InvalidVectorsError, DimensionMismatch, InvalidIdError, DuplicateIdError
            As for every index.
        ConfigError
            Metadata with a field not in the schema, a value of the wrong type,
            or a count that differs from the rows.
        MilvusError
            Milvus refused the insert; rows already sent are deleted again and
            nothing is added.
        """
        ids, x, rows = self._check_add(vectors, ids, metadata)
        with self._lock.write():
            self._ids.check_new(ids)
            self._insert_locked(x, ids, rows)
            self._ids.assign(ids)

    def upsert(
        self,
        vectors: ArrayLike,
        ids: Sequence[Id],
        *,
        metadata: Sequence[Mapping[str, Any] | None] | None = None,
    ) -> None:
        """Store ``vectors`` under ``ids``, replacing those already stored.

        A replaced id counts as newly added (it moves to the end of
        :attr:`ids` and loses ties to older items), as after ``remove`` + ``add``.
        Raises as :meth:`add` does (except for already-stored ids).
        """
        ids, x, rows = self._check_add(vectors, ids, metadata)
        with self._lock.write():
            old = [i for i in ids if i in self._ids]
            old_labels = self._ids.labels_of(old)
            new_labels = self._insert_locked(x, ids, rows)
            if len(old_labels):
                try:
                    self._delete_labels(old_labels)
                except BaseException:
                    with contextlib.suppress(Exception):
                        self._delete_labels(new_labels)
                    raise
                self._ids.discard(old)
            self._ids.assign(ids)

    def search(
        self,
        queries: ArrayLike,
        k: int,
        *,
        where: Any = None,
        allowed: np.ndarray | None = None,
    ) -> tuple[np.ndarray, list[list[Id]]]:
        """Return the ``k`` stored vectors most similar to each query, filtered in Milvus.

        Parameters
        ----------
        queries
            ``(nq, dim)`` array-like, or one 1-d vector.
        k
            Neighbours per query (at most :data:`MAX_TOPK`); more than the
            index holds returns all of them.
        where
            ``None``, a :mod:`visualsim.filters` expression, or filter text:
            only items whose metadata match are returned.
        allowed
            Optional boolean mask over internal labels (what the recommender
            passes to indexes without native filters); ``where`` is cheaper.

        Returns
        -------
        scores : numpy.ndarray
            ``float32`` ``(nq, m)`` cosine similarities, highest first, ties in
            insertion order; ``m = min(k, len(self))`` without a filter, and
            with one at most ``k``, as many as every query found. (Which of
            several items tied exactly at the ``k``-th score comes back is
            Milvus's choice.)
        ids : list of list
            The caller ids matching ``scores``.

        Raises
        ------
        ConfigError, NotFittedError, InvalidVectorsError, DimensionMismatch
            As for every index.
        FilterError
            A filter Milvus cannot express, or over a field the collection lacks.
        MilvusError
            Milvus refused the search or could not be reached.
        """
        k = check_k(k)
        if not len(self._ids):
            raise self._empty_error()
        q = check_vectors(queries, dim=self._dim, name="queries")
        with self._lock.read():
            n = len(self._ids)
            if not n:
                raise self._empty_error()
            kk = min(k, n)
            if kk > MAX_TOPK:
                raise ConfigError(
                    f"k={k} is more than the {MAX_TOPK} neighbours Milvus returns per query; "
                    f"ask for at most {MAX_TOPK}"
                )
            clauses = []
            if where is not None:
                clauses.append(to_milvus_expr(where, self.fields_ or {}))
            if allowed is not None:
                clauses.append(self._allowed_expr(allowed))
            expr = " and ".join(f"({c})" for c in clauses)
            if not len(q):
                return np.empty((0, kk), dtype=np.float32), []
            return self._search_locked_milvus(q, kk, expr, filtered=bool(clauses))

    def count(self) -> int:
        """Return how many rows the Milvus collection holds now (asks the server)."""
        with self._lock.read():
            return self._count_locked()

    def drop(self) -> None:
        """Drop the collection from Milvus and forget every stored id.

        This deletes the vectors from the server (or the Lite file): use it for
        a collection this index created and no longer needs.
        """
        with self._lock.write():
            client = self._connect()
            if self._call("has_collection", client.has_collection, self.collection):
                self._call("drop_collection", client.drop_collection, self.collection)
            self._created = False
            self.fields_ = None if self.fields is None else dict(self.fields)
            from .base import IdMap

            self._ids = IdMap()

    def close(self) -> None:
        """Close the connection (a later call reconnects)."""
        with self._client_lock:
            client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()

    # ----------------------------------------------------------------- BaseIndex hooks

    def _remove(self, labels: np.ndarray) -> None:
        self._delete_labels(labels)

    def _add(self, x: np.ndarray, labels: np.ndarray) -> None:  # pragma: no cover - add overridden
        raise NotImplementedError

    def _save_state(self, directory: Path) -> dict[str, Any]:
        state: dict[str, Any] = {
            "collection": self.collection,
            "fields": self.fields_,
            "created": self._created,
            "ids_digest": _digest_pairs(self._id_pairs()),
        }
        if self.is_lite:
            db = Path(self.uri)
            final = _final_location(directory)
            for folder in (final, *final.parents):
                if folder == final.parent:
                    break
                if db == folder or folder in db.parents:
                    raise CatalogError(
                        f"the Milvus Lite database {str(db)!r} lies inside {str(folder)!r}, "
                        "which saving replaces; keep the .db beside the catalogue folder "
                        "(e.g. shop/ and shop.db) or use a server URI"
                    )
            try:
                state["lite_path"] = os.path.relpath(db, final)
            except ValueError:  # another drive on Windows
                state["lite_path"] = str(db)
        else:
            state["uri"] = self.uri
        if self._created:
            client = self._connect()
            self._call("flush", client.flush, self.collection)
            live = self._count_locked()
            if live != len(self._ids):
                raise CatalogError(
                    f"Milvus collection {self.collection!r} at {self.uri} holds {live} rows but "
                    f"the index knows {len(self._ids)}; another writer changed it, so saving "
                    "would record a catalogue that does not match"
                )
        return state

    def _load_state(self, directory: Path, state: Mapping[str, Any]) -> None:
        if not self._from_file:  # loaded outside Recommender.load: apply the same rule
            self._adopt_caller_connection(str(directory / MANIFEST_NAME))
        if not self._caller_uri:  # the file may only name a Lite database near itself
            if "lite_path" not in state:
                try:
                    shown = redact_uri(str(state.get("uri", self.uri)))[:200]
                except ValueError:  # not even a URL
                    shown = "?"
                raise CatalogError(
                    f"{directory / MANIFEST_NAME}: field 'state.uri' names the Milvus server "
                    f"{shown!r} and there is no 'state.lite_path'; a saved index does not "
                    f"choose where to connect. To connect to your Milvus server, {_HOW}"
                )
            self.uri = self._raw_uri = str(_saved_lite_db(directory, state["lite_path"]))
            self._lite_checked = True
        if state.get("collection") != self.collection:
            raise CatalogError(
                f"{directory}: saved collection {state.get('collection')!r} differs from the "
                f"config's {self.collection!r}; the index is corrupt"
            )
        fields = state.get("fields")
        self.fields_ = None if fields is None else _check_fields(fields)
        self._created = bool(state.get("created"))
        expected = state.get("ids_digest")
        if _digest_pairs(self._id_pairs()) != expected:
            raise CatalogError(
                f"{directory}: the saved ids do not match the saved digest; the index is corrupt"
            )
        if self.is_lite and self._created and not Path(self.uri).exists():
            raise CatalogError(
                f"the Milvus Lite database {self.uri!r} that the saved index in {directory} "
                "uses is missing; keep the .db beside the catalogue folder and move them "
                "together, or rebuild with Recommender.load(path, index=...)"
            )
        if self.is_lite and not self._created and not Path(self.uri).exists():
            return  # nothing there to collide with; a load creates no database
        client = self._connect()
        exists = self._call("has_collection", client.has_collection, self.collection)
        if not self._created:
            if exists:
                raise CatalogError(
                    f"the saved index is empty but Milvus collection {self.collection!r} at "
                    f"{self.uri} exists; it was created by someone else since: drop it or "
                    "choose another collection"
                )
            return
        if not exists:
            raise CatalogError(
                f"Milvus collection {self.collection!r} is missing at {self.uri}; the saved "
                f"index in {directory} needs it (was it dropped, or is this the wrong "
                "server/database file?). Rebuild it from the catalogue's stored vectors with "
                "Recommender.load(path, index=...)"
            )
        self._call("load_collection", client.load_collection, self.collection)
        live = self._count_locked()
        if live != len(self._ids):
            raise CatalogError(
                f"Milvus collection {self.collection!r} at {self.uri} holds {live} rows but the "
                f"saved index in {directory} has {len(self._ids)}; it was changed since the "
                "catalogue was saved. Re-save from the index that changed it, or rebuild with "
                "Recommender.load(path, index=...)"
            )
        got = _digest_pairs(self._collection_pairs())
        if got != expected:
            raise CatalogError(
                f"Milvus collection {self.collection!r} at {self.uri} holds {live} rows, as "
                f"saved, but other ids (ids digest {got[:12]}, saved {str(expected)[:12]}); it "
                "was changed since the catalogue was saved. Re-save from the index that changed "
                "it, or rebuild with Recommender.load(path, index=...)"
            )

    # ----------------------------------------------------------------- internals

    def _check_add(
        self,
        vectors: ArrayLike,
        ids: Sequence[Id],
        metadata: Sequence[Mapping[str, Any] | None] | None,
    ) -> tuple[list[Id], np.ndarray, list[dict[str, Any]]]:
        ids = check_ids(ids)
        x = check_vectors(vectors, dim=self._dim, name="vectors")
        if len(ids) != len(x):
            raise InvalidVectorsError(
                f"vectors have {len(x)} row(s) but {len(ids)} id(s) were given; pass one id per row"
            )
        if metadata is None:
            rows: list[dict[str, Any]] = [{} for _ in ids]
        else:
            if isinstance(metadata, (Mapping, str, bytes)):
                raise ConfigError(
                    "metadata must be a sequence with one mapping per id, got a "
                    f"{type(metadata).__name__}; wrap a single row in a list"
                )
            rows = [dict(m) if m is not None else {} for m in metadata]
            if len(rows) != len(ids):
                raise ConfigError(
                    f"{len(rows)} metadata row(s) for {len(ids)} id(s); pass one per id"
                )
        for id_ in ids:
            if len(json.dumps(id_, ensure_ascii=False).encode("utf-8")) > ID_MAX_LENGTH:
                raise ConfigError(
                    f"id {short_repr(id_)} is longer than the {ID_MAX_LENGTH} bytes a Milvus "
                    "collection stores; use shorter ids"
                )
        return ids, x, rows

    def _insert_locked(
        self, x: np.ndarray, ids: list[Id], rows: list[dict[str, Any]]
    ) -> np.ndarray:
        """Check metadata against the schema, create the collection if needed, insert."""
        x = check_vectors(x, dim=self._dim, name="vectors", normalize=False)
        if self._dim is None and len(x):
            self._dim = int(x.shape[1])
        if self.fields_ is None and any(rows):
            self.fields_ = _infer_fields(rows)
        fields = self.fields_ or {}
        clean = [_check_row(row, fields, id_) for row, id_ in zip(rows, ids, strict=True)]
        labels = self._ids.reserve(len(ids))
        if not len(x):
            return labels
        self._ensure_collection()
        client = self._connect()
        sent: list[np.ndarray] = []
        try:
            for start in range(0, len(x), self.batch_size):
                stop = start + self.batch_size
                batch = [
                    {
                        LABEL_FIELD: label,
                        ID_FIELD: json.dumps(id_, ensure_ascii=False),
                        VECTOR_FIELD: vec,
                        **meta,
                    }
                    for label, id_, vec, meta in zip(
                        labels[start:stop].tolist(),
                        ids[start:stop],
                        x[start:stop],
                        clean[start:stop],
                        strict=True,
                    )
                ]
                sent.append(labels[start:stop])
                self._call("insert", client.insert, self.collection, batch)
        except BaseException:
            if sent:
                with contextlib.suppress(Exception):
                    self._delete_labels(np.concatenate(sent))
            raise
        return labels

    def _ensure_collection(self) -> None:
        if self._created:
            return
        from pymilvus import DataType, MilvusClient

        client = self._connect()
        if self._call("has_collection", client.has_collection, self.collection):
            rows = self._call(
                "query", client.query, self.collection, filter="", output_fields=["count(*)"]
            )
            count = int(rows[0]["count(*)"]) if rows else 0
            raise CatalogError(
                f"Milvus collection {self.collection!r} already exists at {self.uri} "
                f"({count} rows); MilvusIndex creates its own. Choose another collection name, "
                "load the saved index that wrote it with load_index(path), or drop it with "
                f"MilvusIndex(uri=..., collection={self.collection!r}).drop()"
            )
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field(LABEL_FIELD, DataType.INT64, is_primary=True)
        schema.add_field(ID_FIELD, DataType.VARCHAR, max_length=ID_MAX_LENGTH)
        schema.add_field(VECTOR_FIELD, DataType.FLOAT_VECTOR, dim=int(self._dim or 0))
        types = {
            "str": DataType.VARCHAR,
            "int": DataType.INT64,
            "float": DataType.DOUBLE,
            "bool": DataType.BOOL,
        }
        for name, kind in (self.fields_ or {}).items():
            if kind == "json":
                continue  # kept out of Milvus: not filterable there
            extra = {"max_length": 65_535} if kind == "str" else {}
            schema.add_field(name, types[kind], nullable=True, **extra)
        index_params = client.prepare_index_params()
        build = {k: v for k, v in self.params.items() if k in BUILD_PARAMS}
        index_params.add_index(
            VECTOR_FIELD, index_type=self.index_type, metric_type="COSINE", params=build
        )
        self._call(
            "create_collection",
            client.create_collection,
            self.collection,
            schema=schema,
            consistency_level=self.consistency_level,
        )
        # Milvus Lite builds at once; pymilvus's wait for it polls a call Lite lacks (0.5 s)
        self._call(
            "create_index",
            client.create_index,
            self.collection,
            index_params,
            sync=not self.is_lite,
        )
        self._call("load_collection", client.load_collection, self.collection)
        self._created = True

    def _search_locked_milvus(
        self, q: np.ndarray, kk: int, expr: str, *, filtered: bool
    ) -> tuple[np.ndarray, list[list[Id]]]:
        client = self._connect()
        search = {k: v for k, v in self.params.items() if k in SEARCH_PARAMS}
        if "ef" in search or self.index_type.startswith("HNSW"):
            search["ef"] = max(int(search.get("ef", 0)), kk)  # Milvus wants ef >= k
        rows_scores: list[list[float]] = []
        rows_labels: list[list[int]] = []
        for start in range(0, len(q), _QUERY_CHUNK):
            hits = self._call(
                "search",
                client.search,
                self.collection,
                data=q[start : start + _QUERY_CHUNK],
                limit=kk,
                filter=expr,
                output_fields=[LABEL_FIELD],
                search_params={"metric_type": "COSINE", "params": search},
                anns_field=VECTOR_FIELD,
                consistency_level=self.consistency_level,
            )
            for row in hits:
                got = [(int(h[LABEL_FIELD]), float(h["distance"])) for h in row]
                if not self._all_known([g[0] for g in got]):
                    # drop rows this index does not know (written by someone else)
                    got = [g for g in got if self._all_known([g[0]])]
                rows_labels.append([g[0] for g in got])
                rows_scores.append([g[1] for g in got])
        width = min((len(r) for r in rows_labels), default=0)
        if not filtered and width < kk:
            logger.debug("Milvus returned %d of %d neighbours for some query", width, kk)
        scores = np.empty((len(rows_labels), width), dtype=np.float32)
        labels_arr = np.empty((len(rows_labels), width), dtype=np.int64)
        for i, (s, lab) in enumerate(zip(rows_scores, rows_labels, strict=True)):
            s_arr = np.asarray(s, dtype=np.float32)
            lab_arr = np.asarray(lab, dtype=np.int64)
            order = np.lexsort((lab_arr, -s_arr))[:width]  # each row keeps its own best
            scores[i] = s_arr[order]
            labels_arr[i] = lab_arr[order]
        return scores, self._ids.lookup(labels_arr)

    def _all_known(self, labels: list[int]) -> bool:
        """Whether every label belongs to an id this index stores."""
        if not labels:
            return True
        try:
            found = self._ids.lookup(np.asarray([labels], dtype=np.int64))[0]
        except (KeyError, IndexError):
            return False
        return all(f is not None for f in found)

    def _allowed_expr(self, allowed: np.ndarray) -> str:
        mask = np.asarray(allowed, dtype=bool).ravel()
        labels = np.flatnonzero(mask)
        if not len(labels):
            return f"{LABEL_FIELD} < 0"
        return f"{LABEL_FIELD} in [{', '.join(map(str, labels.tolist()))}]"

    def _delete_labels(self, labels: np.ndarray) -> None:
        client = self._connect()
        values = np.asarray(labels, dtype=np.int64).tolist()
        for start in range(0, len(values), _DELETE_CHUNK):
            self._call(
                "delete", client.delete, self.collection, ids=values[start : start + _DELETE_CHUNK]
            )

    def _count_locked(self) -> int:
        if not self._created:
            return 0
        client = self._connect()
        rows = self._call(
            "query",
            client.query,
            self.collection,
            filter="",
            output_fields=["count(*)"],
            consistency_level=self.consistency_level,
        )
        return int(rows[0]["count(*)"]) if rows else 0

    def _id_pairs(self) -> Iterator[tuple[int, str]]:
        ids, labels, _ = self._ids.state()
        for id_, label in zip(ids, labels.tolist(), strict=True):
            yield int(label), json.dumps(id_, ensure_ascii=False)

    def _collection_pairs(self) -> list[tuple[int, str]]:
        """Read every ``(label, id)`` of the collection, a page of labels at a time."""
        client = self._connect()
        top = self._ids.next_label
        pairs: list[tuple[int, str]] = []
        bounds = [(lo, min(top, lo + _ITER_BATCH)) for lo in range(0, top, _ITER_BATCH)]
        for lo, hi in bounds:
            rows = self._call(
                "query",
                client.query,
                self.collection,
                filter=f"{LABEL_FIELD} >= {lo} and {LABEL_FIELD} < {hi}",
                output_fields=[LABEL_FIELD, ID_FIELD],
                limit=hi - lo,
                consistency_level=self.consistency_level,
            )
            pairs.extend((int(r[LABEL_FIELD]), str(r[ID_FIELD])) for r in rows)
        stray = self._call(  # rows someone else added under labels we never gave out
            "query",
            client.query,
            self.collection,
            filter=f"{LABEL_FIELD} >= {top} or {LABEL_FIELD} < 0",
            output_fields=[LABEL_FIELD, ID_FIELD],
            limit=10,
            consistency_level=self.consistency_level,
        )
        pairs.extend((int(r[LABEL_FIELD]), str(r[ID_FIELD])) for r in stray)
        pairs.sort()
        return pairs

    def _connect(self) -> Any:
        with self._client_lock:
            if self._client is not None:
                return self._client
            if not self._lite_checked:
                raise CatalogError(
                    f"the Milvus Lite database {self.uri!r} comes from a saved config whose "
                    "folder was not checked, so it is not opened (nor created); to use a "
                    f"database, {_HOW}"
                )
            try:
                from pymilvus import MilvusClient
            except ImportError as exc:
                raise ImportError(f"MilvusIndex needs pymilvus: {INSTALL_HINT}") from exc
            kwargs: dict[str, Any] = {}
            if self.token_env is not None and not self.is_lite:
                if not os.environ.get(self.token_env):
                    raise ConfigError(
                        f"environment variable {self.token_env} (token_env) is not set or empty; "
                        "set it to the Milvus token before connecting"
                    )
                kwargs["token"] = os.environ[self.token_env]
            if self.db_name is not None:
                kwargs["db_name"] = self.db_name
            if self.timeout is not None:
                kwargs["timeout"] = self.timeout
            if self.is_lite:
                Path(self.uri).parent.mkdir(parents=True, exist_ok=True)
            failure = None
            try:
                self._client = MilvusClient(self._raw_uri, **kwargs)
            except Exception as exc:
                failure = self._scrub(f"{type(exc).__name__}: {exc}")
            finally:
                kwargs.clear()  # drop the token from this frame
            if failure is not None:
                raise MilvusError(
                    f"cannot connect to Milvus at {self.uri} (collection {self.collection!r}): "
                    f"{failure}. Check the URI, that the server is up, and the token in "
                    f"{self.token_env or 'token_env'}"
                )
            return self._client

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Call a pymilvus method, turning its errors into scrubbed :class:`MilvusError`."""
        failure = None
        try:
            return fn(*args, **kwargs)
        except VisualsimError:
            raise
        except Exception as exc:
            failure = self._scrub(f"{type(exc).__name__}: {exc}")
        # raised outside the except block: no chained exception carries pymilvus frames
        raise MilvusError(
            f"Milvus {what} failed for collection {self.collection!r} at {self.uri}: {failure}"
        )

    def _scrub(self, text: str) -> str:
        """Remove every credential this index knows of from ``text``."""
        secrets = []
        if self.token_env is not None and os.environ.get(self.token_env):
            token = os.environ[self.token_env]
            secrets.extend([token, *token.split(":")])
        raw = urlsplit(self._raw_uri) if not self.is_lite else None
        if raw is not None:
            secrets.extend(s for s in (raw.password, raw.username, raw.query) if s)
            if raw.query or raw.password or raw.username:
                secrets.append(self._raw_uri)
        for secret in sorted(set(secrets), key=len, reverse=True):
            if len(secret) >= 3:
                text = text.replace(secret, "***")
        return text


# --------------------------------------------------------------------------- metadata


def _check_fields(fields: Any) -> dict[str, str]:
    if not isinstance(fields, Mapping):
        raise ConfigError(
            f"fields must map field names to types ({', '.join(FIELD_TYPES)}), "
            f"got {type(fields).__name__}"
        )
    out: dict[str, str] = {}
    for name, kind in fields.items():
        if not isinstance(name, str) or not FIELD_NAME.match(name) or name in RESERVED_FIELDS:
            raise ConfigError(
                f"metadata field {short_repr(name)} cannot be a Milvus field: use letters, "
                "digits and _, not starting with a digit, and not vs_label/vs_id/vs_vector"
            )
        if kind not in FIELD_TYPES:
            raise ConfigError(
                f"metadata field {name!r} has type {short_repr(kind)}; "
                f"use one of {', '.join(FIELD_TYPES)}"
            )
        out[name] = str(kind)
    return out


def _kind_of(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)):
        return "bool"
    if isinstance(value, numbers.Integral):
        return "int"
    if isinstance(value, numbers.Real):
        return None if math.isnan(float(value)) else "float"
    if isinstance(value, str):
        return "str"
    return "json"


def _infer_fields(rows: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """Return the field types of a first batch of metadata (as the catalogue's store does)."""
    seen: dict[str, set[str]] = {}
    for row in rows:
        for name, value in row.items():
            kind = _kind_of(value)
            kinds = seen.setdefault(name, set())
            if kind is not None:
                kinds.add(kind)
    out: dict[str, str] = {}
    for name, kinds in seen.items():
        if kinds == {"int", "float"}:
            kinds = {"float"}
        if not kinds:
            raise ConfigError(
                f"metadata field {name!r} holds only None values, so its Milvus type cannot be "
                f"chosen; declare it with MilvusIndex(fields={{{name!r}: 'str'}}) (types: "
                f"{', '.join(FIELD_TYPES)})"
            )
        out[name] = kinds.pop() if len(kinds) == 1 else "json"
    return _check_fields(out)


def _check_row(row: Mapping[str, Any], fields: Mapping[str, str], id_: Id) -> dict[str, Any]:
    """Return the Milvus scalar values of one metadata row (missing, None and NaN: null)."""
    unknown = [k for k in row if k not in fields]
    if unknown:
        raise ConfigError(
            f"metadata of {id_!r} has field(s) {_preview(unknown)} that the Milvus collection "
            f"lacks (fields: {', '.join(sorted(fields)) or 'none'}); a collection's schema is "
            "fixed when it is created, so declare every field in MilvusIndex(fields=...)"
        )
    out: dict[str, Any] = {}
    for name, kind in fields.items():
        if kind == "json":
            continue  # not stored in Milvus
        value: Any = row.get(name)
        got = _kind_of(value)
        if got is None:
            out[name] = None
            continue
        if kind == "float" and got in ("int", "float"):
            value = float(value)
            if not math.isfinite(value):
                raise ConfigError(
                    f"metadata field {name!r} of {id_!r} is {value!r}; only finite numbers "
                    "are stored (None or NaN for a missing value)"
                )
        elif kind == "int" and (got == "int" or (got == "float" and float(value).is_integer())):
            value = int(value)
            if not -(2**63) <= value < 2**63:
                raise ConfigError(
                    f"metadata field {name!r} of {id_!r} ({value}) does not fit in int64"
                )
        elif kind == got:
            value = bool(value) if kind == "bool" else str(value)
        else:
            hint = "float" if kind == "int" and got == "float" else "json"
            raise ConfigError(
                f"metadata field {name!r} of {id_!r} is {short_repr(value)} "
                f"({type(value).__name__}), but the Milvus collection stores {kind} there; "
                f"declare it with MilvusIndex(fields={{{name!r}: {hint!r}}}) before the first add"
            )
        out[name] = value
    return out


def _digest_pairs(pairs: Iterable[tuple[int, str]]) -> str:
    digest = hashlib.sha256()
    for label, id_json in pairs:
        digest.update(f"{label}\t{id_json}\n".encode())
    return digest.hexdigest()


__all__ = [
    "BUILD_PARAMS",
    "FIELD_TYPES",
    "INDEX_TYPES",
    "MAX_TOPK",
    "SEARCH_PARAMS",
    "MILVUS_TOKEN_ENV_ENV",
    "MILVUS_URI_ENV",
    "MilvusError",
    "MilvusIndex",
    "is_lite_uri",
    "loading_saved",
    "milvus_connection",
    "redact_uri",
    "to_milvus_expr",
]
