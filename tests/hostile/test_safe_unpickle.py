"""The restricted unpickler: plain numeric arrays out, nothing run, no crash, bounded work.

The fuzz tests feed Hypothesis-made pickles to a worker *process* (so a crash
fails the test instead of killing pytest) that watches, through an audit hook,
for any import, file access or process start while it unpickles, and runs under
an address-space limit.
"""

from __future__ import annotations

import base64
import io
import json
import os
import pickle
import select
import struct
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from visualsim.errors import VisualsimError
from visualsim.safe_unpickle import (
    NUMERIC_DTYPES,
    ArrayUnpickler,
    UnsafePickleError,
    unpickle_arrays,
)

FUZZ_EXAMPLES = int(os.environ.get("VISUALSIM_FUZZ_EXAMPLES", "1000"))
"""Inputs per fuzz test; raise it (``VISUALSIM_FUZZ_EXAMPLES=20000``) for a long hunt."""


# -- a tiny pickle assembler ----------------------------------------------------
def op_global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def op_str(text: str) -> bytes:
    data = text.encode("utf-8", "surrogatepass")
    return b"X" + struct.pack("<I", len(data)) + data


def op_bytes(data: bytes) -> bytes:
    return b"B" + struct.pack("<I", len(data)) + data


def op_int(value: int) -> bytes:
    if -(1 << 31) <= value < (1 << 31):
        return b"J" + struct.pack("<i", value)
    raw = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw  # LONG1


def tup(*items: bytes) -> bytes:
    return b"(" + b"".join(items) + b"t"


def call(func: bytes, *args: bytes) -> bytes:
    return func + tup(*args) + b"R"


def program(body: bytes, protocol: int = 3) -> bytes:
    return b"\x80" + bytes([protocol]) + body + b"."


def dtype_op(code: str, state: bytes | None = None) -> bytes:
    made = call(op_global("numpy", "dtype"), op_str(code), b"K\x00", b"K\x01")
    return made if state is None else made + state + b"b"


def reconstruct_op(state: bytes) -> bytes:
    made = call(
        op_global("numpy.core.multiarray", "_reconstruct"),
        op_global("numpy", "ndarray"),
        tup(b"K\x00"),
        op_bytes(b"b"),
    )
    return made + state + b"b"


NATIVE_F8 = dtype_op("f8", tup(b"K\x03", op_str("<"), b"NNN", op_int(-1), op_int(-1), b"K\x00"))


class _CallsOnLoad:
    """Pickles as "call ``func(*args)`` when loaded" — the shape of every pickle exploit."""

    def __init__(self, func: Any, *args: Any) -> None:
        self.func = func
        self.args = args

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.func, self.args)


def _no_core_dump() -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


# -- what must load ---------------------------------------------------------------
@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_loads_plain_numpy_arrays_with_every_protocol(protocol: int) -> None:
    data: dict[str, Any] = {
        "kernel": np.arange(24, dtype=np.float32).reshape(2, 3, 4),
        "fortran": np.asfortranarray(np.eye(3)),
        "big_endian": np.arange(5, dtype=">i4"),
        "strided": np.arange(10, dtype=np.uint16)[::3],
        "scalar_array": np.array(2.5, dtype=np.float16),
        "flags": np.array([True, False]),
        "ints": [np.array([1, 2, 3], dtype=np.int64), np.zeros((0, 2), np.uint8)],
        "name": "conv1",
        "scalar": 1.5,
        "nested": (1, [2, {"k": None}], frozenset({"a"})),
    }

    loaded = unpickle_arrays(pickle.dumps(data, protocol=protocol))

    assert loaded.keys() == data.keys()
    for key in ("kernel", "fortran", "big_endian", "strided", "scalar_array", "flags"):
        np.testing.assert_array_equal(loaded[key], data[key])
        assert loaded[key].dtype == data[key].dtype.newbyteorder("=")
        assert repr(loaded[key].dtype) == repr(np.dtype(data[key].dtype.name))  # canonical
        assert loaded[key].flags.writeable and loaded[key].flags.owndata
    for got, want in zip(loaded["ints"], data["ints"], strict=True):
        np.testing.assert_array_equal(got, want)
        assert got.shape == want.shape
    assert (loaded["name"], loaded["scalar"], loaded["nested"]) == ("conv1", 1.5, data["nested"])


