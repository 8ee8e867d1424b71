"""Every code block in README.md and docs/*.md runs, offline, and prints what it shows.

The rules (write docs to them; they are small on purpose):

* Each page runs on its own, top to bottom, in a fresh temporary working folder that
  holds the same small fixture: ``shop/`` (60 generated products drawn by
  ``SyntheticProducts(60, seed=0, size=64).write_folder("shop", label="category")``,
  so ``shop/shoes/synthetic-000002.jpg`` exists, with ``shop/metadata.csv``),
  ``new-arrival.jpg`` (a copy of ``shop/shoes/synthetic-000002.jpg``) and ``products.csv``,
  a product feed of the 60 (``sku,image,category,color,price,in_stock``: ``SKU-000``...,
  ``shop/<path>``, price ``9.5 + i % 7 * 5``, in stock unless ``i % 4 == 0``).
* Every ```` ```python ```` block of a page runs in ONE namespace, in page order, so a
  later block can use names an earlier one defined. A block made of ``>>>`` lines runs
  as a doctest in that namespace, its shown output checked.
* A ```` ```text ```` block that follows a python block with nothing but blank lines
  between is that block's expected stdout.
* A ```` ```console ```` block runs its ``$ visualsim ...`` lines in-process through
  :func:`visualsim.cli.main` (stdout and stderr captured together); the lines after a
  ``$`` line, up to the next one, are its expected output. ``$ echo $?`` prints the
  previous command's exit code. Other ``$`` lines (``pip``, ``python ...``) are not run,
  and a console block without ``$`` lines is a synopsis, not run. A command that exits
  non-zero must show its output (or ``echo $?``), else the page fails.
* Expected output is compared after stripping trailing blanks, with doctest's ELLIPSIS:
  ``...`` stands for any text (use it for timestamps, temporary paths, long tails).
* A block preceded (on the line before its fence) by ``<!-- not-run: reason -->`` is not
  run; the reason is required. Use it only for what cannot run offline here (a
  download, a cluster, a GPU), never to hide a broken example.

Models: docs use ``ColorHistogramExtractor`` or ``SqueezeNetExtractor`` (weights shipped
offline) on tiny images; a page that builds a model builds it once in its namespace.
"""

from __future__ import annotations

import contextlib
import csv
import doctest
import io
import os
import re
import shlex
import shutil
import sys
import traceback
import types
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<ticks>`{3,}|~{3,})(?P<lang>[\w+-]*)[^`]*$")
NOT_RUN = re.compile(r"^\s*<!--\s*not-run(?::\s*(?P<reason>.*?))?\s*-->\s*$")
CHECK = doctest.ELLIPSIS


@dataclass
class Block:
    """One fenced block of a page."""

    lang: str
    line: int  # 1-based line of the opening fence
    text: str
    skip: str | None = None  # the not-run reason, if marked
    marked_without_reason: bool = False
    output: Block | None = None  # the ```text block shown as this block's output
    follows_blank_only: bool = field(default=False, repr=False)


def parse_blocks(text: str) -> list[Block]:
    """Return the fenced blocks of a markdown page, with their markers and outputs."""
    lines = text.splitlines()
    blocks: list[Block] = []
    i = 0
    last_block_end = -2  # index of the closing fence of the previous block
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, ticks, lang = m["indent"], m["ticks"], m["lang"].lower()
        start = i
        body: list[str] = []
        i += 1
        while i < len(lines) and not (
            lines[i].strip().startswith(ticks) and lines[i].strip().strip(ticks[0]) == ""
        ):
            line = lines[i]
            body.append(line[len(indent) :] if line.startswith(indent) else line.lstrip())
            i += 1
        block = Block(lang, start + 1, "\n".join(body) + "\n")
        prev = start - 1
        while prev >= 0 and not lines[prev].strip():
            prev -= 1
        marker = NOT_RUN.match(lines[prev]) if prev >= 0 else None
        if marker:
            reason = (marker["reason"] or "").strip()
            block.skip = reason or "(no reason)"
            block.marked_without_reason = not reason
        block.follows_blank_only = last_block_end >= 0 and _blank_between(
            lines, last_block_end, start
        )
        if lang == "text" and block.follows_blank_only and blocks and blocks[-1].lang == "python":
            blocks[-1].output = block
        blocks.append(block)
        last_block_end = i
        i += 1
    return blocks


