"""More than two classes: the sample draws a third (Bus), and train, tune and their plots follow."""

from __future__ import annotations

import csv
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from sparkles.cli import main as cli_main
from sparkles.commands import run_main, run_tune
from sparkles.config import load_profile
from sparkles.data.sample import BUS, ensure_sample
from tests.conftest import searching, write_profile

THREE = ["Car", "Tree", "Bus"]


@pytest.fixture(scope="module")
def three_classes(tmp_path_factory: pytest.TempPathFactory) -> str:
    folder = tmp_path_factory.mktemp("three")
    sample = {"images": 72, "seed": 5, "size": [128, 96], "classes": THREE}
    return str(write_profile(folder, data={"sample": sample, "classes": THREE}))


def test_sample_data_draws_a_third_class(tmp_path: Path, capsys) -> None:
    path = write_profile(tmp_path)
    assert cli_main(["sample-data", "--profile", str(path), "--classes", *THREE]) == 0
    profile = load_profile(str(path))
    with open(profile.data.labels_csv) as handle:
        rows = [r for r in csv.DictReader(handle) if r["Confidence"] == "1"]
    buses = {r["ImageID"] for r in rows if r["LabelName"] == BUS}
    images = {p.stem for p in Path(profile.data.images).glob("*.jpg")}
    assert buses and buses <= images
    assert 0.15 < len(buses) / len(images) < 0.45  # drawn as often as cars or trees


def test_asking_for_bus_makes_the_sample_draw_it(tmp_path: Path) -> None:
    """`--set data.classes='[Car, Bus]'` on the embedded default: the sample then has buses."""
    profile = load_profile(str(write_profile(tmp_path)), ["data.classes=[Car, Bus]"])
    assert profile.data.sample.classes == ["Car", "Tree"]
    ensure_sample(profile)
    labels = Path(profile.data.labels_csv).read_text()
    assert f",{BUS},1" in labels


def test_three_classes_train_with_one_vs_rest_auc(spark, three_classes: str, tmp_path) -> None:
    profile = load_profile(three_classes)
    outcome = run_main(profile, spark)
    metrics = outcome["metrics"]
    run = mlflow.get_run(outcome["run_id"])
    assert set(run.data.tags["sparkles.classes"].split(",")) == set(THREE)
    local = mlflow.artifacts.download_artifacts(
        run_id=outcome["run_id"], artifact_path="evaluation", dst_path=str(tmp_path)
    )
    predictions = pd.read_csv(Path(local) / "test_predictions.csv")
    assert set(predictions.label) == set(THREE) and len(predictions) == metrics["count_test"]
    ordered = sorted(THREE)  # scikit-learn wants the columns in sorted label order
    probabilities = predictions[[f"probability_{c}" for c in ordered]].to_numpy()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, atol=1e-9)
    assert (predictions.confidence == probabilities.max(axis=1)).all()
    expected = roc_auc_score(
        predictions.label, probabilities, multi_class="ovr", average="macro", labels=ordered
    )
    assert metrics["auc"] == pytest.approx(expected, abs=1e-6)
    assert metrics["accuracy"] > 1 / 3  # beats chance among three
    for name in THREE:
        assert f"recall_{name}" in metrics
    plots = {Path(f).name for f in Path(local).iterdir()}
    assert {"roc_curve.png", "confusion_matrix.png", "misclassified.png"} <= plots


def test_three_classes_tune_on_validation_auc(spark, three_classes: str) -> None:
    grid = [
        "tune.logistic.grid.reg_param=[0.01, 0.1]",
        "tune.logistic.grid.elastic_net_param=[0.0]",
    ]
    profile = load_profile(three_classes, grid)
    outcome = run_tune(searching(profile, max_evals=2), spark)
    assert outcome["trials"] == 2
    assert 0 <= outcome["best"]["val_auc"] <= 1
    assert 0 <= outcome["metrics"]["auc"] <= 1
