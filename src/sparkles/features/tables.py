"""A run's training table: its labelled images (path, image_id, label, image_sha256), committed
under ``tables/<fingerprint>/`` of a feature store, joined to that store's features when read.
What ``train``, ``tune`` and the registry's gate fit and score on, without reading an image."""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sparkles.features.commit import TableEntry, open_entry
from sparkles.features.store import FeatureStore
from sparkles.names import ERROR, SHA


@dataclass(frozen=True)
class TrainingTable:
    """A run's labelled images joined to their features in the store."""

    fingerprint: str  # of the store's settings and every (image_id, label, image_sha256)
    entry: TableEntry  # tables/<fingerprint>: path, image_id, label, image_sha256
    store: FeatureStore

    def read(self, how: str = "inner") -> DataFrame:
        """path, image_id, label, image_sha256, features, featurize_error, segment."""
        identities = self.entry.read(self.store.spark)
        return identities.join(self.store.read(), SHA, how)

    def features(self) -> DataFrame:
        return self.read().where(F.col(ERROR).isNull())

    def quarantine(self) -> DataFrame:
        return self.read().where(F.col(ERROR).isNotNull()).drop("features")


def open_training_table(spark: SparkSession, path: str) -> TrainingTable | None:
    """The training table committed at ``path`` (a run's ``sparkles.store.table`` tag)."""
    entry = open_entry(spark, path)
    if entry is None:
        return None
    return TrainingTable(entry.key, entry, FeatureStore(spark, entry.meta["store"]))
