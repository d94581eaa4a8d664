"""The featurize step: labels + image files → cached CNN features, every input accounted for.

``rows in`` (labelled images that have a file) = ``featurized`` + ``quarantined``, checked after
every write. Labelled images without a file, files without a label and images dropped by the
multi-label policy are counted beside it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import mlflow
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sparkles import tracking
from sparkles.cache import CacheEntry, FeatureCache, fingerprint, manifest_rows
from sparkles.config import Profile
from sparkles.data.images import read_contents, read_image_files
from sparkles.data.openimages import match_files, select_target_labels
from sparkles.data.sample import generate_sample
from sparkles.featurizer import DeepImageFeaturizer
from sparkles.imaging import PREPROCESS_VERSION
from sparkles.models import get_spec
from sparkles.progress import spark_progress
from sparkles.weights import ResolvedWeights, WeightsUnavailableError, resolve_weights

log = logging.getLogger(__name__)
CACHE_COLUMNS = ["path", "image_id", "label", "features", "featurize_error"]


class CacheMissingError(RuntimeError):
    """``train``/``tune`` never run the CNN: they need a complete cache entry."""


class ReconciliationError(RuntimeError):
    """Rows went missing between input and output: never accepted silently."""


@dataclass
class FeaturizeResult:
    fingerprint: str
    entry: CacheEntry
    reused: bool
    weights: ResolvedWeights
    precision: str  # what ran (or, for a reused entry, what ran when it was computed)
    counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def images_per_second(self) -> float:
        return self.counts.get("featurized", 0) / self.seconds if self.seconds else 0.0


def ensure_sample(profile: Profile) -> None:
    """Generate the bundled synthetic sample on first use, if the profile asks for it."""
    sample, data = profile.data.sample, profile.data
    if sample is None or Path(data.labels_csv).exists():
        return
    log.info(
        "generating the bundled sample (%d synthetic images) in %s", sample.images, data.images
    )
    generate_sample(
        Path(data.labels_csv), Path(data.classes_csv), Path(data.images),
        count=sample.images, seed=sample.seed, size=sample.size,
    )  # fmt: skip


def choose_weights(profile: Profile, spark: SparkSession) -> ResolvedWeights:
    """The configured weights; a fallback to random weights only where the profile allows it."""
    settings = profile.featurizer
    spec = get_spec(settings.model)
    try:
        return resolve_weights(
            spec, settings.weights, settings.random_seed, settings.weights_mirror, spark
        )
    except WeightsUnavailableError as err:
        if not settings.allow_random_weights:
            raise
        allowed = f"allow_random_weights: true in {profile.source}"
        message = f"{err} -- falling back to RANDOM weights ({allowed})"
        warnings.warn(message, stacklevel=2)
        log.warning(message)
        fallback = resolve_weights(spec, "random", settings.random_seed)
        return dataclasses.replace(fallback, requested=settings.weights)


def build_featurizer(
    profile: Profile, weights: ResolvedWeights, precision: str | None = None
) -> DeepImageFeaturizer:
    """``precision``: the one that runs here (see ``featurize``), else the profile's."""
    settings = profile.featurizer
    return DeepImageFeaturizer(
        inputCol="content",
        outputCol="features",
        modelName=settings.model,
        weights=weights.local_path or "random",
        pooling=settings.pooling,
        runtime=settings.runtime,
        precision=precision or settings.precision,
        batchSize=settings.batch_size,
        seed=settings.random_seed,
        maxFileBytes=int(settings.max_file_mb * 1024 * 1024),
        maxPixels=settings.max_pixels,
    )


