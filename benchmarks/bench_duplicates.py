"""Near-duplicate detection (``visualsim.duplicates``): precision/recall on real photos, scale.

**Part 1, real photos.** The development split of the Kaggle "Fashion Product
Images (Small)" dataset (``../shared/data/fashion-products-dev``: 3,828 JPEGs
``images/<id>.jpg``, ids in ``labels.csv``) is the catalogue. Ground truth:
photos stored byte for byte twice (same SHA-256) are duplicates of each other,
and so are the *re-uploads* generated here, each of a random catalogue photo
(``PER_KIND`` per kind, originals drawn without replacement within a kind):

* ``issue`` (the protocol the issue defines; reported first): resized to 90 %
  (bicubic), 3 % cut off one random side, JPEG quality 70;
* ``border``: a 12 px uniform border, white or black at random, JPEG 80;
* ``mirror``: the mirror image, JPEG 85;
* ``upscale3x``: 3x larger (bicubic), JPEG 90;
* ``jpeg50``: re-encoded at JPEG 50;
* ``rotate1``: rotated by an angle uniform in [-1, 1] degrees (white fill), JPEG 85;

and three kinds the module does **not** claim (reported as "not claimed"):

* ``crop5``: 5 % cut off every side, JPEG 85;
* ``rotate3``: rotated by 3 degrees, random sign (white fill), JPEG 85;
* ``brightness``: every pixel ``x * 1.06 + 4``, JPEG 85.

A re-upload joins its original's group (with that original's byte-identical
twins), so two re-uploads of the same original are duplicates too; the truth
pairs are all pairs within a group. Each kind draws from its own random
generator (seeded by ``--seed`` and the kind's name), so adding a kind changes
no other kind's re-uploads. Scenarios: the catalogue alone (byte-identical
pairs only: what it flags beyond them is false positives), catalogue + each
kind alone, catalogue + the claimed kinds mixed, catalogue + all kinds mixed.

Every photo is fingerprinted with ``fingerprint_of(bytes)``; keys are the
SHA-256 of the file bytes; ``find_pairs(fps, keys=keys, min_score=0.0)`` runs
once per scenario and the pairs are then cut at each threshold of
``THRESHOLDS`` and at ``DEFAULT_MIN_SCORE``. Reported per scenario and
threshold: pairs returned, true positives, precision, recall (over all truth
pairs) and each kind's recall (truth pairs with a re-upload of that kind).
Per kind also: the share of re-uploads whose ``pair_scores`` with their own
original reaches the default (the confirmation step alone, no candidate
search), which separates "scored too low" from "never a candidate"; per
scenario, the truth pairs whose ``pair_scores`` reaches the default but that
``find_pairs`` never scored ("missed cand.": lost by the candidate search).

Also measured: fingerprint time per photo (``fingerprint_of`` on the file
bytes, decode included; median of ``FP_ROUNDS`` rounds over ``FP_IMAGES``
photos), the scan time of each scenario, and the *old* method the issue
measured: cosine >= ``OLD_COSINE`` on the colour extractor's vectors
(``ColorHistogramExtractor``), exact over all pairs (numpy blocks), on the
catalogue + ``issue`` re-uploads.

**Part 2, scale.** Synthetic fingerprints that look like real ones: each is
made from a random real fingerprint (the catalogue's) blended with another
random one (weight 0.2-0.5), mirrored half of the time, shifted 2-4 pixels
(edge replicated), with a grey offset, per-channel colour offsets of 6-25 and
some noise: different photos, with the statistics of real ones. 1 % of the
items are then planted copies of other items (half exact, half with noise of
sigma 1.5 grey levels), the duplicates the scan must find. For each ``n`` a
fresh subprocess builds the fingerprints and times ``find_pairs(fps)`` (default
threshold); memory is that process's peak resident set (``VmHWM``, reset
through ``/proc/self/clear_refs`` just before the scan where Linux allows it,
so generation does not count) and the RSS before the scan. Reported: seconds,
the ratio to the previous ``n`` (linear in ``n`` gives 2 for doubling), peak
memory, pairs found, planted copies recovered, and the seconds of each stage
of ``find_pairs`` (index build and candidate search, timed by wrapping the
module's private ``_CandidateIndex``, its code unchanged; scoring the candidate
pairs is the rest). The largest size is stopped after ``--scale-timeout``
seconds (720, about 12 minutes; smaller sizes get twice that); a stopped run
reports how far it got.

Usage::

    .venv/bin/python benchmarks/bench_duplicates.py                 # all: ~15-25 min on 2 cores
    .venv/bin/python benchmarks/bench_duplicates.py --quick         # minutes: does it work?
    .venv/bin/python benchmarks/bench_duplicates.py --scale 125000,250000 --no-old

Prints the tables and writes ``benchmarks/results/duplicates.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
from _common import machine_info, median, print_table, write_json
from bench_real import DEFAULT_DATA, code_info, cpu_model, load_data, resolve_data
from PIL import Image, ImageOps

from visualsim import duplicates
from visualsim.duplicates import (
    DEFAULT_MIN_SCORE,
    FINGERPRINT_BYTES,
    find_pairs,
    fingerprint_of,
    pair_scores,
)

HERE = Path(__file__).resolve().parent
OUT = HERE / "results" / "duplicates.json"
SEED = 0
PER_KIND = 300
THRESHOLDS = tuple(round(0.85 + 0.01 * i, 2) for i in range(11))
"""0.85 .. 0.95, step 0.01; DEFAULT_MIN_SCORE is added when it is not among them."""
FP_IMAGES = 500
FP_ROUNDS = 3
OLD_COSINE = 0.97
SCALE = (125_000, 250_000, 500_000, 1_000_000)
QUICK_SCALE = (20_000, 40_000)
QUICK_PER_KIND = 40
PLANTED_SHARE = 0.01
SCALE_TIMEOUT_S = 720
GREY = duplicates.GREY_SIDE
COLOUR = duplicates.COLOUR_SIDE


# -- re-uploads ----------------------------------------------------------------------
def _jpeg(img: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _issue(img: Image.Image, rng: np.random.Generator) -> bytes:
    w, h = img.size
    img = img.resize((round(w * 0.9), round(h * 0.9)), Image.BICUBIC)
    w, h = img.size
    side = int(rng.integers(4))
    cx, cy = round(0.03 * w), round(0.03 * h)
    box = [(cx, 0, w, h), (0, 0, w - cx, h), (0, cy, w, h), (0, 0, w, h - cy)][side]
    return _jpeg(img.crop(box), 70)


def _border(img: Image.Image, rng: np.random.Generator) -> bytes:
    fill = (255, 255, 255) if rng.random() < 0.5 else (0, 0, 0)
    return _jpeg(ImageOps.expand(img, border=12, fill=fill), 80)


def _mirror(img: Image.Image, rng: np.random.Generator) -> bytes:
    return _jpeg(ImageOps.mirror(img), 85)


def _upscale(img: Image.Image, rng: np.random.Generator) -> bytes:
    return _jpeg(img.resize((img.width * 3, img.height * 3), Image.BICUBIC), 90)


def _jpeg50(img: Image.Image, rng: np.random.Generator) -> bytes:
    return _jpeg(img, 50)


def _rotate(degrees: float, uniform: bool) -> Callable[[Image.Image, np.random.Generator], bytes]:
    def make(img: Image.Image, rng: np.random.Generator) -> bytes:
        angle = rng.uniform(-degrees, degrees) if uniform else degrees * rng.choice([-1.0, 1.0])
        return _jpeg(img.rotate(angle, Image.BICUBIC, fillcolor=(255, 255, 255)), 85)

    return make


def _crop5(img: Image.Image, rng: np.random.Generator) -> bytes:
    w, h = img.size
    cx, cy = round(0.05 * w), round(0.05 * h)
    return _jpeg(img.crop((cx, cy, w - cx, h - cy)), 85)


def _brightness(img: Image.Image, rng: np.random.Generator) -> bytes:
    arr = np.asarray(img, np.float32) * 1.06 + 4.0
    return _jpeg(Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8)), 85)


@dataclass(frozen=True)
class Kind:
    """One kind of re-upload: how it is made, what it is, whether the module claims it."""

    make: Callable[[Image.Image, np.random.Generator], bytes]
    what: str
    claimed: bool = True


KINDS: dict[str, Kind] = {
    "issue": Kind(_issue, "resize 90 % bicubic, 3 % off one random side, JPEG 70"),
    "border": Kind(_border, "12 px uniform border (white or black), JPEG 80"),
    "mirror": Kind(_mirror, "mirror image, JPEG 85"),
    "upscale3x": Kind(_upscale, "3x upscale bicubic, JPEG 90"),
    "jpeg50": Kind(_jpeg50, "re-encoded at JPEG 50"),
    "rotate1": Kind(_rotate(1.0, True), "rotation uniform in +-1 degree, white fill, JPEG 85"),
    "crop5": Kind(_crop5, "5 % cut off every side, JPEG 85", claimed=False),
    "rotate3": Kind(_rotate(3.0, False), "rotation of 3 degrees, random sign, JPEG 85", False),
    "brightness": Kind(_brightness, "brightness x1.06 + 4, JPEG 85", claimed=False),
}
"""Name -> kind; "issue" first (the issue's protocol), the not-claimed ones last."""


def kind_rng(seed: int, kind: str) -> np.random.Generator:
    """The generator of one kind: depends only on ``seed`` and the kind's name."""
    return np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(kind.encode())]))


