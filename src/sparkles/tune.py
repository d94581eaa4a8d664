"""Grid and hyperopt (TPE) searches over regParam × elasticNetParam on cached features.

Selection is honest: every trial is scored on a validation split carved from the training split
(or k folds of it); the test split is touched once, by the refit winner. Each trial is a nested
MLflow run; the feature table is persisted once and only LogisticRegression runs per trial.
"""

from __future__ import annotations

import itertools
import logging
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import numpy as np
from hyperopt import STATUS_OK, Trials, fmin, hp, tpe
from matplotlib.figure import Figure
from pyspark import StorageLevel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from sparkles import tracking
from sparkles.config import Profile, TuneConfig
from sparkles.evaluate import headline_metrics, save_figure
from sparkles.pipeline import classifier_model, training_pipeline
from sparkles.splits import FOLD, stratified_folds, stratified_split

log = logging.getLogger(__name__)


@dataclass
class Trial:
    number: int
    reg_param: float
    elastic_net: float
    metrics: dict[str, float]  # val_accuracy, val_f1, val_auc (means over folds), fit_seconds
    run_id: str


@dataclass
class Search:
    metric: str
    trials: list[Trial] = field(default_factory=list)

    @property
    def best(self) -> Trial:
        """Highest validation metric; a tie goes to the earliest trial."""
        return max(self.trials, key=lambda t: (t.metrics[f"val_{self.metric}"], -t.number))


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
    reg_param: float,
    elastic_net: float,
) -> dict[str, float]:
    """Validation metrics of one setting: fit without each held-out fold, score it, average.

    ``data`` carries the ``fold`` column of ``validation_folds``. A trial, and the validation
    metrics of a `main`/`train` run (what `promote` selects on), are both this.
    """
    per_round: list[dict[str, float]] = []
    for held_out in rounds:
        pipeline = training_pipeline(profile.train, reg_param, elastic_net)
        model = pipeline.fit(data.where(F.col(FOLD) != held_out))
        scored = classifier_model(model).transform(data.where(F.col(FOLD) == held_out))
        per_round.append(headline_metrics(scored, n_classes))
    return {f"val_{k}": float(np.mean([m[k] for m in per_round])) for k in per_round[0]}


def grid_points(settings: TuneConfig) -> list[tuple[float, float]]:
    return list(itertools.product(settings.grid.regParam, settings.grid.elasticNetParam))


def hyperopt_space(settings: TuneConfig) -> dict:
    bounds = settings.hyperopt
    low, high = math.log(bounds.reg_param_min), math.log(bounds.reg_param_max)
    return {
        "regParam": hp.loguniform("regParam", low, high),
        "elasticNetParam": hp.uniform(
            "elasticNetParam", bounds.elastic_net_min, bounds.elastic_net_max
        ),
    }


class Searcher:
    """Runs trials against one persisted, fold-tagged training split."""

    def __init__(self, profile: Profile, train_set: DataFrame, n_classes: int) -> None:
        self.profile = profile
        self.settings = profile.tune
        self.n_classes = n_classes
        self.data, self.rounds = validation_folds(train_set, self.settings)
        self.data = self.data.persist(StorageLevel.MEMORY_AND_DISK)
        self.search = Search(self.settings.metric)

    def close(self) -> None:
        self.data.unpersist()

    def _validate(self, reg_param: float, elastic_net: float) -> dict[str, float]:
        started = time.monotonic()
        metrics = validate(
            self.profile, self.data, self.rounds, self.n_classes, reg_param, elastic_net
        )
        metrics["fit_seconds"] = time.monotonic() - started
        return metrics

    def trial(self, reg_param: float, elastic_net: float) -> Trial:
        """One nested run: params, validation metrics, time. Interrupted → KILLED, re-raised."""
        number = len(self.search.trials) + 1
        with tracking.run(self.profile, f"trial-{number:03d}", nested=True) as child:
            mlflow.log_params({"regParam": reg_param, "elasticNetParam": elastic_net})
            metrics = self._validate(reg_param, elastic_net)
            mlflow.log_metrics(metrics)
        trial = Trial(number, reg_param, elastic_net, metrics, child.info.run_id)
        self.search.trials.append(trial)
        log.info(
            "trial %d: regParam=%.3g elasticNetParam=%.3f -> val_%s=%.4f (%.1f s)",
            number, reg_param, elastic_net, self.settings.metric,
            metrics[f"val_{self.settings.metric}"], metrics["fit_seconds"],
        )  # fmt: skip
        return trial

    def run_grid(self) -> Search:
        points = grid_points(self.settings)
        for index, (reg_param, elastic_net) in enumerate(points, start=1):
            log.info("grid point %d/%d", index, len(points))
            self.trial(reg_param, elastic_net)
        return self.search

    def run_hyperopt(self, max_evals: int) -> Search:
        def objective(params: dict[str, float]) -> dict:
            trial = self.trial(float(params["regParam"]), float(params["elasticNetParam"]))
            return {"loss": -trial.metrics[f"val_{self.settings.metric}"], "status": STATUS_OK}

        fmin(
            objective,
            hyperopt_space(self.settings),
            algo=tpe.suggest,
            max_evals=max_evals,
            trials=Trials(),  # not SparkTrials: MLlib already runs each fit on the cluster
            rstate=np.random.default_rng(self.settings.seed),
            show_progressbar=sys.stderr.isatty(),
        )
        return self.search


def search(
    profile: Profile, train_set: DataFrame, n_classes: int, method: str, max_evals: int
) -> Search:
    searcher = Searcher(profile, train_set, n_classes)
    try:
        runners: dict[str, Callable[[], Search]] = {
            "grid": searcher.run_grid,
            "hyperopt": lambda: searcher.run_hyperopt(max_evals),
        }
        return runners[method]()
    finally:
        searcher.close()


def plot_search(found: Search, path: Path) -> Path:
    """Validation metric against regParam (log scale), coloured by elasticNetParam."""
    figure = Figure(figsize=(6, 4))
    axes = figure.subplots()
    metric = f"val_{found.metric}"
    points = axes.scatter(
        [t.reg_param for t in found.trials],
        [t.metrics[metric] for t in found.trials],
        c=[t.elastic_net for t in found.trials],
        cmap="viridis",
        vmin=0,
        vmax=1,
        edgecolors="black",
    )
    best = found.best
    axes.scatter(
        [best.reg_param], [best.metrics[metric]], s=250, facecolors="none", edgecolors="red"
    )
    axes.set_xscale("log")
    axes.set(
        xlabel="regParam (log scale)", ylabel=metric, title=f"Search: {len(found.trials)} trials"
    )
    figure.colorbar(points, ax=axes, label="elasticNetParam")
    return save_figure(figure, path)
