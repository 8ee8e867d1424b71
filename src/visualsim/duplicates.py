"""Near-duplicate photos: a copy detector made for it, not a similarity threshold.

Similarity vectors are made to call two *different* black wallets alike, which
is what a recommender wants and exactly what a duplicate check must not do.
This module owns the check instead. Every stored photo gets a small
**fingerprint** (:data:`FINGERPRINT_BYTES` bytes), computed from its pixels:

* the photo is trimmed to its content (its uniform background, and a frame added
  around it), so a border or a re-framed canvas does not matter;
* a 32 x 32 grey thumbnail keeps the structure;
* an 8 x 8 colour thumbnail keeps the colour (the same studio shot of a pink
  and of a white shirt differs only there).

Finding duplicates is two steps, so it never builds an N x N matrix:

1. **Candidates** through a FAISS index over a 96-number summary of each
   fingerprint (the low frequencies of the grey thumbnail, and 4 x 4 colour):
   the :data:`CANDIDATES` nearest, searched for the photo and for its mirror
   image. Exact search up to :data:`EXACT_UP_TO` photos, an HNSW graph
   beyond (n log n in the catalogue, measured on 1M in
   ``benchmarks/bench_duplicates.py``). Candidates farther than any duplicate
   measured are dropped unscored (so a ``min_score`` under 0.85 finds no more).
2. **Confirmation** of each candidate pair: the correlation of the blurred grey
   thumbnails (brightness and contrast do not matter) and the mean colour
   difference, both against what a re-upload shows. The pair's **score** is
   ``1 - 0.1 * gap`` where ``gap`` is the worse of the two measured against its
   calibrated limit, so :data:`DEFAULT_MIN_SCORE` (0.9) is the calibrated
   default, 1.0 the same pixels, and a higher ``min_score`` is stricter.

Robust to (measured on real catalogue photos, ``docs/duplicates.md``):
re-encoding (JPEG quality 70 and up), resizing (down or up), up to about 3 % cut
off a side, added uniform borders, mirror images and rotations of about a
degree. Not to: crops of 5 % or more of each side, larger rotations, brightness
or colour edits, or a product re-shot.

Photos stored byte for byte twice (same SHA-256) are duplicates with score 1.0
whatever their fingerprints; that is all that can be said of items stored
without a fingerprint (added as vectors).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .crop import foreground_mask
from .errors import ConfigError

GREY_SIDE = 32
"""Side of the grey thumbnail in a fingerprint."""
COLOUR_SIDE = 8
"""Side of the colour thumbnail in a fingerprint."""
FINGERPRINT_BYTES = GREY_SIDE * GREY_SIDE + COLOUR_SIDE * COLOUR_SIDE * 3
"""Bytes per fingerprint: 1,024 of grey and 192 of colour."""
DEFAULT_MIN_SCORE = 0.9
"""Score from which two photos are duplicates, calibrated on real catalogue photos
(``benchmarks/bench_duplicates.py``: precision and recall in ``docs/duplicates.md``)."""
CANDIDATES = 10
"""Nearest fingerprints confirmed per photo (and per mirror image)."""
EXACT_UP_TO = 20_000
"""Candidate search is exact up to this many photos, an HNSW graph beyond."""
DRAFT_SIZE = (128, 128)
"""JPEGs are decoded for a fingerprint at a reduced scale still at least this large."""

_GREY_LIMIT = 0.94  # correlation of blurred grey thumbnails a re-upload keeps (98th pct.)
_COLOUR_LIMIT = 2.5  # mean colour difference (0-255) a re-upload keeps
_GREY_BLUR = 0.7
_COLOUR_BLUR = 0.75
_DCT_SIDE = 7  # low-frequency block of the grey thumbnail in the candidate summary
# squared summary distance beyond which a candidate cannot be a duplicate: the farthest
# pair scoring 0.85 or more among re-uploads of the dev photos (borders, mirror, 3x
# upscale, 10 % crops, 3-degree turns included) was 0.37; a catalogue photo's 10 nearest
# others are at 0.94 (median), so this spares most of the confirmation work
_SUMMARY_BOUND = 0.6
_HNSW_M = 16  # graph degree of the candidate index past EXACT_UP_TO
_HNSW_BUILD = 40
_HNSW_SEARCH = 96  # found every planted copy among 200k (32 missed 0.55 %)
_ORDER_CLUSTERS = 256
_COLOUR_WEIGHT = 2.0  # weight of the 4 x 4 colour in the candidate summary
_TRIM_PASSES = 2
_SPECK = 0.01  # share of a row/column that must differ from the background to be product
_BLOCK = 4096


@dataclass(frozen=True)
class DuplicateGroup:
    """Photos that are all duplicates of one another, directly or through others.

    Attributes
    ----------
    representative
        The member to keep: the one stored first.
    members
        Every member, ``representative`` first, then in the order stored.
    score
        The lowest score of the pairs that join the group (1.0: the same pixels).
    """

    representative: Any
    members: list[Any] = field(default_factory=list)
    score: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        """Return the group as a JSON-ready dict."""
        return {
            "representative": self.representative,
            "members": list(self.members),
            "score": round(float(self.score), 6),
        }


# --------------------------------------------------------------------------- fingerprints


def trim(image: np.ndarray) -> np.ndarray:
    """Return ``image`` cut to its content: its uniform background (and a frame around it) removed.

    Uses :func:`visualsim.crop.foreground_mask`, the owner of "which pixels are
    the product". A coloured frame added around a photo is trimmed first, then
    the near-white studio background inside it; a product's own flat colour is
    never taken for background (only near-white is trimmed after a frame). An
    image with no uniform border comes back as it is.
    """
    for attempt in range(_TRIM_PASSES):
        if attempt and not _near_white_border(image):
            return image  # only a white studio background is trimmed inside a frame
        mask = foreground_mask(image)
        if mask is None:
            return image
        # a row or column is the product's when more than a speck of it differs (JPEG
        # ringing around the product must not move the box from one copy to the next)
        h, w = mask.shape
        rows = np.flatnonzero(mask.sum(axis=1) > max(1, int(w * _SPECK)))
        cols = np.flatnonzero(mask.sum(axis=0) > max(1, int(h * _SPECK)))
        if rows.size == 0 or cols.size == 0:
            return image  # blank: nothing but background
        framed = not _near_white_border(image)
        inner = image[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
        if inner.shape == image.shape or not framed:
            return inner
        image = inner
    return image


def _near_white_border(image: np.ndarray) -> bool:
    from .crop import NEAR_WHITE

    border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
    return bool(np.median(border, axis=0).min() >= NEAR_WHITE)


def fingerprint(image: np.ndarray) -> np.ndarray:
    """Return the fingerprint of one RGB photo: ``FINGERPRINT_BYTES`` ``uint8``.

    Parameters
    ----------
    image
        ``(H, W, 3)`` RGB ``uint8``, as :func:`visualsim.images.load_image`
        returns (:func:`fingerprint_of` loads anything image-like first).

    Examples
    --------
    >>> import numpy as np
    >>> photo = np.full((60, 40, 3), 255, np.uint8)
    >>> photo[10:50, 8:30] = (30, 60, 200)
    >>> fingerprint(photo).shape
    (1216,)
    """
    from PIL import Image

    if not (isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] == 3):
        raise ConfigError(
            "fingerprint needs an (H, W, 3) uint8 RGB image, got "
            f"{getattr(image, 'shape', type(image).__name__)!r}"
        )
    if image.dtype != np.uint8 or image.shape[0] < 1 or image.shape[1] < 1:
        raise ConfigError(
            f"fingerprint needs an (H, W, 3) uint8 RGB image, got {image.dtype} {image.shape}"
        )
    pil = Image.fromarray(np.ascontiguousarray(trim(image)))
    box = Image.Resampling.BOX
    grey = np.asarray(pil.convert("L").resize((GREY_SIDE, GREY_SIDE), box), np.uint8)
    side = 2 * COLOUR_SIDE
    colour = np.asarray(pil.resize((side, side), box), np.float32)
    colour = colour.reshape(COLOUR_SIDE, 2, COLOUR_SIDE, 2, 3).mean(axis=(1, 3))
    out = np.empty(FINGERPRINT_BYTES, np.uint8)
    out[: GREY_SIDE * GREY_SIDE] = grey.ravel()
    out[GREY_SIDE * GREY_SIDE :] = np.rint(colour).astype(np.uint8).ravel()
    return out


def fingerprint_of(src: Any) -> np.ndarray:
    """Load anything image-like (path, bytes, file, PIL image, array) and fingerprint it.

    Raises
    ------
    ImageLoadError
        When ``src`` cannot be read as an image (it names the input).
    """
    from .images import load_image

    return fingerprint(load_image(src, draft_size=DRAFT_SIZE))


def check_fingerprints(fps: Any, name: str = "fingerprints") -> np.ndarray:
    """Return ``fps`` as a ``(n, FINGERPRINT_BYTES)`` ``uint8`` array, or raise ``ConfigError``."""
    arr = np.asarray(fps)
    if arr.ndim != 2 or arr.shape[1] != FINGERPRINT_BYTES or arr.dtype != np.uint8:
        raise ConfigError(
            f"{name} must be uint8 of shape (n, {FINGERPRINT_BYTES}), got {arr.dtype} {arr.shape}"
        )
    return arr


def check_min_score(min_score: Any) -> float:
    """Return the duplicate threshold: :data:`DEFAULT_MIN_SCORE` for ``None``, else in [0, 1]."""
    if min_score is None:
        return DEFAULT_MIN_SCORE
    if isinstance(min_score, bool) or not isinstance(min_score, (int, float, np.floating)):
        raise ConfigError(f"min_score must be a number in [0, 1], got {min_score!r}")
    value = float(min_score)
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"min_score must be in [0, 1], got {min_score!r}")
    return value


# --------------------------------------------------------------------------- features


def _blur(x: np.ndarray, sigma: float, axes: tuple[int, int]) -> np.ndarray:
    from scipy.ndimage import gaussian_filter1d

    for axis in axes:
        x = gaussian_filter1d(x, sigma, axis=axis, mode="nearest")
    return x


def _grey(fps: np.ndarray) -> np.ndarray:
    return fps[:, : GREY_SIDE * GREY_SIDE].reshape(-1, GREY_SIDE, GREY_SIDE).astype(np.float32)


def _colour(fps: np.ndarray) -> np.ndarray:
    colour = fps[:, GREY_SIDE * GREY_SIDE :].reshape(-1, COLOUR_SIDE, COLOUR_SIDE, 3)
    return colour.astype(np.float32)


def _opponent(c: np.ndarray) -> np.ndarray:
    r, g, b = c[..., 0], c[..., 1], c[..., 2]
    return np.stack([(r + g + b) / 3, r - g, (r + g - 2 * b) / 2], axis=-1)


@dataclass
class _Features:
    grey: np.ndarray  # (n, 1024) unit, mean removed; zero for a flat thumbnail
    colour: np.ndarray  # (n, 192) blurred opponent colour


def _features(fps: np.ndarray, *, mirror: bool = False) -> _Features:
    grey = _grey(fps)
    colour = _colour(fps)
    if mirror:
        grey = grey[:, :, ::-1]
        colour = colour[:, :, ::-1]
    g = _blur(grey, _GREY_BLUR, (1, 2)).reshape(len(fps), -1)
    g -= g.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(g, axis=1, keepdims=True)
    g = np.where(norms > 1e-3, g / np.maximum(norms, 1e-3), 0.0).astype(np.float32)
    c = _blur(_opponent(colour), _COLOUR_BLUR, (1, 2)).reshape(len(fps), -1)
    return _Features(g, c.astype(np.float32))


def _pair_scores(a: _Features, ia: np.ndarray, b: _Features, ib: np.ndarray) -> np.ndarray:
    ga, gb = a.grey[ia], b.grey[ib]
    z = np.einsum("ij,ij->i", ga, gb)
    flat = (~ga.any(axis=1)) & (~gb.any(axis=1))
    z = np.where(flat, 1.0, z)  # two blank photos: the same structure
    dc = np.abs(a.colour[ia] - b.colour[ib]).mean(axis=1)
    gap = np.maximum((1.0 - z) / (1.0 - _GREY_LIMIT), dc / _COLOUR_LIMIT)
    gap = np.where(gap < 1e-4, 0.0, gap)  # float rounding of the same pixels: exactly 1.0
    return np.clip(1.0 - 0.1 * gap, 0.0, 1.0).astype(np.float32)


def pair_scores(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Return the duplicate score of each pair ``(a[i], b[i])`` of fingerprints (mirror included).

    1.0 for the same pixels; :data:`DEFAULT_MIN_SCORE` and above for duplicates.
    """
    a = check_fingerprints(a, "a")
    b = check_fingerprints(b, "b")
    if len(a) != len(b):
        raise ConfigError(f"a and b must hold as many fingerprints, got {len(a)} and {len(b)}")
    out = np.zeros(len(a), np.float32)
    for start in range(0, len(a), _BLOCK):
        sl = slice(start, start + _BLOCK)
        idx = np.arange(min(len(a), start + _BLOCK) - start)
        fb = _features(b[sl])
        out[sl] = np.maximum(
            _pair_scores(_features(a[sl]), idx, fb, idx),
            _pair_scores(_features(a[sl], mirror=True), idx, fb, idx),
        )
    return out