def test_shared_and_self_referencing_containers_load() -> None:
    shared = np.arange(3.0)
    loop: list[Any] = [shared, shared]
    loop.append(loop)

    loaded = unpickle_arrays(pickle.dumps(loop))

    assert loaded[0] is loaded[1] and loaded[2] is loaded
    np.testing.assert_array_equal(loaded[0], shared)


def test_reads_a_path_and_an_open_file(tmp_path: Path) -> None:
    path = tmp_path / "arrays.pkl"
    path.write_bytes(pickle.dumps([np.arange(4)]))

    np.testing.assert_array_equal(unpickle_arrays(path)[0], np.arange(4))
    with path.open("rb") as file:
        np.testing.assert_array_equal(ArrayUnpickler(file).load()[0], np.arange(4))


def test_reads_ndf_squeezenet_weights_exactly_as_pickle_does() -> None:
    from visualsim.extractors.squeezenet import find_ndf_weights

    path = find_ndf_weights()
    assert path is not None, "the dev environment installs ndf (visualsim[squeezenet])"
    ours = unpickle_arrays(path)
    with open(path, "rb") as file:
        trusted = pickle.load(file)  # the reference: plain pickle of the installed package

    assert ours.keys() == trusted.keys() and len(ours) == 26
    for name, pair in trusted.items():
        for got, want in zip(ours[name], pair, strict=True):
            assert got.dtype == want.dtype and got.shape == want.shape
            np.testing.assert_array_equal(got, want)


# -- what the review found, one by one -------------------------------------------------
CRASHERS = {
    # ndarray((1,), 'O', b'AAAAAAAA'): reading a[0] dereferenced 0x4141...
    "object_array_over_attacker_bytes": program(
        call(op_global("numpy", "ndarray"), tup(b"K\x01"), op_str("O"), op_bytes(b"A" * 8))
    ),
    # ndarray((1,), float64, buffer, -64): an out-of-bounds read before the buffer
    "negative_offset": program(
        call(
            op_global("numpy", "ndarray"),
            tup(b"K\x01"),
            NATIVE_F8,
            op_bytes(b"\0" * 8),
            op_int(-64),
        )
    ),
    # a dtype whose BUILD puts a field at offset 1 << 40, past its 8-byte item
    "dtype_field_offset_past_the_item": program(
        reconstruct_op(
            tup(
                b"K\x01",
                tup(b"K\x01"),
                dtype_op(
                    "V8",
                    tup(
                        b"K\x03",
                        op_str("|"),
                        b"N",
                        tup(op_str("a")),
                        b"}" + op_str("a") + tup(NATIVE_F8, op_int(1 << 40)) + b"s",
                        b"K\x08",
                        b"K\x01",
                        b"K\x10",
                    ),
                ),
                b"\x89",
                op_bytes(b"\0" * 8),
            )
        )
    ),
    # BUILD on a dtype made from an allowed code, given fields anyway
    "fields_smuggled_into_a_numeric_dtype": program(
        dtype_op(
            "f8",
            tup(
                b"K\x03",
                op_str("|"),
                b"N",
                tup(op_str("a")),
                b"}" + op_str("a") + tup(NATIVE_F8, op_int(1 << 40)) + b"s",
                b"K\x08",
                b"K\x01",
                b"K\x10",
            ),
        )
    ),
    # _reconstruct then BUILD with an object dtype and a list of "items"
    "object_state_through_reconstruct": program(
        reconstruct_op(tup(b"K\x01", tup(b"K\x01"), dtype_op("O8"), b"\x89", b"]")),
    ),
    # a shape that claims far more bytes than the data holds
    "shape_larger_than_its_bytes": program(
        reconstruct_op(tup(b"K\x01", tup(op_int(1 << 40)), NATIVE_F8, b"\x89", op_bytes(b"\0" * 8)))
    ),
    "negative_dimension": program(
        reconstruct_op(tup(b"K\x01", tup(op_int(-1)), NATIVE_F8, b"\x89", op_bytes(b""))),
    ),
    # a bytes8 that claims 2**62 bytes
    "bytes8_claiming_4_eib": program(b"\x8e" + struct.pack("<Q", 1 << 62) + b"xy", protocol=4),
    # one memoised 64 KiB blob turned into 4,096 arrays: 256 MiB out of a 150 KiB pickle
    "one_blob_many_arrays": program(
        op_bytes(b"\0" * 65536)
        + b"q\x01"  # BINPUT 1
        + b"0"  # POP
        + b"("
        + reconstruct_op(tup(b"K\x01", tup(op_int(8192)), NATIVE_F8, b"\x89", b"h\x01")) * 4096
        + b"l"
    ),
}


