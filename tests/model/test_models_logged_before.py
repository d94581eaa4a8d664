"""A model logged by an earlier release keeps loading and scoring: its saved Spark stages name
their Python classes by the module paths of that release (``sparkles.cnn.featurizer``,
``sparkles.model.stages``, ``sparkles.model.label_sets``), its pyfunc flavour names
``loader_module: sparkles.model.serving``, and its ``classifier.json`` says its task the way
that release did (nothing for single-label, ``multi_label: true``).

Each folder under ``tests/fixtures`` is the ``model`` a ``main`` run logged (MobileNetV2, seeded
random weights, so no weights file; its ``code/`` folder left out, so the code that loads it
here is this checkout's), with ``expected.json``, that release's answers on the images below:

- ``model-flat-layout``: the release before the package was split into subpackages;
- ``model-before-tasks``, ``model-multi-label-before-tasks``: the release before the task
  object (``sparkles.tasks``), single-label (``drop``) and ``multi-label``.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from tests.images import encode, photo

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
LOGGED = ["model-flat-layout", "model-before-tasks", "model-multi-label-before-tasks"]


@pytest.fixture(scope="module")
def request_frame() -> pd.DataFrame:
    contents = [encode(photo(120, 90, seed=seed)) for seed in (1, 2, 3)] + [b"not pixels"]
    return pd.DataFrame({"path": [f"{i}.jpg" for i in range(4)], "content": contents})


def _expected(name: str) -> dict:
    return json.loads((FIXTURES / name / "expected.json").read_text())


@pytest.mark.parametrize("name", LOGGED)
def test_its_jvm_free_flavour_answers_as_it_did(name: str, request_frame) -> None:
    answer = mlflow.pyfunc.load_model(str(FIXTURES / name)).predict(request_frame)
    before = pd.DataFrame(_expected(name)["pyfunc"])
    assert list(answer.columns) == list(before.columns)
    said = "predicted_labels" if "predicted_labels" in before else "prediction"
    assert list(answer[said]) == list(before[said])
    assert list(answer["featurize_error"]) == list(before["featurize_error"])
    for column in ("probability_Car", "probability_Tree"):
        now, then = answer[column].astype(float), before[column].astype(float)
        np.testing.assert_allclose(now, then, rtol=1e-4, equal_nan=True)


@pytest.mark.parametrize("name", LOGGED)
def test_its_spark_flavour_loads_and_scores_as_it_did(name: str, spark, request_frame) -> None:
    model = mlflow.spark.load_model(str(FIXTURES / name))
    expected = _expected(name)
    said = "predicted_labels" if "predicted_labels" in expected["pyfunc"][0] else "prediction"
    rows = model.transform(spark.createDataFrame(request_frame))
    answers = {
        r.path: r for r in rows.select("path", said, "probability", "featurize_error").collect()
    }
    for path, answer, probability, error in expected["spark"]:
        row = answers[path]
        assert (row[said], row.featurize_error) == (answer, error)
        if probability is None:
            assert row.probability is None
        else:
            np.testing.assert_allclose(row.probability.toArray(), probability, rtol=1e-4)
