"""The experiments/ notebooks run unchanged as plain Python on the sample."""

from __future__ import annotations

import runpy

import pytest

from sparkles.config import load_profile
from sparkles.registry import promote
from tests.conftest import ROOT

NOTEBOOK_MODEL = "sparkles-notebook-model"


@pytest.fixture
def notebook_env(registry_store, monkeypatch, tmp_path):
    path, _ = registry_store
    overrides = f"mlflow.experiment=reg-strong registry.model_name={NOTEBOOK_MODEL}"
    promote(load_profile(path, overrides.split()), "reg-strong", "auc", NOTEBOOK_MODEL, 0.0)
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