@pytest.mark.parametrize("name", sorted(CRASHERS))
def test_each_crasher_from_the_review_is_refused(name: str) -> None:
    with pytest.raises(UnsafePickleError) as info:
        unpickle_arrays(CRASHERS[name])

    assert isinstance(info.value, VisualsimError)
    assert isinstance(info.value, pickle.UnpicklingError)
    assert "refusing to unpickle pickle data" in str(info.value)


@pytest.mark.parametrize(
    "name",
    [
        "object_array_over_attacker_bytes",
        "dtype_field_offset_past_the_item",
        "object_state_through_reconstruct",
    ],
)
def test_the_crashers_do_crash_plain_pickle(name: str, tmp_path: Path) -> None:
    """The inputs above are real exploits: plain pickle + a read dies (SIGSEGV, exit -11, here)."""
    code = textwrap.dedent(
        f"""
        import pickle, base64, sys
        data = base64.b64decode({base64.b64encode(CRASHERS[name])!r})
        array = pickle.loads(data)
        print(repr(array[0]))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        timeout=120,
        cwd=tmp_path,
        preexec_fn=_no_core_dump,  # the crash must not leave a core file behind
    )

    assert result.returncode != 0  # -11 (SIGSEGV) on Linux


REAL_BUT_NOT_NUMERIC = {
    "object": np.array([1, "a"], dtype=object),
    "structured": np.zeros(2, dtype=[("a", "f8"), ("b", "i4")]),
    "void": np.zeros(2, "V8"),
    "unicode": np.array(["abc"]),
    "bytes": np.array([b"abc"]),
    "complex": np.zeros(2, "c16"),
    "datetime": np.zeros(2, "M8[ns]"),
    "string_dtype": np.array(["a", "bc"], dtype=np.dtypes.StringDType()),
    "numpy_scalar": np.float32(1.5),
    "masked": np.ma.masked_array([1.0, 2.0], mask=[0, 1]),
    "matrix": np.asmatrix(np.eye(2)),
}


@pytest.mark.parametrize("name", sorted(REAL_BUT_NOT_NUMERIC))
@pytest.mark.parametrize("protocol", [2, 5])
def test_refuses_every_array_that_is_not_plain_numeric(name: str, protocol: int) -> None:
    payload = pickle.dumps(REAL_BUT_NOT_NUMERIC[name], protocol=protocol)

    with pytest.raises(UnsafePickleError):
        unpickle_arrays(payload)


@pytest.mark.parametrize(
    ("func", "refused"),
    [
        (os.system, "system"),
        (eval, "builtins.eval"),
        (exec, "builtins.exec"),
        (subprocess.Popen, "subprocess.Popen"),
        (__import__, "builtins.__import__"),
        (np.frombuffer, "numpy.frombuffer"),
        (np.load, "numpy.load"),
    ],
)
def test_refuses_a_pickle_that_calls_anything_else(tmp_path: Path, func: Any, refused: str) -> None:
    marker = tmp_path / "ran"
    if func in (os.system, subprocess.Popen):
        args: tuple[Any, ...] = (f"touch {marker}",)
    elif func is __import__:
        args = ("os",)
    elif func in (np.frombuffer, np.load):
        args = (str(marker),)
    else:
        args = (f"open({str(marker)!r}, 'w').close()",)
    payload = pickle.dumps(_CallsOnLoad(func, *args))

    with pytest.raises(UnsafePickleError, match=refused) as info:
        unpickle_arrays(payload)

    assert not marker.exists()
    assert info.value.name in refused


def test_refuses_a_callable_hidden_beside_real_arrays(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    payload = pickle.dumps(
        {"w": np.ones(3, np.float32), "x": _CallsOnLoad(os.system, f"touch {marker}")}
    )

    with pytest.raises(UnsafePickleError, match=r"\bsystem\b"):
        unpickle_arrays(payload)
    assert not marker.exists()


class _Plain:
    def __init__(self) -> None:
        self.x = 1


class _NewArgs:
    def __getnewargs_ex__(self) -> tuple[tuple[Any, ...], dict[str, Any]]:
        return ((), {})


@pytest.mark.parametrize(
    ("payload", "opcode"),
    [
        (pickle.dumps(_Plain(), protocol=0), "global"),  # protocol 0 spells it with INST
        (b"(i__main__\n_Plain\n.", "INST"),
        (b"(c__main__\n_Plain\no.", "global"),
        (b"\x80\x02(c__main__\n_Plain\no.", "global"),
        (b"\x80\x02(o.", "OBJ"),
        (b"\x80\x02N)\x81.", "NEWOBJ"),
        (b"\x80\x04N)}\x92.", "NEWOBJ_EX"),
        (pickle.dumps(_NewArgs(), protocol=4), "global"),
        (b"\x80\x02\x82\x01.", "EXT1"),
        (b"\x80\x02\x83\x01\x00.", "EXT2"),
        (b"\x80\x02\x84\x01\x00\x00\x00.", "EXT4"),
        (b"\x80\x05\x97.", "NEXT_BUFFER"),
        (b"Pout\n.", "persistent"),
        (b"\x80\x02X\x03\x00\x00\x00outQ.", "persistent"),
    ],
)
def test_refuses_every_way_to_make_an_instance(payload: bytes, opcode: str) -> None:
    with pytest.raises(UnsafePickleError, match=opcode):
        unpickle_arrays(payload)


@pytest.mark.parametrize(
    ("payload", "what"),
    [
        (b"", "well-formed"),
        (b"\x80\x03", "well-formed"),
        (b"\x80\x03N", "well-formed"),
        (b"\x80\x09N.", "protocol"),
        (b"\x80\x03\xff.", "well-formed"),
        (b"\x80\x030.", "MARK"),
        (b"\x80\x03R.", "empty stack"),
        (b"\x80\x03e.", "MARK"),
        (b"\x80\x03h\x05.", "memo"),
        (b"\x80\x03NNa.", "NoneType"),
        (b"\x80\x03}]Ns.", "key"),
        (b"\x80\x04(]]\x91.", "set member"),  # FROZENSET over lists, dicts keyed by floats
        (b"\x80\x03}G?\xf0\x00\x00\x00\x00\x00\x00Ns.", "key"),
        (b"L" + b"9" * 5000 + b"L\n.", "well-formed"),  # past int's 4,300-digit limit
    ],
)
def test_malformed_pickles_are_one_clear_error(payload: bytes, what: str) -> None:
    with pytest.raises(UnsafePickleError, match=what):
        unpickle_arrays(payload)


def test_a_memo_index_near_2_32_costs_nothing(worker: _Worker) -> None:
    """C's unpickler sizes its memo table by the index: 2**33 zeroed slots (64 GiB)."""
    data = program(b"N" + b"r" + struct.pack("<I", 0xFFFFFFFF) + b"0" + b"j\xff\xff\xff\xff", 2)

    assert unpickle_arrays(data) is None
    assert _check(worker, data)["outcome"] == "ok"  # in 4 GiB of address space


def test_refuses_a_pickle_larger_than_max_bytes() -> None:
    with pytest.raises(UnsafePickleError, match="max_bytes=10"):
        unpickle_arrays(pickle.dumps(np.zeros(100)), max_bytes=10)


def test_error_round_trips_through_pickle_and_names_the_global() -> None:
    try:
        unpickle_arrays(pickle.dumps(_CallsOnLoad(os.system, "true")))
    except UnsafePickleError as exc:
        error = exc
    again = pickle.loads(pickle.dumps(error))

    assert (again.module, again.name) == (os.system.__module__, "system")
    assert str(again) == str(error)


@pytest.mark.parametrize("path", ["/dev/zero", "/dev/null"])
def test_a_device_is_refused_before_reading(path: str) -> None:
    with pytest.raises(UnsafePickleError, match="not a regular file"):
        unpickle_arrays(path)


def test_a_file_larger_than_max_bytes_is_refused_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "big.pkl"
    path.write_bytes(pickle.dumps(np.zeros(1000)))
    with pytest.raises(UnsafePickleError, match="max_bytes=100"):
        unpickle_arrays(path, max_bytes=100)


def test_refusal_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "weights.pkl"
    path.write_bytes(pickle.dumps(_CallsOnLoad(os.system, "true")))

    with pytest.raises(UnsafePickleError, match="weights.pkl"):
        unpickle_arrays(path)


# -- the fuzz: a worker process that cannot take pytest down with it ---------------------
WORKER = textwrap.dedent(
    """
    import base64, json, resource, sys
    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
    import numpy as np
    from visualsim.safe_unpickle import NUMERIC_DTYPES, UnsafePickleError, unpickle_arrays

    armed = []
    def hook(event, args):
        if armed:
            armed[0].append(event)
    sys.addaudithook(hook)

    PLAIN = (str, bytes, bytearray, int, float, complex, type(None), np.dtype)

    def plain(obj):
        seen, todo = set(), [obj]
        while todo:
            item = todo.pop()
            if id(item) in seen:
                continue
            seen.add(id(item))
            if isinstance(item, np.ndarray):
                if type(item) is not np.ndarray or item.dtype not in NUMERIC_DTYPES:
                    return f"array {type(item)} {item.dtype}"
                if not item.flags.owndata and item.base is None:
                    return "array without data"
                item.sum()  # touch every byte
            elif isinstance(item, (list, tuple, set, frozenset)):
                todo.extend(item)
            elif isinstance(item, dict):
                todo.extend(item.keys()); todo.extend(item.values())
            elif not isinstance(item, PLAIN):
                return f"a {type(item)}"
        return None

    n = 0
    for line in sys.stdin:
        data = base64.b64decode(line)
        modules = set(sys.modules)
        events = []
        armed.append(events)
        try:
            result = unpickle_arrays(data)
            outcome, detail = "ok", None
        except UnsafePickleError as exc:
            outcome, detail = "refused", str(exc)[:300]
        except BaseException as exc:
            outcome, detail = "escaped", f"{type(exc).__name__}: {str(exc)[:300]}"
        armed.clear()
        if outcome == "ok":
            detail = plain(result)
            outcome = "ok" if detail is None else "impure"
            result = None
        n += 1
        imported = sorted(set(sys.modules) - modules)
        print(json.dumps({"outcome": outcome, "detail": detail, "events": events,
                          "imported": imported, "n": n}), flush=True)
    """
)


class _Worker:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", WORKER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.outcomes: dict[str, int] = {}

    def run(self, data: bytes) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(base64.b64encode(data).decode() + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], 120)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            self.proc.kill()
            code = self.proc.wait()
            stderr = self.proc.stderr.read() if self.proc.stderr else ""
            pytest.fail(
                f"unpickling worker died (exit {code}, hung={not ready}) on "
                f"{base64.b64encode(data)[:2000]!r}\n{stderr[-2000:]}"
            )
        report: dict[str, Any] = json.loads(line)
        self.outcomes[report["outcome"]] = self.outcomes.get(report["outcome"], 0) + 1
        return report

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait(timeout=60)


