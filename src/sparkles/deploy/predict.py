"""Batch scoring with a registered model: images in, Parquet (and CSV) predictions out.

Streams through Spark from a path or glob (local or S3) to the output; nothing is collected to
the driver. Unusable images are quarantined with the same reasons as in featurization, and
``images = scored + quarantined`` is checked.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from pyspark.ml.functions import vector_to_array
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sparkles import storage
from sparkles.data.images import read_image_files
from sparkles.errors import UserError
from sparkles.names import ERROR, IMAGE_ID, PATH, QUARANTINE_REASON, probability_column
from sparkles.progress import spark_progress
from sparkles.tasks.base import Task
from sparkles.tasks.catalog import load_logged

log = logging.getLogger(__name__)
PREDICTIONS = "predictions"
QUARANTINE = "quarantine"
OUTPUTS = [PREDICTIONS, QUARANTINE, f"{PREDICTIONS}_csv", f"{QUARANTINE}_csv"]


class OutputExistsError(UserError, RuntimeError):
    """Predictions are already where this run would write: kept unless --overwrite."""


@dataclass
class PredictResult:
    model_uri: str
    output: str
    images: int
    scored: int
    quarantined: int


def _split_glob(images: str) -> tuple[str, str]:
    """``/data/x/*.jpg`` → (``/data/x``, ``*.jpg``); a plain directory → (dir, ``*``)."""
    head, _, tail = images.rstrip("/").rpartition("/")
    if any(ch in tail for ch in "*?[") and head:
        return head, tail
    return images, "*"


def score(spark: SparkSession, model_uri: str, images: str) -> tuple[DataFrame, int, Task]:
    """One row per image file (path, image_id, the task's answer columns, probability_<class>
    for every class, featurize_error), how many files there are (0-byte ones included), and
    the model's task. A single-label answer is predicted_label and its probability; a
    multi-label one ``predicted_labels`` (an array of one class or more)."""
    root, glob = _split_glob(images)
    files = read_image_files(spark, root, glob)
    inputs = files.files.select(PATH, IMAGE_ID, "content").unionByName(
        files.empty.select(PATH, IMAGE_ID, F.lit(None).cast("binary").alias("content"))
    )
    count = files.files.count() + files.empty.count()
    model, task = load_logged(model_uri)
    scored = model.transform(inputs)
    # quarantined rows have no probability (vector_to_array rejects a null)
    present = F.col("probability").isNotNull()
    probability = vector_to_array("probability")
    frame = scored.select(
        PATH,
        IMAGE_ID,
        *task.answer_columns(present, probability),
        *[
            F.when(present, probability[index]).alias(probability_column(name))
            for index, name in enumerate(task.class_labels(model))
        ],
        ERROR,
    )
    return frame, count, task


def predict(
    spark: SparkSession,
    model_uri: str,
    *,
    images: str,
    output: str,
    csv: bool = False,
    overwrite: bool = False,
) -> PredictResult:
    """Score ``images`` with ``model_uri`` into ``output``/predictions and ``output``/quarantine
    (replacing earlier ones only with ``overwrite``)."""
    output = output.rstrip("/")
    staged = f"{output}/_all"
    written = [f"{output}/{name}" for name in OUTPUTS]
    existing = [path for path in written if storage.exists(spark, path)]
    if existing and not overwrite:
        raise OutputExistsError(
            f"{existing[0]} exists: predictions are not overwritten unless asked "
            "(--overwrite, mlflow run: -P overwrite=true), or choose another --output"
        )
    for path in existing:  # all of the last run's, so none is left beside the new answers
        storage.delete(spark, path)
    scored, expected, task = score(spark, model_uri, images)
    with spark_progress(spark, "predict"), storage.reporting(output):
        scored.write.mode("overwrite").parquet(staged)
    everything = spark.read.parquet(staged)
    good = everything.where(F.col(ERROR).isNull()).drop(ERROR)
    bad = everything.where(F.col(ERROR).isNotNull()).select(
        PATH, IMAGE_ID, F.col(ERROR).alias(QUARANTINE_REASON)
    )
    with storage.reporting(output):
        good.write.mode("overwrite").parquet(f"{output}/{PREDICTIONS}")
        bad.write.mode("overwrite").parquet(f"{output}/{QUARANTINE}")
        if csv:
            good = task.for_csv(good)
            good.write.mode("overwrite").option("header", True).csv(f"{output}/{PREDICTIONS}_csv")
            bad.write.mode("overwrite").option("header", True).csv(f"{output}/{QUARANTINE}_csv")
    counts = everything.agg(
        F.count(F.lit(1)).alias("images"), F.sum(F.col(ERROR).isNull().cast("int")).alias("scored")
    ).first()
    if counts.images != expected:
        raise RuntimeError(
            f"{expected} image files but {counts.images} rows scored: rows were lost"
        )
    result = PredictResult(
        model_uri, output, counts.images, counts.scored or 0, counts.images - (counts.scored or 0)
    )
    storage.delete(spark, staged)
    log.info(
        "%d images: %d scored, %d quarantined -> %s",
        result.images,
        result.scored,
        result.quarantined,
        output,
    )
    return result
