"""What a query asks and what it gets back: the plan of one search and its results.

The :class:`~visualsim.recommender.Recommender` checks a query's arguments
here (:func:`plan`), then runs the plan under its read lock (:func:`run`)
against its :class:`~visualsim.store.Store` and
:class:`~visualsim.search.Segments`: the filter becomes a row mask, the rows
come from the segments, repeats are collapsed (``distinct``) and the rows
become :class:`Recommendation` objects. The duplicate pairs and groups of a
store, the regions of a shopper's photo and the live-items view
(``rec.index_``) live here too. Nothing here imports the recommender.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import ConfigError, DimensionMismatch, NotFittedError
from .filters import Expr, FilterError, to_expr
from .ids import Id
from .indexes.base import ReadWriteLock
from .search import Segments
from .store import Store

MAX_DROPPED = 256
"""Excluded ids up to which a query without a filter searches deeper and drops them.

More than this (or any filter) become a row mask pushed into the index instead.
"""

if TYPE_CHECKING:
    from .crop import Region
    from .duplicates import DuplicateGroup

Where = str | Mapping[str, Any] | Callable[[Mapping[str, Any]], bool] | Expr
"""A filter: filter-language text, a ``{field: value}`` dict, a parsed tree, or a function."""
Distinct = bool | str | None
"""``distinct``: ``True`` one result per photo, ``False``/``None`` no collapsing, or a field."""


@dataclass(frozen=True)
class Recommendation:
    """One recommended catalogue item.

    Attributes
    ----------
    id
        The item's id.
    score
        Cosine similarity to the query, in ``[-1, 1]``; higher is more alike.
    rank
        1 for the best match.
    metadata
        A copy of the item's stored metadata (a plain, JSON-safe dict).
    source
        Where the item's image is (a path on this machine), if it was added
        from a path; never included in :meth:`to_dict`.
    """

    id: Id
    score: float
    rank: int
    metadata: Mapping[str, Any] = field(default_factory=dict)
    source: str | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-safe dict (for ``--json`` output and web services)."""
        return {
            "rank": self.rank,
            "id": self.id,
            "score": self.score,
            "metadata": dict(self.metadata),
        }


@dataclass(frozen=True)
class RegionResults:
    """One product found in a photo by :meth:`Recommender.query_regions`, and its results.

    Attributes
    ----------
    box
        ``(left, top, right, bottom)`` in the photo's pixels.
    score
        How strongly the region stands out (its share of the photo's, 0-1).
    results
        The recommendations for that region, best first.
    """

    box: tuple[int, int, int, int]
    score: float
    results: list[Recommendation]

    def to_dict(self) -> dict[str, Any]:
        """Return the region and its results as a JSON-ready dict."""
        return {
            "box": list(self.box),
            "score": round(float(self.score), 6),
            "results": [r.to_dict() for r in self.results],
        }


@dataclass(frozen=True)
class Plan:
    """One query's checked arguments: what to search for and what to keep.

    Attributes
    ----------
    k
        Results wanted per query.
    expr, func
        The filter as a parsed tree, or as a function of the metadata (or neither).
    skip
        Ids never to return.
    min_score
        Results below this cosine similarity are dropped.
    distinct
        ``True`` one result per photo, ``False`` none collapsed, or a field name.
    seed
        An id whose photo (or ``distinct`` value) is excluded like a result already shown.
    """

    k: int
    expr: Expr | None = None
    func: Callable[[Mapping[str, Any]], bool] | None = None
    skip: list[Id] = field(default_factory=list)
    min_score: float | None = None
    distinct: bool | str = True
    seed: Id | None = None


def plan(
    k: Any,
    where: Where | None = None,
    exclude: Iterable[Id] | Id | None = None,
    min_score: Any = None,
    distinct: Any = True,
    seed: Id | None = None,
) -> Plan:
    """Return the checked :class:`Plan` of a query; a bad argument raises naming it.

    Examples
    --------
    >>> p = plan(5, "price < 9", exclude="a", distinct="style")
    >>> p.k, p.skip, p.distinct
    (5, ['a'], 'style')
    """
    k = check_k(k)
    checked = check_distinct(distinct)
    if min_score is not None and (
        isinstance(min_score, bool) or not isinstance(min_score, (int, float, np.floating))
    ):
        raise ConfigError(f"min_score must be a number, got {min_score!r}")
    min_score = None if min_score is None else float(min_score)
    skip = id_list(exclude)
    if seed is not None:
        skip = [seed, *skip]
    if where is None:
        return Plan(k, None, None, skip, min_score, checked, seed)
    if callable(where) and not isinstance(where, (str, Mapping)):
        return Plan(k, None, where, skip, min_score, checked, seed)
    return Plan(k, to_expr(where), None, skip, min_score, checked, seed)