@pytest.fixture(scope="module")
def worker() -> Iterator[_Worker]:
    w = _Worker()
    yield w
    print(f"\nfuzzed pickles by outcome: {w.outcomes}")
    w.close()


HARMLESS_EVENTS = {"builtins.id"}
"""Audit events the unpickler may raise: ``id()`` (its cycle-safe walk) and nothing else."""


def _check(worker: _Worker, data: bytes) -> dict[str, Any]:
    report = worker.run(data)
    assert report["outcome"] in ("ok", "refused"), (report, data[:500])
    assert set(report["events"]) <= HARMLESS_EVENTS, (report["events"], data[:300])  # no open...
    assert report["imported"] == [], (report, data[:500])
    return report


NAMES = [
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),
    ("builtins", "bytes"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy", "frombuffer"),
    ("numpy", "load"),
    ("numpy.lib.format", "read_array"),
    ("numpy.dtypes", "StringDType"),
    ("copyreg", "_reconstructor"),
    ("builtins", "getattr"),
    ("builtins", "eval"),
    ("os", "system"),
    ("io", "open"),
    ("ctypes", "string_at"),
    ("visualsim.safe_unpickle", "_Machine"),
    ("__main__", "x"),
]
CODES = ["f8", "f4", "f2", "i8", "u1", "b1", "?", "O", "O8", "V8", "V0", "U3", "S2", "c16", "M8"]
CODES += ["<f4", ">i2", "|u1", "f16", "T", "", "a"]

