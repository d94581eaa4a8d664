"""Training on cached features: a split that repeats, a model that learns, honest failures."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest

from sparkles.commands import run_train
from sparkles.config import load_profile
from sparkles.features.featurize import featurize
from sparkles.features.lineage import TableMissingError
from sparkles.model.stages import scoring_model
from sparkles.train.fit import train
from tests.conftest import write_profile
from tests.images import encode, photo


@pytest.fixture(scope="module")
def trained(spark, tmp_path_factory: pytest.TempPathFactory):
    """120 sample images (about 22 held out), featurized once, trained twice."""
    folder = tmp_path_factory.mktemp("train")
    profile = load_profile(
        str(write_profile(folder, data={"sample": {"images": 120, "seed": 5, "size": [128, 96]}}))
    )
    featurized = featurize(profile, spark)
    params = {"regParam": 0.01, "elasticNetParam": 0.5}
    runs = [train(profile, featurized.table, params) for _ in range(2)]
    return profile, featurized, runs


def test_model_beats_chance_clearly(trained) -> None:
    """The sample's classes are separable (drawn cars vs drawn trees), even for random-weight
    features. With n ≈ 22 test images, a classifier that guesses gets accuracy >= 0.8 with
    probability < 0.001 (binomial tail P(X >= 18 | n=22, p=0.5) = 0.0004), and AUC >= 0.9 is
    equally out of its reach: a broken pipeline cannot pass."""
    _, _, (first, _) = trained
    assert first.metrics["count_test"] >= 20
    assert first.metrics["accuracy"] >= 0.8
    assert first.metrics["auc"] >= 0.9
    for name in ("accuracy", "f1", "auc", "precision_Car", "recall_Tree"):
        assert 0 <= first.metrics[name] <= 1


def test_same_data_and_seed_give_the_same_metrics(trained) -> None:
    _, _, (first, second) = trained
    for name in ("accuracy", "f1", "auc", "weighted_precision"):
        assert abs(first.metrics[name] - second.metrics[name]) <= 1e-9
    np.testing.assert_allclose(
        first.evaluation.predictions.score, second.evaluation.predictions.score, atol=1e-9
    )


def test_scoring_model_quarantines_bad_images(spark, trained, tmp_path: Path) -> None:
    profile, featurized, (first, _) = trained
    from sparkles.features.featurize import build_featurizer

    classifier = first.task.classifier_model(first.fitted)
    model = scoring_model(
        build_featurizer(profile, featurized.weights), classifier, first.task.outputs
    )
    folder = tmp_path / "new"
    folder.mkdir()
    (folder / "good.jpg").write_bytes(encode(photo(200, 150, seed=21)))
    (folder / "bad.jpg").write_bytes(b"not a jpeg")
    images = spark.read.format("binaryFile").load(str(folder)).select("path", "content")
    rows = {Path(r.path).name: r for r in model.transform(images).collect()}
    assert rows["good.jpg"].prediction in ("Car", "Tree")
    assert rows["good.jpg"].featurize_error is None
    assert rows["bad.jpg"].prediction is None and rows["bad.jpg"].probability is None
    assert rows["bad.jpg"].featurize_error.startswith("not an image")


def test_train_without_cache_fails_the_run(spark, tmp_path: Path) -> None:
    profile = load_profile(str(write_profile(tmp_path)))
    with pytest.raises(TableMissingError, match="run `sparkles featurize`"):
        run_train(profile, spark)
    run = mlflow.search_runs(experiment_names=["sparkles-test"], output_format="list")[0]
    assert run.info.status == "FAILED"
    assert "TableMissingError" in run.data.tags["sparkles.error"]


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("option", "value", "key"),
    [
        ("--reg-param", "-1", "train.reg_param"),
        ("--elastic-net-param", "1.5", "train.elastic_net_param"),
        ("--max-iter", "0", "train.max_iter"),
    ],
)
def test_bad_parameters_are_rejected_before_spark_starts(tmp_path, option, value, key) -> None:
    profile = write_profile(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "sparkles.cli", "train", "--profile", str(profile), option, value],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'm.db'}"},
    )
    assert done.returncode == 2
    assert f"key '{key}'" in done.stderr
    assert "SparkContext" not in done.stderr and "Spark" not in done.stdout
    assert not (tmp_path / "m.db").exists()  # nothing was even tracked


@pytest.mark.e2e
def test_unknown_profile_is_rejected(tmp_path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "sparkles.cli", "main", "--profile", "no-such-profile"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "profile 'no-such-profile' not found" in done.stderr
