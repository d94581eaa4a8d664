"""`mlflow run` failures: what the user sees. (The entry points as the README shows them run in
tests/test_readme.py.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, write_profile


def mlflow_run(tmp_path: Path, entry_point: str, *params: str) -> subprocess.CompletedProcess:
    # in-process MLflow calls leave MLFLOW_* variables behind: give `mlflow run` a clean slate
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")},
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlruns.db'}",
    }
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "run",
        str(ROOT),
        "-e",
        entry_point,
        "--env-manager",
        "local",
        "--experiment-name",
        "sparkles-e2e",
    ]
    for param in params:
        command += ["-P", param]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.e2e
def test_a_bad_profile_fails_the_run_with_a_clear_message(tmp_path: Path) -> None:
    profile = write_profile(tmp_path, featurizer={"pooling": "mean"})
    done = mlflow_run(tmp_path, "featurize", f"profile={profile}")
    assert done.returncode != 0
    assert "key 'featurizer.pooling'" in done.stderr
