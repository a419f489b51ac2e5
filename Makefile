# Two commands on a fresh machine: `make demo` and `make test`. Everything else is set up here.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
RECIPE ?= recipes/animals10.yaml
PLUGINS := plugins/automl-efficientnet-lite
STAMP  := $(VENV)/.installed

.PHONY: help setup data demo browser test test-fast test-soak lint bench clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml $(PLUGINS)/pyproject.toml
	$(BIN)/pip install --disable-pip-version-check -q -e '.[dev]' $(foreach p,$(PLUGINS),-e $(p))
	touch $@

setup: $(STAMP) data  ## create .venv, install automl and its plugins

data:  ## link data/ to ../shared/datasets when it exists (the default $AUTOML_DATA)
	@if [ ! -e data ] && [ -d ../shared/datasets ]; then ln -s ../shared/datasets data; echo "data -> ../shared/datasets"; fi

demo: setup  ## set up and run the quick-start search on animals10
	$(BIN)/automl search $(RECIPE)

browser:  ## headless Chromium and its driver for the report test (Debian packages)
	@{ command -v chromium && command -v chromedriver; } >/dev/null || \
	  { apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null; }

test: setup browser  ## set up and run the whole test suite
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -q -m "not soak"

test-fast: setup  ## the suite without the slow tests (those using a search-built run are slow: tests/conftest.py)
	$(BIN)/python -m pytest -q -m "not slow and not soak"

test-soak: setup  ## long reliability runs (RELIABILITY.md names them)
	$(BIN)/python -m pytest -q -m soak --override-ini="addopts=-ra"

lint: setup  ## ruff and mypy (settings in pyproject.toml: strict for automl.runs)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: setup  ## run the benchmarks and update benchmarks/RESULTS.md
	$(BIN)/python -m benchmarks

clean:  ## remove the virtual environment
	rm -rf $(VENV)
