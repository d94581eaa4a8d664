"""The commands that make MLflow runs: train alone, main (featurize → train), and tune.

One run per `main`, not a parent with children: the runs table then has one row per trained
model, with its metrics, its cache fingerprint and its weights side by side, which is what people
compare. Featurize-only runs stay separate (`sparkles featurize`). A search is the one place with
nested runs: a parent per search, a child per trial.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import mlflow
from pyspark.sql import SparkSession

from sparkles import classifiers, plots, tracking
from sparkles.config import Profile
from sparkles.features import (
    FeaturizeResult,
    committed_features,
    featurize,
    log_features_source,
    log_featurize,
    summary,
)
from sparkles.names import BEST_RUN_TAG, TRIALS_TAG, TUNING_ARTIFACTS
from sparkles.splits import split_params, train_and_test
from sparkles.train import log_training, read_once, train
from sparkles.tune import search

log = logging.getLogger(__name__)


def _train_and_log(
    profile: Profile,
    spark: SparkSession,
    featurized: FeaturizeResult,
    params: classifiers.Params | None = None,
    validation: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Fit, evaluate and log one model (the profile's classifier parameters unless given)."""
    params = classifiers.default_params(profile.train) if params is None else params
    result = train(profile, spark, featurized.table, params, validation)
    log_training(result, spark, profile, featurized, params)
    metrics = {k: round(v, 6) for k, v in result.metrics.items()}
    log.info(
        "accuracy %.4f  f1 %.4f  auc %.4f on %d test images",
        metrics["accuracy"],
        metrics["f1"],
        metrics.get("auc", float("nan")),
        metrics["count_test"],
    )
    return {"featurize": summary(featurized), "metrics": metrics}


def run_train(profile: Profile, spark: SparkSession, features: str | None = None) -> dict[str, Any]:
    """Train on a committed training table (``features``: a run id; else the newest that
    matches the profile). Reads features only: no image, no CNN."""
    with tracking.run(profile, "train") as active:
        profile, featurized, source = committed_features(
            profile, spark, active.info.experiment_id, features
        )
        log_features_source(featurized, source)
        outcome = _train_and_log(profile, spark, featurized)
    return {"run_id": active.info.run_id, "features_run_id": source.info.run_id, **outcome}


def run_main(profile: Profile, spark: SparkSession, refresh: bool = False) -> dict[str, Any]:
    """Featurize (reusing the cache when it can) and train, in one MLflow run."""
    with tracking.run(profile, "main") as active:
        featurized = featurize(profile, spark, refresh=refresh)
        log_featurize(featurized, spark, profile)
        outcome = _train_and_log(profile, spark, featurized)
    return {"run_id": active.info.run_id, **outcome}


def run_tune(
    profile: Profile,
    spark: SparkSession,
    method: str,
    max_evals: int,
    metric: str,
    features: str | None = None,
) -> dict[str, Any]:
    """A parent run with one nested run per trial; the winner is refit and tested in the parent.

    Reads a committed training table only (as ``run_train``): a search never reads an image.
    """
    profile = profile.model_copy(
        update={"tune": profile.tune.model_copy(update={"method": method, "metric": metric})}
    )
    with tracking.run(profile, f"tune-{method}") as active:
        profile, featurized, source = committed_features(
            profile, spark, active.info.experiment_id, features
        )
        log_features_source(featurized, source)
        settings = profile.tune
        mlflow.log_params(
            {
                "tune_method": method,
                "tune_metric": metric,
                "tune_max_evals": max_evals
                if method == "hyperopt"
                else len(classifiers.grid_points(profile.train, settings)),
                "tune_validation": settings.validation,
                "tune_seed": settings.seed,
            }
        )
        with read_once(featurized.table.features()) as features:
            train_set, _ = train_and_test(features, split_params(profile.train))
            n_classes = train_set.select("label").distinct().count()
            found = search(profile, train_set, n_classes, method, max_evals)
        best = found.best
        mlflow.set_tags({BEST_RUN_TAG: best.run_id, TRIALS_TAG: len(found.trials)})
        mlflow.log_metric(f"best_val_{metric}", best.metrics[f"val_{metric}"])
        with tempfile.TemporaryDirectory() as folder:
            axes = classifiers.kind_of(profile.train).search_axes
            plots.plot_search(found, axes, Path(folder) / "search.png")
            mlflow.log_artifacts(folder, artifact_path=TUNING_ARTIFACTS)
        validation = {k: v for k, v in best.metrics.items() if k.startswith("val_")}
        outcome = _train_and_log(profile, spark, featurized, best.params, validation)
    return {
        "run_id": active.info.run_id,
        "features_run_id": source.info.run_id,
        "best": {**best.params, "run_id": best.run_id, **best.metrics},
        "trials": len(found.trials),
        **outcome,
    }  # fmt: skip
