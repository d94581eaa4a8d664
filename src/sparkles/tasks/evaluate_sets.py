"""Held-out evaluation of a multi-label model: what a multi-label user reads, and the 2019
study's accuracy beside it, computed the study's way on the same images.

Per class: precision, recall, F1, AUC. Over all: micro- and macro-averaged F1, ``auc`` (the
macro mean of the per-class AUCs, as ``auc`` of more than two single-label classes already is),
subset accuracy (the exact set), Hamming loss (the fraction of wrong (image, class) answers),
and ``study_accuracy``: each (image, true class) row scored against the one class the model
finds likeliest, as the study's keep-all counting would. ``subset_accuracy_multi`` is the
subset accuracy on the test images with several classes, which no single-label model can get
right. A per-class threshold is chosen on validation scores (``choose_thresholds``), never here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from pyspark.ml.functions import vector_to_array
from pyspark.sql import DataFrame
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    hamming_loss,
    precision_recall_curve,
    precision_recall_fscore_support,
)

from sparkles.model.answers import said as said_by
from sparkles.model.label_sets import DEFAULT_THRESHOLD, PROBABILITY, RAW
from sparkles.names import IMAGE_ID, LABELS, PATH, PREDICTED_LABELS, probability_column
from sparkles.tasks.evaluate import binary_auc

SEPARATOR = "|"  # a set in the predictions' CSV and the plots: "Car|Tree"; "" is the empty set
HEADLINE = ("auc", "micro_f1", "macro_f1", "subset_accuracy", "hamming_loss")


def set_name(labels: list[str] | np.ndarray) -> str:
    return SEPARATOR.join(sorted(labels))


def threshold_metric(name: str) -> str:
    """The validation metric that carries class ``name``'s threshold to the refit model."""
    return f"val_threshold_{name}"


@dataclass
class SetEvaluation:
    metrics: dict[str, float]
    labels: list[str]  # the classes, in the model's order
    # image_id, path, labels and predicted_labels (set_name), probability_<class>, margin_<class>
    predictions: pd.DataFrame
    thresholds: list[float]

    def sets(self) -> tuple[list[str], list[str], np.ndarray]:
        """(true sets, predicted sets, counts[true, predicted]): the co-occurrence of sets."""
        truth = sorted(set(self.predictions[LABELS]))
        said = sorted(set(self.predictions[PREDICTED_LABELS]) | set(truth))
        counts = pd.crosstab(self.predictions[LABELS], self.predictions[PREDICTED_LABELS])
        matrix = counts.reindex(index=truth, columns=said, fill_value=0).to_numpy()
        return truth, said, matrix

    def mistakes(self, limit: int) -> pd.DataFrame:
        """The ``limit`` test images whose predicted set differs, most confidently wrong first
        (by the largest |truth − P(class)| over their classes), as the gallery draws them."""
        frame = self.predictions
        wrong = frame[frame[LABELS] != frame[PREDICTED_LABELS]].copy()
        miss = np.zeros(len(wrong))
        for name in self.labels:
            carried = wrong[LABELS].str.split(SEPARATOR).apply(lambda names, n=name: n in names)
            chance = wrong[probability_column(name)].to_numpy(dtype=np.float64)
            miss = np.maximum(miss, np.abs(carried.to_numpy(dtype=np.float64) - chance))
        wrong["confidence"] = miss  # float even when no image differs (nlargest needs it)
        wrong = wrong.nlargest(limit, "confidence")
        chances = [
            " ".join(f"P({name})={row[probability_column(name)]:.2f}" for name in self.labels)
            for _, row in wrong.iterrows()
        ]
        truth, said = wrong[LABELS].replace("", "none"), wrong[PREDICTED_LABELS].replace("", "none")
        wrong["caption"] = [
            f"true {t}, said {s}\n{c}" for t, s, c in zip(truth, said, chances, strict=True)
        ]
        return wrong


def set_scores(scored: DataFrame, labels: list[str]) -> pd.DataFrame:
    """The scored images as pandas: sets as ``set_name``, P(class) and margin per class."""
    frame = scored.select(
        IMAGE_ID,
        PATH,
        LABELS,
        PREDICTED_LABELS,
        vector_to_array(PROBABILITY).alias("_p"),
        vector_to_array(RAW).alias("_m"),
    ).toPandas()
    chances, margins = np.stack(frame.pop("_p")), np.stack(frame.pop("_m"))
    frame[LABELS] = frame[LABELS].apply(set_name)
    frame[PREDICTED_LABELS] = frame[PREDICTED_LABELS].apply(set_name)
    for index, name in enumerate(labels):
        frame[probability_column(name)] = chances[:, index]
        frame[f"margin_{name}"] = margins[:, index]
    return frame


