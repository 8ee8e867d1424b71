"""Download Kaggle datasets with the official client, safely and only once.

Credentials come from where the ``kaggle`` client looks for them: a
``kaggle.json`` file in ``$KAGGLE_CONFIG_DIR`` or ``~/.kaggle`` (or
``~/.config/kaggle``), the ``KAGGLE_USERNAME`` and ``KAGGLE_KEY`` environment
variables, or a newer access token (``KAGGLE_API_TOKEN``,
``~/.kaggle/access_token``). This module checks that one of them exists before
anything is downloaded, warns when ``kaggle.json`` is readable by other users,
and never prints, logs, stores or repeats the key. While the client runs, its
standard output and error, its log records (of any logger) and its warnings are
caught and scrubbed of the key — in any letter case, URL-encoded, and in base64
(alone or inside an HTTP Basic ``Authorization`` header) — before they reach a
log; a failure becomes a new :class:`~visualsim.errors.DatasetError` built from
scrubbed text, with no exception chain (``__cause__``/``__context__``) and no
frame holding the key; and a file the failed download wrote that quotes the key
(a server's error page saved as the archive) is removed.

A completed download leaves a marker file in the target directory; while the
marker is there, asking again downloads nothing (no credentials or network
needed), and an interrupted download, which leaves no marker, is redone (the
client resumes a partial archive where the server allows it).
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import logging
import os
import re
import stat
import time
import traceback
import urllib.parse
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import DatasetError
from .base import BaseDataset, ItemId
from .folder import ImageFolder

logger = logging.getLogger(__name__)

MARKER_NAME = ".visualsim-kaggle-download.json"
"""The file written into ``root`` once a download has completed."""

_SLUG = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*(/versions/\d+)?$")
_SETUP_HELP = (
    "Create an API token at https://www.kaggle.com/settings (section 'API', "
    "'Create New Token'), save the downloaded kaggle.json as ~/.kaggle/kaggle.json "
    "(or in $KAGGLE_CONFIG_DIR) and run `chmod 600 ~/.kaggle/kaggle.json`; or set the "
    "environment variables KAGGLE_USERNAME and KAGGLE_KEY."
)


class KaggleCredentialsWarning(UserWarning):
    """The Kaggle credentials file can be read by other users of this machine."""


@dataclass(frozen=True)
class KaggleCredentials:
    """Where the Kaggle credentials were found; never the key itself.

    Parameters
    ----------
    source
        ``"kaggle.json"``, ``"environment"`` (``KAGGLE_USERNAME``/``KAGGLE_KEY``)
        or ``"access token"``.
    path
        The credentials file, when the credentials come from one.
    username
        The Kaggle user name, when known.
    """

    source: str
    path: Path | None = None
    username: str | None = None

    def describe(self) -> str:
        """Return where the credentials came from, in words (safe to log)."""
        where = f" at {os.fspath(self.path)}" if self.path is not None else ""
        who = f" for user {self.username!r}" if self.username else ""
        return f"{self.source}{where}{who}"


def kaggle_config_dirs() -> list[Path]:
    """Return the directories the Kaggle client reads ``kaggle.json`` from, in order.

    ``$KAGGLE_CONFIG_DIR`` when set; otherwise ``~/.kaggle`` and, as the client
    falls back to it on Linux, ``$XDG_CONFIG_HOME/kaggle`` (``~/.config/kaggle``).
    """
    configured = os.environ.get("KAGGLE_CONFIG_DIR")
    if configured:
        return [Path(configured).expanduser()]
    home = Path.home()
    xdg = os.environ.get("XDG_CONFIG_HOME") or os.fspath(home / ".config")
    return [home / ".kaggle", Path(xdg) / "kaggle"]


def find_kaggle_credentials() -> KaggleCredentials:
    """Return where usable Kaggle credentials are, or raise explaining how to set them up.

    Checks, like the ``kaggle`` client: ``KAGGLE_USERNAME`` + ``KAGGLE_KEY``,
    ``kaggle.json`` in :func:`kaggle_config_dirs`, then an access token
    (``KAGGLE_API_TOKEN`` or ``~/.kaggle/access_token``). A ``kaggle.json`` that
    group or others can read triggers a :class:`KaggleCredentialsWarning`
    telling the ``chmod 600`` to run, whichever source is used.

    Raises
    ------
    DatasetError
        When no credentials exist, or ``kaggle.json`` is unreadable or lacks
        ``username``/``key`` (the message names the file, never its contents).
    """
    json_path = next(
        (d / "kaggle.json" for d in kaggle_config_dirs() if (d / "kaggle.json").is_file()), None
    )
    if json_path is not None:
        check_permissions(json_path)
    env_user = os.environ.get("KAGGLE_USERNAME")
    if env_user and os.environ.get("KAGGLE_KEY"):
        return KaggleCredentials("environment", None, env_user)
    if json_path is not None:
        username = _read_username(json_path)
        return KaggleCredentials("kaggle.json", json_path, username)
    if os.environ.get("KAGGLE_API_TOKEN"):
        return KaggleCredentials("access token", None, None)
    for name in ("access_token", "access_token.txt"):
        token_path = Path.home() / ".kaggle" / name
        if token_path.is_file():
            check_permissions(token_path)
            return KaggleCredentials("access token", token_path, None)
    looked = ", ".join(os.fspath(d / "kaggle.json") for d in kaggle_config_dirs())
    raise DatasetError(f"no Kaggle credentials found (looked for {looked} and KAGGLE_USERNAME/"
                       f"KAGGLE_KEY). {_SETUP_HELP}")  # fmt: skip


def check_permissions(path: str | os.PathLike[str]) -> bool:
    """Warn if a credentials file is readable by group or others; return whether it is private.

    Parameters
    ----------
    path
        The credentials file (``kaggle.json``).
    """
    if os.name != "posix":  # pragma: no cover - POSIX modes only
        return True
    mode = os.stat(path).st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        message = (
            f"Kaggle credentials file {os.fspath(path)} is accessible by other users "
            f"(mode {stat.filemode(mode)}); anyone on this machine can read your API key. "
            f"Run: chmod 600 {os.fspath(path)}"
        )
        logger.warning(message)
        warnings.warn(message, KaggleCredentialsWarning, stacklevel=3)
        return False
    return True


def _read_username(path: Path) -> str:
    data: Any = None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        readable = False  # raised below: a JSONDecodeError holds the whole document, key included
    else:
        readable = True
    if not readable:
        raise DatasetError(
            f"Kaggle credentials file {os.fspath(path)} is not readable JSON. {_SETUP_HELP}"
        )
    if not isinstance(data, dict) or not data.get("username") or not data.get("key"):
        raise DatasetError(
            f'Kaggle credentials file {os.fspath(path)} must hold {{"username": ..., "key": ...}}. '
            f"{_SETUP_HELP}"
        )
    return str(data["username"])


def _b64_forms(data: bytes) -> set[str]:
    """Base64 spellings of ``data``: whole, and the part that any prefix leaves unchanged."""
    forms: set[str] = set()
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        whole = encode(data).decode("ascii")
        forms.update((whole, whole.rstrip("=")))
        for pad in (1, 2):  # data after 1 or 2 unknown bytes (e.g. "user:" in a Basic header)
            shifted = encode(b"\0" * pad + data).decode("ascii")
            core = shifted[4:-4]  # drop the quanta the prefix and the suffix touch
            if len(core) >= 8:
                forms.add(core)
        if len(whole) > 12:
            forms.add(whole[:-4])  # the key followed by more bytes
    return forms


class _Secrets:
    """The secret values and every spelling of them that must never be shown.

    Its ``repr`` shows none of them, so a traceback with locals (pytest
    ``--showlocals``, an error tracker) cannot leak them through this object.
    """

    __slots__ = ("_pattern",)

    def __init__(self, values: Iterable[str], usernames: Iterable[str] = ()) -> None:
        users = [u for u in usernames if u]
        forms: set[str] = set()
        for value in values:
            if not value or len(value) < 4:
                continue
            forms.update(
                (value, urllib.parse.quote(value, safe=""), urllib.parse.quote_plus(value))
            )
            raw = value.encode("utf-8")
            forms |= _b64_forms(raw)
            for user in users:
                forms |= _b64_forms(f"{user}:{value}".encode())
        ordered = sorted((f for f in forms if len(f) >= 4), key=len, reverse=True)
        self._pattern = (
            re.compile("|".join(re.escape(f) for f in ordered), re.IGNORECASE) if ordered else None
        )

    def redact(self, text: str) -> str:
        """Return ``text`` with every spelling of every secret replaced by ``***``."""
        return self._pattern.sub("***", text) if self._pattern is not None else text

    def found_in(self, text: str) -> bool:
        """Return whether ``text`` holds any spelling of a secret."""
        return self._pattern is not None and self._pattern.search(text) is not None

    def __repr__(self) -> str:
        return "<Kaggle secrets: redacted>"


def _secrets() -> _Secrets:
    """Return the secrets that must never appear anywhere (read here, never stored)."""
    values = [os.environ.get("KAGGLE_KEY", ""), os.environ.get("KAGGLE_API_TOKEN", "")]
    users = [os.environ.get("KAGGLE_USERNAME", "")]
    home = Path.home()
    directories = [*kaggle_config_dirs(), home / ".kaggle", home / ".config" / "kaggle"]
    for directory in dict.fromkeys(directories):
        with contextlib.suppress(OSError, ValueError, AttributeError, TypeError, KeyError):
            data = json.loads((directory / "kaggle.json").read_text("utf-8"))
            values.append(str(data["key"]))
            users.append(str(data.get("username", "")))
    for name in ("access_token", "access_token.txt"):
        with contextlib.suppress(OSError, UnicodeDecodeError):
            values.append((home / ".kaggle" / name).read_text("utf-8").strip())
    return _Secrets(values, users)


def redact(text: str, secrets: Iterable[str], usernames: Iterable[str] = ()) -> str:
    """Return ``text`` with every secret replaced by ``***``.

    Every spelling is removed: the value in any letter case, URL-encoded, and
    in base64 — alone, after any prefix, or as HTTP Basic ``user:key`` for the
    given ``usernames``.

    Parameters
    ----------
    text
        A message that may contain a secret.
    secrets
        The values to remove (shorter than 4 characters: ignored).
    usernames
        User names that may precede a secret in a Basic ``Authorization`` header.

    Examples
    --------
    >>> redact("Authorization: Basic YWxpY2U6czNjcjN0LWtleQ==", ["s3cr3t-key"], ["alice"])
    'Authorization: Basic ***'
    >>> redact("KEY=S3CR3T-KEY", ["s3cr3t-key"])
    'KEY=***'
    """
    return _Secrets(list(secrets), list(usernames)).redact(text)


def _redact_record(record: logging.LogRecord, secrets: _Secrets) -> None:
    """Scrub a log record in place: its message, arguments, traceback and stack."""
    try:
        message = record.getMessage()
    except Exception:  # a broken format string: keep its text
        message = str(record.msg)
    record.msg = secrets.redact(message)
    record.args = None
    if record.exc_info:
        text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
        record.exc_text = secrets.redact(text)
        record.exc_info = None
    elif record.exc_text:
        record.exc_text = secrets.redact(record.exc_text)
    if record.stack_info:
        record.stack_info = secrets.redact(record.stack_info)


@contextlib.contextmanager
def _quarantine(secrets: _Secrets) -> Iterator[None]:
    """Run the client with its stdout, stderr, log records and warnings scrubbed.

    Output is logged line by line (scrubbed) when the block ends; every log
    record created meanwhile, by any logger, is scrubbed as it is made; warnings
    are caught and issued again, scrubbed.
    """
    out, err = io.StringIO(), io.StringIO()
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        _redact_record(record, secrets)
        return record

    logging.setLogRecordFactory(factory)
    caught: list[warnings.WarningMessage] = []
    try:
        with (
            contextlib.redirect_stdout(out),
            contextlib.redirect_stderr(err),
            warnings.catch_warnings(record=True) as caught,
        ):
            warnings.simplefilter("always")
            yield
    finally:
        logging.setLogRecordFactory(previous)
        for stream in (out, err):
            _log_client_output(stream.getvalue(), secrets)
        for caught_warning in caught:
            category = caught_warning.category
            if not (isinstance(category, type) and issubclass(category, Warning)):
                category = UserWarning
            warnings.warn(secrets.redact(str(caught_warning.message)), category, stacklevel=3)


def dataset_url(slug: str) -> str:
    """Return the Kaggle web page of a dataset slug (``owner/name``)."""
    return f"https://www.kaggle.com/datasets/{slug.split('/versions/')[0]}"


def is_downloaded(slug: str, root: str | os.PathLike[str]) -> bool:
    """Return whether ``root`` holds a completed download of ``slug`` (its marker file).

    An empty marker file (``touch root/.visualsim-kaggle-download.json``) marks a
    download made by hand as complete.

    Parameters
    ----------
    slug
        The dataset, ``owner/name``.
    root
        The directory it was downloaded into.
    """
    marker = Path(root).expanduser() / MARKER_NAME
    if not marker.is_file():
        return False
    text = marker.read_text(encoding="utf-8").strip()
    if not text:
        return True
    try:
        return bool(json.loads(text).get("slug") == slug)
    except (ValueError, AttributeError):
        return False


def download_kaggle_dataset(
    slug: str,
    root: str | os.PathLike[str],
    *,
    unzip: bool = True,
    force: bool = False,
    api: Any = None,
    quiet: bool = True,
) -> Path:
    """Download a Kaggle dataset into ``root`` unless a completed download is already there.

    Parameters
    ----------
    slug
        The dataset, ``owner/name`` as in its URL
        (``paramaggarwal/fashion-product-images-small``).
    root
        Directory to download (and unzip) into; created if needed.
    unzip
        Extract the archive (and delete it), as ``kaggle datasets download --unzip``.
    force
        Download again even when a completed download is there.
    api
        A Kaggle client with ``authenticate()`` and
        ``dataset_download_files(slug, path=, unzip=, quiet=, force=)``; default:
        the official ``kaggle.api.kaggle_api_extended.KaggleApi``. Tests pass a
        stand-in.
    quiet
        Hide the client's progress bar.

    Returns
    -------
    Path
        ``root``.

    Raises
    ------
    DatasetError
        No credentials; the ``kaggle`` package is missing; Kaggle refused the
        credentials or the dataset; the network or Kaggle is unreachable (the
        message says how to download by hand). No message contains the key.
    """
    if not isinstance(slug, str) or not _SLUG.match(slug):
        raise DatasetError(
            f"invalid Kaggle dataset slug {slug!r}; expected 'owner/dataset-name' as in "
            "https://www.kaggle.com/datasets/owner/dataset-name"
        )
    target = Path(root).expanduser().resolve()
    marker = target / MARKER_NAME
    if not force and is_downloaded(slug, target):
        logger.info("Kaggle dataset %s already downloaded in %s; skipping", slug, target)
        return target

    credentials = find_kaggle_credentials()
    target.mkdir(parents=True, exist_ok=True)
    marker.unlink(missing_ok=True)
    secrets = _secrets()
    logger.info(
        "downloading Kaggle dataset %s into %s (credentials: %s)",
        slug, target, credentials.describe(),
    )  # fmt: skip
    before = _snapshot(target)
    error = _run_client(api, slug, target, unzip, quiet, force, credentials, secrets)
    if error is not None:
        _remove_echoes(target, before, secrets)
        # a new error from scrubbed text: no chain, no frame that holds the key
        raise error from None
    marker.write_text(
        json.dumps(
            {"slug": slug, "unzip": unzip, "completed": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        )
        + "\n",
        encoding="utf-8",
    )
    logger.info("Kaggle dataset %s downloaded into %s", slug, target)
    return target


def _run_client(
    api: Any,
    slug: str,
    target: Path,
    unzip: bool,
    quiet: bool,
    force: bool,
    credentials: KaggleCredentials,
    secrets: _Secrets,
) -> DatasetError | None:
    """Run the download in quarantine; return the error to raise (scrubbed), or ``None``."""
    try:
        with _quarantine(secrets):
            client = api if api is not None else _default_api()
            client.authenticate()
            client.dataset_download_files(
                slug, path=os.fspath(target), unzip=unzip, quiet=quiet, force=force
            )
    except DatasetError as exc:  # ours (the client is missing): already key-free
        return DatasetError(secrets.redact(str(exc)))
    except (Exception, SystemExit) as exc:  # the client calls exit(1) on bad credentials
        return _download_error(exc, slug, target, credentials, secrets)
    return None


_SNAPSHOT_LIMIT = 10_000


def _snapshot(target: Path) -> dict[Path, tuple[int, int, int]]:
    """Return ``path -> (inode, size, mtime)`` of the files in ``target`` (at most 10,000)."""
    found: dict[Path, tuple[int, int, int]] = {}
    for path in target.rglob("*"):
        if len(found) >= _SNAPSHOT_LIMIT:
            break
        with contextlib.suppress(OSError):
            info = path.lstat()
            if stat.S_ISREG(info.st_mode):
                found[path] = (info.st_ino, info.st_size, info.st_mtime_ns)
    return found


def _remove_echoes(
    target: Path, before: dict[Path, tuple[int, int, int]], secrets: _Secrets
) -> None:
    """Remove files this failed download wrote that quote a secret (an echoed error page).

    Only files that are new or changed since ``before`` (the download's own
    output) are looked at; anything that was there already is left alone.
    """
    checked = 0
    for path in sorted(target.rglob("*")):
        if checked >= _SNAPSHOT_LIMIT:
            break
        try:
            info = path.lstat()
        except OSError:
            continue
        if not stat.S_ISREG(info.st_mode) or path.name == MARKER_NAME:
            continue
        if before.get(path) == (info.st_ino, info.st_size, info.st_mtime_ns):
            continue
        checked += 1
        if info.st_size > 64 * 2**20:
            continue
        with contextlib.suppress(OSError):
            if secrets.found_in(path.read_bytes().decode("latin-1")):
                path.unlink()
                logger.warning(
                    "removed %s: the failed Kaggle download wrote the server's answer there, "
                    "and it quoted your credentials",
                    path,
                )


def _log_client_output(text: str, secrets: _Secrets) -> None:
    for line in text.splitlines():
        if line.strip():
            logger.info("kaggle: %s", secrets.redact(line.strip()))


def _default_api() -> Any:
    """Return the official client (importing ``kaggle`` prints and authenticates: quarantine it)."""
    try:
        from kaggle.api.kaggle_api_extended import KaggleApi
    except ImportError:
        raise DatasetError(
            "downloading from Kaggle needs the official client: pip install 'visualsim[kaggle]' "
            "(or pip install kaggle)"
        ) from None
    return KaggleApi()


def _download_error(
    exc: BaseException,
    slug: str,
    root: Path,
    credentials: KaggleCredentials,
    secrets: _Secrets,
) -> DatasetError:
    url = dataset_url(slug)
    by_hand = (
        f"To download by hand: open {url}, click 'Download', unzip the archive into "
        f"{os.fspath(root)} and create the empty file {os.fspath(root / MARKER_NAME)}."
    )
    status = getattr(getattr(exc, "response", None), "status_code", None)
    try:
        text = f"{type(exc).__name__}: {exc}"
    except Exception:  # an exception whose __str__ fails
        text = type(exc).__name__
    detail = secrets.redact(text)
    if len(detail) > 300:  # cut after scrubbing, so no half of a key is left
        detail = detail[:300] + "..."
    if isinstance(exc, SystemExit) or status == 401:
        return DatasetError(
            f"Kaggle did not accept the credentials ({credentials.describe()}). {_SETUP_HELP}"
        )
    if status == 403:
        return DatasetError(
            f"Kaggle refused access to {slug!r} (HTTP 403): sign in at {url} and accept the "
            f"dataset's rules or licence, then try again. {by_hand}"
        )
    if status == 404:
        return DatasetError(f"Kaggle has no dataset {slug!r} (HTTP 404); check the slug at {url}")
    if status is not None:
        return DatasetError(f"Kaggle answered HTTP {status} for {slug!r} ({detail}). {by_hand}")
    import zipfile

    if isinstance(exc, zipfile.BadZipFile):
        return DatasetError(
            f"the archive of {slug!r} in {os.fspath(root)} is incomplete or corrupt ({detail}); "
            "run again with force=True to download it afresh"
        )
    if isinstance(exc, (OSError, TimeoutError)) or "connect" in type(exc).__name__.lower():
        if isinstance(exc, OSError) and exc.errno is not None and exc.filename is not None:
            return DatasetError(f"cannot write the download of {slug!r}: {detail}")
        return DatasetError(
            f"cannot reach Kaggle to download {slug!r}: the network or kaggle.com is "
            f"unreachable ({detail}). Check the connection or proxy and try again. {by_hand}"
        )
    return DatasetError(f"downloading {slug!r} from Kaggle failed ({detail}). {by_hand}")


class KaggleDataset(BaseDataset):
    """A Kaggle dataset downloaded into ``root`` (once), read as an image folder.

    Constructing it downloads the dataset unless a completed download is
    already in ``root`` (see :func:`download_kaggle_dataset`); the items are
    then those of :class:`ImageFolder` over ``root`` (ids are relative paths,
    ``label`` the first-level folder). Datasets with a metadata table are
    better read with their own adapter (:class:`FashionProductImages`) or
    :class:`CsvDataset` over :attr:`root`.

    Parameters
    ----------
    slug
        The dataset, ``owner/name`` as in its URL.
    root
        Directory to download into.
    unzip
        Extract the archive after downloading.
    force
        Download again even when a completed download is there.
    api
        A Kaggle client (default: the official one); see :func:`download_kaggle_dataset`.
    quiet
        Hide the client's progress bar.
    extensions
        Image file extensions, as for :class:`ImageFolder`.

    Examples
    --------
    >>> ds = KaggleDataset("owner/some-image-dataset", "data/some")  # doctest: +SKIP
    >>> rec = Recommender().fit(ds)  # doctest: +SKIP
    """

    def __init__(
        self,
        slug: str,
        root: str | os.PathLike[str],
        *,
        unzip: bool = True,
        force: bool = False,
        api: Any = None,
        quiet: bool = True,
        extensions: Iterable[str] | None = None,
    ) -> None:
        self.slug = slug
        self.unzip = unzip
        self.extensions = extensions
        self.root = download_kaggle_dataset(
            slug, root, unzip=unzip, force=force, api=api, quiet=quiet
        )
        self._folder: ImageFolder | None = None

    @property
    def folder(self) -> ImageFolder:
        """Return the :class:`ImageFolder` over the downloaded files (scanned on first use)."""
        if self._folder is None:
            self._folder = ImageFolder(self.root, extensions=self.extensions)
        return self._folder

    def __len__(self) -> int:
        return len(self.folder)

    def _item_id(self, index: int) -> ItemId:
        return self.folder._item_id(index)

    def _item_image(self, index: int) -> str:
        return self.folder._item_image(index)

    def _item_metadata(self, index: int) -> dict[str, Any]:
        return self.folder._item_metadata(index)

    def _describe(self) -> str:
        return f"{self.slug!r}, {os.fspath(self.root)!r}"


__all__ = [
    "MARKER_NAME",
    "KaggleCredentials",
    "KaggleCredentialsWarning",
    "KaggleDataset",
    "check_permissions",
    "dataset_url",
    "download_kaggle_dataset",
    "find_kaggle_credentials",
    "is_downloaded",
    "kaggle_config_dirs",
    "redact",
]
