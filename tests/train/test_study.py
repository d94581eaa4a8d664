"""The rest of the 2019 study: images with several target classes counted the study's way
(keep-all) and predicted as sets (multi-label: one row per image with its set of classes, a
classifier per class on the same stored features), and its Future Work, a multilayer
perceptron, trained, searched and served. One store for all of them: the bundled sample's
240 images (seed 7: 19 with both Car and Tree), smaller, featurized once under keep-all."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from hyperopt.pyll import stochastic

from sparkles.commands import run_featurize, run_main, run_tune
from sparkles.config import ConfigError, load_profile
from sparkles.deploy.registry import held_out_images, rescore
from sparkles.features.featurize import featurize
from sparkles.features.tables import open_training_table
from sparkles.model import classifiers
from sparkles.model.answers import answer_for
from sparkles.tasks.catalog import check_profile
from sparkles.tasks.evaluate_sets import SetEvaluation, choose_thresholds, set_metrics
from sparkles.train.splits import split_params, train_and_test
from tests.conftest import searching, write_profile

KEEP_ALL = ["data.multi_label_policy=keep-all"]
MULTI = ["data.multi_label_policy=multi-label"]


@pytest.fixture(scope="module")
def study(spark, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, int]]:
    """The bundled sample's images, smaller, featurized once under keep-all (which keeps every
    image the other policies keep)."""
    folder = tmp_path_factory.mktemp("study")
    sample = {"images": 240, "seed": 7, "size": [128, 96]}
    path = str(write_profile(folder, data={"sample": sample}))
    return path, featurize(load_profile(path, KEEP_ALL), spark).counts


def _evaluation(run_id: str, folder: Path) -> tuple[pd.DataFrame, Path]:
    local = mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path="evaluation", dst_path=str(folder)
    )
    return pd.read_csv(Path(local) / "test_predictions.csv"), Path(local)


@pytest.fixture(scope="module")
def multi(spark, study):
    """A `main` under multi-label on the study's store, and the keep-all `main` beside it."""
    path, _ = study
    return run_main(load_profile(path, MULTI), spark), run_main(load_profile(path, KEEP_ALL), spark)


def test_keep_all_counts_each_label_and_splits_by_image(spark, study, multi, tmp_path) -> None:
    path, first = study
    # an image's rows share one feature vector: computed once
    assert first["computed_images"] == first["matched_files"] < first["rows_in"]
    assert first["computed"] == first["rows_in"]  # rows whose features this run computed
    profile = load_profile(path, KEEP_ALL)
    outcome = multi[1]
    counts = outcome["featurize"]["counts"]
    multi = counts["multi_label_images"]
    assert multi > 0
    assert counts["labeled_rows"] == counts["labeled_images"] + multi
    assert counts["matched_rows"] == counts["matched_files"] + multi  # every file was found
    assert (
        counts["rows_in"] == counts["matched_rows"] == counts["featurized"] + counts["quarantined"]
    )
    assert counts["policy_dropped_files"] == 0
    assert counts["reused"] == counts["rows_in"] and counts["computed"] == 0

    run = mlflow.get_run(outcome["run_id"])
    table = open_training_table(spark, run.data.tags["sparkles.store.table"])
    train_set, test_set = train_and_test(table.features(), split_params(profile.train))
    train_ids, test_ids = ({r.image_id for r in part.collect()} for part in (train_set, test_set))
    assert not train_ids & test_ids

    predictions, _ = _evaluation(outcome["run_id"], tmp_path)
    twice = predictions.groupby("image_id").filter(lambda rows: len(rows) == 2)
    assert len(twice), "the test split should hold a Car-and-Tree image at this seed"
    for _, rows in twice.groupby("image_id"):
        assert sorted(rows.label) == ["Car", "Tree"]
        assert rows.prediction.nunique() == 1  # one image, one answer ...
    errors = (predictions.label != predictions.prediction).sum()
    assert errors >= twice.image_id.nunique()  # ... so one of its rows is always wrong
    assert len(predictions) == outcome["metrics"]["count_test"]


def test_a_perceptron_is_searched_logged_and_served(spark, study, tmp_path) -> None:
    grid = ["tune.mlp.grid.layers=[[8], [16, 8]]", "tune.mlp.grid.max_iter=[40]"]
    profile = load_profile(study[0], ["train.classifier=mlp", *grid])
    run_featurize(profile, spark)  # the drop policy's table (every image's features are stored)
    outcome = run_tune(searching(profile, max_evals=0), spark)
    assert outcome["trials"] == 2
    parent = mlflow.get_run(outcome["run_id"])
    assert parent.data.params["classifier"] == "mlp"
    assert parent.data.params["layers"] in ("8", "16-8")
    assert parent.data.params["solver"] == "l-bfgs"
    children = mlflow.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{outcome['run_id']}'",
        output_format="list",
    )
    assert sorted(c.data.params["layers"] for c in children) == ["16-8", "8"]
    assert outcome["metrics"]["accuracy"] >= 0.8  # the sample's classes are separable

    # the JVM-free model's numbers give Spark's probabilities on the very same features
    predictions, local = _evaluation(outcome["run_id"], tmp_path)
    model = mlflow.artifacts.download_artifacts(
        f"runs:/{outcome['run_id']}/model", dst_path=str(tmp_path / "model")
    )
    classifier = json.loads((Path(model) / "serving" / "classifier.json").read_text())
    assert classifier["kind"] == "mlp" and classifier["layers"][1:-1] in ([8], [16, 8])
    table = open_training_table(spark, parent.data.tags["sparkles.store.table"])
    features = table.features().toPandas().set_index("path")
    vectors = np.stack([features.features[p].toArray() for p in predictions.path])
    ours = answer_for(classifier).probabilities(vectors)
    spark_says = predictions[[f"probability_{c}" for c in classifier["labels"]]].to_numpy()
    np.testing.assert_allclose(ours, spark_says, atol=1e-9)
    assert (local / "roc_curve.png").is_file()


