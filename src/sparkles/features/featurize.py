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
from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sparkles import storage
from sparkles.cnn.backbones import get_spec, sha256_file
from sparkles.cnn.featurizer import DeepImageFeaturizer, calibration_sample
from sparkles.cnn.imaging import PREPROCESS_VERSION
from sparkles.cnn.quantize import MODEL_XML, QUANTIZED_DIR, calibration_identity
from sparkles.cnn.weights import ResolvedWeights, WeightsUnavailableError, resolve_weights
from sparkles.config import FeaturizerConfig, Profile
from sparkles.data.images import read_contents, read_image_files
from sparkles.data.openimages import match_files, select_target_labels
from sparkles.data.sample import ensure_sample
from sparkles.errors import UserError
from sparkles.features.commit import CacheEntry, fingerprint, manifest_rows
from sparkles.features.store import (
    EMPTY_SHA,
    SHA,
    FeatureStore,
    ReconciliationError,
    TrainingTable,
    open_training_table,
)
from sparkles.names import (
    CACHE_FINGERPRINT_TAG,
    CACHE_PATH_TAG,
    CACHE_REUSED_TAG,
    CACHE_TABLE_TAG,
    CALIBRATION_TAG,
    COMMAND_TAG,
    ERROR,
    FEATURE_SOURCE_PREFIXES,
    FEATURES_KEY_TAG,
    FEATURES_RUN_TAG,
    FEATURIZE_ARTIFACTS,
    FEATURIZER_TAG,
    PRECISION_REQUESTED_TAG,
    PRECISION_TAG,
    QUARANTINE_REASON,
    RUNTIME_TAG,
    WEIGHTS_IDENTITY_TAG,
    WEIGHTS_PATH_TAG,
    WEIGHTS_USED_TAG,
)
from sparkles.progress import spark_progress

log = logging.getLogger(__name__)
TABLE_MANIFEST = ["image_id", "label", SHA]  # what the training table's fingerprint covers
DATA_PARAMS = ["classes", "multi_label_policy"]  # a featurize run's params beside its featurizer's


class CacheMissingError(UserError, RuntimeError):
    """``train``/``tune`` never run the CNN: every image needs features in the store, and a
    training table must have been committed by ``featurize`` or ``main``."""


@dataclass
class FeaturizeResult:
    fingerprint: str  # of the training table: store settings + every (image_id, label, sha256)
    table: TrainingTable
    reused: bool  # no image went through the CNN in this run
    weights: ResolvedWeights
    precision: str  # the precision of the store (the one that runs here)
    counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    runtime: str = "openvino"
    calibration: str | None = None  # int8: the calibration set's identity (quantize)

    @property
    def images_per_second(self) -> float:
        return self.counts.get("computed_images", 0) / self.seconds if self.seconds else 0.0


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
    return DeepImageFeaturizer.from_profile(
        settings, weights.local_path or "random", precision=precision or settings.precision
    )


def stored_featurizer(profile: Profile, result: FeaturizeResult) -> DeepImageFeaturizer:
    """The featurizer that made ``result``'s features: int8 runs the quantized model kept in
    its store (``quantize``), not a new calibration."""
    featurizer = build_featurizer(profile, result.weights, result.precision)
    if result.precision == "int8":
        featurizer.setParams(
            calibrationSet=result.calibration, quantizedModel=_quantized_in(result.table.store)
        )
    return featurizer


def _quantized_in(store: FeatureStore) -> str:
    return f"{store.root}/{QUANTIZED_DIR}/{MODEL_XML}"


def _calibrate(featurizer: DeepImageFeaturizer, identities: DataFrame, count: int) -> list[str]:
    """Choose int8's calibration images among the labelled ones and set the featurizer's
    calibration identity; returns their paths (read only if the store lacks the model)."""
    readable = identities.where(F.col(SHA) != EMPTY_SHA).groupBy(SHA)
    readable = readable.agg(F.min("path").alias("path"))
    sample = calibration_sample(readable, SHA, featurizer.getSeed(), count).collect()
    featurizer.setParams(calibrationSet=calibration_identity([row[SHA] for row in sample]))
    return [row.path for row in sample]


