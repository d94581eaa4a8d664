"""Multi-label classifiers in Spark ML: one binary classifier per class on the same features,
and ``LabelSet``, the stage that turns their answers into a set of classes per image.

A multi-label pipeline is ``[StandardScaler (an MLP's, once)] → one classifier per class →
LabelSet``: every stage is Spark's own, so the pipeline saves, loads and scores like the
single-label one. Each class's classifier is the profile's kind (logistic or perceptron) with
the **same** searchable parameters: a search over two numbers stays a search over two numbers,
whatever the number of classes; each class's imbalance is met by its own threshold, chosen on
the validation split (``train.label_sets.choose_thresholds``), never on the test split.
"""

from __future__ import annotations

from typing import Any

from pyspark import keyword_only
from pyspark.ml import Pipeline, PipelineModel, Transformer
from pyspark.ml.classification import ProbabilisticClassificationModel, ProbabilisticClassifier
from pyspark.ml.functions import array_to_vector, vector_to_array
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.util import DefaultParamsReadable, DefaultParamsWritable
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from sparkles.config import TrainConfig
from sparkles.model import classifiers, kinds
from sparkles.names import FEATURES, IMAGE_ID, LABEL, LABELS, PREDICTED_LABELS

RAW, PROBABILITY = "rawPrediction", "probability"
OUTPUTS = [RAW, PROBABILITY, PREDICTED_LABELS]
DEFAULT_THRESHOLD = 0.5


def target_column(index: int) -> str:
    """1.0 where the image carries class ``index``, else 0.0: that class's binary label."""
    return f"target_{index}"


def _per_class(index: int) -> tuple[str, str, str]:
    """(rawPrediction, probability, prediction) columns of class ``index``'s classifier."""
    return f"raw_{index}", f"probability_{index}", f"prediction_{index}"


def label_sets(rows: DataFrame) -> DataFrame:
    """One row per image with ``labels``, its sorted set of classes, from the training table's
    one row per (image, class)."""
    sets = rows.groupBy(IMAGE_ID).agg(F.array_sort(F.collect_set(LABEL)).alias(LABELS))
    return rows.drop(LABEL).dropDuplicates([IMAGE_ID]).join(sets, IMAGE_ID)


def with_targets(images: DataFrame, labels: list[str]) -> DataFrame:
    """Adds each class's binary label (``target_column``) from ``labels``."""
    return images.select(
        "*",
        *[
            F.array_contains(LABELS, name).cast("double").alias(target_column(index))
            for index, name in enumerate(labels)
        ],
    )