_short_int = st.one_of(
    st.integers(-3, 300),
    st.sampled_from([-(1 << 31), (1 << 31) - 1, 1 << 40, -(1 << 40), 1 << 62, 1 << 64, 2**31 - 1]),
)
_any_int = st.one_of(_short_int, st.integers())

OPCODES: st.SearchStrategy[bytes] = st.one_of(
    st.sampled_from(
        [
            bytes([c])
            for c in b"(tRbN\x88\x89])}\x8feasu\x90\x91ld012\x85\x86\x87\x94\x93\x81\x92oQ\x97\x98."
        ]
    ),
    st.builds(op_int, _any_int),
    st.builds(op_str, st.sampled_from([*CODES, "<", ">", "|", "=", "C", "F", "latin1", "a"])),
    st.builds(op_str, st.text(max_size=12)),
    st.builds(op_bytes, st.binary(max_size=40)),
    st.builds(lambda n: op_bytes(b"\0" * n), st.sampled_from([0, 1, 2, 4, 8, 16, 24, 64, 256])),
    st.builds(lambda m_n: op_global(*m_n), st.sampled_from(NAMES)),
    st.builds(lambda i: b"q" + bytes([i]), st.integers(0, 255)),  # BINPUT
    st.builds(lambda i: b"h" + bytes([i]), st.integers(0, 255)),  # BINGET
    st.builds(lambda i: b"r" + struct.pack("<I", i), st.sampled_from([0, 7, 1 << 20, 2**32 - 1])),
    st.builds(lambda n: b"\x8e" + struct.pack("<Q", n) + b"ab", st.sampled_from([2, 3, 1 << 62])),
    st.builds(lambda n: b"\x96" + struct.pack("<Q", n) + b"ab", st.sampled_from([2, 1 << 40])),
    st.builds(lambda n: b"\x95" + struct.pack("<Q", n), st.sampled_from([0, 9, 1 << 60])),
    st.builds(lambda c: b"\x82" + bytes([c]), st.integers(0, 255)),  # EXT1
    st.builds(lambda s: b"P" + s.encode() + b"\n", st.sampled_from(["x", "0", "os"])),
    st.builds(lambda m_n: b"i" + "\n".join(m_n).encode() + b"\n", st.sampled_from(NAMES)),
    st.just(NATIVE_F8),
)


