"""The one table of on-disk formats and the one writer and reader of their manifests.

Part of :mod:`visualsim.io`; :mod:`visualsim.persistence` re-exports every public name.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ..errors import CatalogError, ConfigError, FormatVersionError
from .fields import _shown, field_str, require
from .paths import (
    _HEX64,
    MANIFEST,
    MAX_FILES,
    MAX_JSON_DEPTH,
    PathLike,
    _check_real_dir,
    _err_path,
    list_files,
    safe_child,
)
from .reads import (
    read_json,
    sha256_file,
)
from .writes import write_json_atomic

# --------------------------------------------------------------------------- manifests

TAG_PREFIX = "visualsim."
"""Every manifest's ``format`` is ``"visualsim.<kind>"``."""

MAX_MANIFEST_BYTES = 64 * 1024 * 1024
"""Default size limit of a manifest read by :func:`read_manifest` (64 MiB)."""


@dataclass(frozen=True)
class Format:
    """One on-disk format: its kind, version, manifest file and the old tags it still reads.

    Attributes
    ----------
    kind
        What the folder holds (``"catalog"``, ``"index"`` ...); its tag is
        ``"visualsim.<kind>"``.
    version
        The ``format_version`` this library writes, and the newest it reads.
    name
        The manifest's file name in the folder.
    old_tags
        Spellings of the tag that shipped before the one scheme; a manifest
        carrying one still loads (read as this kind, ``format`` set to :attr:`tag`).
    """

    kind: str
    version: int
    name: str = MANIFEST
    old_tags: tuple[str, ...] = ()

    @property
    def tag(self) -> str:
        """``"visualsim.<kind>"``: what :func:`write_manifest` writes."""
        return TAG_PREFIX + self.kind

    @property
    def tags(self) -> tuple[str, ...]:
        """The tag and the old spellings :func:`read_manifest` accepts, current first."""
        return (self.tag, *self.old_tags)


FORMATS: Mapping[str, Format] = MappingProxyType(
    {
        f.kind: f
        for f in (
            Format("catalog", 3, old_tags=("visualsim-catalog",)),
            Format("partitions", 1, old_tags=("visualsim-partitions",)),
            Format("index", 1),
            Format("reducer.pca", 1, name="reducer.json"),
            Format("adapter", 2, old_tags=("visualsim-adapter",)),
            Format("shards", 1, old_tags=("visualsim-shards",)),
            Format("checkpoint", 2, name="progress.json"),
            Format("openvino.model", 1, name="meta.json"),
            Format("openvino.decision", 1, name="decision.json"),
        )
    }
)
"""Every on-disk format visualsim writes, by kind: the one table of tags, versions,
manifest names and the old tag spellings still read (``visualsim-catalog`` and the
other hyphenated tags written before the ``visualsim.<kind>`` scheme)."""


def format_of(kind: str) -> Format:
    """Return the :class:`Format` of ``kind`` (a key of :data:`FORMATS`).

    Raises
    ------
    ConfigError
        ``kind`` is not a format visualsim knows.

    Examples
    --------
    >>> format_of("catalog").tag, format_of("catalog").old_tags
    ('visualsim.catalog', ('visualsim-catalog',))
    """
    fmt = FORMATS.get(kind) if isinstance(kind, str) else None
    if fmt is None:
        raise ConfigError(f"unknown on-disk format {str(kind)[:80]!r}; known: {sorted(FORMATS)}")
    return fmt


def _format_args(
    kind: str | None, tag: str | Sequence[str] | None, version: int | None, name: str | None
) -> tuple[tuple[str, ...], int | None, str, Format | None]:
    """``(accepted tags, version, manifest name, format)`` of a call by kind or by tag."""
    if kind is not None:
        if tag is not None:
            raise ConfigError("pass kind= or tag=, not both")
        fmt = format_of(kind)
        return fmt.tags, fmt.version if version is None else version, name or fmt.name, fmt
    if tag is None:
        raise ConfigError("pass the kind of the folder (a key of visualsim.persistence.FORMATS)")
    tags = (tag,) if isinstance(tag, str) else tuple(tag)
    return tags, version, name or MANIFEST, None


