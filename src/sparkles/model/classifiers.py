"""The classifier kinds trained on cached features, in one registry (``KINDS``).

``logistic`` is the 2019 study's penalized LogisticRegression; ``mlp`` is its Future Work,
Spark's MultilayerPerceptronClassifier (sigmoid hidden layers, softmax output). A kind knows its
whole life: its searchable parameters (a dict keyed by Spark's own Param names: ``regParam``,
``elasticNetParam``; ``layers`` (the hidden sizes only), ``stepSize``, ``maxIter``), its fixed
ones from the profile's ``train`` section, its Spark stages, grid and hyperopt space, the plot
of a search, and its fitted form as plain numbers with the probabilities computed from them
without Spark (what the JVM-free scorer runs). A third kind is one more class here.

pyspark and hyperopt are imported where a method needs them: ``serving`` imports this module
and must run where pyspark cannot load.
"""

from __future__ import annotations

import itertools
import math
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

import numpy as np

from sparkles.config import TrainConfig, TuneConfig

if TYPE_CHECKING:
    from pyspark.ml import Estimator, Transformer

Params = dict[str, Any]
Numbers = dict[str, Any]  # a fitted classifier as JSON-able numbers (serving/classifier.json)
SCALED_FEATURES = "scaled_features"


class SearchAxes(NamedTuple):
    """What a search plot puts on its x axis (log scale?), its colour, and beside each point."""

    x: str
    x_log: bool
    colour: str
    label: str | None = None


class Columns(NamedTuple):
    features: str
    label: str
    prediction: str


class ClassifierKind:
    """One kind of classifier; subclasses fill in every method."""

    name: ClassVar[str]
    search_axes: ClassVar[SearchAxes]

    def default_params(self, settings: TrainConfig) -> Params:
        """The profile's own values of the searchable parameters."""
        raise NotImplementedError

    def fixed_params(self, settings: TrainConfig) -> Params:
        """The profile's values of what is not searched, logged by Spark Param name."""
        raise NotImplementedError

    def stages(
        self, settings: TrainConfig, params: Params, sizes: tuple[int, int], columns: Columns
    ) -> list[Estimator]:
        """The unfitted stages after the label indexer; ``sizes``: (features, classes)."""
        raise NotImplementedError

    def grid_points(self, settings: TrainConfig, tune: TuneConfig) -> list[Params]:
        """Every point of the grid, in a fixed order."""
        raise NotImplementedError

    def hyperopt_space(self, settings: TrainConfig, tune: TuneConfig) -> dict[str, Any]:
        raise NotImplementedError

    def from_sample(self, sample: dict[str, Any]) -> Params:
        """A hyperopt sample as parameters: integers where Spark wants them, lists not tuples."""
        raise NotImplementedError

    def fitted(self, stages: list[Transformer]) -> Transformer | None:
        """This kind's fitted model among a pipeline's stages, if it is there."""
        raise NotImplementedError

    def numbers(self, stages: list[Transformer]) -> Numbers:
        """The fitted classifier as plain numbers (with ``kind``), for the JVM-free scorer."""
        raise NotImplementedError

    def probabilities(self, numbers: Numbers, features: np.ndarray) -> np.ndarray:
        """(n, classes) probabilities from ``numbers``, as Spark computes them."""
        raise NotImplementedError

    def input_length(self, numbers: Numbers) -> int:
        raise NotImplementedError