@settings(max_examples=FUZZ_EXAMPLES, suppress_health_check=list(HealthCheck))
@given(
    protocol=st.integers(0, 5),
    ops=st.lists(OPCODES, max_size=40),
)
def test_fuzz_random_opcode_streams(worker: _Worker, protocol: int, ops: list[bytes]) -> None:
    _check(worker, b"\x80" + bytes([protocol]) + b"".join(ops) + b".")


_dims = st.lists(_short_int, max_size=4).map(tuple)


@st.composite
def numpy_shaped(draw: st.DrawFn) -> bytes:
    """numpy's own pickle shapes, with every argument chosen by an adversary."""
    code = draw(st.sampled_from(CODES))
    order = draw(st.sampled_from(["<", ">", "|", "=", "?", ""]))
    fields = draw(
        st.sampled_from(
            [
                b"N",
                b"}" + op_str("a") + tup(NATIVE_F8, op_int(draw(_any_int))) + b"s",
                b"}" + op_str("a") + tup(b"N", b"K\x00") + b"s",
            ]
        )
    )
    names = draw(st.sampled_from([b"N", tup(op_str("a")), tup(op_str("a"), op_str("b"))]))
    dstate = tup(
        op_int(draw(st.sampled_from([3, 4, 2, -1]))),
        op_str(order),
        draw(st.sampled_from([b"N", tup(NATIVE_F8, tup(b"K\x02"))])),
        names,
        fields,
        op_int(draw(st.sampled_from([-1, 0, 8, 1 << 40, -(1 << 40)]))),
        op_int(draw(st.sampled_from([-1, 1, 0, 3]))),
        op_int(draw(st.sampled_from([0, 1, 16, 63, -1]))),
        *draw(st.sampled_from([[], [b"N"], [tup(b"N", tup(op_bytes(b"ns"), b"K\x01"))]])),
    )
    dtype = draw(st.sampled_from([dtype_op(code), dtype_op(code, dstate), NATIVE_F8, b"N"]))
    shape = tup(*(op_int(d) for d in draw(_dims)))
    raw = draw(
        st.one_of(
            st.builds(op_bytes, st.binary(max_size=64)),
            st.builds(lambda n: op_bytes(b"A" * n), st.sampled_from([0, 8, 16, 24, 32])),
            st.just(b"]"),
            st.just(b"(NNl"),
            st.just(b"N"),
        )
    )
    fortran = draw(st.sampled_from([b"\x89", b"\x88", b"K\x02", b"N"]))
    kind = draw(st.sampled_from(["reconstruct", "frombuffer", "ndarray", "nested"]))
    if kind == "reconstruct":
        version = draw(st.sampled_from([[b"K\x01"], [], [b"K\x00"], [b"K\x02"]]))
        body = reconstruct_op(tup(*version, shape, dtype, fortran, raw))
    elif kind == "frombuffer":
        body = call(
            op_global("numpy._core.numeric", "_frombuffer"),
            raw,
            dtype,
            shape,
            op_str(draw(st.sampled_from(["C", "F", "A", "K"]))),
        )
    elif kind == "ndarray":
        extra = [op_int(draw(_any_int))] if draw(st.booleans()) else []
        body = call(op_global("numpy", "ndarray"), shape, dtype, raw, *extra)
    else:
        body = b"(" + op_str("w") + reconstruct_op(tup(b"K\x01", shape, dtype, fortran, raw))
        body += b"q\x00" + op_str("again") + b"h\x00d"
    return program(body, draw(st.integers(2, 5)))


