"""A live catalogue: mutations at the cost of the change, brute-force agreement, concurrency,
and files that never lose data."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from support import VectorExtractor, _unit
from visualsim import CatalogError, Recommender
from visualsim.filters import FilterError, parse_filter
from visualsim.search import Segments


def _brute(
    live: dict[Any, tuple[np.ndarray, dict[str, Any]]], q: np.ndarray, k: int, pred: Any = None
) -> list[tuple[Any, float]]:
    scored = [(i, float(v @ q)) for i, (v, m) in live.items() if pred is None or pred(m)]
    scored.sort(key=lambda t: -t[1])
    return scored[:k]


def _agree(rec: Recommender, live: dict[Any, Any], q: np.ndarray, k: int, where: Any, pred: Any):
    got = rec.query_vector(q, k, where=where)
    want = _brute(live, q, k, pred)
    assert len(got) == len(want)
    np.testing.assert_allclose([r.score for r in got], [s for _, s in want], atol=1e-5)
    for r in got:
        assert r.id in live and (pred is None or pred(live[r.id][1]))


CATS = ["shoes", "bags", "hats"]


class LiveCatalogue(RuleBasedStateMachine):
    """Any sequence of writes, saves and loads answers like brute force over the live items."""

    def __init__(self) -> None:
        super().__init__()
        self.rng = np.random.default_rng(0)
        self.live: dict[Any, tuple[np.ndarray, dict[str, Any]]] = {}
        self.next_id = 0
        self.folder: Path | None = None

    @initialize(
        index=st.sampled_from(["flat", "hnsw", "ivf"]),
        delta=st.sampled_from([2, 1000]),
        partition_by=st.sampled_from([None, "category"]),
        exact_small=st.booleans(),
    )
    def start(self, index: str, delta: int, partition_by: str | None, exact_small: bool) -> None:
        import tempfile

        import visualsim.search as search

        # off: even a handful of allowed rows go through the (partition) index
        self.limits = (search.EXACT_LIMIT, search.EXACT_WORK)
        if not exact_small:
            search.EXACT_LIMIT, search.EXACT_WORK = 0, 0

        self.tmp = Path(tempfile.mkdtemp(prefix="live-sm-"))
        self.rec = Recommender(VectorExtractor(), index, partition_by=partition_by)
        self.delta = delta
        self._add(5)

    def _set_delta(self) -> None:
        seg = self.rec._segments_
        if seg is not None:
            seg.delta_limit = self.delta

    def _add(self, n: int) -> None:
        x = _unit(self.rng, n)
        ids = [f"i{self.next_id + j}" if j % 2 else self.next_id + j for j in range(n)]
        self.next_id += n
        meta = [
            {"category": CATS[int(self.rng.integers(3))], "price": float(self.rng.integers(0, 100))}
            for _ in ids
        ]
        self._set_delta()
        self.rec.add_vectors(x, ids, meta)
        self._set_delta()
        for i, v, m in zip(ids, x, meta, strict=True):
            self.live[i] = (v, m)

    def teardown(self) -> None:
        import visualsim.search as search

        if hasattr(self, "limits"):
            search.EXACT_LIMIT, search.EXACT_WORK = self.limits
        if hasattr(self, "tmp"):  # one folder per example: leave none behind in /tmp
            shutil.rmtree(self.tmp, ignore_errors=True)

    @rule(n=st.integers(1, 6))
    def add(self, n: int) -> None:
        self._add(n)

    @precondition(lambda self: len(self.live) > 1)
    @rule(data=st.data())
    def remove(self, data: st.DataObject) -> None:
        victim = data.draw(st.sampled_from(sorted(self.live, key=str)))
        self.rec.remove([victim])
        del self.live[victim]

    @precondition(lambda self: len(self.live) > 0)
    @rule(data=st.data())
    def upsert(self, data: st.DataObject) -> None:
        item = data.draw(st.sampled_from(sorted(self.live, key=str)))
        v = _unit(self.rng, 1)
        meta = {"category": "bags", "price": 1.0}
        self.rec.upsert_vectors(v, [item], [meta])
        self.live[item] = (v[0], meta)

    @precondition(lambda self: len(self.live) > 0)
    @rule(data=st.data(), price=st.integers(0, 100))
    def update_metadata(self, data: st.DataObject, price: int) -> None:
        item = data.draw(st.sampled_from(sorted(self.live, key=str)))
        self.rec.update_metadata(item, {"price": float(price)})
        v, m = self.live[item]
        self.live[item] = (v, {**m, "price": float(price)})

    @precondition(lambda self: len(self.live) > 0)
    @rule(data=st.data(), category=st.sampled_from([*CATS, "toys"]))
    def move_category(self, data: st.DataObject, category: str) -> None:
        # a sealed row whose partition value changes is found outside its old partition
        item = data.draw(st.sampled_from(sorted(self.live, key=str)))
        self.rec.update_metadata(item, {"category": category})
        v, m = self.live[item]
        self.live[item] = (v, {**m, "category": category})

    @rule()
    def compact(self) -> None:
        self.rec.compact()
        self._set_delta()

    @rule()
    def save_and_load(self) -> None:
        folder = self.tmp / "cat"
        self.rec.save(folder, overwrite=True)
        self.rec = Recommender.load(folder)
        self._set_delta()

    @precondition(lambda self: len(self.live) > 0)
    @invariant()
    def answers_like_brute_force(self) -> None:
        assert sorted(self.rec.ids_, key=str) == sorted(self.live, key=str)
        q = _unit(self.rng, 1)[0]
        k = 4
        _agree(self.rec, self.live, q, k, None, None)
        _agree(self.rec, self.live, q, k, "category == 'bags'", lambda m: m["category"] == "bags")
        _agree(self.rec, self.live, q, k, "price < 40", lambda m: m["price"] < 40)
        _agree(
            self.rec,
            self.live,
            q,
            k,
            "category in ['bags', 'toys'] and price < 60",
            lambda m: m["category"] in ("bags", "toys") and m["price"] < 60,
        )
        _agree(
            self.rec,
            self.live,
            q,
            k,
            "category == 'hats' or category == 'toys'",
            lambda m: m["category"] in ("hats", "toys"),
        )
        some = next(iter(self.live))
        got = self.rec.similar_to(some, k)
        assert some not in [r.id for r in got]


TestLiveCatalogue = LiveCatalogue.TestCase
TestLiveCatalogue.settings = settings(
    max_examples=int(os.environ.get("LIVE_EXAMPLES", "20")),
    stateful_step_count=15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


# -- cost of the change ------------------------------------------------------------------


def test_hnsw_remove_is_a_tombstone_not_a_rebuild() -> None:
    rng = np.random.default_rng(1)
    rec = Recommender(VectorExtractor(), "hnsw").add_vectors(_unit(rng, 300), list(range(300)))
    seg = rec._segments_
    assert isinstance(seg, Segments)
    seg.flush(rec._store_)  # type: ignore[arg-type]
    index = seg.index
    before = len(index)
    rec.remove([5, 6, 7])
    assert seg.index is index and len(index) == before  # nothing rebuilt
    hits = rec.query_vector(rec._store_.vectors_f32(slice(5, 6))[0], 300)  # type: ignore[union-attr]
    assert {5, 6, 7}.isdisjoint(r.id for r in hits) and len(hits) == 297
    rec.compact()
    assert len(rec._segments_.index) == 297  # type: ignore[union-attr]


def test_adds_past_the_delta_limit_are_indexed_with_rows_as_labels() -> None:
    rng = np.random.default_rng(2)
    rec = Recommender(VectorExtractor(), "hnsw").add_vectors(_unit(rng, 10), list(range(10)))
    seg = rec._segments_
    assert seg is not None
    seg.delta_limit = 16
    for start in range(10, 60, 7):
        rec.add_vectors(_unit(rng, 7), list(range(start, start + 7)))
    assert seg.indexed_upto >= 50 and seg.index._ids.next_label == seg.indexed_upto
    x = rec.embeddings_
    for row in (0, 33, 55):
        assert rec.query_vector(x[row], 1)[0].id == rec.ids_[row]


def test_an_approximate_index_returns_k_when_k_items_match() -> None:
    rng = np.random.default_rng(3)
    n = 5000
    meta = [{"group": "rare" if i % 500 == 0 else "common"} for i in range(n)]
    rec = Recommender(VectorExtractor(), "hnsw").add_vectors(_unit(rng, n), list(range(n)), meta)
    rec._segments_.flush(rec._store_)  # type: ignore[union-attr,arg-type]
    hits = rec.query_vector(_unit(rng, 1)[0], 10, where="group == 'rare'")
    assert len(hits) == 10 and all(r.metadata["group"] == "rare" for r in hits)


def test_saving_after_a_few_adds_writes_only_the_change(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    n = 20_000
    rec = Recommender(VectorExtractor(dim=64), "hnsw")
    rec.add_vectors(_unit(rng, n, 64), list(range(n)), [{"c": i % 7} for i in range(n)])
    rec.compact()  # everything in the HNSW graph
    path = rec.save(tmp_path / "cat")
    size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    before = {p.name for p in path.iterdir()}
    for i in range(20):
        rec.add_vectors(_unit(rng, 1, 64), [f"new-{i}"], [{"c": 1}])
    rec.remove([3])
    rec.update_metadata(4, {"c": 99})
    rec.save(path, overwrite=True)
    after = {p.name for p in path.iterdir()}
    new_bytes = sum((path / name).stat().st_size for name in after - before if name != "x")
    new_bytes += (path / "manifest.json").stat().st_size
    assert new_bytes < 0.02 * size
    loaded = Recommender.load(path)
    assert len(loaded) == n + 20 - 1 and loaded.metadata_of(4) == {"c": 99} and 3 not in loaded
    assert loaded.query_vector(loaded.vector_of("new-7"), 1)[0].id == "new-7"


# -- concurrency -------------------------------------------------------------------------


def test_readers_never_fail_or_see_removed_items_while_one_writes() -> None:
    rng = np.random.default_rng(5)
    rec = Recommender(VectorExtractor(), "hnsw")
    rec.add_vectors(_unit(rng, 400), list(range(400)), [{"c": i % 4} for i in range(400)])
    removed: set[int] = set()
    lock = threading.Lock()
    errors: list[BaseException] = []
    stale: list[Any] = []
    stop = threading.Event()
    ops = [0]

    def reader(seed: int) -> None:
        r = np.random.default_rng(seed)
        while not stop.is_set():
            with lock:
                gone_before = set(removed)
            try:
                q = _unit(r, 1)[0]
                hits = rec.query_vector(q, 10, where="c != 1" if seed % 2 else None)
            except BaseException as exc:
                errors.append(exc)
                return
            stale.extend(h.id for h in hits if h.id in gone_before)
            ops[0] += 1

    def writer() -> None:
        nxt = 400
        for step in range(600):
            try:
                rec.add_vectors(_unit(rng, 1), [nxt], [{"c": step % 4}])
                victim = nxt - 200
                rec.remove([victim])
                with lock:
                    removed.add(victim)
                if step % 50 == 0:
                    rec.update_metadata(nxt, {"c": 1})
                nxt += 1
            except BaseException as exc:
                errors.append(exc)
                return
            ops[0] += 1
        stop.set()

    threads = [threading.Thread(target=reader, args=(s,)) for s in range(4)]
    threads.append(threading.Thread(target=writer))
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    stop.set()
    assert not errors, errors[:3]
    assert not stale
    assert ops[0] > 600


# -- files that never lose data ----------------------------------------------------------


def test_overwrite_refuses_a_folder_that_is_not_a_catalogue(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "cat.jpg").write_bytes(b"jpeg")
    (photos / "report.pdf").write_bytes(b"%PDF-1.4")
    rec = Recommender(VectorExtractor()).add_vectors(_unit(np.random.default_rng(6), 3), [1, 2, 3])
    with pytest.raises(CatalogError):
        rec.save(photos, overwrite=True)
    assert sorted(p.name for p in photos.iterdir()) == ["cat.jpg", "report.pdf"]
    assert (photos / "report.pdf").read_bytes() == b"%PDF-1.4"


def test_overwriting_another_catalogue_replaces_only_its_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    a = Recommender(VectorExtractor()).add_vectors(_unit(rng, 5), list("abcde"))
    b = Recommender(VectorExtractor(), "hnsw").add_vectors(_unit(rng, 4), list("wxyz"))
    path = a.save(tmp_path / "cat")
    (path / "README.txt").write_text("notes the shop keeps here")
    b.save(path, overwrite=True)
    loaded = Recommender.load(path)
    assert loaded.ids_ == list("wxyz")
    names = {p.name for p in path.iterdir()}
    assert "README.txt" in names
    manifest = json.loads((path / "manifest.json").read_text())
    referenced = {c[k] for c in manifest["chunks"] for k in ("vectors", "ids", "metadata")}
    assert not [
        n
        for n in names
        if n.startswith("chunk-")
        and n not in referenced | {c["sources"] for c in manifest["chunks"]}
    ]


def test_readers_always_get_a_complete_catalogue_during_overwrites(tmp_path: Path) -> None:
    rng = np.random.default_rng(8)
    versions = [
        Recommender(VectorExtractor()).add_vectors(_unit(rng, 50 + i), list(range(50 + i)))
        for i in range(3)
    ]
    path = versions[0].save(tmp_path / "cat")
    errors: list[BaseException] = []
    sizes: set[int] = set()
    done = threading.Event()

    def reader() -> None:
        while not done.is_set():
            try:
                sizes.add(len(Recommender.load(path)))
            except BaseException as exc:
                errors.append(exc)
                return

    t = threading.Thread(target=reader)
    t.start()
    for i in range(30):  # three writers taking turns, each knowingly over the others
        versions[i % 3].save(path, overwrite=True, on_conflict="overwrite")
    done.set()
    t.join(timeout=60)
    assert not errors, errors[:3]
    assert sizes <= {50, 51, 52}


KILL_SCRIPT = r"""
import sys, numpy as np
sys.path.insert(0, sys.argv[2])
from support import VectorExtractor, _unit
from visualsim import Recommender
rng = np.random.default_rng(int(sys.argv[3]))
while True:
    n = int(rng.integers(20, 60))
    Recommender(VectorExtractor(), "hnsw").add_vectors(_unit(rng, n), list(range(n))).save(
        sys.argv[1], overwrite=True)
    print("saved", n, flush=True)
