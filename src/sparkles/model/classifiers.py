"""The classifier kinds trained on cached features, in one registry (``KINDS``).

``logistic`` is the 2019 study's penalized LogisticRegression; ``mlp`` is its Future Work,
Spark's MultilayerPerceptronClassifier (sigmoid hidden layers, softmax output). A kind
(``kinds.ClassifierKind``) knows its whole life: its searchable parameters (a dict keyed by
Spark's own Param names: ``regParam``, ``elasticNetParam``; ``layers`` (the hidden sizes only),
``stepSize``, ``maxIter``), its fixed ones, its profile sections (``tune.<kind>.grid``,
``tune.<kind>.hyperopt``, ``train.<kind>``), its Spark stages, grid and hyperopt space, the plot
of a search, and its fitted form as plain numbers with the probabilities computed from them
without Spark (what the JVM-free scorer runs). A third kind is one more class here.
"""

from __future__ import annotations

import itertools
import math
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import Field, model_validator

from sparkles.config import ConfigError, Profile, TrainConfig, TuneConfig
from sparkles.model.kinds import ClassifierKind, Columns, Numbers, Params, SearchAxes, Section

if TYPE_CHECKING:
    from pyspark.ml import Estimator, Transformer

SCALED_FEATURES = "scaled_features"


def _softmax(margins: np.ndarray) -> np.ndarray:
    shifted = np.exp(margins - margins.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


class Logistic(ClassifierKind):
    """Its fixed values are ``train``'s own (``reg_param``, ``elastic_net_param``, ``max_iter``,
    ``tol``, ``standardization``: the study's, and the MLproject's parameters)."""

    name = "logistic"
    search_axes = SearchAxes("regParam", True, "elasticNetParam")

    class Grid(Section):
        renamed = {"regParam": "reg_param", "elasticNetParam": "elastic_net_param"}  # 0.2's
        reg_param: list[float] = Field(default_factory=lambda: [0.001, 0.01, 0.1], min_length=1)
        elastic_net_param: list[float] = Field(
            default_factory=lambda: [0.0, 0.5, 1.0], min_length=1
        )

        @model_validator(mode="after")
        def _in_range(self) -> Logistic.Grid:
            if any(v < 0 for v in self.reg_param):
                raise ValueError(f"reg_param values must be >= 0, got {self.reg_param}")
            if any(not 0 <= v <= 1 for v in self.elastic_net_param):
                raise ValueError(
                    f"elastic_net_param values must be in [0, 1], got {self.elastic_net_param}"
                )
            return self

    class Hyperopt(Section):
        """regParam is searched log-uniformly, elasticNetParam uniformly."""

        reg_param_min: float = Field(default=1e-4, gt=0)
        reg_param_max: float = Field(default=1.0, gt=0)
        renamed = {
            "elastic_net_min": "elastic_net_param_min",
            "elastic_net_max": "elastic_net_param_max",
        }  # 0.2's
        elastic_net_param_min: float = Field(default=0.0, ge=0, le=1)
        elastic_net_param_max: float = Field(default=1.0, ge=0, le=1)

        @model_validator(mode="after")
        def _ordered(self) -> Logistic.Hyperopt:
            if self.reg_param_min >= self.reg_param_max:
                raise ValueError(
                    f"reg_param_min ({self.reg_param_min}) must be below reg_param_max "
                    f"({self.reg_param_max})"
                )
            if self.elastic_net_param_min > self.elastic_net_param_max:
                raise ValueError(
                    f"elastic_net_param_min ({self.elastic_net_param_min}) must not exceed "
                    f"elastic_net_param_max ({self.elastic_net_param_max})"
                )
            return self

    def default_params(self, settings: TrainConfig) -> Params:
        return {"regParam": settings.reg_param, "elasticNetParam": settings.elastic_net_param}

    def fixed_params(self, settings: TrainConfig) -> Params:
        return {
            "maxIter": settings.max_iter,
            "tol": settings.tol,
            "standardization": settings.standardization,
        }

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
        grid = self.grid(tune)
        return [
            {"regParam": reg, "elasticNetParam": mix}
            for reg, mix in itertools.product(grid.reg_param, grid.elastic_net_param)
        ]

    def hyperopt_space(self, settings: TrainConfig, tune: TuneConfig) -> dict[str, Any]:
        """regParam log-uniform, elasticNetParam uniform."""
        from hyperopt import hp

        bounds = self.hyperopt(tune)
        return {
            "regParam": hp.loguniform(
                "regParam", math.log(bounds.reg_param_min), math.log(bounds.reg_param_max)
            ),
            "elasticNetParam": hp.uniform(
                "elasticNetParam", bounds.elastic_net_param_min, bounds.elastic_net_param_max
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

    class Settings(Section):
        """``train.mlp``: sigmoid hidden layers, a softmax output layer."""

        # hidden layer sizes; the input (feature length) and output (class count) come from
        # the data
        layers: list[int] = Field(default_factory=lambda: [64], min_length=1)
        solver: Literal["l-bfgs", "gd"] = "l-bfgs"
        step_size: float = Field(default=0.03, gt=0)  # Spark applies it with solver gd only
        max_iter: int = Field(default=100, ge=1)
        block_size: int = Field(default=128, ge=1)
        seed: int = 42

        @model_validator(mode="after")
        def _positive(self) -> Perceptron.Settings:
            if any(size < 1 for size in self.layers):
                raise ValueError(f"hidden layer sizes must be >= 1, got {self.layers}")
            return self

    class Grid(Section):
        layers: list[list[int]] = Field(default_factory=lambda: [[64], [128, 32]], min_length=1)
        renamed = {"stepSize": "step_size", "maxIter": "max_iter"}  # 0.2's
        step_size: list[float] = Field(default_factory=lambda: [0.03], min_length=1)
        max_iter: list[int] = Field(default_factory=lambda: [50, 100], min_length=1)

        @model_validator(mode="after")
        def _in_range(self) -> Perceptron.Grid:
            if any(not layers or min(layers) < 1 for layers in self.layers):
                raise ValueError(
                    f"layers: every choice is a non-empty list of sizes >= 1: {self.layers}"
                )
            if any(v <= 0 for v in self.step_size) or any(v < 1 for v in self.max_iter):
                raise ValueError("step_size values must be > 0 and max_iter values >= 1")
            return self

    class Hyperopt(Section):
        """layers is a choice, stepSize log-uniform (searched with solver gd only), maxIter a
        uniform integer."""

        layers: list[list[int]] = Field(
            default_factory=lambda: [[64], [128], [128, 32]], min_length=1
        )
        step_size_min: float = Field(default=0.003, gt=0)
        step_size_max: float = Field(default=0.3, gt=0)
        max_iter_min: int = Field(default=30, ge=1)
        max_iter_max: int = Field(default=200, ge=1)

        @model_validator(mode="after")
        def _ordered(self) -> Perceptron.Hyperopt:
            if self.step_size_min >= self.step_size_max or self.max_iter_min > self.max_iter_max:
                raise ValueError(
                    "step_size_min must be below step_size_max, max_iter_min <= max_iter_max"
                )
            if any(not layers or min(layers) < 1 for layers in self.layers):
                raise ValueError(
                    f"layers: every choice is a non-empty list of sizes >= 1: {self.layers}"
                )
            return self

    def default_params(self, settings: TrainConfig) -> Params:
        mlp = self.settings(settings)
        return {"layers": list(mlp.layers), "stepSize": mlp.step_size, "maxIter": mlp.max_iter}

    def fixed_params(self, settings: TrainConfig) -> Params:
        mlp = self.settings(settings)
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
        grid = self.grid(tune)
        return [
            {"layers": list(layers), "stepSize": step, "maxIter": iters}
            for layers, step, iters in itertools.product(grid.layers, grid.step_size, grid.max_iter)
        ]

    def hyperopt_space(self, settings: TrainConfig, tune: TuneConfig) -> dict[str, Any]:
        """layers a choice, maxIter a uniform integer; stepSize log-uniform with solver gd only:
        Spark's l-bfgs ignores it, and a search over a parameter with no effect wastes trials."""
        from hyperopt import hp

        space, mlp = self.hyperopt(tune), self.settings(settings)
        step: Any = mlp.step_size
        if mlp.solver == "gd":
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


def kind_named(name: str, source: str = "") -> ClassifierKind:
    if name not in KINDS:
        raise ConfigError(
            f"{source or 'profile'}: key 'train.classifier': {name!r} is not a classifier kind "
            f"(one of {', '.join(sorted(KINDS))})"
        )
    return KINDS[name]


def kind_of(settings: TrainConfig) -> ClassifierKind:
    """The profile's classifier kind."""
    return kind_named(settings.classifier)


def check_profile(profile: Profile) -> Profile:
    """The classifier part of a profile, checked before Spark starts (the CLI does it): the
    kind exists, every ``train.<kind>``/``tune.<kind>`` names one, and each kind's sections
    hold what it declares."""
    kind_named(profile.train.classifier, profile.source)
    for section, model in (("train", profile.train), ("tune", profile.tune)):
        for key in model.model_extra or {}:
            if key not in KINDS:
                raise ConfigError(
                    f"{profile.source or 'profile'}: unknown key '{section}.{key}': a "
                    f"classifier's section is one of {', '.join(sorted(KINDS))}"
                )
    for kind in KINDS.values():
        kind.check(profile.train, profile.tune, profile.source)
    return profile


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