def make_reuploads(
    blobs: Sequence[bytes], kind: str, count: int, seed: int
) -> tuple[list[int], list[bytes]]:
    """Return ``count`` re-uploads of ``kind``: the catalogue row of each original and its bytes."""
    rng = kind_rng(seed, kind)
    originals = np.sort(rng.choice(len(blobs), size=min(count, len(blobs)), replace=False))
    out = []
    for row in originals.tolist():
        img = Image.open(io.BytesIO(blobs[row]))
        img = img.convert("RGB")
        out.append(KINDS[kind].make(img, rng))
    return originals.tolist(), out


# -- scoring -------------------------------------------------------------------------
def truth_pairs(groups: np.ndarray) -> np.ndarray:
    """All pairs ``a < b`` within each group, encoded ``a * n + b`` (sorted)."""
    n = len(groups)
    order = np.argsort(groups, kind="stable")
    out: list[int] = []
    g = groups[order]
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
    ends = np.r_[starts[1:], len(g)]
    for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
        members = np.sort(order[s:e]).tolist()
        for x in range(len(members)):
            for y in range(x + 1, len(members)):
                out.append(members[x] * n + members[y])
    return np.array(sorted(out), np.int64)


def score_scenario(
    name: str,
    fps: np.ndarray,
    keys: list[str],
    groups: np.ndarray,
    kinds: np.ndarray,
    kind_names: list[str],
) -> dict[str, Any]:
    """Run ``find_pairs`` once (min_score 0) and cut at every threshold."""
    n = len(fps)
    t0 = time.perf_counter()
    ra, rb, scores = find_pairs(fps, keys=keys, min_score=0.0)
    scan_s = time.perf_counter() - t0
    codes = ra.astype(np.int64) * n + rb
    truth = truth_pairs(groups)
    hit = np.isin(codes, truth)
    reup_pair = (kinds[ra] >= 0) | (kinds[rb] >= 0)  # a pair with at least one re-upload
    ta, tb = truth // n, truth % n
    thresholds = sorted({*THRESHOLDS, DEFAULT_MIN_SCORE})
    rows = []
    for t in thresholds:
        sel = scores >= t
        found_truth = np.isin(truth, codes[sel])
        tp = int(hit[sel].sum())
        row: dict[str, Any] = {
            "threshold": round(float(t), 3),
            "default": bool(abs(t - DEFAULT_MIN_SCORE) < 1e-9),
            "pairs": int(sel.sum()),
            "TP": tp,
            "FP": int(sel.sum()) - tp,
            "FP_with_reupload": int((sel & ~hit & reup_pair).sum()),
            "truth": len(truth),
            "precision": round(tp / sel.sum(), 4) if sel.sum() else None,
            "recall": round(tp / len(truth), 4) if len(truth) else None,
        }
        p, r = row["precision"] or 0.0, row["recall"] or 0.0
        row["F1"] = round(2 * p * r / (p + r), 4) if p + r else 0.0
        per_kind = {}
        for k, kname in enumerate(kind_names):
            mine = (kinds[ta] == k) | (kinds[tb] == k)
            if mine.any():
                per_kind[kname] = round(float(found_truth[mine].mean()), 4)
        row["recall_per_kind"] = per_kind
        rows.append(row)
    best = max(rows, key=lambda r: (r["F1"], r["threshold"]))
    default = next(r for r in rows if r["default"])
    sel = scores >= DEFAULT_MIN_SCORE
    fp_rows = np.flatnonzero(sel & ~hit)[:20]
    # confirmation alone: truth pairs whose pair_scores reaches the default, and those of them
    # find_pairs never scored (not among the candidates): what the candidate search misses
    own = pair_scores(fps[ta], fps[tb]) if len(truth) else np.zeros(0, np.float32)
    same_key = np.array([keys[a] == keys[b] for a, b in zip(ta, tb, strict=True)], bool)
    own[same_key] = 1.0
    reachable = own >= DEFAULT_MIN_SCORE
    never_scored = ~np.isin(truth, codes)
    return {
        "scenario": name,
        "n_photos": n,
        "n_reuploads": int((kinds >= 0).sum()),
        "kinds": sorted({kind_names[k] for k in kinds[kinds >= 0].tolist()}, key=list(KINDS).index),
        "truth_pairs": len(truth),
        "candidate_pairs_scored": len(scores),
        "scan_s": round(scan_s, 3),
        "truth_pairs_scoring_default": int(reachable.sum()),
        "truth_pairs_never_candidates": int(never_scored.sum()),
        "truth_pairs_scoring_default_never_candidates": int((reachable & never_scored).sum()),
        "at_default": default,
        "best_by_F1": best,
        "thresholds": rows,
        "false_positives_at_default": [
            {"a": int(ra[i]), "b": int(rb[i]), "score": round(float(scores[i]), 4)}
            for i in fp_rows.tolist()
        ],
    }


