"""The JVM-free scoring model: the featurizer's CNN and the fitted classifier as a plain MLflow
pyfunc (the ``python_function`` flavour of every logged model, see ``logged_model``), so
`mlflow models serve` runs in a container with neither Java nor Spark.

It holds the backbone (weights file, model name, pooling, runtime, precision, decode limits) and
the classifier as numbers (a logistic regression's coefficients and intercepts, or a
perceptron's layers and weights; the class names), decodes and runs the CNN with the same code
as the Spark featurizer (``cnn.batches``, from the same ``CnnSettings``) and answers, per image,
its task's answer (``model.answers``: the predicted class, or a multi-label model's
``predicted_labels``), one probability per class and the reason an image could not be scored.
This module must
never import pyspark (tests/model/test_serving.py serves it where pyspark cannot load).
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd

from sparkles.cnn.backbones import get_spec
from sparkles.cnn.batches import batch_featurizer
from sparkles.cnn.runtimes import precision_that_runs
from sparkles.cnn.settings import CnnSettings
from sparkles.model.answers import answer_for
from sparkles.names import CLASSIFIER_FILE, ERROR, PASSED_THROUGH, SETTINGS_FILE, probability_column


class ImageScorer:
    """Image bytes → class probabilities, with no Spark: the featurizer's CNN and decoding, then
    the classifier's numbers. Input: ``content`` (image bytes; base64 in JSON), optional
    ``path``/``image_id``. Output per row: those, ``prediction``, ``probability_<class>`` per
    class, ``featurize_error`` (null predictions and probabilities where it is set)."""

    def __init__(
        self,
        settings: dict[str, Any],
        classifier: dict[str, Any],
        weights: str | None,
        quantized: str | None = None,
    ) -> None:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        self.answer = answer_for(classifier)
        cnn = CnnSettings.from_dict(settings)
        precision, reason = precision_that_runs(cnn.precision)
        if reason:
            warnings.warn(f"scoring model built for bf16, but {reason}", stacklevel=2)
        self.batch_size = cnn.batch_size
        threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 0
        cnn = dataclasses.replace(cnn, precision=precision)
        spec = get_spec(cnn.model)
        self.featurize = batch_featurizer(
            spec, cnn, weights=weights, quantized=quantized, threads=threads
        )

    def predict(self, model_input: pd.DataFrame, params: dict[str, Any] | None = None):
        contents = [_as_bytes(value) for value in model_input["content"]]
        length = self.answer.input_length()
        features = np.zeros((len(contents), length))
        errors = np.empty(len(contents), dtype=object)
        for start in range(0, len(contents), self.batch_size):
            batch = slice(start, start + self.batch_size)
            features[batch], errors[batch] = self.featurize(contents[batch])
        probabilities = self.answer.probabilities(features)
        scored = np.array([error is None for error in errors], dtype=bool)
        out = pd.DataFrame(
            {name: model_input[name].to_numpy() for name in PASSED_THROUGH if name in model_input}
        )
        for name, column in self.answer.answer(probabilities, scored).items():
            out[name] = column.to_numpy()
        for index, label in enumerate(self.answer.labels):
            # None, not NaN, where quarantined: JSON has null but no NaN
            column = probabilities[:, index].astype(object)
            out[probability_column(label)] = np.where(scored, column, None)
        out[ERROR] = errors
        return out


def _load_pyfunc(data_path: str) -> ImageScorer:
    """The ``python_function`` flavour of the model a training run logs (``logged_model``):
    ``data_path`` holds settings.json and classifier.json; the weights file is the one inside
    the Spark flavour's featurizer stage (and, for int8, its quantized model), named in
    settings.json relative to the model."""
    folder = Path(data_path)
    settings = json.loads((folder / SETTINGS_FILE).read_text())
    classifier = json.loads((folder / CLASSIFIER_FILE).read_text())
    weights, quantized = settings.get("weights_file"), settings.get("quantized_model")
    return ImageScorer(
        settings,
        classifier,
        str(folder.parent / weights) if weights else None,
        str(folder.parent / quantized) if quantized else None,
    )


class ImageScoringModel(mlflow.pyfunc.PythonModel):
    """The ``serving`` pyfunc that runs logged before one model held both flavours: kept so
    those runs, and ``<name>-serving`` versions registered from them, still load."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        settings = json.loads(Path(context.artifacts["settings"]).read_text())
        classifier = json.loads(Path(context.artifacts["classifier"]).read_text())
        self.scorer = ImageScorer(settings, classifier, context.artifacts.get("weights"))

    def predict(
        self,
        context: mlflow.pyfunc.PythonModelContext,
        model_input: pd.DataFrame,
        params: dict[str, Any] | None = None,
    ) -> pd.DataFrame:
        return self.scorer.predict(model_input, params)


def _as_bytes(value: Any) -> bytes | None:
    """MLflow hands binary columns over as bytes; pandas may hold None or NaN for a missing one."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    return bytes(value)


def signature(classifier: dict[str, Any]) -> mlflow.models.ModelSignature:
    """Image bytes in; the task's answer and one probability per class out."""
    from mlflow.types import ColSpec, Schema

    answer = answer_for(classifier)

    inputs = Schema(
        [
            ColSpec("binary", "content"),
            *(ColSpec("string", n, required=False) for n in PASSED_THROUGH),
        ]
    )
    outputs = Schema(
        [
            *(ColSpec("string", n, required=False) for n in PASSED_THROUGH),
            *answer.columns,
            *(ColSpec("double", probability_column(n), required=False) for n in answer.labels),
            ColSpec("string", ERROR, required=False),
        ]
    )
    return mlflow.models.ModelSignature(inputs=inputs, outputs=outputs)