def _summary(fps: np.ndarray, *, mirror: bool = False) -> np.ndarray:
    """The candidate summary: 48 low grey frequencies (unit) and 48 weighted colour values."""
    from scipy.fft import dctn

    d = dctn(_grey(fps), axes=(1, 2), norm="ortho")[:, :_DCT_SIDE, :_DCT_SIDE]
    if mirror:  # a mirror image flips the sign of the odd horizontal frequencies
        d = d * np.where(np.arange(_DCT_SIDE) % 2, -1.0, 1.0)[None, None, :]
    d = d.reshape(len(fps), -1)[:, 1:]
    d /= np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-6)
    colour = _colour(fps)
    if mirror:
        colour = colour[:, :, ::-1]
    half = COLOUR_SIDE // 2
    small = _opponent(colour.reshape(len(fps), half, 2, half, 2, 3).mean(axis=(2, 4)))
    out = np.hstack([d, _COLOUR_WEIGHT * small.reshape(len(fps), -1) / 255.0])
    return np.ascontiguousarray(out, dtype=np.float32)


# --------------------------------------------------------------------------- search


class Summaries:
    """The candidate summaries of a growing set of fingerprints, computed once per row.

    A catalogue keeps one so that checking new photos (``add(duplicates=...)``)
    costs a search, not a pass over every stored fingerprint.
    """

    def __init__(self) -> None:
        self._buf = np.zeros((0, _SUMMARY_DIM), np.float32)
        self.n = 0

    def update(self, fps: np.ndarray) -> np.ndarray:
        """Return the summaries of all rows of ``fps``, computing only rows added since."""
        n = len(fps)
        if n < self.n:
            raise ConfigError("fingerprints shrank; use a new Summaries")
        if n > len(self._buf):
            grown = np.zeros((max(n, 2 * len(self._buf), 1024), _SUMMARY_DIM), np.float32)
            grown[: self.n] = self._buf[: self.n]
            self._buf = grown
        for start in range(self.n, n, 65536):
            stop = min(n, start + 65536)
            self._buf[start:stop] = _summary(fps[start:stop])
        self.n = n
        return self._buf[:n]