def featurize(
    profile: Profile, spark: SparkSession, refresh: bool = False, compute: bool = True
) -> FeaturizeResult:
    """Featurize the profile's labelled images into the cache, or reuse a complete entry.

    With ``compute=False`` a missing entry is an error instead of a CNN run.
    """
    ensure_sample(profile)
    data, settings = profile.data, profile.featurizer
    labeled = select_target_labels(
        spark, data.labels_csv, data.classes_csv, data.classes, data.multi_label_policy
    )
    matched = match_files(labeled, read_image_files(spark, data.images, data.image_glob))
    counts = {**labeled.counts, **matched.counts}
    weights = choose_weights(profile, spark)
    spec = get_spec(settings.model)
    featurizer = build_featurizer(profile, weights)
    # bf16 and f32 features never share an entry: the key holds the precision that runs
    precision = featurizer.precision_that_runs()
    featurizer.setParams(precision=precision)
    parts = {
        "model": spec.name,
        "input_size": list(spec.input_size),
        "pooling": settings.pooling,
        "runtime": settings.runtime,
        "precision": precision,
        "weights": weights.identity,
        "preprocess": PREPROCESS_VERSION,
        "max_file_bytes": int(settings.max_file_mb * 1024 * 1024),
        "max_pixels": settings.max_pixels,
    }
    # 0-byte files (which binaryFile skips) go through the featurizer too, as null content,
    # so they are quarantined by the same code as every other unusable image.
    empty = matched.empty.select(
        "path", "image_id", "label",
        F.lit(0).cast("long").alias("length"),
        F.lit(None).cast("timestamp").alias("modification_time"),
    )  # fmt: skip
    key = fingerprint(parts, manifest_rows(matched.matched.unionByName(empty)))
    cache = FeatureCache(spark, profile.cache.dir)
    entry = None if refresh else cache.lookup(key)
    if entry is not None:
        log.info("feature cache hit %s: the CNN does not run", entry.path)
        counts = {**counts, **entry.meta["counts"]}
        return FeaturizeResult(key, entry, True, weights, precision, counts)

    if not compute:
        raise CacheMissingError(
            f"no complete feature cache entry {key} under {cache.root} for these images and "
            f"featurizer settings: run `sparkles featurize` (or the `main` entry point) first"
        )
    # Coalesce (no shuffle) the file-split partitions into tasks of ~rows_per_partition images:
    # Spark packs files by bytes, so small tasks with one partial model batch each were common.
    tasks = max(1, math.ceil(counts["matched_files"] / settings.rows_per_partition))
    featurized = featurizer.transform(_with_contents(spark, matched.matched, empty).coalesce(tasks))
    featurized = featurized.select(*CACHE_COLUMNS)
    started = time.monotonic()
    with spark_progress(spark, "featurize"):
        staging = cache.stage(key, featurized)
    seconds = time.monotonic() - started
    outcome = (
        spark.read.parquet(staging.table)
        .agg(
            F.sum(F.col("featurize_error").isNull().cast("int")).alias("featurized"),
            F.sum(F.col("featurize_error").isNotNull().cast("int")).alias("quarantined"),
        )
        .first()
    )
    written = {"rows_in": counts["matched_files"], "featurized": outcome.featurized or 0}
    written["quarantined"] = outcome.quarantined or 0
    if written["rows_in"] != written["featurized"] + written["quarantined"]:
        raise ReconciliationError(
            f"{written['rows_in']} images in, but {written['featurized']} featurized + "
            f"{written['quarantined']} quarantined: rows were lost; {staging.path} is not trusted"
        )
    meta = {"parts": parts, "weights_requested": settings.weights, "weights_kind": weights.kind}
    entry = cache.commit(key, staging, {**meta, "counts": written})
    counts = {**counts, **written}
    return FeaturizeResult(key, entry, False, weights, precision, counts, seconds)


def _with_contents(spark: SparkSession, files: DataFrame, empty: DataFrame) -> DataFrame:
    """The matched files' bytes, read for those files only (not the folder's other files).

    A file that vanished since the listing drops out of the inner join and fails the
    reconciliation after the write: never a silent loss.
    """
    paths = [row.path for row in files.select("path").toLocalIterator()]
    contents = read_contents(spark, paths).join(F.broadcast(files), "path")
    return contents.unionByName(empty.withColumn("content", F.lit(None).cast("binary")))


def log_featurize(result: FeaturizeResult, spark: SparkSession, profile: Profile) -> None:
    """Counts, timings, weights and the quarantine list into the active MLflow run."""
    settings = profile.featurizer
    mlflow.log_params(
        {
            "model": settings.model,
            "weights": settings.weights,
            "pooling": settings.pooling,
            "runtime": settings.runtime,
            "precision": result.precision,
            "batch_size": settings.batch_size,
            "classes": ",".join(profile.data.classes),
            "multi_label_policy": profile.data.multi_label_policy,
        }
    )
    mlflow.set_tags(
        {
            "sparkles.cache.fingerprint": result.fingerprint,
            "sparkles.cache.path": result.entry.path,
            "sparkles.cache.reused": str(result.reused).lower(),
            "sparkles.weights.used": result.weights.kind,
            "sparkles.weights.identity": result.weights.identity,
            "sparkles.featurizer.runtime": settings.runtime,
            "sparkles.featurizer.precision": result.precision,
            "sparkles.featurizer.precision_requested": settings.precision,
        }
    )
    metrics = {f"count_{k}": float(v) for k, v in result.counts.items()}
    if not result.reused:
        metrics["featurize_seconds"] = result.seconds
        metrics["images_per_second"] = result.images_per_second
    mlflow.log_metrics(metrics)
    quarantine = result.entry.quarantine(spark).select(
        "path", "image_id", "label", "featurize_error"
    )
    with tempfile.TemporaryDirectory() as folder:
        quarantine.toPandas().rename(columns={"featurize_error": "reason"}).to_csv(
            Path(folder, "quarantine.csv"), index=False
        )
        Path(folder, "featurize_counts.json").write_text(json.dumps(result.counts, indent=2))
        mlflow.log_artifacts(folder, artifact_path="featurize")


def run_featurize(profile: Profile, spark: SparkSession, refresh: bool = False) -> FeaturizeResult:
    with tracking.run(profile, "featurize"):
        result = featurize(profile, spark, refresh)
        log_featurize(result, spark, profile)
    return result


def summary(result: FeaturizeResult) -> dict[str, Any]:
    return {
        "fingerprint": result.fingerprint,
        "cache": result.entry.path,
        "reused": result.reused,
        "weights": asdict(result.weights),
        "runtime": result.entry.meta["parts"].get("runtime"),
        "precision": result.precision,
        "counts": result.counts,
        "seconds": round(result.seconds, 2),
        "images_per_second": round(result.images_per_second, 2),
    }
