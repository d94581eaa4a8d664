"""The MLproject entry points, end to end through `mlflow run`, as a user runs them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from tests.conftest import ROOT, write_profile


def mlflow_run(tmp_path: Path, entry_point: str, *params: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlruns.db'}",
    }
    command = [
        sys.executable, "-m", "mlflow", "run", str(ROOT), "-e", entry_point,
        "--env-manager", "local", "--experiment-name", "sparkles-e2e",
    ]  # fmt: skip
    for param in params:
        command += ["-P", param]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_featurize_entry_point_through_mlflow_run(tmp_path: Path) -> None:
    profile = write_profile(tmp_path)
    done = mlflow_run(
        tmp_path, "featurize", f"profile={profile}", "overrides=featurizer.batch_size=8"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert '"featurized":' in done.stdout
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlruns.db'}")
    runs = mlflow.search_runs(experiment_names=["sparkles-e2e"], output_format="list")
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.params["batch_size"] == "8"
    assert run.data.tags["mlflow.project.entryPoint"] == "featurize"
    counts = run.data.metrics
    assert counts["count_rows_in"] == counts["count_featurized"] + counts["count_quarantined"] > 0
    artifacts = {f.path for f in mlflow.MlflowClient().list_artifacts(run.info.run_id, "featurize")}
    assert artifacts == {"featurize/quarantine.csv", "featurize/featurize_counts.json"}


@pytest.mark.slow
def test_a_bad_profile_fails_the_run_with_a_clear_message(tmp_path: Path) -> None:
    profile = write_profile(tmp_path, featurizer={"pooling": "mean"})
    done = mlflow_run(tmp_path, "featurize", f"profile={profile}")
    assert done.returncode != 0
    assert "key 'featurizer.pooling'" in done.stderr
