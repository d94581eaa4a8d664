"""The model a training run logs: one MLflow model, two flavours, one copy of the CNN's weights.

- ``spark``: the whole PipelineModel (DeepImageFeaturizer → classifier → label names), which
  `predict` and ``mlflow.spark.load_model`` use; the featurizer stage saves the weights file.
- ``python_function``: the JVM-free scorer (``serving._load_pyfunc``), which reads that same
  weights file out of the featurizer stage, so ``mlflow models serve -m models:/<name>@champion``
  needs neither Java nor Spark, and the registry needs no second model for it.

This module is the flavour module handed to ``mlflow.models.Model.log`` (MLflow's way to log a
custom flavour): MLflow creates the logged model, calls ``save_model`` and uploads the folder.
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.models import Model
from mlflow.models.model import MLMODEL_FILE_NAME, ModelInfo
from PIL import Image
from pyspark.ml import PipelineModel

from sparkles.cnn.quantize import MODEL_XML, QUANTIZED_DIR
from sparkles.code import package_dir
from sparkles.model.serving import signature
from sparkles.names import (
    CLASSIFIER_FILE,
    MODEL_ARTIFACT,
    PATH,
    SERVING_DATA,
    SETTINGS_FILE,
    WEIGHTS_DIR,
)


def input_example() -> pd.DataFrame:
    """A small JPEG made here: the model's example request, without reading any image file."""
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (96, 140, 70)).save(buffer, format="JPEG")
    return pd.DataFrame({PATH: ["example.jpg"], "content": [buffer.getvalue()]})


def save_model(
    path: str,
    mlflow_model: Model,
    spark_model: PipelineModel,
    settings: dict[str, Any],
    classifier: dict[str, Any],
    pip_requirements: list[str],
    code_paths: list[str],
    **_: Any,  # what Model.log passes on (validate_serving_input)
) -> None:
    """Both flavours into ``path``: Spark's own save, then the pyfunc flavour re-pointed at the
    JVM-free loader and the weights file (and int8 model) the featurizer stage saved."""
    example = input_example()
    mlflow.spark.save_model(
        spark_model,
        path,
        mlflow_model=mlflow_model,
        signature=signature(classifier),
        input_example=example,
        pip_requirements=pip_requirements,
        code_paths=code_paths,
    )
    root = Path(path)
    stored = root.glob(f"sparkml/stages/*/{WEIGHTS_DIR}/*")
    found = sorted(p for p in stored if not p.name.startswith("."))  # not Hadoop's .crc files
    data = root / SERVING_DATA
    data.mkdir()
    weights = str(found[0].relative_to(root)) if found else None  # none: seeded random weights
    int8 = sorted(root.glob(f"sparkml/stages/*/{QUANTIZED_DIR}/{MODEL_XML}"))  # precision int8
    quantized = str(int8[0].relative_to(root)) if int8 else None
    files = {"weights_file": weights, "quantized_model": quantized}
    (data / SETTINGS_FILE).write_text(json.dumps({**settings, **files}, indent=2))
    (data / CLASSIFIER_FILE).write_text(json.dumps(classifier, indent=2))
    pyfunc = mlflow_model.flavors[mlflow.pyfunc.FLAVOR_NAME]
    pyfunc[mlflow.pyfunc.MAIN] = "sparkles.model.serving"
    pyfunc[mlflow.pyfunc.DATA] = SERVING_DATA
    mlflow_model.save(str(root / MLMODEL_FILE_NAME))


def model_requirements() -> list[str]:
    """Third-party packages pinned from this environment; this project's own code travels in the
    model (``code_paths``), never as a pip requirement. Given explicitly, because MLflow's
    inference loads the model in a fresh process (a second Spark start, ~10 s) and still misses
    TF, which loads lazily."""
    from importlib.metadata import PackageNotFoundError, version

    pins = []
    for package in (
        "pyspark",
        "pyarrow",
        "mlflow",
        "numpy",
        "pandas",
        "tensorflow-cpu",
        "tensorflow",
        "keras",
        "openvino",
        "pillow",
    ):
        try:
            pins.append(f"{package}=={version(package)}")
        except PackageNotFoundError:
            continue
    return pins


def log_model(
    spark_model: PipelineModel, settings: dict[str, Any], classifier: dict[str, Any]
) -> ModelInfo:
    """Log the model as ``model`` in the active run.

    MLflow's check of the input example would load the pyfunc and build the CNN in this process
    (TensorFlow, seconds): skipped here, since the JVM-free scorer is tested on real images and
    its example is served in tests/model/test_serving.py.
    """
    return Model.log(
        artifact_path=None,
        name=MODEL_ARTIFACT,
        flavor=sys.modules[__name__],
        spark_model=spark_model,
        settings=settings,
        classifier=classifier,
        pip_requirements=model_requirements(),
        code_paths=[str(package_dir())],
        validate_serving_input=False,
    )
