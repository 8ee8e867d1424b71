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
	rm -rf $(VENV) .venv-lowest .venv-newest build dist site demo-out .pytest_cache .mypy_cache .ruff_cache .hypothesis

# Dependency bounds (docs/dependencies.md): the tests a dependency release can break (every
# backend saved after search and loaded back, the index contract, FAISS's reader, Milvus Lite,
# Keras and OpenVINO extraction, the HTTP service) in a venv of their own, .venv-$(BOUND),
# built from constraints/$(BOUND).txt: BOUND=lowest (pyproject.toml's lower bounds) or
# BOUND=newest (what pip resolves today, pinned). Building it needs the package registries;
# `make test` never uses these venvs. .ci/run runs both after `make test`.
BOUND ?= newest
BOUND_VENV = .venv-$(BOUND)
BOUND_EXTRAS = serve,openvino,milvus,squeezenet
BOUND_TESTS = \
	tests/contract/test_saved_means_loadable.py tests/unit/test_emptied_catalogue.py \
	tests/unit/test_persistence.py tests/contract/test_index_contract.py \
	tests/contract/test_indexes.py tests/hostile/test_malicious_indexes.py \
	tests/contract/test_milvus.py tests/contract/test_extractor_contract.py \
	tests/unit/test_extractors.py tests/integration/test_openvino.py \
	tests/hostile/test_openvino_cache.py tests/integration/test_serve.py \
	tests/integration/test_serve_access.py tests/unit/test_lean_catalogue.py \
	tests/unit/test_partitions.py tests/unit/test_native_noise.py tests/unit/test_idmap.py \
	tests/unit/test_read_under_writes.py

.PHONY: test-bounds

$(BOUND_VENV)/.installed-bounds: constraints/$(BOUND).txt pyproject.toml
	rm -rf $(BOUND_VENV)
	$(PYTHON) -m venv $(BOUND_VENV)
	echo '*' > $(BOUND_VENV)/.gitignore
	$(BOUND_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(BOUND_VENV)/bin/python -m pip install --quiet -c constraints/$(BOUND).txt \
		-e ".[$(BOUND_EXTRAS)]" pytest hypothesis pytest-socket httpx
	$(BOUND_VENV)/bin/python -m pip check
	touch $@

test-bounds: $(BOUND_VENV)/.installed-bounds
	$(BOUND_VENV)/bin/python -c "from importlib.metadata import version as v; \
		print('$(BOUND):', *(f'{p} {v(p)}' for p in ('faiss-cpu', 'tensorflow', 'keras', \
		'numpy', 'openvino', 'nncf', 'fastapi', 'starlette', 'pymilvus', 'milvus-lite')))"
	$(BOUND_VENV)/bin/python -m pytest -q -p no:cacheprovider $(BOUND_TESTS)
