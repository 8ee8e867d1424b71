"""Read numpy arrays out of a pickle without running any code it names.

A pickle can call any importable function while it loads, so an untrusted one
(a weights file from a package, a download) must never reach plain
``pickle``. :class:`ArrayUnpickler` admits only the handful of numpy
callables that rebuild arrays and dtypes; everything else — ``os.system``,
``builtins.eval``, a class of the library that wrote the file — is refused with
:class:`UnsafePickleError` before it is imported. Containers (dicts, lists,
tuples), strings, bytes and numbers need no callable and load as usual.
"""

from __future__ import annotations

import io
import os
import pickle
from typing import Any, BinaryIO

import numpy as np

from .errors import VisualsimError

# numpy moved its pickle helpers from ``numpy.core`` to ``numpy._core`` (2.0);
# take them from numpy's own ``__reduce_ex__`` rather than import either module.
_reconstruct: Any = np.zeros(1).__reduce_ex__(2)[0]
_frombuffer: Any = np.zeros(1).__reduce_ex__(5)[0]


class UnsafePickleError(VisualsimError, pickle.UnpicklingError):
    """A pickle names a callable other than numpy's array reconstruction.

    Parameters
    ----------
    module, name
        The global the pickle asked for, e.g. ``"os"`` and ``"system"``.
    """

    def __init__(self, module: str, name: str) -> None:
        self.module = module
        self.name = name
        super().__init__(
            f"refusing to unpickle global {module}.{name}: only numpy arrays may be "
            "loaded from this pickle, so it may run code or has the wrong content"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.module, self.name))


def _numeric_dtype(*args: Any) -> np.dtype[Any]:
    """``numpy.dtype`` that refuses object dtypes (whose items could be anything)."""
    dtype = np.dtype(*args)
    if dtype.hasobject:
        raise UnsafePickleError("numpy", f"dtype({dtype})")
    return dtype


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    """``_codecs.encode`` as protocols 0-2 use it for array bytes: latin-1 only."""
    if encoding.replace("_", "-").lower() not in ("latin-1", "latin1"):
        raise UnsafePickleError("_codecs", f"encode(..., {encoding!r})")
    return text.encode("latin-1")


def _empty_bytes() -> bytes:
    """``bytes()`` as protocols 0-2 use it for an empty array's data; no arguments."""
    return b""


ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _numeric_dtype,
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("_codecs", "encode"): _latin1_encode,
    ("__builtin__", "bytes"): _empty_bytes,
    ("builtins", "bytes"): _empty_bytes,
}
"""Every global a pickle may name, mapped to what it gets instead of an import:
numpy's array and dtype reconstruction (numpy 1.x and 2.x spellings, pickle
protocols 0-5) and how protocols 0-2 spell an array's bytes (latin-1 text,
or ``bytes()`` when empty)."""


class ArrayUnpickler(pickle.Unpickler):
    """A :class:`pickle.Unpickler` that builds numpy arrays and plain data only.

    Globals outside :data:`ALLOWED_GLOBALS` raise :class:`UnsafePickleError`
    without being imported; so do object dtypes and persistent ids.

    Examples
    --------
    >>> import io, pickle
    >>> data = pickle.dumps({"w": np.eye(2, dtype=np.float32)})
    >>> ArrayUnpickler(io.BytesIO(data)).load()["w"].dtype
    dtype('float32')
    """

    def find_class(self, module: str, name: str) -> Any:
        """Return the admitted stand-in for ``module.name``, or refuse it."""
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(module, name) from None

    def persistent_load(self, pid: Any) -> Any:
        """Refuse persistent ids: they would hand objects in from outside."""
        raise UnsafePickleError("<persistent id>", repr(pid)[:80])


def unpickle_arrays(source: str | os.PathLike[str] | bytes | BinaryIO) -> Any:
    """Return the object stored in a pickle of numpy arrays and plain data.

    Parameters
    ----------
    source
        A path to the pickle, its bytes, or a binary file open for reading.

    Returns
    -------
    Any
        What was pickled: typically a dict or list of ``numpy.ndarray``.

    Raises
    ------
    UnsafePickleError
        If the pickle names any callable other than numpy's array
        reconstruction (nothing it names is imported or called).
    OSError
        If the file cannot be read.
    pickle.UnpicklingError, EOFError, ValueError
        If the data is not a well-formed pickle.

    Examples
    --------
    >>> import pickle
    >>> unpickle_arrays(pickle.dumps([np.arange(3)]))[0].tolist()
    [0, 1, 2]
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        return ArrayUnpickler(io.BytesIO(source)).load()
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as file:
            return ArrayUnpickler(file).load()
    return ArrayUnpickler(source).load()


__all__ = ["ALLOWED_GLOBALS", "ArrayUnpickler", "UnsafePickleError", "unpickle_arrays"]