def _blank_between(lines: list[str], a: int, b: int) -> bool:
    return all(not lines[j].strip() for j in range(a + 1, b))


def _normalise(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.strip("\n").splitlines()) + "\n"


def _matches(want: str, got: str) -> bool:
    return doctest.OutputChecker().check_output(_normalise(want), _normalise(got), CHECK)


@pytest.fixture(scope="session")
def fixture_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from visualsim.datasets.synthetic import SyntheticProducts

    root = tmp_path_factory.mktemp("docs-fixture")
    SyntheticProducts(60, seed=0, size=64).write_folder(root / "shop", label="category")
    shutil.copyfile(root / "shop" / "shoes" / "synthetic-000002.jpg", root / "new-arrival.jpg")
    with open(root / "shop" / "metadata.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    with open(root / "products.csv", "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["sku", "image", "category", "color", "price", "in_stock"])
        for i, row in enumerate(rows):
            out.writerow(
                [f"SKU-{i:03d}", "shop/" + row["path"], row["category"], row["color"],
                 f"{9.5 + i % 7 * 5:.2f}", "true" if i % 4 else "false"]
            )  # fmt: skip
    return root


class PageRunner:
    """Runs one page's blocks in order, in one namespace and one working folder."""

    def __init__(self, page: Path) -> None:
        self.page = page
        # a real module, so that dataclasses, pickling and typing find the page's classes
        self.module = types.ModuleType("docs_page_" + re.sub(r"\W", "_", page.stem))
        self.namespace: dict[str, object] = self.module.__dict__
        self.exit_code = 0
        self.ran = 0

    def where(self, block: Block, extra: int = 0) -> str:
        return f"{self.page.relative_to(ROOT)}:{block.line + extra}"

    def run_python(self, block: Block) -> None:
        if block.text.lstrip().startswith(">>>"):
            self._run_doctest(block)
            return
        out = io.StringIO()
        try:
            code = compile(block.text, self.where(block), "exec")
            with contextlib.redirect_stdout(out):
                exec(code, self.namespace)
        except Exception:
            pytest.fail(
                f"{self.where(block)}: the python block raised\n{traceback.format_exc()}"
                f"\nits output so far:\n{out.getvalue()}",
                pytrace=False,
            )
        if block.output is not None and not _matches(block.output.text, out.getvalue()):
            pytest.fail(
                f"{self.where(block.output)}: shown output differs.\n--- shown\n"
                f"{block.output.text}--- printed\n{out.getvalue()}",
                pytrace=False,
            )
        self.ran += 1

    def _run_doctest(self, block: Block) -> None:
        parser = doctest.DocTestParser()
        test = parser.get_doctest(block.text, self.namespace, self.where(block), None, 0)
        report = io.StringIO()
        runner = doctest.DocTestRunner(optionflags=CHECK)
        runner.run(test, out=report.write, clear_globs=False)
        self.namespace.update(test.globs)
        if runner.failures:
            pytest.fail(f"{self.where(block)}: doctest failed\n{report.getvalue()}", pytrace=False)
        self.ran += 1

    def run_console(self, block: Block) -> None:
        commands: list[tuple[int, str, list[str]]] = []
        for n, line in enumerate(block.text.splitlines()):
            if line.startswith("$ "):
                commands.append((n, line[2:].strip(), []))
            elif commands:
                commands[-1][2].append(line)
        for n, command, shown in commands:
            want = "\n".join(shown)
            if command == "echo $?":
                got = f"{self.exit_code}\n"
            elif command.startswith("visualsim ") or command == "visualsim":
                got = self._run_cli(shlex.split(command, comments=True)[1:])
                if self.exit_code != 0 and not want.strip():
                    nxt = [c for c in commands if c[0] > n]
                    if not (nxt and nxt[0][1] == "echo $?"):
                        pytest.fail(
                            f"{self.where(block, n + 1)}: `{command}` exited "
                            f"{self.exit_code}:\n{got}",
                            pytrace=False,
                        )
            else:
                continue  # pip, python, make, ...: shown, not run here
            if want.strip() and not _matches(want, got):
                pytest.fail(
                    f"{self.where(block, n + 1)}: `{command}` printed other output.\n"
                    f"--- shown\n{want}\n--- printed\n{got}",
                    pytrace=False,
                )
            self.ran += 1

    def _run_cli(self, argv: list[str]) -> str:
        from visualsim.cli import main

        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            try:
                self.exit_code = main(argv)
            except SystemExit as exc:  # argparse: --help, usage errors
                self.exit_code = exc.code if isinstance(exc.code, int) else 1
        return out.getvalue()