def old_method(vectors: np.ndarray, groups: np.ndarray, threshold: float) -> dict[str, Any]:
    """Precision/recall of every pair with cosine >= ``threshold`` (exact, numpy blocks)."""
    n = len(vectors)
    v = np.ascontiguousarray(vectors, np.float32)
    codes = []
    for start in range(0, n, 1024):
        sims = v[start : start + 1024] @ v.T
        a, b = np.nonzero(sims >= threshold)
        a = a + start
        keep = b > a
        codes.append(a[keep].astype(np.int64) * n + b[keep])
    found = np.concatenate(codes) if codes else np.zeros(0, np.int64)
    truth = truth_pairs(groups)
    tp = int(np.isin(found, truth).sum())
    return {
        "threshold": threshold,
        "pairs": len(found),
        "TP": tp,
        "FP": len(found) - tp,
        "truth": len(truth),
        "precision": round(tp / len(found), 4) if len(found) else None,
        "recall": round(tp / len(truth), 4) if len(truth) else None,
    }


def fingerprint_speed(blobs: Sequence[bytes], n: int, rounds: int) -> dict[str, Any]:
    """Median ms per photo of ``fingerprint_of(bytes)`` over ``rounds`` rounds of ``n`` photos."""
    sample = list(blobs[:n])
    for b in sample[:8]:
        fingerprint_of(b)  # imports and first-call costs out of the timing
    walls, cpus = [], []
    for _ in range(rounds):
        c0, t0 = _cpu(), time.perf_counter()
        for b in sample:
            fingerprint_of(b)
        walls.append((time.perf_counter() - t0) / len(sample) * 1e3)
        cpus.append((_cpu() - c0) / len(sample) * 1e3)
    return {
        "photos": len(sample),
        "rounds": rounds,
        "ms_per_photo": round(median(walls), 3),
        "cpu_ms_per_photo": round(median(cpus), 3),
        "ms_per_photo_rounds": [round(w, 3) for w in walls],
    }