def _quantize_into(
    spark: SparkSession, store: FeatureStore, featurizer: DeepImageFeaturizer, paths: list[str]
) -> None:
    """The store's int8 model if it has one (made by an earlier run, maybe on another
    machine), else one quantized here on the calibration images and kept in the store."""
    target = _quantized_in(store)
    if not storage.exists(spark, target):
        contents = read_contents(spark, paths).select("content")
        featurizer.calibrate(contents)
        local = featurizer.local_quantized_model(spark)
        with storage.reporting(target):
            for file in (local.with_suffix(".bin"), local):  # the .xml last: it marks it done
                storage.copy_from_local(spark, str(file), target.removesuffix(".xml") + file.suffix)
    featurizer.setParams(quantizedModel=target)


def featurize(profile: Profile, spark: SparkSession, refresh: bool = False) -> FeaturizeResult:
    """The profile's labelled images with their features; the CNN runs only on images the
    feature store lacks (``refresh``: on all of them, and their new rows win)."""
    ensure_sample(profile)
    data, settings = profile.data, profile.featurizer
    labeled = select_target_labels(
        spark, data.labels_csv, data.classes_csv, data.classes, data.multi_label_policy
    )
    matched = match_files(labeled, read_image_files(spark, data.images, data.image_glob))
    counts = {**labeled.counts, **matched.counts}
    weights = choose_weights(profile, spark)
    featurizer = build_featurizer(profile, weights)
    # bf16 and f32 features never share a store: its key holds the precision that runs
    precision = featurizer.precision_that_runs()
    featurizer.setParams(precision=precision)
    identities = _identities(spark, matched.matched, matched.empty)
    identities = identities.persist(StorageLevel.MEMORY_AND_DISK)  # the hashes, read once
    try:
        if precision == "int8":
            calibration = _calibrate(featurizer, identities, settings.calibration_images)
        store = FeatureStore.for_settings(
            spark, profile.cache.dir, featurizer.store_key(weights.identity)
        )
        if precision == "int8":
            _quantize_into(spark, store, featurizer, calibration)
        new = _images_to_compute(identities, store.images([] if refresh else store.live_segments()))
        segment, seconds = None, 0.0
        if new:
            log.info("featurizing %d images the store lacks", len(new))
            started = time.monotonic()
            segment = _compute(spark, store, featurizer, new, settings.rows_per_partition)
            seconds = time.monotonic() - started
            if len(store.live_segments()) > profile.cache.compact_after_segments:
                store.compact()
        else:
            log.info("every image has features in %s: the CNN does not run", store.root)
        key = fingerprint({"store": store.key}, manifest_rows(identities, TABLE_MANIFEST))
        table = TrainingTable(key, store.save_table(key, identities), store)
    finally:
        identities.unpersist()
    written = _reconcile(table, counts["matched_rows"], segment and segment.key)
    counts = {**counts, **written, "computed_images": len(new)}
    reused = not new
    return FeaturizeResult(
        key, table, reused, weights, precision, counts, seconds, settings.runtime,
        featurizer.getCalibrationSet(),
    )  # fmt: skip


def _identities(spark: SparkSession, files: DataFrame, empty: DataFrame) -> DataFrame:
    """(path, image_id, label, image_sha256) of every labelled file, 0-byte ones included.

    The bytes are hashed by Spark's ``sha2`` where they are read (JVM: no Python, no decode).
    A file that vanished since the listing drops out here and fails the reconciliation.
    """
    # one read per file: under keep-all a file has one row per class
    paths = [row.path for row in files.select("path").distinct().toLocalIterator()]
    hashed = read_contents(spark, paths).select("path", F.sha2("content", 256).alias(SHA))
    labelled = hashed.join(F.broadcast(files.select("path", "image_id", "label")), "path")
    empties = empty.select("path", "image_id", "label", F.lit(EMPTY_SHA).alias(SHA))
    return labelled.unionByName(empties)


