"""The `visualsim` command end to end, in subprocesses, on generated images."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from visualsim.datasets.synthetic import SyntheticProducts


def run(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run(
        [sys.executable, "-m", "visualsim.cli", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=600,
    )


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("shop")
    SyntheticProducts(40, seed=3, size=64).write_folder(root / "images", label="color")
    (root / "images" / "broken.jpg").write_bytes(b"not an image at all")
    return root


@pytest.fixture(scope="module")
def catalog(shop: Path) -> Path:
    out = shop / "catalog"
    result = run(
        "index", shop / "images", "-o", out, "--extractor", "color", "--index", "hnsw", "-q"
    )
    assert result.returncode == 0, result.stderr
    assert "indexed 40 images" in result.stdout
    assert "broken.jpg" in result.stderr  # reported, not fatal
    return out


def test_info_describes_the_catalogue(catalog: Path) -> None:
    result = run("info", catalog)
    assert result.returncode == 0, result.stderr
    assert "items      40" in result.stdout and "color" in result.stdout
    manifest = json.loads(run("info", catalog, "--json").stdout)
    assert manifest["count"] == 40 and manifest["index"]["name"] == "hnsw"


def test_query_prints_ranked_results_and_json(catalog: Path, shop: Path) -> None:
    red = sorted((shop / "images" / "red").iterdir())[0]
    text = run("query", catalog, red, "-k", "3")
    assert text.returncode == 0, text.stderr
    lines = [line for line in text.stdout.splitlines() if line.strip()[:2] in ("1.", "2.", "3.")]
    assert len(lines) == 3
    data = json.loads(run("query", catalog, red, "-k", "3", "--json").stdout)
    assert [r["rank"] for r in data["results"]] == [1, 2, 3]
    assert data["results"][0]["id"] == f"red/{red.name}"  # the image itself is the best match
    assert data["results"][0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert all(r["metadata"]["label"] == "red" for r in data["results"][:2])


def test_query_where_filter_and_plot(catalog: Path, shop: Path, tmp_path: Path) -> None:
    red = sorted((shop / "images" / "red").iterdir())[0]
    out = tmp_path / "plot.png"
    result = run("query", catalog, red, "-k", "4", "--where", "label=blue", "--json", "--plot", out)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["results"] and all(r["metadata"]["label"] == "blue" for r in data["results"])
    with Image.open(out) as img:
        assert img.format == "PNG" and img.size[0] > img.size[1] > 100


def test_similar_excludes_the_item(catalog: Path) -> None:
    from visualsim import Recommender

    ids = Recommender.load(catalog).ids_
    result = run("similar", catalog, ids[0], "-k", "5", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert len(data["results"]) == 5 and ids[0] not in [r["id"] for r in data["results"]]


def test_evaluate_and_duplicates(catalog: Path) -> None:
    result = run("evaluate", catalog, "--label", "label", "-k", "1", "5", "--json")
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)["metrics"]
    assert metrics["recall@5"] >= metrics["recall@1"] > 0.5  # colour labels, colour extractor
    dup = run("duplicates", catalog, "--min-score", "0.9999")
    assert dup.returncode == 0 and "pairs with score" in dup.stdout


def test_missing_paths_give_one_line_and_exit_2(tmp_path: Path, catalog: Path) -> None:
    for args in (
        ("index", tmp_path / "nope", "-o", tmp_path / "c"),
        ("query", tmp_path / "nope", tmp_path / "x.jpg"),
        ("query", catalog, tmp_path / "x.jpg"),
        ("info", tmp_path / "nope"),
        ("similar", catalog, "no-such-id"),
    ):
        result = run(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1
        assert result.stderr.startswith("visualsim ")


def test_index_refuses_to_overwrite_and_bad_catalogue_exits_1(
    catalog: Path, shop: Path, tmp_path: Path
) -> None:
    again = run("index", shop / "images", "-o", catalog, "--extractor", "color", "-q")
    assert again.returncode == 2 and "--overwrite" in again.stderr
    broken = tmp_path / "broken-cat"
    broken.mkdir()
    (broken / "manifest.json").write_text("{not json")
    result = run("info", broken)
    assert result.returncode == 1 and "manifest.json" in result.stderr


def test_info_verify_detects_a_tampered_catalogue(catalog: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(catalog, copy)
    assert run("info", copy, "--verify").returncode == 0
    ids = next(copy.glob("chunk-*.ids.json"))
    ids.write_text(ids.read_text().replace("red", "rod", 1))
    result = run("info", copy, "--verify")
    assert result.returncode == 1 and ids.name in result.stderr


def test_index_with_pca_and_float16(shop: Path, tmp_path: Path) -> None:
    out = tmp_path / "small"
    args = ("--extractor", "color", "--reduce-dim", "24", "--storage", "float16", "-q")
    result = run("index", shop / "images", "-o", out, *args)
    assert result.returncode == 0, result.stderr
    manifest = json.loads(run("info", out, "--json").stdout)
    assert manifest["dim"] == 24 and manifest["storage"] == "float16"
    assert manifest["reducer"]["dim"] == 24
    red = sorted((shop / "images" / "red").iterdir())[0]
    data = json.loads(run("query", out, red, "-k", "1", "--json").stdout)
    assert data["results"][0]["id"] == f"red/{red.name}"


def test_runtime_flag_only_for_keras_extractors(shop: Path, tmp_path: Path) -> None:
    result = run(
        "index",
        shop / "images",
        "-o",
        tmp_path / "c",
        "--extractor",
        "color",
        "--runtime",
        "frozen",
    )
    assert result.returncode == 2 and "--runtime applies" in result.stderr


def test_bad_arguments_exit_2(catalog: Path) -> None:
    assert run("query", catalog).returncode == 2
    assert run("frobnicate").returncode == 2
    assert run("index", catalog, "-o", catalog.parent / "x", "--index", "magic").returncode == 2


def test_demo_runs_offline_on_generated_products(tmp_path: Path) -> None:
    result = run(
        "demo",
        "--data",
        "synthetic",
        "-n",
        "120",
        "--extractor",
        "color",
        "--out",
        "out",
        "-q",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "Recall@5 =" in result.stdout
    assert "extractor: color" in result.stdout
    png = tmp_path / "out" / "recommendations.png"
    with Image.open(png) as img:
        assert img.format == "PNG"
        pixels = np.asarray(img.convert("RGB"))
    assert pixels.std() > 10  # a real picture, not a blank canvas
    assert (tmp_path / "out" / "catalog" / "manifest.json").is_file()


# -- the contract: one line, the right exit code, never a traceback ---------------------


def cli(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    """Run the command in-process; return (exit code, stdout, stderr)."""
    from visualsim.cli import main

    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--extractor", "Color"), "did you mean 'color'"),
        (("--extractor", "colr"), "did you mean 'color'"),
        (("--extractor", "squeezenet+colour"), "did you mean 'color'"),
        (("--extractor", "concat"), "squeezenet+color:4:1"),
        (("--extractor", "color:2"), "two or more parts"),
        (("--extractor", "squeezenet+color:4"), "one weight per part"),
        (("--extractor", "squeezenet+color:a:1"), "not a number"),
        (("--extractor", "squeezenet+color:0:0"), "all be zero"),
        (("--extractor", "color+"), "NAME+NAME"),
        (("--extractor", "color", "--extractor-config", "{bins"), "not valid JSON"),
        (("--extractor", "color", "--extractor-config", "[1]"), "JSON object"),
        (("--extractor", "color", "--extractor-config", '{"bogus": 1}'), "bogus"),
        (("--extractor", "squeezenet+color", "--extractor-config", '{"x": {}}'), "not a part"),
        (("--extractor", "color", "--weights", "none"), "--weights applies"),
        (("--index", "FLAT"), "did you mean 'flat'"),
        (("--index", "hnws"), "did you mean 'hnsw'"),
        (("--batch-size", "0"), "positive integer"),
        (("--reduce-dim", "-1"), "positive integer"),
    ],
)
def test_index_usage_errors_are_one_line_exit_2(
    capsys: pytest.CaptureFixture[str],
    shop: Path,
    tmp_path: Path,
    args: tuple[str, ...],
    needle: str,
) -> None:
    code, _, err = cli(capsys, "index", shop / "images", "-o", tmp_path / "c", *args)
    assert code == 2, err
    assert needle in one_line(err) and err.startswith("visualsim index")
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize("k", ["0", "-3", "two", "1.5"])
def test_bad_k_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], catalog: Path, shop: Path, k: str
) -> None:
    red = sorted((shop / "images" / "red").iterdir())[0]
    for args in (("query", catalog, red), ("similar", catalog, "red/x.jpg")):
        code, _, err = cli(capsys, *args, "-k", k)
        assert code == 2 and "-k" in one_line(err)
    code, _, err = cli(capsys, "evaluate", catalog, "--label", "label", "-k", "1", k)
    assert code == 2 and "-k" in one_line(err)


def test_extractor_specs_and_config_reach_every_extractor(
    capsys: pytest.CaptureFixture[str], shop: Path, tmp_path: Path
) -> None:
    out = tmp_path / "mix"
    code, stdout, err = cli(
        capsys,
        "index",
        shop / "images",
        "-o",
        out,
        "--extractor",
        "squeezenet+color:4:1",
        "--extractor-config",
        '{"color": {"bins": [8, 4, 4]}}',
        "-q",
    )
    assert code == 0, err
    from visualsim import make_extractor

    dim = 512 + make_extractor("color", bins=[8, 4, 4]).dim  # SqueezeNet + the colour part
    assert f"(concat, {dim}-d, index flat)" in stdout
    manifest = json.loads((out / "manifest.json").read_text())
    config = manifest["extractor"]["config"]
    assert [p["name"] for p in config["extractors"]] == ["squeezenet", "color"]
    assert config["weights"] == [4.0, 1.0]
    assert config["extractors"][1]["config"]["bins"] == [8, 4, 4]
    # a whole spec, as `info --json` prints it, rebuilds the same extractor
    again = tmp_path / "again"
    spec = json.dumps(manifest["extractor"])
    code, stdout, err = cli(
        capsys, "index", shop / "images", "-o", again, "--extractor-config", spec, "-q"
    )
    assert code == 0, err
    assert json.loads((again / "manifest.json").read_text())["extractor"] == manifest["extractor"]


def test_json_names_the_query_and_clips_scores(
    capsys: pytest.CaptureFixture[str], catalog: Path, shop: Path
) -> None:
    red = sorted((shop / "images" / "red").iterdir())[0]
    code, out, err = cli(capsys, "query", catalog, red, "-k", "3", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["query"] == str(red)
    assert all(-1.0 <= r["score"] <= 1.0 for r in data["results"])
    code, out, err = cli(capsys, "similar", catalog, f"red/{red.name}", "-k", "3", "--json")
    data = json.loads(out)
    assert data["query"] == f"red/{red.name}"
    assert all(-1.0 <= r["score"] <= 1.0 for r in data["results"])
    code, out, _ = cli(capsys, "duplicates", catalog, "--min-score", "0.5", "--json")
    assert all(-1.0 <= p["score"] <= 1.0 for p in json.loads(out))


def test_info_verify_says_what_it_verified(
    capsys: pytest.CaptureFixture[str], catalog: Path
) -> None:
    code, plain, _ = cli(capsys, "info", catalog)
    code, verified, err = cli(capsys, "info", catalog, "--verify")
    assert code == 0, err
    assert "verified" not in plain
    line = next(x for x in verified.splitlines() if x.startswith("verified"))
    assert "SHA-256" in line and "40 vectors" in line and "index agrees" in line
    code, out, _ = cli(capsys, "info", catalog, "--verify", "--json")
    assert "SHA-256" in json.loads(out)["verified"]


def test_plot_into_a_missing_folder_is_refused_not_created(
    capsys: pytest.CaptureFixture[str], catalog: Path, shop: Path, tmp_path: Path
) -> None:
    red = sorted((shop / "images" / "red").iterdir())[0]
    target = tmp_path / "no" / "such" / "plot.png"
    code, out, err = cli(capsys, "query", catalog, red, "--plot", target)
    assert code == 2 and "does not exist" in one_line(err) and not out
    assert not (tmp_path / "no").exists()
    code, _, err = cli(capsys, "query", catalog, red, "--plot", tmp_path)
    assert code == 2 and "is a folder" in one_line(err)


def test_missing_matplotlib_is_an_install_hint(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    catalog: Path,
    shop: Path,
    tmp_path: Path,
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "matplotlib" else real(n, *a)
    )
    red = sorted((shop / "images" / "red").iterdir())[0]
    code, out, err = cli(capsys, "query", catalog, red, "--plot", tmp_path / "p.png")
    assert code == 1 and 'pip install "visualsim[plot]"' in one_line(err)
    assert not (tmp_path / "p.png").exists()
    # the demo writes its catalogue and scores before it needs matplotlib
    for name in ("matplotlib", "matplotlib.figure"):
        monkeypatch.setitem(sys.modules, name, None)
    code, out, err = cli(
        capsys, "demo", "--data", "synthetic", "-n", "30", "--extractor", "color", "--out",
        tmp_path / "demo", "-q",
    )  # fmt: skip
    assert code == 1 and 'pip install "visualsim[plot]"' in one_line(err)
    assert "Recall@5 =" in out
    assert (tmp_path / "demo" / "catalog" / "manifest.json").is_file()


def test_outputs_that_cannot_be_written_are_one_line_exit_1(
    capsys: pytest.CaptureFixture[str], catalog: Path, shop: Path, tmp_path: Path
) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("x")
    red = sorted((shop / "images" / "red").iterdir())[0]
    for args in (
        ("index", shop / "images", "-o", a_file / "cat", "--extractor", "color", "-q"),
        ("index", shop / "images", "-o", tmp_path / ("n" * 300), "--extractor", "color", "-q"),
        ("query", catalog, red, "--plot", tmp_path / ("p" * 300 + ".png")),
    ):
        code, _, err = cli(capsys, *args)
        assert code == 1, (args, err)
        assert one_line(err).startswith(f"visualsim {args[0]}: error:")
        assert len(err) < 400  # a 300-character name is shortened in the message
    assert a_file.read_text() == "x"


def test_damaged_catalogues_are_one_line_exit_1(
    capsys: pytest.CaptureFixture[str], catalog: Path, shop: Path, tmp_path: Path
) -> None:
    import shutil

    red = sorted((shop / "images" / "red").iterdir())[0]
    damages = {
        "truncated vectors": lambda c: _first(c, "vectors.npy").write_bytes(b"\x93NUMPY"),
        "count as text": lambda c: _edit_manifest(c, count="twenty"),
        "files as a list": lambda c: _edit_manifest(c, files=["vectors.npy"]),
        "no manifest": lambda c: (c / "manifest.json").unlink(),
        "ids not a list": lambda c: _first(c, "ids.json").write_text('{"a": 1}'),
        "deep json": lambda c: _first(c, "ids.json").write_text("[" * 100_000),
    }
    for name, damage in damages.items():
        copy = tmp_path / name.replace(" ", "-")
        shutil.copytree(catalog, copy)
        damage(copy)
        for args in (("query", copy, red), ("info", copy, "--verify"), ("similar", copy, "x")):
            code, _, err = cli(capsys, *args)
            assert code == 1, (name, args, err)
            assert one_line(err).startswith(f"visualsim {args[0]}: error:"), (name, err)


def _first(catalog: Path, suffix: str) -> Path:
    return next(catalog.glob(f"chunk-*.{suffix}"))


def _edit_manifest(catalog: Path, **fields: object) -> None:
    manifest = json.loads((catalog / "manifest.json").read_text())
    manifest.update(fields)
    (catalog / "manifest.json").write_text(json.dumps(manifest))


def test_no_progress_bars_or_api_hints_when_stderr_is_not_a_terminal(
    shop: Path, tmp_path: Path
) -> None:
    result = run("index", shop / "images", "-o", tmp_path / "c", "--extractor", "color")
    assert result.returncode == 0, result.stderr
    assert "extract[" not in result.stderr and "it/s" not in result.stderr
    assert ".failed_" not in result.stderr
    assert sum("broken.jpg" in line for line in result.stderr.splitlines()) == 1  # listed once


FUZZ_COUNT = {"inputs": 0, "exit 0": 0, "exit 1": 0, "exit 2": 0}
VOCAB = [
    "index", "query", "similar", "info", "evaluate", "duplicates", "--json", "--verify",
    "-k", "0", "-3", "5", "1e309", "nan", "--where", "label=red", "label", "=x", "--min-score",
    "--plot", "--label", "--extractor", "color", "Color", "squeezenet+color:4:1", "concat",
    "--index", "FLAT", "flat", "--batch-size", "--reduce-dim", "--storage", "float16", "-o",
    "-q", "-v", "--help", "--overwrite", "--strict", "--extractor-config", '{"bins": [2, 2, 2]}',
    "{", "", "--", "-", "\x00", "é", "../..", "/dev/null",
]  # fmt: skip


def fuzz_commands(catalog: Path, red: str) -> list[list[str]]:
    return [
        ["query", str(catalog), red],
        ["similar", str(catalog), "red/" + Path(red).name],
        ["info", str(catalog)],
        ["evaluate", str(catalog), "--label", "label"],
        ["duplicates", str(catalog)],
    ]


OPTIONS = [
    ["-k", "3"], ["-k", "100"], ["--json"], ["--where", "label=red"], ["--where", "label=red|blue"],
    ["--where", "label == 'red'"], ["--where", "label in ['red', 'blue'] and not label == 'x'"],
    ["--where", "price < 3"], ["--where", "label =="], ["--where", "label == 3"],
    ["--min-score", "0.5"], ["--min-score", "2"], ["--label", "label"], ["--verify"], ["-q"],
]  # fmt: skip


def test_fuzzed_arguments_never_raise_a_traceback(
    catalog: Path, shop: Path, tmp_path: Path
) -> None:
    import contextlib
    import io

    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from visualsim.cli import main

    paths = [str(catalog), str(shop / "images"), str(tmp_path / "out"), str(tmp_path / "p.png")]
    token = st.one_of(st.sampled_from(VOCAB + paths), st.text(max_size=8))
    red = str(sorted((shop / "images" / "red").iterdir())[0])
    # half random token lists, half well-formed commands with random options, so the
    # commands themselves run (loading, querying, filtering), not only the parser
    well_formed = st.tuples(
        st.sampled_from(
            [
                ["query", str(catalog), red],
                ["similar", str(catalog), "red/" + Path(red).name],
                ["info", str(catalog)],
                ["evaluate", str(catalog), "--label", "label"],
                ["duplicates", str(catalog)],
                ["query", str(catalog), red, "--where"],
            ]
        ),
        st.lists(st.one_of(st.sampled_from(OPTIONS), token.map(lambda t: [t])), max_size=4),
    ).map(lambda t: t[0] + [x for group in t[1] for x in group])
    commands = st.tuples(
        st.sampled_from(fuzz_commands(catalog, red)), st.lists(st.sampled_from(OPTIONS), max_size=3)
    ).map(lambda t: t[0] + [x for group in t[1] for x in group])

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.one_of(st.lists(token, max_size=7), well_formed, commands))
    def check(argv: list[str]) -> None:
        if "demo" in argv:
            return
        if "index" in argv and any(t not in ("color",) for t in _extractor_args(argv)):
            return  # only colour indexing: fast, no model build
        FUZZ_COUNT["inputs"] += 1
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(argv)
        assert code in (0, 1, 2), (argv, code)
        FUZZ_COUNT[f"exit {code}"] += 1
        assert "Traceback" not in err.getvalue(), (argv, err.getvalue())
        if code == 2:
            assert len(err.getvalue().strip().splitlines()) == 1, (argv, err.getvalue())

    check()
    assert FUZZ_COUNT["inputs"] > 100
    print(f"fuzzed argument lists: {FUZZ_COUNT}")


def _extractor_args(argv: list[str]) -> list[str]:
    if "--extractor" not in argv and "--extractor-config" not in argv:
        return ["resnet50"]
    values = [argv[i + 1] for i, t in enumerate(argv[:-1]) if t == "--extractor"]
    return values or ["?"]


def test_index_without_extractor_runs_offline_and_says_which_it_chose(
    capsys: pytest.CaptureFixture[str],
    shop: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "no-keras-cache"))
    monkeypatch.delenv("VISUALSIM_WEIGHTS", raising=False)
    code, out, err = cli(capsys, "index", shop / "images", "-o", tmp_path / "c", "-q")
    assert code == 0, err
    assert "indexed 40 images" in out and "(concat, 1031-d" in out
    said = [line for line in out.splitlines() if line.startswith("extractor (auto): ")]
    assert len(said) == 1 and "SqueezeNet" in said[0] and "silhouette" in said[0]
    spec = json.loads((tmp_path / "c" / "manifest.json").read_text())["extractor"]
    assert [p["name"] for p in spec["config"]["extractors"]] == [
        "squeezenet",
        "color",
        "silhouette",
    ]


@pytest.mark.parametrize(
    "args",
    [("--extractor-config", "{}"), ("--weights", "none"), ("--runtime", "openvino")],
)
def test_auto_extractor_refuses_options_it_would_ignore(
    capsys: pytest.CaptureFixture[str], shop: Path, tmp_path: Path, args: tuple[str, ...]
) -> None:
    code, _, err = cli(capsys, "index", shop / "images", "-o", tmp_path / "c", *args)
    assert code == 2 and "--extractor auto picks its own settings" in one_line(err)
