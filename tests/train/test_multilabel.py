"""The multi-label policy: one row per image with its set of classes, a classifier per class on
the same stored features, and the metrics, plots and answers a multi-label user expects."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from sparkles.commands import run_main, run_tune
from sparkles.config import ConfigError, load_profile
from sparkles.deploy.registry import held_out_images, rescore
from sparkles.features.featurize import featurize
from sparkles.features.tables import open_training_table
from sparkles.model.serving import class_probabilities
from sparkles.train.evaluate_sets import SetEvaluation, choose_thresholds, set_metrics
from tests.conftest import searching, write_profile
from tests.train.test_study import KEEP_ALL, _evaluation

MULTI = ["data.multi_label_policy=multi-label"]


@pytest.fixture(scope="module")
def bundled(spark, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The bundled sample's 240 images (seed 7: 19 with both Car and Tree), smaller, featurized
    once under keep-all."""
    folder = tmp_path_factory.mktemp("multi-label")
    sample = {"images": 240, "seed": 7, "size": [128, 96]}
    path = str(write_profile(folder, data={"sample": sample}))
    featurize(load_profile(path, KEEP_ALL), spark)
    return path


@pytest.fixture(scope="module")
def multi(spark, bundled: str):
    """A `main` under multi-label on that store, and the keep-all `main` beside it."""
    return run_main(load_profile(bundled, MULTI), spark), run_main(
        load_profile(bundled, KEEP_ALL), spark
    )


def test_switching_policy_computes_nothing_and_counts_negatives(multi) -> None:
    outcome, _ = multi
    counts = outcome["featurize"]["counts"]
    assert counts["computed"] == 0 and counts["reused"] == counts["rows_in"]
    images, classes = counts["labeled_images"], 2
    negatives = counts["explicit_negatives"] + counts["assumed_negatives"]
    assert counts["explicit_negatives"] > 0  # the sample verifies some absences (Confidence 0)
    assert negatives + counts["labeled_rows"] == images * classes


def test_both_label_images_are_scored_right_where_single_label_could_not_be(
    multi, tmp_path: Path
) -> None:
    outcome, keep_all = multi
    metrics = outcome["metrics"]
    for name in ("auc", "micro_f1", "macro_f1", "subset_accuracy", "hamming_loss",
                 "study_accuracy", "val_auc", "val_micro_f1"):  # fmt: skip
        assert name in metrics
    for name in ("precision", "recall", "f1", "auc"):
        assert {f"{name}_Car", f"{name}_Tree"} <= set(metrics)
    predictions, local = _evaluation(outcome["run_id"], tmp_path / "multi")
    both = predictions[predictions.labels == "Car|Tree"]
    assert len(both) == metrics["count_test_multi"] > 0
    right = (both.predicted_labels == "Car|Tree").mean()
    assert right == pytest.approx(metrics["subset_accuracy_multi"])
    assert right > 0  # some both-label images are scored right as a set ...
    single, _ = _evaluation(keep_all["run_id"], tmp_path / "single")
    for _, rows in single[single.image_id.isin(both.image_id)].groupby("image_id"):
        assert (rows.label == rows.prediction).sum() <= 1  # ... which keep-all never can be
    # the same test images, and the study's accuracy computed the study's way on them
    assert set(predictions.image_id) == set(single.image_id)
    truth = predictions.labels.str.split("|")
    probabilities = predictions[["probability_Car", "probability_Tree"]].to_numpy()
    likeliest = np.array(["Car", "Tree"])[probabilities.argmax(axis=1)]
    rows = sum(len(t) for t in truth)
    hits = sum(said in t for said, t in zip(likeliest, truth, strict=True))
    assert metrics["study_accuracy"] == pytest.approx(hits / rows)
    for plot in ("roc_curve.png", "label_sets.png", "misclassified.png", "label_distribution.png"):
        assert (local / plot).stat().st_size > 0


def test_thresholds_come_from_validation_and_the_served_numbers_agree(
    spark, multi, tmp_path: Path
) -> None:
    outcome, _ = multi
    run = mlflow.get_run(outcome["run_id"])
    model = Path(mlflow.artifacts.download_artifacts(f"runs:/{run.info.run_id}/model",
                                                     dst_path=str(tmp_path)))  # fmt: skip
    classifier = json.loads((model / "serving" / "classifier.json").read_text())
    assert classifier["multi_label"] and classifier["labels"] == ["Car", "Tree"]
    logged = [run.data.metrics[f"val_threshold_{name}"] for name in classifier["labels"]]
    assert classifier["thresholds"] == pytest.approx(logged)
    predictions, _ = _evaluation(outcome["run_id"], tmp_path)
    table = open_training_table(spark, run.data.tags["sparkles.cache.table"])
    features = table.features().dropDuplicates(["image_id"]).toPandas().set_index("image_id")
    vectors = np.stack([features.features[i].toArray() for i in predictions.image_id])
    ours = class_probabilities(classifier, vectors)
    spark_says = predictions[["probability_Car", "probability_Tree"]].to_numpy()
    np.testing.assert_allclose(ours, spark_says, atol=1e-9)
    said = ours >= np.asarray(classifier["thresholds"])
    none = ~said.any(axis=1)  # every image has a class: then the likeliest is said
    said[none, ours[none].argmax(axis=1)] = True
    named = [
        "|".join(n for n, yes in zip(["Car", "Tree"], row, strict=True) if yes) for row in said
    ]
    assert named == list(predictions.predicted_labels.fillna(""))


