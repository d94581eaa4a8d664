"""Featurize once, tune many times: train and tune fit on a training table a featurize run
committed, and read no image (the images are moved away after featurize to prove it)."""

from __future__ import annotations

import shutil
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from sparkles.commands import run_featurize, run_train, run_tune
from sparkles.config import load_profile
from sparkles.features.lineage import TableMissingError
from sparkles.names import FEATURES_RUN_TAG
from sparkles.progress import input_bytes
from tests.conftest import searching, write_profile


@pytest.fixture(scope="module")
def featurized(spark, tmp_path_factory: pytest.TempPathFactory):
    """Two featurize runs (avg and max pooling) of one sample."""
    folder = tmp_path_factory.mktemp("tables")
    path = str(write_profile(folder))
    avg = run_featurize(load_profile(path), spark)
    avg_run = mlflow.last_active_run()
    run_featurize(load_profile(path, ["featurizer.pooling=max"]), spark)
    max_run = mlflow.last_active_run()
    return path, avg, avg_run.info.run_id, max_run.info.run_id


@pytest.fixture(scope="module")
def featurized_then_moved(featurized):
    """The same, after its images were moved away."""
    images = Path(load_profile(featurized[0]).data.images)
    shutil.move(images, images.parent.parent / "moved-away")
    return featurized


def _records_its_table(run_id: str, avg, avg_run: str) -> None:
    run = mlflow.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags[FEATURES_RUN_TAG] == avg_run
    assert run.data.tags["sparkles.store.table"] == avg.table.entry.path
    assert run.data.tags["sparkles.store.fingerprint"] == avg.fingerprint
    assert run.data.params["pooling"] == "avg"
    assert run.data.metrics["count_rows_in"] == avg.counts["rows_in"]
    (dataset,) = [d for d in run.inputs.dataset_inputs if d.tags[0].value == "training"]
    assert dataset.dataset.name == f"features-{avg.fingerprint}"
    assert avg.table.entry.table in dataset.dataset.source
    artifacts = mlflow.MlflowClient().list_artifacts(run_id, "evaluation")
    assert "evaluation/misclassified.png" in {a.path for a in artifacts}


def test_train_reads_only_the_images_its_gallery_shows(spark, featurized) -> None:
    """Images in place: the one image read is of the misclassified ones drawn in
    misclassified.png (at most train.gallery_size), never a pass over the data set."""
    path, avg, avg_run, _ = featurized
    profile = load_profile(path, ["train.max_iter=2"])  # a weak model: some images are wrong
    before = input_bytes(spark, scanning="binaryFile")
    outcome = run_train(profile, spark)
    read = input_bytes(spark, scanning="binaryFile") - before
    assert outcome["features_run_id"] == avg_run
    _records_its_table(outcome["run_id"], avg, avg_run)
    local = mlflow.artifacts.download_artifacts(
        f"runs:/{outcome['run_id']}/evaluation/test_predictions.csv"
    )
    predictions = pd.read_csv(local)
    wrong = predictions[predictions.label != predictions.prediction]
    shown = wrong.nlargest(profile.train.gallery_size, "confidence").path
    assert read == sum(Path(p.removeprefix("file:")).stat().st_size for p in shown)
    folder = sum(p.stat().st_size for p in Path(profile.data.images).glob("*.jpg"))
    assert read < folder / 4


def test_tune_fits_on_the_table_and_reads_no_image(spark, featurized_then_moved) -> None:
    """Images moved away: a search (and its refit, a train with its gallery) reads not one image
    byte and still finishes. (A cold `train` imports no CNN runtime: tests/test_readme.py.)"""
    path, avg, avg_run, _ = featurized_then_moved
    before = input_bytes(spark, scanning="binaryFile")
    tuned = run_tune(searching(load_profile(path)), spark)
    assert input_bytes(spark, scanning="binaryFile") == before
    assert tuned["features_run_id"] == avg_run
    _records_its_table(tuned["run_id"], avg, avg_run)


def test_an_explicit_features_run_is_honoured(spark, featurized_then_moved) -> None:
    """The max-pooled table, though the profile says avg: its settings go into the model. Its
    featurize run tags its table as 0.2 did (``sparkles.cache.*``): read, and copied renamed."""
    path, avg, _, max_run = featurized_then_moved
    client = mlflow.MlflowClient()
    for key, value in mlflow.get_run(max_run).data.tags.items():
        if key.startswith("sparkles.store."):
            client.delete_tag(max_run, key)
            client.set_tag(max_run, key.replace("sparkles.store.", "sparkles.cache."), value)
    outcome = run_train(load_profile(path), spark, features=max_run)
    run = mlflow.get_run(outcome["run_id"])
    assert run.data.tags[FEATURES_RUN_TAG] == max_run
    assert run.data.params["pooling"] == "max"
    assert run.data.tags["sparkles.store.fingerprint"] != avg.fingerprint
    assert not [key for key in run.data.tags if key.startswith("sparkles.cache.")]
    model = mlflow.spark.load_model(f"runs:/{outcome['run_id']}/model")
    from sparkles.cnn.featurizer import DeepImageFeaturizer
    from sparkles.model.stages import stage_of

    assert stage_of(model, DeepImageFeaturizer).getPooling() == "max"
    # a train run stands for the table it used
    again = run_train(load_profile(path), spark, features=outcome["run_id"])
    assert again["features_run_id"] == max_run
    with pytest.raises(TableMissingError, match="no such run"):
        run_train(load_profile(path), spark, features="0" * 32)


def test_no_matching_table_names_the_command_to_run(spark, featurized_then_moved) -> None:
    path, *_ = featurized_then_moved
    other = load_profile(path, ["featurizer.pooling=none"])
    with pytest.raises(TableMissingError, match="run `sparkles featurize`"):
        run_tune(searching(other), spark)


def test_the_features_key_covers_what_changes_a_feature(tmp_path: Path, monkeypatch) -> None:
    """Data and featurizer settings are in it; batch sizes and a relative spelling are not."""
    from sparkles.features.lineage import features_key

    path = str(write_profile(tmp_path))
    key = features_key(load_profile(path))
    same = ["featurizer.batch_size=4", "featurizer.rows_per_partition=7", "train.seed=9"]
    assert features_key(load_profile(path, same)) == key
    monkeypatch.chdir(tmp_path)
    assert features_key(load_profile(path, ["data.images=data/images"])) == key
    for other in (
        "featurizer.pooling=max",
        "featurizer.model=InceptionV3",
        "featurizer.runtime=keras",
        "featurizer.random_seed=1",
        "data.classes=[Car, Bus]",
        "data.multi_label_policy=keep-all",
        f"data.labels_csv={tmp_path / 'other.csv'}",
        "data.image_glob='*.png'",
    ):
        assert features_key(load_profile(path, [other])) != key, other
