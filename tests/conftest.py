"""Shared fixtures: one real local SparkSession, real MLflow on SQLite, a small sample."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Tests use their own stores: the Makefile's (or a user's) tracking settings must not leak in.
for variable in (
    "MLFLOW_TRACKING_URI",
    "MLFLOW_EXPERIMENT_NAME",
    "MLFLOW_EXPERIMENT_ID",
    "MLFLOW_RUN_ID",
):
    os.environ.pop(variable, None)
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
# what Keras says of its models is asked of Keras in every test session, not read from a
# description a user's runs left (sparkles.cnn.backbones.descriptions_file)
os.environ["SPARKLES_CACHE_DIR"] = tempfile.mkdtemp(prefix="sparkles-test-cache-")
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")

ROOT = Path(__file__).resolve().parent.parent


@contextmanager
def mlflow_server(store: str, *options: str, port: int | None = None) -> Iterator[str]:
    """`mlflow server` on a free loopback port (or ``port``) over ``store``, healthy; yields
    its URL."""
    port = port or free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            store,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            *options,
        ],
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                if urllib.request.urlopen(f"{url}/health", timeout=1).read() == b"OK":
                    break
            except OSError:
                time.sleep(0.5)
        else:
            raise AssertionError("mlflow server did not become healthy in 2 minutes")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


@contextmanager
def warned_once(caplog: pytest.LogCaptureFixture, text: str) -> Iterator[None]:
    """The block logs exactly one WARNING containing ``text`` (not a repeat, not a print)."""
    caplog.clear()
    with caplog.at_level("WARNING"):
        yield
    found = [r for r in caplog.records if r.levelname == "WARNING" and text in r.getMessage()]
    assert len(found) == 1, f"{len(found)} warnings with {text!r}: {caplog.text}"


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# Found instead of a package by a process under test: records who asked, then fails as a missing
# package does. MLflow itself probes for some (pyspark: its optional Spark dataset support) and
# carries on without them; what a test asserts is that this project's code never asks.
IMPORT_TRAP = """
import os, traceback
with open(os.environ["SPARKLES_TRAP_MARK"], "a") as mark:
    mark.write("".join(traceback.format_stack()) + "\\n---\\n")
