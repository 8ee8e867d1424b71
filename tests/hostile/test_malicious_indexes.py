"""Saved indexes from a stranger: one clear CatalogError, bounded work, nothing outside read.

Every saved index kind is damaged on purpose (Hypothesis mutates manifest
fields and file contents, with checksums fixed up so the damage reaches the
parsers) and must load into a working index or fail with a ``CatalogError``;
a loaded index must search without any other exception. The findings of
issue #12 each have their own test below.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numpy.lib import format as npformat

from visualsim.errors import CatalogError, VisualsimError
from visualsim.indexes import load_index, make_index
from visualsim.indexes.base import verify_index

KINDS = {
    "flat": {},
    "hnsw": {"M": 8},
    "ivf": {"nlist": 4},
    "ivfpq": {"nlist": 2, "m": 4, "nbits": 4},
    "sklearn": {},
    "sharded": {"n_shards": 3},
}
FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
DIM = 8


def _vectors(n: int) -> np.ndarray:
    x = np.random.default_rng(7).standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def saved(
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, tuple[Path, np.ndarray, list[Any]]]:
    out = {}
    for kind, params in KINDS.items():
        n = 700 if kind == "ivfpq" else 200
        x = _vectors(n)
        ids: list[Any] = [f"p{i}" if i % 3 else i for i in range(n)]
        index = make_index(kind, **params)
        index.add(x, ids)
        if hasattr(index, "train"):
            index.train()
        index.remove(ids[5:7])
        path = tmp_path_factory.mktemp("pristine") / kind
        index.save(path)
        out[kind] = (path, x, ids)
    return out


def _fresh(saved_path: Path, tmp_path: Path) -> Path:
    target = tmp_path / "victim"
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(saved_path, target, symlinks=True)
    return target


def _manifest(path: Path) -> dict[str, Any]:
    return json.loads((path / "manifest.json").read_text())


def _write_manifest(path: Path, manifest: dict[str, Any]) -> None:
    (path / "manifest.json").write_text(json.dumps(manifest))


def _rehash(path: Path, rel: str) -> None:
    """Fix up the checksum of ``rel`` so damage reaches the parser, not just the hash check."""
    manifest = _manifest(path)
    manifest["files"][rel] = hashlib.sha256((path / rel).read_bytes()).hexdigest()
    _write_manifest(path, manifest)


def _load_and_search(path: Path) -> None:
    """Load (or fail with CatalogError) and, if loaded, search without any other exception."""
    try:
        index = load_index(path)
    except CatalogError:
        return
    if len(index):
        try:
            index.search(_vectors(3), k=5)
        except VisualsimError:
            pass


# --------------------------------------------------------------------------- fuzzed manifests

NASTY = st.one_of(
    st.sampled_from(
        [
            None,
            True,
            False,
            "twenty",
            "",
            -1,
            0,
            1,
            2**31,
            2**63,
            10**100,
            1.5,
            float("1e300"),
            [],
            ["a"],
            {},
            {"a": 1},
            "/etc/passwd",
            "../flat",
            "shard-000/../../x",
        ]
    ),
    st.integers(),
    st.text(max_size=12),
    st.lists(st.integers(), max_size=3),
)
FIELDS = [
    ("name",),
    ("config",),
    ("dim",),
    ("count",),
    ("next_label",),
    ("state",),
    ("files",),
    ("format_version",),
    ("config", "M"),
    ("config", "ef_search"),
    ("config", "ef_construction"),
    ("config", "nlist"),
    ("config", "nprobe"),
    ("config", "m"),
    ("config", "nbits"),
    ("config", "rerank"),
    ("config", "n_shards"),
    ("config", "shard"),
    ("config", "shard_params"),
    ("config", "algorithm"),
    ("config", "leaf_size"),
    ("config", "dim"),
    ("state", "has_index"),
    ("state", "trained"),
    ("state", "nlist_"),
    ("state", "shards"),
]


@pytest.mark.parametrize("kind", list(KINDS))
@FUZZ
@given(field=st.sampled_from(FIELDS), value=NASTY, delete=st.booleans())
def test_fuzzed_manifest_fields_load_or_raise_catalog_error(
    saved: dict[str, Any],
    tmp_path: Path,
    kind: str,
    field: tuple[str, ...],
    value: Any,
    delete: bool,
) -> None:
    path = _fresh(saved[kind][0], tmp_path)
    manifest = _manifest(path)
    node = manifest
    for key in field[:-1]:
        node = node.setdefault(key, {}) if isinstance(node.get(key), dict) else {}
    if delete:
        node.pop(field[-1], None)
    else:
        node[field[-1]] = value
    _write_manifest(path, manifest)
    _load_and_search(path)


def _labels_blob(draw_len: int, seed: int, mode: str) -> bytes:
    rng = np.random.default_rng(seed)
    import io

    buf = io.BytesIO()
    if mode == "range":
        np.save(buf, rng.integers(-5, 10**12, size=draw_len).astype(np.int64))
    elif mode == "sorted":
        np.save(buf, np.sort(rng.integers(0, 400, size=draw_len)).astype(np.int64))
    elif mode == "float":
        np.save(buf, rng.random(draw_len))
    else:
        np.save(buf, np.arange(draw_len, dtype=np.int64))
    return buf.getvalue()


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf", "ivfpq", "sklearn"])
@FUZZ
@given(
    target=st.sampled_from(
        ["labels.npy", "ids.json", "index.faiss", "vectors.npy", "vector_labels.npy"]
    ),
    n=st.integers(0, 400),
    seed=st.integers(0, 2**16),
    mode=st.sampled_from(["range", "sorted", "float", "arange", "bytes", "json"]),
)
def test_fuzzed_file_contents_load_or_raise_catalog_error(
    saved: dict[str, Any], tmp_path: Path, kind: str, target: str, n: int, seed: int, mode: str
) -> None:
    path = _fresh(saved[kind][0], tmp_path)
    if not (path / target).exists():
        return
    rng = np.random.default_rng(seed)
    original = (path / target).read_bytes()
    if mode == "bytes" or target == "index.faiss":
        data = bytearray(original)
        for _ in range(1 + seed % 4):
            at = int(rng.integers(0, len(data)))
            data[at : at + 8] = rng.integers(0, 256, size=8, dtype=np.uint8).tobytes()
        blob = bytes(data[: len(data) - (seed % 3) * 7])
    elif mode == "json" or target == "ids.json":
        blob = json.dumps(
            rng.integers(0, 400, size=n).tolist() if seed % 2 else {"ids": n}
        ).encode()
    else:
        blob = _labels_blob(n, seed, mode)
    (path / target).write_bytes(blob)
    _rehash(path, target)
    _load_and_search(path)


# --------------------------------------------------------------------------- the issue's findings


def test_huge_ef_search_is_refused_at_load(saved: dict[str, Any], tmp_path: Path) -> None:
    for value in (2**31, 2**30, 10**30):
        path = _fresh(saved["hnsw"][0], tmp_path)
        manifest = _manifest(path)
        manifest["config"]["ef_search"] = value
        _write_manifest(path, manifest)
        with pytest.raises(CatalogError, match="ef_search must be an integer from 1 to 65,536"):
            load_index(path)


@pytest.mark.parametrize("n_shards", [10**6, 10**8, 4])
def test_a_huge_n_shards_is_refused_before_building_shards(
    saved: dict[str, Any], tmp_path: Path, n_shards: int
) -> None:
    path = _fresh(saved["sharded"][0], tmp_path)
    manifest = _manifest(path)
    manifest["config"]["n_shards"] = n_shards
    _write_manifest(path, manifest)
    with pytest.raises(CatalogError, match="n_shards"):
        load_index(path)


@pytest.mark.parametrize("name", ["../flat", "/etc", "shard-000/..", "shard-000/x", 7])
def test_shard_names_must_be_plain_folders_inside(
    saved: dict[str, Any], tmp_path: Path, name: Any
) -> None:
    path = _fresh(saved["sharded"][0], tmp_path)
    shutil.copytree(saved["flat"][0], tmp_path / "flat")  # what a ../ name would reach
    manifest = _manifest(path)
    manifest["state"]["shards"][1] = name
    _write_manifest(path, manifest)
    with pytest.raises(CatalogError):
        load_index(path)


def test_a_symlinked_shard_or_file_is_refused(saved: dict[str, Any], tmp_path: Path) -> None:
    path = _fresh(saved["sharded"][0], tmp_path)
    outside = tmp_path / "outside-shard"
    shutil.move(path / "shard-001", outside)
    (path / "shard-001").symlink_to(outside)
    with pytest.raises(CatalogError, match="symbolic link"):
        load_index(path)
    flat = _fresh(saved["flat"][0], tmp_path)
    real = tmp_path / "labels-outside.npy"
    shutil.move(flat / "labels.npy", real)
    (flat / "labels.npy").symlink_to(real)
    with pytest.raises(CatalogError, match="symbolic link"):
        load_index(flat)


def test_manifest_names_outside_the_folder_are_never_opened(
    saved: dict[str, Any], tmp_path: Path
) -> None:
    path = _fresh(saved["flat"][0], tmp_path)
    probe = tmp_path / "probe.txt"
    probe.write_text("does this exist on your machine?")
    digest = hashlib.sha256(probe.read_bytes()).hexdigest()
    for name in (str(probe), "../probe.txt"):
        manifest = _manifest(path)
        manifest["files"][name] = digest
        _write_manifest(path, manifest)
        with pytest.raises(CatalogError, match="only name files inside"):
            load_index(path)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("count", "twenty"),
        ("count", "<5001 digits>"),
        ("files", ["labels.npy"]),
        ("next_label", 2**62),
        ("dim", 2**40),
        ("config", [1, 2]),
        ("state", "none"),
    ],
)
def test_malformed_fields_are_catalog_errors_naming_the_field(
    saved: dict[str, Any], tmp_path: Path, field: str, value: Any
) -> None:
    path = _fresh(saved["flat"][0], tmp_path)
    manifest = _manifest(path)
    manifest[field] = value
    text = json.dumps(manifest)
    match = field
    if value == "<5001 digits>":  # json.dumps cannot write it: put the digits in by hand
        text = text.replace('"<5001 digits>"', "1" + "0" * 5000)
        match = "digits"
    (path / "manifest.json").write_text(text)
    with pytest.raises(CatalogError, match=match):
        load_index(path)


def test_deeply_nested_manifest_is_a_catalog_error(saved: dict[str, Any], tmp_path: Path) -> None:
    path = _fresh(saved["flat"][0], tmp_path)
    text = (path / "manifest.json").read_text()
    (path / "manifest.json").write_text(text[:-1] + ', "x": ' + "[" * 200_000 + "]" * 200_000 + "}")
    with pytest.raises(CatalogError, match="nests"):
        load_index(path)


def test_an_npy_header_claiming_terabytes_is_a_catalog_error(
    saved: dict[str, Any], tmp_path: Path
) -> None:
    path = _fresh(saved["flat"][0], tmp_path)
    with open(path / "labels.npy", "wb") as fh:
        npformat.write_array_header_1_0(
            fh, {"descr": "<i8", "fortran_order": False, "shape": (450_000_000_000,)}
        )
        fh.write(b"\0" * 1024)
    _rehash(path, "labels.npy")
    with pytest.raises(CatalogError, match="claims 3,600,000,000,000 bytes"):
        load_index(path)


def _rewrite_flat(path: Path, labels_of: Any) -> None:
    import faiss

    old = faiss.read_index(str(path / "index.faiss"))
    x = faiss.downcast_index(old.index).reconstruct_n(0, old.ntotal)
    held = faiss.vector_to_array(old.id_map)
    new = faiss.IndexIDMap2(faiss.IndexFlatIP(old.d))
    new.add_with_ids(x, labels_of(held))
    faiss.write_index(new, str(path / "index.faiss"))
    _rehash(path, "index.faiss")


def test_faiss_labels_out_of_range_are_refused_at_load(
    saved: dict[str, Any], tmp_path: Path
) -> None:
    path = _fresh(saved["flat"][0], tmp_path)
    _rewrite_flat(path, lambda held: held + 10**9)
    with pytest.raises(CatalogError, match="labels FAISS holds"):
        load_index(path)


def test_a_rotated_id_map_is_caught_by_verify(saved: dict[str, Any], tmp_path: Path) -> None:
    source, x, ids = saved["flat"]
    path = _fresh(source, tmp_path)
    _rewrite_flat(path, lambda held: np.roll(held, 1))
    index = load_index(path)  # every file is consistent on its own...
    live = [i for i in ids if i in index]
    rows = [ids.index(i) for i in live]
    with pytest.raises(CatalogError, match="another vector|returns"):
        verify_index(index, x[rows], live)  # ...but not with the stored vectors
    verify_index(load_index(source), x[rows], live)


@pytest.mark.parametrize("kind", list(KINDS))
def test_verify_index_accepts_every_intact_index_and_refuses_other_ids(
    saved: dict[str, Any], kind: str
) -> None:
    source, x, ids = saved[kind]
    index = load_index(source)
    live = [i for i in ids if i in index]
    rows = [ids.index(i) for i in live]
    verify_index(index, x[rows], live)
    with pytest.raises(CatalogError, match="ids"):
        verify_index(index, x[rows[:-1]], live[:-1])
    with pytest.raises(CatalogError):
        verify_index(index, np.roll(x[rows], 3, axis=0), live)


@pytest.mark.parametrize("bad", ["zero", "nan", "scaled"])
def test_sklearn_vectors_must_be_finite_unit_rows(
    saved: dict[str, Any], tmp_path: Path, bad: str
) -> None:
    path = _fresh(saved["sklearn"][0], tmp_path)
    x = np.load(path / "vectors.npy")
    if bad == "zero":
        x[4] = 0
    elif bad == "nan":
        x[4, 2] = np.nan
    else:
        x[4] *= 3
    np.save(path / "vectors.npy", x)
    _rehash(path, "vectors.npy")
    with pytest.raises(CatalogError, match=r"row\(s\) \[4\]"):
        load_index(path)


def test_an_inconsistent_hnsw_graph_is_refused(saved: dict[str, Any], tmp_path: Path) -> None:
    import faiss

    path = _fresh(saved["hnsw"][0], tmp_path)
    index = faiss.read_index(str(path / "index.faiss"))
    hnsw = faiss.downcast_index(index.index)
    neighbors = faiss.vector_to_array(hnsw.hnsw.neighbors)
    neighbors[neighbors >= 0] += 10**6  # links to nodes that do not exist
    faiss.copy_array_to_vector(neighbors, hnsw.hnsw.neighbors)
    faiss.write_index(index, str(path / "index.faiss"))
    _rehash(path, "index.faiss")
    with pytest.raises(CatalogError, match="HNSW"):  # FAISS 1.15 checks it too; ours is kept
        load_index(path)


def test_saving_over_a_folder_that_is_not_an_index_touches_nothing(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "report.pdf").write_bytes(b"%PDF-1.4")
    index = make_index("flat")
    index.add(_vectors(3), ["a", "b", "c"])
    with pytest.raises(CatalogError, match="refusing to replace"):
        index.save(photos)
    assert [p.name for p in photos.iterdir()] == ["report.pdf"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".visualsim-tmp-")]


@pytest.mark.parametrize("code_size", [None, 2**45])
def test_faiss_on_disk_lists_naming_an_outside_file_are_refused_unopened(
    saved: dict[str, Any], tmp_path: Path, code_size: int | None
) -> None:
    import faiss

    outside = tmp_path / "elsewhere.ivfdata"  # FAISS would open this read-write
    x = _vectors(300)
    ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(DIM), DIM, 4, faiss.METRIC_INNER_PRODUCT)
    ivf.train(x)
    lists = faiss.OnDiskInvertedLists(4, ivf.code_size, str(outside))
    ivf.replace_invlists(lists, False)  # Python keeps ownership: freed once, below
    path = _fresh(saved["ivf"][0], tmp_path)
    labels = np.load(path / "labels.npy")
    ivf.add_with_ids(x[: len(labels)], labels)
    faiss.write_index(ivf, str(path / "index.faiss"))
    del ivf, lists
    if code_size is not None:  # a code size FAISS checks only after opening the file
        blob = bytearray((path / "index.faiss").read_bytes())
        at = blob.find(b"ilod") + 12
        blob[at : at + 8] = code_size.to_bytes(8, "little")
        (path / "index.faiss").write_bytes(bytes(blob))
    _rehash(path, "index.faiss")
    before = (outside.read_bytes(), outside.stat().st_mtime_ns)
    with pytest.raises(CatalogError, match="on-disk inverted lists"):
        load_index(path)
    assert (outside.read_bytes(), outside.stat().st_mtime_ns) == before


@pytest.mark.parametrize("kind", ["flat", "hnsw", "sklearn"])
def test_verify_index_accepts_duplicate_vectors(kind: str) -> None:
    x = _vectors(20)
    x = np.concatenate([x, x[:5]])  # five items share their vector with another
    ids = [f"d{i}" for i in range(len(x))]
    index = make_index(kind)
    index.add(x, ids)
    verify_index(index, x, ids, sample=len(ids))


def test_loads_during_index_saves_are_always_complete(tmp_path: Path) -> None:
    import threading

    path = tmp_path / "index"
    sizes = [10, 40, 90]
    made = []
    for n in sizes:
        index = make_index("flat")
        index.add(_vectors(n), [f"i{i}" for i in range(n)])
        made.append(index)
    made[0].save(path)
    stop = threading.Event()
    failures: list[BaseException] = []

    def writer() -> None:
        k = 0
        try:
            while not stop.is_set():
                k += 1
                made[k % len(made)].save(path)
        except BaseException as exc:  # pragma: no cover - reported below
            failures.append(exc)

    thread = threading.Thread(target=writer)
    thread.start()
    seen = []
    try:
        for _ in range(60):
            loaded = load_index(path)
            assert len(loaded) in sizes and len(loaded.ids) == len(loaded)
            verify_index(loaded, _vectors(len(loaded)), [f"i{i}" for i in range(len(loaded))])
            seen.append(len(loaded))
    finally:
        stop.set()
        thread.join()
    assert not failures and len(seen) == 60
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".visualsim-tmp-")]


@pytest.mark.parametrize("inner", ["l2", "pq", "ivf"])
def test_a_faiss_file_of_another_structure_is_refused(
    saved: dict[str, Any], tmp_path: Path, inner: str
) -> None:
    import faiss

    path = _fresh(saved["flat"][0], tmp_path)
    labels = np.load(path / "labels.npy")
    x = _vectors(len(labels))
    if inner == "l2":
        wrapped = faiss.IndexFlatL2(DIM)
    elif inner == "pq":
        wrapped = faiss.IndexPQ(DIM, 2, 4)
        wrapped.train(np.tile(x, (2, 1)))
    else:
        wrapped = faiss.IndexIVFFlat(faiss.IndexFlatIP(DIM), DIM, 2, faiss.METRIC_INNER_PRODUCT)
        wrapped.train(x)
    index = faiss.IndexIDMap2(wrapped)
    index.add_with_ids(x, labels)
    faiss.write_index(index, str(path / "index.faiss"))
    del index
    _rehash(path, "index.faiss")
    with pytest.raises(CatalogError, match="IndexFlatIP|inner product"):
        load_index(path)
