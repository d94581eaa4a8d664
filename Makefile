# Thin wrappers. `make quickstart` on a fresh machine: venv, install, run the main job offline.
VENV ?= .venv
PYTHON ?= python3
BIN := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)
export MLFLOW_TRACKING_URI ?= sqlite:///mlruns.db
PROFILE ?= local
PYTEST_ARGS ?=

.PHONY: install quickstart test lint format clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[spark,test]'
	touch $@

install: $(VENV)/.installed

quickstart: install
	sparkles init --profile $(PROFILE)
	mlflow run . --env-manager local --experiment-name sparkles -P profile=$(PROFILE)
	@echo "Compare runs: mlflow ui --backend-store-uri $(MLFLOW_TRACKING_URI)"

lint: install
	ruff check .
	ruff format --check .

test: lint
	python -m pytest $(PYTEST_ARGS)

format: install
	ruff check --fix .
	ruff format .

clean:
	rm -rf mlruns mlruns.db mlartifacts .cache data spark-warehouse
