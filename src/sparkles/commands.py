"""Every command that makes an MLflow run, side by side: featurize, train, main (featurize →
train), tune and eda. Each opens its run here and calls the modules that do the work.

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
from pyspark.sql import DataFrame, SparkSession

from sparkles import plots
from sparkles.config import Profile
from sparkles.data.eda import EdaResult, compute, write_report
from sparkles.features.featurize import FeaturizeResult, featurize, summary
from sparkles.features.lineage import committed_features, log_features_source, log_featurize
from sparkles.model import classifiers, kinds
from sparkles.names import BEST_RUN_TAG, EDA_ARTIFACTS, LABEL, TRIALS_TAG, TUNING_ARTIFACTS
from sparkles.observe import observed_run
from sparkles.progress import step
from sparkles.tasks.catalog import check_profile
from sparkles.train.fit import log_training, read_once, train
from sparkles.train.splits import split_params, train_and_test
from sparkles.train.tune import search

log = logging.getLogger(__name__)


def _train_and_log(
    profile: Profile,
    spark: SparkSession,
    featurized: FeaturizeResult,
    *,
    params: kinds.Params | None = None,
    validation: dict[str, float] | None = None,
    split: tuple[DataFrame, DataFrame] | None = None,
) -> dict[str, Any]:
    """Fit, evaluate and log one model (the profile's classifier parameters unless given;
    ``split``: the training table as the command already read and split it)."""
    params = classifiers.default_params(profile.train) if params is None else params
    result = train(profile, featurized.table, params, validation=validation, split=split)
    log_training(result, spark, profile=profile, featurized=featurized, params=params)
    metrics = {k: round(v, 6) for k, v in result.metrics.items()}
    said = "  ".join(f"{name} {metrics[name]:.4f}" for name in result.task.shown)
    log.info("%s on %d test images", said, metrics["count_test"])
    return {"featurize": summary(featurized), "metrics": metrics}


def run_train(profile: Profile, spark: SparkSession, features: str | None = None) -> dict[str, Any]:
    """Train on a committed training table (``features``: a run id; else the newest that
    matches the profile). Reads features only: no image, no CNN."""
    check_profile(profile)  # a notebook's profile too, not only the CLI's
    with observed_run(profile, spark, "train") as active:
        profile, featurized, source = committed_features(
            profile, spark, experiment_id=active.info.experiment_id, run_id=features
        )
        log_features_source(featurized, source)
        outcome = _train_and_log(profile, spark, featurized)
    return {"run_id": active.info.run_id, "features_run_id": source.info.run_id, **outcome}


def run_main(
    profile: Profile, spark: SparkSession, *, refresh: bool = False, rehash: bool = False
) -> dict[str, Any]:
    """Featurize (reusing the cache when it can) and train, in one MLflow run."""
    check_profile(profile)  # a notebook's profile too, not only the CLI's
    with observed_run(profile, spark, "main") as active:
        featurized = featurize(profile, spark, refresh=refresh, rehash=rehash)
        log_featurize(featurized, spark, profile)
        outcome = _train_and_log(profile, spark, featurized)
    return {"run_id": active.info.run_id, **outcome}


def run_tune(profile: Profile, spark: SparkSession, features: str | None = None) -> dict[str, Any]:
    """The profile's search (``tune``: method, max_evals, metric): a parent run with one nested
    run per trial; the winner is refit and tested in the parent.

    Reads a committed training table only (as ``run_train``): a search never reads an image.
    """
    check_profile(profile)  # a notebook's profile too, not only the CLI's
    method, max_evals, metric = profile.tune.method, profile.tune.max_evals, profile.tune.metric
    with observed_run(profile, spark, f"tune-{method}") as active:
        profile, featurized, source = committed_features(
            profile, spark, experiment_id=active.info.experiment_id, run_id=features
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
        # read and split once, for the search and the winner's refit
        with read_once(featurized.table.features()) as features:
            split = train_and_test(features, split_params(profile.train))
            train_set = split[0]
            with step(spark, "search: classes and validation folds"):
                labels = sorted(r[LABEL] for r in train_set.select(LABEL).distinct().collect())
            found = search(profile, train_set, labels, method=method, max_evals=max_evals)
            best = found.best
            mlflow.set_tags({BEST_RUN_TAG: best.run_id, TRIALS_TAG: len(found.trials)})
            mlflow.log_metric(f"best_val_{metric}", best.metrics[f"val_{metric}"])
            with tempfile.TemporaryDirectory() as folder:
                axes = classifiers.kind_of(profile.train).search_axes
                plots.plot_search(found, axes, Path(folder) / "search.png")
                mlflow.log_artifacts(folder, artifact_path=TUNING_ARTIFACTS)
            validation = {k: v for k, v in best.metrics.items() if k.startswith("val_")}
            outcome = _train_and_log(
                profile, spark, featurized, params=best.params, validation=validation, split=split
            )
    return {
        "run_id": active.info.run_id,
        "features_run_id": source.info.run_id,
        "best": {**best.params, "run_id": best.run_id, **best.metrics},
        "trials": len(found.trials),
        **outcome,
    }


def run_featurize(
    profile: Profile, spark: SparkSession, *, refresh: bool = False, rehash: bool = False
) -> FeaturizeResult:
    with observed_run(profile, spark, "featurize"):
        result = featurize(profile, spark, refresh=refresh, rehash=rehash)
        log_featurize(result, spark, profile)
    return result


def run_eda(profile: Profile, spark: SparkSession, output: str | None = None) -> EdaResult:
    """Compute, write the folder, and log everything to an MLflow run named ``eda``."""
    settings, data = profile.eda, profile.data
    with observed_run(profile, spark, "eda"):
        result = compute(
            spark,
            labels_csv=data.labels_csv,
            classes_csv=data.classes_csv,
            classes=data.classes,
            top_n=settings.top_n,
            top_k=settings.top_k,
            images=data.images if settings.image_sizes else None,
            image_glob=data.image_glob,
        )
        folder = Path(output or settings.output_dir or tempfile.mkdtemp(prefix="sparkles-eda-"))
        write_report(result, folder)
        mlflow.log_params({"eda_top_n": settings.top_n, "eda_top_k": settings.top_k})
        numbers = {k: v for k, v in result.summary.items() if isinstance(v, int | float)}
        mlflow.log_metrics({f"eda_{k}": float(v) for k, v in numbers.items()})
        mlflow.log_artifacts(str(folder), artifact_path=EDA_ARTIFACTS)
    return result
