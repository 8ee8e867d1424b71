"""A catalogue from a stranger is data: it never chooses where to connect, which secret to send,
where to create files or which weights file to open.

The attacks (issue 28): a Milvus catalogue's manifest named a server and the environment
variable of its token, any variable, so ``visualsim serve evil --api-key-env VISUALSIM_KEY``
sent the server's own API key to the named host, and ``info``, ``info --verify`` and
``similar`` did the same; a Milvus Lite path in the manifest made ``Recommender.load`` create a
database in a folder outside the catalogue; a Keras extractor config opened any local file as
weights (and a missing one gave another error: an existence oracle). Every test here runs on
this machine: the "server" is a socket this test listens on, to see that nothing connects.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import logging
import os
import shutil
import socket
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from visualsim import CatalogError, ColorHistogramExtractor, ConfigError, Recommender
from visualsim.extractors.keras import KerasExtractor, ResNet50Extractor
from visualsim.indexes import load_index
from visualsim.indexes.milvus import (
    MILVUS_TOKEN_ENV_ENV,
    MILVUS_URI_ENV,
    MilvusIndex,
    loading_saved,
    milvus_connection,
)

SECRET = "s3cr3t-stranger-token-value"
TOKEN_VAR = "VS_STRANGER_TEST_TOKEN"


# ----------------------------------------------------------------------------- helpers


@pytest.fixture(autouse=True)
def _no_grant_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MILVUS_URI_ENV, raising=False)
    monkeypatch.delenv(MILVUS_TOKEN_ENV_ENV, raising=False)
    monkeypatch.setenv(TOKEN_VAR, SECRET)


class Listener:
    """A TCP socket on 127.0.0.1 that counts who connects to it (nothing should)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.setblocking(False)
        self.port = int(self.sock.getsockname()[1])
        self.uri = f"http://127.0.0.1:{self.port}"
        self.accepted = 0

    def connections(self) -> int:
        while True:
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return self.accepted
            conn.close()
            self.accepted += 1


@pytest.fixture
def listener() -> Iterator[Listener]:
    server = Listener()
    yield server
    server.sock.close()


class EnvSpy(dict):  # type: ignore[type-arg]
    """``os.environ`` that records every name read."""

    def __init__(self, data: Any) -> None:
        super().__init__(data)
        self.read: list[str] = []

    def get(self, key: Any, default: Any = None) -> Any:
        self.read.append(key)
        return super().get(key, default)

    def __getitem__(self, key: Any) -> Any:
        self.read.append(key)
        return super().__getitem__(key)

    def __contains__(self, key: Any) -> bool:
        self.read.append(key)
        return super().__contains__(key)


@pytest.fixture
def env_spy(monkeypatch: pytest.MonkeyPatch) -> EnvSpy:
    spy = EnvSpy(os.environ)
    monkeypatch.setattr(os, "environ", spy)
    return spy


