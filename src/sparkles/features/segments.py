"""Append-only Parquet segments keyed by one column, the newest row per key winning.

What the feature store (rows keyed by ``image_sha256``) and the file index (rows keyed by
``path``) both are. A segment is a ``commit.CommittedTables`` entry: a killed append leaves a
folder no ``meta.json`` names, which nothing reads. Segments are never rewritten: compaction
writes the live segments' rows (newest per key) as one new segment whose ``meta.json`` lists the
segments it ``replaces``; readers skip those at once, and their folders go once nothing can still
be reading them. Where two segments hold one key (concurrent writers, a refresh), the row of the
segment committed last wins (segment ids sort by creation time), and compaction keeps exactly it.
"""

from __future__ import annotations

import logging
import math
import time
import uuid

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sparkles import storage
from sparkles.errors import UserError
from sparkles.features.commit import STALE_AFTER_SECONDS, CommittedTables, TableEntry

log = logging.getLogger(__name__)

SEGMENT = "segment"  # every row names the segment that wrote it


class ReconciliationError(UserError, RuntimeError):
    """Rows went missing between input and output: never accepted silently."""


def new_segment_id() -> str:
    """Sorts by creation time (UTC, milliseconds), unique across concurrent writers."""
    now = time.time()
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now))
    return f"{stamp}{int(now * 1000) % 1000:03d}Z-{uuid.uuid4().hex[:8]}"


class Segments(CommittedTables):
    """The segments under ``root``: rows of ``key`` + ``columns`` + ``segment``."""

    def __init__(
        self, spark: SparkSession, root: str, key: str, columns: list[str], rows_per_file: int
    ) -> None:
        super().__init__(spark, root)
        self.key, self.columns, self.rows_per_file = key, columns, rows_per_file

    def committed(self) -> list[TableEntry]:
        found = (self.lookup(name) for name in self.listed())
        return [entry for entry in found if entry is not None]

    def live(self) -> list[TableEntry]:
        """Complete segments that no complete compaction replaces, oldest first."""
        committed = self.committed()
        replaced = {key for entry in committed for key in entry.meta.get("replaces", [])}
        return sorted((e for e in committed if e.key not in replaced), key=lambda e: e.key)

    def read(self, segments: list[TableEntry] | None = None) -> DataFrame | None:
        """One row per key, the newest where segments overlap; None if there is no segment."""
        segments = self.live() if segments is None else segments
        if not segments:
            return None
        rows = self.spark.read.parquet(*[s.table for s in segments])
        if len(segments) == 1:
            return rows  # append and compaction commit a segment only if no key repeats in it
        newest = F.max_by(F.struct(*self.columns, SEGMENT), SEGMENT).alias("row")
        return rows.groupBy(self.key).agg(newest).select(self.key, "row.*")

    def append(self, rows: DataFrame, expected: int, what: str = "append") -> TableEntry:
        """Commit ``rows`` as a new segment, only if it holds exactly ``expected`` keys once each:
        a file that vanished or changed while it was read fails it, and nothing reads the rows."""
        segment = new_segment_id()
        rows = rows.select(self.key, *self.columns, F.lit(segment).alias(SEGMENT))
        staged = self.stage(segment, rows)  # partitioned as given: the CNN's tasks write it
        self._check(staged, expected, what)
        meta = {"rows": expected, "committed_at": time.time()}
        return self.commit(segment, staged, meta)

    def compact(self) -> TableEntry | None:
        """The live segments' rows (newest per key) as one segment; None if there is one."""
        live = self.live()
        if len(live) < 2:
            return None
        rows = self.read(live)
        assert rows is not None
        total = rows.count()
        segment = new_segment_id()
        files = max(1, math.ceil(total / self.rows_per_file))
        staged = self.stage(segment, rows.coalesce(files))
        self._check(staged, total, "compaction")
        replaces = [entry.key for entry in live]
        meta = {"rows": total, "committed_at": time.time(), "replaces": replaces}
        entry = self.commit(segment, staged, meta)
        log.info("compacted %d segments (%d rows) into %s", len(live), total, entry.path)
        self.tidy()
        return entry

    def _check(self, staged: TableEntry, expected: int, what: str) -> None:
        written = (
            self.spark.read.parquet(staged.table)
            .agg(F.count(F.lit(1)).alias("rows"), F.countDistinct(self.key).alias("keys"))
            .first()
        )
        if written.rows != expected or written.keys != expected:
            raise ReconciliationError(
                f"{what} wrote {written.rows} rows for {written.keys} keys where {expected} "
                f"were expected (a file changed or vanished meanwhile?): "
                f"{staged.table} is not committed; run again"
            )

    def tidy(self) -> None:
        """Delete segment folders nothing reads any more, once nothing can still be reading them.

        Folders no complete meta.json names (killed appends) once untouched for
        STALE_AFTER_SECONDS; replaced segments once their compaction is that old.
        """
        now = time.time()
        committed = {entry.key: entry for entry in self.committed()}
        replaced_since = {
            key: entry.meta.get("committed_at", now)
            for entry in committed.values()
            for key in entry.meta.get("replaces", [])
        }
        for key in self.listed():
            folder = self.entry_path(key)
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