def _cpu() -> float:
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime


def part1(args: argparse.Namespace) -> tuple[dict[str, Any], np.ndarray]:
    """Real photos: every scenario, the old method, fingerprint speed."""
    folder = resolve_data(args.data)
    data = load_data(folder, args.limit)
    blobs = [Path(p).read_bytes() for p in data.paths]
    n_cat = len(blobs)
    sha = [hashlib.sha256(b).hexdigest() for b in blobs]
    first: dict[str, int] = {}
    cat_groups = np.array([first.setdefault(h, i) for i, h in enumerate(sha)], np.int64)
    print(
        f"catalogue: {n_cat} photos, {n_cat - len(first)} byte-identical extra copies", flush=True
    )

    speed = fingerprint_speed(blobs, FP_IMAGES, FP_ROUNDS)
    print(f"fingerprint_of: {speed['ms_per_photo']} ms/photo (median)", flush=True)

    t0 = time.perf_counter()
    cat_fps = np.stack([fingerprint_of(b) for b in blobs])
    cat_fp_s = time.perf_counter() - t0
    kind_names = list(KINDS)
    uploads: dict[str, tuple[list[int], list[bytes], np.ndarray]] = {}
    diag = []
    for kname in kind_names:
        originals, reup = make_reuploads(blobs, kname, args.per_kind, args.seed)
        fps = np.stack([fingerprint_of(b) for b in reup])
        uploads[kname] = (originals, reup, fps)
        own = pair_scores(fps, cat_fps[originals])
        diag.append(
            {
                "kind": kname,
                "claimed": "yes" if KINDS[kname].claimed else "not claimed",
                "what": KINDS[kname].what,
                "n": len(reup),
                "own_score>=default": round(float((own >= DEFAULT_MIN_SCORE).mean()), 4),
                "own_score_p5": round(float(np.percentile(own, 5)), 4),
                "own_score_median": round(float(np.median(own)), 4),
            }
        )

    def scenario(name: str, members: list[str]) -> dict[str, Any]:
        fps, keys, groups, kinds = [cat_fps], list(sha), [cat_groups], [np.full(n_cat, -1)]
        for kname in members:
            originals, reup, kfps = uploads[kname]
            fps.append(kfps)
            keys += [hashlib.sha256(b).hexdigest() for b in reup]
            groups.append(cat_groups[originals])
            kinds.append(np.full(len(reup), kind_names.index(kname)))
        res = score_scenario(
            name,
            np.concatenate(fps),
            keys,
            np.concatenate(groups),
            np.concatenate(kinds),
            kind_names,
        )
        res["claimed"] = all(KINDS[k].claimed for k in members)
        d = res["at_default"]
        print(
            f"  {name}: {res['n_photos']} photos, scan {res['scan_s']} s, at default "
            f"P {d['precision']} R {d['recall']}",
            flush=True,
        )
        return res

    print("scenarios:", flush=True)
    claimed = [k for k in kind_names if KINDS[k].claimed]
    scenarios = [scenario(k, [k]) for k in kind_names]  # "issue" first
    scenarios.insert(1, scenario("catalogue only", []))
    scenarios.append(scenario("claimed kinds mixed", claimed))
    scenarios.append(scenario("all kinds mixed", kind_names))
    for s in scenarios:  # ids, not rows, in the JSON
        n_photos = s["n_photos"]
        for fp in s["false_positives_at_default"]:
            fp["a"] = data.ids[fp["a"]] if fp["a"] < n_cat else f"reupload#{fp['a'] - n_cat}"
            fp["b"] = data.ids[fp["b"]] if fp["b"] < n_cat else f"reupload#{fp['b'] - n_cat}"
        assert n_photos >= n_cat

    old = None
    if not args.no_old:
        from visualsim.extractors.color import ColorHistogramExtractor

        originals, reup, _ = uploads["issue"]
        t0 = time.perf_counter()
        vectors = ColorHistogramExtractor().extract(list(blobs) + reup, progress=False)
        extract_s = time.perf_counter() - t0
        groups = np.concatenate([cat_groups, cat_groups[originals]])
        old = {
            "method": f"cosine >= {OLD_COSINE} on ColorHistogramExtractor vectors, all pairs",
            "scenario": "issue",
            "extract_s": round(extract_s, 2),
            **old_method(np.asarray(vectors), groups, OLD_COSINE),
        }

    result = {
        "data": {
            "folder": str(folder),
            "n_images": n_cat,
            "byte_identical_extra_copies": n_cat - len(first),
            "limit": args.limit,
        },
        "per_kind": args.per_kind,
        "seed": args.seed,
        "kinds": {k: {"what": v.what, "claimed": v.claimed} for k, v in KINDS.items()},
        "duplicates_py_blob": module_version(),
        "fingerprint_speed": speed,
        "catalogue_fingerprint_s": round(cat_fp_s, 2),
        "own_original_scores": diag,
        "scenarios": scenarios,
        "old_method": old,
    }
    return result, cat_fps


