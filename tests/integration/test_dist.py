"""``make dist``'s sdist and wheel install and work in a fresh virtual environment
(issue 25, item 1: ``pip install visualsim`` fails, so a checkout or a wheel is how
visualsim is installed).

The build is what ``make dist`` runs: ``python -m build --no-isolation``, which builds
the sdist and then the wheel from it (so a file the sdist forgets fails here), offline,
with the build backend (setuptools >= 77) the dev extra installs. The wheel is installed
with ``--no-deps
--no-index`` into a new venv that borrows this venv's site-packages for the
dependencies (one ``.pth`` line, appended after its own), so nothing is downloaded
and ``import visualsim`` must come from the wheel, not from the checkout.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow

SMOKE = """
import sys
from importlib import resources
import numpy as np
import visualsim
from visualsim import ColorHistogramExtractor, Recommender
assert visualsim.__file__.startswith(sys.prefix), visualsim.__file__
static = resources.files("visualsim.serve") / "static"
assert (static / "index.html").is_file() and (resources.files("visualsim") / "py.typed").is_file()
ext = ColorHistogramExtractor()
rec = Recommender(ext).add_vectors(np.eye(3, ext.dim), ["a", "b", "c"])
print(visualsim.__version__, [r.id for r in rec.query_vector(np.eye(3, ext.dim)[1], 1)])
"""


def _run(*cmd: str | Path, **kwargs: object) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PIP_RETRIES": "0", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    return subprocess.run(  # type: ignore[call-overload]
        [str(c) for c in cmd], capture_output=True, text=True, env=env, timeout=600, **kwargs
    )


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    # what `make dist` runs: offline, with the build backend the dev extra installs
    result = _run(sys.executable, "-m", "build", "--no-isolation", "--outdir", out, ROOT)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return out


def test_dist_builds_an_sdist_and_a_wheel_holding_the_page(dist: Path) -> None:
    (wheel,) = dist.glob("visualsim-*.whl")
    (sdist,) = dist.glob("visualsim-*.tar.gz")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
    for name in (
        "visualsim/serve/static/index.html",
        "visualsim/py.typed",
        "visualsim/cli/__init__.py",
        "visualsim/cli/__main__.py",
    ):
        assert name in names, name
    assert any(n.endswith("entry_points.txt") for n in names)
    with tarfile.open(sdist) as tf:
        members = tf.getnames()
    assert any(m.endswith("src/visualsim/serve/static/index.html") for m in members)
    assert any(m.endswith("/LICENSE") for m in members)


def test_the_wheel_installs_offline_in_a_fresh_venv_and_works(dist: Path, tmp_path: Path) -> None:
    (wheel,) = dist.glob("visualsim-*.whl")
    venv = tmp_path / "fresh"
    made = _run(sys.executable, "-m", "venv", "--without-pip", venv)
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    installed = _run(
        sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index",
        "--quiet", wheel,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stdout + installed.stderr
    # the dependencies from this venv, after the fresh one's own site-packages
    purelib = _run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    site = Path(purelib.stdout.strip())
    (site / "zz_borrowed_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    smoke = _run(python, "-c", SMOKE, cwd=tmp_path)
    assert smoke.returncode == 0, smoke.stdout + smoke.stderr
    assert smoke.stdout.split()[-1] == "['b']"
    version = _run(venv / "bin" / "visualsim", "--version", cwd=tmp_path)
    assert version.returncode == 0 and version.stdout.startswith("visualsim "), version.stderr
