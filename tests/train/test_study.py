"""The rest of the 2019 study: images with several target classes counted the study's way
(keep-all), and its Future Work, a multilayer perceptron, trained, searched and served."""

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
from sparkles.features.featurize import featurize
from sparkles.features.tables import open_training_table
from sparkles.model import classifiers
from sparkles.model.serving import class_probabilities
from sparkles.train.splits import split_params, train_and_test
from tests.conftest import searching, write_profile

KEEP_ALL = ["data.multi_label_policy=keep-all"]


@pytest.fixture(scope="module")
def study(spark, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, int]]:
    """120 sample images, about 7 % with both Car and Tree, featurized once under keep-all
    (which keeps every image the other policies keep)."""
    folder = tmp_path_factory.mktemp("study")
    sample = {"images": 120, "seed": 5, "size": [128, 96]}
    path = str(write_profile(folder, data={"sample": sample}))
    return path, featurize(load_profile(path, KEEP_ALL), spark).counts


def _evaluation(run_id: str, folder: Path) -> tuple[pd.DataFrame, Path]:
    local = mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path="evaluation", dst_path=str(folder)
    )
    return pd.read_csv(Path(local) / "test_predictions.csv"), Path(local)


def test_keep_all_counts_each_label_and_splits_by_image(spark, study, tmp_path) -> None:
    path, first = study
    # an image's rows share one feature vector: computed once
    assert first["computed_images"] == first["matched_files"] < first["rows_in"]
    assert first["computed"] == first["rows_in"]  # rows whose features this run computed
    profile = load_profile(path, KEEP_ALL)
    outcome = run_main(profile, spark)
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
    table = open_training_table(spark, run.data.tags["sparkles.cache.table"])
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
    grid = ["tune.mlp.grid.layers=[[8], [16, 8]]", "tune.mlp.grid.maxIter=[40]"]
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
    table = open_training_table(spark, parent.data.tags["sparkles.cache.table"])
    features = table.features().toPandas().set_index("path")
    vectors = np.stack([features.features[p].toArray() for p in predictions.path])
    ours = class_probabilities(classifier, vectors)
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
    assert len(points) == len(grid.layers) * len(grid.stepSize) * len(grid.maxIter)


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
        classifiers.check_profile(load_profile(str(write_profile(tmp_path)), [override]))
