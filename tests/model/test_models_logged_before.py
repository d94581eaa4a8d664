"""A model logged by an earlier release keeps loading and scoring: its saved Spark stages name
their Python classes by the module paths of that release (``sparkles.cnn.featurizer``,
``sparkles.model.stages``) and its pyfunc flavour names ``loader_module: sparkles.model.serving``.

``tests/fixtures/model-flat-layout`` is the model a ``main`` run logged with the release before the
package was split into subpackages (MobileNetV2, seeded random weights, so no weights file);
its ``code/`` folder was left out, so the code that loads it here is this checkout's. Its
``expected.json`` holds that release's answers on the images below.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from tests.images import encode, photo

LOGGED = Path(__file__).resolve().parent.parent / "fixtures" / "model-flat-layout"


@pytest.fixture(scope="module")
def request_frame() -> pd.DataFrame:
    contents = [encode(photo(120, 90, seed=seed)) for seed in (1, 2, 3)] + [b"not pixels"]
    return pd.DataFrame({"path": [f"{i}.jpg" for i in range(4)], "content": contents})


@pytest.fixture(scope="module")
def expected() -> dict:
    return json.loads((LOGGED / "expected.json").read_text())


def test_its_jvm_free_flavour_answers_as_it_did(request_frame, expected) -> None:
    answer = mlflow.pyfunc.load_model(str(LOGGED)).predict(request_frame)
    before = pd.DataFrame(expected["pyfunc"])
    assert list(answer.columns) == list(before.columns)
    assert list(answer["prediction"]) == list(before["prediction"])
    assert list(answer["featurize_error"]) == list(before["featurize_error"])
    for column in ("probability_Car", "probability_Tree"):
        now, then = answer[column].astype(float), before[column].astype(float)
        np.testing.assert_allclose(now, then, rtol=1e-4, equal_nan=True)


def test_its_spark_flavour_loads_and_scores_as_it_did(spark, request_frame, expected) -> None:
    model = mlflow.spark.load_model(str(LOGGED))
    images = spark.createDataFrame(request_frame)
    rows = model.transform(images).select("path", "prediction", "probability", "featurize_error")
    answers = {r.path: r for r in rows.collect()}
    for path, prediction, probability, error in expected["spark"]:
        row = answers[path]
        assert (row.prediction, row.featurize_error) == (prediction, error)
        if probability is None:
            assert row.probability is None
        else:
            np.testing.assert_allclose(row.probability.toArray(), probability, rtol=1e-4)
