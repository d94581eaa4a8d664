"""The experiments/ notebooks run unchanged as plain Python on the sample."""

from __future__ import annotations

import runpy
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from sparkles.config import load_profile
from sparkles.deploy.registry import promote
from tests.conftest import ROOT, registering, write_profile

NOTEBOOK_MODEL = "sparkles-notebook-model"


@pytest.fixture
def notebook_env(registry_store, monkeypatch, tmp_path):
    path, _ = registry_store
    overrides = f"mlflow.experiment=reg-strong registry.model_name={NOTEBOOK_MODEL}"
    promote(registering(load_profile(path, overrides.split()), NOTEBOOK_MODEL), "reg-strong")
    monkeypatch.setenv("SPARKLES_PROFILE", path)
    monkeypatch.setenv("SPARKLES_SET", overrides)
    monkeypatch.setenv("SPARKLES_NOTEBOOK_OUTPUT", str(tmp_path))
    return tmp_path


@pytest.mark.parametrize("notebook", ["eda.py", "compare_runs.py", "registry.py"])
def test_notebook_runs_to_completion(spark, notebook_env, notebook: str, capsys) -> None:
    source = ROOT / "experiments" / notebook
    assert source.read_text().startswith("# Databricks notebook source\n")
    assert "# COMMAND ----------" in source.read_text()
    runpy.run_path(str(source), run_name="__main__")
    printed = capsys.readouterr().out
    expected = {
        "eda.py": ["images_with_several_target_classes", "dendrogram order:"],
        "compare_runs.py": ["auc", "regParam"],
        "registry.py": ["champion", "prediction"],
    }[notebook]
    for text in expected:
        assert text in printed, text
    if notebook != "registry.py":
        assert any(notebook_env.rglob("*.png"))


def test_the_end_to_end_notebook_runs_every_step(spark, tmp_path, monkeypatch, capsys) -> None:
    """On a fresh profile: featurize → train → tune (a 2-point grid) → compare → promote →
    predict, as a user runs it."""
    (tmp_path / "project").mkdir()
    path = write_profile(tmp_path / "project")
    overrides = (
        "tune.logistic.grid.reg_param=[0.01] tune.logistic.grid.elastic_net_param=[0.0,1.0] "
        + (f"registry.model_name={NOTEBOOK_MODEL}-end-to-end")
    )
    monkeypatch.setenv("SPARKLES_PROFILE", str(path))
    monkeypatch.setenv("SPARKLES_SET", overrides)
    monkeypatch.setenv("SPARKLES_NOTEBOOK_OUTPUT", str(tmp_path / "out"))
    source = ROOT / "experiments" / "end_to_end.py"
    assert source.read_text().startswith("# Databricks notebook source\n")
    runpy.run_path(str(source), run_name="__main__")
    printed = capsys.readouterr().out
    profile = load_profile(str(path))
    assert "through the CNN" in printed and "2 trials; best" in printed
    assert "first-champion" in printed
    predictions = pd.read_parquet(tmp_path / "out" / "end_to_end" / "predictions" / "predictions")
    images = list(Path(profile.data.images).glob("*.jpg"))
    assert len(predictions) == len(images)  # the sample has no bad image
    assert {"probability_Car", "probability_Tree"} <= set(predictions.columns)
    runs = mlflow.search_runs(experiment_names=[profile.mlflow.experiment], output_format="list")
    names = {run.info.run_name for run in runs}
    assert {"featurize", "train", "tune-grid", "trial-001", "trial-002"} <= names