def test_the_perceptron_space_is_bounded(tmp_path: Path) -> None:
    profile = load_profile(str(write_profile(tmp_path)), ["train.classifier=mlp"])
    space = classifiers.hyperopt_space(profile.train, profile.tune)
    mlp = classifiers.KINDS["mlp"]
    bounds = mlp.hyperopt(profile.tune)
    rng = np.random.default_rng(0)
    for _ in range(20):
        params = classifiers.KINDS["mlp"].from_sample(stochastic.sample(space, rng=rng))
        assert params["layers"] in bounds.layers
        assert bounds.max_iter_min <= params["maxIter"] <= bounds.max_iter_max
        assert isinstance(params["maxIter"], int)
        assert params["stepSize"] == mlp.settings(profile.train).step_size  # l-bfgs: not searched
    gd = load_profile(str(write_profile(tmp_path)), ["train.classifier=mlp", "train.mlp.solver=gd"])
    steps = {
        classifiers.KINDS["mlp"].from_sample(
            stochastic.sample(classifiers.hyperopt_space(gd.train, gd.tune), rng=rng)
        )["stepSize"]
        for _ in range(10)
    }
    assert len(steps) == 10 and all(
        bounds.step_size_min <= s <= bounds.step_size_max for s in steps
    )
    points = classifiers.grid_points(profile.train, profile.tune)
    grid = mlp.grid(profile.tune)
    assert len(points) == len(grid.layers) * len(grid.step_size) * len(grid.max_iter)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.classifier=svm", "train.classifier"),
        ("train.mlp.layers=[64, 0]", "hidden layer sizes must be >= 1"),
        ("tune.mlp.hyperopt.max_iter_min=500", "max_iter_min <= max_iter_max"),
        ("data.multi_label_policy=keep-some", "data.multi_label_policy"),
    ],
)
def test_bad_classifier_settings_name_the_key(tmp_path: Path, override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        check_profile(load_profile(str(write_profile(tmp_path)), [override]))


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
    for name in (
        "auc",
        "micro_f1",
        "macro_f1",
        "subset_accuracy",
        "hamming_loss",
        "study_accuracy",
        "val_auc",
        "val_micro_f1",
    ):
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
    model = Path(
        mlflow.artifacts.download_artifacts(
            f"runs:/{run.info.run_id}/model", dst_path=str(tmp_path)
        )
    )
    classifier = json.loads((model / "serving" / "classifier.json").read_text())
    assert classifier["task"] == "multi-label" and classifier["labels"] == ["Car", "Tree"]
    logged = [run.data.metrics[f"val_threshold_{name}"] for name in classifier["labels"]]
    assert classifier["thresholds"] == pytest.approx(logged)
    predictions, _ = _evaluation(outcome["run_id"], tmp_path)
    table = open_training_table(spark, run.data.tags["sparkles.store.table"])
    features = table.features().dropDuplicates(["image_id"]).toPandas().set_index("image_id")
    vectors = np.stack([features.features[i].toArray() for i in predictions.image_id])
    ours = answer_for(classifier).probabilities(vectors)
    spark_says = predictions[["probability_Car", "probability_Tree"]].to_numpy()
    np.testing.assert_allclose(ours, spark_says, atol=1e-9)
    said = ours >= np.asarray(classifier["thresholds"])
    none = ~said.any(axis=1)  # every image has a class: then the likeliest is said
    said[none, ours[none].argmax(axis=1)] = True
    named = [
        "|".join(n for n, yes in zip(["Car", "Tree"], row, strict=True) if yes) for row in said
    ]
    assert named == list(predictions.predicted_labels.fillna(""))


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
        check_profile(load_profile(str(write_profile(tmp_path)), overrides))


def test_the_registry_rescores_a_multi_label_model_as_it_was_tested(spark, multi) -> None:
    """promote's gate on images neither model trained on: scored on the stored features or on
    the image files, a multi-label model gets the test metrics its run logged."""
    outcome, _ = multi
    run = mlflow.get_run(outcome["run_id"])
    test = held_out_images(spark, run)
    uri = f"runs:/{run.info.run_id}/model"
    stored = open_training_table(spark, run.data.tags["sparkles.store.table"]).read()
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
        {
            "labels": ["Car", "Tree"],
            "predicted_labels": ["Car", "Tree"],
            "probability_Car": [0.9, 0.1],
            "probability_Tree": [0.2, 0.8],
            "path": ["a", "b"],
        }
    )
    evaluation = SetEvaluation({}, ["Car", "Tree"], frame, [0.5, 0.5])
    assert evaluation.mistakes(12).empty
