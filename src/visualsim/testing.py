"""Conformance suites: check that an index or an extractor keeps visualsim's contract.

A third-party backend runs them in its own tests, with no pytest needed::

    from visualsim.testing import check_extractor, check_index

    check_index(lambda: MyIndex())  # a fresh, empty index per call
    check_extractor(MyExtractor(), images)

Each raises :class:`AssertionError` naming the broken promise (the checks are
explicit, so they run under ``python -O`` too) and returns ``None`` when
everything holds. The promises are those of :class:`visualsim.indexes.Index`
and :class:`visualsim.extractors.base.Extractor` (``docs/indexes.md``, "Adding
an index backend").
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import (
    ConfigError,
    DimensionMismatch,
    DuplicateIdError,
    InvalidVectorsError,
    NotFittedError,
    UnknownIdError,
)

_PICKLE_MAGIC = tuple(bytes([0x80, proto]) for proto in range(2, 6))


def _check(ok: Any, message: str) -> None:
    if not ok:
        raise AssertionError(message)


def _raises(what: type[BaseException], call: Callable[[], Any], message: str) -> BaseException:
    """Run ``call``; it must raise ``what`` (an error of another class fails with ``message``)."""
    try:
        call()
    except what as exc:
        return exc
    except Exception as exc:
        raise AssertionError(
            f"{message}: raised {type(exc).__name__} ({exc}), not {what.__name__}"
        ) from exc
    raise AssertionError(f"{message}: nothing was raised, expected {what.__name__}")


def clustered_vectors(n: int, dim: int, *, seed: int = 0) -> np.ndarray:
    """Return ``n`` unit ``float32`` vectors of ``dim`` numbers in about ``n / 50`` clusters.

    The data :func:`check_index` searches: clustered like image embeddings,
    so an approximate index meets its usual recall.

    Examples
    --------
    >>> x = clustered_vectors(100, 8)
    >>> x.shape, x.dtype, bool(np.allclose(np.linalg.norm(x, axis=1), 1, atol=1e-5))
    ((100, 8), dtype('float32'), True)
    """
    rng = np.random.default_rng(seed)
    n_clusters = max(4, n // 50)
    centers = rng.standard_normal((n_clusters, dim))
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    x = centers[rng.integers(0, n_clusters, n)] + 0.6 * rng.standard_normal((n, dim)) / np.sqrt(dim)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32)


def brute_force(vectors: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Return the top-``k`` cosine ``(scores, rows)`` per query by numpy, ties in row order."""
    x = np.asarray(vectors, dtype=np.float64)
    q = np.asarray(queries, dtype=np.float64)
    sims = (q / np.linalg.norm(q, axis=1, keepdims=True)) @ (
        x / np.linalg.norm(x, axis=1, keepdims=True)
    ).T
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sims, order, axis=1), order


# --------------------------------------------------------------------------- indexes


def check_index(
    factory: Callable[[], Any],
    *,
    exact: bool | None = None,
    min_recall: float = 0.9,
    score_tolerance: float = 1e-4,
    n: int = 500,
    dim: int = 16,
    directory: str | os.PathLike[str] | None = None,
) -> None:
    """Check that the indexes ``factory`` makes keep the :class:`~visualsim.indexes.Index` contract.

    It adds ids of every allowed type (``str``, ``int``, NumPy integers),
    searches, removes, adds back, saves and loads, and checks every answer
    against numpy brute force: scores are ``float32`` cosine similarities,
    highest first, ties in insertion order; ``k`` past the count returns
    what there is; a 1-d query is one row; raw vectors are normalised; an
    empty index, a repeated or unknown id, a wrong dimension, a bad ``k`` or a
    NaN raise the documented :class:`~visualsim.errors.VisualsimError`; the
    config survives JSON and the registry; a saved folder holds no pickle and
    loads (through :func:`~visualsim.indexes.load_index`) into an index that
    answers the same.

    Parameters
    ----------
    factory
        Called with no arguments, returns a new, empty index (of a class
        registered with :func:`~visualsim.indexes.register_index`).
    exact
        Whether results must equal brute force; default the index's own
        ``is_exact``. An approximate index must find ``min_recall`` of the
        true top 10.
    min_recall
        Recall@10 an approximate index must reach on the clustered test data.
    score_tolerance
        How far a reported score may be from the returned id's true cosine
        (loosen it only for a backend that scores from compressed codes).
    n, dim
        Size of the test data.
    directory
        Where to save (a new sub-folder is made); default a temporary folder,
        removed afterwards.

    Raises
    ------
    AssertionError
        Naming the first promise the index breaks.

    Examples
    --------
    >>> from visualsim.indexes import FlatIndex
    >>> check_index(FlatIndex)
    """
    if directory is None:
        with tempfile.TemporaryDirectory(prefix="visualsim-check-") as tmp:
            _check_index(factory, exact, min_recall, score_tolerance, n, dim, Path(tmp))
        return
    base = Path(directory)
    base.mkdir(parents=True, exist_ok=True)
    _check_index(
        factory,
        exact,
        min_recall,
        score_tolerance,
        n,
        dim,
        Path(tempfile.mkdtemp(prefix="check-index-", dir=base)),
    )