def _images_to_compute(identities: DataFrame, known: DataFrame) -> list[tuple[str, str]]:
    """(image_sha256, one path with those bytes) of every image ``known`` lacks."""
    missing = identities.select(SHA, "path").join(known, SHA, "left_anti")
    one_path = missing.groupBy(SHA).agg(F.min("path").alias("path")).orderBy(SHA)
    return [(row[SHA], row.path) for row in one_path.toLocalIterator()]


def _compute(
    spark: SparkSession,
    store: FeatureStore,
    featurizer: DeepImageFeaturizer,
    new: list[tuple[str, str]],
    rows_per_partition: int,
) -> CacheEntry:
    """Run the featurizer on these images and append them to the store as one segment.

    Rows are keyed by the hash of the bytes that went through the CNN, not by the listing's:
    a file rewritten in between can never file its new features under its old identity.
    """
    readable = [path for sha, path in new if sha != EMPTY_SHA]
    contents = read_contents(spark, readable).select(F.sha2("content", 256).alias(SHA), "content")
    if len(readable) < len(new):  # 0-byte files: binaryFile skips them, the featurizer must not
        empty = spark.createDataFrame([(EMPTY_SHA, bytearray())], f"{SHA} string, content binary")
        contents = contents.unionByName(empty)
    # Coalesce (no shuffle) the file-split partitions into tasks of ~rows_per_partition images:
    # Spark packs files by bytes, so small tasks with one partial model batch each were common.
    tasks = max(1, math.ceil(len(new) / rows_per_partition))
    rows = featurizer.transform(contents.coalesce(tasks))
    with spark_progress(spark, "featurize", records=len(new)):
        return store.append(rows, expected=len(new))


def _reconcile(table: TrainingTable, rows_in: int, segment: str | None) -> dict[str, int]:
    """rows in = featurized + quarantined, and every row has a store row; else an error."""
    rows = table.read(how="left")
    outcome = rows.agg(
        F.count(F.lit(1)).alias("rows"),
        F.sum(F.col("segment").isNull().cast("int")).alias("unmatched"),
        F.sum((F.col("segment").isNotNull() & F.col(ERROR).isNull()).cast("int"))
        .alias("featurized"),
        F.sum(F.col(ERROR).isNotNull().cast("int")).alias("quarantined"),
        F.sum((F.col("segment") == F.lit(segment)).cast("int")).alias("computed"),
    ).first()  # fmt: skip
    written = {
        "rows_in": rows_in,
        "featurized": outcome.featurized or 0,
        "quarantined": outcome.quarantined or 0,
        "computed": outcome.computed or 0,
    }
    written["reused"] = rows_in - written["computed"]
    accounted = written["featurized"] + written["quarantined"]
    if outcome.rows != rows_in or outcome.unmatched or accounted != rows_in:
        raise ReconciliationError(
            f"{rows_in} images in, but {outcome.rows} in the training table "
            f"{table.entry.path} ({written['featurized']} featurized + {written['quarantined']} "
            f"quarantined, {outcome.unmatched or 0} without features): a file vanished or "
            "changed during the run; run it again"
        )
    return written


def log_featurize(result: FeaturizeResult, spark: SparkSession, profile: Profile) -> None:
    """Counts, timings, weights and the quarantine list into the active MLflow run, and the tags
    by which train/tune find its training table."""
    settings = profile.featurizer
    mlflow.log_params(featurize_params(profile, result.precision, result.calibration))
    mlflow.set_tags(
        {
            FEATURES_KEY_TAG: features_key(profile),
            FEATURIZER_TAG: settings.model_dump_json(),
            WEIGHTS_PATH_TAG: result.weights.local_path or "",
            CACHE_FINGERPRINT_TAG: result.fingerprint,
            CACHE_PATH_TAG: result.table.store.root,
            CACHE_TABLE_TAG: result.table.entry.path,
            CACHE_REUSED_TAG: str(result.reused).lower(),
            WEIGHTS_USED_TAG: result.weights.kind,
            WEIGHTS_IDENTITY_TAG: result.weights.identity,
            RUNTIME_TAG: settings.runtime,
            PRECISION_TAG: result.precision,
            PRECISION_REQUESTED_TAG: settings.precision,
            **({CALIBRATION_TAG: result.calibration} if result.calibration else {}),
        }
    )
    metrics = {f"count_{k}": float(v) for k, v in result.counts.items()}
    if not result.reused:
        metrics["featurize_seconds"] = result.seconds
        metrics["images_per_second"] = result.images_per_second
    mlflow.log_metrics(metrics)
    quarantine = result.table.quarantine().select("path", "image_id", "label", ERROR)
    with tempfile.TemporaryDirectory() as folder:
        quarantine.toPandas().rename(columns={ERROR: QUARANTINE_REASON}).to_csv(
            Path(folder, "quarantine.csv"), index=False
        )
        Path(folder, "featurize_counts.json").write_text(json.dumps(result.counts, indent=2))
        mlflow.log_artifacts(folder, artifact_path=FEATURIZE_ARTIFACTS)


