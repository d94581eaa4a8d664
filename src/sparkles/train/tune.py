"""Grid and hyperopt (TPE) searches on cached features, over the classifier's own space
(``classifiers``: regParam × elasticNetParam of the logistic regression; layers, stepSize,
maxIter of the perceptron).

Selection is honest: every trial is scored on a validation split carved from the training split
(or k folds of it); the test split is touched once, by the refit winner. Each trial is a nested
MLflow run; the feature table is persisted once and only the classifier runs per trial.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import mlflow
import numpy as np
from hyperopt import STATUS_OK, Trials, fmin, tpe
from pyspark import StorageLevel
from pyspark.sql import DataFrame

from sparkles import tracking
from sparkles.config import Profile
from sparkles.model import classifiers, kinds
from sparkles.model.kinds import describe_params
from sparkles.model.stages import feature_length
from sparkles.observe import tagged_jobs
from sparkles.progress import step
from sparkles.tracking import loggable
from sparkles.train.validation import validate, validation_data

log = logging.getLogger(__name__)


@dataclass
class Trial:
    number: int
    params: kinds.Params
    metrics: dict[str, float]  # val_<metric> (validation.validate), fit_seconds
    run_id: str


@dataclass
class Search:
    metric: str
    trials: list[Trial] = field(default_factory=list)

    @property
    def best(self) -> Trial:
        """Highest validation metric; a tie goes to the earliest trial."""
        return max(self.trials, key=lambda t: (t.metrics[f"val_{self.metric}"], -t.number))


class Searcher:
    """Runs trials against one persisted, fold-tagged training split."""

    def __init__(self, profile: Profile, train_set: DataFrame, labels: list[str]) -> None:
        self.profile = profile
        self.settings = profile.tune
        self.labels = labels
        self.data, self.rounds = validation_data(profile, train_set, labels)
        self.data = self.data.persist(StorageLevel.MEMORY_AND_DISK)
        with step(train_set.sparkSession, "search: classes and validation folds"):
            self.n_features = feature_length(self.data)
        self.search = Search(self.settings.metric)

    def close(self) -> None:
        self.data.unpersist()

    def _validate(self, params: kinds.Params) -> dict[str, float]:
        started = time.monotonic()
        metrics = validate(
            self.profile, self.data, self.rounds, self.labels, self.n_features, params
        )
        metrics["fit_seconds"] = time.monotonic() - started
        return metrics

    def trial(self, params: kinds.Params) -> Trial:
        """One nested run: params, validation metrics, time. Interrupted → KILLED, re-raised."""
        number = len(self.search.trials) + 1
        with tracking.run(self.profile, f"trial-{number:03d}", nested=True) as child:
            mlflow.log_params(loggable(params))
            spark = self.data.sparkSession
            with tagged_jobs(spark, child.info.run_id), step(spark, f"trial-{number:03d}"):
                metrics = self._validate(params)
            mlflow.log_metrics(metrics)
        trial = Trial(number, params, metrics, child.info.run_id)
        self.search.trials.append(trial)
        log.info(
            "trial %d: %s -> val_%s=%.4f (%.1f s)",
            number, describe_params(params), self.settings.metric,
            metrics[f"val_{self.settings.metric}"], metrics["fit_seconds"],
        )  # fmt: skip
        return trial

    def run_grid(self) -> Search:
        points = classifiers.grid_points(self.profile.train, self.settings)
        for index, params in enumerate(points, start=1):
            log.info("grid point %d/%d", index, len(points))
            self.trial(params)
        return self.search

    def run_hyperopt(self, max_evals: int) -> Search:
        kind = classifiers.kind_of(self.profile.train)

        def objective(sample: dict) -> dict:
            trial = self.trial(kind.from_sample(sample))
            return {"loss": -trial.metrics[f"val_{self.settings.metric}"], "status": STATUS_OK}

        fmin(
            objective,
            kind.hyperopt_space(self.profile.train, self.settings),
            algo=tpe.suggest,
            max_evals=max_evals,
            trials=Trials(),  # not SparkTrials: MLlib already runs each fit on the cluster
            rstate=np.random.default_rng(self.settings.seed),
            show_progressbar=sys.stderr.isatty(),
        )
        return self.search


def search(
    profile: Profile, train_set: DataFrame, labels: list[str], method: str, max_evals: int
) -> Search:
    searcher = Searcher(profile, train_set, labels)
    try:
        runners: dict[str, Callable[[], Search]] = {
            "grid": searcher.run_grid,
            "hyperopt": lambda: searcher.run_hyperopt(max_evals),
        }
        return runners[method]()
    finally:
        searcher.close()
