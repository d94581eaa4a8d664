"""Grid and hyperopt (TPE) searches on cached features, over the classifier's own space
(``classifiers``: regParam × elasticNetParam of the logistic regression; layers, stepSize,
maxIter of the perceptron).

Selection is honest: every trial is scored on a validation split carved from the training split
(or k folds of it); the test split is touched once, by the refit winner. Each trial is a nested
MLflow run; the feature table is persisted once and only the classifier runs per trial.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import mlflow
import numpy as np
from hyperopt import STATUS_OK, Trials, fmin, tpe
from pyspark.sql import DataFrame

from sparkles import tracking
from sparkles.config import Profile
from sparkles.model import classifiers, kinds
from sparkles.model.kinds import describe_params
from sparkles.model.stages import feature_length
from sparkles.observe import tagged_jobs
from sparkles.progress import step
from sparkles.tasks.base import Fitting
from sparkles.tasks.catalog import task_for
from sparkles.tracking import loggable
from sparkles.train.validation import Rounds, validation_rounds

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

    def __init__(self, profile: Profile, rounds: Rounds, fitting: Fitting) -> None:
        self.profile, self.settings, self.task = profile, profile.tune, task_for(profile)
        self.rounds, self.fitting = rounds, fitting
        self.search = Search(self.settings.metric)

    def _validate(self, params: kinds.Params) -> dict[str, float]:
        started = time.monotonic()
        fitting = dataclasses.replace(self.fitting, params=params)
        metrics = self.task.validate(fitting, self.rounds)
        metrics["fit_seconds"] = time.monotonic() - started
        return metrics

    def trial(self, params: kinds.Params) -> Trial:
        """One nested run: params, validation metrics, time. Interrupted → KILLED, re-raised."""
        number = len(self.search.trials) + 1
        with tracking.run(self.profile, f"trial-{number:03d}", nested=True) as child:
            mlflow.log_params(loggable(params))
            spark = self.rounds[0][0].sparkSession
            with tagged_jobs(spark, child.info.run_id), step(spark, f"trial-{number:03d}"):
                metrics = self._validate(params)
            mlflow.log_metrics(metrics)
        trial = Trial(number, params, metrics, child.info.run_id)
        self.search.trials.append(trial)
        log.info(
            "trial %d: %s -> val_%s=%.4f (%.1f s)",
            number,
            describe_params(params),
            self.settings.metric,
            metrics[f"val_{self.settings.metric}"],
            metrics["fit_seconds"],
        )
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
    profile: Profile, train_set: DataFrame, labels: list[str], *, method: str, max_evals: int
) -> Search:
    """The profile's search over its classifier kind's space, on ``train_set`` (never the
    test split): one nested run per trial."""
    task = task_for(profile)
    with validation_rounds(profile, task, train_set=train_set, labels=labels) as rounds:
        with step(train_set.sparkSession, "search: classes and validation folds"):
            n_features = feature_length(rounds[0][0])
        fitting = Fitting(
            settings=profile.train,
            params=classifiers.default_params(profile.train),
            n_features=n_features,
            labels=labels,
        )
        searcher = Searcher(profile, rounds, fitting)
        runners: dict[str, Callable[[], Search]] = {
            "grid": searcher.run_grid,
            "hyperopt": lambda: searcher.run_hyperopt(max_evals),
        }
        return runners[method]()