raise ImportError(f"{__name__} is not available to this process")
"""


def import_trap(folder: Path, packages: list[str]) -> dict[str, str]:
    """Environment for a subprocess in which importing ``packages`` fails and is recorded."""
    for package in packages:
        (folder / "trap" / package).mkdir(parents=True)
        (folder / "trap" / package / "__init__.py").write_text(IMPORT_TRAP)
    return {"PYTHONPATH": str(folder / "trap"), "SPARKLES_TRAP_MARK": str(folder / "imported")}


# A frame in this package's code: src/sparkles/… or a logged model's code/sparkles/…; not any
# path that merely passes a folder named sparkles (a clone named so holds .venv/…, tests/…)
OUR_FRAME = re.compile(r'File "[^"]*/sparkles/(?:[A-Za-z_]\w*/)*[A-Za-z_]\w*\.py"')


def imports_by_this_project(folder: Path) -> list[str]:
    """The recorded import stacks (of ``import_trap(folder, ...)``) that run through our code."""
    mark = folder / "imported"
    attempts = mark.read_text().split("\n---\n") if mark.exists() else []
    return [stack for stack in attempts if OUR_FRAME.search(stack)]


def write_profile(folder: Path, **sections: dict) -> Path:
    """A profile like conf/local.yaml but small and fast, everything under ``folder``."""
    data_dir = folder / "data"
    profile = {
        "name": "test",
        "spark": {
            "master": "local[2]",
            "conf": {
                "spark.task.cpus": 2,
                "spark.sql.shuffle.partitions": 4,
                "spark.sql.sources.parallelPartitionDiscovery.threshold": 1_000_000,  # local.yaml
                "spark.sql.execution.arrow.maxRecordsPerBatch": 32,
                "spark.ui.enabled": False,
                # tests sum every stage's input bytes (progress.input_bytes): keep them all
                "spark.ui.retainedStages": 100000,
                "spark.sql.ui.retainedExecutions": 100000,  # and which queries scanned images
            },
        },
        "mlflow": {
            "tracking_uri": f"sqlite:///{folder / 'mlruns.db'}",
            "artifact_location": str(folder / "mlartifacts"),
            "experiment": "sparkles-test",
        },
        "data": {
            "labels_csv": str(data_dir / "labels.csv"),
            "classes_csv": str(data_dir / "classes.csv"),
            "images": str(data_dir / "images"),
            "sample": {"images": 40, "seed": 3, "size": [128, 96]},
        },
        # MobileNetV2: 1/20 of InceptionV3's FLOPs, and its random-weight features separate the
        # sample's classes as well (tests/cnn/test_featurizer.py checks InceptionV3 itself)
        "featurizer": {"model": "MobileNetV2", "weights": "random", "batch_size": 16},
        "store": {"dir": str(folder / "cache")},
        "train": {"max_iter": 30},  # plenty for tens of images; each LR iteration is a Spark job
        "registry": {"allow_random_weights": True},  # the tests' weights are random
        # off for the suite's one long session (an event log of its tens of thousands of jobs
        # and memory sampling cost the 2 cores minutes) and its runs; on where a test asks
        # (tests/test_observe.py), and in the README workflow and the EMR steps (conf/local.yaml)
        "observe": {"event_log": str(folder / "spark-events"), "enabled": False},
    }
    for key, value in sections.items():
        profile[key] = {**profile.get(key, {}), **value}
    path = folder / "profile.yaml"
    path.write_text(yaml.safe_dump(profile))
    return path


@pytest.fixture(scope="session")
def spark(tmp_path_factory: pytest.TempPathFactory):
    from sparkles.config import load_profile
    from sparkles.session import build_session

    folder = tmp_path_factory.mktemp("spark")
    session = build_session(load_profile(str(write_profile(folder))))
    yield session
    session.stop()


@pytest.fixture
def profile_path(tmp_path: Path) -> Path:
    return write_profile(tmp_path)


@pytest.fixture
def registry_store(registry_runs):
    """``registry_runs``, with MLflow pointed at its store again: other tests move the process's
    tracking URI (each run of a profile configures its own), and a registry test must not depend
    on which ran last."""
    from sparkles import tracking
    from sparkles.config import load_profile

    tracking.configure(load_profile(registry_runs[0]))
    return registry_runs


@pytest.fixture(scope="session")
def registry_runs(spark, tmp_path_factory: pytest.TempPathFactory):
    """One cache and two experiments: a useful model (via `main`) and a useless one (`train`).

    regParam 10 with a pure L1 penalty zeroes every weight: a constant score, AUC exactly 0.5,
    below any model that learned something. That ordering holds whatever the split.
    """
    from sparkles.commands import run_featurize, run_main, run_train
    from sparkles.config import load_profile

    folder = tmp_path_factory.mktemp("registry")
    path = str(write_profile(folder, data={"sample": {"images": 60, "seed": 8, "size": [128, 96]}}))
    # train fits on a table a featurize run of its experiment committed
    run_featurize(load_profile(path, ["mlflow.experiment=reg-useless"]), spark)
    scores = {}
    for name, (reg_param, elastic_net), job in (
        ("useless", (10.0, 1.0), run_train),
        ("strong", (0.01, 0.0), run_main),
    ):
        profile = load_profile(
            path,
            [
                f"mlflow.experiment=reg-{name}",
                f"train.reg_param={reg_param}",
                f"train.elastic_net_param={elastic_net}",
            ],
        )
        scores[name] = job(profile, spark)["metrics"]["auc"]
    return path, scores


TIERS = ("unit", "spark", "e2e")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test gets one tier (CONTRIBUTING in docs/development.md): ``e2e`` where marked
    (subprocesses, clusters, `mlflow run`, a browser), ``spark`` where it uses the session's
    Spark (the ``spark`` fixture, directly or through another fixture), else ``unit``."""
    for item in items:
        if item.get_closest_marker("e2e"):
            continue
        item.add_marker(pytest.mark.spark if "spark" in item.fixturenames else pytest.mark.unit)


@pytest.fixture(autouse=True)
def _unit_tests_start_nothing(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch):
    """A unit test that starts a process or a JVM fails, saying which tier it belongs to."""
    if not request.node.get_closest_marker("unit"):
        yield
        return
    import subprocess

    started = subprocess.Popen.__init__

    def refuse(self, args, *more, **kwargs):
        # every MLflow run asks git for the commit; the first TensorFlow import asks `uname -p`
        # (platform.processor, cached): milliseconds, no process of our own
        if list(args[:1]) in (["git"], ["uname"]):
            return started(self, args, *more, **kwargs)
        raise AssertionError(
            "a unit test started a subprocess or a JVM: mark it e2e (pytest.mark.e2e), or take "
            "the `spark` fixture (tier spark)"
        )

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)
    yield


def pytest_report_header() -> str:
    import pyspark

    return f"pyspark {pyspark.__version__}, Python {sys.version.split()[0]}"


def searching(profile, method: str = "grid", max_evals: int = 1, metric: str = "auc"):
    """The profile with these search settings (what `sparkles tune`'s options set)."""
    tune = profile.tune.model_copy(
        update={"method": method, "max_evals": max_evals, "metric": metric}
    )
    return profile.model_copy(update={"tune": tune})


def registering(profile, model_name: str, min_improvement: float = 0.0, metric: str = "auc"):
    """The profile with these registry settings (what `sparkles promote`'s options set)."""
    registry = profile.registry.model_copy(
        update={"model_name": model_name, "min_improvement": min_improvement, "metric": metric}
    )
    return profile.model_copy(update={"registry": registry})
