"""Train on cached features: seeded stratified split → StringIndexer → the profile's
classifier (logistic regression or perceptron) → held-out evaluation → MLflow (params, metrics,
plots, predictions, the models). Under ``multi-label`` the classifier is one per class
(``model.label_sets``), each class's threshold comes from the validation split, and the
evaluation is ``evaluate_sets``'.
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
from sparkles.features.featurize import FeaturizeResult, stored_featurizer
from sparkles.features.tables import TrainingTable
from sparkles.model import classifiers, kinds
from sparkles.model import logged as logged_model
from sparkles.model.label_sets import (
    label_set_stage,
    label_sets,
    multi_label_pipeline,
    with_targets,
)
from sparkles.model.stages import (
    class_labels,
    classifier_model,
    classifier_parameters,
    feature_length,
    scoring_model,
    training_pipeline,
)
from sparkles.names import CLASSES_TAG, EVALUATION_ARTIFACTS, SCORING_TAG
from sparkles.progress import step
from sparkles.tracking import loggable
from sparkles.train import evaluate as ev
from sparkles.train import evaluate_sets as sets
from sparkles.train.splits import split_params, train_and_test
from sparkles.train.validation import validate, validation_data

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    fitted: PipelineModel  # indexer + classifier, as fitted (multi-label: ... + LabelSet)
    evaluation: ev.Evaluation | sets.SetEvaluation
    split_counts: dict[str, dict[str, int]]
    fit_seconds: float

    @property
    def metrics(self) -> dict[str, float]:
        return self.evaluation.metrics


def _split_counts(train_set: DataFrame, test_set: DataFrame) -> dict[str, dict[str, int]]:
    """Rows per class on each side of the split, in one query (one per side ran two)."""
    sides = train_set.select("label", F.lit("train").alias("side")).unionByName(
        test_set.select("label", F.lit("test").alias("side"))
    )
    counts: dict[str, dict[str, int]] = {"train": {}, "test": {}}
    for row in sides.groupBy("side", "label").count().collect():
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
    spark: SparkSession,
    table: TrainingTable,
    params: kinds.Params,
    validation: dict[str, float] | None = None,
    features: DataFrame | None = None,
) -> TrainResult:
    """Fit on the training split of a training table and evaluate on its held-out split.

    Validation metrics (``val_*``, what `promote` selects on, never the test split) are
    computed as a search trial computes them, unless given (a search's winner has them).
    ``features``: the table as ``read_once`` already holds it (a search's refit).
    """
    if features is not None:
        return fit_and_test(profile, features, params, validation)
    with read_once(table.features()) as features:
        return fit_and_test(profile, features, params, validation)


def fit_and_test(
    profile: Profile,
    features: DataFrame,
    params: kinds.Params,
    validation: dict[str, float] | None,
) -> TrainResult:
    settings, spark = profile.train, features.sparkSession
    train_set, test_set = train_and_test(features, split_params(settings))
    train_set = train_set.persist(StorageLevel.MEMORY_AND_DISK)
    with step(spark, "split"):
        counts = _split_counts(train_set, test_set)
    if len(counts["train"]) < 2:
        raise ValueError(f"training split has classes {sorted(counts['train'])}: need two or more")
    labels, n_features = sorted(counts["train"]), feature_length(train_set)
    if profile.multi_label:
        fitted_on = with_targets(label_sets(train_set), labels).persist(
            StorageLevel.MEMORY_AND_DISK
        )
        pipeline = multi_label_pipeline(settings, params, n_features, labels)
    else:
        fitted_on, pipeline = (
            train_set,
            training_pipeline(settings, params, n_features, len(labels)),
        )
    log.info("fitting a %s classifier on %s", settings.classifier, counts["train"])
    started = time.monotonic()
    with step(spark, f"fit {settings.classifier}"):
        fitted = pipeline.fit(fitted_on)
    fit_seconds = time.monotonic() - started
    log.info("fitted in %.1f s; evaluating on %s", fit_seconds, counts["test"])
    if validation is None:
        folds, rounds = validation_data(profile, train_set, labels)
        folds = folds.persist(StorageLevel.MEMORY_AND_DISK)
        with step(spark, "validate"):
            validation = validate(profile, folds, rounds, labels, n_features, params)
        folds.unpersist()
    train_images = fitted_on.count() if profile.multi_label else sum(counts["train"].values())
    fitted_on.unpersist()
    train_set.unpersist()
    with step(spark, "evaluate on the test split"):
        if profile.multi_label:
            thresholds = [validation[sets.threshold_metric(name)] for name in labels]
            label_set_stage(fitted).setThresholds(thresholds)
            scored_sets = fitted.transform(label_sets(test_set))
            evaluation = sets.evaluate_sets(scored_sets, labels, thresholds)
        else:
            scored = classifier_model(fitted).transform(test_set)
            evaluation = ev.evaluate(scored, class_labels(fitted))
    evaluation.metrics["count_train"] = float(train_images)
    evaluation.metrics["fit_seconds"] = fit_seconds
    evaluation.metrics.update(validation)
    return TrainResult(fitted, evaluation, counts, fit_seconds)


def gallery_images(spark: SparkSession, paths: list[str]) -> dict[str, bytes]:
    """The bytes of the few images the misclassified gallery shows: the only image files train
    and tune read. One no longer where it was featurized is left out (drawn as its title)."""
    present = [path for path in paths if storage.exists(spark, path)]
    rows = read_contents(spark, present).collect() if present else []
    return {row.path: bytes(row.content) for row in rows}


def log_training(
    result: TrainResult,
    spark: SparkSession,
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
    featurizer = stored_featurizer(profile, featurized)
    with step(spark, "log the model"):
        logged_model.log_model(
            scoring_model(featurizer, result.fitted),
            featurizer.setting_values(),
            classifier_parameters(result.fitted),
        )
    mlflow.set_tag(SCORING_TAG, "true")


def _log_params_and_metrics(result: TrainResult, profile: Profile, params: kinds.Params) -> None:
    """By Spark's own Param names: distinct from the MLproject parameters (reg_param, ...),
    which MLflow logs as given (often empty, meaning "the profile's value")."""
    settings = profile.train
    fixed = classifiers.kind_of(settings).fixed_params(settings)
    mlflow.log_params(
        {"classifier": settings.classifier, **fixed, **loggable(params),
         **split_params(settings)}
    )  # fmt: skip
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
        if isinstance(evaluation, sets.SetEvaluation):
            plots.plot_roc_per_class(evaluation, out / "roc_curve.png")
            plots.plot_label_sets(evaluation, out / "label_sets.png")
            wrong = evaluation.differing(gallery_size)
        else:
            plots.plot_roc(evaluation, out / "roc_curve.png")
            plots.plot_confusion(evaluation, out / "confusion_matrix.png")
            wrong = evaluation.most_confident_mistakes(gallery_size)
        shown = gallery_images(spark, list(wrong.path))
        plots.plot_misclassified(wrong, shown, out / "misclassified.png")
        evaluation.predictions.to_csv(out / "test_predictions.csv", index=False)
        mlflow.log_artifacts(folder, artifact_path=EVALUATION_ARTIFACTS)