# -- part 2: scale -------------------------------------------------------------------
def _shift(x: np.ndarray, dy: np.ndarray, dx: np.ndarray) -> np.ndarray:
    """Shift each ``x[i]`` (m, H, W, ...) by ``(dy[i], dx[i])`` pixels, edges replicated."""
    m, h, w = x.shape[:3]
    rows = np.clip(np.arange(h)[None, :] - dy[:, None], 0, h - 1)
    cols = np.clip(np.arange(w)[None, :] - dx[:, None], 0, w - 1)
    return x[np.arange(m)[:, None, None], rows[:, :, None], cols[:, None, :]]


def synth_chunk(base: np.ndarray, m: int, rng: np.random.Generator) -> np.ndarray:
    """``m`` synthetic fingerprints, each a changed blend of two random real ones."""
    nb = len(base)
    a, b = rng.integers(nb, size=m), rng.integers(nb, size=m)
    w = rng.uniform(0.2, 0.5, size=m).astype(np.float32)
    cut = GREY * GREY
    grey = base[a, :cut].reshape(m, GREY, GREY).astype(np.float32)
    grey = (1 - w)[:, None, None] * grey + w[:, None, None] * base[b, :cut].reshape(m, GREY, GREY)
    col = base[a, cut:].reshape(m, COLOUR, COLOUR, 3).astype(np.float32)
    col = (1 - w)[:, None, None, None] * col + w[:, None, None, None] * base[b, cut:].reshape(
        m, COLOUR, COLOUR, 3
    )
    flip = rng.random(m) < 0.5
    grey[flip] = grey[flip, :, ::-1]
    col[flip] = col[flip, :, ::-1]
    mag = rng.integers(2, 5, size=(m, 2)) * rng.choice([-1, 1], size=(m, 2))
    mag *= rng.random((m, 2)) < 0.75  # sometimes only one axis
    mag[(mag == 0).all(axis=1), 0] = 2
    grey = _shift(grey, mag[:, 0], mag[:, 1])
    scale = GREY // COLOUR
    col = _shift(
        col, np.rint(mag[:, 0] / scale).astype(int), np.rint(mag[:, 1] / scale).astype(int)
    )
    grey += rng.uniform(-10, 10, size=(m, 1, 1)).astype(np.float32)
    grey += rng.normal(0, 2.0, size=grey.shape).astype(np.float32)
    off = rng.uniform(6, 25, size=(m, 1, 1, 3)) * rng.choice([-1, 1], size=(m, 1, 1, 3))
    col += off.astype(np.float32) + rng.normal(0, 1.0, size=col.shape).astype(np.float32)
    out = np.empty((m, FINGERPRINT_BYTES), np.uint8)
    out[:, :cut] = np.clip(np.rint(grey), 0, 255).reshape(m, -1)
    out[:, cut:] = np.clip(np.rint(col), 0, 255).reshape(m, -1)
    return out


