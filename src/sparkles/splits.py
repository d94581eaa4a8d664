"""Seeded, stratified splits that repeat exactly: same seed and data, same rows.

Rows are ranked within their class by a seeded hash of the image id, which stays the same when
the files move. The assignment is computed on (path, image_id, label) alone and broadcast back,
so feature vectors are never shuffled into one partition per class.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

FOLD = "fold"


def _assign(frame: DataFrame, seed: int, fold: Column) -> DataFrame:
    # hash the image id, not the path: the split must not change when the data moves
    order = Window.partitionBy("label").orderBy(F.xxhash64(F.lit(seed), "image_id"), "path")
    ranked = frame.select("path", "image_id", "label").select(
        "path",
        F.row_number().over(order).alias("_rank"),
        F.count(F.lit(1)).over(Window.partitionBy("label")).alias("_class_size"),
    )
    return frame.join(F.broadcast(ranked.select("path", fold.alias(FOLD))), "path")


def stratified_split(
    frame: DataFrame, test_fraction: float, seed: int
) -> tuple[DataFrame, DataFrame]:
    """(rest, held out): per class, the round(n × fraction) rows that rank lowest are held out."""
    held_out = F.col("_rank") <= F.round(F.col("_class_size") * F.lit(test_fraction))
    tagged = _assign(frame, seed, held_out.cast("int"))
    return tagged.where(f"{FOLD} = 0").drop(FOLD), tagged.where(f"{FOLD} = 1").drop(FOLD)


def stratified_folds(frame: DataFrame, folds: int, seed: int) -> DataFrame:
    """Adds ``fold`` in 0..folds-1; every class is spread evenly over the folds."""
    return _assign(frame, seed, ((F.col("_rank") - 1) % F.lit(folds)).cast("int"))
