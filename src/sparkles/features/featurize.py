"""The featurize step: labels + image files → cached CNN features, every input accounted for.

``rows in`` (labelled images that have a file) = ``featurized`` + ``quarantined``, checked after
every write. Labelled images without a file, files without a label and images dropped by the
multi-label policy are counted beside it.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sparkles import storage
from sparkles.cnn.backbones import get_spec
from sparkles.cnn.featurizer import DeepImageFeaturizer, calibration_sample
from sparkles.cnn.quantize import MODEL_XML, QUANTIZED_DIR, calibration_identity
from sparkles.cnn.weights import ResolvedWeights, WeightsUnavailableError, resolve_weights
from sparkles.config import Profile
from sparkles.data.images import read_contents, read_image_files
from sparkles.data.openimages import match_files, select_target_labels
from sparkles.data.sample import ensure_sample
from sparkles.features.commit import TableEntry, fingerprint, manifest_rows
from sparkles.features.file_index import LENGTH, MODIFIED, FileIndex
from sparkles.features.lease import StoreLease
from sparkles.features.store import EMPTY_SHA, FeatureStore, ReconciliationError
from sparkles.features.tables import TrainingTable
from sparkles.names import ERROR, IMAGE_ID, LABEL, PATH, SHA
from sparkles.progress import spark_progress, step

log = logging.getLogger(__name__)
TABLE_MANIFEST = [IMAGE_ID, LABEL, SHA]  # what the training table's fingerprint covers


@dataclass(kw_only=True)
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

    def featurizer(self, profile: Profile) -> DeepImageFeaturizer:
        """The featurizer that made these features, as the model a training run logs holds it:
        int8 runs the quantized model kept in its store (``quantize``), not a new calibration."""
        featurizer = build_featurizer(profile, self.weights, self.precision)
        if self.precision == "int8":
            quantized = _quantized_in(self.table.store)
            featurizer.setParams(calibrationSet=self.calibration, quantizedModel=quantized)
        return featurizer

    @property
    def images_per_second(self) -> float:
        return self.counts.get("computed_images", 0) / self.seconds if self.seconds else 0.0


def choose_weights(profile: Profile, spark: SparkSession) -> ResolvedWeights:
    """The configured weights; a fallback to random weights only where the profile allows it."""
    settings = profile.featurizer
    spec = get_spec(settings.model)
    try:
        return resolve_weights(
            spec,
            settings.weights,
            seed=settings.random_seed,
            mirror=settings.weights_mirror,
            spark=spark,
        )
    except WeightsUnavailableError as err:
        if not settings.allow_random_weights:
            raise
        allowed = f"allow_random_weights: true in {profile.source}"
        log.warning("%s -- falling back to RANDOM weights (%s)", err, allowed)
        fallback = resolve_weights(spec, "random", seed=settings.random_seed)
        return dataclasses.replace(fallback, requested=settings.weights)


def build_featurizer(
    profile: Profile, weights: ResolvedWeights, precision: str | None = None
) -> DeepImageFeaturizer:
    """The one place a featurizer is built from a profile. ``precision``: the one that runs here
    (see ``featurize``), else the profile's."""
    settings = profile.featurizer
    return DeepImageFeaturizer.from_profile(
        settings, weights.local_path or "random", precision=precision or settings.precision
    )


def _quantized_in(store: FeatureStore) -> str:
    return f"{store.root}/{QUANTIZED_DIR}/{MODEL_XML}"


def _calibrate(featurizer: DeepImageFeaturizer, identities: DataFrame, count: int) -> list[str]:
    """Choose int8's calibration images among the labelled ones and set the featurizer's
    calibration identity; returns their paths (read only if the store lacks the model)."""
    readable = identities.where(F.col(SHA) != EMPTY_SHA).groupBy(SHA)
    readable = readable.agg(F.min(PATH).alias(PATH))
    sample = calibration_sample(readable, SHA, seed=featurizer.getSeed(), count=count).collect()
    featurizer.setParams(calibrationSet=calibration_identity([row[SHA] for row in sample]))
    return [row.path for row in sample]


