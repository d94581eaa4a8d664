"""A third classifier kind is one class: registered, it has its profile sections
(``train.<kind>``, ``tune.<kind>.grid``/``.hyperopt``) checked with errors naming the key, its
grid and hyperopt space, its MLflow params, its Spark stages in the training pipeline and its
JVM-free probabilities, with nothing else edited. The throwaway kind: Spark's NaiveBayes."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pytest
from hyperopt.pyll import stochastic
from pydantic import Field

from sparkles.config import ConfigError, load_profile
from sparkles.model import classifiers
from sparkles.model.kinds import ClassifierKind, SearchAxes, Section
from sparkles.tracking import loggable
from tests.conftest import write_profile


class Bayes(ClassifierKind):
    name = "bayes"
    search_axes = SearchAxes("smoothing", True, "smoothing")

    class Settings(Section):
        model_type: Literal["multinomial", "complement"] = "multinomial"

    class Grid(Section):
        smoothing: list[float] = Field(default_factory=lambda: [0.5, 1.0], min_length=1)

    class Hyperopt(Section):
        smoothing_min: float = Field(default=0.1, gt=0)
        smoothing_max: float = Field(default=2.0, gt=0)

    def default_params(self, settings):
        return {"smoothing": 1.0}

    def fixed_params(self, settings):
        return {"modelType": self.settings(settings).model_type}

    def stages(self, settings, params, sizes, columns):
        from pyspark.ml.classification import NaiveBayes

        return [
            NaiveBayes(
                featuresCol=columns.features,
                labelCol=columns.label,
                predictionCol=columns.prediction,
                smoothing=float(params["smoothing"]),
                **self.fixed_params(settings),
            )
        ]

    def grid_points(self, settings, tune):
        return [{"smoothing": value} for value in self.grid(tune).smoothing]

    def hyperopt_space(self, settings, tune):
        from hyperopt import hp

        bounds = self.hyperopt(tune)
        return {"smoothing": hp.uniform("smoothing", bounds.smoothing_min, bounds.smoothing_max)}

    def from_sample(self, sample: dict[str, Any]):
        return {"smoothing": float(sample["smoothing"])}

    def fitted(self, stages):
        from pyspark.ml.classification import NaiveBayesModel

        return next((stage for stage in stages if isinstance(stage, NaiveBayesModel)), None)

    def numbers(self, stages):
        found = self.fitted(stages)
        return {
            "kind": self.name,
            "pi": found.pi.toArray().tolist(),
            "theta": found.theta.toArray().tolist(),
        }

    def probabilities(self, numbers, features):
        logits = features @ np.asarray(numbers["theta"]).T + np.asarray(numbers["pi"])
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        return shifted / shifted.sum(axis=1, keepdims=True)

    def input_length(self, numbers):
        return len(numbers["theta"][0])


@pytest.fixture
def bayes(monkeypatch) -> Bayes:
    kind = Bayes()
    monkeypatch.setitem(classifiers.KINDS, kind.name, kind)
    return kind


def _profile(tmp_path, *overrides: str):
    path = str(write_profile(tmp_path))
    return classifiers.check_profile(load_profile(path, ["train.classifier=bayes", *overrides]))


def test_its_sections_spaces_and_params(tmp_path, bayes: Bayes) -> None:
    profile = _profile(
        tmp_path, "tune.bayes.grid.smoothing=[0.2, 2.0]", "train.bayes.model_type=complement"
    )
    assert classifiers.kind_of(profile.train) is bayes
    assert classifiers.grid_points(profile.train, profile.tune) == [
        {"smoothing": 0.2},
        {"smoothing": 2.0},
    ]
    assert bayes.fixed_params(profile.train) == {"modelType": "complement"}
    space = classifiers.hyperopt_space(profile.train, profile.tune)
    sample = bayes.from_sample(stochastic.sample(space, rng=np.random.default_rng(0)))
    assert 0.1 <= sample["smoothing"] <= 2.0
    assert bayes.parse_logged({k: str(v) for k, v in loggable(sample).items()}) == sample
    # its sections are checked as every profile key is, naming the key
    with pytest.raises(ConfigError, match="tune.bayes.grid.smoothing"):
        _profile(tmp_path, "tune.bayes.grid.smoothing=often")
    with pytest.raises(ConfigError, match="train.bayes.model_type"):
        _profile(tmp_path, "train.bayes.model_type=gaussian-ish")
    with pytest.raises(ConfigError, match="unknown key 'tune.bayes.grid.smoothin'"):
        _profile(tmp_path, "tune.bayes.grid.smoothin=[1.0]")


def test_without_it_its_sections_are_refused(tmp_path) -> None:
    with pytest.raises(ConfigError, match="'bayes' is not a classifier kind"):
        _profile(tmp_path)
    path = str(write_profile(tmp_path))
    with pytest.raises(ConfigError, match="unknown key 'tune.bayes'"):
        classifiers.check_profile(load_profile(path, ["tune.bayes.grid.smoothing=[1.0]"]))
    with pytest.raises(ConfigError, match=r"'tune.grid' is now 'tune.logistic.grid'"):
        load_profile(path, ["tune.grid.regParam=[1.0]"])  # before 0.2's layout: refused at load


def test_it_trains_in_the_pipeline_and_scores_without_spark(spark, tmp_path, bayes) -> None:
    from pyspark.ml.linalg import Vectors

    from sparkles.model.stages import training_pipeline
    from sparkles.tasks.catalog import task_for

    profile = _profile(tmp_path)
    rng = np.random.default_rng(1)
    rows = [
        (
            Vectors.dense(rng.random(4) + (2 * i % 2) * np.array([1, 0, 0, 1])),
            "Car" if i % 2 else "Tree",
        )
        for i in range(40)
    ]
    frame = spark.createDataFrame(rows, ["features", "label"])
    pipeline = training_pipeline(
        profile.train, bayes.default_params(profile.train), n_features=4, n_classes=2
    )
    fitted = pipeline.fit(frame)
    numbers = task_for(profile).classifier_parameters(fitted)
    assert numbers["kind"] == "bayes" and numbers["labels"] == ["Car", "Tree"]
    scored = fitted.transform(frame).select("features", "probability").collect()
    features = np.array([row.features.toArray() for row in scored])
    expected = np.array([row.probability.toArray() for row in scored])
    computed = classifiers.kind_of_numbers(numbers).probabilities(numbers, features)
    np.testing.assert_allclose(computed, expected, rtol=1e-9, atol=1e-12)
