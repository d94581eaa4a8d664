"""Train on cached features: seeded stratified split → StringIndexer → the profile's
classifier (logistic regression or perceptron) → held-out evaluation → MLflow (params, metrics,
plots, predictions, the models).
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

from sparkles import classifiers, logged_model, plots
from sparkles import evaluate as ev
from sparkles.code import package_dir
from sparkles.config import Profile
from sparkles.feature_store import TrainingTable
from sparkles.features import FeaturizeResult, build_featurizer
from sparkles.names import CLASSES_TAG, EVALUATION_ARTIFACTS, SCORING_TAG
from sparkles.pipeline import (
    class_labels,
    classifier_model,
    classifier_parameters,
    feature_length,
    scoring_model,
    training_pipeline,
)
from sparkles.splits import split_params, train_and_test
from sparkles.tune import validate, validation_folds

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    fitted: PipelineModel  # indexer + classifier, as fitted
    evaluation: ev.Evaluation
    split_counts: dict[str, dict[str, int]]
    fit_seconds: float

    @property
    def metrics(self) -> dict[str, float]:
        return self.evaluation.metrics


def _class_counts(frame: DataFrame) -> dict[str, int]:
    return {row.label: row["count"] for row in frame.groupBy("label").count().collect()}


ROWS_PER_TASK = 10_000  # 2048 floats a row: ~80 MB per task of a fit's pass


@contextmanager
def read_once(features: DataFrame) -> Iterator[DataFrame]:
    """The training table read from the store once (persisted while the block runs), in tasks
    of up to ROWS_PER_TASK rows: each LogisticRegression iteration is a Spark job over it, and a
    small table in the shuffle's many partitions spends those jobs scheduling tiny tasks."""
    persisted = features.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        rows = persisted.count()
        tasks = max(1, min(persisted.rdd.getNumPartitions(), -(-rows // ROWS_PER_TASK)))
        yield persisted.coalesce(tasks)
    finally:
        persisted.unpersist()


def train(
    profile: Profile,
    spark: SparkSession,
    table: TrainingTable,
    params: classifiers.Params,
    validation: dict[str, float] | None = None,
) -> TrainResult:
    """Fit on the training split of a training table and evaluate on its held-out split.

    Validation metrics (``val_*``, what `promote` selects on, never the test split) are
    computed as a search trial computes them, unless given (a search's winner has them).
    """
    with read_once(table.features()) as features:
        return _fit_and_test(profile, features, params, validation)


def _fit_and_test(
    profile: Profile,
    features: DataFrame,
    params: classifiers.Params,
    validation: dict[str, float] | None,
) -> TrainResult:
    settings = profile.train
    train_set, test_set = train_and_test(features, split_params(settings))
    train_set = train_set.persist(StorageLevel.MEMORY_AND_DISK)
    counts = {"train": _class_counts(train_set), "test": _class_counts(test_set)}
    if len(counts["train"]) < 2:
        raise ValueError(f"training split has classes {sorted(counts['train'])}: need two or more")
    n_classes, n_features = len(counts["train"]), feature_length(train_set)
    log.info("fitting a %s classifier on %s", settings.classifier, counts["train"])
    started = time.monotonic()
    fitted = training_pipeline(settings, params, n_features, n_classes).fit(train_set)
    fit_seconds = time.monotonic() - started
    log.info("fitted in %.1f s; evaluating on %s", fit_seconds, counts["test"])
    if validation is None:
        folds, rounds = validation_folds(train_set, profile.tune)
        folds = folds.persist(StorageLevel.MEMORY_AND_DISK)
        validation = validate(profile, folds, rounds, n_classes, n_features, params)
        folds.unpersist()
    train_set.unpersist()
    scored = classifier_model(fitted).transform(test_set)
    evaluation = ev.evaluate(scored, class_labels(fitted))
    evaluation.metrics["count_train"] = float(sum(counts["train"].values()))
    evaluation.metrics["fit_seconds"] = fit_seconds
    evaluation.metrics.update(validation)
    return TrainResult(fitted, evaluation, counts, fit_seconds)


def model_requirements() -> list[str]:
    """Third-party packages pinned from this environment; this project's own code travels in the
    model (``code_paths``), never as a pip requirement. Given explicitly, because MLflow's
    inference loads the model in a fresh process (a second Spark start, ~10 s) and still misses
    TF, which loads lazily."""
    from importlib.metadata import PackageNotFoundError, version

    pins = []
    for package in (
        "pyspark", "pyarrow", "mlflow", "numpy", "pandas",
        "tensorflow-cpu", "tensorflow", "keras", "openvino", "pillow",
    ):  # fmt: skip
        try:
            pins.append(f"{package}=={version(package)}")
        except PackageNotFoundError:
            continue
    return pins


def log_training(
    result: TrainResult,
    spark: SparkSession,
    profile: Profile,
    featurized: FeaturizeResult,
    params: classifiers.Params,
) -> None:
    """Everything a reader of the run needs: params, metrics, plots, predictions, the model."""
    settings = profile.train
    # Spark's own Param names: distinct from the MLproject parameters (reg_param, ...), which
    # MLflow logs as given (often empty, meaning "the profile's value").
    fixed = classifiers.kind_of(settings).fixed_params(settings)
    mlflow.log_params(
        {"classifier": settings.classifier, **fixed, **classifiers.loggable(params),
         **split_params(settings)}
    )  # fmt: skip
    mlflow.log_metrics(result.metrics)
    mlflow.set_tag(CLASSES_TAG, ",".join(result.evaluation.labels))
    table = featurized.table
    source = SparkDatasetSource(path=table.entry.table)
    name = f"features-{featurized.fingerprint}"  # no Spark job: MLflow's from_spark counts rows
    mlflow.log_input(MetaDataset(source, name=name, digest=table.fingerprint[:8]), "training")
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder)
        plots.plot_roc(result.evaluation, out / "roc_curve.png")
        plots.plot_confusion(result.evaluation, out / "confusion_matrix.png")
        plots.plot_label_distribution(result.split_counts, out / "label_distribution.png")
        plots.plot_misclassified(
            result.evaluation, spark, out / "misclassified.png", settings.gallery_size
        )
        result.evaluation.predictions.to_csv(out / "test_predictions.csv", index=False)
        mlflow.log_artifacts(folder, artifact_path=EVALUATION_ARTIFACTS)

    log.info("logged metrics and plots; logging the model")
    featurizer = build_featurizer(profile, featurized.weights, featurized.precision)
    logged_model.log_model(
        scoring_model(featurizer, result.fitted),
        featurizer.setting_values(),
        classifier_parameters(result.fitted),
        model_requirements(),
        [str(package_dir())],
    )
    mlflow.set_tag(SCORING_TAG, "true")
