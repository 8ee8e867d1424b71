"""The restricted unpickler loads numpy arrays and refuses every other callable."""

from __future__ import annotations

import io
import os
import pickle
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from visualsim.errors import VisualsimError
from visualsim.safe_unpickle import ArrayUnpickler, UnsafePickleError, unpickle_arrays


class _CallsOnLoad:
    """Pickles as "call ``func(*args)`` when loaded" — the shape of every pickle exploit."""

    def __init__(self, func: Any, *args: Any) -> None:
        self.func = func
        self.args = args

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.func, self.args)


def _marker_command(path: Path) -> str:
    return f"touch {path}"


@pytest.mark.parametrize(
    ("func", "refused"),
    [
        (os.system, "system"),
        (eval, "builtins.eval"),
        (exec, "builtins.exec"),
        (subprocess.Popen, "subprocess.Popen"),
        (__import__, "builtins.__import__"),
    ],
)
def test_refuses_a_pickle_that_calls_anything_else(tmp_path: Path, func: Any, refused: str) -> None:
    marker = tmp_path / "ran"
    if func in (os.system, subprocess.Popen):
        args: tuple[Any, ...] = (_marker_command(marker),)
    elif func is __import__:
        args = ("os",)
    else:
        args = (f"open({str(marker)!r}, 'w').close()",)
    payload = pickle.dumps(_CallsOnLoad(func, *args))

    with pytest.raises(UnsafePickleError, match=refused) as info:
        unpickle_arrays(payload)

    assert not marker.exists()
    assert isinstance(info.value, VisualsimError)
    assert isinstance(info.value, pickle.UnpicklingError)


def test_refuses_a_callable_hidden_beside_real_arrays(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    payload = pickle.dumps(
        {"w": np.ones(3, np.float32), "x": _CallsOnLoad(os.system, _marker_command(marker))}
    )

    with pytest.raises(UnsafePickleError, match=r"\bsystem\b"):
        unpickle_arrays(payload)
    assert not marker.exists()


def test_refuses_object_arrays() -> None:
    payload = pickle.dumps(np.array([1, "a"], dtype=object))

    with pytest.raises(UnsafePickleError, match="dtype"):
        unpickle_arrays(payload)


def test_refuses_persistent_ids() -> None:
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer)
    pickler.persistent_id = lambda obj: "outside" if obj == "x" else None  # type: ignore[method-assign]
    pickler.dump(["x"])

    with pytest.raises(UnsafePickleError, match="persistent"):
        unpickle_arrays(buffer.getvalue())


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_loads_plain_numpy_arrays_with_every_protocol(protocol: int) -> None:
    data: dict[str, Any] = {
        "kernel": np.arange(24, dtype=np.float32).reshape(2, 3, 4),
        "fortran": np.asfortranarray(np.eye(3)),
        "ints": [np.array([1, 2, 3], dtype=np.int64), np.zeros((0, 2), np.uint8)],
        "name": "conv1",
        "scalar": 1.5,
    }

    loaded = unpickle_arrays(pickle.dumps(data, protocol=protocol))

    assert loaded.keys() == data.keys()
    for key in ("kernel", "fortran"):
        np.testing.assert_array_equal(loaded[key], data[key])
        assert loaded[key].dtype == data[key].dtype
    for got, want in zip(loaded["ints"], data["ints"], strict=True):
        np.testing.assert_array_equal(got, want)
    assert (loaded["name"], loaded["scalar"]) == ("conv1", 1.5)


def test_reads_a_path_and_an_open_file(tmp_path: Path) -> None:
    path = tmp_path / "arrays.pkl"
    path.write_bytes(pickle.dumps([np.arange(4)]))

    np.testing.assert_array_equal(unpickle_arrays(path)[0], np.arange(4))
    with path.open("rb") as file:
        np.testing.assert_array_equal(ArrayUnpickler(file).load()[0], np.arange(4))


def test_refusal_names_the_global() -> None:
    error = UnsafePickleError("os", "system")

    assert "os.system" in str(error)
    assert pickle.loads(pickle.dumps(error)).name == "system"