def test_a_search_selects_on_micro_f1(spark, bundled: str) -> None:
    grid = ["tune.logistic.grid.regParam=[0.01, 1.0]", "tune.logistic.grid.elasticNetParam=[0]"]
    profile = load_profile(bundled, [*MULTI, *grid])
    outcome = run_tune(searching(profile, metric="micro_f1"), spark)
    assert outcome["trials"] == 2
    run = mlflow.get_run(outcome["run_id"])
    assert run.data.metrics["best_val_micro_f1"] == pytest.approx(outcome["best"]["val_micro_f1"])
    assert "subset_accuracy" in outcome["metrics"]


def test_thresholds_maximise_f1_on_the_scores_they_are_given() -> None:
    rng = np.random.default_rng(0)
    truth = rng.random((200, 2)) < [0.2, 0.7]  # an imbalanced class and a common one
    chances = np.clip(truth * 0.3 + rng.random((200, 2)) * 0.7, 0, 1)
    frame = pd.DataFrame(
        {
            "labels": [
                "|".join(n for n, t in zip(["Car", "Tree"], row, strict=True) if t) for row in truth
            ],
            "probability_Car": chances[:, 0],
            "probability_Tree": chances[:, 1],
            "margin_Car": chances[:, 0],
            "margin_Tree": chances[:, 1],
        }
    )
    chosen = choose_thresholds(frame, ["Car", "Tree"])
    at_chosen = set_metrics(frame, ["Car", "Tree"], chosen)
    for index, name in enumerate(["Car", "Tree"]):
        for other in np.linspace(0.05, 0.95, 19):
            cut = list(chosen)
            cut[index] = other
            assert set_metrics(frame, ["Car", "Tree"], cut)[f"f1_{name}"] <= at_chosen[f"f1_{name}"]
    said = chances >= chosen
    none = ~said.any(axis=1)
    said[none, chances[none].argmax(axis=1)] = True
    assert at_chosen["hamming_loss"] == pytest.approx((said != truth).mean())
    assert at_chosen["subset_accuracy"] == pytest.approx((said == truth).all(axis=1).mean())


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ([*MULTI, "tune.metric=accuracy"], "'tune.metric': 'accuracy' is not logged"),
        ([*MULTI, "registry.metric=f1"], "'registry.metric': 'f1' is not logged"),
        (["tune.metric=micro_f1"], "'tune.metric': 'micro_f1' is not logged"),
    ],
)
def test_a_metric_the_policy_does_not_log_is_an_error(
    tmp_path: Path, overrides: list[str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_profile(str(write_profile(tmp_path)), overrides)


def test_the_registry_rescores_a_multi_label_model_as_it_was_tested(spark, multi) -> None:
    """promote's gate on images neither model trained on: scored on the stored features or on
    the image files, a multi-label model gets the test metrics its run logged."""
    outcome, _ = multi
    run = mlflow.get_run(outcome["run_id"])
    test = held_out_images(spark, run)
    uri = f"runs:/{run.info.run_id}/model"
    stored = open_training_table(spark, run.data.tags["sparkles.cache.table"]).read()
    for metric in ("auc", "micro_f1", "subset_accuracy"):
        (on_features,) = rescore(spark, test, [uri], metric, stored)
        assert on_features == pytest.approx(run.data.metrics[metric], abs=1e-6)
    (on_images,) = rescore(spark, test, [uri], "auc")
    assert on_images == pytest.approx(run.data.metrics["auc"], abs=1e-4)


def test_each_model_states_its_answer_and_single_label_ones_are_unchanged(multi) -> None:
    outcome, keep_all = multi
    single, multi_label = (
        mlflow.models.get_model_info(f"runs:/{run['run_id']}/model").signature.outputs.input_names()
        for run in (keep_all, outcome)
    )
    passed, per_class = ["path", "image_id"], ["probability_Car", "probability_Tree"]
    assert single == [*passed, "prediction", *per_class, "featurize_error"]
    assert multi_label == [*passed, "predicted_labels", *per_class, "featurize_error"]
    assert {"accuracy", "f1", "auc", "precision_Car", "recall_Tree"} <= set(keep_all["metrics"])
    assert not {"micro_f1", "subset_accuracy", "hamming_loss", "f1_Car"} & set(keep_all["metrics"])


def test_a_perfect_model_has_an_empty_gallery() -> None:
    """No image whose set differs (real features on an easy task): nothing to draw, no error."""
    frame = pd.DataFrame(
        {"labels": ["Car", "Tree"], "predicted_labels": ["Car", "Tree"],
         "probability_Car": [0.9, 0.1], "probability_Tree": [0.2, 0.8], "path": ["a", "b"]}
    )  # fmt: skip
    evaluation = SetEvaluation({}, ["Car", "Tree"], frame, [0.5, 0.5])
    assert evaluation.differing(12).empty