def run(
    store: Store,
    segments: Segments,
    version: int,
    queries: np.ndarray,
    p: Plan,
    resolve: Callable[[str | None], str | None],
) -> list[list[Recommendation]]:
    """Return each query's results under ``p`` (the caller holds the read lock).

    ``version`` keys the cached filter masks; ``resolve`` turns a stored
    source into a path on this machine.
    """
    k = p.k
    if queries.shape[1] != store.dim:
        raise DimensionMismatch(
            f"query vectors have dimension {queries.shape[1]}, the catalogue {store.dim}"
        )
    if isinstance(p.distinct, str) and p.distinct not in store.fields:
        raise FilterError(
            f"distinct={p.distinct!r} names no metadata field; the catalogue has "
            f"{sorted(store.fields) or 'none'}"
        )
    drop: set[int] = set()
    if p.expr is None and p.func is None and len(p.skip) <= MAX_DROPPED:
        # a few excluded ids (similar_to's own item): search a little deeper and drop
        # them, rather than a row mask over the whole catalogue pushed into the index
        drop = {store.rows[i] for i in p.skip if hashable(i) and i in store.rows}
        allowed = None
    else:
        allowed = allowed_rows(store, segments, version, p.expr, p.func, p.skip)
    if p.distinct is False or (p.distinct is True and not store.may_hold_copies()):
        # (no fingerprint and no image hash anywhere: one per photo is the plain ranking)
        depth = min(len(store), k + len(drop))
        found = search_rows(store, segments, queries, depth, allowed, p.expr)
        return [results(store, *_without(s, r, drop, k), p.min_score, resolve) for s, r in found]
    seeds = [] if p.seed is None else [store.row_of(p.seed)]
    available = len(store) if allowed is None else int(allowed.sum())
    fetch = min(available, 2 * k + 8 + len(drop))
    out = []
    for j, (s, r) in enumerate(search_rows(store, segments, queries, fetch, allowed, p.expr)):
        while True:
            s, r = s[r >= 0], r[r >= 0]
            got = len(r)
            s, r = _without(s, r, drop, len(r))
            keep = distinct_rows(store, r, p.distinct, seeds)
            if len(keep) >= k or got < fetch or fetch >= available:
                break
            fetch = min(available, 4 * fetch)  # too many repeats: look further
            s, r = search_rows(store, segments, queries[j : j + 1], fetch, allowed, p.expr)[0]
        position = {row: i for i, row in enumerate(r.tolist())}
        order = np.array([position[row] for row in keep], np.int64)
        out.append(results(store, s[order][:k], r[order][:k], p.min_score, resolve))
    return out


def _without(
    scores: np.ndarray, rows: np.ndarray, drop: set[int], k: int
) -> tuple[np.ndarray, np.ndarray]:
    """The first ``k`` of the ranked ``(scores, rows)`` whose row is not in ``drop``."""
    if drop:
        keep = np.fromiter((r not in drop for r in rows.tolist()), bool, len(rows))
        scores, rows = scores[keep], rows[keep]
    return scores[:k], rows[:k]


def distinct_rows(store: Store, rows: np.ndarray, distinct: Any, seeds: list[int]) -> list[int]:
    """The ranked ``rows`` without repeats: of one photo, or of one ``distinct`` field value."""
    if distinct is True:
        from .duplicates import distinct_rows as one_per_photo

        return one_per_photo(
            rows.tolist(), store.fingerprints.view, store.printed.view, store.hashes, seed=seeds
        )
    seen: set[Any] = set()
    for r in seeds:
        value = store.metadata(r).get(distinct)
        if value is not None and hashable(value):
            seen.add(value)
    kept = []
    for r in rows.tolist():
        value = store.metadata(r).get(distinct)
        if value is None or not hashable(value):
            kept.append(r)  # no value (or a list): never collapsed
        elif value not in seen:
            seen.add(value)
            kept.append(r)
    return kept


