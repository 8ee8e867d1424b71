"""Read plain numeric numpy arrays out of a pickle without running anything it names.

A pickle is a program: it can call any importable function, and numpy's own
reconstruction functions, given crafted arguments, build arrays whose items are
pointers (object dtype), whose data lies before their buffer (a negative
offset) or whose fields lie past their item — reading one crashes the process.
So an untrusted pickle (a weights file from a package, a download) never
reaches :mod:`pickle` here. :func:`unpickle_arrays` interprets the opcodes
itself (parsed by :func:`pickletools.genops`, which only reads bytes) with a
small stack machine that

* understands only data opcodes: numbers, strings, bytes, lists, tuples,
  dicts, sets, the memo, and ``GLOBAL``/``REDUCE``/``BUILD`` in the one shape
  numpy writes for an array (``INST``, ``OBJ``, ``NEWOBJ``, ``NEWOBJ_EX``,
  extension codes, persistent ids and out-of-band buffers are refused);
* maps the few globals numpy's pickles name (:data:`ALLOWED_GLOBALS`) to
  stand-ins written here — nothing is imported, no numpy callable is called
  with the pickle's arguments, nothing's ``__setstate__`` but ours runs;
* builds each array itself from a copy of the bytes in the pickle, after
  checking that its dtype is one of :data:`NUMERIC_DTYPES` (bool, signed and
  unsigned integers, float16/32/64 — never object, string, structured or void)
  and that its shape times the item size is exactly the number of bytes given;
* bounds its work by the input: the bytes it copies are budgeted against the
  pickle's own size, memo indices are dictionary keys (no table sized by a
  claimed index), nesting is walked without recursion, and dict keys and set
  members are restricted to strings, bytes, bounded integers, booleans and
  ``None``.

Everything it refuses raises :class:`UnsafePickleError` (a
:class:`~visualsim.errors.VisualsimError` and a :class:`pickle.UnpicklingError`)
naming the input and what was wrong; it never raises anything else on bad data.
"""

from __future__ import annotations

import codecs
import io
import math
import os
import pickle
import pickletools
import re
import stat
from collections.abc import Iterator
from typing import Any, BinaryIO

import numpy as np

from .errors import VisualsimError

MAX_PICKLE_BYTES = 1 << 30
"""Largest pickle :func:`unpickle_arrays` reads by default (1 GiB)."""

MAX_NDIM = 32
"""Most dimensions an unpickled array may have."""

