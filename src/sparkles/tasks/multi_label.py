"""Multi-label: a set of classes per image (``data.multi_label_policy: multi-label``).

The training table's rows (one per image and class) become one row per image with its
``labels`` and a binary target per class; the pipeline is the classifier kind once per class
and ``LabelSet`` (``model.label_sets``); each class's threshold is chosen on validation scores
and carried to the refit model as ``val_threshold_<class>``; the answer is
``predicted_labels``; evaluation is ``tasks.evaluate_sets``, plotted as an ROC curve per class
and the co-occurrence of true and predicted sets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from pyspark.ml import Pipeline, PipelineModel
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from sparkles import plots
from sparkles.model.label_sets import (
    OUTPUTS,
    classifier_parameters,
    label_set_stage,
    label_sets,
    multi_label_pipeline,
    with_targets,
)
from sparkles.names import ERROR, MULTI_LABEL, PREDICTED_LABELS
from sparkles.tasks import evaluate_sets as sets
from sparkles.tasks.base import Fitting, Task


class MultiLabel(Task):
    name = MULTI_LABEL
    policies = (MULTI_LABEL,)
    selectable = ("auc", "micro_f1", "macro_f1", "subset_accuracy")
    shown = ("auc", "micro_f1", "subset_accuracy", "study_accuracy")
    outputs = OUTPUTS

    def fit_rows(self, rows: DataFrame, labels: list[str]) -> DataFrame:
        return with_targets(label_sets(rows), labels)

    def train_images(self, fit_rows: DataFrame, counts: dict[str, int]) -> int:
        return fit_rows.count()  # images, not (image, class) rows

    def pipeline(self, fitting: Fitting) -> Pipeline:
        return multi_label_pipeline(
            fitting.settings, fitting.params, n_features=fitting.n_features, labels=fitting.labels
        )

    def validate(self, fitting: Fitting, rounds: list[tuple[DataFrame, DataFrame]]) -> dict:
        """Metrics on the held-out scores of every round pooled (with ``cv`` each image is held
        out once), and each class's threshold chosen on them, carried as
        ``val_threshold_<class>`` to the refit model. The threshold-dependent metrics (F1s,
        subset accuracy, Hamming loss) are measured at thresholds chosen on these very scores,
        so they flatter a little; AUC does not depend on them, and the test split never sees
        this."""
        labels = fitting.labels
        held_out_scores = []
        for fit_on, held_out in rounds:
            model = self.pipeline(fitting).fit(fit_on)
            held_out_scores.append(sets.set_scores(model.transform(held_out), labels))
        pooled = pd.concat(held_out_scores, ignore_index=True)
        thresholds = sets.choose_thresholds(pooled, labels)
        metrics = sets.set_metrics(pooled, labels, thresholds)
        chosen = {sets.threshold_metric(n): t for n, t in zip(labels, thresholds, strict=True)}
        return {**{f"val_{name}": metrics[name] for name in sets.HEADLINE}, **chosen}

    def test(
        self, fitted: PipelineModel, test_rows: DataFrame, validation: dict[str, float]
    ) -> sets.SetEvaluation:
        """With each class's threshold as validation chose it."""
        labels = self.class_labels(fitted)
        thresholds = [validation[sets.threshold_metric(name)] for name in labels]
        label_set_stage(fitted).setThresholds(thresholds)
        scored = fitted.transform(label_sets(test_rows))
        return sets.evaluate_sets(scored, labels, thresholds)

    def plot(self, evaluation: Any, folder: Path) -> None:
        plots.plot_roc_per_class(evaluation, folder / "roc_curve.png")
        plots.plot_label_sets(evaluation, folder / "label_sets.png")

    def class_labels(self, model: PipelineModel) -> list[str]:
        return label_set_stage(model).getLabels()

    def classifier_model(self, fitted: PipelineModel) -> PipelineModel:
        return fitted  # LabelSet names the sets itself

    def numbers(self, fitted: PipelineModel) -> dict[str, Any]:
        return classifier_parameters(fitted)

    def rescore(self, model: PipelineModel, images: DataFrame, metric: str) -> float:
        scored = model.transform(label_sets(images)).where(F.col(ERROR).isNull())
        return sets.headline_set_metrics(scored, self.class_labels(model))[metric]

    def answer_columns(self, present: Column, probability: Column) -> list[Column]:
        return [F.col(PREDICTED_LABELS)]

    def for_csv(self, predictions: DataFrame) -> DataFrame:
        """CSV has no arrays: a set as "Car|Tree"."""
        return predictions.withColumn(
            PREDICTED_LABELS, F.concat_ws(sets.SEPARATOR, PREDICTED_LABELS)
        )