def search_rows(
    store: Store,
    segments: Segments,
    queries: np.ndarray,
    k: int,
    allowed: np.ndarray | None,
    expr: Expr | None = None,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(scores, rows)`` per query of the ``k`` best live rows that ``allowed`` permits."""
    if allowed is None and store.n_dead:
        allowed = store.alive.view
    return segments.search(store, np.ascontiguousarray(queries, np.float32), k, allowed, expr)


def allowed_rows(
    store: Store,
    segments: Segments,
    version: int,
    expr: Expr | None,
    func: Callable[[Mapping[str, Any]], bool] | None,
    skip: list[Id],
) -> np.ndarray | None:
    """The row mask a filter and the excluded ids leave (``None``: every live row)."""
    if expr is None and func is None and not skip:
        return None
    if expr is not None:
        mask = segments.cached_allowed(store, expr, version)
        if func is None and not any(
            hashable(i) and store.rows.get(i) is not None and mask[store.rows[i]] for i in skip
        ):
            return mask  # shared and read-only: the search never writes to it
        mask = mask.copy()
    else:
        mask = store.alive.view.copy()
    if func is not None:
        rows = np.flatnonzero(mask)
        keep = np.fromiter((bool(func(store.metadata(int(r)))) for r in rows), bool, len(rows))
        mask[rows[~keep]] = False
    for item_id in skip:
        row = store.rows.get(item_id) if hashable(item_id) else None
        if row is not None:
            mask[row] = False
    return mask


def results(
    store: Store,
    scores: np.ndarray,
    rows: np.ndarray,
    min_score: float | None,
    resolve: Callable[[str | None], str | None],
) -> list[Recommendation]:
    """The ranked rows as :class:`Recommendation` objects, stopping below ``min_score``."""
    picked: list[tuple[float, int]] = []
    for score, row in zip(scores.tolist(), rows.tolist(), strict=True):
        if row < 0:
            continue
        if min_score is not None and score < min_score:
            break
        picked.append((score, row))
    metas = store.metadata_rows([row for _, row in picked])
    return [
        Recommendation(
            store.ids[row],
            max(-1.0, min(1.0, float(score))),
            rank,
            meta,
            resolve(store.sources[row]),
        )
        for rank, ((score, row), meta) in enumerate(zip(picked, metas, strict=True), start=1)
    ]


def regions_of(image: Any, max_regions: int) -> tuple[list[Region], list[np.ndarray]]:
    """The products :func:`~visualsim.crop.locate_products` finds in ``image``, and their crops.

    When nothing stands out, one region covering the whole photo (score 1.0).
    """
    from .crop import Region, crop_to_box, locate_products
    from .images import load_image

    pixels = load_image(image)
    regions = locate_products(pixels, max_regions=max_regions)
    if not regions:
        h, w = pixels.shape[:2]
        regions = [Region((0, 0, w, h), 1.0)]
    return regions, [crop_to_box(pixels, r.box) for r in regions]


def cropped(images: Iterable[Any], boxes: Iterable[Sequence[float] | str | None]) -> list[Any]:
    """``images`` each cut to its box (``None``: whole); one box per image or ``ConfigError``."""
    images = list(images)
    regions = list(boxes)
    if len(regions) != len(images):
        raise ConfigError(
            f"boxes must hold one box (or None) per image: {len(regions)} boxes "
            f"for {len(images)} images"
        )
    return [im if b is None else crop_to_box(im, b) for im, b in zip(images, regions, strict=True)]


def duplicate_pairs(
    store: Store, min_score: float | None, k: int | None
) -> list[tuple[Id, Id, float]]:
    """Pairs of duplicate live photos ``(id_a, id_b, score)``, best first (read lock held)."""
    from .duplicates import CANDIDATES, find_pairs

    live = store.alive.view
    a, b, scores = find_pairs(
        store.fingerprints.view,
        valid=live & store.printed.view,
        keys=[h if ok else None for h, ok in zip(store.hashes, live.tolist(), strict=True)],
        min_score=min_score,
        k=CANDIDATES if k is None else k,
    )
    return [
        (store.ids[x], store.ids[y], float(sc))
        for x, y, sc in zip(a.tolist(), b.tolist(), scores.tolist(), strict=True)
    ]


def duplicate_groups(store: Store, pairs: list[tuple[Id, Id, float]]) -> list[DuplicateGroup]:
    """The connected components of ``pairs``, largest first (read lock held)."""
    from .duplicates import DuplicateGroup, group_rows

    row_of = {i: store.row_of(i) for p in pairs for i in p[:2]}
    a = np.array([row_of[p[0]] for p in pairs], np.int64)
    b = np.array([row_of[p[1]] for p in pairs], np.int64)
    scores = np.array([p[2] for p in pairs], np.float32)
    groups = group_rows(store.n_rows, a, b, scores)
    return [
        DuplicateGroup(store.ids[rows[0]], [store.ids[r] for r in rows], score)
        for rows, score in groups
    ]


class LiveView:
    """``rec.index_``: searches the live items like an index (for evaluation and tools).

    Parameters
    ----------
    lock
        The catalogue's read/write lock.
    state
        Returns the catalogue's current ``(store, segments)`` (either may be ``None``).
    index
        The catalogue's ``index`` argument (what an empty catalogue would build).
    """

    def __init__(
        self,
        lock: ReadWriteLock,
        state: Callable[[], tuple[Store | None, Segments | None]],
        index: Any,
    ) -> None:
        self._lock = lock
        self._state = state
        self._spec = index

    @property
    def name(self) -> str:
        seg = self._state()[1]
        idx = seg.index if seg is not None else fresh_index(self._spec)
        return str(getattr(idx, "name", type(idx).__name__))

    @property
    def dim(self) -> int | None:
        store = self._state()[0]
        return store.dim if store is not None and len(store) else None

    @property
    def exact(self) -> bool:
        seg = self._state()[1]
        return bool(seg.exact) if seg is not None else False

    @property
    def ids(self) -> list[Id]:
        with self._lock.read():
            store = self._state()[0]
            return [] if store is None else store.live_ids()

    @property
    def index(self) -> Any:
        """The backend index object (over the sealed segment)."""
        seg = self._state()[1]
        return None if seg is None else seg.index

    def __len__(self) -> int:
        store = self._state()[0]
        return 0 if store is None else len(store)

    def get_config(self) -> dict[str, Any]:
        seg = self._state()[1]
        idx = seg.index if seg is not None else fresh_index(self._spec)
        return dict(idx.get_config())

    def search(self, queries: Any, k: int) -> tuple[np.ndarray, list[list[Id]]]:
        """Return ``(scores, ids)`` of the ``k`` best live items per query."""
        from .indexes.base import check_vectors

        k = check_k(k)
        with self._lock.read():
            store, segments = self._state()
            if store is None or segments is None or not len(store):
                raise NotFittedError("the catalogue is empty: call fit() or add() first")
            q = check_vectors(queries, dim=store.dim, name="queries")
            found = search_rows(store, segments, q, k, None)
            kk = min(k, len(store))
            scores = np.full((len(q), kk), -np.inf, dtype=np.float32)
            ids: list[list[Id]] = []
            for j, (s, r) in enumerate(found):
                scores[j, : len(s)] = s
                ids.append([store.ids[x] for x in r.tolist()])
            return scores, ids


def crop_to_box(image: Any, box: Any) -> np.ndarray:
    """``image`` decoded (EXIF-oriented, as the extractors see it) and cut to ``box``."""
    from .crop import crop_to_box as cut
    from .images import load_image

    return cut(load_image(image), box)


def check_distinct(distinct: Any) -> bool | str:
    """``distinct`` as ``True``, ``False`` or a field name; anything else is a ``ConfigError``."""
    if distinct is None or distinct is False:
        return False
    if distinct is True:
        return True
    if isinstance(distinct, str) and distinct:
        return distinct
    raise ConfigError(
        f"distinct must be True (one result per photo), False, or a metadata field name, "
        f"got {distinct!r}"
    )


def check_k(k: Any) -> int:
    """``k`` checked as a positive number of results (the one check, one wording)."""
    from .indexes.base import check_k as checked

    return checked(k)


def id_list(exclude: Iterable[Id] | Id | None) -> list[Id]:
    """``exclude`` as a list of ids: one id stays whole (never its characters)."""
    if exclude is None:
        return []
    if isinstance(exclude, (str, int, np.integer)) and not isinstance(exclude, bool):
        return [exclude]  # one id, not its characters
    try:
        return list(exclude)  # type: ignore[arg-type]
    except TypeError:
        raise FilterError(f"exclude must be an id or a list of ids, got {exclude!r}") from None


def hashable(value: Any) -> bool:
    """Whether ``value`` can be a dict key (a list-valued field cannot)."""
    try:
        hash(value)
    except TypeError:
        return False
    return True


def fresh_index(spec: Any) -> Any:
    """A new, empty index from a catalogue's ``index`` argument (name, object or ``None``)."""
    if spec is None:
        from .indexes.faiss import FlatIndex

        return FlatIndex()
    if isinstance(spec, str):
        from .indexes.base import make_index

        return make_index(spec)
    if len(spec):
        # an index object that already holds vectors: start from an empty copy
        return type(spec).from_config(spec.get_config())
    return spec


def empty_like(index: Any) -> Any:
    """A new, empty index of ``index``'s registered kind and config (its ``dim`` left to learn).

    A name, ``None`` or an unregistered index object is returned as given.
    """
    from .indexes.base import INDEXES

    spec = INDEXES.to_spec(index) if not isinstance(index, str) and index is not None else None
    if spec is None:
        return index
    config = {k: v for k, v in dict(spec["config"]).items() if k != "dim"}
    return INDEXES.build(spec["name"], config)


__all__ = [
    "Distinct",
    "LiveView",
    "Plan",
    "Recommendation",
    "RegionResults",
    "Where",
    "plan",
    "run",
]
