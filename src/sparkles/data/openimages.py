"""Open Images label CSVs → one target label per image, with Spark.

Keeps positive labels only (Confidence 1), joins display names, selects the target classes by
display name, and applies an explicit policy to images that carry several target classes:
``drop`` them, ``keep-first`` (the first class listed), ``keep-all`` (one row per class, the
way the 2019 study counted them: whatever the model says, one of the rows is an error), or
``multi-label`` (the same rows, read as the image's set of classes: a classifier per class).
Every image that leaves the set is counted.

Under ``multi-label`` an image enters by a positive (Confidence 1) target label, as under every
policy, so all four answer on the same images; every target class it does not carry is a
negative for it, whether a human verified its absence (Confidence 0: ``explicit_negatives``) or
nobody looked (``assumed_negatives``): both are counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sparkles.data.images import ImageFiles
from sparkles.errors import UserError
from sparkles.names import IMAGE_ID, LABEL, MULTI_LABEL, PATH

LABELS_SCHEMA = "ImageID string, Source string, LabelName string, Confidence double"
CLASSES_SCHEMA = "LabelName string, DisplayName string"


class IngestError(UserError, ValueError):
    """Label files that cannot be used as Open Images labels."""


@dataclass
class LabeledImages:
    """Target-labelled images (image_id, label; several rows per image under keep-all) and how
    every label row was accounted for."""

    labels: DataFrame
    targets: DataFrame  # image_id of every image with a positive target label, before the policy
    multi_label: DataFrame  # image_id, labels: images that carried several target classes
    counts: dict[str, int] = field(default_factory=dict)


@dataclass
class MatchedImages:
    """Labelled images joined to their files, and what did not match on either side."""

    matched: DataFrame  # path, image_id, label, length, modification_time (no bytes read)
    empty: DataFrame  # path, image_id, label of labelled 0-byte files
    missing: DataFrame  # image_id, label: labelled, but no file
    counts: dict[str, int] = field(default_factory=dict)


def read_class_descriptions(spark: SparkSession, path: str) -> DataFrame:
    """(LabelName, DisplayName); v5 files have no header, v7 files do: accept both."""
    table = spark.read.csv(path, schema=CLASSES_SCHEMA, header=False, mode="PERMISSIVE")
    return table.where(
        ~((F.col("LabelName") == "LabelName") & (F.col("DisplayName") == "DisplayName"))
    )


def read_image_labels(spark: SparkSession, path: str) -> DataFrame:
    """The image-level labels CSV; a header that is not Open Images' is an error, not a guess."""
    header = spark.read.text(path).first()
    expected = LABELS_SCHEMA.replace(" string", "").replace(" double", "").replace(" ", "")
    if header is None or header.value.strip().replace(" ", "") != expected:
        found = None if header is None else header.value
        raise IngestError(f"{path}: expected the Open Images header {expected!r}, found {found!r}")
    return spark.read.csv(path, schema=LABELS_SCHEMA, header=True, mode="PERMISSIVE")


def select_target_labels(
    spark: SparkSession,
    labels_csv: str,
    *,
    classes_csv: str,
    classes: list[str],
    policy: str = "drop",
) -> LabeledImages:
    """One row per image that carries a target class, after the multi-label policy."""
    names = read_class_descriptions(spark, classes_csv)
    wanted = [c.lower() for c in classes]
    targets = names.where(F.lower("DisplayName").isin(wanted)).collect()
    found = {row.DisplayName.lower() for row in targets}
    unknown = [c for c in classes if c.lower() not in found]
    if unknown:
        raise IngestError(
            f"{classes_csv}: no class named {unknown}; names are matched ignoring case"
        )
    priority = {name: i for i, name in enumerate(wanted)}
    target_rows = [
        (r.LabelName, classes[priority[r.DisplayName.lower()]], priority[r.DisplayName.lower()])
        for r in targets
    ]
    target_df = spark.createDataFrame(target_rows, "LabelName string, label string, priority int")

    raw = read_image_labels(spark, labels_csv).cache()
    malformed = (
        F.col("ImageID").isNull() | F.col("LabelName").isNull() | F.col("Confidence").isNull()
    )
    totals = raw.agg(
        F.count(F.lit(1)).alias("label_rows"),
        F.sum(malformed.cast("int")).alias("malformed_label_rows"),
        F.sum((F.col("Confidence") == 1).cast("int")).alias("positive_label_rows"),
        F.countDistinct("ImageID").alias("images_in_labels"),
    ).first()
    positives = (
        raw.where(F.col("Confidence") == 1)
        .join(F.broadcast(target_df), "LabelName")
        .select(F.col("ImageID").alias(IMAGE_ID), LABEL, "priority")
        .distinct()
    )
    # cached: the tally, the labels and match_files' targets all read it (it was computed three
    # times, one shuffle each, which on a cold JVM is seconds per `mlflow run`)
    per_image = (
        positives.groupBy(IMAGE_ID)
        .agg(
            F.count(F.lit(1)).alias("n_targets"),
            F.sort_array(F.collect_set(F.struct("priority", LABEL))).alias("ranked"),
        )
        .cache()
    )
    tally = per_image.agg(
        F.count(F.lit(1)).alias("images_with_target"),
        F.sum((F.col("n_targets") > 1).cast("int")).alias("multi_label_images"),
    ).first()
    multi = per_image.where("n_targets > 1").select(IMAGE_ID, F.col("ranked.label").alias("labels"))
    every_row = policy in ("keep-all", MULTI_LABEL)
    kept = per_image if policy != "drop" else per_image.where("n_targets = 1")
    if every_row:
        ranked = kept.select(IMAGE_ID, F.explode("ranked").alias("ranked"))
        labels = ranked.select(IMAGE_ID, F.col("ranked")[LABEL].alias(LABEL)).cache()
    else:
        labels = kept.select(IMAGE_ID, F.col("ranked")[0][LABEL].alias(LABEL)).cache()
    counts = {
        "label_rows": totals.label_rows,
        "malformed_label_rows": totals.malformed_label_rows or 0,
        "positive_label_rows": totals.positive_label_rows or 0,
        "images_in_labels": totals.images_in_labels,
        "images_with_target": tally.images_with_target,
        "multi_label_images": tally.multi_label_images or 0,
        "labeled_images": kept.count(),
        "labeled_rows": labels.count(),
    }
    if policy == MULTI_LABEL:
        counts.update(
            _negatives(
                raw,
                target_df,
                per_image=per_image,
                n_classes=len(classes),
                positives=counts["labeled_rows"],
            )
        )
    raw.unpersist()
    targets = per_image.select(IMAGE_ID)
    return LabeledImages(labels=labels, targets=targets, multi_label=multi, counts=counts)


