"""Held-out evaluation: the seed's metrics (accuracy, weighted F1, AUC), per-class precision and
recall, and the plots people look at first (ROC, confusion matrix, misclassified images).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global figure state
from PIL import Image
from pyspark.ml.evaluation import BinaryClassificationEvaluator, MulticlassClassificationEvaluator
from pyspark.ml.functions import vector_to_array
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from sklearn.metrics import auc as sk_auc
from sklearn.metrics import roc_curve

from sparkles.pipeline import LABEL_INDEX, PREDICTION, PREDICTION_INDEX


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


def save_figure(figure: Figure, path: Path, dpi: int = 100) -> Path:
    """Lay out and write a figure; every plot of the project goes through here."""
    figure.tight_layout()
    figure.savefig(path, dpi=dpi)
    return path


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
        auc = BinaryClassificationEvaluator(
            rawPredictionCol="rawPrediction", labelCol=LABEL_INDEX, metricName="areaUnderROC"
        )
        metrics["auc"] = float(auc.evaluate(scored))
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


def plot_roc(evaluation: Evaluation, path: Path) -> Path:
    """Two classes: the positive class's curve. More: one one-vs-rest curve per class."""
    figure = Figure(figsize=(5, 5))
    axes = figure.subplots()
    auc = evaluation.metrics.get("auc", float("nan"))
    frame = evaluation.predictions
    classes = [evaluation.positive] if len(evaluation.labels) == 2 else evaluation.labels
    for name in classes:
        truth = (frame.label == name).astype(int)
        fpr, tpr, _ = roc_curve(truth, frame[f"probability_{name}"])
        own = auc if len(classes) == 1 else sk_auc(fpr, tpr)
        axes.plot(fpr, tpr, lw=2, label=f"{name} vs rest (AUC = {own:.4f})")
    axes.plot([0, 1], [0, 1], ls="--", color="grey", label="chance (AUC = 0.5)")
    title = "ROC, held-out test"
    if len(classes) > 1:
        title = f"ROC one-vs-rest, held-out test\nmacro-average AUC = {auc:.4f}"
    axes.set(xlabel="false positive rate", ylabel="true positive rate", title=title)
    axes.legend(loc="lower right")
    return save_figure(figure, path)


def plot_confusion(evaluation: Evaluation, path: Path) -> Path:
    figure = Figure(figsize=(4.5, 4))
    axes = figure.subplots()
    matrix = evaluation.confusion
    axes.imshow(matrix, cmap="Blues")
    ticks = range(len(evaluation.labels))
    axes.set(
        xticks=ticks, yticks=ticks, xlabel="predicted", ylabel="true", title="Confusion matrix"
    )
    axes.set_xticklabels(evaluation.labels)
    axes.set_yticklabels(evaluation.labels)
    for (row, column), value in np.ndenumerate(matrix):
        colour = "white" if value > matrix.max() / 2 else "black"
        axes.text(column, row, str(value), ha="center", va="center", color=colour)
    return save_figure(figure, path)


def plot_label_distribution(counts: dict[str, dict[str, int]], path: Path) -> Path:
    """Images per class in each split (e.g. {"train": {"Car": 80, ...}, "test": {...}})."""
    frame = pd.DataFrame(counts).fillna(0).astype(int)
    figure = Figure(figsize=(5, 3.5))
    axes = figure.subplots()
    width = 0.8 / len(frame.columns)
    for offset, split in enumerate(frame.columns):
        positions = np.arange(len(frame)) + offset * width
        bars = axes.bar(positions, frame[split], width, label=split)
        axes.bar_label(bars)
    axes.set_xticks(np.arange(len(frame)) + width * (len(frame.columns) - 1) / 2, frame.index)
    axes.set(ylabel="images", title="Images per class")
    axes.legend()
    return save_figure(figure, path)


def plot_misclassified(
    evaluation: Evaluation, spark: SparkSession, path: Path, limit: int = 12
) -> Path:
    """The most confidently wrong test images (by P(predicted class)), truth and P in titles."""
    wrong = evaluation.predictions[
        evaluation.predictions.label != evaluation.predictions[PREDICTION]
    ]
    wrong = wrong.nlargest(limit, "confidence")
    contents: dict[str, bytes] = {}
    if len(wrong):
        rows = spark.read.format("binaryFile").load(list(wrong.path)).select("path", "content")
        contents = {row.path: bytes(row.content) for row in rows.collect()}
    columns = 4
    count = max(len(wrong), 1)
    rows_needed = (count + columns - 1) // columns
    figure = Figure(figsize=(10, 2.8 * rows_needed))
    grid = figure.subplots(rows_needed, columns)
    cells = np.atleast_1d(grid).ravel()
    for cell in cells:
        cell.axis("off")
    if not len(wrong):
        cells[0].text(0.5, 0.5, "no misclassified test images", ha="center", va="center")
    for cell, row in zip(cells, wrong.itertuples(), strict=False):
        if row.path in contents:
            cell.imshow(Image.open(io.BytesIO(contents[row.path])).convert("RGB"))
        cell.set_title(
            f"true {row.label}, said {getattr(row, PREDICTION)}\n"
            f"P({getattr(row, PREDICTION)}) = {row.confidence:.2f}",
            fontsize=8,
        )
    figure.suptitle("Misclassified test images (most confident first)")
    return save_figure(figure, path, dpi=90)
