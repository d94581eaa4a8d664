"""Seeded, stratified splits that repeat exactly: same seed and data, same rows.

Splits assign **images**, not rows: under ``multi_label_policy: keep-all`` an image with two
target classes is two rows, and both land on the same side (else a model would be tested on an
image it trained on). Images are stratified by their set of labels and ranked within it by a
seeded hash of the image id, which stays the same when the files move. The assignment is
computed on (image_id, label) alone and broadcast back, so feature vectors are never shuffled
into one partition per class.

``train_and_test`` is the one place that turns a run's split parameters into its (train, test)
rows: train, tune and the registry's held-out images all call it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from sparkles.config import TrainConfig
from sparkles.names import IMAGE_ID, LABEL

FOLD = "fold"
# the MLflow params a training run logs for its test split (read back by the registry)
SPLIT_PARAMS = ("test_fraction", "split_seed")


def _assign(frame: DataFrame, seed: int, fold: Column) -> DataFrame:
    per_image = frame.groupBy(IMAGE_ID).agg(
        F.concat_ws("|", F.array_sort(F.collect_set(LABEL))).alias("_stratum")
    )
    # hash the image id, not the path: the split must not change when the data moves
    order = Window.partitionBy("_stratum").orderBy(F.xxhash64(F.lit(seed), IMAGE_ID), IMAGE_ID)
    ranked = per_image.select(
        IMAGE_ID,
        F.row_number().over(order).alias("_rank"),
        F.count(F.lit(1)).over(Window.partitionBy("_stratum")).alias("_class_size"),
    )
    return frame.join(F.broadcast(ranked.select(IMAGE_ID, fold.alias(FOLD))), IMAGE_ID)


def stratified_split(
    frame: DataFrame, test_fraction: float, seed: int
) -> tuple[DataFrame, DataFrame]:
    """(rest, held out): per stratum, the round(n × fraction) images that rank lowest are held
    out, with every row of theirs."""
    held_out = F.col("_rank") <= F.round(F.col("_class_size") * F.lit(test_fraction))
    tagged = _assign(frame, seed, held_out.cast("int"))
    return tagged.where(f"{FOLD} = 0").drop(FOLD), tagged.where(f"{FOLD} = 1").drop(FOLD)


def stratified_folds(frame: DataFrame, folds: int, seed: int) -> DataFrame:
    """Adds ``fold`` in 0..folds-1; every stratum is spread evenly over the folds."""
    return _assign(frame, seed, ((F.col("_rank") - 1) % F.lit(folds)).cast("int"))


def split_params(settings: TrainConfig) -> dict[str, float | int]:
    """A profile's test split as the params a training run logs."""
    return {"test_fraction": settings.test_fraction, "split_seed": settings.seed}


def train_and_test(features: DataFrame, params: Mapping[str, Any]) -> tuple[DataFrame, DataFrame]:
    """(train, test) of a training table, from ``split_params`` (or a run's logged params)."""
    return stratified_split(features, float(params["test_fraction"]), int(params["split_seed"]))
