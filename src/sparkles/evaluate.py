"""Held-out evaluation: the seed's metrics (accuracy, weighted F1, AUC), per-class precision and
recall, and the predictions table the plots (``sparkles.plots``) are drawn from.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from pyspark.ml.evaluation import BinaryClassificationEvaluator, MulticlassClassificationEvaluator
from pyspark.ml.functions import vector_to_array
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from sparkles.names import PREDICTION
from sparkles.pipeline import LABEL_INDEX, PREDICTION_INDEX


@dataclass
class Evaluation:
    metrics: dict[str, float]
    labels: list[str]  # class names by index; the last is the positive class of two
    # image_id, path, label, prediction, score (P(last class)), confidence (P(prediction)),
    # probability_<class> for every class
    predictions: pd.DataFrame
    confusion: np.ndarray  # rows: true class, columns: predicted class

    @property
    def positive(self) -> str:
        return self.labels[-1]

    def most_confident_mistakes(self, limit: int) -> pd.DataFrame:
        """The ``limit`` misclassified test rows with the highest P(predicted class)."""
        wrong = self.predictions[self.predictions.label != self.predictions[PREDICTION]]
        return wrong.nlargest(limit, "confidence")


def _multiclass(frame: DataFrame, metric: str, **extra: float) -> float:
    evaluator = MulticlassClassificationEvaluator(
        labelCol=LABEL_INDEX, predictionCol=PREDICTION_INDEX, metricName=metric, **extra
    )
    return float(evaluator.evaluate(frame))


def one_vs_rest_auc(scored: DataFrame, index: int) -> float:
    """Area under ROC of class ``index`` against all others, scored by its probability."""
    frame = scored.select(
        vector_to_array("probability")[index].alias("_score"),
        (F.col(LABEL_INDEX) == index).cast("double").alias("_truth"),
    )
    evaluator = BinaryClassificationEvaluator(
        rawPredictionCol="_score", labelCol="_truth", metricName="areaUnderROC"
    )
    return float(evaluator.evaluate(frame))


def headline_metrics(scored: DataFrame, n_classes: int) -> dict[str, float]:
    """Accuracy, weighted F1 (as the 2019 study) and AUC of a scored set.

    AUC: of two classes, the binary one; of more, the unweighted (macro) mean of every class's
    one-vs-rest AUC (scikit-learn's ``roc_auc_score(multi_class="ovr", average="macro")``).
    """
    metrics = {"accuracy": _multiclass(scored, "accuracy"), "f1": _multiclass(scored, "f1")}
    if n_classes == 2:
        # scored by the margin raw[1] − raw[0]: monotone in P(class 1) for both classifiers
        # (Spark's own raw[1] is that only for logistic regression, whose raw is [−m, m]), and
        # free of the ties a probability saturating at 1.0 would make
        raw = vector_to_array("rawPrediction")
        frame = scored.select(
            (raw[1] - raw[0]).alias("_margin"), F.col(LABEL_INDEX).cast("double").alias("_truth")
        )
        auc = BinaryClassificationEvaluator(
            rawPredictionCol="_margin", labelCol="_truth", metricName="areaUnderROC"
        )
        metrics["auc"] = float(auc.evaluate(frame))
    else:
        metrics["auc"] = float(np.mean([one_vs_rest_auc(scored, k) for k in range(n_classes)]))
    return metrics


def evaluate(scored: DataFrame, labels: list[str]) -> Evaluation:
    """Metrics on a scored test set (output of the classifier model, with ``label_index``)."""
    scored = scored.cache()
    metrics = {
        **headline_metrics(scored, len(labels)),
        "weighted_precision": _multiclass(scored, "weightedPrecision"),
        "weighted_recall": _multiclass(scored, "weightedRecall"),
    }
    for index, name in enumerate(labels):
        metrics[f"precision_{name}"] = _multiclass(scored, "precisionByLabel", metricLabel=index)
        metrics[f"recall_{name}"] = _multiclass(scored, "recallByLabel", metricLabel=index)
    probability = vector_to_array("probability")
    predictions = scored.select(
        "image_id",
        "path",
        "label",
        PREDICTION,
        probability[len(labels) - 1].alias("score"),
        F.array_max(probability).alias("confidence"),
        *[probability[k].alias(f"probability_{name}") for k, name in enumerate(labels)],
        F.col(LABEL_INDEX).cast("int").alias("true_index"),
        F.col(PREDICTION_INDEX).cast("int").alias("predicted_index"),
    ).toPandas()
    scored.unpersist()
    confusion = np.zeros((len(labels), len(labels)), dtype=int)
    np.add.at(confusion, (predictions.true_index, predictions.predicted_index), 1)
    metrics["count_test"] = float(len(predictions))
    return Evaluation(metrics, labels, predictions.drop(columns=["true_index"]), confusion)
