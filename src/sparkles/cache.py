"""Fingerprinted Parquet feature cache: featurize once, train and tune many times.

An entry lives at ``<cache_dir>/<fingerprint>/`` and holds ``table/`` (one row per input image:
features, or a null vector and the quarantine reason) and ``meta.json``. It is staged under a
temporary name and renamed into place, with meta.json written last: a directory without a
matching meta.json is never trusted, so an interrupted run cannot poison later ones.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sparkles import storage

log = logging.getLogger(__name__)

META = "meta.json"
TABLE = "table"


def fingerprint(parts: dict[str, Any], manifest: Iterable[tuple[Any, ...]]) -> str:
    """Hash of what decides the features: model settings, every input (path, size, mtime, label)."""
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True).encode())
    for row in manifest:
        digest.update(("\x1f".join("" if v is None else str(v) for v in row) + "\x1e").encode())
    return digest.hexdigest()[:20]


def manifest_rows(frame: DataFrame) -> Iterable[tuple[Any, ...]]:
    """(path, length, modification_time, label) sorted by path, streamed to the driver."""
    ordered = frame.select("path", "length", "modification_time", "label").orderBy("path")
    return (tuple(row) for row in ordered.toLocalIterator())


@dataclass(frozen=True)
class CacheEntry:
    path: str
    meta: dict[str, Any]

    @property
    def table(self) -> str:
        return f"{self.path}/{TABLE}"

    def read(self, spark: SparkSession) -> DataFrame:
        """All rows: featurized ones have ``features``, quarantined ones ``featurize_error``."""
        return spark.read.parquet(self.table)

    def features(self, spark: SparkSession) -> DataFrame:
        return self.read(spark).where(F.col("featurize_error").isNull())

    def quarantine(self, spark: SparkSession) -> DataFrame:
        return self.read(spark).where(F.col("featurize_error").isNotNull()).drop("features")


class FeatureCache:
    def __init__(self, spark: SparkSession, root: str) -> None:
        self.spark = spark
        self.root = storage.qualify(root).rstrip("/")

    def entry_path(self, key: str) -> str:
        return f"{self.root}/{key}"

    def lookup(self, key: str) -> CacheEntry | None:
        """The entry for ``key`` if it was completely written, else None."""
        path = self.entry_path(key)
        if not storage.exists(self.spark, f"{path}/{META}"):
            return None
        try:
            meta = json.loads(storage.read_text(self.spark, f"{path}/{META}"))
        except Exception as err:  # unreadable, checksum mismatch, not JSON: not trusted
            log.warning("ignoring cache entry %s: unreadable meta.json (%s)", path, err)
            return None
        return CacheEntry(path, meta) if meta.get("fingerprint") == key else None

    def stage(self, key: str, table: DataFrame) -> CacheEntry:
        """Write ``table`` under a temporary name; nothing trusts it until ``commit``."""
        for name in storage.list_names(self.spark, self.root):
            if name.startswith(f"_tmp-{key}-"):  # left behind by an interrupted run
                storage.delete(self.spark, f"{self.root}/{name}")
        staging = f"{self.root}/_tmp-{key}-{uuid.uuid4().hex[:8]}"
        table.write.mode("errorifexists").parquet(f"{staging}/{TABLE}")
        return CacheEntry(staging, {})

    def commit(self, key: str, staging: CacheEntry, meta: dict[str, Any]) -> CacheEntry:
        """Write meta.json, then move the staged entry into place (replacing a stale one)."""
        meta = {**meta, "fingerprint": key}
        text = json.dumps(meta, indent=2, sort_keys=True)
        storage.write_text(self.spark, f"{staging.path}/{META}", text)
        final = self.entry_path(key)
        storage.delete(self.spark, final)
        storage.rename(self.spark, staging.path, final)
        return CacheEntry(final, meta)
