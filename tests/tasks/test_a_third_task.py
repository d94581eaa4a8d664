"""A third task is one class and two registrations: with nothing else edited it trains, logs
its own metric, says its name in the logged model's ``classifier.json``, serves its answer
without Spark, and is what `promote` and `predict` find when they load the model. The
throwaway task: single-label under ``keep-first`` that also reports balanced accuracy."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from sklearn.metrics import balanced_accuracy_score

from sparkles.commands import run_main
from sparkles.config import load_profile
from sparkles.model import answers
from sparkles.names import CLASSIFIER_FILE, SERVING_DATA
from sparkles.tasks import catalog
from sparkles.tasks.single_label import SingleLabel
from tests.conftest import write_profile
from tests.images import encode, photo


class BalancedSingleLabel(SingleLabel):
    name = "balanced-single-label"
    policies = ("keep-first",)
    selectable = (*SingleLabel.selectable, "balanced_accuracy")

    def test(self, fitted, test_rows, validation):
        evaluation = super().test(fitted, test_rows, validation)
        truth, said = evaluation.predictions.label, evaluation.predictions.prediction
        evaluation.metrics["balanced_accuracy"] = float(balanced_accuracy_score(truth, said))
        return evaluation


@pytest.fixture
def balanced():
    task = catalog.register(BalancedSingleLabel())
    answers.ANSWERS[task.name] = answers.Answer
    yield task
    catalog.unregister(task.name)
    answers.ANSWERS.pop(task.name)


def test_it_trains_logs_serves_and_loads_as_itself(spark, tmp_path: Path, balanced) -> None:
    path = write_profile(tmp_path, data={"multi_label_policy": "keep-first"})
    profile = catalog.check_profile(load_profile(str(path), ["registry.metric=balanced_accuracy"]))
    assert catalog.task_for(profile) is balanced
    outcome = run_main(profile, spark)
    metrics = outcome["metrics"]
    assert 0 <= metrics["balanced_accuracy"] <= 1 and "accuracy" in metrics

    uri = f"runs:/{outcome['run_id']}/model"
    folder = Path(mlflow.artifacts.download_artifacts(uri))
    numbers = json.loads((folder / SERVING_DATA / CLASSIFIER_FILE).read_text())
    assert numbers["task"] == "balanced-single-label"
    model, task = catalog.load_logged(str(folder))
    assert task is balanced and task.class_labels(model) == ["Car", "Tree"]

    request = pd.DataFrame({"path": ["a.jpg"], "content": [encode(photo(120, 90, seed=4))]})
    answer = mlflow.pyfunc.load_model(str(folder)).predict(request)
    assert answer.prediction[0] in ("Car", "Tree")

    catalog.unregister(balanced.name)  # a release that does not know the task says so
    with pytest.raises(ValueError, match="balanced-single-label"):
        catalog.load_logged(str(folder))


def test_a_profile_whose_metric_its_task_does_not_log_is_refused(tmp_path: Path) -> None:
    from sparkles.config import ConfigError

    path = write_profile(tmp_path, data={"multi_label_policy": "keep-first"})
    with pytest.raises(ConfigError, match="balanced_accuracy"):
        catalog.check_profile(load_profile(str(path), ["registry.metric=balanced_accuracy"]))
