"""A real Spark standalone cluster on loopback: a master and two workers from the pyspark package.

Through spark://127.0.0.1:…, `featurize` loses a worker (killed by PID while it featurizes) and
still commits every row once, with local mode's features. (Training on a cluster is pyspark.ml's
own code on the stored features; it is not repeated here: the CNN's Python workers on executors
are what a cluster changes for this project.)
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyspark
import pytest

from sparkles.config import load_profile
from sparkles.features.featurize import featurize
from tests.conftest import free_port, write_profile

pytestmark = pytest.mark.e2e
SAMPLE = {"images": 96, "seed": 4, "size": [128, 96]}
# What runs where is the question here, not which CNN: MobileNetV2 is 1/20 of InceptionV3's FLOPs
CNN = {"model": "MobileNetV2"}


@dataclass
class Cluster:
    url: str
    master: subprocess.Popen
    workers: list[subprocess.Popen]
    work_dirs: list[Path]


def _wait_for_port(port: int, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.3)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {seconds} s")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """spark://127.0.0.1:<port> with two 1-core workers; everything stopped by PID afterwards."""
    home = Path(pyspark.__file__).parent
    env = {**os.environ, "SPARK_HOME": str(home), "SPARK_LOCAL_IP": "127.0.0.1"}
    spark_class, deploy = str(home / "bin" / "spark-class"), "org.apache.spark.deploy"
    port = free_port()
    url = f"spark://127.0.0.1:{port}"
    quiet = {"env": env, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    master = subprocess.Popen(
        [
            spark_class,
            f"{deploy}.master.Master",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--webui-port",
            str(free_port()),
        ],
        **quiet,
    )
    processes, work_dirs = [master], []
    try:
        _wait_for_port(port)
        for n in range(2):
            work_dirs.append(tmp_path / f"worker-{n}")
            worker_port = free_port()
            processes.append(
                subprocess.Popen(
                    [
                        spark_class,
                        f"{deploy}.worker.Worker",
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(worker_port),
                        "--cores",
                        "1",
                        "--memory",
                        "3g",
                        "--work-dir",
                        str(work_dirs[-1]),
                        "--webui-port",
                        str(free_port()),
                        url,
                    ],
                    **quiet,
                )
            )
            _wait_for_port(worker_port)
        time.sleep(2)  # registration with the master follows the port opening
        yield Cluster(url, master, processes[1:], work_dirs)
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


def _cli(command: str, profile: Path) -> list[str]:
    return [sys.executable, "-m", "sparkles.cli", command, "--profile", str(profile)]


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}


def _committed(folder: Path) -> pd.DataFrame:
    """Every committed table under ``folder``: each meta.json names its table."""
    metas = sorted(folder.glob("*/meta.json"))
    assert metas, f"nothing committed under {folder}"
    return pd.concat(pd.read_parquet(m.parent / json.loads(m.read_text())["table"]) for m in metas)


def _features(cache: Path) -> dict[str, np.ndarray]:
    """File name → features, from the feature store's files (pandas: no Spark involved)."""
    (store,) = [p for p in cache.iterdir() if (p / "settings.json").is_file()]  # not file-index/
    frame = _committed(store / "tables").merge(_committed(store / "segments"), on="image_sha256")
    frame = frame[frame.featurize_error.isna()]
    pairs = zip(frame.path, frame.features, strict=True)
    return {Path(p).name: np.asarray(f["values"]) for p, f in pairs}


@pytest.fixture(scope="module")
def reference(spark, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Local mode, in this test session: the features a cluster must reproduce."""
    folder = tmp_path_factory.mktemp("local")
    profile = load_profile(str(write_profile(folder, data={"sample": SAMPLE}, featurizer=CNN)))
    featurized = featurize(profile, spark)
    return {
        "data": {
            "labels_csv": profile.data.labels_csv,
            "classes_csv": profile.data.classes_csv,
            "images": profile.data.images,
        },
        "features": _features(folder / "cache"),
        "counts": featurized.counts,
    }


def _cluster_profile(folder: Path, cluster: Cluster, reference: dict) -> Path:
    """The reference's images (the cluster shares this disk), one TF thread per 1-core task."""
    spark = {
        "master": cluster.url,
        "conf": {
            "spark.sql.shuffle.partitions": 4,
            "spark.sql.execution.arrow.maxRecordsPerBatch": 32,
            "spark.ui.enabled": False,
            "spark.task.cpus": 1,
            "spark.executor.cores": 1,
            "spark.executor.memory": "2g",
        },
    }
    # small tasks, so both workers featurize
    featurizer = {**CNN, "rows_per_partition": 12}
    return write_profile(folder, spark=spark, data=reference["data"], featurizer=featurizer)


def _assert_same_features(folder: Path, reference: dict) -> None:
    features = _features(folder / "cache")
    assert features.keys() == reference["features"].keys() and len(features) > 50
    # relative to the features' scale (random-weight MobileNetV2's are ~1e-11)
    scale = max(np.abs(f).max() for f in reference["features"].values())
    assert scale > 0
    for image, expected in reference["features"].items():
        np.testing.assert_allclose(features[image], expected, rtol=1e-4, atol=1e-5 * scale)


def _built_model(work_dir: Path) -> bool:
    """The featurizer prints one line per Python worker that built its CNN."""
    return any("sparkles: built" in log.read_text() for log in work_dir.glob("app-*/*/stderr"))


def test_a_lost_worker_costs_no_row_and_the_cluster_equals_local_mode(
    cluster: Cluster, reference: dict, tmp_path: Path
) -> None:
    profile = _cluster_profile(tmp_path, cluster, reference)
    job = subprocess.Popen(
        _cli("featurize", profile),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    victim, survivor = cluster.workers
    deadline = time.monotonic() + 300
    while not _built_model(cluster.work_dirs[0]):
        assert job.poll() is None, "featurization ended before the worker could be killed"
        assert time.monotonic() < deadline, "worker 0 never started featurizing"
        time.sleep(0.2)
    os.kill(victim.pid, signal.SIGKILL)  # the worker JVM; its executor follows it down
    stdout, stderr = job.communicate(timeout=600)
    assert victim.wait(timeout=10) == -signal.SIGKILL
    assert survivor.poll() is None
    assert job.returncode == 0, stderr[-3000:]
    assert "Lost executor" in stderr  # the driver saw the loss and ran the tasks again
    assert _built_model(cluster.work_dirs[1]), "both workers should have featurized"
    counts = json.loads(stdout)["counts"]
    assert counts["rows_in"] == counts["featurized"] + counts["quarantined"]
    assert counts["rows_in"] == reference["counts"]["rows_in"]
    # one committed segment, holding every image: the retried tasks added no row
    (meta,) = (tmp_path / "cache").glob("*/segments/*/meta.json")
    assert json.loads(meta.read_text())["rows"] == counts["computed_images"] == counts["rows_in"]
    _assert_same_features(tmp_path, reference)