def featurize_params(
    profile: Profile, precision: str, calibration: str | None = None
) -> dict[str, Any]:
    """A featurize run's params: the profile's featurizer settings that reach the CNN or its
    weights (with the precision that ran; int8's calibration set), and the data's classes and
    multi-label policy."""
    settings = profile.featurizer
    values = {**settings.model_dump(), "precision": precision}
    logged = {
        field: values[field]
        for field, setting in type(settings).settings().items()
        if setting.logged and setting.applies(values)
    }
    if calibration:
        logged["calibration_set"] = calibration
    data = profile.data
    return {**logged, "classes": ",".join(data.classes),
            "multi_label_policy": data.multi_label_policy}  # fmt: skip


def _is_featurize_param(name: str) -> bool:
    setting = FeaturizerConfig.settings().get(name)
    return name in DATA_PARAMS or name == "calibration_set" or bool(setting and setting.logged)


def features_key(profile: Profile) -> str:
    """What a training table answers: these labels, images and classes under this policy,
    through this featurizer. train/tune use the newest table committed under the same key."""
    data = profile.data
    settings = profile.featurizer
    values = settings.model_dump()
    shaping = {f for f, s in type(settings).settings().items() if s.features and s.applies(values)}
    featurizer = settings.model_dump(include=shaping)
    parts = {
        "labels_csv": storage.qualify(data.labels_csv),
        "classes_csv": storage.qualify(data.classes_csv),
        "images": storage.qualify(data.images),
        "image_glob": data.image_glob,
        "classes": list(data.classes),
        "multi_label_policy": data.multi_label_policy,
        "featurizer": featurizer,
        "preprocess": PREPROCESS_VERSION,
    }
    return fingerprint(parts, [])


def _features_run(profile: Profile, experiment_id: str, run_id: str | None) -> Run:
    """The run named by ``--features`` (a train/tune run stands for the table it used), else the
    newest FINISHED featurize/main run of this experiment under the profile's features key."""
    if run_id:
        try:
            run = mlflow.get_run(run_id)
        except MlflowException as err:
            raise CacheMissingError(f"--features {run_id}: no such run ({err.message})") from err
        source = run.data.tags.get(FEATURES_RUN_TAG)
        if source and FEATURES_KEY_TAG not in run.data.tags:
            return _features_run(profile, experiment_id, source)
        if CACHE_TABLE_TAG not in run.data.tags:
            raise CacheMissingError(
                f"--features {run_id}: that run committed no training table (give the id of a "
                "`featurize` or `main` run)"
            )
        return run
    key = features_key(profile)
    found = mlflow.search_runs(
        [experiment_id],
        filter_string=f"attributes.status = 'FINISHED' and tags.`{FEATURES_KEY_TAG}` = '{key}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
        output_format="list",
    )
    if not found:
        experiment = mlflow.get_experiment(experiment_id).name
        raise CacheMissingError(
            f"no featurize run in experiment {experiment!r} has features for the images, labels, "
            f"classes and featurizer settings of {profile.source or profile.name}: run `sparkles "
            "featurize` (mlflow run: -e featurize, or the `main` entry point) with this profile "
            "first, or pick a table with --features RUN_ID"
        )
    return found[0]


