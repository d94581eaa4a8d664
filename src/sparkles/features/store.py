"""The feature store: CNN features kept per image, keyed by (featurizer settings, image bytes).

Features depend only on an image's bytes and the featurizer's settings, so they are kept per
image, not per run: adding images, changing the class list or relabelling runs the CNN on no
image the store already holds, and a run's training table is its labels joined afterwards.

**Identity: the sha256 of the file's bytes**, computed by Spark in the JVM (``sha2``: a read,
no decode, no Python), so features are reused across copies, renames and buckets. Which files
must be read to learn it is the file index's business (``file_index``: a file whose path, size
and modification time it knows is not read again).

Layout, ``<store.dir>/<settings key>/``:

- ``settings.json``: what the key hashes (model, input size, pooling, runtime, precision,
  weights, preprocessing, decode limits), for people;
- ``segments/<segment>/``: appended features, one row per image (``image_sha256``,
  ``features``, ``featurize_error``, ``segment``: the segment that computed the row);
- ``tables/<fingerprint>/``: a run's training table without features (``path``, ``image_id``,
  ``label``, ``image_sha256``), so a later process (the registry's gate) reads the same rows.

Segments are ``segments.Segments`` (append-only, all or nothing, the newest row per image wins,
compacted past ``store.compact_after_segments``); tables are ``commit.CommittedTables`` entries.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from typing import Any

from pyspark.sql import DataFrame, SparkSession

from sparkles import storage
from sparkles.features.commit import CommittedTables, TableEntry, fingerprint
from sparkles.features.lease import StoreLease
from sparkles.features.segments import ReconciliationError, Segments
from sparkles.names import ERROR, IMAGE_ID, LABEL, PATH, SHA

__all__ = ["EMPTY_SHA", "FeatureStore", "ReconciliationError"]

log = logging.getLogger(__name__)

EMPTY_SHA = hashlib.sha256(b"").hexdigest()  # every 0-byte file: one quarantined row
FEATURE_COLUMNS = ["features", ERROR]
SEGMENTS, TABLES, SETTINGS = "segments", "tables", "settings.json"
ROWS_PER_COMPACTED_FILE = 20_000  # 2048 floats a row: ~160 MB Parquet files


class FeatureStore:
    """The segments and training tables of one featurizer setting, under ``root``."""

    def __init__(self, spark: SparkSession, root: str) -> None:
        self.spark = spark
        self.root = storage.qualify(root).rstrip("/")
        self.segments = Segments(
            spark, f"{self.root}/{SEGMENTS}", SHA, FEATURE_COLUMNS, ROWS_PER_COMPACTED_FILE
        )
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
            if storage.exists(spark, f"{root}/{name}/{SETTINGS}")
        ]

    def live_segments(self) -> list[TableEntry]:
        return self.segments.live()

    def images(self, segments: list[TableEntry]) -> DataFrame:
        """``image_sha256`` of every image the segments hold (reads that column only)."""
        if not segments:
            return self.spark.createDataFrame([], f"{SHA} string")
        return self.spark.read.parquet(*[s.table for s in segments]).select(SHA)

    def read(self, segments: list[TableEntry] | None = None) -> DataFrame:
        """One row per image: ``image_sha256``, features, featurize_error, segment."""
        rows = self.segments.read(segments)
        if rows is None:
            raise ReconciliationError(f"the feature store {self.root} holds no complete segment")
        return rows

    def append(self, rows: DataFrame, expected: int) -> TableEntry:
        """Commit ``rows`` (image_sha256, features, featurize_error) as a new segment."""
        return self.segments.append(rows, expected)

    def compact(self) -> TableEntry | None:
        return self.segments.compact()

    def tidy(self) -> None:
        self.segments.tidy()

    def save_table(self, key: str, identities: DataFrame) -> TableEntry:
        """A run's training table without features, under its fingerprint; written once."""
        entry = self.tables.lookup(key)
        if entry is not None:
            return entry
        rows = identities.select(PATH, IMAGE_ID, LABEL, SHA).coalesce(1)
        staged = self.tables.stage(key, rows)
        return self.tables.commit(key, staged, {"store": self.root, "committed_at": time.time()})


def compact_all(spark: SparkSession, root: str, *, lease_seconds: float) -> list[dict[str, Any]]:
    """`sparkles compact`: every store under ``root`` merged into one segment and tidied, each
    under its lease (no featurize writes meanwhile); what each had before and after."""
    report = []
    for store in FeatureStore.all_under(spark, root):
        before = len(store.live_segments())
        with StoreLease(spark, store.root, lease_seconds).held():
            compacted = store.compact()
            store.tidy()
        report.append(
            {
                "store": store.root,
                "segments_before": before,
                "segments_after": len(store.live_segments()),
                "rows": compacted.meta["rows"] if compacted else None,
            }
        )
    return report