def read_manifest(
    folder: PathLike,
    kind: str | None = None,
    *,
    max_bytes: int = MAX_MANIFEST_BYTES,
    verify: bool = True,
    name: str | None = None,
    required: Sequence[str] = (),
    upgrade: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    must_exist: bool = True,
    tag: str | Sequence[str] | None = None,
    max_version: int | None = None,
) -> dict[str, Any]:
    """Return a folder's manifest after checking tag, version, files and checksums.

    Parameters
    ----------
    folder
        The saved folder (a symbolic link is refused).
    kind
        The format the folder must hold, a key of :data:`FORMATS`
        (``"catalog"``, ``"index"`` ...): the manifest must carry its tag
        ``"visualsim.<kind>"`` or one of its listed old spellings (returned
        with ``format`` set to the current tag), and a ``format_version`` up
        to the format's.
    max_bytes
        Refuse a larger manifest before reading it (64 MiB).
    verify
        Check every listed file's SHA-256 (``False``: only that each exists
        and is a regular file inside the folder).
    name
        The manifest's file name (default: the format's).
    required
        More fields that must be present.
    upgrade
        Called with a manifest of an accepted tag and version before its
        fields are checked (to fill ``files`` from an older layout, say).
    must_exist
        ``False``: a listed file may be missing (a writer resuming); its name
        must still be safe, and ``verify`` is then ignored.
    tag, max_version
        Instead of ``kind``: the accepted tags (the first the current one)
        and the newest version, for a format outside :data:`FORMATS`.

    Raises
    ------
    CatalogError
        Naming the file and what is wrong: not a folder, no manifest, too
        large, nested more than 64 levels, not JSON, not an object, another
        format, ``files`` not an object of name -> 64 hex digits, a name
        outside the folder, a missing or changed file.
    FormatVersionError
        ``format_version`` is newer than this library reads (or not an integer >= 1).
    ConfigError
        ``kind`` is not a known format.

    Examples
    --------
    >>> import json, tempfile, pathlib
    >>> old = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (old / "manifest.json").write_text(json.dumps(
    ...     {"format": "visualsim-partitions", "format_version": 1, "files": {}}))
    >>> read_manifest(old, "partitions")["format"]  # an old spelling, read as this kind
    'visualsim.partitions'
    """
    tags, newest, name, fmt = _format_args(kind, tag, max_version, name)
    if newest is None:
        raise ConfigError("read_manifest(tag=...) needs max_version=")
    root = Path(folder)
    try:
        st = os.lstat(root)
    except FileNotFoundError:
        raise CatalogError(f"{_err_path(root)} does not exist") from None
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        _check_real_dir(root)
    try:
        file = safe_child(root, name)
    except CatalogError:
        if not (root / name).exists() and not (root / name).is_symlink():
            raise CatalogError(
                f"{_err_path(root)} is not a saved {tags[0]} folder: {name} is missing"
            ) from None
        raise
    manifest = read_json(file, max_bytes=max_bytes, max_depth=MAX_JSON_DEPTH)
    where = _err_path(file)
    if not isinstance(manifest, dict):
        raise CatalogError(f"{where} is not a JSON object; the file is damaged")
    found = manifest.get("format")
    if found not in tags:
        raise CatalogError(
            f"{where} is not a {tags[0]} manifest (format {_shown(found)}); "
            "pass the folder that was saved as one"
        )
    version = manifest.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise FormatVersionError(
            f"{where}: field 'format_version' must be an integer >= 1, got {_shown(version)}; "
            "the file is damaged"
        )
    if version > newest:
        raise FormatVersionError(
            f"{_err_path(root)} was written in {tags[0]} format version {version:,}"
            f" by visualsim {str(manifest.get('library_version', '?'))[:40]}, but this "
            f"visualsim reads versions up to {newest}; upgrade visualsim to load it"
        )
    if fmt is not None:
        manifest["format"] = fmt.tag  # an old spelling reads as the current one
    if upgrade is not None:
        manifest = upgrade(manifest)
    if "library_version" in manifest:
        field_str(where, "library_version", manifest["library_version"], max_len=200)
    for key in ("files", *required):
        require(where, manifest, key)
    check_files(root, manifest["files"], verify=verify, source=where, must_exist=must_exist)
    return manifest


