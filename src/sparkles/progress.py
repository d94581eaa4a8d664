"""Progress of long Spark jobs from the status tracker: a bar on a terminal, else log lines."""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from pyspark.sql import SparkSession
from tqdm import tqdm

log = logging.getLogger(__name__)


def input_bytes(spark: SparkSession) -> int:
    """Bytes Spark has read from storage in this application so far (the UI's "Input")."""
    context = spark.sparkContext
    jvm = context._jvm
    quantiles = context._gateway.new_array(jvm.double, 0)
    # stageList(statuses, details, withSummaries, quantiles, taskStatus) -> a Scala Seq
    stages = context._jsc.sc().statusStore().stageList(None, False, False, quantiles, None)
    try:  # Scala 2.13 (Spark 4)
        stages = jvm.scala.jdk.javaapi.CollectionConverters.asJava(stages)
    except Exception:  # Scala 2.12 (Spark 3.5)
        stages = jvm.scala.collection.JavaConverters.seqAsJavaList(stages)
    return sum(int(stage.inputBytes()) for stage in stages)


def _task_counts(spark: SparkSession, group: str) -> tuple[int, int]:
    tracker = spark.sparkContext.statusTracker()
    done = total = 0
    for job_id in tracker.getJobIdsForGroup(group):
        job = tracker.getJobInfo(job_id)
        for stage_id in job.stageIds if job else []:
            stage = tracker.getStageInfo(stage_id)
            if stage:
                done += stage.numCompletedTasks
                total += stage.numTasks
    return done, total


@contextmanager
def spark_progress(spark: SparkSession, label: str, every: float = 1.0) -> Iterator[None]:
    """Show task progress of every Spark job started inside the block."""
    group = f"sparkles-{label}-{time.monotonic_ns()}"
    context = spark.sparkContext
    context.setJobGroup(group, label)
    stop = threading.Event()
    interactive = sys.stderr.isatty()

    def watch() -> None:
        bar = tqdm(total=0, desc=label, unit="task", disable=not interactive, file=sys.stderr)
        last_log = 0.0
        while not stop.wait(every):
            done, total = _task_counts(spark, group)
            bar.total, bar.n = total, done
            bar.refresh()
            if not interactive and total and time.monotonic() - last_log > 15:
                log.info("%s: %d/%d tasks (%.0f%%)", label, done, total, 100 * done / total)
                last_log = time.monotonic()
        bar.close()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        context.setLocalProperty("spark.jobGroup.id", None)
