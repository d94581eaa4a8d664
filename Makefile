# Thin wrappers. `make quickstart` on a fresh machine: venv, install, run the main job offline.
VENV ?= .venv
PYTHON ?= python3
BIN := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)
export MLFLOW_TRACKING_URI ?= sqlite:///mlruns.db
PROFILE ?= local
PYTEST_ARGS ?=

# pyspark 3.5 (EMR 7.x) in a second venv: the featurizer (predict_batch_udf, Params, save/load)
# and train (pyspark.ml) tests that use Spark (their unit tier does not touch pyspark: it ran
# in the first venv). featurize and tune add only plain DataFrame code; they passed on 3.5.9
# until CI time ran short (`make test-spark35 SPARK35_TESTS="tests/features/test_featurize.py
# tests/train/test_tune.py"` runs them). The file index's tests run here too: its listing is
# binaryFile's length and modificationTime (Hadoop's FileStatus), on both pyspark lines.
VENV35 ?= .venv-spark35
SPARK35_TESTS ?= tests/cnn/test_featurizer.py tests/train/test_fit.py tests/train/test_splits.py \
	tests/features/test_file_index.py tests/test_observe.py

.PHONY: install quickstart test test-fast test-spark35 lint format clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[spark,test]'
	touch $@

install: $(VENV)/.installed

quickstart: install
	sparkles init --profile $(PROFILE)
	mlflow run . --env-manager local --experiment-name sparkles -P profile=$(PROFILE)
	@sparkles init --profile $(PROFILE) | tail -n 1

lint: install
	ruff check .
	ruff format --check .

# Two lanes, one per core: the README workflow (a chain of short-lived `mlflow run` processes,
# mostly one core each), docs/development.md's loops, the standalone-cluster test, the EMR
# backend's (moto on loopback), the second-session weights test and the concurrent-featurize tests
# (subprocesses), and the subprocess tests that need no Spark of this process (the lanes end
# together: lane 1 ran ~115 s alone) run beside the rest of the suite; their log is printed
# when both end. The unit tier runs once, in lane 2: docs/development.md's `make test-fast`,
# run as written by the contributing-loops test (a failure there fails that test), so lane 1
# leaves it out. Exit status 5 ("no tests collected", e.g. under -k) is not a lane's failure.
WORKFLOW := tests/test_readme.py::test_the_readme_workflow_runs_as_written \
  tests/test_readme.py::test_the_contributing_loops_run_as_written tests/test_cluster.py \
  tests/emr/test_backend.py \
  tests/features/test_accounting.py::test_weights_reach_a_second_session_and_a_non_local_default_fs \
  tests/features/test_concurrency.py \
  tests/test_readme.py::test_download_entry_point_as_written tests/emr/test_scripts.py \
  tests/test_entry_points.py tests/train/test_fit.py::test_bad_parameters_are_rejected_before_spark_starts \
  tests/train/test_fit.py::test_unknown_profile_is_rejected
test: lint
	@mkdir -p test-artifacts
	@started=$$(date +%s); \
	( python -m pytest -p no:cacheprovider $(PYTEST_ARGS) $(WORKFLOW); code=$$?; \
	  echo "lane 2 took $$(( $$(date +%s) - started )) s"; exit $$code ) \
	  > test-artifacts/readme-workflow.log 2>&1 & workflow=$$!; \
	python -m pytest -m "not unit or conversion" $(PYTEST_ARGS) $(addprefix --deselect ,$(WORKFLOW)); rest=$$?; \
	lane1=$$(( $$(date +%s) - started )); \
	wait $$workflow; lane=$$?; \
	echo "=== lane 2: $(WORKFLOW) (exit $$lane) ==="; cat test-artifacts/readme-workflow.log; \
	echo "lane 1 (the suite) took $$lane1 s; both lanes $$(( $$(date +%s) - started )) s"; \
	for code in $$rest $$lane; do [ $$code -eq 0 ] || [ $$code -eq 5 ] || exit 1; done

# The quick loop (docs/development.md): the unit tier, no Spark and no subprocess, ~1 minute;
# the per-family OpenVINO conversions (minutes) are left to `make test`'s first lane.
test-fast: install
	python -m pytest -p no:cacheprovider -m "unit and not conversion" -q $(PYTEST_ARGS)

$(VENV35)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV35)
	$(VENV35)/bin/python -m pip install --quiet --upgrade pip
	$(VENV35)/bin/python -m pip install --quiet -e '.[test]' 'pyspark>=3.5,<3.6'
	touch $@

test-spark35: $(VENV35)/.installed
	PATH=$(abspath $(VENV35))/bin:$$PATH $(VENV35)/bin/python -m pytest -p no:cacheprovider -m "not unit" $(PYTEST_ARGS) $(SPARK35_TESTS)

format: install
	ruff check --fix .
	ruff format .

clean:
	rm -rf mlruns mlruns.db mlartifacts .cache data spark-warehouse
