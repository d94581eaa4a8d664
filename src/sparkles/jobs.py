"""The commands that make one MLflow run each: train alone, and main (featurize → train).

One run per `main`, not a parent with children: the runs table then has one row per trained
model, with its metrics, its cache fingerprint and its weights side by side, which is what people
compare. Featurize-only runs stay separate (`sparkles featurize`).
"""

from __future__ import annotations

import logging
from typing import Any

from pyspark.sql import SparkSession

from sparkles import tracking
from sparkles.config import Profile
from sparkles.features import featurize, log_featurize, summary
from sparkles.train import log_training, train

log = logging.getLogger(__name__)


def _train_and_log(profile: Profile, spark: SparkSession, featurized) -> dict[str, Any]:
    settings = profile.train
    result = train(profile, spark, featurized.entry, settings.reg_param, settings.elastic_net_param)
    log_training(result, spark, profile, featurized, settings.reg_param, settings.elastic_net_param)
    metrics = {k: round(v, 6) for k, v in result.metrics.items()}
    log.info(
        "accuracy %.4f  f1 %.4f  auc %.4f on %d test images",
        metrics["accuracy"],
        metrics["f1"],
        metrics.get("auc", float("nan")),
        metrics["count_test"],
    )
    return {"featurize": summary(featurized), "metrics": metrics}


def run_train(profile: Profile, spark: SparkSession) -> dict[str, Any]:
    """Train on an existing cache entry; never runs the CNN."""
    with tracking.run(profile, "train") as active:
        featurized = featurize(profile, spark, compute=False)
        log_featurize(featurized, spark, profile)
        outcome = _train_and_log(profile, spark, featurized)
    return {"run_id": active.info.run_id, **outcome}


def run_main(profile: Profile, spark: SparkSession, refresh: bool = False) -> dict[str, Any]:
    """Featurize (reusing the cache when it can) and train, in one MLflow run."""
    with tracking.run(profile, "main") as active:
        featurized = featurize(profile, spark, refresh=refresh)
        log_featurize(featurized, spark, profile)
        outcome = _train_and_log(profile, spark, featurized)
    return {"run_id": active.info.run_id, **outcome}