def _everything(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc)) + repr(exc) + str(vars(exc))


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``site/cat`` (a Milvus Lite catalogue of 5 items) and ``site/shop.db`` beside it."""
    root = tmp_path_factory.mktemp("site")
    ext = ColorHistogramExtractor(bins=(4, 2, 2))
    rng = np.random.default_rng(0)
    rec = Recommender(ext, MilvusIndex(uri=str(root / "shop.db"), collection="shop"))
    rec.add_vectors(rng.normal(size=(5, ext.dim)).astype(np.float32), list("abcde"))
    rec.save(root / "cat")
    return root


def _index_dir(catalogue: Path) -> Path:
    manifest = json.loads((catalogue / "manifest.json").read_text())
    return catalogue / manifest["index_dir"]


def _craft(
    site: Path,
    dst: Path,
    *,
    config: dict[str, Any] | None = None,
    state: dict[str, Any] | None = None,
    drop_state: tuple[str, ...] = (),
) -> Path:
    """Copy ``site/cat`` to ``dst`` with the Milvus config/state changed and every hash redone."""
    shutil.copytree(site / "cat", dst)
    index_dir = _index_dir(dst)
    inner = json.loads((index_dir / "manifest.json").read_text())
    inner["config"].update(config or {})
    inner["state"].update(state or {})
    for key in drop_state:
        inner["state"].pop(key, None)
    (index_dir / "manifest.json").write_text(json.dumps(inner))
    outer = json.loads((dst / "manifest.json").read_text())
    outer["index"]["config"].update(config or {})
    rel = f"{index_dir.name}/manifest.json"
    outer["files"][rel] = hashlib.sha256((index_dir / "manifest.json").read_bytes()).hexdigest()
    (dst / "manifest.json").write_text(json.dumps(outer))
    return dst


@pytest.fixture
def remote(site: Path, tmp_path: Path, listener: Listener) -> Path:
    """A catalogue naming a server (our listener) and a token variable that holds a secret."""
    return _craft(
        site,
        tmp_path / "evil.catalog",
        config={"uri": listener.uri, "token_env": TOKEN_VAR, "timeout": 1.0},
        state={"uri": listener.uri},
        drop_state=("lite_path",),
    )


# ----------------------------------------------------------------------------- Milvus: servers


def test_a_catalogue_naming_a_server_and_a_token_is_refused_unconnected(
    remote: Path, listener: Listener, env_spy: EnvSpy, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(CatalogError, match="'uri'.*milvus_uri") as err:
        Recommender.load(remote)
    assert listener.connections() == 0
    assert TOKEN_VAR not in env_spy.read  # the secret was not even read
    assert SECRET not in _everything(err.value) + caplog.text
    assert MILVUS_URI_ENV in str(err.value)  # says how the caller names the server


def test_a_saved_index_alone_is_refused_the_same_way(
    remote: Path, listener: Listener, env_spy: EnvSpy
) -> None:
    with pytest.raises(CatalogError, match="milvus_uri"):
        load_index(_index_dir(remote))
    with pytest.raises(CatalogError, match="milvus_uri"):
        MilvusIndex.load(_index_dir(remote))
    assert listener.connections() == 0 and TOKEN_VAR not in env_spy.read


def test_a_token_variable_named_by_a_lite_catalogue_is_refused(
    site: Path, tmp_path: Path, env_spy: EnvSpy
) -> None:
    crafted = _craft(site, tmp_path / "cat", config={"token_env": TOKEN_VAR})
    with pytest.raises(CatalogError, match=f"'token_env'.*{TOKEN_VAR}.*milvus_token_env"):
        Recommender.load(crafted)
    assert TOKEN_VAR not in env_spy.read


@pytest.mark.parametrize("how", ["argument", "context", "environment"])
def test_the_caller_chooses_the_connection(
    site: Path,
    remote: Path,
    listener: Listener,
    env_spy: EnvSpy,
    monkeypatch: pytest.MonkeyPatch,
    how: str,
) -> None:
    own = str(site / "shop.db")  # the caller's own database, which holds the collection
    if how == "argument":
        rec = Recommender.load(remote, milvus_uri=own)
    elif how == "context":
        with milvus_connection(uri=own):
            rec = Recommender.load(remote)
    else:
        monkeypatch.setitem(env_spy, MILVUS_URI_ENV, own)
        rec = Recommender.load(remote)
    assert len(rec) == 5
    assert len(hits := [r.id for r in rec.similar_to("a", k=2)]) == 2 and "a" not in hits
    assert listener.connections() == 0 and TOKEN_VAR not in env_spy.read
    index = rec._segments_.index
    assert index.uri == own and index.token_env is None  # the file's variable is dropped


def test_the_callers_token_variable_is_the_one_read(
    site: Path, remote: Path, listener: Listener, env_spy: EnvSpy, tmp_path: Path
) -> None:
    rec = Recommender.load(remote, milvus_uri=str(site / "shop.db"), milvus_token_env="MY_TOKEN")
    index = rec._segments_.index
    assert index.token_env == "MY_TOKEN" and TOKEN_VAR not in env_spy.read
    rec.save(tmp_path / "again")
    saved = b"".join(p.read_bytes() for p in (tmp_path / "again").rglob("*") if p.is_file())
    assert SECRET.encode() not in saved and TOKEN_VAR.encode() not in saved
    assert listener.connections() == 0


def test_a_bad_connection_from_the_caller_names_the_argument() -> None:
    with pytest.raises(ConfigError, match="token_env"), milvus_connection(token_env="a b"):
        pass
    with pytest.raises(ConfigError, match="uri"), milvus_connection(uri="nowhere"):
        pass


@pytest.mark.parametrize(
    "argv",
    [["info", "{cat}"], ["info", "--verify", "{cat}"], ["similar", "{cat}", "a", "-k", "2"]],
)
def test_the_command_line_never_connects(
    remote: Path,
    listener: Listener,
    env_spy: EnvSpy,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
) -> None:
    from visualsim.cli import main

    code = main([a.format(cat=remote) for a in argv])
    out = capsys.readouterr()
    assert code != 0
    assert "milvus" in out.err.lower() and MILVUS_URI_ENV in out.err
    assert SECRET not in out.out + out.err
    assert listener.connections() == 0 and TOKEN_VAR not in env_spy.read


def test_serve_never_sends_its_own_api_key(
    site: Path, tmp_path: Path, listener: Listener, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("fastapi")
    from visualsim.serve import create_app

    api_key = "the-servers-own-api-key"
    monkeypatch.setenv("VISUALSIM_TEST_API_KEY", api_key)
    evil = _craft(
        site,
        tmp_path / "evil.catalog",
        config={"uri": listener.uri, "token_env": "VISUALSIM_TEST_API_KEY", "timeout": 1.0},
        state={"uri": listener.uri},
        drop_state=("lite_path",),
    )
    spy = EnvSpy(os.environ)
    monkeypatch.setattr(os, "environ", spy)
    with pytest.raises(CatalogError, match="milvus_uri") as err:
        create_app(evil, api_key=api_key, warm=False)
    assert "VISUALSIM_TEST_API_KEY" not in spy.read
    assert api_key not in _everything(err.value)
    assert listener.connections() == 0


# ----------------------------------------------------------------------------- Milvus Lite paths


@pytest.mark.parametrize(
    "lite_path",
    ["../../../elsewhere/evil.db", "../../sub/evil.db", "../../../../evil.db", "ABSOLUTE"],
)
@pytest.mark.parametrize("created", [True, False])
def test_a_lite_database_outside_the_catalogue_is_refused_and_not_made(
    site: Path, tmp_path: Path, lite_path: str, created: bool
) -> None:
    box = tmp_path / "box"
    box.mkdir()
    if lite_path == "ABSOLUTE":
        lite_path = str(tmp_path / "elsewhere" / "evil.db")
    crafted = _craft(
        site,
        box / "inner" / "cat",
        config={"uri": str(tmp_path / "elsewhere" / "evil.db")},
        state={"lite_path": lite_path, "created": created},
    )
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with pytest.raises(CatalogError, match="lite_path"):
        Recommender.load(crafted)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    assert not (tmp_path / "elsewhere").exists()


def test_a_lite_database_that_is_a_symlink_is_refused(site: Path, tmp_path: Path) -> None:
    (tmp_path / "real.db").mkdir()
    (tmp_path / "shop.db").symlink_to(tmp_path / "real.db")
    crafted = _craft(site, tmp_path / "cat", state={"lite_path": "../../shop.db"})
    with pytest.raises(CatalogError, match="lite_path.*symbolic link"):
        Recommender.load(crafted)


def test_an_empty_lite_index_creates_nothing_at_load(tmp_path: Path) -> None:
    MilvusIndex(uri=str(tmp_path / "e.db"), collection="empty").save(tmp_path / "idx")
    loaded = load_index(tmp_path / "idx")
    assert len(loaded) == 0 and not (tmp_path / "e.db").exists()


def test_the_db_beside_the_catalogue_still_loads(site: Path, tmp_path: Path) -> None:
    shutil.copytree(site, tmp_path / "moved")
    rec = Recommender.load(tmp_path / "moved" / "cat")
    assert rec._segments_.index.uri == str((tmp_path / "moved" / "shop.db").resolve())
    assert len(rec) == 5


def test_an_index_built_from_a_saved_config_never_opens_its_lite_path(tmp_path: Path) -> None:
    """What a version-1 catalogue's index spec builds: it is refused at the first connection."""
    with loading_saved(str(tmp_path / "old.catalog")):
        index = MilvusIndex(uri=str(tmp_path / "elsewhere" / "x.db"), collection="c")
    with pytest.raises(CatalogError, match="milvus_uri"):
        index.add(np.eye(3), ["a", "b", "c"])
    assert not (tmp_path / "elsewhere").exists()
    with loading_saved(str(tmp_path / "old.catalog")), pytest.raises(CatalogError, match="uri"):
        MilvusIndex(uri="http://127.0.0.1:1", collection="c")


