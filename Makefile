# The two commands: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
export TF_CPP_MIN_LOG_LEVEL ?= 2
export KERAS_BACKEND ?= tensorflow

.PHONY: demo test test-fast test-browser lint typecheck pytest docs bench dist clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[squeezenet,plot]"
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[dev,squeezenet,plot,kaggle]"
	touch $(VENV)/.installed $@

demo: $(VENV)/.installed
	$(BIN)/visualsim demo --out demo-out

test: $(VENV)/.installed-dev lint typecheck pytest

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples

typecheck: $(VENV)/.installed-dev
	$(BIN)/mypy src

pytest: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -q -p no:cacheprovider --doctest-modules src/visualsim \
		--disable-socket --allow-unix-socket --allow-hosts=127.0.0.1,::1,localhost
	$(BIN)/python -m pytest -q -m "not browser"

# the fast loop while coding: the unit, contract and hostile layers without the slow
# builds (tests/integration/ holds servers, Ray, Milvus, benchmarks, docs and the wheel)
test-fast: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/unit tests/contract tests/hostile \
		-m "not browser and not slow"

# the page in a real headless Chromium (Debian's `chromium`; .ci/run installs it)
test-browser: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -q -m browser

# installs the docs extra only when it is missing, so a machine that has it builds offline
docs: | $(BIN)/python
	$(BIN)/python -c "import mkdocs, material, mkdocstrings_handlers.python" 2>/dev/null \
		|| $(BIN)/python -m pip install --quiet -e ".[docs]"
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

# an sdist and a wheel in dist/: `python -m build` builds the sdist, then the wheel from
# it, offline, with the build backend (setuptools>=77) the dev extra installs in .venv.
# tests/integration/test_dist.py does the same, installs the wheel in a fresh venv and runs it.
dist: $(VENV)/.installed-dev
	rm -rf dist
	$(BIN)/python -m build --no-isolation --outdir dist .

bench: $(VENV)/.installed-dev
	$(BIN)/python benchmarks/bench_indexes.py --quick

clean:
	rm -rf $(VENV) build dist site demo-out .pytest_cache .mypy_cache .ruff_cache .hypothesis
