"""MLflow run handling under `mlflow run`, which hands this process its run in MLFLOW_RUN_ID."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import mlflow
import pytest

from sparkles import tracking
from sparkles.config import load_profile


@pytest.fixture
def launched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A profile, and a run created the way the `mlflow run` launcher creates one."""
    profile = load_profile(str(_profile(tmp_path)))
    experiment_id = tracking.configure(profile)
    launcher_run = mlflow.MlflowClient().create_run(experiment_id).info.run_id
    monkeypatch.setenv("MLFLOW_RUN_ID", launcher_run)
    yield profile, launcher_run
    while mlflow.active_run():
        mlflow.end_run()


def _profile(folder: Path) -> Path:
    from tests.conftest import write_profile

    return write_profile(folder)


def test_nested_runs_under_the_launchers_run_are_children(launched) -> None:
    profile, launcher_run = launched
    with tracking.run(profile, "tune-grid") as parent:
        assert parent.info.run_id == launcher_run
        assert "MLFLOW_RUN_ID" not in os.environ
        children = []
        for number in range(2):
            with tracking.run(profile, f"trial-{number}", nested=True) as child:
                mlflow.log_params({"regParam": number})
            children.append(child.info.run_id)
        mlflow.log_params({"regParam": 0.5})  # the refit: the parent has no params before it
    client = mlflow.MlflowClient()
    assert launcher_run not in children and len(set(children)) == 2
    for run_id in children:
        run = client.get_run(run_id)
        assert run.data.tags["mlflow.parentRunId"] == launcher_run
        assert run.info.status == "FINISHED"
    assert client.get_run(launcher_run).data.params == {"regParam": "0.5"}


def test_a_run_outside_the_profiles_experiment_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    profile = load_profile(str(_profile(tmp_path)))
    tracking.configure(profile)
    other = mlflow.create_experiment("somewhere-else")
    launcher_run = mlflow.MlflowClient().create_run(other).info.run_id
    os.environ["MLFLOW_RUN_ID"] = launcher_run
    with caplog.at_level(logging.WARNING), tracking.run(profile, "main"):
        pass
    assert "not the profile's 'sparkles-test'" in caplog.text
    assert "somewhere-else" in caplog.text
    run = mlflow.get_run(launcher_run)
    assert run.data.tags["sparkles.profile_experiment"] == "sparkles-test"