def test_milvus_cannot_be_the_shard_of_a_sharded_index() -> None:
    """A rebuild makes new shards from the saved ``shard_params``: they must never be Milvus."""
    from visualsim.indexes import make_index

    params = {"uri": "http://127.0.0.1:1", "token_env": TOKEN_VAR, "collection": "c"}
    with pytest.raises(ConfigError, match="milvus"):
        make_index("sharded", n_shards=1, shard="milvus", shard_params=params)


# ----------------------------------------------------------------------------- Keras weights


@pytest.fixture(scope="module")
def keras_catalogue(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A catalogue made with ResNet50 (random weights), 3 items (no network is built)."""
    ext = ResNet50Extractor(weights=None, input_size=64)
    rng = np.random.default_rng(1)
    rec = Recommender(ext, "flat")
    rec.add_vectors(rng.normal(size=(3, ext.dim)).astype(np.float32), ["x", "y", "z"])
    return rec.save(tmp_path_factory.mktemp("keras") / "cat")


def _with_extractor(src: Path, dst: Path, spec: dict[str, Any]) -> Path:
    shutil.copytree(src, dst)
    manifest = json.loads((dst / "manifest.json").read_text())
    manifest["extractor"] = spec
    (dst / "manifest.json").write_text(json.dumps(manifest))
    return dst


class OpenSpy:
    """Records every path ``open``/``os.stat`` was asked about."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.paths: list[str] = []
        real_open, real_stat = builtins.open, os.stat

        def spy_open(file: Any, *args: Any, **kwargs: Any) -> Any:
            self.paths.append(str(file))
            return real_open(file, *args, **kwargs)

        def spy_stat(path: Any, *args: Any, **kwargs: Any) -> Any:
            self.paths.append(os.fsdecode(path) if not isinstance(path, int) else "")
            return real_stat(path, *args, **kwargs)

        monkeypatch.setattr(builtins, "open", spy_open)
        monkeypatch.setattr(os, "stat", spy_stat)


@pytest.mark.parametrize("name", ["resnet50", "keras"])
def test_a_catalogue_naming_a_keras_weights_file_is_refused_unopened(
    keras_catalogue: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    messages = []
    for i, weights in enumerate(["/etc/hostname", str(tmp_path / "no-such-file.h5")]):
        config = ResNet50Extractor(weights=None, input_size=64).get_config()
        if name == "keras":
            config["backbone"] = "resnet50"
        config["weights"] = weights
        crafted = _with_extractor(
            keras_catalogue, tmp_path / f"cat{i}", {"name": name, "config": config}
        )
        with monkeypatch.context() as m:
            spy = OpenSpy(m)
            with pytest.raises(ConfigError, match="weights") as err:
                Recommender.load(crafted)
        assert not [p for p in spy.paths if p == weights]
        assert "trust_weights_path=True" in str(err.value)
        messages.append(str(err.value).replace(repr(weights)[:200], "PATH"))
    assert messages[0] == messages[1]  # the same answer whether the file is there: no oracle


def test_keras_weights_inside_a_concat_are_refused_too(keras_catalogue: Path) -> None:
    from visualsim.extractors.base import extractor_from_config

    config = ResNet50Extractor(weights=None, input_size=64).get_config()
    config["weights"] = "/etc/hostname"
    spec = {
        "name": "concat",
        "config": {"extractors": [{"name": "resnet50", "config": config}], "weights": [1.0]},
    }
    with pytest.raises(ConfigError, match="weights"):
        extractor_from_config(spec)


def test_keras_weights_escape_hatches(tmp_path: Path) -> None:
    weights = tmp_path / "mine.weights.h5"
    weights.write_bytes(b"not read until the first extraction")
    ext = ResNet50Extractor(weights=weights, input_size=64)
    rng = np.random.default_rng(2)
    rec = Recommender(ext, "flat")
    rec.add_vectors(rng.normal(size=(3, ext.dim)).astype(np.float32), ["x", "y", "z"])
    rec.save(tmp_path / "cat")
    with pytest.raises(ConfigError, match="weights"):
        Recommender.load(tmp_path / "cat")
    again = Recommender.load(
        tmp_path / "cat", extractor=ResNet50Extractor(weights=weights, input_size=64)
    )
    assert again.extractor_.weights == str(weights)
    config = ext.get_config()
    assert ResNet50Extractor.from_config(config, trust_weights_path=True).get_config() == config
    config = {**config, "backbone": "resnet50"}
    assert KerasExtractor.from_config(config, trust_weights_path=True).weights == str(weights)


@pytest.mark.parametrize("weights", ["imagenet", None])
def test_imagenet_and_random_weights_still_load(tmp_path: Path, weights: str | None) -> None:
    ext = ResNet50Extractor(weights=weights, input_size=64)
    rec = Recommender(ext, "flat")
    rec.add_vectors(np.random.default_rng(3).normal(size=(2, ext.dim)), ["p", "q"])
    loaded = Recommender.load(rec.save(tmp_path / "cat"))
    assert loaded.extractor_.get_config() == ext.get_config()
    keras = KerasExtractor("resnet50", weights=weights, input_size=64)
    assert KerasExtractor.from_config(keras.get_config()).get_config() == keras.get_config()
