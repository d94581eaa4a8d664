"""What a served model answers, per task, with no Spark: the JVM-free half of a task
(``sparkles.tasks`` holds the Spark half).

A logged model says its task in one place, ``classifier.json``'s ``task``; models logged before
it said so default from what they wrote (``multi_label: true``, or nothing for single-label),
in ``task_of_numbers`` and nowhere else. Each task's ``Answer`` turns the classifier's numbers
into probabilities and the answer columns, and declares those columns for the signature. A new
task registers its answer in ``ANSWERS``. This module must never import pyspark (the served
model imports it).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pandas as pd
from mlflow.types import ColSpec
from mlflow.types.schema import Array

from sparkles.model.classifiers import kind_of_numbers
from sparkles.names import MULTI_LABEL, PREDICTED_LABELS, PREDICTION, SINGLE_LABEL

TASK_KEY = "task"  # classifier.json's key naming the model's task


def task_of_numbers(classifier: dict[str, Any]) -> str:
    """The task a logged model's ``classifier.json`` says; older ones default from their keys."""
    if TASK_KEY in classifier:
        return str(classifier[TASK_KEY])
    return MULTI_LABEL if classifier.get("multi_label") else SINGLE_LABEL


def said(chances: np.ndarray, thresholds: list[float], at_least_one: bool) -> np.ndarray:
    """(n, classes) booleans: the classes a multi-label model says, as its LabelSet stage does
    (those reaching their threshold; the likeliest where none does, with ``at_least_one``)."""
    reached = chances >= np.asarray(thresholds)
    if at_least_one:
        none = ~reached.any(axis=1)
        reached[none, chances[none].argmax(axis=1)] = True
    return reached


class Answer:
    """A single-label model's answer: ``prediction``, the likeliest class."""

    columns: ClassVar[list[ColSpec]] = [ColSpec("string", PREDICTION, required=False)]

    def __init__(self, classifier: dict[str, Any]) -> None:
        self.classifier = classifier
        self.labels: list[str] = classifier["labels"]

    def input_length(self) -> int:
        return kind_of_numbers(self.classifier).input_length(self.classifier)

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        """(n, classes) probabilities, as Spark computes them from the same numbers."""
        return kind_of_numbers(self.classifier).probabilities(self.classifier, features)

    def answer(self, probabilities: np.ndarray, scored: np.ndarray) -> pd.DataFrame:
        """The answer columns; None where an image was not ``scored`` (quarantined)."""
        names = np.asarray(self.labels, dtype=object)[probabilities.argmax(axis=1)]
        return pd.DataFrame({PREDICTION: np.where(scored, names, None)})


class SetAnswer(Answer):
    """A multi-label model's answer: ``predicted_labels``, the classes whose probability (each
    by its class's own binary classifier) reaches their threshold."""

    columns: ClassVar[list[ColSpec]] = [ColSpec(Array("string"), PREDICTED_LABELS, required=False)]

    def input_length(self) -> int:
        first = self.classifier["classes"][0]
        return kind_of_numbers(self.classifier).input_length(first)

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        kind = kind_of_numbers(self.classifier)
        each = [
            kind.probabilities(numbers, features)[:, 1] for numbers in self.classifier["classes"]
        ]
        return np.stack(each, axis=1)

    def answer(self, probabilities: np.ndarray, scored: np.ndarray) -> pd.DataFrame:
        numbers = self.classifier
        yes = said(probabilities, numbers["thresholds"], numbers.get("at_least_one", False))
        sets = [[name for name, on in zip(self.labels, row, strict=True) if on] for row in yes]
        answers = [s if ok else None for s, ok in zip(sets, scored, strict=True)]
        return pd.DataFrame({PREDICTED_LABELS: pd.Series(answers, dtype=object)})


ANSWERS: dict[str, type[Answer]] = {SINGLE_LABEL: Answer, MULTI_LABEL: SetAnswer}


def answer_for(classifier: dict[str, Any]) -> Answer:
    """The answer of the task ``classifier`` (a model's classifier.json) says."""
    task = task_of_numbers(classifier)
    if task not in ANSWERS:
        raise ValueError(f"a model of task {task!r}, which this release cannot serve")
    return ANSWERS[task](classifier)