def synth(base: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` fingerprints: ``n - planted`` synthetic ones, then ``planted`` copies of them.

    Returns ``(fps, sources, copies)``: copy ``copies[i]`` duplicates row ``sources[i]``.
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, n]))
    planted = round(n * PLANTED_SHARE)
    unique = n - planted
    fps = np.empty((n, FINGERPRINT_BYTES), np.uint8)
    for start in range(0, unique, 32768):
        m = min(32768, unique - start)
        fps[start : start + m] = synth_chunk(base, m, rng)
    sources = np.sort(rng.choice(unique, size=planted, replace=False))
    copies = np.arange(unique, n)
    fps[copies] = fps[sources]
    noisy = copies[rng.random(planted) < 0.5]
    if len(noisy):
        noise = rng.normal(0, 1.5, size=(len(noisy), FINGERPRINT_BYTES))
        fps[noisy] = np.clip(np.rint(fps[noisy] + noise), 0, 255).astype(np.uint8)
    return fps, sources, copies


def module_version() -> str:
    """Git blob hash of the ``duplicates.py`` this process imported (it may change between runs)."""
    data = Path(duplicates.__file__).read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _status_mb(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


class _Stages:
    """Time find_pairs' stages by wrapping the module's candidate index (its code unchanged).

    ``find_pairs`` looks ``_CandidateIndex`` up in its module at each call, so
    wrapping it there times the index build and the candidate search; the rest
    of the scan (scoring the candidate pairs) is the remainder. Progress (after
    the build and after each search call) goes to ``log``, one JSON line each,
    which the parent reads when it has to stop a run.
    """

    def __init__(self, n: int, log: Path) -> None:
        self.n = n
        self.log = log.open("a", encoding="utf-8")
        self.t0 = time.perf_counter()
        self.build_s = self.search_s = 0.0
        self.rows_searched = 0
        self.index = "?"
        stages = self

        class Index(duplicates._CandidateIndex):  # type: ignore[misc, name-defined]
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                t = time.perf_counter()
                super().__init__(*args, **kwargs)
                stages.build_s += time.perf_counter() - t
                inner = getattr(self, "index", None)
                stages.index = type(inner).__name__ + (
                    f" nlist={inner.nlist} nprobe={inner.nprobe}"
                    if hasattr(inner, "nprobe")
                    else ""
                )
                stages.progress("index built")

            def search(self, *args: Any, **kwargs: Any) -> np.ndarray:
                t = time.perf_counter()
                out = super().search(*args, **kwargs)
                stages.search_s += time.perf_counter() - t
                stages.rows_searched += len(args[0]) if args else 0
                stages.progress("searched")
                return out

        duplicates._CandidateIndex = Index  # type: ignore[misc]

    def progress(self, what: str) -> None:
        """One JSON line in the log: what was done last, seconds so far, time per stage."""
        print(json.dumps({"progress": what, **self.summary()}), file=self.log, flush=True)

    def summary(self) -> dict[str, Any]:
        """Rows searched so far and the seconds of each stage."""
        elapsed = time.perf_counter() - self.t0
        return {
            "rows_searched": self.rows_searched,
            "elapsed_s": round(elapsed, 1),
            "index_build_s": round(self.build_s, 1),
            "search_s": round(self.search_s, 1),
            "score_s": round(elapsed - self.build_s - self.search_s, 1),
        }


def scale_child(n: int, base_path: str, seed: int) -> dict[str, Any]:
    """In a fresh process: build ``n`` fingerprints, time ``find_pairs``, measure memory."""
    import faiss

    base = np.load(base_path)
    t0 = time.perf_counter()
    fps, sources, copies = synth(base, n, seed)
    gen_s = time.perf_counter() - t0
    del base
    rss_before = _status_mb("VmRSS")
    maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        hwm_reset = True
    except OSError:
        hwm_reset = False
    c0, t0 = _cpu(), time.perf_counter()
    stages = _Stages(n, progress_path(base_path, n))
    ra, rb, _ = find_pairs(fps)
    scan_s = time.perf_counter() - t0
    stage_s = stages.summary()
    scan_cpu = _cpu() - c0
    hwm = _status_mb("VmHWM")
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    found = ra.astype(np.int64) * n + rb
    planted = sources.astype(np.int64) * n + copies
    got = np.isin(planted, found)
    exact = (fps[sources] == fps[copies]).all(axis=1)
    peak = hwm if hwm_reset and hwm is not None else maxrss
    return {
        "n": n,
        "index": stages.index,
        "duplicates_py_blob": module_version(),
        "faiss_threads": faiss.omp_get_max_threads(),
        "generate_s": round(gen_s, 1),
        "scan_s": round(scan_s, 2),
        "scan_cpu_s": round(scan_cpu, 1),
        "index_build_s": stage_s["index_build_s"],
        "search_s": stage_s["search_s"],
        "score_s": stage_s["score_s"],
        "pairs": len(found),
        "planted": len(planted),
        "planted_found": int(got.sum()),
        "planted_recall": round(float(got.mean()), 4),
        "planted_recall_exact": round(float(got[exact].mean()), 4) if exact.any() else None,
        "planted_recall_noisy": round(float(got[~exact].mean()), 4) if (~exact).any() else None,
        "other_pairs": int(len(found) - np.isin(found, planted).sum()),
        "rss_before_mb": round(rss_before or 0.0, 1),
        "peak_rss_mb": round(peak, 1),
        "scan_extra_mb": round(peak - (rss_before or 0.0), 1),
        "peak_measured_by": "VmHWM reset before the scan"
        if hwm_reset
        else "ru_maxrss (includes generation)",
        "ru_maxrss_before_mb": round(maxrss_before, 1),
        "ru_maxrss_mb": round(maxrss, 1),
        "fingerprints_mb": round(fps.nbytes / 2**20, 1),
    }


def progress_path(base_path: str, n: int) -> Path:
    """Where the child scanning ``n`` fingerprints logs its progress."""
    return Path(base_path).with_name(f"progress-{n}.jsonl")


def _last_progress(path: Path) -> dict[str, Any]:
    """The last progress line a stopped child wrote (rows searched, seconds per stage)."""
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    for line in reversed(text.splitlines()):
        if line.startswith('{"progress"'):
            last = json.loads(line)
            last.pop("progress", None)
            return last
    return {}


def part2(
    args: argparse.Namespace,
    cat_fps: np.ndarray,
    rows: list[dict[str, Any]],
    saved: Callable[[], None],
) -> None:
    """Run each scale in its own subprocess; one past the timeout or killed is recorded so."""
    with tempfile.TemporaryDirectory() as tmp:
        base_path = str(Path(tmp) / "base.npy")
        np.save(base_path, cat_fps)
        for n in args.scale:
            cmd = [sys.executable, __file__, "--scale-child", str(n), base_path]
            cmd += ["--seed", str(args.seed)]
            print(f"scale n={n:,} ...", flush=True)
            t0 = time.perf_counter()
            limit = args.scale_timeout if n == max(args.scale) else 2 * args.scale_timeout
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=limit)
            except subprocess.TimeoutExpired:
                row = {
                    "n": n,
                    "error": f"stopped after {limit} s",
                    **_last_progress(progress_path(base_path, n)),
                }
                print(f"  {row}", flush=True)
                rows.append(row)
                saved()
                continue
            if proc.returncode != 0:
                row = {
                    "n": n,
                    "error": f"exit {proc.returncode}",
                    "stderr_tail": proc.stderr[-2000:],
                }
                print(f"  failed: exit {proc.returncode}\n{proc.stderr[-2000:]}", flush=True)
                rows.append(row)
                saved()
                continue
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            row["process_s"] = round(time.perf_counter() - t0, 1)
            prev = next((r for r in rows if r.get("n") == n // 2 and "scan_s" in r), None)
            row["ratio_to_half_n"] = round(row["scan_s"] / prev["scan_s"], 2) if prev else None
            print(
                f"  scan {row['scan_s']} s, peak {row['peak_rss_mb']} MiB "
                f"(+{row['scan_extra_mb']} MiB), planted recall {row['planted_recall']}",
                flush=True,
            )
            rows.append(row)
            saved()


# -- run -----------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(DEFAULT_DATA), help="catalogue folder (labels.csv)")
    p.add_argument("--limit", type=int, default=None, help="only the first N rows of labels.csv")
    p.add_argument(
        "--per-kind", type=int, default=PER_KIND, help=f"re-uploads per kind ({PER_KIND})"
    )
    p.add_argument("--seed", type=int, default=SEED)
    p.add_argument(
        "--scale",
        default=",".join(str(n) for n in SCALE),
        help="comma-separated catalogue sizes for part 2; empty for none",
    )
    p.add_argument(
        "--scale-timeout",
        type=int,
        default=SCALE_TIMEOUT_S,
        help=f"seconds the largest size may take ({SCALE_TIMEOUT_S}); smaller ones get twice that",
    )
    p.add_argument("--no-old", action="store_true", help="skip the colour-cosine comparison")
    p.add_argument("--quick", action="store_true", help="40 re-uploads per kind, small scales")
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--scale-child", nargs=2, metavar=("N", "BASE"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.per_kind = min(args.per_kind, QUICK_PER_KIND)
        if args.scale == ",".join(str(n) for n in SCALE):
            args.scale = ",".join(str(n) for n in QUICK_SCALE)
    args.scale = [int(s.replace("_", "")) for s in args.scale.split(",") if s.strip()]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Measure both parts; print the tables and write the JSON."""
    args = parse_args(argv)
    if args.scale_child:
        print(json.dumps(scale_child(int(args.scale_child[0]), args.scale_child[1], args.seed)))
        return 0
    started = time.perf_counter()
    command = " ".join(
        ["python benchmarks/bench_duplicates.py", *(sys.argv[1:] if argv is None else argv)]
    )
    scale: list[dict[str, Any]] = []

    def save(complete: bool) -> None:  # after part 1 and after each size: partial runs count
        write_json(
            args.out,
            {
                "benchmark": "near-duplicate detection: precision/recall on real photos, scale",
                "command": command,
                "cpu": cpu_model(),
                "machine": machine_info(),
                "faiss": __import__("faiss").__version__,
                "numpy": np.__version__,
                "visualsim": code_info(),
                "settings": {
                    "DEFAULT_MIN_SCORE": DEFAULT_MIN_SCORE,
                    "FINGERPRINT_BYTES": FINGERPRINT_BYTES,
                    "CANDIDATES": duplicates.CANDIDATES,
                    "EXACT_UP_TO": duplicates.EXACT_UP_TO,
                    "thresholds": list(THRESHOLDS),
                    "old_cosine": OLD_COSINE,
                    "planted_share": PLANTED_SHARE,
                    "scale_timeout_s": args.scale_timeout,
                },
                "real": real,
                "scale": scale,
                "complete": complete,
                "loadavg": os.getloadavg(),
                "total_seconds": round(time.perf_counter() - started, 1),
            },
        )

    real, cat_fps = part1(args)
    save(complete=False)
    part2(args, cat_fps, scale, lambda: save(complete=False))

    issue = next(s for s in real["scenarios"] if s["scenario"] == "issue")
    print(f"\n## 'issue' protocol ({KINDS['issue'].what}), catalogue + {issue['n_reuploads']}\n")
    print_table(
        issue["thresholds"],
        ["threshold", "pairs", "TP", "FP", "FP_with_reupload", "precision", "recall"],
    )
    print(f"\n## fingerprint_of: {real['fingerprint_speed']['ms_per_photo']} ms per photo\n")
    print("## re-upload vs its own original (pair_scores alone, no candidate search)\n")
    print_table(
        real["own_original_scores"],
        ["kind", "claimed", "n", "own_score>=default", "own_score_p5", "own_score_median"],
    )
    print(f"\n## scenarios at DEFAULT_MIN_SCORE = {DEFAULT_MIN_SCORE} and at the best F1\n")
    table = []
    for s in real["scenarios"]:
        d, b = s["at_default"], s["best_by_F1"]
        table.append(
            {
                "scenario": s["scenario"] + ("" if s["claimed"] else " (not claimed)"),
                "photos": s["n_photos"],
                "truth": s["truth_pairs"],
                "pairs": d["pairs"],
                "TP": d["TP"],
                "precision": d["precision"],
                "recall": d["recall"],
                "best t": b["threshold"],
                "P@best": b["precision"],
                "R@best": b["recall"],
                "missed cand.": s["truth_pairs_scoring_default_never_candidates"],
                "scan s": s["scan_s"],
            }
        )
    print_table(
        table,
        [
            "scenario",
            "photos",
            "truth",
            "pairs",
            "TP",
            "precision",
            "recall",
            "best t",
            "P@best",
            "R@best",
            "missed cand.",
            "scan s",
        ],
    )
    mixed = real["scenarios"][-1]
    print(f"\n## per-kind recall, '{mixed['scenario']}', by threshold\n")
    kinds = list(KINDS)
    rows = []
    for r in mixed["thresholds"]:
        row = {"t": r["threshold"], "pairs": r["pairs"], "P": r["precision"], "R": r["recall"]}
        row.update(r["recall_per_kind"])
        rows.append(row)
    print_table(rows, ["t", "pairs", "P", "R", *kinds])
    print("(not claimed: " + ", ".join(k for k in kinds if not KINDS[k].claimed) + ")")
    if real["old_method"]:
        o = real["old_method"]
        print(f"\n## old method on 'issue': {o['method']}\n")
        print_table([o], ["threshold", "pairs", "TP", "FP", "truth", "precision", "recall"])
    if scale:
        print("\n## scale: synthetic fingerprints, find_pairs(fps) at the default threshold\n")
        print_table(
            scale,
            [
                "n",
                "scan_s",
                "scan_cpu_s",
                "index_build_s",
                "search_s",
                "score_s",
                "ratio_to_half_n",
                "peak_rss_mb",
                "rss_before_mb",
                "scan_extra_mb",
                "pairs",
                "planted_recall",
                "error",
            ],
        )

    save(complete=True)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
