"""File operations on any Hadoop filesystem Spark can reach (local, HDFS, S3A) via the JVM.

The feature cache and saved featurizers live on whatever the profile names; going through
Hadoop's FileSystem keeps one code path for a laptop and for S3.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession


def _fs_and_path(spark: SparkSession, path: str) -> tuple[Any, Any]:
    jvm = spark.sparkContext._jvm
    hpath = jvm.org.apache.hadoop.fs.Path(path)
    return hpath.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()), hpath


def qualify(path: str) -> str:
    """Plain local paths become absolute ``file:`` URIs so every node reads the same thing."""
    if "://" in path or path.startswith("file:"):
        return path
    return Path(path).resolve().as_uri()


def exists(spark: SparkSession, path: str) -> bool:
    fs, hpath = _fs_and_path(spark, path)
    return bool(fs.exists(hpath))


def delete(spark: SparkSession, path: str) -> None:
    fs, hpath = _fs_and_path(spark, path)
    if fs.exists(hpath):
        fs.delete(hpath, True)


def rename(spark: SparkSession, source: str, target: str) -> None:
    """Atomic on local disk and HDFS; on S3 a copy, which is why readers also check meta.json."""
    fs, src = _fs_and_path(spark, source)
    _, dst = _fs_and_path(spark, target)
    fs.mkdirs(dst.getParent())
    if not fs.rename(src, dst):
        raise OSError(f"could not rename {source} to {target}")


def write_text(spark: SparkSession, path: str, text: str) -> None:
    fs, hpath = _fs_and_path(spark, path)
    stream = fs.create(hpath, True)
    try:
        stream.write(bytearray(text.encode("utf-8")))
    finally:
        stream.close()


def read_text(spark: SparkSession, path: str) -> str:
    """Small files only (metadata)."""
    fs, hpath = _fs_and_path(spark, path)
    stream = fs.open(hpath)
    try:
        return spark.sparkContext._jvm.org.apache.commons.io.IOUtils.toString(stream, "UTF-8")
    finally:
        stream.close()


def list_names(spark: SparkSession, path: str) -> list[str]:
    fs, hpath = _fs_and_path(spark, path)
    if not fs.exists(hpath):
        return []
    return sorted(status.getPath().getName() for status in fs.listStatus(hpath))


def copy_from_local(spark: SparkSession, local: str, target: str) -> None:
    fs, dst = _fs_and_path(spark, target)
    src = spark.sparkContext._jvm.org.apache.hadoop.fs.Path(Path(local).resolve().as_uri())
    fs.copyFromLocalFile(False, True, src, dst)


def copy_to_local(spark: SparkSession, source: str, local: str) -> None:
    fs, src = _fs_and_path(spark, source)
    dst = spark.sparkContext._jvm.org.apache.hadoop.fs.Path(Path(local).resolve().as_uri())
    fs.copyToLocalFile(False, src, dst, True)
