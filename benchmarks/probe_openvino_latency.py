"""Single-image latency of ResNet50 on OpenVINO INT8: the network alone and end to end.

``weights=None`` ResNet50 at 224x224, INT8 calibrated on 32 real-photo crops,
then 20 calls of each: the network on one prepared image, and
``extract([path])`` on one 600x800 JPEG (decode, letterbox, network, pooling).
Prints wall and CPU milliseconds (median, fastest) with the load average, and
writes ``benchmarks/results/openvino-latency.json``. Set
``VISUALSIM_CACHE_DIR`` to reuse a converted model.

Usage::

    python benchmarks/probe_openvino_latency.py
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import cpu_seconds, machine_info, make_jpegs, print_table, write_json  # noqa: E402
from bench_extract import real_photos  # noqa: E402

from visualsim import ResNet50Extractor  # noqa: E402


def main() -> int:
    """Time the calls, print the table, write the JSON."""
    paths = make_jpegs(Path("/tmp") / "visualsim-bench-jpegs", 24, size=(600, 800), seed=0)
    ext = ResNet50Extractor(
        weights=None, runtime="openvino", precision="int8", calibration=real_photos(32, seed=1)
    )
    ext.extract(paths[:2])
    ext.extract(paths[:1])
    x = ext.load(paths[0])[None]
    rows = []
    for name, call in (
        ("network alone, 1 image", lambda p: ext._embed(x)),
        ("end to end, 1 JPEG", lambda p: ext.extract([p])),
    ):
        walls, cpus = [], []
        for p in paths[:20]:
            wall, cpu = time.perf_counter(), cpu_seconds()
            call(p)
            walls.append(1000 * (time.perf_counter() - wall))
            cpus.append(1000 * (cpu_seconds() - cpu))
        rows.append(
            {
                "call": name,
                "median ms": float(np.median(walls)),
                "fastest ms": min(walls),
                "median CPU ms": float(np.median(cpus)),
                "load": os.getloadavg()[0],
            }
        )
    info = machine_info()
    print(f"\nResNet50 INT8 (OpenVINO), 20 calls each, {info['cpu']}, {info['cores']} cores")
    table = print_table(rows, ["call", "median ms", "fastest ms", "median CPU ms", "load"])
    out = write_json(
        HERE / "results" / "openvino-latency.json",
        {
            "benchmark": "openvino-latency",
            "machine": info,
            "precision": ext.precision_,
            "rows": rows,
            "table": table,
        },
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
