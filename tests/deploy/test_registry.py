"""Registry promotion with aliases, and batch scoring with the promoted model."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from sparkles.commands import run_featurize, run_train
from sparkles.config import load_profile
from sparkles.data.sample import generate_sample
from sparkles.deploy.predict import OutputExistsError, predict
from sparkles.deploy.registry import PromotionError, best_run, held_out_images, promote, rescore
from sparkles.features.tables import open_training_table
from sparkles.progress import input_bytes
from tests.conftest import registering

MODEL = "sparkles-test-model"


def _champion() -> str:
    return mlflow.MlflowClient().get_model_version_by_alias(MODEL, "champion").version


def test_champion_moves_only_for_a_better_challenger(spark, registry_store) -> None:
    path, scores = registry_store
    assert scores["useless"] == 0.5 < scores["strong"], scores
    profile = load_profile(path)

    first = promote(registering(profile, MODEL), "reg-useless")
    assert first.decision == "first-champion" and _champion() == first.version

    better = promote(registering(profile, MODEL), "reg-strong")
    assert better.decision == "promoted" and _champion() == better.version
    assert better.champion_score == pytest.approx(0.5)
    assert "same feature cache fingerprint and split" in better.evaluation

    worse = promote(registering(profile, MODEL), "reg-useless")  # already v1, now the challenger
    assert worse.decision == "kept-champion" and worse.version == first.version
    assert _champion() == better.version
    client = mlflow.MlflowClient()
    assert client.get_model_version_by_alias(MODEL, "challenger").version == first.version
    tags = client.get_model_version(MODEL, first.version).tags
    assert tags["sparkles.promotion.decision"] == "kept-champion"
    assert float(tags["sparkles.promotion.challenger_score"]) == pytest.approx(0.5)
    assert float(tags["sparkles.promotion.champion_score"]) == pytest.approx(scores["strong"])
    assert tags["sparkles.promotion.champion_version"] == str(better.version)
    assert len(client.search_model_versions(f"name = '{MODEL}'")) == 2  # no duplicate versions
    # one registered model: the champion is both the Spark model and the JVM-free one
    flavors = mlflow.models.get_model_info(f"models:/{MODEL}@champion").flavors
    assert flavors["python_function"]["loader_module"] == "sparkles.model.serving"
    assert flavors["spark"]["model_data"] == "sparkml"
    assert not client.search_registered_models(f"name = '{MODEL}-serving'")


def test_min_improvement_is_required(spark, registry_store) -> None:
    path, scores = registry_store
    profile = load_profile(path)
    name = MODEL + "-strict"
    promote(registering(profile, name), "reg-useless")
    held = promote(registering(profile, name, scores["strong"] - 0.5 + 0.01), "reg-strong")
    assert held.decision == "kept-champion"


def test_rescoring_on_raw_images_reproduces_the_logged_metric(spark, registry_store) -> None:
    _, scores = registry_store
    run = best_run("reg-strong", "auc", allow_random_weights=True)
    version = mlflow.register_model(f"runs:/{run.info.run_id}/model", MODEL + "-rescore").version
    (score,) = rescore(
        spark, held_out_images(spark, run), [f"models:/{MODEL}-rescore/{version}"], "auc"
    )
    # the run's logged metric, not the summary's (rounded to 6 digits for printing)
    assert score == pytest.approx(run.data.metrics["auc"], abs=1e-9)
    assert score == pytest.approx(scores["strong"], abs=1e-6)
    # the same from the feature store, where the CNN's features already are: no image read
    table = open_training_table(spark, run.data.tags["sparkles.store.table"])
    before = input_bytes(spark, scanning="binaryFile")
    (stored,) = rescore(
        spark,
        held_out_images(spark, run),
        [f"models:/{MODEL}-rescore/{version}"],
        "auc",
        table.read(),
    )
    assert input_bytes(spark, scanning="binaryFile") == before
    assert stored == pytest.approx(run.data.metrics["auc"], abs=1e-6)


def test_promoting_from_an_empty_experiment_is_a_clear_error(registry_store) -> None:
    path, _ = registry_store
    profile = load_profile(path)
    mlflow.MlflowClient().create_experiment("empty-experiment")
    with pytest.raises(PromotionError, match="no FINISHED run with a scoring model"):
        promote(registering(profile, MODEL), "empty-experiment")
    with pytest.raises(PromotionError, match="does not exist"):
        promote(registering(profile, MODEL), "no-such-experiment")


def test_promote_names_the_experiments_that_hold_runs(registry_store) -> None:
    """`mlflow run .` without --experiment-name files runs in 'Default': promote says so."""
    path, _ = registry_store
    with pytest.raises(PromotionError) as caught:
        promote(registering(load_profile(path), MODEL), "sparkles-nowhere")
    message = str(caught.value)
    assert "'sparkles-nowhere' does not exist" in message
    assert "'reg-strong'" in message and "'reg-useless'" in message
    assert "--experiment" in message


def test_predict_with_the_champion(spark, registry_store, tmp_path: Path) -> None:
    path, _ = registry_store
    load_profile(path)
    images = tmp_path / "incoming"
    generate_sample(tmp_path / "l.csv", tmp_path / "c.csv", images, count=10, seed=123)
    (images / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    (images / "empty.jpg").write_bytes(b"")
    uri = f"models:/{MODEL}@champion"
    result = predict(
        spark, uri, images=str(images / "*.jpg"), output=str(tmp_path / "out"), csv=True
    )
    assert (result.images, result.scored, result.quarantined) == (12, 10, 2)
    predictions = pd.read_parquet(tmp_path / "out" / "predictions")
    assert list(predictions.columns) == [
        "path",
        "image_id",
        "predicted_label",
        "probability",
        "probability_Car",
        "probability_Tree",
    ]
    assert predictions.probability.between(0.5, 1).all()
    per_class = predictions[["probability_Car", "probability_Tree"]]
    np.testing.assert_allclose(per_class.sum(axis=1), 1, atol=1e-9)
    np.testing.assert_allclose(per_class.max(axis=1), predictions.probability, atol=1e-12)
    chosen = np.where(predictions.probability_Car > predictions.probability_Tree, "Car", "Tree")
    assert (chosen == predictions.predicted_label).all()
    quarantine = pd.read_parquet(tmp_path / "out" / "quarantine").set_index("image_id")
    assert list(quarantine.columns) == ["path", "reason"]
    assert quarantine.loc["empty", "reason"].startswith("empty file")
    assert quarantine.loc["broken", "reason"].startswith("corrupt or truncated")
    assert len(pd.read_csv(next((tmp_path / "out" / "predictions_csv").glob("*.csv")))) == 10
    # a second run into the same folder keeps the first one's answers unless told otherwise
    with pytest.raises(OutputExistsError, match="--overwrite"):
        predict(spark, uri, images=str(images / "*.jpg"), output=str(tmp_path / "out"))
    assert len(pd.read_parquet(tmp_path / "out" / "predictions")) == 10
    again = predict(
        spark, uri, images=str(images / "broken.jpg"), output=str(tmp_path / "out"), overwrite=True
    )
    assert (again.images, again.scored) == (1, 0)
    assert len(pd.read_parquet(tmp_path / "out" / "predictions")) == 0
    # the same answers as the logged model itself
    version = mlflow.MlflowClient().get_model_version_by_alias(MODEL, "champion")
    logged = mlflow.spark.load_model(f"runs:/{version.run_id}/model")
    frame = spark.read.format("binaryFile").load(str(images / "*.jpg")).select("path", "content")
    expected = {r.path: r.prediction for r in logged.transform(frame).collect() if r.prediction}
    assert dict(zip(predictions.path, predictions.predicted_label, strict=True)) == expected


def test_the_challenger_is_chosen_on_validation_metrics(registry_store) -> None:
    path, _ = registry_store
    profile = load_profile(path)
    decision = promote(registering(profile, MODEL + "-val", 0.0), "reg-strong")
    run = mlflow.get_run(decision.run_id)
    assert decision.selected_by == f"val_auc={run.data.metrics['val_auc']:.6g}"
    for name in ("val_auc", "val_accuracy", "val_f1", "auc"):
        assert 0 <= run.data.metrics[name] <= 1  # main logs validation beside test metrics
    tags = mlflow.MlflowClient().get_model_version(MODEL + "-val", decision.version).tags
    assert tags["sparkles.promotion.selected_by"].startswith("val_auc=")
    assert tags["sparkles.promotion.images"].startswith("the challenger's test split")


def test_random_weights_are_never_promoted_unless_allowed(registry_store) -> None:
    path, _ = registry_store
    strict = load_profile(path, ["registry.allow_random_weights=false"])
    with pytest.raises(PromotionError, match="random weights"):
        promote(registering(strict, MODEL + "-strict", 0.0), "reg-strong")


def test_the_gate_compares_on_images_neither_model_trained_on(spark, registry_store) -> None:
    """Another split seed: each model trained on some of the other's test images."""
    path, _ = registry_store
    name = MODEL + "-gate"
    first = promote(registering(load_profile(path), name), "reg-strong")
    assert first.decision == "first-champion"
    other = load_profile(
        path,
        [
            "mlflow.experiment=reg-seed7",
            "train.seed=7",
            "train.reg_param=0.01",
            "train.elastic_net_param=0.0",
        ],
    )
    run_featurize(other, spark)  # no CNN: the store has every image
    run_train(other, spark)
    before = input_bytes(spark, scanning="binaryFile")
    decision = promote(registering(other, name), "reg-seed7")
    assert input_bytes(spark, scanning="binaryFile") == before  # one store: features, no images
    assert decision.evaluation.startswith("both re-scored on the images in both test splits")
    assert decision.evaluation.endswith("on their stored features")
    champion_test = held_out_images(spark, mlflow.get_run(first.run_id))
    challenger_test = held_out_images(spark, mlflow.get_run(decision.run_id))
    both = challenger_test.join(champion_test.select("image_id"), "image_id").count()
    assert 0 < both < challenger_test.count()
    assert decision.images.startswith(f"{both} images in both test splits")
    tags = mlflow.MlflowClient().get_model_version(name, decision.version).tags
    assert tags["sparkles.promotion.images"] == decision.images