NUMERIC_DTYPES: frozenset[np.dtype[Any]] = frozenset(
    np.dtype(code)
    for code in ("?", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8")
)
"""The only array dtypes an unpickled array may have (native byte order)."""

for _codec in ("raw-unicode-escape", "utf-8", "latin-1", "ascii"):
    codecs.lookup(_codec)  # pickletools decodes with these: import them now, not mid-load

_DTYPE_CODE = re.compile(r"[<>=|]?(?:b1|\?|[iu][1248]|f[248])")
_MAX_KEY_INT = (1 << 61) - 2  # below the modulus of int hashing: no crafted collisions
_COPY_ALLOWANCE = 1 << 20  # bytes the stand-ins may copy beyond twice the input


class UnsafePickleError(VisualsimError, pickle.UnpicklingError):
    """A pickle holds something other than plain numeric arrays and plain data.

    Parameters
    ----------
    reason
        What was refused, in words (``"global os.system"``, ``"opcode NEWOBJ"``).
    source
        The input, e.g. the file's path (default ``"pickle data"``).
    module, name
        For a refused global: what the pickle asked for, e.g. ``"os"`` and
        ``"system"``; empty otherwise.
    """

    def __init__(
        self, reason: str, *, source: str = "pickle data", module: str = "", name: str = ""
    ) -> None:
        self.reason = reason
        self.source = source
        self.module = module
        self.name = name
        super().__init__(
            f"refusing to unpickle {source}: {reason}. Only plain numeric numpy arrays "
            "(bool, int, uint, float16/32/64) and plain data (numbers, strings, lists, "
            "tuples, dicts) are read from it, so it may run code or is not the file you "
            "meant; use the original file, or convert it to .npy/.npz"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            _rebuild_error,
            (type(self), self.reason, self.source, self.module, self.name),
        )


class PickleFormatError(UnsafePickleError):
    """The data is not a well-formed pickle (truncated, corrupt, or not a pickle at all)."""


def _rebuild_error(
    cls: type[UnsafePickleError], reason: str, source: str, module: str, name: str
) -> UnsafePickleError:
    return cls(reason, source=source, module=module, name=name)


class _Refused(Exception):
    """Internal: a refusal before the source is known; becomes UnsafePickleError."""

    def __init__(self, reason: str, *, module: str = "", name: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.module = module
        self.name = name


# -- stand-ins for the globals numpy's pickles name ---------------------------
class _Global:
    """What ``find_class`` returns: a named, immutable stand-in, never the real thing."""

    __slots__ = ("_call", "_label")

    def __init__(self, label: str, call: Any) -> None:
        self._label = label
        self._call = call

    def __call__(self, *args: Any) -> Any:
        if self._call is None:
            raise _Refused(
                f"{self._label} called directly (an array over the pickle's own buffer, offset "
                "and dtype; numpy never writes that)"
            )
        return self._call(*args)

    def __setstate__(self, state: Any) -> None:  # pragma: no cover - BUILD targets are checked
        raise _Refused(f"BUILD on {self._label}")

    def __repr__(self) -> str:
        return f"<stand-in {self._label}>"


class _Pending:
    """An object ``REDUCE`` made that only a following ``BUILD`` completes."""

    __slots__ = ("built", "memo_keys")

    def __init__(self) -> None:
        self.built = False
        self.memo_keys: list[Any] = []


class _PendingArray(_Pending):
    """``numpy.core.multiarray._reconstruct(ndarray, (0,), b'b')``: an array awaiting state."""

    __slots__ = ()


class _PendingDType(_Pending):
    """``numpy.dtype('f4', False, True)``: a dtype awaiting its byte order."""

    __slots__ = ("code",)

    def __init__(self, code: str) -> None:
        super().__init__()
        self.code = code

    def native(self) -> np.dtype[Any]:
        return np.dtype(self.code.lstrip("<>=|"))


def _is_int(value: Any) -> bool:
    return type(value) is int


def _reconstruct(subtype: Any, shape: Any, typecode: Any) -> _PendingArray:
    if subtype is not _NDARRAY:
        raise _Refused("_reconstruct of anything but numpy.ndarray")
    if type(shape) is not tuple or shape != (0,) or type(typecode) is not bytes:
        raise _Refused("_reconstruct with arguments numpy never writes")
    return _PendingArray()


def _dtype(code: Any, align: Any = False, copy: Any = True) -> _PendingDType:
    if not isinstance(code, str) or not _DTYPE_CODE.fullmatch(code):
        shown = repr(code)[:40] if isinstance(code, (str, bytes, int, float)) else type(code)
        raise _Refused(f"dtype {shown}: only bool, int8-64, uint8-64 and float16/32/64 are allowed")
    if not all(type(flag) in (bool, int) and flag in (0, 1) for flag in (align, copy)):
        raise _Refused("numpy.dtype with arguments numpy never writes")
    return _PendingDType(code)


def _latin1_encode(text: Any, encoding: Any = "utf-8") -> bytes:
    """``_codecs.encode(text, 'latin1')`` as protocols 0-2 spell array bytes."""
    if not isinstance(text, str) or not isinstance(encoding, str):
        raise _Refused("_codecs.encode of anything but text")
    if encoding.replace("_", "-").lower() not in ("latin-1", "latin1"):
        raise _Refused(f"_codecs.encode with encoding {encoding[:20]!r}")
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        raise _Refused("_codecs.encode of text that is not latin-1") from None


def _empty_bytes(*args: Any) -> bytes:
    """``bytes()`` as protocols 0-2 spell an empty array's data."""
    if args:
        raise _Refused("bytes() with arguments")
    return b""


def _set_of(factory: Any) -> Any:
    """``set(items)`` / ``frozenset(items)`` as protocols 0-3 spell sets."""

    def make(items: Any = ()) -> Any:
        if type(items) not in (list, tuple):
            raise _Refused(f"{factory.__name__}() of a {type(items).__name__}")
        for item in items:
            _check_key(item)
        return factory(items)

    return make


_NDARRAY = _Global("numpy.ndarray", None)

ALLOWED_GLOBALS: dict[tuple[str, str], str] = {
    ("numpy", "ndarray"): "ndarray",
    ("numpy", "dtype"): "dtype",
    ("numpy.core.multiarray", "_reconstruct"): "_reconstruct",
    ("numpy._core.multiarray", "_reconstruct"): "_reconstruct",
    ("numpy.core.numeric", "_frombuffer"): "_frombuffer",
    ("numpy._core.numeric", "_frombuffer"): "_frombuffer",
    ("_codecs", "encode"): "encode",
    ("__builtin__", "bytes"): "bytes",
    ("builtins", "bytes"): "bytes",
    ("__builtin__", "set"): "set",
    ("builtins", "set"): "set",
    ("__builtin__", "frozenset"): "frozenset",
    ("builtins", "frozenset"): "frozenset",
}
"""Every global a pickle may name (numpy 1.x and 2.x spellings, pickle
protocols 0-5). Each maps to a stand-in written in this module; the named
function itself is never imported or called."""

_SIMPLE_KEYS = (str, bytes, bool, type(None))


def _check_key(key: Any) -> None:
    if type(key) in _SIMPLE_KEYS:
        return
    if _is_int(key) and -_MAX_KEY_INT <= key <= _MAX_KEY_INT:
        return
    raise _Refused(
        f"a dict key or set member of type {type(key).__name__} "
        "(only strings, bytes, integers under 2**61, booleans and None)"
    )


class ArrayUnpickler:
    """Interpret a pickle of numeric numpy arrays and plain data, running nothing.

    Parameters
    ----------
    file
        A binary file open for reading; at most ``max_bytes`` are read.
    max_bytes
        Refuse a pickle longer than this (default :data:`MAX_PICKLE_BYTES`).
    source
        How errors name the input (default the file's ``name``, if any).

    Examples
    --------
    >>> import io, pickle
    >>> data = pickle.dumps({"w": np.eye(2, dtype=np.float32)})
    >>> ArrayUnpickler(io.BytesIO(data)).load()["w"].dtype.name
    'float32'
    """

    def __init__(
        self, file: BinaryIO, *, max_bytes: int = MAX_PICKLE_BYTES, source: str | None = None
    ) -> None:
        self.source = source or _describe(getattr(file, "name", None))
        self._file = file
        self._max_bytes = max_bytes

    def load(self) -> Any:
        """Return the unpickled object.

        Raises
        ------
        UnsafePickleError
            For anything but plain numeric arrays and plain data, and for
            data that is not a well-formed pickle.
        """
        data = self._file.read(self._max_bytes + 1)
        if not isinstance(data, bytes):
            raise UnsafePickleError("the file is not open in binary mode", source=self.source)
        return _load(data, self._max_bytes, self.source)


def _describe(source: Any) -> str:
    if isinstance(source, (str, os.PathLike)):
        return repr(os.fspath(source))
    return "pickle data"


def _load(data: bytes, max_bytes: int, source: str) -> Any:
    if len(data) > max_bytes:
        raise UnsafePickleError(f"it is larger than max_bytes={max_bytes}", source=source)
    try:
        return _Machine(data).run()
    except _Refused as exc:
        raise UnsafePickleError(
            exc.reason, source=source, module=exc.module, name=exc.name
        ) from None
    except UnsafePickleError:
        raise
    except (ValueError, TypeError, KeyError, IndexError, OverflowError, EOFError) as exc:
        # pickletools' parse errors and the checks below; the text is ours or
        # pickletools' own (positions and opcode names, no object contents).
        reason = str(exc)[:200] or type(exc).__name__
        raise PickleFormatError(
            f"it is not a well-formed pickle ({reason})", source=source
        ) from None
    except (MemoryError, RecursionError):  # pragma: no cover - bounded above; defence in depth
        raise UnsafePickleError("it needs more memory than it holds", source=source) from None


class _Machine:
    """The stack machine: one pass over ``pickletools.genops``."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.stack: list[Any] = []
        self.metastack: list[list[Any]] = []
        self.memo: dict[int, Any] = {}
        self.budget = 2 * len(data) + _COPY_ALLOWANCE
        self.globals: dict[str, _Global] = {
            "ndarray": _NDARRAY,
            "dtype": _Global("numpy.dtype", _dtype),
            "_reconstruct": _Global("numpy _reconstruct", _reconstruct),
            "_frombuffer": _Global("numpy _frombuffer", self._frombuffer),
            "encode": _Global("_codecs.encode", self._encode),
            "bytes": _Global("builtins.bytes", _empty_bytes),
            "set": _Global("builtins.set", _set_of(set)),
            "frozenset": _Global("builtins.frozenset", _set_of(frozenset)),
        }

    # -- helpers ---------------------------------------------------------------
    def _spend(self, n: int) -> None:
        self.budget -= n
        if self.budget < 0:
            raise _Refused("it builds more array data than it contains")

    def _pop(self) -> Any:
        if not self.stack:
            raise _Refused("it pops an empty stack")
        return self.stack.pop()

    def _top(self) -> Any:
        if not self.stack:
            raise _Refused("it reads an empty stack")
        return self.stack[-1]

    def _pop_mark(self) -> list[Any]:
        if not self.metastack:
            raise _Refused("it closes a MARK it never opened")
        items = self.stack
        self.stack = self.metastack.pop()
        return items

    def _find(self, module: Any, name: Any) -> _Global:
        if not isinstance(module, str) or not isinstance(name, str):
            raise _Refused("STACK_GLOBAL of something other than two strings")
        key = ALLOWED_GLOBALS.get((module, name))
        if key is None:
            raise _Refused(
                f"global {module[:80]}.{name[:80]}", module=module[:200], name=name[:200]
            )
        return self.globals[key]

    def _encode(self, text: Any, encoding: Any = "utf-8") -> bytes:
        if isinstance(text, str):
            self._spend(len(text))
        return _latin1_encode(text, encoding)

    def _frombuffer(self, buffer: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
        if type(order) is not str or order not in ("C", "F"):
            raise _Refused("_frombuffer with an order other than 'C' or 'F'")
        return self._array(shape, dtype, order == "F", buffer)

    def _array(self, shape: Any, dtype: Any, fortran: Any, raw: Any) -> np.ndarray:
        """The one place an array is made: checked dtype, shape and length, copied bytes."""
        if isinstance(dtype, _PendingDType):
            dtype = dtype.native()
        if not isinstance(dtype, np.dtype):
            raise _Refused(f"an array whose dtype is a {type(dtype).__name__}")
        if dtype.newbyteorder("=") not in NUMERIC_DTYPES or dtype.fields or dtype.subdtype:
            raise _Refused(f"an array of dtype {dtype.str!r}")
        if type(shape) is not tuple or len(shape) > MAX_NDIM:
            raise _Refused(f"an array shape that is not a tuple of at most {MAX_NDIM} sizes")
        if not all(_is_int(n) and 0 <= n < (1 << 62) for n in shape):
            raise _Refused("an array shape with a negative or enormous size")
        if type(fortran) not in (bool, int) or fortran not in (0, 1):
            raise _Refused("an array whose Fortran flag is not a boolean")
        if type(raw) not in (bytes, bytearray):
            raise _Refused(
                f"an array whose data is a {type(raw).__name__}, not bytes "
                "(object arrays are refused)"
            )
        expected = math.prod(shape) * dtype.itemsize
        if expected != len(raw):
            raise _Refused(
                f"an array of shape {shape} and dtype {dtype.str} (needs {expected} bytes) "
                f"given {len(raw)} bytes"
            )
        self._spend(len(raw))
        view = np.frombuffer(raw, dtype=dtype).reshape(shape, order="F" if fortran else "C")
        array = view.copy(order="K")  # owns its memory; the pickle's bytes are let go
        if not dtype.isnative:
            array = array.astype(dtype.newbyteorder("="))
        return array

    def _build(self, target: Any, state: Any) -> Any:
        if not isinstance(target, _Pending):
            raise _Refused(f"BUILD on a {type(target).__name__} (only numpy arrays and dtypes)")
        if target.built:
            raise _Refused("BUILD twice on one object")
        target.built = True
        if isinstance(target, _PendingDType):
            return self._build_dtype(target, state)
        if type(state) is not tuple or len(state) not in (4, 5):
            raise _Refused("an array state numpy never writes")
        if len(state) == 5:
            if not _is_int(state[0]) or state[0] != 1:
                raise _Refused("an array state of an unknown version")
            state = state[1:]
        shape, dtype, fortran, raw = state
        return self._array(shape, dtype, fortran, raw)

    def _build_dtype(self, target: _PendingDType, state: Any) -> np.dtype[Any]:
        if type(state) is not tuple or len(state) not in (8, 9):
            raise _Refused("a dtype state numpy never writes")
        version, order, subarray, names, fields, elsize, alignment, flags = state[:8]
        metadata = state[8] if len(state) == 9 else None
        if not _is_int(version) or (version, len(state)) not in ((3, 8), (4, 9)):
            raise _Refused("a dtype state of an unknown version")
        if subarray is not None or names is not None or fields is not None:
            raise _Refused("a structured or sub-array dtype (fields, offsets, names)")
        if metadata is not None or not _is_int(flags) or flags != 0:
            raise _Refused("a dtype with flags or metadata (object or custom dtypes)")
        if not (_is_int(elsize) and _is_int(alignment)) or (elsize, alignment) != (-1, -1):
            raise _Refused("a dtype with an explicit item size or alignment")
        if type(order) is not str or order not in ("<", ">", "=", "|"):
            raise _Refused("a dtype byte order other than '<', '>', '=' or '|'")
        dtype = target.native()
        if order == "<" and dtype.itemsize > 1:
            ordered = dtype.newbyteorder("<")
        elif order == ">" and dtype.itemsize > 1:
            ordered = dtype.newbyteorder(">")
        else:
            ordered = dtype
        return dtype if ordered.isnative else ordered  # the canonical dtype('float32') when native

    def _memo_put(self, key: int) -> None:
        value = self._top()
        self.memo[key] = value
        if isinstance(value, _Pending):
            value.memo_keys.append(key)

    # -- the loop ----------------------------------------------------------------
    def run(self) -> Any:
        ops: Iterator[tuple[Any, Any, Any]] = pickletools.genops(io.BytesIO(self.data))
        for opcode, arg, _ in ops:
            name = opcode.name
            handler = _HANDLERS.get(name)
            if handler is None:
                raise _Refused(f"opcode {name} ({_REFUSED_OPCODES.get(name, 'not plain data')})")
            if name == "STOP":
                result = self._pop()
                return _finish(result)
            handler(self, arg)
        raise _Refused("it ends without a STOP")  # pragma: no cover - genops raises first


def _push(machine: _Machine, arg: Any) -> None:
    machine.stack.append(arg)


def _proto(machine: _Machine, arg: Any) -> None:
    if not _is_int(arg) or not 0 <= arg <= 5:
        raise _Refused(f"pickle protocol {arg!r}")


def _ignore(machine: _Machine, arg: Any) -> None:
    pass


def _mark(machine: _Machine, arg: Any) -> None:
    machine.metastack.append(machine.stack)
    machine.stack = []


def _pop(machine: _Machine, arg: Any) -> None:
    if machine.stack:
        machine.stack.pop()
    else:
        machine._pop_mark()


def _pop_mark(machine: _Machine, arg: Any) -> None:
    machine._pop_mark()


def _dup(machine: _Machine, arg: Any) -> None:
    machine.stack.append(machine._top())


def _push_const(value: Any) -> Any:
    return lambda machine, arg: machine.stack.append(value)


def _bytearray(machine: _Machine, arg: Any) -> None:
    machine.stack.append(bytearray(arg))


def _empty(factory: Any) -> Any:
    return lambda machine, arg: machine.stack.append(factory())


def _tuple_n(n: int) -> Any:
    def handler(machine: _Machine, arg: Any) -> None:
        if len(machine.stack) < n:
            raise _Refused("a tuple of more items than the stack holds")
        items = tuple(machine.stack[len(machine.stack) - n :])
        del machine.stack[len(machine.stack) - n :]
        machine.stack.append(items)

    return handler


def _tuple(machine: _Machine, arg: Any) -> None:
    items = tuple(machine._pop_mark())  # before naming machine.stack: it changes
    machine.stack.append(items)


def _list(machine: _Machine, arg: Any) -> None:
    items = machine._pop_mark()
    machine.stack.append(items)


def _pairs(items: list[Any]) -> Iterator[tuple[Any, Any]]:
    if len(items) % 2:
        raise _Refused("a dict of an odd number of keys and values")
    for i in range(0, len(items), 2):
        _check_key(items[i])
        yield items[i], items[i + 1]


def _dict(machine: _Machine, arg: Any) -> None:
    items = dict(_pairs(machine._pop_mark()))
    machine.stack.append(items)


def _frozenset(machine: _Machine, arg: Any) -> None:
    items = machine._pop_mark()
    for item in items:
        _check_key(item)
    machine.stack.append(frozenset(items))


def _target(machine: _Machine, kind: type) -> Any:
    target = machine._top()
    if type(target) is not kind:
        raise _Refused(f"adding items to a {type(target).__name__} as if a {kind.__name__}")
    return target


def _append(machine: _Machine, arg: Any) -> None:
    value = machine._pop()
    _target(machine, list).append(value)


def _appends(machine: _Machine, arg: Any) -> None:
    items = machine._pop_mark()
    _target(machine, list).extend(items)


def _setitem(machine: _Machine, arg: Any) -> None:
    value = machine._pop()
    key = machine._pop()
    _check_key(key)
    _target(machine, dict)[key] = value


def _setitems(machine: _Machine, arg: Any) -> None:
    items = machine._pop_mark()
    _target(machine, dict).update(_pairs(items))


def _additems(machine: _Machine, arg: Any) -> None:
    items = machine._pop_mark()
    target = _target(machine, set)
    for item in items:
        _check_key(item)
    target.update(items)


def _global(machine: _Machine, arg: Any) -> None:
    module, _, name = str(arg).partition(" ")
    machine.stack.append(machine._find(module, name))


def _stack_global(machine: _Machine, arg: Any) -> None:
    name = machine._pop()
    module = machine._pop()
    machine.stack.append(machine._find(module, name))


def _reduce(machine: _Machine, arg: Any) -> None:
    args = machine._pop()
    func = machine._pop()
    if not isinstance(func, _Global):
        raise _Refused(f"REDUCE calling a {type(func).__name__}")
    if type(args) is not tuple:
        raise _Refused("REDUCE with arguments that are not a tuple")
    machine.stack.append(func(*args))


def _build(machine: _Machine, arg: Any) -> None:
    state = machine._pop()
    target = machine._top()
    result = machine._build(target, state)
    machine.stack[-1] = result
    for key in target.memo_keys:
        if machine.memo.get(key) is target:
            machine.memo[key] = result


def _put(machine: _Machine, arg: Any) -> None:
    if not _is_int(arg) or arg < 0:
        raise _Refused("a negative memo index")
    machine._memo_put(arg)


def _memoize(machine: _Machine, arg: Any) -> None:
    machine._memo_put(len(machine.memo))


def _get(machine: _Machine, arg: Any) -> None:
    try:
        machine.stack.append(machine.memo[arg])
    except (KeyError, TypeError):
        raise _Refused("a memo entry it never stored") from None


_HANDLERS: dict[str, Any] = {
    "PROTO": _proto,
    "FRAME": _ignore,
    "STOP": _ignore,
    "MARK": _mark,
    "POP": _pop,
    "POP_MARK": _pop_mark,
    "DUP": _dup,
    "NONE": _push_const(None),
    "NEWTRUE": _push_const(True),
    "NEWFALSE": _push_const(False),
    **dict.fromkeys(
        ("INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4", "FLOAT", "BINFLOAT"),
        _push,
    ),
    **dict.fromkeys(("STRING", "BINSTRING", "SHORT_BINSTRING"), _push),
    **dict.fromkeys(("BINBYTES", "SHORT_BINBYTES", "BINBYTES8"), _push),
    "BYTEARRAY8": _bytearray,
    **dict.fromkeys(("UNICODE", "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8"), _push),
    "EMPTY_LIST": _empty(list),
    "EMPTY_TUPLE": _empty(tuple),
    "EMPTY_DICT": _empty(dict),
    "EMPTY_SET": _empty(set),
    "TUPLE": _tuple,
    "TUPLE1": _tuple_n(1),
    "TUPLE2": _tuple_n(2),
    "TUPLE3": _tuple_n(3),
    "LIST": _list,
    "DICT": _dict,
    "FROZENSET": _frozenset,
    "APPEND": _append,
    "APPENDS": _appends,
    "SETITEM": _setitem,
    "SETITEMS": _setitems,
    "ADDITEMS": _additems,
    "GLOBAL": _global,
    "STACK_GLOBAL": _stack_global,
    "REDUCE": _reduce,
    "BUILD": _build,
    **dict.fromkeys(("PUT", "BINPUT", "LONG_BINPUT"), _put),
    "MEMOIZE": _memoize,
    **dict.fromkeys(("GET", "BINGET", "LONG_BINGET"), _get),
}
"""Opcodes the machine understands. Refused (no handler): PERSID, BINPERSID,
INST, OBJ, NEWOBJ, NEWOBJ_EX, EXT1/2/4, NEXT_BUFFER, READONLY_BUFFER."""

_REFUSED_OPCODES = {
    **dict.fromkeys(("PERSID", "BINPERSID"), "a persistent id: an object handed in from outside"),
    **dict.fromkeys(("INST", "OBJ", "NEWOBJ", "NEWOBJ_EX"), "it makes an instance of a class"),
    **dict.fromkeys(("EXT1", "EXT2", "EXT4"), "a global from the extension registry"),
    **dict.fromkeys(("NEXT_BUFFER", "READONLY_BUFFER"), "an out-of-band buffer"),
}

_PLAIN = (str, bytes, bytearray, int, float, complex, bool, type(None), np.ndarray, np.dtype)


def _finish(result: Any) -> Any:
    """Check, without recursion, that only plain data and finished arrays came out."""
    seen: set[int] = set()
    todo = [result]
    while todo:
        item = todo.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, _Pending):
            raise _Refused("an array or dtype used before BUILD gave it its data")
        if isinstance(item, _Global):
            raise _Refused(f"{item!r} in the result (a global is not data)")
        if type(item) in (list, tuple, set, frozenset):
            todo.extend(item)
        elif type(item) is dict:
            todo.extend(item.values())
        elif not isinstance(item, _PLAIN):  # pragma: no cover - nothing else is ever built
            raise _Refused(f"a {type(item).__name__} in the result")
    return result


def unpickle_arrays(
    source: str | os.PathLike[str] | bytes | BinaryIO, *, max_bytes: int = MAX_PICKLE_BYTES
) -> Any:
    """Return the object stored in a pickle of numeric numpy arrays and plain data.

    Parameters
    ----------
    source
        A path to the pickle, its bytes, or a binary file open for reading.
    max_bytes
        Refuse a pickle longer than this (default :data:`MAX_PICKLE_BYTES`).

    Returns
    -------
    Any
        What was pickled: typically a dict or list of ``numpy.ndarray``, each
        a fresh, writable, native-byte-order copy of one of
        :data:`NUMERIC_DTYPES`.

    Raises
    ------
    UnsafePickleError
        If the pickle names any global but numpy's array reconstruction, uses
        an opcode other than plain data's, holds an array of any other dtype or
        whose shape does not match its bytes, or is not a well-formed pickle.
        Nothing it names is imported or called.
    OSError
        If the file cannot be read.

    Examples
    --------
    >>> import pickle
    >>> unpickle_arrays(pickle.dumps([np.arange(3)]))[0].tolist()
    [0, 1, 2]
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _load(bytes(source[: max_bytes + 1]), max_bytes, "pickle data")
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as file:
            info = os.fstat(file.fileno())
            if not stat.S_ISREG(info.st_mode):  # a FIFO, /dev/zero, a socket ...
                raise UnsafePickleError("it is not a regular file", source=_describe(source))
            if info.st_size > max_bytes:
                raise UnsafePickleError(
                    f"it is larger than max_bytes={max_bytes}", source=_describe(source)
                )
            return ArrayUnpickler(file, max_bytes=max_bytes, source=_describe(source)).load()
    return ArrayUnpickler(source, max_bytes=max_bytes).load()


__all__ = [
    "ALLOWED_GLOBALS",
    "MAX_PICKLE_BYTES",
    "NUMERIC_DTYPES",
    "ArrayUnpickler",
    "PickleFormatError",
    "UnsafePickleError",
    "unpickle_arrays",
]
