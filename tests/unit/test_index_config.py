"""``visualsim index --index-config``: an index's options as JSON, a JSON file, or a whole spec."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from visualsim import HNSWIndex, IVFIndex, Recommender
from visualsim.cli import UsageError, build_index, main
from visualsim.datasets.synthetic import SyntheticProducts


def cli(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("photos")
    SyntheticProducts(12, seed=1, size=32).write_folder(root, label="category")
    return root


def _index_spec(catalog: Path) -> dict[str, object]:
    manifest = json.loads((catalog / "manifest.json").read_text())
    spec: dict[str, object] = manifest["index"]
    return spec


def test_options_as_json_text_and_as_a_file(
    capsys: pytest.CaptureFixture[str], photos: Path, tmp_path: Path
) -> None:
    out = tmp_path / "hnsw.catalog"
    code, stdout, err = cli(
        capsys, "index", photos, "-o", out, "--extractor", "color", "-q",
        "--index", "hnsw", "--index-config", '{"M": 8, "ef_search": 40}',
    )  # fmt: skip
    assert code == 0, err
    assert stdout == f"indexed 12 images into {out} (color, 455-d, index hnsw)\n"
    spec = _index_spec(out)
    assert spec["name"] == "hnsw"
    assert {"M": 8, "ef_search": 40}.items() <= dict(spec["config"]).items()  # type: ignore[call-overload]
    assert len(Recommender.load(out)) == 12

    config = tmp_path / "ivf.json"
    config.write_text('{"nlist": 2, "nprobe": 2}', encoding="utf-8")
    out2 = tmp_path / "ivf.catalog"
    code, stdout, err = cli(
        capsys, "index", photos, "-o", out2, "--extractor", "color", "-q",
        "--index", "ivf", "--index-config", config,
    )  # fmt: skip
    assert code == 0, err
    assert "index ivf)" in stdout
    assert {"nlist": 2, "nprobe": 2}.items() <= dict(_index_spec(out2)["config"]).items()  # type: ignore[call-overload]


def test_a_whole_spec_from_info_json_rebuilds_the_same_index(
    capsys: pytest.CaptureFixture[str], photos: Path, tmp_path: Path
) -> None:
    first = tmp_path / "a.catalog"
    code, _, err = cli(
        capsys, "index", photos, "-o", first, "--extractor", "color", "-q",
        "--index", "hnsw", "--index-config", '{"M": 12}',
    )  # fmt: skip
    assert code == 0, err
    code, info, err = cli(capsys, "info", first, "--json")
    assert code == 0, err
    spec = json.loads(info)["index"]
    second = tmp_path / "b.catalog"
    # without --index: the spec names it
    code, stdout, err = cli(
        capsys, "index", photos, "-o", second, "--extractor", "color", "-q",
        "--index-config", json.dumps(spec),
    )  # fmt: skip
    assert code == 0, err
    assert "index hnsw)" in stdout
    assert _index_spec(second) == _index_spec(first)


def test_without_index_config_nothing_changes(
    capsys: pytest.CaptureFixture[str], photos: Path, tmp_path: Path
) -> None:
    out = tmp_path / "flat.catalog"
    code, stdout, err = cli(capsys, "index", photos, "-o", out, "--extractor", "color", "-q")
    assert code == 0, err
    assert stdout == f"indexed 12 images into {out} (color, 455-d, index flat)\n"
    assert _index_spec(out)["name"] == "flat"
    assert build_index(None) == "flat" and build_index("hnsw") == "hnsw"


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (("--index-config", "{not json"), "--index-config is not valid JSON"),
        (("--index-config", "[1, 2]"), "--index-config must be a JSON object, got list"),
        (("--index", "hnsw", "--index-config", '{"M": 1}'), "--index-config: M"),
        (("--index", "flat", "--index-config", '{"nlist": 4}'), "--index-config: invalid config"),
        (("--index-config", "missing.json"), "--index-config 'missing.json' does not exist"),
        (
            ("--index", "ivf", "--index-config", '{"name": "hnsw", "config": {}}'),
            "--index ivf and --index-config naming index 'hnsw' disagree",
        ),
        (
            ("--index-config", '{"name": "nope", "config": {}}'),
            "--index-config: unknown index 'nope'",
        ),
        (("--index-config", '{"name": "hnsw", "config": 3}'), "'config' must be a JSON object"),
    ],
)
def test_bad_index_configs_are_usage_errors(
    capsys: pytest.CaptureFixture[str],
    photos: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    extra: tuple[str, ...],
    needle: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "c.catalog"
    code, stdout, err = cli(capsys, "index", photos, "-o", out, "--extractor", "color", *extra)
    assert code == 2, (stdout, err)
    assert needle in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()  # refused before any image was read


def test_a_folder_or_a_huge_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="is a folder, not a file"):
        build_index("hnsw", str(tmp_path))
    huge = tmp_path / "huge.json"
    huge.write_bytes(b" " * ((1 << 20) + 1))
    with pytest.raises(UsageError, match="larger than 1 MiB"):
        build_index("hnsw", str(huge))
    bad = tmp_path / "bad.json"
    bad.write_bytes(b"\xff\xfe{")
    with pytest.raises(UsageError, match="cannot be read"):
        build_index("hnsw", str(bad))


def test_build_index_returns_the_registered_class() -> None:
    index = build_index("hnsw", '{"M": 16, "ef_search": 128}')
    assert isinstance(index, HNSWIndex) and (index.M, index.ef_search) == (16, 128)
    assert isinstance(build_index(None, '{"name": "ivf", "config": {"nlist": 3}}'), IVFIndex)
    assert isinstance(build_index("ivf", ' {"nlist": 3}'), IVFIndex)  # leading blanks: JSON


@pytest.mark.parametrize("dim", ["%", "8", 2.5, 0, -4, True])
def test_ivfpq_checks_dim_before_using_it(dim: object) -> None:
    # a fuzzed manifest once gave dim='%': 'dim % m' formatted a string (ValueError)
    from visualsim import ConfigError
    from visualsim.indexes.faiss import IVFPQIndex

    with pytest.raises(ConfigError, match="dim"):
        IVFPQIndex(nlist=2, m=4, nbits=4, dim=dim)  # type: ignore[arg-type]
