"""The classifiers trained on cached features, their parameters and their search spaces.

``logistic`` is the 2019 study's penalized LogisticRegression; ``mlp`` is its Future Work,
Spark's MultilayerPerceptronClassifier (sigmoid hidden layers, softmax output). A classifier's
searchable parameters travel as a dict keyed by Spark's own Param names: ``regParam``,
``elasticNetParam`` for logistic; ``layers`` (the hidden sizes only), ``stepSize``, ``maxIter``
for mlp. Everything else comes from the profile's ``train`` section.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

from hyperopt import hp
from pyspark.ml import Estimator
from pyspark.ml.classification import LogisticRegression, MultilayerPerceptronClassifier
from pyspark.ml.feature import StandardScaler

from sparkles.config import TrainConfig, TuneConfig

Params = dict[str, Any]
SCALED_FEATURES = "scaled_features"
# what a search plot puts on its x axis (log scale?) and its colour, per classifier
SEARCH_AXES = {
    "logistic": ("regParam", True, "elasticNetParam"),
    "mlp": ("maxIter", False, "stepSize"),
}


def default_params(settings: TrainConfig) -> Params:
    """The profile's own values of the searchable parameters."""
    if settings.classifier == "mlp":
        mlp = settings.mlp
        return {"layers": list(mlp.layers), "stepSize": mlp.step_size, "maxIter": mlp.max_iter}
    return {"regParam": settings.reg_param, "elasticNetParam": settings.elastic_net_param}


def stages(
    settings: TrainConfig,
    params: Params,
    n_features: int,
    n_classes: int,
    features: str,
    label: str,
    prediction: str,
) -> list[Estimator]:
    """The unfitted stages after the label indexer. An MLP's input and output layers are the
    data's sizes; with ``standardization`` (as the logistic regression does internally) its
    features are scaled to unit variance first, or its sigmoids saturate on raw CNN features."""
    columns = {"labelCol": label, "predictionCol": prediction}
    if settings.classifier == "mlp":
        mlp, scaled = settings.mlp, features
        scaler: list[Estimator] = []
        if settings.standardization:
            scaled = SCALED_FEATURES
            scaler = [StandardScaler(inputCol=features, outputCol=scaled, withMean=True)]
        return [
            *scaler,
            MultilayerPerceptronClassifier(
                **columns,
                featuresCol=scaled,
                layers=[n_features, *params["layers"], n_classes],
                stepSize=float(params["stepSize"]),
                maxIter=int(params["maxIter"]),
                solver=mlp.solver,
                blockSize=mlp.block_size,
                seed=mlp.seed,
            ),
        ]
    logistic = LogisticRegression(
        **columns,
        featuresCol=features,
        regParam=float(params["regParam"]),
        elasticNetParam=float(params["elasticNetParam"]),
        maxIter=settings.max_iter,
        tol=settings.tol,
        standardization=settings.standardization,
    )
    return [logistic]


def grid_points(settings: TrainConfig, tune: TuneConfig) -> list[Params]:
    """Every point of the classifier's grid, in a fixed order."""
    if settings.classifier == "mlp":
        grid = tune.mlp.grid
        return [
            {"layers": list(layers), "stepSize": step, "maxIter": iters}
            for layers, step, iters in itertools.product(grid.layers, grid.stepSize, grid.maxIter)
        ]
    return [
        {"regParam": reg, "elasticNetParam": mix}
        for reg, mix in itertools.product(tune.grid.regParam, tune.grid.elasticNetParam)
    ]


def hyperopt_space(settings: TrainConfig, tune: TuneConfig) -> dict[str, Any]:
    """The TPE search space. An MLP's stepSize is searched only with solver gd: Spark's l-bfgs
    ignores it, and a search over a parameter with no effect wastes trials."""
    if settings.classifier == "mlp":
        space = tune.mlp.hyperopt
        step: Any = settings.mlp.step_size
        if settings.mlp.solver == "gd":
            step = hp.loguniform(
                "stepSize", math.log(space.step_size_min), math.log(space.step_size_max)
            )
        return {
            "layers": hp.choice("layers", [list(layers) for layers in space.layers]),
            "stepSize": step,
            "maxIter": hp.quniform("maxIter", space.max_iter_min, space.max_iter_max, 1),
        }
    bounds = tune.hyperopt
    return {
        "regParam": hp.loguniform(
            "regParam", math.log(bounds.reg_param_min), math.log(bounds.reg_param_max)
        ),
        "elasticNetParam": hp.uniform(
            "elasticNetParam", bounds.elastic_net_min, bounds.elastic_net_max
        ),
    }


def from_sample(sample: dict[str, Any]) -> Params:
    """A hyperopt sample as parameters: integers where Spark wants them, lists not tuples."""
    params = {k: float(v) for k, v in sample.items() if k in ("regParam", "elasticNetParam")}
    if "layers" in sample:
        params["layers"] = [int(size) for size in sample["layers"]]
        params["stepSize"] = float(sample["stepSize"])
        params["maxIter"] = int(sample["maxIter"])
    return params


def loggable(params: Params) -> dict[str, float | int | str]:
    """Parameters as MLflow params: hidden layers as ``64-32``."""
    return {k: "-".join(map(str, v)) if isinstance(v, list) else v for k, v in params.items()}


def parse_logged(logged: dict[str, str]) -> Params:
    """``loggable``'s inverse, for parameters read back from MLflow (all strings)."""
    parsed: Params = {}
    for name, value in logged.items():
        if name == "layers":
            parsed[name] = [int(size) for size in str(value).split("-")]
        elif name == "maxIter":
            parsed[name] = int(value)
        else:
            parsed[name] = float(value)
    return parsed


def describe(params: Params) -> str:
    return " ".join(
        f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in loggable(params).items()
    )
