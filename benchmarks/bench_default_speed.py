"""Extraction speed of the default extractor against SqueezeNet and the 4:1 mix, on real photos.

The configurations are timed in turn, round after round, on the same photos
(real 224x224 catalogue JPEGs from ``../shared/data/fashion-products-dev``, or
generated 224x224 JPEGs with ``--generated``), so a busy machine slows them all
alike; the table shows the median img/s over rounds and each configuration's
median ratio to the first one within a round. The model is built and warmed
before the first round.

Usage::

    python benchmarks/bench_default_speed.py                      # 512 photos, 3 rounds
    python benchmarks/bench_default_speed.py --openvino           # + OpenVINO int8 rows
    python benchmarks/bench_default_speed.py --quick --generated  # seconds: does it work?

Writes ``benchmarks/results/default-speed.json``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine_info, make_jpegs, median, print_table, timed, write_json
from bench_real import DEFAULT_DATA, cpu_model, load_data, resolve_data

from visualsim.extractors.auto import product_extractor
from visualsim.extractors.color import ColorHistogramExtractor
from visualsim.extractors.concat import ConcatExtractor
from visualsim.extractors.squeezenet import SqueezeNetExtractor

OUT = Path(__file__).resolve().parent / "results" / "default-speed.json"
WARMUP = 16


def configs(openvino: bool) -> dict[str, Callable[[], Any]]:
    """Name -> extractor factory; the first is the reference of the ratios."""
    out: dict[str, Callable[[], Any]] = {
        "squeezenet+colour 4:1": lambda: ConcatExtractor(
            [SqueezeNetExtractor(), ColorHistogramExtractor()], weights=[4, 1]
        ),
        "squeezenet": SqueezeNetExtractor,
        "default (product_extractor)": product_extractor,
    }
    if openvino:
        out["squeezenet+colour 4:1, openvino int8"] = lambda: ConcatExtractor(
            [SqueezeNetExtractor(runtime="openvino", precision="int8"), ColorHistogramExtractor()],
            weights=[4, 1],
        )
        out["default, openvino int8"] = lambda: product_extractor(
            runtime="openvino", precision="int8"
        )
    return out


def photo_paths(args: argparse.Namespace, tmp: Path) -> list[str]:
    """The photos to time: real ones from --data, or generated 224x224 JPEGs."""
    if args.generated:
        return [str(p) for p in make_jpegs(tmp, args.n, size=(224, 224))]
    data = load_data(resolve_data(args.data), args.n)
    return data.paths


def main(argv: Sequence[str] | None = None) -> int:
    """Time every configuration in alternating rounds; print and write the results."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--generated", action="store_true", help="generated JPEGs, not --data")
    p.add_argument("--n", type=int, default=512, help="photos per round (default 512)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--openvino", action="store_true", help="also the OpenVINO int8 runtime")
    p.add_argument("--quick", action="store_true", help="32 photos, one round")
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    if args.quick:
        args.n, args.rounds = 32, 1
    with tempfile.TemporaryDirectory() as tmp:
        paths = photo_paths(args, Path(tmp))
        extractors = {name: make() for name, make in configs(args.openvino).items()}
        for ext in extractors.values():
            ext.extract(paths[:WARMUP])  # builds (and for OpenVINO calibrates) the model
        rounds: list[dict[str, float]] = []
        for _ in range(args.rounds):
            speeds: dict[str, float] = {}
            for name, ext in extractors.items():
                run = timed(lambda ext=ext: len(ext.extract(paths)))
                speeds[name] = run.per_s
                speeds[name + " cpu"] = run.per_cpu_s
            rounds.append(speeds)
    first = next(iter(extractors))
    rows = [
        {
            "config": name,
            "img/s": round(median([r[name] for r in rounds]), 1),
            "img/cpu-s": round(median([r[name + " cpu"] for r in rounds]), 1),
            "ratio": round(median([r[name] / r[first] for r in rounds]), 2),
        }
        for name in extractors
    ]
    print(f"\n{len(paths)} photos x {args.rounds} rounds, medians; ratio to {first!r}:\n")
    print_table(rows, ["config", "img/s", "img/cpu-s", "ratio"])
    write_json(
        args.out,
        {
            "benchmark": "bench_default_speed",
            "command": " ".join(["python benchmarks/bench_default_speed.py", *(argv or [])]),
            "photos": len(paths),
            "source": "generated" if args.generated else str(resolve_data(args.data)),
            "rounds": rounds,
            "results": rows,
            "cpu": cpu_model(),
            "loadavg": os.getloadavg(),
            "machine": machine_info(),
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
