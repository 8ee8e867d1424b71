"""Helpers shared by the benchmark scripts: seeded JPEGs, timing, tables, JSON.

Kept small on purpose; import it from a script in ``benchmarks/`` as
``from _common import ...`` (the script's folder is on ``sys.path``).
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter


def make_jpegs(
    directory: str | os.PathLike[str],
    n: int,
    *,
    size: tuple[int, int] = (600, 800),
    seed: int = 0,
    quality: int = 90,
) -> list[Path]:
    """Write ``n`` seeded product-like JPEGs of ``size`` (width, height); return their paths.

    Each image is a few coloured, textured shapes on a white background, so
    file sizes and decode times are those of real product photos rather than
    of flat colour. Files that already exist are reused.
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    width, height = size
    paths = []
    for i in range(n):
        path = out / f"img_{seed}_{width}x{height}_{i:05d}.jpg"
        paths.append(path)
        colours = rng.integers(0, 256, size=(4, 3))
        boxes = rng.uniform(0.1, 0.9, size=(4, 4))
        noise_seed = int(rng.integers(2**31))
        if path.exists():
            continue
        img = Image.new("RGB", size, (255, 255, 255))
        draw = ImageDraw.Draw(img)
        for colour, box in zip(colours, boxes, strict=True):
            x0, x1 = sorted(box[:2] * width)
            y0, y1 = sorted(box[2:] * height)
            draw.ellipse((x0, y0, x1, y1), fill=tuple(int(c) for c in colour))
        texture = np.random.default_rng(noise_seed).normal(0, 18, (height, width, 1))
        pixels = np.clip(np.asarray(img, dtype=np.float32) + texture, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).filter(ImageFilter.SMOOTH).save(path, quality=quality)
    return paths


def cpu_seconds() -> float:
    """Return the user + system CPU time this process has used so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_mb() -> float:
    """Return this process's peak resident set size in MiB.

    Reads ``VmHWM`` from ``/proc/self/status`` where there is one: ``ru_maxrss``
    survives ``exec``, so a child started from a big parent would report the
    parent's peak. Elsewhere falls back to ``ru_maxrss`` (KiB on Linux).
    """
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@dataclass
class Run:
    """One timed run: items done, wall-clock seconds and CPU seconds."""

    items: int
    wall_s: float
    cpu_s: float

    @property
    def per_s(self) -> float:
        """Items per wall-clock second."""
        return self.items / self.wall_s

    @property
    def per_cpu_s(self) -> float:
        """Items per CPU-second of this process (robust to other load on the machine)."""
        return self.items / self.cpu_s if self.cpu_s > 0 else float("nan")


def timed(fn: Callable[[], int]) -> Run:
    """Run ``fn`` once and return its :class:`Run`; ``fn`` returns how many items it did."""
    wall, cpu = time.perf_counter(), cpu_seconds()
    items = fn()
    return Run(items, time.perf_counter() - wall, cpu_seconds() - cpu)


def median(values: Sequence[float]) -> float:
    """Return the median of ``values`` (NaN when empty)."""
    return statistics.median(values) if values else float("nan")


def print_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """Print ``rows`` as an aligned Markdown table of ``columns``; return the text."""

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return (
                "-" if value != value else f"{value:,.3g}" if abs(value) < 10 else f"{value:,.1f}"
            )
        return "-" if value is None else str(value)

    cells = [[cell(row.get(col)) for col in columns] for row in rows]
    widths = [max(len(col), *(len(r[i]) for r in cells)) for i, col in enumerate(columns)]
    lines = [
        "| " + " | ".join(col.ljust(w) for col, w in zip(columns, widths, strict=True)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    lines += [
        "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in cells
    ]
    text = "\n".join(lines)
    print(text, flush=True)
    return text


def machine_info() -> dict[str, Any]:
    """Return what the numbers depend on: CPU model, cores, load, library versions."""
    info: dict[str, Any] = {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "loadavg_1m": os.getloadavg()[0],
    }
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                info["cpu"] = value.strip()
                break
    return info


def write_json(path: str | os.PathLike[str], payload: dict[str, Any]) -> Path:
    """Write ``payload`` as indented JSON to ``path`` (folders created); return the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
    return out
