"""The file index: (path, size, modification time) → sha256, so a featurize reads only new files.

git's index, rsync's quick check and Auto Loader's checkpoint answer "what changed?" from
metadata first; so does this. A featurize lists the image folder (names, sizes and modification
times: no bytes read), takes the sha256 of every file whose triple the index holds from it, and
reads and hashes only the rest, appending what it learnt as one segment
(``segments.Segments``: all or nothing, the newest row per path wins). Renamed, copied and
re-timestamped files cost one re-hash and no CNN work: the feature store is keyed by content.

Trusting metadata has git's known limit: a file rewritten with the same size inside the same
timestamp (``cp -p``, ``rsync -t``, a tool that restores mtimes) looks unchanged. Two defences:

- *racy entries*: a row is trusted only if the file's modification time is more than
  ``RACY_SECONDS`` older than the hash (S3's ``LastModified`` has one-second resolution), so a
  write landing in the same tick as the read is hashed again on the next run;
- ``sparkles featurize --rehash``: read every file again and repair the index; the run reports
  how many entries were wrong (``index_repaired``).

Kept under ``<store.dir>/file-index/``, beside the stores: a file's hash does not depend on the
featurizer, so every setting shares one index. Rows of files that are gone stay (one short row
each) and cost nothing but their bytes in the index.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sparkles import storage
from sparkles.data.images import read_contents
from sparkles.features.segments import Segments
from sparkles.names import PATH, SHA

log = logging.getLogger(__name__)

INDEX_DIR = "file-index"
LENGTH, MODIFIED, HASHED_AT = "length", "modification_time", "hashed_at"
RACY_SECONDS = 2  # S3's one-second LastModified, and a second more for the clocks
ROWS_PER_INDEX_FILE = 1_000_000  # ~100 bytes a row


@dataclass(frozen=True)
class Hashes:
    """(path, image_sha256) of the listed files, and how each sha256 was learnt."""

    shas: DataFrame  # path, image_sha256
    from_index: int  # files whose sha256 came from the index: no byte read
    hashed: int  # files read and hashed in this run
    repaired: int  # --rehash: files whose index entry held another sha256


class FileIndex:
    """(path, length, modification_time) → image_sha256, under ``<cache_dir>/file-index``."""

    def __init__(self, spark: SparkSession, cache_dir: str) -> None:
        self.spark = spark
        root = f"{storage.qualify(cache_dir).rstrip('/')}/{INDEX_DIR}"
        columns = [LENGTH, MODIFIED, SHA, HASHED_AT]
        self.segments = Segments(spark, root, PATH, columns, ROWS_PER_INDEX_FILE)

    def trusted(self) -> DataFrame:
        """Rows whose file was last modified well before it was hashed (not racy)."""
        rows = self.segments.read()
        if rows is None:
            schema = f"{PATH} string, {LENGTH} long, {MODIFIED} timestamp, {SHA} string"
            return self.spark.createDataFrame([], schema)
        settled = F.col(MODIFIED) < F.col(HASHED_AT) - F.expr(f"INTERVAL {RACY_SECONDS} SECONDS")
        return rows.where(settled).select(PATH, LENGTH, MODIFIED, SHA)

    def hashes(self, listed: DataFrame, rehash: bool = False) -> Hashes:
        """The sha256 of every file in ``listed`` (path, length, modification_time, one row per
        file), reading only those the index does not know (``rehash``: every one)."""
        looked_up = listed.join(self.trusted(), [PATH, LENGTH, MODIFIED], "left")
        known = looked_up.where(F.col(SHA).isNotNull()).select(PATH, SHA)
        # the paths to read and how many the index knows, in one query (a count of `known` after
        # a collect of the others ran the listing and the index's join twice: bench/commands.py)
        unread = F.col(SHA).isNull() | F.lit(rehash)
        lookup = looked_up.agg(
            F.sum(F.col(SHA).isNotNull().cast("int")).alias("known"),
            F.collect_list(F.when(unread, F.col(PATH))).alias("paths"),
        ).first()
        paths, from_index = list(lookup.paths), int(lookup.known or 0)
        if not paths:
            return Hashes(known, from_index, 0, 0)
        log.info("hashing %d files the file index does not know", len(paths))
        hashed = read_contents(self.spark, paths).select(
            PATH,
            LENGTH,
            F.col("modificationTime").alias(MODIFIED),
            F.sha2("content", 256).alias(SHA),
            F.current_timestamp().alias(HASHED_AT),  # fixed when the query starts: before reads
        )
        segment = self.segments.append(hashed, expected=len(paths), what="hashing")
        fresh = self.spark.read.parquet(segment.table).select(PATH, SHA)
        repaired = 0
        if rehash:
            changed = known.join(fresh.withColumnRenamed(SHA, "now"), PATH)
            repaired = changed.where(F.col(SHA) != F.col("now")).count()
            if repaired:
                log.warning("--rehash: %d file index entries held another sha256", repaired)
            shas = fresh
        else:
            shas = known.unionByName(fresh)
        return Hashes(shas, 0 if rehash else from_index, len(paths), repaired)

    def compact(self) -> None:
        self.segments.compact()
