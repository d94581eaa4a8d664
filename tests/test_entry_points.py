"""The MLproject entry points, end to end through `mlflow run`, as a user runs them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from tests.conftest import ROOT, write_profile


def mlflow_run(tmp_path: Path, entry_point: str, *params: str) -> subprocess.CompletedProcess:
    # in-process MLflow calls leave MLFLOW_* variables behind: give `mlflow run` a clean slate
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")},
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlruns.db'}",
    }
    command = [
        sys.executable, "-m", "mlflow", "run", str(ROOT), "-e", entry_point,
        "--env-manager", "local", "--experiment-name", "sparkles-e2e",
    ]  # fmt: skip
    for param in params:
        command += ["-P", param]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_featurize_entry_point_through_mlflow_run(tmp_path: Path) -> None:
    profile = write_profile(tmp_path)
    done = mlflow_run(
        tmp_path, "featurize", f"profile={profile}", "overrides=featurizer.batch_size=8"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert '"featurized":' in done.stdout
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlruns.db'}")
    runs = mlflow.search_runs(experiment_names=["sparkles-e2e"], output_format="list")
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.params["batch_size"] == "8"
    assert run.data.tags["mlflow.project.entryPoint"] == "featurize"
    counts = run.data.metrics
    assert counts["count_rows_in"] == counts["count_featurized"] + counts["count_quarantined"] > 0
    artifacts = {f.path for f in mlflow.MlflowClient().list_artifacts(run.info.run_id, "featurize")}
    assert artifacts == {"featurize/quarantine.csv", "featurize/featurize_counts.json"}


@pytest.mark.slow
def test_a_bad_profile_fails_the_run_with_a_clear_message(tmp_path: Path) -> None:
    profile = write_profile(tmp_path, featurizer={"pooling": "mean"})
    done = mlflow_run(tmp_path, "featurize", f"profile={profile}")
    assert done.returncode != 0
    assert "key 'featurizer.pooling'" in done.stderr


@pytest.mark.slow
def test_main_entry_point_trains_logs_and_serves(spark, tmp_path: Path) -> None:
    import pandas as pd
    from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

    from sparkles.data.sample import generate_sample

    profile = write_profile(tmp_path)
    done = mlflow_run(tmp_path, "main", f"profile={profile}", "reg_param=0.05")
    assert done.returncode == 0, done.stderr[-3000:]
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlruns.db'}")
    run = mlflow.search_runs(experiment_names=["sparkles-e2e"], output_format="list")[0]
    assert run.info.status == "FINISHED"
    assert run.data.params["regParam"] == "0.05"
    assert run.data.params["elasticNetParam"] == "0.5"  # the profile's, as no parameter said
    metrics = run.data.metrics
    for name in ("accuracy", "f1", "auc"):
        assert 0 <= metrics[name] <= 1
    client = mlflow.MlflowClient()
    evaluation = {f.path for f in client.list_artifacts(run.info.run_id, "evaluation")}
    for plot in ("roc_curve", "confusion_matrix", "misclassified", "label_distribution"):
        assert f"evaluation/{plot}.png" in evaluation
    local = mlflow.artifacts.download_artifacts(
        run_id=run.info.run_id, artifact_path="evaluation", dst_path=str(tmp_path / "eval")
    )
    predictions = pd.read_csv(Path(local) / "test_predictions.csv")
    assert len(predictions) == metrics["count_test"]
    assert metrics["accuracy"] == pytest.approx(
        accuracy_score(predictions.label, predictions.prediction), abs=1e-9
    )
    assert metrics["f1"] == pytest.approx(
        f1_score(predictions.label, predictions.prediction, average="weighted"), abs=1e-9
    )
    truth = (predictions.label == "Tree").astype(int)
    assert metrics["auc"] == pytest.approx(roc_auc_score(truth, predictions.score), abs=1e-9)

    # the logged model scores raw images it has never seen, through both flavours alike
    new = generate_sample(
        tmp_path / "n" / "l.csv", tmp_path / "n" / "c.csv", tmp_path / "n" / "img", count=8, seed=99
    )
    images = spark.read.format("binaryFile").load(str(new.images)).select("path", "content")
    uri = f"runs:/{run.info.run_id}/model"
    by_spark = mlflow.spark.load_model(uri).transform(images).select("path", "prediction")
    expected = {r.path: r.prediction for r in by_spark.collect()}
    frame = images.toPandas()
    by_pyfunc = mlflow.pyfunc.load_model(uri).predict(frame)
    assert dict(zip(frame.path, list(by_pyfunc), strict=True)) == expected
    assert set(expected.values()) <= {"Car", "Tree"} and len(expected) == 8