def _page_id(page: Path) -> str:
    return str(page.relative_to(ROOT))


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_page_blocks_run(
    page: Path, fixture_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocks = parse_blocks(page.read_text(encoding="utf-8"))
    unexplained = [b.line for b in blocks if b.marked_without_reason]
    assert not unexplained, f"{_page_id(page)}: not-run markers without a reason at {unexplained}"
    work = tmp_path / "work"
    shutil.copytree(fixture_template, work)
    monkeypatch.chdir(work)
    monkeypatch.setenv("COLUMNS", "100")
    runner = PageRunner(page)
    monkeypatch.setitem(sys.modules, runner.module.__name__, runner.module)
    with _registries_restored():
        for block in blocks:
            if block.skip is not None:
                continue
            if block.lang in ("python", "py", "pycon"):
                runner.run_python(block)
            elif block.lang == "console":
                runner.run_console(block)


@contextlib.contextmanager
def _registries_restored() -> Iterator[None]:
    """A page may register its own extractor or index; later tests never see it."""
    from visualsim.extractors.base import EXTRACTORS
    from visualsim.indexes.base import INDEXES

    saved = [(r, dict(r._classes), dict(r._lazy)) for r in (EXTRACTORS, INDEXES)]
    try:
        yield
    finally:
        for registry, classes, lazy in saved:
            registry._classes.clear()
            registry._classes.update(classes)
            registry._lazy.clear()
            registry._lazy.update(lazy)


def test_parser_reads_markers_outputs_and_indented_fences() -> None:
    page = "\n".join(
        [
            "Intro.",
            "```python",
            "print(1 + 1)",
            "```",
            "",
            "```text",
            "2",
            "```",
            "",
            "<!-- not-run: needs a Kaggle download -->",
            "```python",
            "download()",
            "```",
            "1. a list item",
            "",
            "    ```console",
            "    $ visualsim --version",
            "    visualsim ...",
            "    ```",
            "<!-- not-run -->",
            "```python",
            "x",
            "```",
        ]
    )
    blocks = parse_blocks(page)
    assert [b.lang for b in blocks] == ["python", "text", "python", "console", "python"]
    first, _, skipped, console, bare = blocks
    assert first.output is not None and first.output.text == "2\n"
    assert skipped.skip == "needs a Kaggle download" and skipped.output is None
    assert console.skip is None and console.text.startswith("$ visualsim --version\n")
    assert bare.marked_without_reason


def test_output_check_uses_ellipsis_and_ignores_trailing_blanks() -> None:
    assert _matches("a ...\nz", "a b c  \nz\n")
    assert not _matches("a\nb", "a\nc")


def test_no_page_is_left_out() -> None:
    assert (ROOT / "README.md") in PAGES and len(PAGES) >= 10
    for page in PAGES:
        assert os.path.getsize(page) > 0
