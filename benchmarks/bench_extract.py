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