def _weights_of(run: Run, profile: Profile, spark: SparkSession) -> ResolvedWeights:
    """The weights the table's features came from, without a download where it can be helped:
    random weights are a seed; a file is taken where that run left it if its hash still
    matches, and resolved from the settings again only if not."""
    tags = run.data.tags
    kind, identity = tags[WEIGHTS_USED_TAG], tags[WEIGHTS_IDENTITY_TAG]
    requested = run.data.params.get("weights", profile.featurizer.weights)
    if kind == "random":
        return ResolvedWeights(requested, kind, None, identity)
    path = tags.get(WEIGHTS_PATH_TAG)
    if path and Path(path).is_file() and f"sha256:{sha256_file(path)}" == identity:
        return ResolvedWeights(requested, kind, path, identity)
    resolved = choose_weights(profile, spark)
    if resolved.identity != identity:
        raise WeightsUnavailableError(
            f"the features of run {run.info.run_id} were computed with weights {identity}, but "
            f"featurizer.weights={profile.featurizer.weights!r} resolves to {resolved.identity} "
            "here: the model logged now could not score images as its features were made"
        )
    return resolved


def committed_features(
    profile: Profile, spark: SparkSession, experiment_id: str, run_id: str | None = None
) -> tuple[Profile, FeaturizeResult, Run]:
    """A committed training table, as a featurize run left it: no image is read, no CNN built.

    Returns the profile with that run's featurizer settings (what the logged model must run),
    the table as a FeaturizeResult, and the featurize run.
    """
    run = _features_run(profile, experiment_id, run_id)
    tags = run.data.tags
    table = open_training_table(spark, tags[CACHE_TABLE_TAG])
    if table is None:
        raise CacheMissingError(
            f"the training table {tags['sparkles.cache.table']} of run {run.info.run_id} is gone "
            "or incomplete: run `sparkles featurize` with this profile again"
        )
    if FEATURIZER_TAG in tags:
        settings = FeaturizerConfig.model_validate_json(tags[FEATURIZER_TAG])
        profile = profile.model_copy(update={"featurizer": settings})
    counts = {
        key.removeprefix("count_"): int(value)
        for key, value in run.data.metrics.items()
        if key.startswith("count_")
    }
    result = FeaturizeResult(
        tags[CACHE_FINGERPRINT_TAG], table, True, _weights_of(run, profile, spark),
        tags.get(PRECISION_TAG, profile.featurizer.precision), counts,
        runtime=tags.get(RUNTIME_TAG, profile.featurizer.runtime),
        calibration=tags.get(CALIBRATION_TAG),
    )  # fmt: skip
    log.info(
        "fitting on the training table of %s run %s (%s rows, %s); no image is read",
        tags.get(COMMAND_TAG, "featurize"), run.info.run_id,
        counts.get("featurized", "?"), table.entry.path,
    )  # fmt: skip
    return profile, result, run


def log_features_source(result: FeaturizeResult, run: Run) -> None:
    """Into a train/tune run: which table it fitted on, with the params, tags and counts of the
    run that committed it (so runs compare, and promote groups them, as before)."""
    tags = {k: v for k, v in run.data.tags.items() if k.startswith(FEATURE_SOURCE_PREFIXES)}
    mlflow.set_tags({**tags, CACHE_REUSED_TAG: "true", FEATURES_RUN_TAG: run.info.run_id})
    mlflow.log_params({k: v for k, v in run.data.params.items() if _is_featurize_param(k)})
    mlflow.log_metrics({f"count_{k}": float(v) for k, v in result.counts.items()})


def summary(result: FeaturizeResult) -> dict[str, Any]:
    return {
        "fingerprint": result.fingerprint,
        "store": result.table.store.root,
        "table": result.table.entry.path,
        "reused": result.reused,
        "weights": asdict(result.weights),
        "runtime": result.runtime,
        "precision": result.precision,
        "calibration": result.calibration,
        "counts": result.counts,
        "seconds": round(result.seconds, 2),
        "images_per_second": round(result.images_per_second, 2),
    }