"""


def test_kill_9_during_overwrites_always_leaves_a_whole_catalogue(tmp_path: Path) -> None:
    rng = np.random.default_rng(9)
    path = tmp_path / "cat"
    Recommender(VectorExtractor(), "hnsw").add_vectors(_unit(rng, 10), list(range(10))).save(path)
    script = tmp_path / "saver.py"
    script.write_text(KILL_SCRIPT)
    tests_dir = str(Path(__file__).resolve().parents[1])
    for attempt in range(8):
        proc = subprocess.Popen(
            [sys.executable, str(script), str(path), tests_dir, str(attempt)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        proc.stdout.readline()  # at least one save done: kill it somewhere in the next ones
        threading.Event().wait(float(rng.uniform(0.0, 0.3)))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        loaded = Recommender.load(path)  # complete, checksums and index verified
        assert 20 <= len(loaded) < 60 or len(loaded) == 10
    # the next save cleans up what the killed ones left behind
    Recommender(VectorExtractor()).add_vectors(_unit(rng, 3), [1, 2, 3]).save(path, overwrite=True)
    manifest = json.loads((path / "manifest.json").read_text())
    top = {rel.split("/")[0] for rel in manifest["files"]} | {"manifest.json"}
    assert {p.name for p in path.iterdir()} == top


def test_bad_where_inputs_are_clear_errors() -> None:
    rec = Recommender(VectorExtractor()).add_vectors(
        _unit(np.random.default_rng(10), 3), ["a", "b", "c"], [{"c": 1}, {"c": 2}, {}]
    )
    q = rec.vector_of("a")
    with pytest.raises(FilterError, match="lable"):
        rec.query_vector(q, where="lable == 'coffee'")
    with pytest.raises(FilterError, match="values must be strings"):
        rec.query_vector(q, where={"c": {"nested": 1}})
    assert [r.id for r in rec.query_vector(q, 3, exclude="a")] == [
        r.id for r in rec.query_vector(q, 3) if r.id != "a"
    ]
    assert parse_filter("c == 1") == parse_filter("c==1")
