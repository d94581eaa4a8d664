"""Image files → DataFrame(path, image_id, length, modification_time, content) via binaryFile.

Images stay compressed until a Python worker decodes a batch. Spark's file sources skip 0-byte
files without a trace, so those are found from the file index and returned separately: a caller
can quarantine them instead of losing them.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F


@dataclass(frozen=True)
class ImageFiles:
    """The files under an images root: the readable ones and the empty ones."""

    files: DataFrame  # path, image_id, length, modification_time, content (lazy: read on use)
    empty: DataFrame  # path, image_id of 0-byte files that binaryFile skips


def image_id_from_path(path: Column) -> Column:
    """Open Images names files ``<ImageID>.jpg``: the file name without its extension."""
    return F.regexp_extract(path, r"([^/]+?)(\.[^./]*)?$", 1)


def canonical_path(path: str) -> str:
    """One spelling per file: the file index writes ``file:///x``, binaryFile ``file:/x``."""
    return "file:/" + path[len("file:///") :] if path.startswith("file:///") else path


def read_image_files(spark: SparkSession, root: str, glob: str = "*.jpg") -> ImageFiles:
    """List and (lazily) read every file under ``root`` whose name matches ``glob``, recursively."""
    raw = (
        spark.read.format("binaryFile")
        .option("pathGlobFilter", glob)
        .option("recursiveFileLookup", "true")
        .load(root)
    )
    files = raw.select(
        "path",
        image_id_from_path(F.col("path")).alias("image_id"),
        "length",
        F.col("modificationTime").alias("modification_time"),
        "content",
    )
    indexed = {canonical_path(p) for p in raw.inputFiles()}
    read = {row.path for row in raw.select("path").collect()}
    empty_paths = sorted(indexed - read)
    empty = spark.createDataFrame([(p,) for p in empty_paths], "path string").select(
        "path", image_id_from_path(F.col("path")).alias("image_id")
    )
    return ImageFiles(files=files, empty=empty)
