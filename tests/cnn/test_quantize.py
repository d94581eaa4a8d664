"""precision int8: calibrated once on the profile's own images, kept with the features it made,
and run unchanged by train's logged model, its Spark flavour and its JVM-free flavour."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from sparkles.cnn import featurizer as featurizer_module
from sparkles.cnn.backbones import get_spec, sha256_file
from sparkles.commands import run_featurize, run_train
from sparkles.config import ConfigError, load_profile
from sparkles.features.featurize import build_featurizer, choose_weights
from sparkles.names import MODEL_ARTIFACT, PREDICTION, probability_column
from tests.conftest import write_profile

# ResNet50: random MobileNetV2 weights give features of norm ~1e-10, which int8 rounds to zero
INT8 = {"model": "ResNet50", "precision": "int8", "calibration_images": 12}


def test_int8_runs_featurize_train_and_both_flavours(spark, tmp_path: Path, monkeypatch) -> None:
    """With the weights given as a file: the logged model holds one copy of it and the
    quantized model, in the featurizer stage, which the JVM-free flavour reads."""
    monkeypatch.setenv("SPARKLES_OPENVINO_CACHE", str(tmp_path / "converted"))
    weights = tmp_path / "resnet.weights.h5"
    get_spec("ResNet50").build(None, "avg", 5).save_weights(weights)
    settings = {**INT8, "weights": str(weights)}
    profile = load_profile(str(write_profile(tmp_path, featurizer=settings)))
    featurized = run_featurize(profile, spark)
    counts = featurized.counts
    assert featurized.precision == "int8" and counts["featurized"] == counts["rows_in"] > 12
    store = Path(featurized.table.store.root.removeprefix("file:"))
    assert (store / "int8" / "model.xml").is_file() and (store / "int8" / "model.bin").is_file()
    run = mlflow.last_active_run()
    assert run.data.params["calibration_images"] == "12"
    assert run.data.params["calibration_set"] == featurized.calibration
    assert json.loads((store / "settings.json").read_text())["calibration"] == (
        featurized.calibration
    )

    # the store holds the quantized model's features: close to f32's, not equal to them
    rows = featurized.table.features().orderBy("path").collect()
    int8 = np.stack([row.features.toArray() for row in rows])
    f32 = build_featurizer(profile, choose_weights(profile, spark), "f32")
    images = spark.read.format("binaryFile").load([row.path for row in rows]).orderBy("path")
    reference = np.stack(
        [r.features.toArray() for r in f32.transform(images).select("features").collect()]
    )
    cosine = (int8 * reference).sum(1) / np.linalg.norm(int8, axis=1)
    cosine /= np.linalg.norm(reference, axis=1)
    assert np.median(cosine) > 0.95 and not np.allclose(int8, reference, atol=1e-4)

    # a second featurize takes the store's model: nothing is calibrated again, on any machine
    monkeypatch.setenv("SPARKLES_OPENVINO_CACHE", str(tmp_path / "another-machine"))

    def no_calibration(*args, **kwargs):
        raise AssertionError("calibrated again")

    monkeypatch.setattr(featurizer_module, "quantized_model", no_calibration)
    assert run_featurize(profile, spark).table.store.root == featurized.table.store.root

    outcome = run_train(profile, spark)
    uri = f"runs:/{outcome['run_id']}/{MODEL_ARTIFACT}"
    local = Path(mlflow.artifacts.download_artifacts(uri, dst_path=str(tmp_path / "model")))
    digest = sha256_file(str(weights))
    copies = [p for p in local.rglob("*") if p.is_file() and sha256_file(str(p)) == digest]
    assert len(copies) == 1 and "sparkml/stages" in str(copies[0])
    served_settings = json.loads((local / "serving" / "settings.json").read_text())
    assert local / served_settings["weights_file"] == copies[0]
    quantized = local / served_settings["quantized_model"]
    assert quantized.read_bytes() == (store / "int8" / "model.xml").read_bytes()
    paths = sorted(str(p) for p in Path(profile.data.images).glob("*.jpg"))[:6]
    frame = pd.DataFrame({"path": paths, "content": [Path(p).read_bytes() for p in paths]})
    served = mlflow.pyfunc.load_model(uri).predict(frame).set_index("path")
    spark_model = mlflow.spark.load_model(uri)
    scored = spark_model.transform(spark.read.format("binaryFile").load(paths))
    for row in scored.select("path", "prediction", "probability").collect():
        answer = served.loc[row.path.removeprefix("file:")]
        assert answer[PREDICTION] == row.prediction
        np.testing.assert_allclose(
            [answer[probability_column(c)] for c in ("Car", "Tree")],
            row.probability.toArray(),
            atol=1e-5,
        )


def test_calibration_joins_the_int8_key_only(spark, tmp_path: Path) -> None:
    """Another calibration count is another int8 store; f32 keys never see the setting."""
    keys = {}
    for name, featurizer in {
        "int8-12": INT8,
        "int8-20": {**INT8, "calibration_images": 20},
        "f32-12": {"calibration_images": 12},
        "f32-20": {"calibration_images": 20},
    }.items():
        (tmp_path / name).mkdir()
        profile = load_profile(str(write_profile(tmp_path / name, featurizer=featurizer)))
        built = build_featurizer(profile, choose_weights(profile, spark))
        if built.getPrecision() == "int8":
            built.setParams(calibrationSet=f"set-of-{name}")
        keys[name] = built.store_key("random:seed=0")
    assert keys["f32-12"] == keys["f32-20"] and "calibration_images" not in keys["f32-12"]
    assert keys["int8-12"]["calibration_images"] == 12 and keys["int8-12"] != keys["int8-20"]


def test_int8_on_keras_is_a_profile_error_naming_the_key(tmp_path: Path) -> None:
    path = write_profile(tmp_path, featurizer={"precision": "int8", "runtime": "keras"})
    with pytest.raises(ConfigError, match=r"featurizer.*precision: int8 runs on OpenVINO only"):
        load_profile(str(path))


def test_the_kept_int8_model_is_per_weights(tmp_path: Path, monkeypatch) -> None:
    """Two weights, the same calibration images: two quantized models, never one reused."""
    import dataclasses

    from sparkles.cnn.quantize import quantized_model
    from tests.images import encode, photo

    monkeypatch.setenv("SPARKLES_OPENVINO_CACHE", str(tmp_path))
    spec = dataclasses.replace(get_spec("MobileNetV2"), input_size=(32, 32))
    contents = [encode(photo(64, 48, seed=s)) for s in range(2)]
    files = []
    for seed in (1, 2):
        weights = tmp_path / f"mobilenet-{seed}.weights.h5"
        spec.build(None, "avg", seed).save_weights(weights)
        files.append(
            quantized_model(
                spec,
                str(weights),
                pooling="avg",
                seed=0,
                contents=contents,
                identity="same",
                limits=(1 << 26, 1 << 26),
            )
        )
    assert files[0] != files[1]
    assert files[0].with_suffix(".bin").read_bytes() != files[1].with_suffix(".bin").read_bytes()