_SUMMARY_DIM = _DCT_SIDE * _DCT_SIDE - 1 + 3 * (COLOUR_SIDE // 2) ** 2


class _CandidateIndex:
    """FAISS over fingerprint summaries of chosen rows: exact, or an HNSW graph when large.

    ``search`` returns row numbers of the full fingerprint array (never a copy of it).
    """

    def __init__(
        self,
        fps: np.ndarray,
        rows: np.ndarray,
        *,
        summaries: np.ndarray | None = None,
        exact: bool = False,
    ) -> None:
        import faiss

        n = len(rows)
        self.n = n
        self.rows = rows

        def summary_of(part: np.ndarray) -> np.ndarray:
            if summaries is not None:
                return np.ascontiguousarray(summaries[part])
            return _summary(fps[part])

        if exact or n <= EXACT_UP_TO:
            self.index: Any = faiss.IndexFlatL2(_SUMMARY_DIM)
        else:
            # a graph: building and searching it grow as n log n (an inverted file with
            # ~sqrt(n) lists made each search grow as sqrt(n): 8.2 min at 1M)
            hnsw = faiss.IndexHNSWFlat(_SUMMARY_DIM, _HNSW_M)
            hnsw.hnsw.efConstruction = _HNSW_BUILD
            hnsw.hnsw.efSearch = _HNSW_SEARCH
            self.index = hnsw
        for start in range(0, n, 65536):
            self.index.add(summary_of(rows[start : start + 65536]))
        self.order = np.arange(n)
        if n > EXACT_UP_TO:
            # rows grouped by a coarse clustering (256 clusters, trained on a sample), so a
            # chunk of pairs to confirm touches few rows and their features are computed
            # about once; linear in n
            rng = np.random.default_rng(0)
            sample = np.sort(rng.choice(n, size=min(n, 100 * _ORDER_CLUSTERS), replace=False))
            kmeans = faiss.Kmeans(_SUMMARY_DIM, _ORDER_CLUSTERS, niter=8, seed=1)
            kmeans.train(summary_of(rows[sample]))
            labels = np.concatenate(
                [
                    kmeans.index.search(summary_of(rows[s : s + 65536]), 1)[1].ravel()
                    for s in range(0, n, 65536)
                ]
            )
            self.order = np.argsort(labels, kind="stable")

    def search(self, fps: np.ndarray, k: int) -> np.ndarray:
        """Candidate rows ``(n, 2k)`` (normal then mirrored); -1 where there are fewer.

        A candidate farther (in summary space) than any duplicate ever measured is
        dropped here (-1): it could not pass the confirmation, so it is not scored.
        """
        k = min(k, self.n)
        da, a = self.index.search(_summary(fps), k)
        db, b = self.index.search(_summary(fps, mirror=True), k)
        found = np.hstack([a, b])
        near = np.hstack([da, db]) <= _SUMMARY_BOUND
        return np.where((found >= 0) & near, self.rows[np.maximum(found, 0)], -1)


def find_pairs(
    fps: np.ndarray,
    *,
    valid: np.ndarray | None = None,
    keys: Sequence[str | None] | None = None,
    min_score: float | None = None,
    k: int = CANDIDATES,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return every duplicate pair among ``fps``: rows ``a < b`` and their scores, best first.

    Parameters
    ----------
    fps
        ``(n, FINGERPRINT_BYTES)`` ``uint8``.
    valid
        Rows that hold a fingerprint (default: all); the others only pair by key.
    keys
        Optional content keys (SHA-256 of the file): rows with the same key are
        duplicates with score 1.0 whatever their fingerprints (``None``: no key).
    min_score
        Threshold (default :data:`DEFAULT_MIN_SCORE`).
    k
        Candidates confirmed per photo and per mirror image.

    Returns
    -------
    tuple of numpy.ndarray
        ``(rows_a, rows_b, scores)``, sorted by score (best first), then rows.
    """
    fps = check_fingerprints(fps)
    threshold = check_min_score(min_score)
    from .validation import check_k

    k = check_k(k)
    n = len(fps)
    ok = np.ones(n, bool) if valid is None else np.asarray(valid, bool)
    if ok.shape != (n,):
        raise ConfigError(f"valid must hold one flag per fingerprint ({n}), got shape {ok.shape}")
    found: dict[tuple[int, int], float] = {}
    rows = np.flatnonzero(ok)
    if len(rows) > 1:
        a, b, scores = _scan(fps, rows, k, threshold)
        for x, y, sc in zip(a.tolist(), b.tolist(), scores.tolist(), strict=True):
            found[(x, y)] = sc
    if keys is not None:
        for i, j in _same_keys(keys, n):
            found[(i, j)] = 1.0
    return _sorted(found)


def _scan(
    fps: np.ndarray, rows: np.ndarray, k: int, threshold: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs ``lo < hi`` among ``rows`` scoring at or above ``threshold``.

    Every row's candidates are searched first; the pairs are deduplicated (a
    pair found from both sides is scored once) and scored in chunks taken in
    the index's cluster order, so one chunk's rows are mostly neighbours and
    their features are computed about once per row, not once per pair.
    """
    index = _CandidateIndex(fps, rows)
    kk = min(k + 1, len(rows))
    cands = np.empty((len(rows), 2 * kk), np.int64)
    for start in range(0, len(rows), _BLOCK):
        block = rows[start : start + _BLOCK]
        cands[start : start + len(block)] = index.search(fps[block], k + 1)
    lo = np.repeat(rows, cands.shape[1])
    hi = cands.ravel()
    keep = (hi >= 0) & (hi != lo)
    lo, hi = lo[keep], hi[keep]
    lo, hi = np.minimum(lo, hi), np.maximum(lo, hi)
    del cands, keep
    pair_keys = np.unique(lo * np.int64(len(fps)) + hi)
    lo, hi = pair_keys // len(fps), pair_keys % len(fps)
    del pair_keys
    # cluster order: a chunk of pairs touches few distinct rows
    rank = np.zeros(len(fps), np.int64)
    rank[rows[index.order]] = np.arange(len(rows))
    order = np.argsort(rank[lo], kind="stable")
    lo, hi = lo[order], hi[order]
    out_a: list[np.ndarray] = []
    out_b: list[np.ndarray] = []
    out_s: list[np.ndarray] = []
    chunk = 4 * _BLOCK
    for start in range(0, len(lo), chunk):
        a, b = lo[start : start + chunk], hi[start : start + chunk]
        touched, inverse = np.unique(np.concatenate([a, b]), return_inverse=True)
        ia, ib = inverse[: len(a)], inverse[len(a) :]
        plain, mirrored = _features(fps[touched]), _features(fps[touched], mirror=True)
        scores = np.maximum(
            _pair_scores(plain, ia, plain, ib), _pair_scores(mirrored, ia, plain, ib)
        )
        hit = scores >= threshold
        out_a.append(a[hit])
        out_b.append(b[hit])
        out_s.append(scores[hit])
    if not out_a:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    return np.concatenate(out_a), np.concatenate(out_b), np.concatenate(out_s)


def match(
    new: np.ndarray,
    catalogue: np.ndarray,
    *,
    valid: np.ndarray | None = None,
    min_score: float | None = None,
    k: int = CANDIDATES,
    summaries: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return, for each ``new`` fingerprint with a duplicate in ``catalogue``, its best one.

    ``summaries`` (from :class:`Summaries` over ``catalogue``) saves computing
    them. Returns ``(new_rows, catalogue_rows, scores)`` in the order of ``new``.
    """
    new = check_fingerprints(new, "new")
    catalogue = check_fingerprints(catalogue, "catalogue")
    threshold = check_min_score(min_score)
    ok = np.ones(len(catalogue), bool) if valid is None else np.asarray(valid, bool)
    if ok.shape != (len(catalogue),):
        raise ConfigError(
            f"valid must hold one flag per catalogue fingerprint ({len(catalogue)}), "
            f"got shape {ok.shape}"
        )
    rows = np.flatnonzero(ok)
    best: dict[int, tuple[int, float]] = {}
    if len(rows) and len(new):
        index = _CandidateIndex(catalogue, rows, summaries=summaries, exact=True)
        for start in range(0, len(new), _BLOCK):
            block = np.arange(start, min(len(new), start + _BLOCK))
            cand = index.search(new[block], k)
            for a, b, s in _confirm(new, block, cand, catalogue, threshold):
                if a not in best or s > best[a][1]:
                    best[a] = (b, s)
    order = sorted(best)
    return (
        np.array(order, np.int64),
        np.array([best[a][0] for a in order], np.int64),
        np.array([best[a][1] for a in order], np.float32),
    )


def _confirm(
    queries: np.ndarray, block: np.ndarray, cand: np.ndarray, base: np.ndarray, threshold: float
) -> Iterator[tuple[int, int, float]]:
    """Score each (query row, candidate row) pair; yield those at or above ``threshold``."""
    qa = np.repeat(block, cand.shape[1])
    cb = cand.ravel()
    keep = cb >= 0
    qa, cb = qa[keep], cb[keep]
    if not len(qa):
        return
    uq, iq = np.unique(qa, return_inverse=True)
    uc, ic = np.unique(cb, return_inverse=True)
    fq, fm, fc = _features(queries[uq]), _features(queries[uq], mirror=True), _features(base[uc])
    scores = np.maximum(_pair_scores(fq, iq, fc, ic), _pair_scores(fm, iq, fc, ic))
    hit = np.flatnonzero(scores >= threshold)
    for h in hit.tolist():
        yield int(qa[h]), int(cb[h]), float(scores[h])


def _same_keys(keys: Sequence[str | None], n: int) -> Iterator[tuple[int, int]]:
    if len(keys) != n:
        raise ConfigError(f"keys must hold one entry per fingerprint ({n}), got {len(keys)}")
    first: dict[str, list[int]] = {}
    for row, key in enumerate(keys):
        if key is not None:
            first.setdefault(key, []).append(row)
    for members in first.values():
        for x in range(len(members)):
            for y in range(x + 1, len(members)):
                yield members[x], members[y]


def _sorted(found: dict[tuple[int, int], float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ranked = sorted(found.items(), key=lambda kv: (-kv[1], kv[0]))
    return (
        np.array([p[0][0] for p in ranked], np.int64),
        np.array([p[0][1] for p in ranked], np.int64),
        np.array([p[1] for p in ranked], np.float32),
    )


def group_rows(
    n: int, rows_a: np.ndarray, rows_b: np.ndarray, scores: np.ndarray
) -> list[tuple[list[int], float]]:
    """Connected components of the pairs: ``(rows sorted, lowest joining score)``, largest first.

    Rows in no pair are left out (a group has at least two members).
    """
    parent = np.arange(n)

    def find(x: int) -> int:
        root = x
        while parent[root] != root:
            root = int(parent[root])
        while parent[x] != root:
            parent[x], x = root, int(parent[x])
        return root

    for a, b in zip(rows_a.tolist(), rows_b.tolist(), strict=True):
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    members: dict[int, set[int]] = {}
    low: dict[int, float] = {}
    for a, b, s in zip(rows_a.tolist(), rows_b.tolist(), scores.tolist(), strict=True):
        r = find(a)
        low[r] = min(low.get(r, 1.0), float(s))
        members.setdefault(r, set()).update((a, b))
    out = [(sorted(m), low[r]) for r, m in members.items()]
    out.sort(key=lambda g: (-len(g[0]), g[0][0]))
    return out


def distinct_rows(
    rows: Sequence[int],
    fps: np.ndarray,
    valid: np.ndarray,
    keys: Sequence[str | None],
    *,
    seed: Sequence[int] = (),
    min_score: float | None = None,
) -> list[int]:
    """Return ``rows`` (ranked) without those that duplicate a row kept before them.

    ``fps``, ``valid`` and ``keys`` are indexed by row (the whole store).
    ``seed`` rows count as kept before the first one but are not returned
    (the item a ``similar_to`` search starts from).
    """
    threshold = check_min_score(min_score)
    ranked = [int(r) for r in rows]
    if not ranked:
        return []
    seeds = [int(r) for r in seed]
    every = np.asarray(seeds + ranked, np.int64)
    has_fp = np.asarray(valid, bool)[every]
    if not has_fp.any() and all(keys[r] is None for r in every.tolist()):
        return ranked  # no fingerprint and no hash among them: nothing can be a copy
    printed = every[has_fp]
    pos = {r: i for i, r in enumerate(printed.tolist())}
    feats = _features(fps[printed]) if len(printed) else None
    mirror = _features(fps[printed], mirror=True) if len(printed) else None
    kept_keys: set[str] = set()
    kept_pos: list[int] = []

    def duplicate(r: int) -> bool:
        key = keys[r]
        if key is not None and key in kept_keys:
            return True
        p = pos.get(r)
        if p is None or not kept_pos or feats is None or mirror is None:
            return False
        idx = np.array(kept_pos)
        me = np.full(len(idx), p)
        s = np.maximum(_pair_scores(feats, me, feats, idx), _pair_scores(mirror, me, feats, idx))
        return float(s.max()) >= threshold

    def keep(r: int) -> None:
        key = keys[r]
        if key is not None:
            kept_keys.add(key)
        if r in pos:
            kept_pos.append(pos[r])

    for r in seeds:
        keep(r)
    out: list[int] = []
    for r in ranked:
        if not duplicate(r):
            out.append(r)
            keep(r)
    return out


__all__ = [
    "CANDIDATES",
    "DEFAULT_MIN_SCORE",
    "FINGERPRINT_BYTES",
    "DuplicateGroup",
    "Summaries",
    "check_min_score",
    "distinct_rows",
    "find_pairs",
    "fingerprint",
    "fingerprint_of",
    "group_rows",
    "match",
    "pair_scores",
    "trim",
]
