"""A catalogue cannot choose the weights file the SqueezeNet extractor reads.

The review's chain: a stranger's catalogue sets the extractor's ``weights_path``
to a crafted pickle inside the catalogue; ``visualsim info --verify`` passed and
``visualsim query`` died with SIGSEGV (exit 139). Now the manifest's path is
refused when the catalogue is loaded, and even a trusted path is read by the
restricted unpickler, which refuses the crafted arrays.
"""

from __future__ import annotations

import base64
import json
import os
import pickle
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from visualsim import Recommender
from visualsim.errors import ConfigError, VisualsimError
from visualsim.extractors.base import extractor_from_config, extractor_spec
from visualsim.extractors.squeezenet import SqueezeNetExtractor
from visualsim.indexes.sklearn import SklearnIndex
from visualsim.safe_unpickle import UnsafePickleError


def _object_array_pickle() -> bytes:
    """``{"conv1": [ndarray((1,), 'O', b'AAAAAAAA'), ...]}``: plain pickle + a read = SIGSEGV."""

    def s(text: str) -> bytes:
        return b"X" + struct.pack("<I", len(text)) + text.encode()

    evil = b"cnumpy\nndarray\n(K\x01\x85" + s("O") + b"B\x08\x00\x00\x00AAAAAAAAtR"
    return b"\x80\x03}" + s("conv1") + b"]" + b"(" + evil + evil + b"e" + b"s."


@pytest.fixture
def hostile_catalogue(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    folder = tmp_path / "catalogue"
    rec = Recommender(SqueezeNetExtractor(), SklearnIndex())
    rec.add_vectors(rng.normal(size=(4, 512)).astype(np.float32), ["a", "b", "c", "d"])
    rec.save(folder)
    (folder / "weights.pkl").write_bytes(_object_array_pickle())
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["extractor"]["config"]["weights_path"] = str(folder / "weights.pkl")
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def _no_core_dump() -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def test_the_crafted_weights_do_crash_plain_pickle(tmp_path: Path) -> None:
    code = textwrap.dedent(
        f"""
        import base64, pickle
        weights = pickle.loads(base64.b64decode({base64.b64encode(_object_array_pickle())!r}))
        print(repr(weights["conv1"][0][0]))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        timeout=120,
        cwd=tmp_path,
        preexec_fn=_no_core_dump,  # the crash must not leave a core file behind
    )

    assert result.returncode != 0  # SIGSEGV (-11) on this machine


def test_loading_a_catalogue_that_names_a_weights_file_is_refused(hostile_catalogue: Path) -> None:
    with pytest.raises(ConfigError, match="weights_path") as info:
        Recommender.load(hostile_catalogue)

    assert "extractor=SqueezeNetExtractor(weights_path=" in str(info.value)
    assert isinstance(info.value, VisualsimError)


def test_the_same_path_passed_in_code_is_read_safely(hostile_catalogue: Path) -> None:
    """The user's own choice is honoured, and the crafted pickle is still refused."""
    extractor = SqueezeNetExtractor(weights_path=hostile_catalogue / "weights.pkl")
    rec = Recommender.load(hostile_catalogue, extractor=extractor)

    with pytest.raises(UnsafePickleError, match="dtype"):
        rec.query(np.full((32, 32, 3), 128, np.uint8), k=2)


def _image(tmp_path: Path) -> Path:
    path = tmp_path / "query.png"
    Image.new("RGB", (40, 40), (200, 30, 30)).save(path)
    return path


@pytest.mark.parametrize("command", ["query", "info"])
def test_visualsim_on_the_hostile_catalogue_exits_with_one_line_not_sigsegv(
    hostile_catalogue: Path, tmp_path: Path, command: str
) -> None:
    args = [str(hostile_catalogue)]
    if command == "query":
        args.append(str(_image(tmp_path)))
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(
        [sys.executable, "-m", "visualsim.cli", command, *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )

    assert result.returncode not in (139, -11), result.stderr
    if command == "query":
        assert result.returncode == 1, (result.stdout, result.stderr)
        assert "weights_path" in result.stderr
        assert "Traceback" not in result.stderr


def test_a_trusted_subprocess_load_with_the_pickle_does_not_crash(hostile_catalogue: Path) -> None:
    """Opting in to the path: still no SIGSEGV, one clear error (run apart, so a crash shows)."""
    code = textwrap.dedent(
        f"""
        import sys, numpy as np
        from visualsim import Recommender
        from visualsim.extractors.squeezenet import SqueezeNetExtractor
        from visualsim.safe_unpickle import UnsafePickleError
        folder = {str(hostile_catalogue)!r}
        extractor = SqueezeNetExtractor(weights_path=folder + "/weights.pkl")
        rec = Recommender.load(folder, extractor=extractor)
        try:
            rec.query(np.zeros((8, 8, 3), np.uint8), k=1)
        except UnsafePickleError as exc:
            print("refused:", exc)
            sys.exit(3)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300
    )

    assert result.returncode == 3, (result.returncode, result.stderr[-2000:])
    assert "refused:" in result.stdout


def test_from_config_refuses_a_weights_path_unless_trusted(tmp_path: Path) -> None:
    original = SqueezeNetExtractor(weights_path=tmp_path / "w.pkl", resize="center_crop")
    spec = extractor_spec(original)

    with pytest.raises(ConfigError, match="weights_path"):
        extractor_from_config(spec)
    trusted = SqueezeNetExtractor.from_config(spec["config"], trust_weights_path=True)

    assert trusted.get_config() == original.get_config()


def test_config_without_a_weights_path_round_trips() -> None:
    original = SqueezeNetExtractor(resize="stretch", batch_size=8, num_workers=1)

    rebuilt = extractor_from_config(extractor_spec(original))

    assert isinstance(rebuilt, SqueezeNetExtractor)
    assert rebuilt.get_config() == original.get_config()
    assert rebuilt.weights_path is None


@pytest.mark.parametrize("config", [["weights_path"], "weights_path", 3])
def test_from_config_of_garbage_is_a_config_error(config: object) -> None:
    with pytest.raises(ConfigError):
        SqueezeNetExtractor.from_config(config)


def test_pickled_error_keeps_its_message(hostile_catalogue: Path) -> None:
    try:
        Recommender.load(hostile_catalogue)
    except ConfigError as exc:
        assert str(pickle.loads(pickle.dumps(exc))) == str(exc)