def _quantize_into(
    spark: SparkSession, store: FeatureStore, featurizer: DeepImageFeaturizer, *, paths: list[str]
) -> None:
    """The store's int8 model if it has one (made by an earlier run, maybe on another
    machine), else one quantized here on the calibration images and kept in the store."""
    target = _quantized_in(store)
    if not storage.exists(spark, target):
        rows = read_contents(spark, paths).select(PATH, "content").collect()
        contents = [bytes(row.content) for row in sorted(rows, key=lambda row: row.path)]
        featurizer.quantize(spark, contents, featurizer.getCalibrationSet())
        local = featurizer.local_quantized_model(spark)
        with storage.reporting(target):
            for file in (local.with_suffix(".bin"), local):  # the .xml last: it marks it done
                storage.copy_from_local(spark, str(file), target.removesuffix(".xml") + file.suffix)
    featurizer.setParams(quantizedModel=target)


def featurize(
    profile: Profile, spark: SparkSession, *, refresh: bool = False, rehash: bool = False
) -> FeaturizeResult:
    """The profile's labelled images with their features; the CNN runs only on images the
    feature store lacks (``refresh``: on all of them, and their new rows win), and only files
    the file index does not know are read to learn that (``rehash``: every file, repairing it)."""
    ensure_sample(profile)
    data, settings = profile.data, profile.featurizer
    with step(spark, "labels and the image listing"):
        labeled = select_target_labels(
            spark,
            data.labels_csv,
            classes_csv=data.classes_csv,
            classes=data.classes,
            policy=data.multi_label_policy,
        )
        matched = match_files(labeled, read_image_files(spark, data.images, data.image_glob))
    counts = {**labeled.counts, **matched.counts}
    weights = choose_weights(profile, spark)
    featurizer = build_featurizer(profile, weights)
    # bf16 and f32 features never share a store: its key holds the precision that runs
    precision = featurizer.precision_that_runs()
    featurizer.setParams(precision=precision)
    index = FileIndex(spark, profile.store.dir)
    listed = matched.matched.select(PATH, LENGTH, MODIFIED).distinct()  # under keep-all: once
    with step(spark, "file index: hash new files"):
        hashes = index.hashes(listed, rehash)
    identities = _identities(matched.matched, matched.empty, hashes.shas)
    identities = identities.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        if precision == "int8":
            calibration = _calibrate(featurizer, identities, settings.calibration_images)
        store = FeatureStore.for_settings(
            spark, profile.store.dir, featurizer.store_key(weights.identity)
        )
        if precision == "int8":
            _quantize_into(spark, store, featurizer, paths=calibration)
        segment, seconds = None, 0.0
        # what the store lacks is decided, computed and committed by one run at a time
        with StoreLease(spark, store.root, profile.store.lease_seconds).held():
            leased_at = time.time()
            known = store.images([] if refresh else store.live_segments())
            with step(spark, "what the store lacks"):
                new = _images_to_compute(identities, known)
            if new:
                log.info("featurizing %d images the store lacks", len(new))
                started = time.monotonic()
                segment = _compute(
                    spark,
                    store,
                    featurizer,
                    new=new,
                    rows_per_partition=settings.rows_per_partition,
                )
                seconds = time.monotonic() - started
                if len(store.live_segments()) > profile.store.compact_after_segments:
                    store.compact()
            else:
                log.info("every image has features in %s: the CNN does not run", store.root)
        # only a run that appended to the index can have pushed it past the threshold
        if hashes.hashed and len(index.segments.live()) > profile.store.compact_after_segments:
            index.compact()
        key = fingerprint({"store": store.key}, manifest_rows(identities, TABLE_MANIFEST))
        with step(spark, "commit the training table"):
            table = TrainingTable(key, store.save_table(key, identities), store)
    finally:
        identities.unpersist()
    with step(spark, "reconcile"):
        written = _reconcile(table, counts["matched_rows"], new)
    written["computed_twice"] = (
        _done_twice(store, segment.key, leased_at=leased_at, new=new) if segment else 0
    )
    counts = {
        **counts,
        **written,
        "computed_images": len(new),
        "hashed_files": hashes.hashed,
        "indexed_files": hashes.from_index,
        "index_repaired": hashes.repaired,
    }
    reused = not new
    return FeaturizeResult(
        fingerprint=key,
        table=table,
        reused=reused,
        weights=weights,
        precision=precision,
        counts=counts,
        seconds=seconds,
        runtime=settings.runtime,
        calibration=featurizer.getCalibrationSet(),
    )