class LabelSet(Transformer, DefaultParamsReadable, DefaultParamsWritable):
    """Per-class classifier outputs → ``probability`` (P(class k) for each k, a vector),
    ``rawPrediction`` (each classifier's margin raw[1] − raw[0], what AUC ranks) and
    ``predicted_labels`` (the classes whose probability reaches their threshold, in label
    order). Every image in a training table carries a class (it entered by one), so when no
    class reaches its threshold the likeliest is said (``atLeastOne``, on by default) rather
    than the empty set, which is never right there. The per-class columns are dropped."""

    labels = Param(Params._dummy(), "labels", "class names", TypeConverters.toListString)
    thresholds = Param(
        Params._dummy(),
        "thresholds",
        "P(class) at which each class is said",
        TypeConverters.toListFloat,
    )
    atLeastOne = Param(
        Params._dummy(),
        "atLeastOne",
        "say the likeliest class when none reaches its threshold",
        TypeConverters.toBoolean,
    )

    @keyword_only
    def __init__(
        self,
        *,
        labels: list[str] | None = None,
        thresholds: list[float] | None = None,
        atLeastOne: bool = True,
    ) -> None:
        super().__init__()
        self._setDefault(labels=[], thresholds=[], atLeastOne=True)
        self._set(**self._input_kwargs)

    @keyword_only
    def setParams(
        self,
        *,
        labels: list[str] | None = None,
        thresholds: list[float] | None = None,
        atLeastOne: bool = True,
    ) -> LabelSet:
        return self._set(**self._input_kwargs)

    def getLabels(self) -> list[str]:
        return self.getOrDefault(self.labels)

    def getThresholds(self) -> list[float]:
        thresholds = self.getOrDefault(self.thresholds)
        return thresholds or [DEFAULT_THRESHOLD] * len(self.getLabels())

    def getAtLeastOne(self) -> bool:
        return self.getOrDefault(self.atLeastOne)

    def setThresholds(self, value: list[float]) -> LabelSet:
        if len(value) != len(self.getLabels()):
            raise ValueError(f"{len(value)} thresholds for {len(self.getLabels())} classes")
        return self._set(thresholds=[float(v) for v in value])

    def _transform(self, dataset: DataFrame) -> DataFrame:
        labels, thresholds = self.getLabels(), self.getThresholds()
        columns = [_per_class(index) for index in range(len(labels))]
        margins = [vector_to_array(raw)[1] - vector_to_array(raw)[0] for raw, _, _ in columns]
        chances = [vector_to_array(probability)[1] for _, probability, _ in columns]
        reached = F.array(
            *[
                F.when(chance >= threshold, F.lit(name))
                for name, chance, threshold in zip(labels, chances, thresholds, strict=True)
            ]
        )
        said = F.filter(reached, lambda name: name.isNotNull())
        if self.getAtLeastOne():
            top = F.greatest(*chances)
            likeliest = F.coalesce(
                *[F.when(c == top, F.lit(n)) for n, c in zip(labels, chances, strict=True)]
            )
            said = F.when(F.size(said) == 0, F.array(likeliest)).otherwise(said)
        return dataset.withColumns(
            {
                RAW: array_to_vector(F.array(*margins)),
                PROBABILITY: array_to_vector(F.array(*chances)),
                PREDICTED_LABELS: said,
            }
        ).drop(*[name for names in columns for name in names])


def multi_label_pipeline(
    settings: TrainConfig, params: kinds.Params, *, n_features: int, labels: list[str]
) -> Pipeline:
    """The profile's classifier once per class (on ``target_column``), then ``LabelSet``."""
    kind = classifiers.kind_of(settings)
    stages: list[Any] = []
    for index in range(len(labels)):
        raw, probability, prediction = _per_class(index)
        columns = kinds.Columns(FEATURES, target_column(index), prediction)
        made = kind.stages(settings, params, (n_features, 2), columns)
        for stage in made:
            if isinstance(stage, ProbabilisticClassifier):
                stages.append(stage.setRawPredictionCol(raw).setProbabilityCol(probability))
            elif index == 0:  # what comes before the classifier (a scaler) is the same for all
                stages.append(stage)
    return Pipeline(stages=[*stages, LabelSet(labels=list(labels))])


def label_set_stage(model: PipelineModel) -> LabelSet:
    (found,) = [stage for stage in model.stages if isinstance(stage, LabelSet)]
    return found


def class_models(model: PipelineModel) -> list[ProbabilisticClassificationModel]:
    """The fitted per-class classifiers, in class order."""
    return [s for s in model.stages if isinstance(s, ProbabilisticClassificationModel)]


def classifier_parameters(model: PipelineModel) -> dict[str, Any]:
    """The fitted multi-label model as plain numbers for the JVM-free scorer: the classes, their
    thresholds, and each class's classifier as its kind's numbers (with the shared scaler)."""
    shared = [
        s for s in model.stages if not isinstance(s, (LabelSet, ProbabilisticClassificationModel))
    ]
    kind = classifiers.kind_of_fitted([*shared, class_models(model)[0]])
    stage = label_set_stage(model)
    return {
        "labels": stage.getLabels(),
        "thresholds": stage.getThresholds(),
        "at_least_one": stage.getAtLeastOne(),
        "kind": kind.name,
        "classes": [kind.numbers([*shared, fitted]) for fitted in class_models(model)],
    }
