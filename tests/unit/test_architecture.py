"""The shape of the package (docs/architecture.md): no import circle, no import up the layers.

Every ``import`` of a ``visualsim`` module counts, at the top of a module, inside a
function or under ``TYPE_CHECKING``: a circle hidden in a function is still a circle.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import visualsim

PACKAGE = Path(visualsim.__file__).resolve().parent

LAYERS: tuple[tuple[str, ...], ...] = (
    # 0: what everything may use
    ("_lazy", "_version", "errors", "ids", "validation", "registry", "io", "persistence"),
    ("safe_unpickle",),
    # 1: pixels and filter expressions
    ("images", "crop", "duplicates", "filters"),
    # 2: images -> vectors; where images come from; how vectors are judged
    ("extractors", "datasets", "feeds", "inputs", "evaluation"),
    # 3: vectors kept and searched
    ("store", "reduction", "indexes", "search"),
    # 4: vectors learned, and written in resumable chunks
    ("adaptation", "chunks", "checkpoint", "shards", "distributed"),
    # 5: the facade's helpers
    ("pipeline", "ingest", "querying", "catalog", "sync", "testing"),
    # 6: the facade
    ("recommender",),
    # 7: front ends
    ("plotting", "demo", "cli", "serve"),
)
"""Modules by layer, bottom first: a module imports only its own layer or those below."""


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path  # "" is the package root
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> Iterator[str]:
    """The visualsim modules ``name`` imports, as keys of ``modules``."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if name else []
                if not is_package:
                    base = base[:-1]
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join([*base, *([node.module] if node.module else [])])
                targets = [f"{mod}.{a.name}".strip(".") for a in node.names] + [mod]
            elif node.module and node.module.split(".")[0] == "visualsim":
                mod = node.module.partition(".")[2]
                targets = [f"{mod}.{a.name}".strip(".") for a in node.names] + [mod]
            else:
                continue
        for target in targets:
            target = target.removeprefix("visualsim.").removeprefix("visualsim")
            if target in modules and target != name:
                yield target
                break  # the module itself, or the first name that is a module


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: set(_imports(name, path, modules)) for name, path in modules.items()}


def _layer(name: str) -> int | None:
    top = name.split(".")[0]
    for i, group in enumerate(LAYERS):
        if top in group:
            return i
    return None


def test_every_module_has_a_layer() -> None:
    unplaced = sorted(n for n in _graph() if n and _layer(n) is None)
    assert not unplaced, f"put these modules in a layer of LAYERS: {unplaced}"


def test_no_import_runs_up_the_layers() -> None:
    up = []
    for name, targets in _graph().items():
        if not name:  # the package root re-exports everything, lazily
            continue
        own = _layer(name)
        assert own is not None
        for target in targets:
            there = _layer(target) if target else len(LAYERS)
            if there is not None and there > own:
                up.append(f"{name} (layer {own}) imports {target or 'visualsim'} (layer {there})")
    assert not up, "imports up the layers:\n" + "\n".join(sorted(up))


def test_no_import_circle() -> None:
    graph = _graph()
    done: set[str] = set()
    path: list[str] = []
    on_path: set[str] = set()

    def visit(node: str) -> list[str] | None:
        path.append(node)
        on_path.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt in on_path:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in done:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        on_path.discard(node)
        done.add(node)
        return None

    for start in sorted(graph):
        if start not in done:
            circle = visit(start)
            assert circle is None, "import circle: " + " -> ".join(m or "visualsim" for m in circle)


def test_the_checks_catch_a_circle_and_an_upward_import(tmp_path: Path) -> None:
    # the graph reader sees relative, absolute and in-function imports
    pkg = tmp_path / "visualsim"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "store.py").write_text("def f():\n    from .recommender import R\n")
    (pkg / "recommender.py").write_text("from visualsim import store\nR = 1\n")
    modules = {"store": pkg / "store.py", "recommender": pkg / "recommender.py", "": pkg}
    assert set(_imports("store", pkg / "store.py", modules)) == {"recommender"}
    assert set(_imports("recommender", pkg / "recommender.py", modules)) == {"store"}
    assert _layer("store") is not None and _layer("recommender") is not None
    assert _layer("store") < _layer("recommender")  # type: ignore[operator]


def test_the_version_is_written_once_and_pyproject_agrees() -> None:
    import re

    from visualsim._version import __version__

    text = (PACKAGE.parents[1] / "pyproject.toml").read_text(encoding="utf-8")
    project = text.split("[project]", 1)[1].split("\n[", 1)[0]
    found = re.search(r'^version = "([^"]+)"$', project, re.MULTILINE)
    assert found is not None and found.group(1) == __version__ == visualsim.__version__
