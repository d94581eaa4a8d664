"""File operations on any Hadoop filesystem Spark can reach (local, HDFS, S3A) via the JVM.

The feature cache and saved featurizers live on whatever the profile names; going through
Hadoop's FileSystem keeps one code path for a laptop and for S3.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from sparkles.errors import StorageError, file_system_cause

if TYPE_CHECKING:  # pyspark only for hints: config and the JVM-free scorer import is_uri
    from pyspark.sql import SparkSession


@contextmanager
def reporting(path: str, doing: str = "writing") -> Iterator[None]:
    """A Java file-system failure (a full disk, a file where a folder should be, S3 refusing)
    becomes one ``StorageError`` naming ``path`` and the cause, instead of a Java trace."""
    try:
        yield
    except StorageError:
        raise
    except Exception as err:
        cause = file_system_cause(err)
        if cause is None:
            raise
        raise StorageError(f"{doing} {path}: {cause}") from err


def _fs_and_path(spark: SparkSession, path: str) -> tuple[Any, Any]:
    jvm = spark.sparkContext._jvm
    hpath = jvm.org.apache.hadoop.fs.Path(path)
    return hpath.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()), hpath


def is_uri(path: str) -> bool:
    """A Hadoop URI (any ``scheme://``, ``file:``, ``dbfs:/``) rather than a driver-local path:
    the one rule every module applies."""
    return "://" in path or path.startswith(("file:", "dbfs:/"))


def qualify(path: str) -> str:
    """Plain local paths become absolute ``file:`` URIs so every node reads the same thing."""
    if is_uri(path):
        return path
    return Path(path).resolve().as_uri()


def exists(spark: SparkSession, path: str) -> bool:
    fs, hpath = _fs_and_path(spark, path)
    return bool(fs.exists(hpath))


def delete(spark: SparkSession, path: str) -> None:
    fs, hpath = _fs_and_path(spark, path)
    if fs.exists(hpath):
        fs.delete(hpath, True)


def write_text(spark: SparkSession, path: str, text: str) -> None:
    with reporting(path):
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
    with reporting(target):
        fs, dst = _fs_and_path(spark, target)
        src = spark.sparkContext._jvm.org.apache.hadoop.fs.Path(Path(local).resolve().as_uri())
        fs.copyFromLocalFile(False, True, src, dst)


def copy_to_local(spark: SparkSession, source: str, local: str) -> None:
    fs, src = _fs_and_path(spark, source)
    dst = spark.sparkContext._jvm.org.apache.hadoop.fs.Path(Path(local).resolve().as_uri())
    fs.copyToLocalFile(False, src, dst, True)


def qualified(spark: SparkSession, path: str) -> str:
    """``path`` with the scheme and authority of the file system it resolves to.

    A bare path means the *default* file system (HDFS on YARN), not the driver's disk: a path
    stored for later (a saved model's weights) must say which one.
    """
    fs, hpath = _fs_and_path(spark, path)
    return str(fs.makeQualified(hpath).toString())


def data_files(spark: SparkSession, folder: str) -> dict[str, int]:
    """Name → size of the files directly in ``folder`` that hold data (not ``_*``, ``.*``)."""
    fs, hpath = _fs_and_path(spark, folder)
    if not fs.exists(hpath):
        return {}
    return {
        status.getPath().getName(): int(status.getLen())
        for status in fs.listStatus(hpath)
        if status.isFile() and not status.getPath().getName().startswith(("_", "."))
    }


def newest_modification(spark: SparkSession, folder: str) -> int:
    """Latest modification time (ms since the epoch) of ``folder`` or anything under it."""
    fs, hpath = _fs_and_path(spark, folder)
    newest = int(fs.getFileStatus(hpath).getModificationTime())
    files = fs.listFiles(hpath, True)
    while files.hasNext():
        newest = max(newest, int(files.next().getModificationTime()))
    return newest


def write_text_atomic(spark: SparkSession, path: str, text: str) -> None:
    """Readers see the old file or the whole new one: written aside, then renamed over.

    On S3A the rename of one object is a copy made visible at once; on HDFS rename refuses an
    existing target, so that is deleted first (a reader in between sees no file: a cache miss).
    """
    aside = f"{path}.{uuid.uuid4().hex}.tmp"
    write_text(spark, aside, text)
    fs, source = _fs_and_path(spark, aside)
    _, target = _fs_and_path(spark, path)
    if not fs.rename(source, target):
        fs.delete(target, False)
        if not fs.rename(source, target):
            fs.delete(source, False)
            raise OSError(f"could not write {path}")


def _local_file(path: str) -> Path | None:
    """The driver-local file a ``file:`` URI names (a bare path may be the default FS: HDFS)."""
    return Path(urlparse(path).path) if path.startswith("file:") else None


def create_new(spark: SparkSession, path: str, text: str) -> bool:
    """Write ``text`` to ``path`` only if nothing is there; False if something is. Atomic on a
    local disk (O_EXCL) and on HDFS (the NameNode's create); on S3A before conditional writes,
    a check then a write (docs/feature-store.md, "Concurrent writers")."""
    local = _local_file(path)
    if local is not None:
        try:
            handle = os.open(local, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(handle, "w") as out:
            out.write(text)
        return True
    with reporting(path):
        fs, hpath = _fs_and_path(spark, path)
        try:
            stream = fs.create(hpath, False)
        except Exception as err:  # py4j wraps Hadoop's FileAlreadyExistsException
            if "FileAlreadyExists" in str(err):
                return False
            raise
        try:
            stream.write(bytearray(text.encode("utf-8")))
        finally:
            stream.close()
    return True


def rename(spark: SparkSession, source: str, target: str) -> bool:
    """Hadoop's rename: False when ``source`` is gone (another process moved it first)."""
    fs, src = _fs_and_path(spark, source)
    _, dst = _fs_and_path(spark, target)
    return bool(fs.rename(src, dst))
