"""The rounds validation metrics are computed on: what a search trial scores (``val_*``) and
what a train/main run logs beside its test metrics (which `promote` selects on). Below both
train and tune; each round is fitted and scored by the task (``Task.validate``).

Selection never sees the test split: the validation split is carved from the training split
(or k stratified folds of it).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from pyspark import StorageLevel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from sparkles.config import Profile, TuneConfig
from sparkles.tasks.base import Task
from sparkles.train.splits import FOLD, stratified_folds, stratified_split

Rounds = list[tuple[DataFrame, DataFrame]]  # (fit on, held out) per round


def validation_folds(train_set: DataFrame, settings: TuneConfig) -> tuple[DataFrame, list[int]]:
    """The training split with a ``fold`` column, and which folds are validated in turn."""
    if settings.validation == "cv":
        return stratified_folds(train_set, settings.folds, settings.seed), list(
            range(settings.folds)
        )
    rest, held_out = stratified_split(train_set, settings.validation_fraction, settings.seed)
    tagged = rest.withColumn(FOLD, F.lit(1)).unionByName(held_out.withColumn(FOLD, F.lit(0)))
    return tagged, [0]


@contextmanager
def validation_rounds(
    profile: Profile, task: Task, *, train_set: DataFrame, labels: list[str]
) -> Iterator[Rounds]:
    """``validation_folds`` of the training split as the task fits on them, persisted while the
    block runs: (fit on, held out) per round."""
    folds, rounds = validation_folds(train_set, profile.tune)
    data = task.fit_rows(folds, labels).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        yield [(data.where(F.col(FOLD) != k), data.where(F.col(FOLD) == k)) for k in rounds]
    finally:
        data.unpersist()
