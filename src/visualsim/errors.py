"""Exceptions raised by visualsim.

Every error the library raises on purpose is a :class:`VisualsimError`, so a
caller can catch them all at once; each subclass also derives from the builtin
exception a Python programmer would expect (``ValueError``, ``KeyError``, ...).
Messages name the input that was wrong and, where there is one, the fix.
"""

from __future__ import annotations

from typing import Any


class VisualsimError(Exception):
    """Base class of every error visualsim raises on purpose."""


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


class InvalidVectorsError(VisualsimError, ValueError):
    """Vectors have the wrong shape, dtype, or contain NaN/inf."""


class DimensionMismatch(InvalidVectorsError):
    """Vectors do not have the dimension the index or catalogue expects."""


class InvalidIdError(VisualsimError, ValueError):
    """An id is neither a string nor an integer, or ids were not given as a sequence."""


class DuplicateIdError(VisualsimError, ValueError):
    """An id was given twice, or is already stored."""


class DuplicateImageError(VisualsimError, ValueError):
    """New images look like items already in the catalogue (``add(duplicates="error")``)."""


class UnknownIdError(VisualsimError, KeyError):
    """An id is not stored."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class NotFittedError(VisualsimError, RuntimeError):
    """An index or recommender was used before it holds any data or was trained."""


class ConfigError(VisualsimError, ValueError):
    """A configuration (or a registry name) is not valid."""


class CatalogError(VisualsimError):
    """A saved catalogue or index on disk is missing, corrupt, or incompatible."""


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
    "CatalogError",
    "ConfigError",
    "DatasetError",
    "DimensionMismatch",
    "DuplicateIdError",
    "DuplicateImageError",
    "FormatVersionError",
    "ImageLoadError",
    "InvalidIdError",
    "InvalidVectorsError",
    "NotFittedError",
    "UnknownIdError",
    "VisualsimError",
    "WeightsUnavailableError",
    "describe_source",
]
