"""The Spark ML pipelines: the one trained on cached features, and the one logged for scoring.

The scoring model is the whole chain, featurizer included, so it scores raw image bytes. Images
the featurizer quarantines flow through with null predictions and their reason, instead of
crashing LogisticRegression (which throws on a null vector) or vanishing.
"""

from __future__ import annotations

from typing import TypeVar

from pyspark import keyword_only
from pyspark.ml import Pipeline, PipelineModel, Transformer
from pyspark.ml.classification import ProbabilisticClassificationModel
from pyspark.ml.feature import StringIndexer
from pyspark.ml.functions import array_to_vector
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.util import DefaultParamsReadable, DefaultParamsWritable
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from sparkles.cnn.featurizer import DeepImageFeaturizer
from sparkles.config import TrainConfig
from sparkles.model import classifiers, kinds
from sparkles.names import ERROR, FEATURES, LABEL, LABEL_INDEX, PREDICTION, PREDICTION_INDEX

OUTPUTS = ["rawPrediction", "probability", PREDICTION_INDEX, PREDICTION]
Stage = TypeVar("Stage", bound=Transformer)


def stage_of(model: PipelineModel, kind: type[Stage]) -> Stage:
    """The one stage of type ``kind``: stages are found by type, never by position."""
    found = [stage for stage in model.stages if isinstance(stage, kind)]
    if len(found) != 1:
        raise ValueError(f"expected one {kind.__name__} stage, found {len(found)}")
    return found[0]


def feature_length(frame: DataFrame) -> int:
    """Length of the feature vectors (an MLP's input layer), read from one row."""
    row = frame.select(FEATURES).first()
    if row is None:
        raise ValueError("no rows to train on")
    return int(row.features.size)


class FillQuarantined(Transformer, DefaultParamsReadable, DefaultParamsWritable):
    """Gives quarantined rows (null features) a zero vector so the classifier can run over them."""

    featuresCol = Param(Params._dummy(), "featuresCol", "features column", TypeConverters.toString)
    size = Param(Params._dummy(), "size", "feature vector length", TypeConverters.toInt)

    @keyword_only
    def __init__(self, *, featuresCol: str = "features", size: int = 0) -> None:
        super().__init__()
        self._setDefault(featuresCol="features", size=0)
        self._set(**self._input_kwargs)

    def _transform(self, dataset: DataFrame) -> DataFrame:
        column = self.getOrDefault(self.featuresCol)
        zeros = array_to_vector(F.array_repeat(F.lit(0.0), self.getOrDefault(self.size)))
        return dataset.withColumn(column, F.coalesce(F.col(column), zeros))


class MaskQuarantined(Transformer, DefaultParamsReadable, DefaultParamsWritable):
    """Nulls every prediction output on rows the featurizer quarantined: no guess for bad images."""

    errorCol = Param(
        Params._dummy(), "errorCol", "quarantine reason column", TypeConverters.toString
    )
    maskedCols = Param(
        Params._dummy(), "maskedCols", "columns to null", TypeConverters.toListString
    )

    @keyword_only
    def __init__(self, *, errorCol: str = ERROR, maskedCols: list[str] | None = None) -> None:
        super().__init__()
        self._setDefault(errorCol=ERROR, maskedCols=OUTPUTS)
        self._set(**self._input_kwargs)

    def _transform(self, dataset: DataFrame) -> DataFrame:
        error = F.col(self.getOrDefault(self.errorCol))
        for column in self.getOrDefault(self.maskedCols):
            dataset = dataset.withColumn(column, F.when(error.isNull(), F.col(column)))
        return dataset


def training_pipeline(
    settings: TrainConfig, params: kinds.Params, *, n_features: int, n_classes: int
) -> Pipeline:
    """StringIndexer → the profile's classifier with ``params`` (an MLP behind a StandardScaler
    when ``standardization``), on cached features."""
    indexer = StringIndexer(
        inputCol=LABEL, outputCol=LABEL_INDEX, stringOrderType="alphabetAsc", handleInvalid="error"
    )
    columns = kinds.Columns(FEATURES, LABEL_INDEX, PREDICTION_INDEX)
    kind = classifiers.kind_of(settings)
    fitted_after = kind.stages(settings, params, (n_features, n_classes), columns)
    return Pipeline(stages=[indexer, *fitted_after])


def scoring_model(
    featurizer: DeepImageFeaturizer, classifier: PipelineModel, outputs: list[str]
) -> PipelineModel:
    """Featurizer + the classifier model (a task's ``classifier_model``): scores raw image bytes
    (path, content); ``outputs`` are nulled on the rows the featurizer quarantined."""
    classifiers_in = [
        s for s in classifier.stages if isinstance(s, ProbabilisticClassificationModel)
    ]
    return PipelineModel(
        [
            featurizer,
            FillQuarantined(size=classifiers_in[0].numFeatures),
            *classifier.stages,
            MaskQuarantined(maskedCols=[*outputs, FEATURES]),
        ]
    )
