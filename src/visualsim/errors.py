"""Exceptions raised by visualsim.

Every error the library raises on purpose is a :class:`VisualsimError`, so a
caller can catch them all at once; each subclass also derives from the builtin
exception a Python programmer would expect (``ValueError``, ``KeyError``, ...).
Messages name the input that was wrong and, where there is one, the fix.

Each class also carries what a front end answers when it reaches one: its HTTP
status (``http_status``, what ``visualsim serve`` replies) and its exit code on the
command line (``exit_code``: 1 a problem with the data, 2 a usage problem). The
HTTP app and the CLI read these attributes; they keep no table of their own.

============================  ===========  =========
class                         http_status  exit_code
============================  ===========  =========
VisualsimError (and others)   422          1
FilterError (``WhereError``)  400          2
UnknownIdError                404          2
DuplicateIdError              409          2
NotFittedError                409          1
CatalogError                  409          1
CatalogConflictError          409          1
WeightsUnavailableError       503          1
============================  ===========  =========
"""

from __future__ import annotations

from typing import Any, ClassVar

EXIT_DATA = 1
"""CLI exit code of a problem with the data (a damaged catalogue, an unreadable image)."""
EXIT_USAGE = 2
"""CLI exit code of a usage problem (a bad argument, an id not in the catalogue)."""


class VisualsimError(Exception):
    """Base class of every error visualsim raises on purpose.

    Attributes
    ----------
    http_status : int
        The status the HTTP app answers with (class attribute; 422 unless a
        subclass says otherwise).
    exit_code : int
        The exit code of the ``visualsim`` command (class attribute; 1, a
        problem with the data, unless a subclass says otherwise).
    """

    http_status: ClassVar[int] = 422
    exit_code: ClassVar[int] = EXIT_DATA


class ImageLoadError(VisualsimError, ValueError):
    """An input could not be turned into an RGB image.

    Parameters
    ----------
    source
        The input that failed (a path, ``<bytes>``, an array description ...).
    reason
        What was wrong with it, in words.
    """

    def __init__(self, source: Any, reason: str) -> None:
        self.source = describe_source(source)
        self.reason = reason
        super().__init__(f"cannot load image {self.source}: {reason}")

    def __reduce__(self) -> tuple[Any, ...]:  # keep picklable for worker processes
        return (type(self), (self.source, self.reason))


class WeightsUnavailableError(VisualsimError, RuntimeError):
    """Pretrained weights could not be found or downloaded."""

    http_status = 503  # the server's problem, not the client's


class InvalidVectorsError(VisualsimError, ValueError):
    """Vectors have the wrong shape, dtype, or contain NaN/inf."""


class DimensionMismatch(InvalidVectorsError):
    """Vectors do not have the dimension the index or catalogue expects."""


class InvalidIdError(VisualsimError, ValueError):
    """An id is neither a string nor an integer, or ids were not given as a sequence."""


class DuplicateIdError(VisualsimError, ValueError):
    """An id was given twice, or is already stored."""

    http_status = 409
    exit_code = EXIT_USAGE


class DuplicateImageError(VisualsimError, ValueError):
    """New images look like items already in the catalogue (``add(duplicates="error")``)."""


class UnknownIdError(VisualsimError, KeyError):
    """An id is not stored."""

    http_status = 404
    exit_code = EXIT_USAGE

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class NotFittedError(VisualsimError, RuntimeError):
    """An index or recommender was used before it holds any data or was trained."""

    http_status = 409


class ConfigError(VisualsimError, ValueError):
    """A configuration (or a registry name) is not valid."""


class FilterError(ConfigError):
    """A ``where`` filter that cannot be parsed or does not fit the catalogue's fields.

    ``WhereError`` is another name of this class.
    """

    http_status = 400
    exit_code = EXIT_USAGE


WhereError = FilterError
"""The older name of :class:`FilterError` (the HTTP app's); the same class."""


class CatalogError(VisualsimError):
    """A saved catalogue or index on disk is missing, corrupt, or incompatible."""

    http_status = 409


class CatalogConflictError(CatalogError):
    """Another writer saved the catalogue folder since this recommender loaded or saved it.

    Raised by ``Recommender.save(path, overwrite=True)`` (``on_conflict="error"``,
    the default) instead of replacing what the other writer saved; the folder is
    left as that writer saved it. A :class:`CatalogError`, so handlers of that
    class catch it too (HTTP 409, exit code 1).

    Parameters
    ----------
    message
        The whole message: the folder, the generations and how to resolve it.
    path
        The catalogue folder.
    expected
        The generation this recommender knows (loaded from or last saved).
    found
        The generation the folder holds now.
    """

    http_status = 409

    def __init__(self, message: str, *, path: str = "", expected: int = 0, found: int = 0) -> None:
        self.path = path
        self.expected = expected
        self.found = found
        super().__init__(message)


class FormatVersionError(CatalogError):
    """A file was written by a newer (or unknown) format version."""


class DatasetError(VisualsimError):
    """A dataset is missing, malformed, or cannot be downloaded."""


def describe_source(source: Any) -> str:
    """Return a short, log-safe description of an image source."""
    import os

    if isinstance(source, str):
        return repr(source)
    if isinstance(source, os.PathLike):
        return repr(os.fspath(source))
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<{len(source)} bytes>"
    shape = getattr(source, "shape", None)
    dtype = getattr(source, "dtype", None)
    if shape is not None and dtype is not None:
        return f"<array shape={tuple(shape)} dtype={dtype}>"
    name = getattr(source, "name", None)
    if isinstance(name, str):
        return repr(name)
    return f"<{type(source).__name__}>"


__all__ = [
    "EXIT_DATA",
    "EXIT_USAGE",
    "CatalogConflictError",
    "CatalogError",
    "ConfigError",
    "DatasetError",
    "DimensionMismatch",
    "DuplicateIdError",
    "DuplicateImageError",
    "FilterError",
    "FormatVersionError",
    "ImageLoadError",
    "InvalidIdError",
    "InvalidVectorsError",
    "NotFittedError",
    "UnknownIdError",
    "VisualsimError",
    "WeightsUnavailableError",
    "WhereError",
    "describe_source",
]
