"""The JVM-free scoring model: the same answers as the Spark model, served over loopback by
`mlflow models serve` in a process where pyspark cannot even be imported."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import requests

from sparkles.names import ERROR, MODEL_ARTIFACT, PREDICTION, probability_column
from tests.conftest import free_port, import_trap, imports_by_this_project
from tests.images import encode, photo


@pytest.fixture(scope="module")
def served_run(registry_runs, tmp_path_factory: pytest.TempPathFactory):
    """The `main` run of the registry store, its test split's images and a damaged file."""
    from sparkles import tracking
    from sparkles.config import load_profile
    from sparkles.deploy.registry import best_run

    tracking.configure(load_profile(registry_runs[0]))  # module scope: registry_store is per test
    run = best_run("reg-strong", "auc", allow_random_weights=True)
    folder = tmp_path_factory.mktemp("serving")
    local = mlflow.artifacts.download_artifacts(
        f"runs:/{run.info.run_id}/evaluation/test_predictions.csv", dst_path=str(folder)
    )
    tested = pd.read_csv(local)
    truncated = folder / "truncated.jpg"
    jpeg = encode(photo(300, 200, seed=4))
    truncated.write_bytes(jpeg[: len(jpeg) // 2])
    not_an_image = folder / "notes.jpg"
    not_an_image.write_text("these are not pixels")
    paths = [*tested.path.map(lambda p: p.removeprefix("file:")), str(truncated), str(not_an_image)]
    return run, paths, folder


def _spark_answers(spark, run, paths: list[str]) -> pd.DataFrame:
    model = mlflow.spark.load_model(f"runs:/{run.info.run_id}/model")
    images = spark.read.format("binaryFile").load(paths).select("path", "content")
    rows = model.transform(images).select("path", "prediction", "probability", ERROR).collect()
    return pd.DataFrame(
        {
            "path": [r.path.removeprefix("file:") for r in rows],
            "prediction": [r.prediction for r in rows],
            "probability": [
                None if r.probability is None else r.probability.toArray() for r in rows
            ],
            ERROR: [r[ERROR] for r in rows],
        }
    ).set_index("path")


def test_pyfunc_answers_as_the_spark_model_does(spark, served_run, registry_store) -> None:
    run, paths, _ = served_run
    scorer = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/{MODEL_ARTIFACT}")
    frame = pd.DataFrame({"path": paths, "content": [Path(p).read_bytes() for p in paths]})
    got = scorer.predict(frame).set_index("path")
    expected = _spark_answers(spark, run, paths)
    labels = ["Car", "Tree"]  # alphabetical, as the StringIndexer orders them
    assert len(got) == len(paths) and set(got.index) == set(expected.index)
    tested = paths[:-2]
    assert len(tested) >= 10
    for path in tested:
        assert got.loc[path, ERROR] is None and expected.loc[path, ERROR] is None
        assert got.loc[path, PREDICTION] == expected.loc[path, "prediction"]
        probabilities = [got.loc[path, probability_column(label)] for label in labels]
        np.testing.assert_allclose(probabilities, expected.loc[path, "probability"], atol=1e-5)
        assert abs(sum(probabilities) - 1) <= 1e-9
    for path in paths[-2:]:  # quarantined for the same reason, with nothing guessed
        assert got.loc[path, ERROR] == expected.loc[path, ERROR] is not None
        assert got.loc[path, PREDICTION] is None
        assert all(got.loc[path, probability_column(label)] is None for label in labels)


def test_the_model_carries_the_projects_code_not_a_pip_requirement(
    served_run, registry_store
) -> None:
    run, _, _ = served_run
    local = Path(mlflow.artifacts.download_artifacts(f"runs:/{run.info.run_id}/{MODEL_ARTIFACT}"))
    names = {r.split("==")[0] for r in (local / "requirements.txt").read_text().split()}
    # pyspark for the Spark flavour: installed, never imported by the JVM-free one (below)
    assert {"openvino", "keras", "pillow", "mlflow", "pyspark"} <= names
    assert not names & {"sparkles-spark", "sparkles"}
    assert (local / "code" / "sparkles" / "serving.py").is_file()
    settings = json.loads((local / "serving" / "settings.json").read_text())
    assert settings["runtime"] == "openvino" and settings["precision"] == "f32"
    assert settings["weights_file"] is None  # seeded random weights: no file at all


@pytest.mark.e2e
def test_mlflow_models_serve_answers_over_loopback(served_run, registry_store) -> None:
    run, paths, folder = served_run
    traps = folder / "serving-traps"
    port = free_port()
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": mlflow.get_tracking_uri(),
        **import_trap(traps, ["pyspark"]),
        # MLflow starts `uvicorn` from PATH: this interpreter's, as in an activated venv
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    uri = f"runs:/{run.info.run_id}/{MODEL_ARTIFACT}"
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "models",
            "serve",
            "-m",
            uri,
            "--env-manager",
            "local",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            assert server.poll() is None, server.stdout.read()[-4000:]
            try:
                if requests.get(f"{base}/ping", timeout=5).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, "the server did not start in 300 s"
            time.sleep(1)
        good, truncated, text = paths[0], paths[-2], paths[-1]
        body = {
            "dataframe_split": {
                "columns": ["path", "content"],
                "data": [
                    [p, base64.b64encode(Path(p).read_bytes()).decode()]
                    for p in (good, truncated, text)
                ],
            }
        }
        answer = requests.post(f"{base}/invocations", json=body, timeout=120)
        assert answer.status_code == 200, answer.text
        rows = {row["path"]: row for row in answer.json()["predictions"]}
        assert rows[good][PREDICTION] in ("Car", "Tree") and rows[good][ERROR] is None
        probabilities = [rows[good][probability_column(c)] for c in ("Car", "Tree")]
        assert abs(sum(probabilities) - 1) <= 1e-9
        assert rows[truncated][ERROR].startswith("corrupt or truncated")
        assert rows[text][ERROR].startswith("not an image")
        for row in (rows[truncated], rows[text]):
            assert row[PREDICTION] is None and row[probability_column("Car")] is None
        # the example logged with the model is a valid request as it stands
        local = Path(mlflow.artifacts.download_artifacts(uri))
        example = (local / "serving_input_example.json").read_text()
        answer = requests.post(
            f"{base}/invocations", data=example, headers={"Content-Type": "application/json"}
        )
        assert answer.status_code == 200 and answer.json()["predictions"][0][ERROR] is None
    finally:
        server.terminate()
        server.wait(timeout=60)
    ours = imports_by_this_project(traps)
    assert not ours, f"this project's code imported pyspark while serving:\n{ours[0]}"


def test_a_serving_model_of_the_two_model_layout_still_loads(tmp_path: Path) -> None:
    """Runs logged before one model held both flavours have a `serving` pyfunc of their own
    (ImageScoringModel with settings, classifier and weights as artifacts): it keeps scoring."""
    from sparkles.model.serving import ImageScoringModel

    settings = {
        "model": "MobileNetV2",
        "pooling": "avg",
        "runtime": "openvino",
        "precision": "f32",
        "seed": 0,
        "batch_size": 4,
        "max_file_bytes": 1 << 20,
        "max_pixels": 1 << 24,
    }
    classifier = {
        "labels": ["Car", "Tree"],
        "coefficients": [[0.01] * 1280],
        "intercepts": [0.0],
        "multinomial": False,
    }
    artifacts = {}
    for name, content in (("settings", settings), ("classifier", classifier)):
        artifacts[name] = str(tmp_path / f"{name}.json")
        Path(artifacts[name]).write_text(json.dumps(content))
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'old.db'}")
    with mlflow.start_run() as run:
        mlflow.pyfunc.log_model(
            name="serving", python_model=ImageScoringModel(), artifacts=artifacts
        )
    scorer = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/serving")
    good, bad = encode(photo(120, 90, seed=2)), b"no pixels here"
    answer = scorer.predict(pd.DataFrame({"path": ["a.jpg", "b.jpg"], "content": [good, bad]}))
    assert answer[PREDICTION][0] in ("Car", "Tree") and answer[ERROR][0] is None
    assert answer[PREDICTION][1] is None and answer[ERROR][1].startswith("not an image")
