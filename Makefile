# Two commands for a fresh machine with Python 3.11+: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test bench lint container-test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Installed markers: reinstall when the packaging or the C engine's source changes
# (installing builds the extension in place; without a compiler it is skipped).
C_SOURCES := setup.py kastore/_ckastore.c kastore/include/kastore.c kastore/include/kastore.h

$(VENV)/.run-installed: pyproject.toml $(C_SOURCES) | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.test-installed: pyproject.toml $(C_SOURCES) | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.run-installed

run: $(VENV)/.run-installed
	$(BIN)/python -m app

# The browser tests drive Debian's Chromium through playwright; no browser is downloaded.
CHROMIUM := /usr/bin/chromium
$(CHROMIUM):
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium

test: $(VENV)/.test-installed $(CHROMIUM)
	$(BIN)/python -m pytest

# The reference kastore, installed aside (not into the venv) as the codec's baseline.
REFERENCE := .bench/reference
$(REFERENCE)/kastore: | $(BIN)/python
	$(BIN)/python -m pip install --quiet --target $(REFERENCE) kastore==0.3.6

bench: $(VENV)/.test-installed $(REFERENCE)/kastore
	$(BIN)/python benchmarks/codec_bench.py --reference $(REFERENCE)
	$(BIN)/python benchmarks/service_bench.py

lint: $(VENV)/.test-installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

container-test:
	bash tests/container/run.sh

clean:
	rm -rf $(VENV) .bench .pytest_cache .mypy_cache .ruff_cache
