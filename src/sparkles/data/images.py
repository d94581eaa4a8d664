"""Image files → DataFrame(path, image_id, length, modification_time, content) via binaryFile.

Images stay compressed until a Python worker decodes a batch, and are read only where needed:
selecting the listing columns reads no bytes, and ``read_contents`` reads just the files given
(featurize reads the files that match a label, not the whole folder). Spark's file sources skip
0-byte files without a trace, so those are found from the file index and returned separately: a
caller can quarantine them instead of losing them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from sparkles.names import IMAGE_ID, PATH

# Hadoop glob syntax: a file name holding one of these must be escaped to be read literally.
GLOB_CHARACTERS = re.compile(r"([\\\[\]{}*?])")


@dataclass(frozen=True)
class ImageFiles:
    """The files under an images root: the readable ones and the empty ones."""

    files: DataFrame  # path, image_id, length, modification_time, content (read only if used)
    empty: DataFrame  # path, image_id of 0-byte files that binaryFile skips


def image_id_from_path(path: Column) -> Column:
    """Open Images names files ``<ImageID>.jpg``: the file name without its extension."""
    return F.regexp_extract(path, r"([^/]+?)(\.[^./]*)?$", 1)


def hadoop_path(uri: str) -> str:
    """One spelling per file, binaryFile's (Hadoop's ``Path.toString``).

    ``inputFiles()`` gives percent-encoded URIs (``file:///a/car%20photo.jpg``) where the
    ``path`` column has ``file:/a/car photo.jpg``; compared as they come, every name with a
    space, ``%`` or non-ASCII letter looked like two files.
    """
    parts = urlsplit(uri)
    if not parts.scheme:
        return unquote(uri)
    authority = f"//{parts.netloc}" if parts.netloc else ""
    return f"{parts.scheme}:{authority}{unquote(parts.path)}"


def read_image_files(spark: SparkSession, root: str, glob: str = "*.jpg") -> ImageFiles:
    """List and (lazily) read every file under ``root`` whose name matches ``glob``, recursively."""
    raw = (
        spark.read.format("binaryFile")
        .option("pathGlobFilter", glob)
        .option("recursiveFileLookup", "true")
        .load(root)
    )
    files = raw.select(
        PATH,
        image_id_from_path(F.col(PATH)).alias(IMAGE_ID),
        "length",
        F.col("modificationTime").alias("modification_time"),
        "content",
    )
    indexed = {hadoop_path(p) for p in raw.inputFiles()}
    read = {row.path for row in raw.select(PATH).collect()}  # no content: nothing is read
    empty_paths = sorted(indexed - read)
    empty = spark.createDataFrame([(p,) for p in empty_paths], "path string").select(
        PATH, image_id_from_path(F.col(PATH)).alias(IMAGE_ID)
    )
    return ImageFiles(files=files, empty=empty)


def read_contents(spark: SparkSession, paths: list[str]) -> DataFrame:
    """(path, length, modificationTime, content) of exactly these files, as read: reads scale
    with what is used, not the folder."""
    if not paths:
        schema = "path string, length long, modificationTime timestamp, content binary"
        return spark.createDataFrame([], schema)
    literal = [GLOB_CHARACTERS.sub(r"\\\1", path) for path in paths]
    frame = spark.read.format("binaryFile").load(literal)
    return frame.select(PATH, "length", "modificationTime", "content")
