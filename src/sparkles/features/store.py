"""The feature store: CNN features kept per image, keyed by (featurizer settings, image bytes).

Features depend only on an image's bytes and the featurizer's settings, so they are kept per
image, not per run: adding images, changing the class list or relabelling runs the CNN on no
image the store already holds, and a run's training table is its labels joined afterwards.

**Identity: the sha256 of the file's bytes**, computed by Spark in the JVM (``sha2``: a read,
no decode, no Python) on every run. Not (path, size, mtime): ``cp -p``, ``rsync -t`` and
archive tools restore modification times, S3's ``LastModified`` has one-second resolution, and
a file rewritten with the same size inside that second would keep its old features. Hashing
costs one read of every file per run (``bench/feature_store.py`` measures it against the CNN),
and it reuses features across copies, renames and buckets.

Layout, ``<cache.dir>/<settings key>/``:

- ``settings.json``: what the key hashes (model, input size, pooling, runtime, precision,
  weights, preprocessing, decode limits), for people;
- ``segments/<segment>/``: appended features, one row per image (``image_sha256``,
  ``features``, ``featurize_error``, ``segment``: the segment that computed the row);
- ``tables/<fingerprint>/``: a run's training table without features (``path``, ``image_id``,
  ``label``, ``image_sha256``), so a later process (the registry's gate) reads the same rows.

Segments and tables are ``cache.CommittedTables`` entries: a killed append leaves a folder that
no ``meta.json`` names, which nothing reads. Segments are never rewritten: compaction writes the
live segments' rows as one new segment whose ``meta.json`` lists the segments it ``replaces``;
readers skip those at once, and their folders go once nothing can still be reading them. Where
two segments hold one image (concurrent writers, a ``--refresh``), the row computed last wins,
and compaction keeps exactly that row.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
import uuid
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sparkles import storage
from sparkles.errors import UserError
from sparkles.features.commit import (
    STALE_AFTER_SECONDS,
    CacheEntry,
    CommittedTables,
    fingerprint,
)
from sparkles.names import ERROR, IMAGE_ID, SHA

log = logging.getLogger(__name__)

EMPTY_SHA = hashlib.sha256(b"").hexdigest()  # every 0-byte file: one quarantined row
FEATURE_COLUMNS = ["features", ERROR, "segment"]
SEGMENTS, TABLES, SETTINGS = "segments", "tables", "settings.json"
ROWS_PER_COMPACTED_FILE = 20_000  # 2048 floats a row: ~160 MB Parquet files


class ReconciliationError(UserError, RuntimeError):
    """Rows went missing between input and output: never accepted silently."""


def new_segment_id() -> str:
    """Sorts by creation time (UTC, milliseconds), unique across concurrent writers."""
    now = time.time()
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now))
    return f"{stamp}{int(now * 1000) % 1000:03d}Z-{uuid.uuid4().hex[:8]}"


class FeatureStore:
    """The segments and training tables of one featurizer setting, under ``root``."""

    def __init__(self, spark: SparkSession, root: str) -> None:
        self.spark = spark
        self.root = storage.qualify(root).rstrip("/")
        self.segments = CommittedTables(spark, f"{self.root}/{SEGMENTS}")
        self.tables = CommittedTables(spark, f"{self.root}/{TABLES}")

    @property
    def key(self) -> str:
        return self.root.rsplit("/", 1)[-1]

    @classmethod
    def for_settings(
        cls, spark: SparkSession, cache_dir: str, parts: dict[str, Any]
    ) -> FeatureStore:
        """The store of these featurizer settings (``settings.json`` written on first use)."""
        root = f"{storage.qualify(cache_dir).rstrip('/')}/{fingerprint(parts, [])}"
        store = cls(spark, root)
        if not storage.exists(spark, f"{root}/{SETTINGS}"):
            text = json.dumps(parts, indent=2, sort_keys=True)
            storage.write_text_atomic(spark, f"{root}/{SETTINGS}", text)
        return store

    @classmethod
    def all_under(cls, spark: SparkSession, cache_dir: str) -> list[FeatureStore]:
        """Every store under ``cache_dir`` (one per featurizer setting ever used there)."""
        root = storage.qualify(cache_dir).rstrip("/")
        names = storage.list_names(spark, root)
        return [
            cls(spark, f"{root}/{name}")
            for name in names
            if storage.exists(spark, f"{root}/{name}/{SEGMENTS}")
        ]

    def committed_segments(self) -> list[CacheEntry]:
        found = (self.segments.lookup(key) for key in self.segments.listed())
        return [entry for entry in found if entry is not None]

    def live_segments(self) -> list[CacheEntry]:
        """Complete segments that no complete compaction replaces, oldest first."""
        committed = self.committed_segments()
        replaced = {key for entry in committed for key in entry.meta.get("replaces", [])}
        return sorted((e for e in committed if e.key not in replaced), key=lambda e: e.key)

    def images(self, segments: list[CacheEntry]) -> DataFrame:
        """``image_sha256`` of every image the segments hold (reads that column only)."""
        if not segments:
            return self.spark.createDataFrame([], f"{SHA} string")
        return self.spark.read.parquet(*[s.table for s in segments]).select(SHA)

    def read(self, segments: list[CacheEntry] | None = None) -> DataFrame:
        """One row per image: ``image_sha256`` + FEATURE_COLUMNS, the newest where rows overlap."""
        segments = self.live_segments() if segments is None else segments
        if not segments:
            raise ReconciliationError(f"the feature store {self.root} holds no complete segment")
        rows = self.spark.read.parquet(*[s.table for s in segments])
        if len(segments) == 1:
            return rows  # append and compaction commit a segment only if no image repeats in it
        newest = F.max_by(F.struct(*FEATURE_COLUMNS), "segment").alias("row")
        return rows.groupBy(SHA).agg(newest).select(SHA, "row.*")

    def append(self, rows: DataFrame, expected: int) -> CacheEntry:
        """Commit ``rows`` (image_sha256, features, featurize_error) as a new segment.

        Only if it holds exactly ``expected`` rows, one per image: a file that vanished or
        changed while it was being featurized fails the append, and nothing reads the rows.
        """
        segment = new_segment_id()
        rows = rows.select(SHA, "features", ERROR, F.lit(segment).alias("segment"))
        staged = self.segments.stage(segment, rows)
        self._check(staged, expected, "append")
        meta = {"rows": expected, "committed_at": time.time()}
        return self.segments.commit(segment, staged, meta)

    def compact(self) -> CacheEntry | None:
        """The live segments' rows (newest per image) as one segment; None if there is one."""
        live = self.live_segments()
        if len(live) < 2:
            return None
        rows = self.read(live)
        total = rows.count()
        segment = new_segment_id()
        files = max(1, math.ceil(total / ROWS_PER_COMPACTED_FILE))
        staged = self.segments.stage(segment, rows.coalesce(files))
        self._check(staged, total, "compaction")
        replaces = [entry.key for entry in live]
        meta = {"rows": total, "committed_at": time.time(), "replaces": replaces}
        entry = self.segments.commit(segment, staged, meta)
        log.info("compacted %d segments (%d images) into %s", len(live), total, entry.path)
        self.tidy()
        return entry

    def _check(self, staged: CacheEntry, expected: int, what: str) -> None:
        written = (
            self.spark.read.parquet(staged.table)
            .agg(F.count(F.lit(1)).alias("rows"), F.countDistinct(SHA).alias("images"))
            .first()
        )
        if written.rows != expected or written.images != expected:
            raise ReconciliationError(
                f"{what} wrote {written.rows} rows for {written.images} images where {expected} "
                f"images were to be featurized (a file changed or vanished meanwhile?): "
                f"{staged.table} is not committed; run again"
            )

    def tidy(self) -> None:
        """Delete segment folders nothing reads any more, once nothing can still be reading them.

        Folders no complete meta.json names (killed appends) once untouched for
        STALE_AFTER_SECONDS; replaced segments once their compaction is that old.
        """
        now = time.time()
        committed = {entry.key: entry for entry in self.committed_segments()}
        replaced_since = {
            key: entry.meta.get("committed_at", now)
            for entry in committed.values()
            for key in entry.meta.get("replaces", [])
        }
        for key in self.segments.listed():
            folder = self.segments.entry_path(key)
            if key in replaced_since:
                stale = replaced_since[key] < now - STALE_AFTER_SECONDS
            elif key not in committed:
                newest = storage.newest_modification(self.spark, folder) / 1000
                stale = newest < now - STALE_AFTER_SECONDS
            else:
                continue
            if stale:
                log.info("removing segment %s: nothing reads it", folder)
                storage.delete(self.spark, folder)

    def save_table(self, key: str, identities: DataFrame) -> CacheEntry:
        """A run's training table without features, under its fingerprint; written once."""
        entry = self.tables.lookup(key)
        if entry is not None:
            return entry
        rows = identities.select("path", IMAGE_ID, "label", SHA).coalesce(1)
        staged = self.tables.stage(key, rows)
        return self.tables.commit(key, staged, {"store": self.root, "committed_at": time.time()})
