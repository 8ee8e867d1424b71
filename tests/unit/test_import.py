"""`import visualsim` stays light and exposes a typed, documented public API."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ["tensorflow", "keras", "faiss", "matplotlib", "sklearn", "pandas", "kaggle", "ray"]


def test_import_visualsim_loads_no_heavy_dependency() -> None:
    code = (
        "import sys, json, visualsim;"
        "from visualsim import ColorHistogramExtractor, load_image;"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_colour_only_pipeline_never_imports_tensorflow() -> None:
    code = (
        "import sys, numpy as np\n"
        "from visualsim import ColorHistogramExtractor\n"
        "v = ColorHistogramExtractor().extract([np.zeros((8, 8, 3), np.uint8)])\n"
        "assert v.shape == (1, ColorHistogramExtractor().dim)\n"
        "print('tensorflow' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_every_public_name_resolves_and_is_documented() -> None:
    import inspect

    import visualsim

    for name in visualsim.__all__:
        obj = getattr(visualsim, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert obj.__doc__, f"visualsim.{name} has no docstring"


def test_unknown_attribute_raises_attribute_error() -> None:
    import visualsim

    with pytest.raises(AttributeError, match="no_such_thing"):
        _ = visualsim.no_such_thing  # type: ignore[attr-defined]


def test_package_is_typed() -> None:
    from importlib.resources import files

    assert files("visualsim").joinpath("py.typed").is_file()