def _softmax(margins: np.ndarray) -> np.ndarray:
    shifted = np.exp(margins - margins.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


class Logistic(ClassifierKind):
    name = "logistic"
    search_axes = SearchAxes("regParam", True, "elasticNetParam")

    def default_params(self, settings: TrainConfig) -> Params:
        return {"regParam": settings.reg_param, "elasticNetParam": settings.elastic_net_param}

    def fixed_params(self, settings: TrainConfig) -> Params:
        return {"maxIter": settings.max_iter, "tol": settings.tol,
                "standardization": settings.standardization}  # fmt: skip

    def stages(
        self, settings: TrainConfig, params: Params, sizes: tuple[int, int], columns: Columns
    ) -> list[Estimator]:
        from pyspark.ml.classification import LogisticRegression

        logistic = LogisticRegression(
            featuresCol=columns.features,
            labelCol=columns.label,
            predictionCol=columns.prediction,
            regParam=float(params["regParam"]),
            elasticNetParam=float(params["elasticNetParam"]),
            **self.fixed_params(settings),
        )
        return [logistic]

    def grid_points(self, settings: TrainConfig, tune: TuneConfig) -> list[Params]:
        grid = tune.grid
        return [
            {"regParam": reg, "elasticNetParam": mix}
            for reg, mix in itertools.product(grid.regParam, grid.elasticNetParam)
        ]

    def hyperopt_space(self, settings: TrainConfig, tune: TuneConfig) -> dict[str, Any]:
        """regParam log-uniform, elasticNetParam uniform."""
        from hyperopt import hp

        bounds = tune.hyperopt
        return {
            "regParam": hp.loguniform(
                "regParam", math.log(bounds.reg_param_min), math.log(bounds.reg_param_max)
            ),
            "elasticNetParam": hp.uniform(
                "elasticNetParam", bounds.elastic_net_min, bounds.elastic_net_max
            ),
        }

    def from_sample(self, sample: dict[str, Any]) -> Params:
        return {name: float(sample[name]) for name in ("regParam", "elasticNetParam")}

    def fitted(self, stages: list[Transformer]) -> Transformer | None:
        from pyspark.ml.classification import LogisticRegressionModel

        return next((s for s in stages if isinstance(s, LogisticRegressionModel)), None)

    def numbers(self, stages: list[Transformer]) -> Numbers:
        found = self.fitted(stages)
        matrix = found.coefficientMatrix
        return {
            "kind": self.name,
            "coefficients": np.asarray(matrix.toArray()).tolist(),
            "intercepts": np.asarray(found.interceptVector.toArray()).tolist(),
            "multinomial": found.getFamily() == "multinomial" or matrix.numRows > 1,
        }

    def probabilities(self, numbers: Numbers, features: np.ndarray) -> np.ndarray:
        coefficients = np.asarray(numbers["coefficients"], dtype=np.float64)
        intercepts = np.asarray(numbers["intercepts"], dtype=np.float64)
        margins = features.astype(np.float64) @ coefficients.T + intercepts
        if not numbers["multinomial"]:
            # binomial: a sigmoid of the one margin (class 1 = labels[1])
            positive = 1.0 / (1.0 + np.exp(-margins[:, 0]))
            return np.stack([1.0 - positive, positive], axis=1)
        return _softmax(margins)

    def input_length(self, numbers: Numbers) -> int:
        return len(numbers["coefficients"][0])


class Perceptron(ClassifierKind):
    """An MLP's input and output layers are the data's sizes; with ``standardization`` (as the
    logistic regression does internally) its features are scaled to unit variance first, or its
    sigmoids saturate on raw CNN features."""

    name = "mlp"
    search_axes = SearchAxes("maxIter", False, "stepSize", label="layers")

    def default_params(self, settings: TrainConfig) -> Params:
        mlp = settings.mlp
        return {"layers": list(mlp.layers), "stepSize": mlp.step_size, "maxIter": mlp.max_iter}

    def fixed_params(self, settings: TrainConfig) -> Params:
        mlp = settings.mlp
        return {"solver": mlp.solver, "blockSize": mlp.block_size, "seed": mlp.seed}

    def stages(
        self, settings: TrainConfig, params: Params, sizes: tuple[int, int], columns: Columns
    ) -> list[Estimator]:
        from pyspark.ml.classification import MultilayerPerceptronClassifier
        from pyspark.ml.feature import StandardScaler

        n_features, n_classes = sizes
        scaled, scaler = columns.features, []
        if settings.standardization:
            scaled = SCALED_FEATURES
            scaler = [StandardScaler(inputCol=columns.features, outputCol=scaled, withMean=True)]
        perceptron = MultilayerPerceptronClassifier(
            featuresCol=scaled,
            labelCol=columns.label,
            predictionCol=columns.prediction,
            layers=[n_features, *params["layers"], n_classes],
            stepSize=float(params["stepSize"]),
            maxIter=int(params["maxIter"]),
            **self.fixed_params(settings),
        )
        return [*scaler, perceptron]

    def grid_points(self, settings: TrainConfig, tune: TuneConfig) -> list[Params]:
        grid = tune.mlp.grid
        return [
            {"layers": list(layers), "stepSize": step, "maxIter": iters}
            for layers, step, iters in itertools.product(grid.layers, grid.stepSize, grid.maxIter)
        ]

    def hyperopt_space(self, settings: TrainConfig, tune: TuneConfig) -> dict[str, Any]:
        """layers a choice, maxIter a uniform integer; stepSize log-uniform with solver gd only:
        Spark's l-bfgs ignores it, and a search over a parameter with no effect wastes trials."""
        from hyperopt import hp

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

    def from_sample(self, sample: dict[str, Any]) -> Params:
        return {
            "layers": [int(size) for size in sample["layers"]],
            "stepSize": float(sample["stepSize"]),
            "maxIter": int(sample["maxIter"]),
        }

    def fitted(self, stages: list[Transformer]) -> Transformer | None:
        from pyspark.ml.classification import MultilayerPerceptronClassificationModel

        kind = MultilayerPerceptronClassificationModel
        return next((s for s in stages if isinstance(s, kind)), None)

    def numbers(self, stages: list[Transformer]) -> Numbers:
        from pyspark.ml.feature import StandardScalerModel

        found = self.fitted(stages)
        scaling = {}
        scalers = [stage for stage in stages if isinstance(stage, StandardScalerModel)]
        if scalers:  # at most one: stages() adds it with `standardization`
            (scaler,) = scalers
            scaling = {"mean": scaler.mean.toArray().tolist(), "std": scaler.std.toArray().tolist()}
        return {
            "kind": self.name,
            "layers": list(found.getLayers()),
            "weights": np.asarray(found.weights.toArray()).tolist(),
            **scaling,
        }

    def probabilities(self, numbers: Numbers, features: np.ndarray) -> np.ndarray:
        """Spark's MultilayerPerceptronClassificationModel (after its StandardScalerModel, when
        the pipeline has one): affine layers, sigmoid between them, softmax on top. Its flat
        weight vector holds, per layer, the (out × in) matrix in column-major order (so a
        row-major (in, out) array) followed by the out biases."""
        weights = np.asarray(numbers["weights"], dtype=np.float64)
        sizes = numbers["layers"]
        activations, offset = features.astype(np.float64), 0
        if "mean" in numbers:  # Spark's StandardScalerModel: a feature of zero spread becomes 0
            std = np.asarray(numbers["std"], dtype=np.float64)
            centred = activations - np.asarray(numbers["mean"], dtype=np.float64)
            activations = np.divide(centred, std, out=np.zeros_like(centred), where=std != 0)
        for depth, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            matrix = weights[offset : offset + fan_in * fan_out].reshape(fan_in, fan_out)
            offset += fan_in * fan_out
            bias = weights[offset : offset + fan_out]
            offset += fan_out
            activations = activations @ matrix + bias
            if depth < len(sizes) - 2:
                activations = 1.0 / (1.0 + np.exp(-activations))
        if offset != weights.size:
            raise ValueError(f"{weights.size} weights do not fit layers {sizes}")
        return _softmax(activations)

    def input_length(self, numbers: Numbers) -> int:
        return int(numbers["layers"][0])


KINDS: dict[str, ClassifierKind] = {kind.name: kind for kind in (Logistic(), Perceptron())}


def kind_of(settings: TrainConfig) -> ClassifierKind:
    """The profile's classifier kind."""
    return KINDS[settings.classifier]


def kind_of_numbers(numbers: Numbers) -> ClassifierKind:
    """The kind a logged classifier.json holds (models logged before the MLP have no kind)."""
    return KINDS[numbers.get("kind", Logistic.name)]


def kind_of_fitted(stages: list[Transformer]) -> ClassifierKind:
    """The kind whose fitted model is among ``stages``."""
    found = [kind for kind in KINDS.values() if kind.fitted(stages) is not None]
    if len(found) != 1:
        raise TypeError(f"expected one fitted classifier of {sorted(KINDS)}, found {len(found)}")
    return found[0]


def default_params(settings: TrainConfig) -> Params:
    return kind_of(settings).default_params(settings)


def grid_points(settings: TrainConfig, tune: TuneConfig) -> list[Params]:
    return kind_of(settings).grid_points(settings, tune)


def hyperopt_space(settings: TrainConfig, tune: TuneConfig) -> dict[str, Any]:
    return kind_of(settings).hyperopt_space(settings, tune)


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