def check_files(
    root: PathLike,
    files: Any,
    *,
    verify: bool = True,
    source: str | None = None,
    must_exist: bool = True,
) -> dict[str, str]:
    """Check a manifest's ``files`` mapping (name -> SHA-256) against the folder.

    Raises
    ------
    CatalogError
        ``files`` is not an object of string -> 64 lowercase hex digits, lists
        more than :data:`MAX_FILES`, or names a file outside ``root``, missing,
        or (``verify``) with another checksum.
    """
    base = Path(root)
    where = source or f"manifest of {_err_path(base)}"
    if not isinstance(files, dict):
        raise CatalogError(
            f"{where}: field 'files' must be an object of file name -> sha256, got "
            f"{type(files).__name__}; the file is damaged"
        )
    if len(files) > MAX_FILES:
        raise CatalogError(f"{where}: field 'files' lists {len(files):,} files; too many")
    checked: list[tuple[Path, str]] = []
    for rel, digest in files.items():
        if not isinstance(digest, str) or not _HEX64.fullmatch(digest):
            raise CatalogError(
                f"{where}: field 'files' gives {_shown(digest)} as the sha256 of {rel[:200]!r}; "
                "expected 64 hex digits"
            )
        checked.append((safe_child(base, rel, must_exist=must_exist), digest))
    if verify and must_exist:
        for file, ok in zip(
            (f for f, _ in checked), _digests_match(checked), strict=True
        ):  # in the listed order: the first bad file is the one named
            if not ok:
                raise CatalogError(
                    f"{_err_path(file)} does not match its checksum in {where} (truncated or "
                    "modified after saving); restore it or save the folder again from its source"
                )
    return files


def _digests_match(checked: Sequence[tuple[Path, str]]) -> list[bool]:
    """Whether each file's SHA-256 is its digest; large folders are hashed on several threads.

    ``hashlib`` releases the GIL while it hashes, so a catalogue's vectors and
    index are read and hashed at once (reopen time is what a server restart costs).
    """
    sizes = [_size(f) for f, _ in checked]
    workers = min(4, os.cpu_count() or 1, len(checked))
    if workers < 2 or sum(sizes) < _PARALLEL_HASH_BYTES:
        return [sha256_file(f) == d for f, d in checked]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda pair: sha256_file(pair[0]) == pair[1], checked))


def _size(file: Path) -> int:
    try:
        return file.stat().st_size
    except OSError:
        return 0  # sha256_file names the problem


_PARALLEL_HASH_BYTES = 64 << 20
"""Total size from which a folder's files are hashed on several threads."""


def write_manifest(
    folder: PathLike,
    kind: str | None = None,
    payload: Mapping[str, Any] | None = None,
    *,
    files: Mapping[str, str] | None = None,
    name: str | None = None,
    tag: str | None = None,
    version: int | None = None,
    fields: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write a folder's manifest (atomically) and return the manifest written.

    The manifest is ``{"format": "visualsim.<kind>", "format_version": ...,
    "library_version": ..., **payload, "files": files}``.

    Parameters
    ----------
    folder
        The folder the manifest describes.
    kind
        Its format, a key of :data:`FORMATS`: gives the tag, the version and
        the manifest's file name.
    payload
        The format's own fields (JSON types).
    files
        Relative name -> SHA-256 of every file the folder holds; ``None``
        hashes every regular file under ``folder`` but the manifest itself.
    name
        The manifest's file name (default: the format's).
    tag, version, fields
        Instead of ``kind`` and ``payload``: the tag and version of a format
        outside :data:`FORMATS`, and its fields.

    Raises
    ------
    ConfigError
        ``kind`` is not a known format, or neither ``kind`` nor ``tag`` is given.
    """
    from .._version import __version__

    tags, number, name, _ = _format_args(kind, tag, version, name)
    if number is None:
        raise ConfigError("write_manifest(tag=...) needs version=")
    root = Path(folder)
    if files is None:
        files = {rel: sha256_file(root / rel) for rel in list_files(root) if rel != name}
    own = {**dict(fields or {}), **dict(payload or {})}
    manifest: dict[str, Any] = {
        "format": tags[0],
        "format_version": int(number),
        "library_version": __version__,
        **{k: v for k, v in own.items() if k not in ("format", "format_version", "files")},
        "files": dict(files),
    }
    write_json_atomic(root / name, manifest)
    return manifest