def _negatives(
    raw: DataFrame, targets: DataFrame, *, per_image: DataFrame, n_classes: int, positives: int
) -> dict[str, int]:
    """How the (image, class) pairs that are not positives are known to be negatives: verified
    absent (a Confidence 0 row, and no positive row of that class) or assumed."""
    verified = (
        raw.where(F.col("Confidence") == 0)
        .join(F.broadcast(targets), "LabelName")
        .select(F.col("ImageID").alias(IMAGE_ID), LABEL)
        .distinct()
        .join(per_image.select(IMAGE_ID), IMAGE_ID)
    )
    positive = raw.where(F.col("Confidence") == 1).join(F.broadcast(targets), "LabelName")
    positive = positive.select(F.col("ImageID").alias(IMAGE_ID), LABEL)
    explicit = verified.join(positive, [IMAGE_ID, LABEL], "left_anti").count()
    pairs = per_image.count() * n_classes
    return {"explicit_negatives": explicit, "assumed_negatives": pairs - positives - explicit}


def match_files(labeled: LabeledImages, images: ImageFiles) -> MatchedImages:
    """Join labels to files by ImageID; every file is matched, unlabelled or dropped by the policy.

    ``files = matched_files + unlabeled_files + policy_dropped_files``; ``matched_rows`` counts
    a file once per label it keeps (more than ``matched_files`` only under keep-all); labelled
    images with no file are ``missing_files``.
    """
    labels = F.broadcast(labeled.labels)
    matched = images.files.join(labels, IMAGE_ID).select(
        PATH, IMAGE_ID, LABEL, "length", "modification_time"
    )
    empty = images.empty.join(labels, IMAGE_ID).select(PATH, IMAGE_ID, LABEL)
    file_ids = images.files.select(IMAGE_ID, F.lit(False).alias("is_empty")).unionByName(
        images.empty.select(IMAGE_ID, F.lit(True).alias("is_empty"))
    )
    per_image = labeled.labels.groupBy(IMAGE_ID).agg(F.count(F.lit(1)).alias("n_labels"))
    targets = labeled.targets.withColumn("is_target", F.lit(True))
    per_file = file_ids.join(F.broadcast(per_image), IMAGE_ID, "left").join(
        F.broadcast(targets), IMAGE_ID, "left"
    )
    has_label, is_target = F.col("n_labels").isNotNull(), F.col("is_target").isNotNull()
    tally = per_file.agg(
        F.count(F.lit(1)).alias("files"),
        F.sum(F.col("is_empty").cast("int")).alias("empty_files"),
        F.sum(has_label.cast("int")).alias("matched_files"),
        F.sum(F.coalesce("n_labels", F.lit(0))).alias("matched_rows"),
        F.sum((~is_target).cast("int")).alias("unlabeled_files"),
        F.sum((is_target & ~has_label).cast("int")).alias("policy_dropped_files"),
    ).first()
    missing = labeled.labels.join(file_ids.select(IMAGE_ID).distinct(), IMAGE_ID, "left_anti")
    counts = {key: int(value or 0) for key, value in tally.asDict().items()}
    counts["missing_files"] = missing.select(IMAGE_ID).distinct().count()
    return MatchedImages(matched=matched, empty=empty, missing=missing, counts=counts)
