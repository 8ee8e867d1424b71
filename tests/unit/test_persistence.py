"""The persistence layer: safe names, bounded reads, manifests, atomic folder swaps, clean-up.

Hostile inputs (Hypothesis-generated names, JSON, .npy headers and manifests)
must always end in a ``CatalogError`` (or succeed), never another exception;
a kill -9 at any moment of a folder swap leaves the old or the new folder at
the path, and the next write removes what the killed process left; a folder
visualsim did not write is never replaced or deleted.
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numpy.lib import format as npformat

from visualsim import persistence as P
from visualsim.checkpoint import ExtractionCheckpoint
from visualsim.errors import CatalogError, FormatVersionError

TAG = "visualsim.test"
FUZZ = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _save(dest: Path, version: int, *, size: int = 64) -> None:
    """Write a folder of format TAG whose files all carry ``version``."""
    with P.atomic_dir(dest, tag=TAG) as tmp:
        P.write_npy(tmp / "data.npy", np.full((size, 4), version, dtype=np.float32))
        P.write_text(tmp / "note.txt", f"version {version}\n" * version)
        (tmp / "sub").mkdir()
        P.write_text(tmp / "sub" / "more.json", json.dumps({"version": version}))
        P.write_manifest(tmp, tag=TAG, version=1, fields={"version": version})


def _read(dest: Path) -> int:
    """Read and verify a folder written by ``_save``; return its version."""
    manifest = P.read_manifest(dest, tag=TAG, max_version=1, verify=True)
    version = manifest["version"]
    data = P.load_npy(P.safe_child(dest, "data.npy"), dtypes=("float32",), shape=(None, 4))
    more = P.read_json(P.safe_child(dest, "sub/more.json"))
    if not (data == version).all() or more != {"version": version}:
        # a mix of two folders: a reader racing a swap sees this; read_consistent retries it
        raise CatalogError(f"{dest}: files of two versions")
    return int(version)


def _ours(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(P.TMP_PREFIX))


# --------------------------------------------------------------------------- safe_child


@pytest.mark.parametrize(
    "rel",
    [
        "/etc/passwd",
        "../outside.txt",
        "a/../../outside.txt",
        "a/./b",
        "a//b",
        "",
        "a\\b",
        "a\x00b",
        "C:/windows",
        ".",
        "..",
    ],
)
def test_safe_child_refuses_names_that_leave_the_folder(tmp_path: Path, rel: str) -> None:
    with pytest.raises(CatalogError, match="entry") as info:
        P.safe_child(tmp_path, rel)
    assert str(tmp_path) in str(info.value)


def test_safe_child_refuses_symlinks_anywhere_on_the_way(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("s")
    root = tmp_path / "root"
    root.mkdir()
    (root / "sub").mkdir()
    (root / "link.txt").symlink_to(outside / "secret.txt")
    (root / "dirlink").symlink_to(outside)
    (root / "sub" / "inner.txt").symlink_to(outside / "secret.txt")
    for rel in ("link.txt", "dirlink/secret.txt", "sub/inner.txt"):
        with pytest.raises(CatalogError, match="symbolic link"):
            P.safe_child(root, rel)
    linked_root = tmp_path / "linked-root"
    linked_root.symlink_to(root)
    (root / "plain.txt").write_text("x")
    with pytest.raises(CatalogError, match="symbolic link"):
        P.safe_child(linked_root, "plain.txt")
    assert P.safe_child(root, "plain.txt") == root / "plain.txt"


def test_safe_child_refuses_folders_fifos_and_missing_entries(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(CatalogError, match="not a regular file"):
        P.safe_child(tmp_path, "d")
    with pytest.raises(CatalogError, match="not a regular file"):
        P.safe_child(tmp_path, "fifo")
    with pytest.raises(CatalogError, match="missing"):
        P.safe_child(tmp_path, "nothing.npy")
    assert P.safe_child(tmp_path, "d", kind="dir") == tmp_path / "d"


_NAME_PART = st.sampled_from(["a", "b.npy", "..", ".", "", "link", "c\\d", "e\x00", "/", "x" * 300])


@FUZZ
@given(parts=st.lists(_NAME_PART, min_size=1, max_size=5), absolute=st.booleans())
def test_safe_child_never_returns_a_path_outside(
    tmp_path: Path, parts: list[str], absolute: bool
) -> None:
    root = tmp_path / "root"
    if not root.exists():
        root.mkdir()
        (root / "a").mkdir()
        (root / "a" / "b.npy").write_bytes(b"x")
        (root / "b.npy").write_bytes(b"x")
        (root / "link").symlink_to(tmp_path)
    rel = ("/" if absolute else "") + "/".join(parts)
    try:
        got = P.safe_child(root, rel, kind="any")
    except CatalogError:
        return
    real = Path(os.path.realpath(got))
    assert real == got and real.is_relative_to(root)


# --------------------------------------------------------------------------- read_json


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "nests"),
        (b'{"a":' * 5000 + b"1" + b"}" * 5000, "nests"),
        (b"1" * 5000, "digits"),
        (b'{"count": ' + b"9" * 4301 + b"}", "digits"),
        (b"[NaN]", "NaN"),
        (b'{"x": -Infinity}', "Infinity"),
        (b"[1e999]", "too large"),
        (b'{"a": 1, "a": 2}', "repeats"),
        (b'"\xff\xfe"', "UTF-8"),
        (b"%PDF-1.4 binary", "not valid JSON"),
        (b"", "not valid JSON"),
    ],
)
def test_read_json_refuses_hostile_documents(tmp_path: Path, text: bytes, match: str) -> None:
    file = tmp_path / "manifest.json"
    file.write_bytes(text)
    with pytest.raises(CatalogError, match=match) as info:
        P.read_json(file)
    assert "manifest.json" in str(info.value)


def test_read_json_checks_the_size_before_reading(tmp_path: Path) -> None:
    file = tmp_path / "big.json"
    with open(file, "wb") as fh:
        fh.truncate(10 * 1024 * 1024)  # sparse: 10 MiB of zeros, nothing read
    with pytest.raises(CatalogError, match="more than the 1,024 allowed"):
        P.read_json(file, max_bytes=1024)


def test_read_json_refuses_a_symlink(tmp_path: Path) -> None:
    (tmp_path / "real.json").write_text("{}")
    (tmp_path / "link.json").symlink_to(tmp_path / "real.json")
    with pytest.raises(CatalogError, match="symbolic link"):
        P.read_json(tmp_path / "link.json")


_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=30,
)


@FUZZ
@given(value=_JSON, cuts=st.lists(st.integers(0, 10_000), max_size=3), junk=st.binary(max_size=8))
def test_read_json_of_mutated_text_is_a_value_or_a_catalog_error(
    tmp_path: Path, value: Any, cuts: list[int], junk: bytes
) -> None:
    data = bytearray(json.dumps(value).encode())
    for cut in cuts:  # splice junk bytes in at random places
        at = cut % (len(data) + 1)
        data[at:at] = junk
    try:
        got = P.parse_json(bytes(data), source="fuzz")
    except CatalogError:
        return
    if not cuts or not junk:
        assert got == value or (isinstance(value, float) and math.isclose(got, value))


def _depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    return 0


_TRICKY = st.text(alphabet='[]{}"\\ab', max_size=8)


@FUZZ
@given(
    value=st.recursive(
        st.none() | st.integers() | _TRICKY,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TRICKY, inner, max_size=3),
        max_leaves=40,
    ),
    ascii_only=st.booleans(),
)
def test_json_depth_ignores_brackets_inside_strings(value: Any, ascii_only: bool) -> None:
    text = json.dumps(value, ensure_ascii=ascii_only).encode()
    assert P.json_depth(text) == _depth(value)


# --------------------------------------------------------------------------- load_npy


def _npy(
    path: Path, header: dict[str, Any], payload: bytes, version: tuple[int, int] = (1, 0)
) -> None:
    with open(path, "wb") as fh:
        if version == (1, 0):
            npformat.write_array_header_1_0(fh, header)
        else:
            npformat.write_array_header_2_0(fh, header)
        fh.write(payload)


def test_a_header_claiming_terabytes_is_refused_before_allocating(tmp_path: Path) -> None:
    file = tmp_path / "vectors.npy"
    _npy(file, {"descr": "<f4", "fortran_order": False, "shape": (1 << 30, 900)}, b"\0" * 1024)
    with pytest.raises(CatalogError, match="claims 3,865,470,566,400 bytes"):
        P.load_npy(file)


@pytest.mark.parametrize(
    "descr", ["|O", "<U4", "|V8", [("a", "<f4"), ("b", "<i4")], "<c8", "<M8[s]"]
)
def test_object_structured_and_non_numeric_arrays_are_refused(tmp_path: Path, descr: Any) -> None:
    file = tmp_path / "x.npy"
    itemsize = np.dtype(descr).itemsize
    _npy(file, {"descr": descr, "fortran_order": False, "shape": (2,)}, b"\0" * (2 * itemsize))
    with pytest.raises(CatalogError, match="only plain numeric arrays"):
        P.load_npy(file)


def test_load_npy_checks_dtype_shape_and_finite_rows(tmp_path: Path) -> None:
    file = tmp_path / "v.npy"
    x = np.ones((5, 3), np.float32)
    x[3, 1] = np.nan
    np.save(file, x)
    with pytest.raises(CatalogError, match="expected int64"):
        P.load_npy(file, dtypes=("int64",))
    with pytest.raises(CatalogError, match=r"expected \(n, 4\)"):
        P.load_npy(file, shape=(None, 4))
    with pytest.raises(CatalogError, match=r"row\(s\) \[3\]"):
        P.load_npy(file, finite=True)
    assert P.load_npy(file, shape=(5, 3)).shape == (5, 3)
    np.save(file, np.asfortranarray(np.arange(6, dtype=np.int64).reshape(2, 3)))
    np.testing.assert_array_equal(P.load_npy(file), np.arange(6).reshape(2, 3))
    np.testing.assert_array_equal(P.load_npy(file, mmap=True), np.arange(6).reshape(2, 3))


_DESCRS = st.sampled_from(
    ["<f4", "<f8", "<f2", "<i8", "|u1", "|b1", ">f4", "|O", "<U3", "|V4", "<c16", "|S2"]
)
_DIMS = st.one_of(st.integers(0, 8), st.integers(0, 2**62), st.just(-1))


@FUZZ
@given(
    descr=_DESCRS,
    shape=st.lists(_DIMS, max_size=3),
    fortran=st.booleans(),
    extra=st.integers(-64, 64),
    version=st.sampled_from([(1, 0), (2, 0)]),
    garble=st.one_of(st.none(), st.integers(0, 127)),
)
def test_any_npy_header_is_an_array_of_its_claimed_size_or_a_catalog_error(
    tmp_path: Path,
    descr: str,
    shape: list[int],
    fortran: bool,
    extra: int,
    version: tuple[int, int],
    garble: int | None,
) -> None:
    file = tmp_path / "fuzz.npy"
    dt = np.dtype(descr)
    claimed = math.prod(max(s, 0) for s in shape) * dt.itemsize
    size = max(0, min(claimed, 4096) + extra)
    try:
        _npy(
            file,
            {"descr": descr, "fortran_order": fortran, "shape": tuple(shape)},
            b"\0" * size,
            version,
        )
    except ValueError:  # numpy itself refuses to write this header
        return
    if garble is not None:
        data = bytearray(file.read_bytes())
        data[garble % len(data)] ^= 0x5A
        file.write_bytes(bytes(data))
    try:
        arr = P.load_npy(file)
    except CatalogError:
        return
    assert arr.dtype.kind in "biuf" and arr.nbytes <= 4096 + 64


# --------------------------------------------------------------------------- manifests


def test_manifest_round_trip_and_checksums(tmp_path: Path) -> None:
    dest = tmp_path / "folder"
    _save(dest, 3)
    manifest = P.read_manifest(dest, tag=TAG, max_version=1)
    assert manifest["format"] == TAG and manifest["format_version"] == 1
    assert sorted(manifest["files"]) == ["data.npy", "note.txt", "sub/more.json"]
    (dest / "note.txt").write_text("changed")
    with pytest.raises(CatalogError, match="checksum"):
        P.read_manifest(dest, tag=TAG, max_version=1)
    assert P.read_manifest(dest, tag=TAG, max_version=1, verify=False)["version"] == 3
    with pytest.raises(FormatVersionError, match="upgrade"):
        P.read_manifest(dest, tag=TAG, max_version=0)
    with pytest.raises(CatalogError, match="not a visualsim.other manifest"):
        P.read_manifest(dest, tag="visualsim.other", max_version=1)


def _mutations() -> st.SearchStrategy[Any]:
    nasty = st.one_of(
        st.sampled_from(
            [
                None,
                True,
                "twenty",
                -1,
                2**31,
                2**63,
                10**300,
                1.5,
                [],
                ["a"],
                {},
                {"a": 1},
                "/etc/passwd",
                "../../etc/passwd",
                "sub/../../x",
                "0" * 64,
                "g" * 64,
            ]
        ),
        _JSON,
    )
    return st.tuples(
        st.sampled_from(["format", "format_version", "library_version", "files", "version"]),
        st.one_of(
            st.none(), st.sampled_from(["data.npy", "note.txt", "/etc/passwd", "../x", "sub"])
        ),
        nasty,
        st.booleans(),
    )


@FUZZ
@given(mutation=_mutations())
def test_mutated_manifests_are_read_or_refused_with_a_catalog_error(
    tmp_path: Path, mutation: tuple[str, str | None, Any, bool]
) -> None:
    dest = tmp_path / "m"
    if not dest.exists():
        _save(dest, 1)
    original = (dest / P.MANIFEST).read_bytes()
    field, key, value, delete = mutation
    manifest = json.loads(original)
    if key is not None and field == "files" and isinstance(manifest["files"], dict):
        if delete:
            manifest["files"].pop(key, None)
        else:
            manifest["files"][key] = value
    elif delete:
        manifest.pop(field, None)
    else:
        manifest[field] = value
    try:
        text = json.dumps(manifest)
    except ValueError:
        return
    (dest / P.MANIFEST).write_text(text)
    try:
        P.read_manifest(dest, tag=TAG, max_version=1)
    except CatalogError:
        pass
    finally:
        (dest / P.MANIFEST).write_bytes(original)


def test_manifest_naming_outside_files_is_refused_without_opening_them(tmp_path: Path) -> None:
    dest = tmp_path / "m"
    _save(dest, 1)
    secret = tmp_path / "secret.txt"
    secret.write_text("s")
    manifest = json.loads((dest / P.MANIFEST).read_text())
    for name in (str(secret), "../secret.txt", "sub/../../secret.txt"):
        manifest["files"] = {name: P.sha256_file(secret)}
        (dest / P.MANIFEST).write_text(json.dumps(manifest))
        with pytest.raises(CatalogError, match="only name files inside"):
            P.read_manifest(dest, tag=TAG, max_version=1)
    manifest["files"] = ["data.npy"]
    (dest / P.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(CatalogError, match="'files' must be an object"):
        P.read_manifest(dest, tag=TAG, max_version=1)


def test_field_helpers_name_file_and_field() -> None:
    with pytest.raises(CatalogError, match=r"m.json: field 'count' must be an integer from 0"):
        P.field_int("m.json", "count", "twenty")
    with pytest.raises(CatalogError, match="huge integer"):
        P.field_int("m.json", "count", 10**4000)
    with pytest.raises(CatalogError, match="field 'ok'"):
        P.field_bool("m.json", "ok", 1)
    with pytest.raises(CatalogError, match="one of 'a', 'b'"):
        P.field_str("m.json", "kind", "c", choices=("a", "b"))
    with pytest.raises(CatalogError, match="JSON object"):
        P.field_dict("m.json", "config", [1])
    with pytest.raises(CatalogError, match="number"):
        P.field_float("m.json", "x", float("nan"))
    assert P.field_int("m.json", "n", None, allow_none=True) is None


# --------------------------------------------------------------------------- replace_dir


def test_a_folder_visualsim_did_not_write_is_never_replaced(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "cat.jpg").write_bytes(b"\xff\xd8 jpeg")
    (photos / "report.pdf").write_bytes(b"%PDF-1.4 precious")
    other = tmp_path / "other"
    _save(other, 1)
    manifest = json.loads((other / P.MANIFEST).read_text())
    manifest["format"] = "visualsim.somethingelse"
    (other / P.MANIFEST).write_text(json.dumps(manifest))
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    link = tmp_path / "link"
    link.symlink_to(photos)
    for dest in (photos, other, a_file, link):
        before = {p: p.read_bytes() for p in sorted(tmp_path.rglob("*")) if p.is_file()}
        with pytest.raises(CatalogError, match="refusing to replace"):
            _save(dest, 2)
        after = {p: p.read_bytes() for p in sorted(tmp_path.rglob("*")) if p.is_file()}
        assert after == before
        assert not _ours(tmp_path)
    assert (photos / "report.pdf").read_bytes() == b"%PDF-1.4 precious"


def test_overwrite_false_refuses_and_empty_folders_are_replaced(tmp_path: Path) -> None:
    dest = tmp_path / "out"
    dest.mkdir()
    _save(dest, 1)  # an empty folder may be replaced
    assert _read(dest) == 1
    with (
        pytest.raises(CatalogError, match="overwrite=True"),
        P.atomic_dir(dest, tag=TAG, overwrite=False),
    ):
        pass
    _save(dest, 2)
    assert _read(dest) == 2 and not _ours(tmp_path)


def test_a_failed_write_leaves_the_old_folder_and_no_temporary(tmp_path: Path) -> None:
    dest = tmp_path / "out"
    _save(dest, 1)
    with pytest.raises(RuntimeError), P.atomic_dir(dest, tag=TAG) as tmp:
        (tmp / "half.npy").write_bytes(b"half")
        raise RuntimeError("disk full")
    assert _read(dest) == 1 and not _ours(tmp_path)


def test_folders_are_exchanged_atomically_on_this_machine(tmp_path: Path) -> None:
    assert P.exchange_supported(tmp_path)  # Linux renameat2 on a local filesystem


def test_stale_temporaries_of_dead_processes_are_removed_and_nothing_else(tmp_path: Path) -> None:
    dest = tmp_path / "out"
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead_pid = int(dead.stdout)
    stale = tmp_path / f"{P.TMP_PREFIX}out-deadbeef0000"
    stale.mkdir()
    (stale / "x.npy").write_bytes(b"old")
    record = {"marker": "visualsim temporary folder", "pid": dead_pid, "host": os.uname().nodename}
    (tmp_path / f"{stale.name}.marker").write_text(json.dumps(record))
    alive = tmp_path / f"{P.TMP_PREFIX}out-a11ve0000000"
    alive.mkdir()
    (tmp_path / f"{alive.name}.marker").write_text(json.dumps({**record, "pid": os.getpid()}))
    unmarked = tmp_path / f"{P.TMP_PREFIX}users-own-folder"
    unmarked.mkdir()
    (unmarked / "keep.txt").write_text("keep")
    forged = tmp_path / f"{P.TMP_PREFIX}forged"
    forged.mkdir()
    (tmp_path / f"{forged.name}.marker").write_text('{"pid": 1}')
    stale_file = tmp_path / f"{P.TMP_PREFIX}{dead_pid}-0123456789ab.vectors.npy.part"
    stale_file.write_bytes(b"half")
    _save(dest, 1)
    assert not stale.exists() and not (tmp_path / f"{stale.name}.marker").exists()
    assert not stale_file.exists()
    assert alive.exists() and (unmarked / "keep.txt").read_text() == "keep" and forged.exists()


# --------------------------------------------------------------------------- kill -9

_CHILD = textwrap.dedent(
    """
    import os, sys, json
    import numpy as np
    from visualsim import persistence as P
    from visualsim.io import folders
    dest = sys.argv[1]
    aimed = sys.argv[2] if len(sys.argv) > 2 else ""
    if aimed:
        real = folders.discard_temp_dir
        def crash(tmp):
            if aimed == "after-swap":
                os.kill(os.getpid(), 9)
            real(tmp)
        folders.discard_temp_dir = crash  # what replace_dir calls after the swap
    version = 0
    while True:
        version += 1
        with P.atomic_dir(dest, tag="visualsim.test") as tmp:
            P.write_npy(tmp / "data.npy", np.full((64, 4), version, dtype=np.float32))
            P.write_text(tmp / "note.txt", f"version {version}\\n" * version)
            (tmp / "sub").mkdir()
            P.write_text(tmp / "sub" / "more.json", json.dumps({"version": version}))
            P.write_manifest(tmp, tag="visualsim.test", version=1, fields={"version": version})
        if version == 1:
            print("ready", flush=True)
    """
)


def _child(dest: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(dest), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_kill_9_at_random_moments_never_leaves_the_path_empty(tmp_path: Path) -> None:
    dest = tmp_path / "catalogue"
    _save(dest, 1000)
    rng = random.Random(20261202)
    seen: set[int] = set()
    for _ in range(20):
        proc = _child(dest)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.0, 0.05))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        seen.add(_read(dest))  # the old or a new folder, complete and verified
        _save(dest, 1000)  # the next write...
        assert not _ours(tmp_path)  # ...removes everything the killed one left
        assert _read(dest) == 1000
    assert len(seen) >= 1


def test_kill_9_between_the_swap_and_the_clean_up(tmp_path: Path) -> None:
    dest = tmp_path / "catalogue"
    _save(dest, 1000)
    proc = _child(dest, "after-swap")
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert _read(dest) == 1  # the new folder is in place
    left = _ours(tmp_path)
    assert len(left) == 2 and any(n.endswith(".marker") for n in left)  # the old one, marked
    _save(dest, 2)
    assert not _ours(tmp_path) and _read(dest) == 2


def test_readers_during_overwrites_always_get_a_complete_folder(tmp_path: Path) -> None:
    dest = tmp_path / "catalogue"
    _save(dest, 1)
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        version = 1
        try:
            while not stop.is_set():
                version = version % 7 + 1
                _save(dest, version, size=64 * version)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    thread = threading.Thread(target=writer)
    thread.start()
    loads = []
    try:
        for _ in range(200):
            loads.append(P.read_consistent(dest, _read))
    finally:
        stop.set()
        thread.join()
    assert not errors
    assert len(loads) == 200 and set(loads) <= set(range(1, 8))


def test_readers_during_another_process_overwriting(tmp_path: Path) -> None:
    dest = tmp_path / "catalogue"
    _save(dest, 1000)
    proc = _child(dest)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        # at least 100 reads, and on until the child has swapped in another version: a slow
        # disk (fsync) may let 100 quick reads all fall between two of the child's swaps
        versions: list[int] = []
        deadline = time.monotonic() + 60
        while len(versions) < 100 or (len(set(versions)) < 2 and time.monotonic() < deadline):
            versions.append(P.read_consistent(dest, _read))
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert len(versions) >= 100 and len(set(versions)) > 1


# --------------------------------------------------------------------------- checkpoints

SPEC = {"name": "color", "config": {"bins": [4, 2, 2]}}


def _checkpoint_with(folder: Path, batches: int) -> ExtractionCheckpoint:
    ckpt = ExtractionCheckpoint(folder, SPEC)
    for b in range(batches):
        ids = [f"{b}-{i}" for i in range(3)]
        ckpt.write(np.ones((3, 4), np.float32), ids, [{} for _ in ids], [], 3)
    return ckpt


def test_checkpoint_clear_removes_only_what_it_wrote(tmp_path: Path) -> None:
    folder = tmp_path / "work"
    folder.mkdir()
    (folder / "thesis.pdf").write_bytes(b"%PDF precious")
    (folder / "chunk-notes.txt").write_text("mine")
    ckpt = _checkpoint_with(folder, 2)
    assert ckpt.consumed == 6
    ckpt.clear()
    assert sorted(p.name for p in folder.iterdir()) == ["chunk-notes.txt", "thesis.pdf"]
    fresh = tmp_path / "fresh"
    _checkpoint_with(fresh, 1).clear()
    assert not fresh.exists()  # visualsim made it, and it is empty again


def test_checkpoint_refuses_a_folder_whose_files_it_did_not_write(tmp_path: Path) -> None:
    folder = tmp_path / "work"
    folder.mkdir()
    (folder / "progress.json").write_text('{"my": "own progress"}')
    with pytest.raises(CatalogError, match="not written by visualsim"):
        ExtractionCheckpoint(folder, SPEC)
    (folder / "progress.json").unlink()
    (folder / "chunk-000000.npy").write_bytes(b"someone else's")
    ckpt = ExtractionCheckpoint(folder, SPEC)
    with pytest.raises(CatalogError, match="not written by this checkpoint"):
        ckpt.write(np.ones((1, 4), np.float32), ["a"], [{}], [], 1)
    assert (folder / "chunk-000000.npy").read_bytes() == b"someone else's"


_CLEAR_CHILD = textwrap.dedent(
    """
    import os, sys
    import numpy as np
    from pathlib import Path
    from visualsim.checkpoint import ExtractionCheckpoint
    spec = {"name": "color", "config": {"bins": [4, 2, 2]}}
    ckpt = ExtractionCheckpoint(sys.argv[1], spec)
    kill_after = int(sys.argv[2])
    calls = 0
    real = Path.unlink
    def unlink(self, missing_ok=False):
        global calls
        calls += 1
        if calls > kill_after:
            os.kill(os.getpid(), 9)
        real(self, missing_ok=missing_ok)
    Path.unlink = unlink
    ckpt.clear()
    """
)


@pytest.mark.parametrize("kill_after", [0, 1, 3, 6])
def test_a_kill_inside_clear_is_finished_by_the_next_run(tmp_path: Path, kill_after: int) -> None:
    folder = tmp_path / "ckpt"
    _checkpoint_with(folder, 3)
    (folder / "keep.txt").write_text("not ours")
    proc = subprocess.run(
        [sys.executable, "-c", _CLEAR_CHILD, str(folder), str(kill_after)], capture_output=True
    )
    assert proc.returncode == -signal.SIGKILL
    again = ExtractionCheckpoint(folder, SPEC)  # resumes cleanly, nothing half-listed
    assert again.consumed == 0 and again.names == []
    vectors, ids, _, _ = again.read(4)
    assert len(vectors) == 0 and ids == []
    again.write(np.ones((2, 4), np.float32), ["x", "y"], [{}, {}], [], 2)
    assert again.read(4)[1] == ["x", "y"]
    again.clear()
    assert sorted(p.name for p in folder.iterdir()) == ["keep.txt"]


def test_a_checkpoint_that_lost_a_chunk_resumes_from_the_complete_ones(tmp_path: Path) -> None:
    folder = tmp_path / "ckpt"
    _checkpoint_with(folder, 3)
    (folder / "chunk-000001.npy").unlink()
    again = ExtractionCheckpoint(folder, SPEC)
    assert again.consumed == 3 and again.names == ["chunk-000000"]
    again.write(np.ones((3, 4), np.float32), ["a", "b", "c"], [{}, {}, {}], [], 3)
    assert again.read(4)[1] == ["0-0", "0-1", "0-2", "a", "b", "c"]
    again.clear()
    assert not folder.exists()


@FUZZ
@given(
    field=st.sampled_from(
        ["chunks", "pending", "consumed", "extractor", "format_version", "format"]
    ),
    value=_JSON,
)
def test_damaged_progress_files_are_catalog_errors(tmp_path: Path, field: str, value: Any) -> None:
    folder = tmp_path / "ckpt-fuzz"
    if not folder.exists():
        _checkpoint_with(folder, 1)
    state = json.loads((folder / "progress.json").read_text())
    original = json.dumps(state)
    state[field] = value
    (folder / "progress.json").write_text(json.dumps(state))
    try:
        ckpt = ExtractionCheckpoint(folder, SPEC)
        ckpt.read(4)
    except CatalogError:
        pass
    finally:
        (folder / "progress.json").write_text(original)


def test_fit_with_a_checkpoint_dir_leaves_the_folders_other_files(tmp_path: Path) -> None:
    from visualsim import ColorHistogramExtractor, Recommender

    folder = tmp_path / "work"
    folder.mkdir()
    (folder / "thesis.pdf").write_bytes(b"%PDF-1.4 precious")
    images = [np.full((8, 8, 3), 20 * i, np.uint8) for i in range(10)]
    rec = Recommender(ColorHistogramExtractor()).fit(
        images, [f"i{i}" for i in range(10)], batch_size=3, checkpoint_dir=folder, progress=False
    )
    assert len(rec) == 10
    assert [p.name for p in folder.iterdir()] == ["thesis.pdf"]
    assert (folder / "thesis.pdf").read_bytes() == b"%PDF-1.4 precious"


# --------------------------------------------------------------------------- the other formats


def test_shards_are_written_only_into_an_empty_or_shard_folder(tmp_path: Path) -> None:
    from visualsim.shards import ShardWriter, read_manifest

    (tmp_path / "report.pdf").write_bytes(b"%PDF")
    spec = {"name": "color", "config": {}}
    with pytest.raises(CatalogError, match="no shard manifest"):
        ShardWriter(tmp_path, extractor=spec, dim=4, shard_size=2)
    folder = tmp_path / "shards"
    writer = ShardWriter(folder, extractor=spec, dim=4, shard_size=2)
    writer.write(0, vectors=np.eye(2, 4), ids=["a", "b"], metadata=[{}, {}], input_ids=["a", "b"])
    writer.finish(2)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["format"] == "visualsim.shards" and sorted(manifest["files"]) == [
        "shard-00000.ids.json",
        "shard-00000.metadata.jsonl",
        "shard-00000.npy",
    ]
    manifest["format"] = "visualsim-shards"  # what visualsim 0.1 wrote, without "files"
    del manifest["files"]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    assert read_manifest(folder)["shard_format"] == "npy"
    manifest["shards"][0]["files"]["vectors"] = "../report.pdf"
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CatalogError, match="not a plain name"):
        read_manifest(folder)


def test_a_reducer_is_saved_only_over_a_reducer_or_an_empty_folder(tmp_path: Path) -> None:
    from visualsim.reduction import PCAReducer

    reducer = PCAReducer(2, sample_size=10).fit(np.random.default_rng(0).standard_normal((20, 5)))
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "cat.jpg").write_bytes(b"\xff\xd8")
    with pytest.raises(CatalogError, match="refusing to replace"):
        reducer.save(tmp_path / "photos")
    reducer.save(tmp_path / "pca")
    reducer.save(tmp_path / "pca")  # over its own: replaced
    loaded = PCAReducer.load(tmp_path / "pca")
    np.testing.assert_allclose(loaded.components_, reducer.components_)
    manifest = json.loads((tmp_path / "pca" / "reducer.json").read_text())
    manifest["n_features_in"] = 10**9
    (tmp_path / "pca" / "reducer.json").write_text(json.dumps(manifest))
    with pytest.raises(CatalogError, match="n_features_in"):
        PCAReducer.load(tmp_path / "pca")


_REDUCER_FIELDS = st.sampled_from(
    [
        ("format_version",),
        ("config",),
        ("config", "dim"),
        ("config", "whiten"),
        ("config", "rotate"),
        ("config", "sample_size"),
        ("config", "extra"),
        ("n_features_in",),
        ("n_samples_seen",),
        ("arrays",),
        ("arrays", "mean"),
        ("arrays", "components", "file"),
        ("arrays", "rotation", "file"),
        ("files",),
        ("files", "mean.npy"),
        ("files", "../x.npy"),
    ]
)
_NASTY = st.one_of(
    _JSON,
    st.sampled_from(
        [2**31, 2**63, -1, "twenty", [], {}, "../reducer.json", "/etc/passwd", "0" * 64]
    ),
)


def _mutate(doc: dict[str, Any], field: tuple[str, ...], value: Any, delete: bool) -> None:
    node: Any = doc
    for key in field[:-1]:
        if not isinstance(node, dict) or not isinstance(node.get(key), dict):
            return
        node = node[key]
    if not isinstance(node, dict):
        return
    if delete:
        node.pop(field[-1], None)
    else:
        node[field[-1]] = value


@FUZZ
@given(field=_REDUCER_FIELDS, value=_NASTY, delete=st.booleans())
def test_mutated_reducer_manifests_load_or_raise_catalog_error(
    tmp_path: Path, field: tuple[str, ...], value: Any, delete: bool
) -> None:
    from visualsim.reduction import PCAReducer

    folder = tmp_path / "pca"
    if not folder.exists():
        x = np.random.default_rng(0).standard_normal((40, 6))
        PCAReducer(3, sample_size=20, whiten=True).fit(x).save(folder)
    original = (folder / "reducer.json").read_text()
    doc = json.loads(original)
    _mutate(doc, field, value, delete)
    (folder / "reducer.json").write_text(json.dumps(doc))
    try:
        reducer = PCAReducer.load(folder)
        reducer.transform(np.ones((2, reducer.n_features_in_ or 1)))
    except CatalogError:
        pass
    finally:
        (folder / "reducer.json").write_text(original)


_SHARD_FIELDS = st.sampled_from(
    [
        ("format",),
        ("format_version",),
        ("dim",),
        ("shard_format",),
        ("shard_size",),
        ("extractor",),
        ("extractor", "name"),
        ("extractor", "config"),
        ("shards",),
        ("files",),
        ("count",),
    ]
)
_SHARD_ENTRY_FIELDS = st.sampled_from(
    ["index", "start", "stop", "count", "files", "sha256", "failed", "input_sha256"]
)


@FUZZ
@given(
    field=_SHARD_FIELDS,
    entry_field=st.one_of(st.none(), _SHARD_ENTRY_FIELDS),
    value=_NASTY,
    delete=st.booleans(),
)
def test_mutated_shard_manifests_read_or_raise_catalog_error(
    tmp_path: Path, field: tuple[str, ...], entry_field: str | None, value: Any, delete: bool
) -> None:
    from visualsim.shards import ShardWriter, read_shards

    folder = tmp_path / "shards"
    if not folder.exists():
        writer = ShardWriter(folder, extractor={"name": "color", "config": {}}, dim=4, shard_size=2)
        for k in range(2):
            ids = [f"{k}-a", f"{k}-b"]
            writer.write(k, vectors=np.eye(2, 4), ids=ids, metadata=[{}, {"n": k}], input_ids=ids)
        writer.finish(4)
    original = (folder / "manifest.json").read_text()
    doc = json.loads(original)
    if entry_field is not None:
        _mutate(doc["shards"][1], (entry_field,), value, delete)
    else:
        _mutate(doc, field, value, delete)
    (folder / "manifest.json").write_text(json.dumps(doc))
    try:
        read_shards(folder)
    except CatalogError:
        pass
    finally:
        (folder / "manifest.json").write_text(original)


def test_a_damaged_checkpoint_chunk_fails_its_checksum(tmp_path: Path) -> None:
    folder = tmp_path / "ckpt"
    _checkpoint_with(folder, 2)
    state = json.loads((folder / "progress.json").read_text())
    assert state["format"] == "visualsim.checkpoint" and sorted(state["files"]) == [
        "chunk-000000.json",
        "chunk-000000.npy",
        "chunk-000001.json",
        "chunk-000001.npy",
    ]
    data = bytearray((folder / "chunk-000001.npy").read_bytes())
    data[-1] ^= 0x01
    (folder / "chunk-000001.npy").write_bytes(bytes(data))
    with pytest.raises(CatalogError, match="chunk-000001.npy.*checksum"):
        ExtractionCheckpoint(folder, SPEC).read(4)