@settings(max_examples=FUZZ_EXAMPLES, suppress_health_check=list(HealthCheck))
@given(numpy_shaped())
def test_fuzz_numpy_reconstruction_tricks(worker: _Worker, data: bytes) -> None:
    _check(worker, data)


SEEDS = [
    pickle.dumps(obj, protocol=protocol)
    for protocol in (0, 2, 3, 4, 5)
    for obj in (
        {"conv1": [np.arange(6, dtype=np.float32).reshape(2, 3), np.zeros(3, np.float32)]},
        np.array([1, "a"], dtype=object),
        np.zeros(2, dtype=[("a", "f8"), ("b", "i4")]),
        [np.asfortranarray(np.eye(2)), (1, "x")],
    )
]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """Real pickles with bytes flipped, inserted, deleted, truncated or spliced."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        if not data:
            break
        where = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "splice"]))
        if action == "flip":
            data[where] ^= 1 << draw(st.integers(0, 7))
        elif action == "set":
            data[where] = draw(st.sampled_from([0, 1, 0x7F, 0x80, 0xFF, ord("O"), ord("V")]))
        elif action == "insert":
            data[where:where] = draw(st.binary(min_size=1, max_size=8))
        elif action == "delete":
            del data[where : where + draw(st.integers(1, 8))]
        elif action == "truncate":
            del data[where:]
        else:
            other = draw(st.sampled_from(SEEDS))
            data[where:] = other[draw(st.integers(0, len(other) - 1)) :]
    return bytes(data)


@settings(max_examples=FUZZ_EXAMPLES, suppress_health_check=list(HealthCheck))
@given(mutated())
def test_fuzz_mutated_real_pickles(worker: _Worker, data: bytes) -> None:
    _check(worker, data)


@pytest.mark.parametrize("name", sorted(CRASHERS))
def test_crashers_in_the_worker_touch_nothing(worker: _Worker, name: str) -> None:
    assert _check(worker, CRASHERS[name])["outcome"] == "refused"


def test_the_worker_sees_imports_and_file_access() -> None:
    """The watchdog works: plain pickle of an exploit shows up as events and imports."""
    probe = _Worker()
    try:
        probe.proc.stdin.write(  # type: ignore[union-attr]
            base64.b64encode(b"garbage that decodes").decode() + "\n"
        )
        probe.proc.stdin.flush()  # type: ignore[union-attr]
        assert json.loads(probe.proc.stdout.readline())["outcome"] == "refused"  # type: ignore[union-attr]
    finally:
        probe.close()
    hooked = textwrap.dedent(
        """
        import sys, pickle, io
        events = []
        sys.addaudithook(lambda e, a: events.append(e))
        try:
            pickle.loads(b"cos\\nsystem\\n(Vtrue\\ntR.")
        except Exception:
            pass
        print("os.system" in events or "pickle.find_class" in events)
        """
    )
    out = subprocess.run([sys.executable, "-c", hooked], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "True"


def test_numeric_dtypes_are_exactly_the_documented_ones() -> None:
    kinds = {(d.kind, d.itemsize) for d in NUMERIC_DTYPES}

    assert kinds == {("b", 1)} | {(k, n) for k in "iu" for n in (1, 2, 4, 8)} | {
        ("f", n) for n in (2, 4, 8)
    }
    assert all(d.isnative for d in NUMERIC_DTYPES)


def test_open_file_in_text_mode_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "a.pkl"
    path.write_bytes(b"N.")
    with (
        path.open("r", encoding="latin-1") as file,
        pytest.raises(UnsafePickleError, match="binary"),
    ):
        ArrayUnpickler(file).load()  # type: ignore[arg-type]


def test_bytes_like_sources() -> None:
    data = pickle.dumps([np.arange(2)])
    for source in (data, bytearray(data), memoryview(data), io.BytesIO(data)):
        np.testing.assert_array_equal(unpickle_arrays(source)[0], np.arange(2))