def _matrix(sets: pd.Series, labels: list[str]) -> np.ndarray:
    """(n, classes) 0/1 from sets named by ``set_name``."""
    members = sets.str.split(SEPARATOR)
    return np.array([[name in names for name in labels] for names in members], dtype=int)


def _columns(frame: pd.DataFrame, prefix: str, labels: list[str]) -> np.ndarray:
    return frame[[f"{prefix}{name}" for name in labels]].to_numpy(dtype=np.float64)


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-12, 1 - 1e-12)
    return np.log(p / (1 - p))


def choose_thresholds(frame: pd.DataFrame, labels: list[str]) -> list[float]:
    """Per class, the P(class) from which saying it gives the best F1 on ``frame`` (the
    validation scores), placed halfway (in log-odds) between the lowest score it says and the
    highest it does not: a cut right at a validation score would say nothing a little below
    it, and a few hundred validation images leave wide gaps. 0.5 for a class with no positive
    or no negative there."""
    truth, chances = _matrix(frame[LABELS], labels), _columns(frame, "probability_", labels)
    chosen = []
    for index in range(len(labels)):
        carried, chance = truth[:, index], chances[:, index]
        if carried.min() == carried.max():
            chosen.append(DEFAULT_THRESHOLD)
            continue
        precision, recall, cuts = precision_recall_curve(carried, chance)
        f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
        cut = cuts[int(np.argmax(f1[:-1]))]
        below = chance[chance < cut]
        if below.size:
            cut = 1 / (1 + np.exp(-(_logit(cut) + _logit(below.max())) / 2))
        chosen.append(float(cut))
    return chosen


def set_metrics(
    frame: pd.DataFrame, labels: list[str], thresholds: list[float] | None = None
) -> dict[str, float]:
    """Every metric of the module docstring on scored images; the sets said are the model's own
    (``predicted_labels``) unless ``thresholds`` says where to cut."""
    truth = _matrix(frame[LABELS], labels)
    chances, margins = _columns(frame, "probability_", labels), _columns(frame, "margin_", labels)
    said = (
        _matrix(frame[PREDICTED_LABELS], labels)
        if thresholds is None
        else said_by(chances, thresholds, at_least_one=True).astype(int)
    )
    precision, recall, f1, _ = precision_recall_fscore_support(truth, said, zero_division=0)
    aucs = [binary_auc(truth[:, k], margins[:, k]) for k in range(len(labels))]
    metrics = {
        "auc": float(np.mean(aucs)),
        "micro_f1": float(f1_score(truth, said, average="micro", zero_division=0)),
        "macro_f1": float(f1_score(truth, said, average="macro", zero_division=0)),
        "subset_accuracy": float(accuracy_score(truth, said)),
        "hamming_loss": float(hamming_loss(truth, said)),
    }
    for index, name in enumerate(labels):
        metrics.update(
            {
                f"precision_{name}": float(precision[index]),
                f"recall_{name}": float(recall[index]),
                f"f1_{name}": float(f1[index]),
                f"auc_{name}": aucs[index],
            }
        )
    # the study's way: one row per (image, true class), one answer per image (its likeliest)
    likeliest = chances.argmax(axis=1)
    rows = truth.sum()
    metrics["study_accuracy"] = float(truth[np.arange(len(truth)), likeliest].sum() / max(rows, 1))
    several = truth.sum(axis=1) > 1
    metrics["count_test_multi"] = float(several.sum())
    exact = (truth == said).all(axis=1)
    metrics["subset_accuracy_multi"] = float(exact[several].mean()) if several.any() else 0.0
    return metrics


def evaluate_sets(scored: DataFrame, labels: list[str], thresholds: list[float]) -> SetEvaluation:
    """Metrics on a scored test set (the multi-label model's output, with ``labels``)."""
    frame = set_scores(scored, labels)
    metrics = set_metrics(frame, labels)
    metrics["count_test"] = float(len(frame))
    return SetEvaluation(metrics, labels, frame, thresholds)


def headline_set_metrics(scored: DataFrame, labels: list[str]) -> dict[str, float]:
    """What a search and the registry select on, from a multi-label model's scored images."""
    metrics = set_metrics(set_scores(scored, labels), labels)
    return {name: metrics[name] for name in HEADLINE}