def _identities(files: DataFrame, empty: DataFrame, shas: DataFrame) -> DataFrame:
    """(path, image_id, label, image_sha256) of every labelled file, 0-byte ones included."""
    labelled = files.select(PATH, IMAGE_ID, LABEL).join(shas, PATH)
    empties = empty.select(PATH, IMAGE_ID, LABEL, F.lit(EMPTY_SHA).alias(SHA))
    return labelled.unionByName(empties)


def _images_to_compute(identities: DataFrame, known: DataFrame) -> list[tuple[str, str]]:
    """(image_sha256, one path with those bytes) of every image ``known`` lacks."""
    missing = identities.select(SHA, PATH).join(known, SHA, "left_anti")
    one_path = missing.groupBy(SHA).agg(F.min(PATH).alias(PATH)).orderBy(SHA)
    return [(row[SHA], row.path) for row in one_path.collect()]


def _compute(
    spark: SparkSession,
    store: FeatureStore,
    featurizer: DeepImageFeaturizer,
    *,
    new: list[tuple[str, str]],
    rows_per_partition: int,
) -> TableEntry:
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


def _shas_of(spark: SparkSession, new: list[tuple[str, str]]) -> DataFrame:
    """The images this run put through the CNN, as a one-column frame to join on."""
    return spark.createDataFrame([(sha,) for sha, _ in new], f"{SHA} string")


def _done_twice(
    store: FeatureStore, segment: str, *, leased_at: float, new: list[tuple[str, str]]
) -> int:
    """Images this run computed that another run committed since this one took the lease: only
    a lease that did not hold allows it (S3's create, docs/feature-store.md). Of two such runs,
    the one that commits second always sees it."""
    others = [
        entry
        for entry in store.live_segments()
        if entry.key != segment
        and "replaces" not in entry.meta  # a compaction is no CNN work
        and entry.meta.get("committed_at", 0) >= leased_at
    ]
    if not others:
        return 0
    twice = store.segments.read(others).select(SHA).join(_shas_of(store.spark, new), SHA).count()
    log.warning(
        "%d images this run computed were committed by another featurize at the same time: the "
        "store's lease did not hold (on S3 its create is not atomic under this Hadoop; "
        "docs/feature-store.md). Nothing is lost or counted twice; the CNN work was done twice",
        twice,
    )
    return twice


def _reconcile(table: TrainingTable, rows_in: int, new: list[tuple[str, str]]) -> dict[str, int]:
    """rows in = featurized + quarantined, and every row has a store row; else an error.

    ``computed``: the rows whose image this run put through the CNN (``new``), whichever
    segment the store now reads them from (another run's, where the lease did not hold)."""
    rows = table.read(how="left")
    if new:
        mine = _shas_of(table.store.spark, new).withColumn("_mine", F.lit(True))
        rows = rows.join(mine, SHA, "left")
    else:
        rows = rows.withColumn("_mine", F.lit(None).cast("boolean"))
    computed = F.col("_mine").isNotNull()
    outcome = rows.agg(
        F.count(F.lit(1)).alias("rows"),
        F.sum(F.col("segment").isNull().cast("int")).alias("unmatched"),
        F.sum((F.col("segment").isNotNull() & F.col(ERROR).isNull()).cast("int")).alias(
            "featurized"
        ),
        F.sum(F.col(ERROR).isNotNull().cast("int")).alias("quarantined"),
        F.sum(computed.cast("int")).alias("computed"),
    ).first()
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
