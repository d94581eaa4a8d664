"""Validation metrics of one classifier setting: what a search trial scores and what a
train/main run logs as ``val_*`` (which `promote` selects on). Below both train and tune.

Selection never sees the test split: the validation split is carved from the training split
(or k stratified folds of it).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from sparkles.config import Profile, TuneConfig
from sparkles.model import kinds
from sparkles.model.label_sets import label_sets, multi_label_pipeline, with_targets
from sparkles.model.stages import classifier_model, training_pipeline
from sparkles.train import evaluate_sets as sets
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


def validation_data(
    profile: Profile, train_set: DataFrame, labels: list[str]
) -> tuple[DataFrame, list[int]]:
    """``validation_folds`` of the training split, as the profile's classifier fits on it: rows
    per (image, class), or under multi-label one row per image with its classes' targets."""
    data, rounds = validation_folds(train_set, profile.tune)
    return (with_targets(label_sets(data), labels) if profile.multi_label else data), rounds


def validate(
    profile: Profile,
    data: DataFrame,
    rounds: list[int],
    labels: list[str],
    n_features: int,
    params: kinds.Params,
) -> dict[str, float]:
    """Validation metrics of one setting: fit without each held-out fold, score it, average.

    ``data`` is ``validation_data``. A trial, and the validation metrics of a `main`/`train`
    run (what `promote` selects on), are both this.
    """
    if profile.multi_label:
        return _validate_sets(profile, data, rounds, labels, n_features, params)
    n_classes = len(labels)
    per_round: list[dict[str, float]] = []
    for held_out in rounds:
        pipeline = training_pipeline(profile.train, params, n_features, n_classes)
        model = pipeline.fit(data.where(F.col(FOLD) != held_out))
        scored = classifier_model(model).transform(data.where(F.col(FOLD) == held_out))
        per_round.append(headline_metrics(scored, n_classes))
    return {f"val_{k}": float(np.mean([m[k] for m in per_round])) for k in per_round[0]}


def _validate_sets(
    profile: Profile,
    data: DataFrame,
    rounds: list[int],
    labels: list[str],
    n_features: int,
    params: kinds.Params,
) -> dict[str, float]:
    """A multi-label setting's validation metrics on the held-out scores of every round pooled
    (with ``cv`` each image is held out once), and each class's threshold chosen on them,
    carried as ``val_threshold_<class>`` to the refit model. The threshold-dependent metrics
    (F1s, subset accuracy, Hamming loss) are measured at thresholds chosen on these very scores,
    so they flatter a little; AUC does not depend on them, and the test split never sees this."""
    held_out_scores = []
    for held_out in rounds:
        pipeline = multi_label_pipeline(profile.train, params, n_features, labels)
        model = pipeline.fit(data.where(F.col(FOLD) != held_out))
        held_out_scores.append(
            sets.set_scores(model.transform(data.where(F.col(FOLD) == held_out)), labels)
        )
    pooled = pd.concat(held_out_scores, ignore_index=True)
    thresholds = sets.choose_thresholds(pooled, labels)
    metrics = sets.set_metrics(pooled, labels, thresholds)
    chosen = {sets.threshold_metric(name): t for name, t in zip(labels, thresholds, strict=True)}
    return {**{f"val_{name}": metrics[name] for name in sets.HEADLINE}, **chosen}
