"""Parquet tables committed under a key, trusted only when complete: the feature store's parts.

An entry is the folder ``<root>/<key>/`` (a feature-store segment, a run's training table). The
commit protocol renames no directory, so it holds where a rename is a copy of every object (S3A,
which serves ``s3://`` on EMR since 7.10):

1. ``stage`` writes the table to ``table-<uuid>/`` inside the entry: a fresh name per attempt,
   so two writers of one key never touch each other's files;
2. ``commit`` lists the table's data files and writes ``meta.json`` last, naming the table and
   every data file with its size;
3. ``lookup`` trusts an entry only if ``meta.json`` is readable, names its own key, and every file
   it lists is there with that size. A copy cut short, a deleted or truncated part file, or a run
   that died before its commit is never read.

Tables that no ``meta.json`` names (a writer that lost a race, a refreshed entry, a crash) are
removed by a later commit once nothing in them has changed for ``STALE_AFTER_SECONDS``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sparkles import storage
from sparkles.names import ERROR

log = logging.getLogger(__name__)

META = "meta.json"
TABLE_PREFIX = "table-"
STALE_AFTER_SECONDS = 6 * 3600  # far longer than any task writes without producing a file


def fingerprint(parts: dict[str, Any], manifest: Iterable[tuple[Any, ...]]) -> str:
    """Hash of settings and rows (streamed: the rows never sit in the driver's memory at once)."""
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True).encode())
    for row in manifest:
        digest.update(("\x1f".join("" if v is None else str(v) for v in row) + "\x1e").encode())
    return digest.hexdigest()[:20]


def manifest_rows(frame: DataFrame, columns: list[str]) -> Iterable[tuple[Any, ...]]:
    """``columns`` of every row in one total order, streamed to the driver."""
    ordered = frame.select(*columns).orderBy(*columns)
    return (tuple(row) for row in ordered.toLocalIterator())


@dataclass(frozen=True)
class TableEntry:
    path: str  # the entry folder, <root>/<key>
    meta: dict[str, Any]  # meta.json; while staged, only {"table": <folder name>}

    @property
    def table(self) -> str:
        return f"{self.path}/{self.meta['table']}"

    @property
    def key(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    def read(self, spark: SparkSession) -> DataFrame:
        return spark.read.parquet(self.table)

    def features(self, spark: SparkSession) -> DataFrame:
        """Entries of the cache format before the feature store (old runs' held-out images)."""
        return self.read(spark).where(F.col(ERROR).isNull())


def open_entry(spark: SparkSession, path: str) -> TableEntry | None:
    """The committed entry in folder ``path`` if every file its meta.json lists is there."""
    path = path.rstrip("/")
    if not storage.exists(spark, f"{path}/{META}"):
        return None
    try:
        meta = json.loads(storage.read_text(spark, f"{path}/{META}"))
        entry = TableEntry(path, meta)
        listed = {name: int(size) for name, size in meta["files"].items()}
    except Exception as err:  # unreadable, checksum mismatch, not JSON, old format
        log.warning("ignoring entry %s: unusable meta.json (%s)", path, err)
        return None
    if path.rsplit("/", 1)[-1] != meta.get("fingerprint"):
        return None
    present = storage.data_files(spark, entry.table)
    if present != listed:
        missing = sorted(set(listed) - set(present))
        differ = sorted(n for n in set(listed) & set(present) if listed[n] != present[n])
        log.warning(
            "ignoring entry %s: %d data file(s) missing, %d of another size than "
            "meta.json records (an interrupted copy?)",
            path,
            len(missing),
            len(differ),
        )
        return None
    return entry


class CommittedTables:
    """Entries under one root folder, each written by ``stage`` and made visible by ``commit``."""

    def __init__(self, spark: SparkSession, root: str) -> None:
        self.spark = spark
        self.root = storage.qualify(root).rstrip("/")

    def listed(self) -> list[str]:
        """Every folder under the root: committed, staged, or left by a crash."""
        return storage.list_names(self.spark, self.root)

    def entry_path(self, key: str) -> str:
        return f"{self.root}/{key}"

    def lookup(self, key: str) -> TableEntry | None:
        """The entry for ``key`` if it was completely written, else None."""
        return open_entry(self.spark, self.entry_path(key))

    def stage(self, key: str, table: DataFrame) -> TableEntry:
        """Write ``table`` under a name of its own; nothing trusts it until ``commit``."""
        staged = TableEntry(self.entry_path(key), {"table": f"{TABLE_PREFIX}{uuid.uuid4().hex}"})
        with storage.reporting(staged.table):
            table.write.mode("errorifexists").parquet(staged.table)
        return staged

    def commit(self, key: str, staged: TableEntry, meta: dict[str, Any]) -> TableEntry:
        """Record the staged table's files in meta.json, written last; then tidy old tables."""
        files = storage.data_files(self.spark, staged.table)
        meta = {**meta, "fingerprint": key, "table": staged.meta["table"], "files": files}
        storage.write_text_atomic(
            self.spark, f"{staged.path}/{META}", json.dumps(meta, indent=2, sort_keys=True)
        )
        self._remove_stale_tables(staged.path, keep=staged.meta["table"])
        return TableEntry(staged.path, meta)

    def _remove_stale_tables(self, path: str, keep: str) -> None:
        """Tables no meta.json names and nobody has written to for STALE_AFTER_SECONDS."""
        cutoff = (time.time() - STALE_AFTER_SECONDS) * 1000
        for name in storage.list_names(self.spark, path):
            if name == keep or not name.startswith("table"):  # table-<uuid>, or an old table/
                continue
            folder = f"{path}/{name}"
            if storage.newest_modification(self.spark, folder) < cutoff:
                log.info("removing stale table %s", folder)
                storage.delete(self.spark, folder)
