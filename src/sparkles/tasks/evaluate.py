"""Held-out evaluation: the seed's metrics (accuracy, weighted F1, AUC), per-class precision and
recall, and the predictions table the plots (``sparkles.plots``) are drawn from.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from pyspark.ml.functions import vector_to_array
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    roc_auc_score,
)

from sparkles.names import IMAGE_ID, LABEL, LABEL_INDEX, PATH, PREDICTION, PREDICTION_INDEX


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

    def mistakes(self, limit: int) -> pd.DataFrame:
        """The ``limit`` misclassified test rows with the highest P(predicted class)."""
        wrong = self.predictions[self.predictions.label != self.predictions[PREDICTION]]
        return wrong.nlargest(limit, "confidence")


def _score_columns(n_classes: int) -> list[Column]:
    """``true_index``, ``predicted_index``, and what AUC ranks: of two classes the margin
    raw[1] − raw[0] (monotone in P(class 1) for both classifiers — Spark's own raw[1] is that
    only for logistic regression, whose raw is [−m, m] — and free of the ties a probability
    saturating at 1.0 would make); of more, ``p<k>`` = P(class k)."""
    columns = [
        F.col(LABEL_INDEX).cast("int").alias("true_index"),
        F.col(PREDICTION_INDEX).cast("int").alias("predicted_index"),
    ]
    if n_classes == 2:
        raw = vector_to_array("rawPrediction")
        return [*columns, (raw[1] - raw[0]).alias("margin")]
    probability = vector_to_array("probability")
    return [*columns, *[probability[k].alias(f"p{k}") for k in range(n_classes)]]


def binary_auc(truth: np.ndarray, score: np.ndarray) -> float:
    """Area under ROC; 0.0 where ``truth`` holds one class only (as Spark's evaluator said)."""
    return float(roc_auc_score(truth, score)) if len(np.unique(truth)) == 2 else 0.0


def _headline(scores: pd.DataFrame, n_classes: int) -> dict[str, float]:
    truth, predicted = scores.true_index.to_numpy(), scores.predicted_index.to_numpy()
    if n_classes == 2:
        auc = binary_auc(truth, scores.margin.to_numpy())
    else:
        auc = np.mean(
            [binary_auc(truth == k, scores[f"p{k}"].to_numpy()) for k in range(n_classes)]
        )
    return {
        "accuracy": float(accuracy_score(truth, predicted)),
        "f1": float(f1_score(truth, predicted, average="weighted", zero_division=0)),
        "auc": float(auc),
    }


def headline_metrics(scored: DataFrame, n_classes: int) -> dict[str, float]:
    """Accuracy, weighted F1 (as the 2019 study) and AUC of a scored set, in one Spark job.

    AUC: of two classes, the binary one; of more, the unweighted (macro) mean of every class's
    one-vs-rest AUC (``roc_auc_score(multi_class="ovr", average="macro")``). scikit-learn's
    metrics on the collected scores (a scored set is a fraction of the labelled images): they
    define what Spark's evaluators did, where each metric was a Spark job of its own.
    """
    return _headline(scored.select(*_score_columns(n_classes)).toPandas(), n_classes)


def evaluate(scored: DataFrame, labels: list[str]) -> Evaluation:
    """Metrics on a scored test set (output of the classifier model, with ``label_index``)."""
    probability = vector_to_array("probability")
    predictions = scored.select(
        IMAGE_ID,
        PATH,
        LABEL,
        PREDICTION,
        probability[len(labels) - 1].alias("score"),
        F.array_max(probability).alias("confidence"),
        *[probability[k].alias(f"probability_{name}") for k, name in enumerate(labels)],
        *_score_columns(len(labels)),
    ).toPandas()
    metrics = _headline(predictions, len(labels))
    classes = list(range(len(labels)))
    truth, predicted = predictions.true_index, predictions.predicted_index
    precision, recall, _, _ = precision_recall_fscore_support(
        truth, predicted, labels=classes, zero_division=0
    )
    weighted = precision_recall_fscore_support(
        truth, predicted, labels=classes, average="weighted", zero_division=0
    )
    metrics.update(weighted_precision=float(weighted[0]), weighted_recall=float(weighted[1]))
    for index, name in enumerate(labels):
        metrics[f"precision_{name}"] = float(precision[index])
        metrics[f"recall_{name}"] = float(recall[index])
    metrics["count_test"] = float(len(predictions))
    confusion = confusion_matrix(truth, predicted, labels=classes)
    scoring_only = ["true_index", "margin", *(f"p{k}" for k in classes)]
    kept = predictions.drop(columns=scoring_only, errors="ignore")
    return Evaluation(metrics, labels, kept, confusion)