def _check_index(
    factory: Callable[[], Any],
    exact: bool | None,
    min_recall: float,
    score_tolerance: float,
    n: int,
    dim: int,
    folder: Path,
) -> None:
    from .indexes.base import INDEXES, load_index

    _check(n >= 50 and dim >= 2, f"check_index needs n >= 50 and dim >= 2, got n={n}, dim={dim}")
    index = factory()
    kind = type(index).__name__
    for flag in ("is_exact", "retrains", "filters_natively"):
        _check(
            isinstance(getattr(type(index), flag, None), bool),
            f"{kind}.{flag} must be a bool class attribute (see visualsim.indexes.Index)",
        )
    if exact is None:
        exact = bool(type(index).is_exact)
    try:
        spec = INDEXES.to_spec(index)
    except ConfigError as exc:
        raise AssertionError(f"{kind} cannot be saved: {exc}") from exc

    # ------------------------------------------------------------ empty
    _check(len(index) == 0 and list(index.ids) == [], f"a new {kind} must be empty")
    _raises(NotFittedError, lambda: index.search(np.ones(dim), 1), f"searching an empty {kind}")

    # ------------------------------------------------------------ add: every id type
    x = clustered_vectors(n, dim, seed=1)
    queries = clustered_vectors(20, dim, seed=2)
    given: list[Any] = [
        f"item-{i}" if i % 3 == 0 else (np.int64(i) if i % 3 == 1 else i) for i in range(n)
    ]
    given[0], given[3] = "3", 3  # a str and an int that print alike are two ids
    ids: list[Any] = [int(i) if isinstance(i, np.integer) else i for i in given]
    index.add(x[: n // 2], given[: n // 2])
    index.add(x[n // 2 :], np.asarray(given[n // 2 :], dtype=object))
    _check(len(index) == n, f"{kind} holds {len(index)} vectors after adding {n}")
    _check(index.dim == dim, f"{kind}.dim is {index.dim!r} after adding {dim}-d vectors")
    stored = list(index.ids)
    _check(stored == ids, f"{kind}.ids must list the ids in insertion order, NumPy ints as int")
    _check(
        all(type(a) is type(b) for a, b in zip(stored, ids, strict=True)),
        f"{kind}.ids changed an id's type (str '3' and int 3 are different ids)",
    )

    copies = getattr(index, "stored_vectors", None)
    got_rows = copies(ids[:5]) if callable(copies) else None
    if got_rows is not None:
        _check(
            np.allclose(got_rows, x[:5], atol=1e-5),
            f"{kind}.stored_vectors returns other vectors than were added",
        )

    # ------------------------------------------------------------ search
    k = 10
    _search_matches(index, x, ids, queries, k, exact, min_recall, score_tolerance)
    one_scores, one_ids = index.search(queries[0], k)
    _check(
        np.shape(one_scores) == (1, k) and len(one_ids) == 1,
        f"{kind}: a 1-d query must be answered as one row, got scores of shape "
        f"{np.shape(one_scores)}",
    )
    raw_scores, raw_ids = index.search(queries * 0.01, k)
    unit_scores, unit_ids = index.search(queries, k)
    _check(raw_ids == unit_ids, f"{kind}: scaling the queries changed the results")
    _check(
        np.allclose(raw_scores, unit_scores, atol=1e-5),
        f"{kind}: scaling the queries changed the scores (they must be cosine similarities)",
    )

    # ------------------------------------------------------------ refusals
    _raises(DuplicateIdError, lambda: index.add(x[:1], [ids[5]]), f"{kind}: adding a stored id")
    _raises(DuplicateIdError, lambda: index.add(x[:2], ["new", "new"]), f"{kind}: a repeated id")
    _check(len(index) == n, f"{kind}: a refused add must add nothing")
    wrong = np.ones((1, dim + 1), np.float32)
    _raises(DimensionMismatch, lambda: index.add(wrong, ["wrong"]), f"{kind}: adding {dim + 1}-d")
    _raises(DimensionMismatch, lambda: index.search(wrong, 1), f"{kind}: a {dim + 1}-d query")
    nan = np.full((1, dim), np.nan, np.float32)
    _raises(InvalidVectorsError, lambda: index.add(nan, ["nan"]), f"{kind}: adding a NaN row")
    _raises(
        InvalidVectorsError, lambda: index.add(x[:2], ["one"]), f"{kind}: 2 rows but 1 id given"
    )
    _raises(ConfigError, lambda: index.search(queries, 0), f"{kind}: searching with k=0")
    _raises(
        UnknownIdError,
        lambda: index.remove([ids[1], "no-such-id"]),
        f"{kind}: removing an unknown id",
    )
    _check(len(index) == n and ids[1] in index.ids, f"{kind}: a refused remove must remove nothing")

    # ------------------------------------------------------------ ties, remove, add back
    twin = x[7:8]
    index.add(np.repeat(twin, 3, axis=0), ["dup-c", "dup-a", "dup-b"])
    _, got = index.search(twin, 4)
    _check(
        got[0] == [ids[7], "dup-c", "dup-a", "dup-b"],
        f"{kind}: equal scores must come in insertion order, got {got[0]}",
    )
    index.remove(["dup-c"])
    index.add(twin, ["dup-c"])
    _, got = index.search(twin, 4)
    _check(
        got[0] == [ids[7], "dup-a", "dup-b", "dup-c"],
        f"{kind}: an id removed and added back is the newest, got {got[0]}",
    )
    index.remove(["dup-a", "dup-b", "dup-c"])
    gone = ids[::5]
    index.remove(gone)
    kept = [i for i in range(n) if i % 5]
    kept_ids = [ids[i] for i in kept]
    _check(len(index) == len(kept), f"{kind} holds {len(index)} after removals, not {len(kept)}")
    _check(list(index.ids) == kept_ids, f"{kind}.ids after remove must keep insertion order")
    _, found = index.search(x[::5][:20], k)
    dropped = set(gone)
    _check(
        not any(i in dropped for row in found for i in row),
        f"{kind}: a removed id is still returned",
    )
    _search_matches(index, x[kept], kept_ids, queries, k, exact, min_recall, score_tolerance)
    index.add(x[::5], gone)
    _check(len(index) == n, f"{kind}: ids removed and added back must be stored again")
    order = kept_ids + list(gone)
    _search_matches(
        index, np.vstack([x[kept], x[::5]]), order, queries, k, exact, min_recall, score_tolerance
    )

    # ------------------------------------------------------------ config
    config = index.get_config()
    try:
        text = json.dumps(config, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise AssertionError(f"{kind}.get_config() is not JSON: {exc}") from exc
    rebuilt = INDEXES.build(spec["name"], json.loads(text))
    _check(type(rebuilt) is type(index), f"the registry rebuilds {type(rebuilt).__name__}")
    _check(
        rebuilt.get_config() == json.loads(text),
        f"{kind}: from_config(get_config()) gives another config",
    )

    # ------------------------------------------------------------ save / load
    target = folder / "index"
    index.save(target)
    _check_no_pickle(target, kind)
    loaded = load_index(target)
    _check(type(loaded) is type(index), f"load_index gave a {type(loaded).__name__}, not {kind}")
    _check(list(loaded.ids) == order, f"{kind}: the loaded index holds other ids")
    _check(loaded.dim == dim, f"{kind}: the loaded index has dim {loaded.dim!r}")
    a_scores, a_ids = index.search(queries, k)
    b_scores, b_ids = loaded.search(queries, k)
    _check(a_ids == b_ids, f"{kind}: the loaded index answers with other ids")
    _check(np.allclose(a_scores, b_scores, atol=1e-6), f"{kind}: the loaded index scores otherwise")
    extra = clustered_vectors(5, dim, seed=3)
    loaded.add(extra, ["after-load-0", 10**12, "after-load-2", -7, "after-load-4"])
    _, got = loaded.search(extra, 1)
    _check(
        [row[0] for row in got] == ["after-load-0", 10**12, "after-load-2", -7, "after-load-4"],
        f"{kind}: vectors added after load are not found by their own vector",
    )
    loaded.save(target)  # replacing a saved index
    again = load_index(target)
    _check(len(again) == n + 5, f"{kind}: saving over a saved index must replace it")

    # ------------------------------------------------------------ k past the count, emptied
    small = factory()
    small.add(x[:5], ["a", "b", "c", "d", "e"])
    scores, got = small.search(queries[:2], 50)
    _check(
        np.shape(scores) == (2, 5) and all(sorted(row) == ["a", "b", "c", "d", "e"] for row in got),
        f"{kind}: k past the count must return every stored vector, got shape {np.shape(scores)}",
    )
    small.remove(["a", "b", "c", "d", "e"])
    _check(len(small) == 0, f"{kind}: removing every id must leave it empty")
    _raises(NotFittedError, lambda: small.search(queries[:1], 1), f"searching an emptied {kind}")
    small.add(x[5:7], ["f", "a"])
    _, got = small.search(x[5:7], 1)
    _check(got == [["f"], ["a"]], f"{kind}: an emptied index must take new vectors, got {got}")


def _search_matches(
    index: Any,
    x: np.ndarray,
    ids: Sequence[Any],
    queries: np.ndarray,
    k: int,
    exact: bool,
    min_recall: float,
    score_tolerance: float,
) -> None:
    """Check one search of ``index`` (holding ``x`` under ``ids``) against brute force."""
    kind = type(index).__name__
    scores, got = index.search(queries, k)
    kk = min(k, len(x))
    _check(isinstance(scores, np.ndarray), f"{kind}.search must return scores as a numpy array")
    _check(scores.dtype == np.float32, f"{kind}: scores must be float32, got {scores.dtype}")
    _check(
        scores.shape == (len(queries), kk),
        f"{kind}: scores of shape {scores.shape}, expected {(len(queries), kk)}",
    )
    _check(
        isinstance(got, list) and len(got) == len(queries) and all(len(r) == kk for r in got),
        f"{kind}.search must return one list of {kk} ids per query",
    )
    _check(bool(np.isfinite(scores).all()), f"{kind}: scores must be finite (no missing ids)")
    _check(
        bool((np.diff(scores, axis=1) <= 1e-6).all()),
        f"{kind}: scores must come highest first",
    )
    row_of = {id_: r for r, id_ in enumerate(ids)}
    true_scores, true_rows = brute_force(x, queries, kk)
    xn = x.astype(np.float64) / np.linalg.norm(x.astype(np.float64), axis=1, keepdims=True)
    qn = queries.astype(np.float64) / np.linalg.norm(queries, axis=1, keepdims=True)
    hits = 0
    for j, row in enumerate(got):
        _check(len(set(row)) == len(row), f"{kind}: query {j} returns an id twice: {row}")
        unknown = [i for i in row if i not in row_of]
        _check(not unknown, f"{kind}: query {j} returns ids that are not stored: {unknown[:3]}")
        rows = [row_of[i] for i in row]
        real = xn[rows] @ qn[j]
        worst = float(np.max(np.abs(real - scores[j])))
        _check(
            worst <= score_tolerance,
            f"{kind}: query {j}'s scores are off the returned ids' cosine by {worst:.2g}",
        )
        hits += len(set(rows) & set(true_rows[j].tolist()))
    if exact:
        worst = float(np.max(np.abs(true_scores - scores)))
        _check(
            worst <= max(score_tolerance, 1e-5),
            f"{kind} is exact but its scores differ from brute force by {worst:.2g}",
        )
    else:
        recall = hits / (len(queries) * kk)
        _check(
            recall >= min_recall,
            f"{kind}: recall@{kk} {recall:.3f} is below {min_recall} on clustered data",
        )


def _check_no_pickle(folder: Path, kind: str) -> None:
    """Every file under ``folder`` must load without unpickling anything."""
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        _check(
            path.suffix not in (".pkl", ".pickle", ".joblib"),
            f"{kind} saved a pickle: {path.name}",
        )
        with open(path, "rb") as fh:
            head = fh.read(2)
        _check(head not in _PICKLE_MAGIC, f"{kind} saved a pickle: {path.relative_to(folder)}")
        if path.suffix == ".npy":
            try:
                np.load(path, allow_pickle=False, mmap_mode="r")
            except ValueError as exc:
                raise AssertionError(
                    f"{kind} saved {path.relative_to(folder)}, which needs pickle: {exc}"
                ) from exc


# --------------------------------------------------------------------------- extractors


def check_extractor(extractor: Any, images: Iterable[Any] | None, *, atol: float = 1e-5) -> None:
    """Check that ``extractor`` keeps the :class:`~visualsim.extractors.base.Extractor` contract.

    ``extract`` gives ``(n, dim)`` ``float32`` finite unit rows; the same
    vectors again (deterministic), from a one-pass generator (it streams),
    one image at a time (batches do not change a vector), and from the
    extractor the registry rebuilds out of ``get_config()`` (which survives
    JSON); no images give a ``(0, dim)`` array.

    Parameters
    ----------
    extractor
        The extractor, of a class registered with
        :func:`~visualsim.register_extractor`.
    images
        A few image-likes it can read (paths, arrays, PIL images); ``None``
        for an extractor without a model (such as
        :class:`~visualsim.PrecomputedVectors`): only ``dim`` and the config
        are checked.
    atol
        How far a vector may move between runs and batchings.

    Raises
    ------
    AssertionError
        Naming the first promise the extractor breaks.

    Examples
    --------
    >>> import numpy as np
    >>> from visualsim import ColorHistogramExtractor
    >>> red = np.zeros((8, 8, 3), np.uint8); red[..., 0] = 255
    >>> check_extractor(ColorHistogramExtractor(), [red, 255 - red])
    """
    from .extractors.base import EXTRACTORS

    kind = type(extractor).__name__
    dim = extractor.dim
    _check(
        isinstance(dim, int) and not isinstance(dim, bool) and dim >= 1,
        f"{kind}.dim must be a positive int, got {dim!r}",
    )
    try:
        spec = EXTRACTORS.to_spec(extractor)
        text = json.dumps(spec, allow_nan=False)
    except ConfigError as exc:
        raise AssertionError(f"{kind} cannot be saved: {exc}") from exc
    except (TypeError, ValueError) as exc:
        raise AssertionError(f"{kind}.get_config() is not JSON: {exc}") from exc
    rebuilt = EXTRACTORS.from_spec(json.loads(text))
    _check(type(rebuilt) is type(extractor), f"the registry rebuilds {type(rebuilt).__name__}")
    _check(
        rebuilt.get_config() == json.loads(text)["config"],
        f"{kind}: from_config(get_config()) gives another config",
    )
    _check(rebuilt.dim == dim, f"{kind}: the rebuilt extractor has dim {rebuilt.dim}, not {dim}")
    if images is None:
        return
    items = list(images)
    _check(len(items) >= 2, "check_extractor needs at least two images")
    v = extractor.extract(items)
    _check(isinstance(v, np.ndarray), f"{kind}.extract must return a numpy array")
    _check(v.shape == (len(items), dim), f"{kind}.extract gave {v.shape}, not {(len(items), dim)}")
    _check(v.dtype == np.float32, f"{kind}.extract gave {v.dtype} vectors, not float32")
    _check(bool(np.isfinite(v).all()), f"{kind}.extract gave NaN or infinite numbers")
    norms = np.linalg.norm(v.astype(np.float64), axis=1)
    _check(
        bool(np.allclose(norms, 1.0, atol=1e-4)),
        f"{kind}.extract rows must be unit length, got norms {norms[:5].round(4).tolist()}",
    )

    def same(other: np.ndarray, what: str) -> None:
        _check(
            isinstance(other, np.ndarray) and other.shape == v.shape,
            f"{kind}: {what} gave shape {np.shape(other)}, not {v.shape}",
        )
        worst = float(np.max(np.abs(other.astype(np.float64) - v)))
        _check(worst <= atol, f"{kind}: {what} moved a vector by {worst:.2g} (atol {atol})")

    same(extractor.extract(items), "a second run (not deterministic)")
    same(extractor.extract(iter(items)), "a one-pass generator (it must stream)")
    same(extractor.extract(items, batch_size=1), "batch_size=1")
    same(rebuilt.extract(items), "the extractor rebuilt from its config")
    empty = extractor.extract([])
    _check(
        isinstance(empty, np.ndarray) and empty.shape == (0, dim),
        f"{kind}.extract([]) gave shape {np.shape(empty)}, not {(0, dim)}",
    )


__all__ = ["brute_force", "check_extractor", "check_index", "clustered_vectors"]
