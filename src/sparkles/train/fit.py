"""Train on stored features: seeded stratified split → the profile's task and classifier kind
→ held-out evaluation → MLflow (params, metrics, plots, predictions, the model). What differs
between single- and multi-label (the rows fitted on, the pipeline's tail, thresholds, metrics,
plots) is the task's (``sparkles.tasks``).
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import mlflow
from mlflow.data.meta_dataset import MetaDataset
from mlflow.data.spark_dataset_source import SparkDatasetSource
from pyspark import StorageLevel
from pyspark.ml import PipelineModel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sparkles import plots, storage
from sparkles.config import Profile
from sparkles.data.images import read_contents
from sparkles.features.featurize import FeaturizeResult
from sparkles.features.tables import TrainingTable
from sparkles.model import classifiers, kinds
from sparkles.model import logged as logged_model
from sparkles.model.stages import feature_length, scoring_model
from sparkles.names import CLASSES_TAG, EVALUATION_ARTIFACTS, LABEL, SCORING_TAG
from sparkles.progress import step
from sparkles.tasks.base import Evaluation, Fitting, Task
from sparkles.tasks.catalog import task_for
from sparkles.tracking import loggable
from sparkles.train.splits import split_params, train_and_test
from sparkles.train.validation import validation_rounds

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    task: Task
    fitted: PipelineModel  # the task's pipeline, as fitted
    evaluation: Evaluation
    split_counts: dict[str, dict[str, int]]
    fit_seconds: float

    @property
    def metrics(self) -> dict[str, float]:
        return self.evaluation.metrics


def _split_counts(train_set: DataFrame, test_set: DataFrame) -> dict[str, dict[str, int]]:
    """Rows per class on each side of the split, in one query (one per side ran two)."""
    sides = train_set.select(LABEL, F.lit("train").alias("side")).unionByName(
        test_set.select(LABEL, F.lit("test").alias("side"))
    )
    counts: dict[str, dict[str, int]] = {"train": {}, "test": {}}
    for row in sides.groupBy("side", LABEL).count().collect():
        counts[row.side][row.label] = row["count"]
    return counts


ROWS_PER_TASK = 10_000  # 2048 floats a row: ~80 MB per task of a fit's pass


@contextmanager
def read_once(features: DataFrame) -> Iterator[DataFrame]:
    """The training table read from the store once (persisted while the block runs), in tasks
    of up to ROWS_PER_TASK rows: each LogisticRegression iteration is a Spark job over it, and a
    small table in the shuffle's many partitions spends those jobs scheduling tiny tasks."""
    persisted = features.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        with step(features.sparkSession, "read the training table"):
            rows = persisted.count()
        tasks = max(1, min(persisted.rdd.getNumPartitions(), -(-rows // ROWS_PER_TASK)))
        yield persisted.coalesce(tasks)
    finally:
        persisted.unpersist()


def train(
    profile: Profile,
    table: TrainingTable,
    params: kinds.Params,
    *,
    validation: dict[str, float] | None = None,
    split: tuple[DataFrame, DataFrame] | None = None,
) -> TrainResult:
    """Fit on the training split of a training table and evaluate on its held-out split.

    Validation metrics (``val_*``, what `promote` selects on, never the test split) are
    computed as a search trial computes them, unless given (a search's winner has them).
    ``split``: the table's (train, test) rows as the command already split them (a search's
    refit); else the table is read once and split here.
    """
    if split is not None:
        return fit_and_test(profile, split, params=params, validation=validation)
    with read_once(table.features()) as features:
        split = train_and_test(features, split_params(profile.train))
        return fit_and_test(profile, split, params=params, validation=validation)


def fit_and_test(
    profile: Profile,
    split: tuple[DataFrame, DataFrame],
    *,
    params: kinds.Params,
    validation: dict[str, float] | None,
) -> TrainResult:
    task, settings = task_for(profile), profile.train
    train_set, test_set = split
    spark = train_set.sparkSession
    train_set = train_set.persist(StorageLevel.MEMORY_AND_DISK)
    with step(spark, "split"):
        counts = _split_counts(train_set, test_set)
    if len(counts["train"]) < 2:
        raise ValueError(f"training split has classes {sorted(counts['train'])}: need two or more")
    labels = sorted(counts["train"])
    fitting = Fitting(
        settings=settings, params=params, n_features=feature_length(train_set), labels=labels
    )
    fit_rows = task.fit_rows(train_set, labels).persist(StorageLevel.MEMORY_AND_DISK)
    log.info("fitting a %s classifier on %s", settings.classifier, counts["train"])
    started = time.monotonic()
    with step(spark, f"fit {settings.classifier}"):
        fitted = task.pipeline(fitting).fit(fit_rows)
    fit_seconds = time.monotonic() - started
    log.info("fitted in %.1f s; evaluating on %s", fit_seconds, counts["test"])
    if validation is None:
        with (
            validation_rounds(profile, task, train_set=train_set, labels=labels) as rounds,
            step(spark, "validate"),
        ):
            validation = task.validate(fitting, rounds)
    train_images = task.train_images(fit_rows, counts["train"])
    fit_rows.unpersist()
    train_set.unpersist()
    with step(spark, "evaluate on the test split"):
        evaluation = task.test(fitted, test_set, validation)
    evaluation.metrics["count_train"] = float(train_images)
    evaluation.metrics["fit_seconds"] = fit_seconds
    evaluation.metrics.update(validation)
    return TrainResult(task, fitted, evaluation, counts, fit_seconds)


def gallery_images(spark: SparkSession, paths: list[str]) -> dict[str, bytes]:
    """The bytes of the few images the misclassified gallery shows: the only image files train
    and tune read. One no longer where it was featurized is left out (drawn as its title)."""
    present = [path for path in paths if storage.exists(spark, path)]
    rows = read_contents(spark, present).collect() if present else []
    return {row.path: bytes(row.content) for row in rows}


def log_training(
    result: TrainResult,
    spark: SparkSession,
    *,
    profile: Profile,
    featurized: FeaturizeResult,
    params: kinds.Params,
) -> None:
    """Everything a reader of the run needs: params, metrics, the training table, plots,
    predictions, and the model that scores images."""
    _log_params_and_metrics(result, profile, params)
    _log_training_table(featurized)
    with step(spark, "plots and the gallery"):
        _log_evaluation(result, spark, profile.train.gallery_size)
    log.info("logged metrics and plots; logging the model")
    featurizer = featurized.featurizer(profile)
    with step(spark, "log the model"):
        logged_model.log_model(
            scoring_model(
                featurizer, result.task.classifier_model(result.fitted), result.task.outputs
            ),
            featurizer.setting_values(),
            result.task.classifier_parameters(result.fitted),
        )
    mlflow.set_tag(SCORING_TAG, "true")


def _log_params_and_metrics(result: TrainResult, profile: Profile, params: kinds.Params) -> None:
    """By Spark's own Param names: distinct from the MLproject parameters (reg_param, ...),
    which MLflow logs as given (often empty, meaning "the profile's value")."""
    settings = profile.train
    fixed = classifiers.kind_of(settings).fixed_params(settings)
    mlflow.log_params(
        {"classifier": settings.classifier, **fixed, **loggable(params), **split_params(settings)}
    )
    mlflow.log_metrics(result.metrics)
    mlflow.set_tag(CLASSES_TAG, ",".join(result.evaluation.labels))


def _log_training_table(featurized: FeaturizeResult) -> None:
    """The table fitted on, as the run's dataset input (no Spark job: MLflow's ``from_spark``
    would count its rows)."""
    table = featurized.table
    source = SparkDatasetSource(path=table.entry.table)
    name = f"features-{featurized.fingerprint}"
    mlflow.log_input(MetaDataset(source, name=name, digest=table.fingerprint[:8]), "training")


def _log_evaluation(result: TrainResult, spark: SparkSession, gallery_size: int) -> None:
    """The plots and the test predictions, under ``evaluation/``."""
    evaluation = result.evaluation
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder)
        plots.plot_label_distribution(result.split_counts, out / "label_distribution.png")
        result.task.plot(evaluation, out)
        wrong = evaluation.mistakes(gallery_size)
        shown = gallery_images(spark, list(wrong.path))
        plots.plot_misclassified(wrong, shown, out / "misclassified.png")
        evaluation.predictions.to_csv(out / "test_predictions.csv", index=False)
        mlflow.log_artifacts(folder, artifact_path=EVALUATION_ARTIFACTS)
