"""What a task is: the one object that knows single- from multi-label (nothing outside
``sparkles.tasks`` and ``model.answers`` branches on it).

A task owns what differs between "one class per image" and "a set of classes per image": how
the training table's rows become the rows a classifier fits on, the pipeline's tail after the
profile's classifier kind, validation (and any thresholds chosen there), the test evaluation
and its plots, the metrics a search and the registry may select on, the answer a model serves
(``model.answers``, by the same name), and how `promote` re-scores and `predict` writes.
``tasks.catalog`` says which task a profile or a logged model has.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

import pandas as pd
from pyspark.ml import Pipeline, PipelineModel
from pyspark.sql import Column, DataFrame

from sparkles.config import TrainConfig
from sparkles.model import kinds
from sparkles.model.answers import TASK_KEY


class Evaluation(Protocol):
    """A task's held-out evaluation: its metrics, classes and per-image predictions."""

    metrics: dict[str, float]
    labels: list[str]
    predictions: pd.DataFrame

    def mistakes(self, limit: int) -> pd.DataFrame: ...


@dataclass(frozen=True, kw_only=True)
class Fitting:
    """What a fit is made of: the profile's classifier settings, one setting of its searchable
    parameters, the feature length and the classes (sorted)."""

    settings: TrainConfig
    params: kinds.Params
    n_features: int
    labels: list[str]


class Task(ABC):
    name: ClassVar[str]
    policies: ClassVar[tuple[str, ...]]  # the data.multi_label_policy values that choose it
    selectable: ClassVar[tuple[str, ...]]  # metrics tune.metric and registry.metric may name
    shown: ClassVar[tuple[str, ...]]  # what a command prints of the test metrics
    outputs: ClassVar[list[str]]  # the scoring model's outputs, null on quarantined rows

    # --- training ------------------------------------------------------------------------
    @abstractmethod
    def fit_rows(self, rows: DataFrame, labels: list[str]) -> DataFrame:
        """The training table's rows (one per image and class) as the pipeline fits on them."""

    def train_images(self, fit_rows: DataFrame, counts: dict[str, int]) -> int:
        """How many images (or rows) the model was fitted on, for ``count_train``."""
        return sum(counts.values())

    @abstractmethod
    def pipeline(self, fitting: Fitting) -> Pipeline:
        """The classifier kind's stages in this task's frame."""

    @abstractmethod
    def validate(self, fitting: Fitting, rounds: list[tuple[DataFrame, DataFrame]]) -> dict:
        """``val_*`` metrics of one setting over (fit on, held out) rounds of ``fit_rows``."""

    @abstractmethod
    def test(
        self, fitted: PipelineModel, test_rows: DataFrame, validation: dict[str, float]
    ) -> Evaluation:
        """The fitted model (finished with what validation chose) on the test split's rows."""

    @abstractmethod
    def plot(self, evaluation: Any, folder: Path) -> None:
        """The task's own evaluation plots (beside the label distribution and the gallery)."""

    # --- the fitted model ----------------------------------------------------------------
    @abstractmethod
    def class_labels(self, model: PipelineModel) -> list[str]:
        """Class names in the order of the model's probability vector."""

    @abstractmethod
    def classifier_model(self, fitted: PipelineModel) -> PipelineModel:
        """What scores stored features: the fitted pipeline and the stages naming its answer."""

    @abstractmethod
    def numbers(self, fitted: PipelineModel) -> dict[str, Any]:
        """The fitted classifier as plain numbers (classifier.json, the JVM-free scorer's)."""

    def classifier_parameters(self, fitted: PipelineModel) -> dict[str, Any]:
        return {TASK_KEY: self.name, **self.numbers(fitted)}

    # --- deploy --------------------------------------------------------------------------
    @abstractmethod
    def rescore(self, model: PipelineModel, images: DataFrame, metric: str) -> float:
        """``metric`` of ``model`` on labelled ``images`` (rows per image and class), scoring
        each image once; quarantined images left out."""

    @abstractmethod
    def answer_columns(self, present: Column, probability: Column) -> list[Column]:
        """`predict`'s answer columns from the scoring model's output."""

    def for_csv(self, predictions: DataFrame) -> DataFrame:
        """The predictions as CSV can hold them."""
        return predictions
