"""Validation metrics of one classifier setting: what a search trial scores and what a
train/main run logs as ``val_*`` (which `promote` selects on). Below both train and tune.

Selection never sees the test split: the validation split is carved from the training split
(or k stratified folds of it).
"""

from __future__ import annotations

import numpy as np
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from sparkles.config import Profile, TuneConfig
from sparkles.model import kinds
from sparkles.model.stages import classifier_model, training_pipeline
from sparkles.train.evaluate import headline_metrics
from sparkles.train.splits import FOLD, stratified_folds, stratified_split


def validation_folds(train_set: DataFrame, settings: TuneConfig) -> tuple[DataFrame, list[int]]:
    """The training split with a ``fold`` column, and which folds are validated in turn."""
    if settings.validation == "cv":
        return stratified_folds(train_set, settings.folds, settings.seed), list(
            range(settings.folds)
        )
    rest, held_out = stratified_split(train_set, settings.validation_fraction, settings.seed)
    tagged = rest.withColumn(FOLD, F.lit(1)).unionByName(held_out.withColumn(FOLD, F.lit(0)))
    return tagged, [0]


def validate(
    profile: Profile,
    data: DataFrame,
    rounds: list[int],
    n_classes: int,
    n_features: int,
    params: kinds.Params,
) -> dict[str, float]:
    """Validation metrics of one setting: fit without each held-out fold, score it, average.

    ``data`` carries the ``fold`` column of ``validation_folds``. A trial, and the validation
    metrics of a `main`/`train` run (what `promote` selects on), are both this.
    """
    per_round: list[dict[str, float]] = []
    for held_out in rounds:
        pipeline = training_pipeline(profile.train, params, n_features, n_classes)
        model = pipeline.fit(data.where(F.col(FOLD) != held_out))
        scored = classifier_model(model).transform(data.where(F.col(FOLD) == held_out))
        per_round.append(headline_metrics(scored, n_classes))
    return {f"val_{k}": float(np.mean([m[k] for m in per_round])) for k in per_round[0]}
