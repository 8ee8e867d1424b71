"""Download Kaggle datasets with the official client, safely and only once.

Credentials come from where the ``kaggle`` client looks for them: a
``kaggle.json`` file in ``$KAGGLE_CONFIG_DIR`` or ``~/.kaggle`` (or
``~/.config/kaggle``), the ``KAGGLE_USERNAME`` and ``KAGGLE_KEY`` environment
variables, or a newer access token (``KAGGLE_API_TOKEN``,
``~/.kaggle/access_token``). This module checks that one of them exists before
anything is downloaded, warns when ``kaggle.json`` is readable by other users,
and never prints, logs, stores or repeats the key: messages from the client
and from failures are scrubbed of it before they reach a log or an exception.

A completed download leaves a marker file in the target directory; while the
marker is there, asking again downloads nothing (no credentials or network
needed), and an interrupted download, which leaves no marker, is redone (the
client resumes a partial archive where the server allows it).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import stat
import time
import warnings
from collections.abc import Iterable
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


def _secrets() -> list[str]:
    """Return the secret values that must never appear in a message (read, never kept)."""
    found = [os.environ.get("KAGGLE_KEY", ""), os.environ.get("KAGGLE_API_TOKEN", "")]
    for directory in kaggle_config_dirs():
        with contextlib.suppress(OSError, ValueError, AttributeError):
            found.append(str(json.loads((directory / "kaggle.json").read_text("utf-8"))["key"]))
    for name in ("access_token", "access_token.txt"):
        with contextlib.suppress(OSError):
            found.append((Path.home() / ".kaggle" / name).read_text("utf-8").strip())
    return [s for s in found if len(s) >= 4]


def redact(text: str, secrets: Iterable[str]) -> str:
    """Return ``text`` with every secret replaced by ``***``.

    Parameters
    ----------
    text
        A message that may contain a secret.
    secrets
        The values to remove.
    """
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


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
    client = api if api is not None else _default_api(secrets)
    logger.info(
        "downloading Kaggle dataset %s into %s (credentials: %s)",
        slug, target, credentials.describe(),
    )  # fmt: skip
    captured = io.StringIO()
    failure: BaseException | None = None
    try:
        with contextlib.redirect_stdout(captured):
            client.authenticate()
            client.dataset_download_files(
                slug, path=os.fspath(target), unzip=unzip, quiet=quiet, force=force
            )
    except (Exception, SystemExit) as exc:  # the client calls exit(1) on bad credentials
        failure = exc
    _log_client_output(captured.getvalue(), secrets)
    if failure is not None:
        # raised outside the `except` so that an original exception quoting the key is
        # neither chained nor kept as __context__
        error = _download_error(failure, slug, target, credentials, secrets)
        text = f"{failure!r} {failure}"
        if redact(text, secrets) == text and not isinstance(failure, SystemExit):
            raise error from failure
        raise error
    marker.write_text(
        json.dumps(
            {"slug": slug, "unzip": unzip, "completed": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        )
        + "\n",
        encoding="utf-8",
    )
    logger.info("Kaggle dataset %s downloaded into %s", slug, target)
    return target


def _log_client_output(text: str, secrets: list[str]) -> None:
    for line in text.splitlines():
        if line.strip():
            logger.info("kaggle: %s", redact(line.strip(), secrets))


def _default_api(secrets: list[str]) -> Any:
    """Return the official client; importing ``kaggle`` prints and authenticates, so hush it."""
    captured = io.StringIO()
    try:
        with contextlib.redirect_stdout(captured):
            from kaggle.api.kaggle_api_extended import KaggleApi

            return KaggleApi()
    except ImportError:
        raise DatasetError(
            "downloading from Kaggle needs the official client: pip install 'visualsim[kaggle]' "
            "(or pip install kaggle)"
        ) from None
    finally:
        _log_client_output(captured.getvalue(), secrets)


def _download_error(
    exc: BaseException,
    slug: str,
    root: Path,
    credentials: KaggleCredentials,
    secrets: list[str],
) -> DatasetError:
    url = dataset_url(slug)
    by_hand = (
        f"To download by hand: open {url}, click 'Download', unzip the archive into "
        f"{os.fspath(root)} and create the empty file {os.fspath(root / MARKER_NAME)}."
    )
    status = getattr(getattr(exc, "response", None), "status_code", None)
    detail = redact(f"{type(exc).__name__}: {exc}", secrets)
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
