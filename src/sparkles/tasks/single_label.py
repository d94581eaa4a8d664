"""Single-label: one class per image (or per row, under ``keep-all``), as the 2019 study.

The pipeline is StringIndexer → the classifier kind's stages; its answer is ``prediction``
(IndexToString of the likeliest class); it is evaluated on accuracy, weighted F1 and AUC
(``tasks.evaluate``) and plotted as an ROC curve and a confusion matrix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.feature import IndexToString, StringIndexerModel
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from sparkles import plots
from sparkles.model import classifiers
from sparkles.model.stages import OUTPUTS, stage_of, training_pipeline
from sparkles.names import ERROR, PREDICTION, PREDICTION_INDEX, SINGLE_LABEL
from sparkles.tasks.base import Fitting, Task
from sparkles.tasks.evaluate import Evaluation, evaluate, headline_metrics


class SingleLabel(Task):
    name = SINGLE_LABEL
    policies = ("drop", "keep-first", "keep-all")
    selectable = ("auc", "accuracy", "f1")
    shown = ("accuracy", "f1", "auc")
    outputs = OUTPUTS

    def fit_rows(self, rows: DataFrame, labels: list[str]) -> DataFrame:
        return rows

    def pipeline(self, fitting: Fitting) -> Pipeline:
        return training_pipeline(
            fitting.settings,
            fitting.params,
            n_features=fitting.n_features,
            n_classes=len(fitting.labels),
        )

    def validate(self, fitting: Fitting, rounds: list[tuple[DataFrame, DataFrame]]) -> dict:
        """The mean over rounds of each round's headline metrics."""
        per_round = []
        for fit_on, held_out in rounds:
            model = self.pipeline(fitting).fit(fit_on)
            scored = self.classifier_model(model).transform(held_out)
            per_round.append(headline_metrics(scored, len(fitting.labels)))
        return {f"val_{k}": float(np.mean([m[k] for m in per_round])) for k in per_round[0]}

    def test(
        self, fitted: PipelineModel, test_rows: DataFrame, validation: dict[str, float]
    ) -> Evaluation:
        return evaluate(
            self.classifier_model(fitted).transform(test_rows), self.class_labels(fitted)
        )

    def plot(self, evaluation: Any, folder: Path) -> None:
        plots.plot_roc(evaluation, folder / "roc_curve.png")
        plots.plot_confusion(evaluation, folder / "confusion_matrix.png")

    def class_labels(self, model: PipelineModel) -> list[str]:
        """The StringIndexer's (alphabetical) order."""
        return list(stage_of(model, StringIndexerModel).labels)

    def classifier_model(self, fitted: PipelineModel) -> PipelineModel:
        labels = self.class_labels(fitted)
        names = IndexToString(inputCol=PREDICTION_INDEX, outputCol=PREDICTION, labels=labels)
        return PipelineModel([*fitted.stages, names])

    def numbers(self, fitted: PipelineModel) -> dict[str, Any]:
        kind = classifiers.kind_of_fitted(fitted.stages)
        return {"labels": self.class_labels(fitted), **kind.numbers(fitted.stages)}

    def rescore(self, model: PipelineModel, images: DataFrame, metric: str) -> float:
        # with a label column present, the model's own StringIndexer adds label_index
        scored = model.transform(images).where(F.col(ERROR).isNull())
        return headline_metrics(scored, len(self.class_labels(model)))[metric]

    def answer_columns(self, present: Column, probability: Column) -> list[Column]:
        return [
            F.col(PREDICTION).alias("predicted_label"),
            F.when(present, F.array_max(probability)).alias("probability"),
        ]
