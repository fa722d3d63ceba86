# Two commands do all the set-up on a fresh clone (see README):
#   make demo   - installs, then runs the pipeline on the embedded defaults and a generated sample
#   make ui     - the Dagster UI on http://127.0.0.1:3000 (`make ui PORT=3001` for another port)
#   make test   - installs, starts MariaDB/Redis/Chromium on loopback, runs the tests, stops them
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: ui install demo test test-fast lint format bench services-start services-stop clean

install: $(STAMP)

# Torch first, pinned: that pin is a local CPU wheel; anything looser pulls a multi-GB CUDA build.
# The C sources too: the optional native companyfacts scanner is rebuilt in place when they change.
$(STAMP): pyproject.toml narrative_pipeline/readers/_companyfacts_scan.c narrative_pipeline/readers/_companyfacts_json.h
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test,deploy]'
	touch $(STAMP)

demo: install
	$(BIN)/narrative-pipeline demo

test: install
	scripts/test.sh $(PYTEST_ARGS)

test-fast: install
	$(BIN)/python -m pytest -q -m 'not slow' $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff format --check narrative_pipeline narrative_pipeline_tests benchmarks
	$(BIN)/ruff check narrative_pipeline narrative_pipeline_tests benchmarks
	scripts/mypy_baseline.sh

format: install
	$(BIN)/ruff format narrative_pipeline narrative_pipeline_tests benchmarks
	$(BIN)/ruff check --fix narrative_pipeline narrative_pipeline_tests benchmarks

bench: install
	scripts/bench.sh

services-start:
	scripts/services.sh install && scripts/services.sh start

services-stop:
	scripts/services.sh stop

clean:
	rm -rf $(VENV) .services data .pytest_cache .mypy_cache

# The Dagster UI with a persistent home that uses this repository's dagster.yaml, on loopback.
# `make ui PORT=3001` when 3000 is taken.
PORT ?= 3000
ui: install
	mkdir -p data/dagster_home && cp dagster.yaml data/dagster_home/dagster.yaml
	DAGSTER_HOME=$(CURDIR)/data/dagster_home $(BIN)/dagster dev --host 127.0.0.1 --port $(PORT)
