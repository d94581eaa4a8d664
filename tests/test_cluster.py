"""A real Spark standalone cluster on loopback (master + worker from the pyspark package):
featurizing through it gives the same features as local mode."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyspark
import pytest

from tests.conftest import free_port, write_profile


@pytest.fixture
def cluster(tmp_path: Path):
    """spark://127.0.0.1:<port> with one 2-core worker; stopped (by PID) afterwards."""
    home = Path(pyspark.__file__).parent
    env = {
        **os.environ,
        "SPARK_HOME": str(home),
        "SPARK_LOCAL_IP": "127.0.0.1",
        "SPARK_LOG_DIR": str(tmp_path / "logs"),
        "SPARK_WORKER_DIR": str(tmp_path / "work"),
    }
    port = free_port()
    url = f"spark://127.0.0.1:{port}"
    spark_class = [str(home / "bin" / "spark-class")]
    master = subprocess.Popen(
        [*spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
         "--port", str(port), "--webui-port", str(free_port())],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    worker = subprocess.Popen(
        [*spark_class, "org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1",
         "--cores", "2", "--memory", "4g", "--webui-port", str(free_port()), url],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.5)
        time.sleep(3)  # the worker registers within a few seconds
        yield url
    finally:
        for process in (worker, master):
            process.terminate()
            process.wait(timeout=30)


def _featurize(profile: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    return subprocess.run(
        [sys.executable, "-m", "sparkles.cli", "featurize", "--profile", str(profile)],
        capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip


def _features(cache: Path) -> dict[str, np.ndarray]:
    (table,) = cache.glob("*/table")
    frame = pd.read_parquet(table)
    frame = frame[frame.featurize_error.isna()]
    pairs = zip(frame.path, frame.features, strict=True)
    return {Path(p).name: np.asarray(f["values"]) for p, f in pairs}


@pytest.mark.slow
def test_standalone_cluster_gives_local_mode_features(cluster, tmp_path: Path) -> None:
    sample = {"sample": {"images": 24, "seed": 4, "size": [128, 96]}}
    runs = {}
    for name, master in (("local", "local[2]"), ("cluster", cluster)):
        folder = tmp_path / name
        folder.mkdir()
        spark = {
            "master": master,
            "conf": {
                "spark.task.cpus": 2,
                "spark.executor.cores": 2,
                "spark.executor.memory": "2g",
                "spark.cores.max": 2,
            },
        }
        profile = write_profile(folder, spark=spark, data={**sample})
        # both read the same images: point the cluster run at the local run's sample
        if name == "cluster":
            profile = write_profile(folder, spark=spark, data={
                "labels_csv": str(tmp_path / "local" / "data" / "labels.csv"),
                "classes_csv": str(tmp_path / "local" / "data" / "classes.csv"),
                "images": str(tmp_path / "local" / "data" / "images"),
            })  # fmt: skip
        done = _featurize(profile)
        assert done.returncode == 0, done.stderr[-3000:]
        runs[name] = _features(folder / "cache")
    assert any((tmp_path / "work").glob("app-*")), "no executor ran on the standalone worker"
    assert runs["local"].keys() == runs["cluster"].keys() and len(runs["local"]) > 10
    for image, local in runs["local"].items():
        np.testing.assert_allclose(runs["cluster"][image], local, atol=1e-5)
