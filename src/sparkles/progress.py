"""Progress of long Spark jobs from the status tracker: a bar on a terminal, else log lines."""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from py4j.protocol import Py4JJavaError
from pyspark.sql import SparkSession
from tqdm import tqdm

log = logging.getLogger(__name__)


def _as_list(spark: SparkSession, scala: Any) -> list:
    """A Scala Seq or Set as a Python list."""
    jvm = spark.sparkContext._jvm
    try:  # Scala 2.13 (Spark 4)
        return list(jvm.scala.jdk.javaapi.CollectionConverters.asJava(scala))
    except Exception:  # Scala 2.12 (Spark 3.5)
        return list(jvm.scala.collection.JavaConverters.asJavaCollection(scala))


def _stages(spark: SparkSession) -> list:
    """Every stage of this application in Spark's status store (live ones included: running
    tasks report their metrics with each executor heartbeat)."""
    context = spark.sparkContext
    quantiles = context._gateway.new_array(context._jvm.double, 0)
    # stageList(statuses, details, withSummaries, quantiles, taskStatus) -> a Scala Seq
    stages = context._jsc.sc().statusStore().stageList(None, False, False, quantiles, None)
    return _as_list(spark, stages)


def input_bytes(spark: SparkSession, scanning: str | None = None) -> int:
    """Bytes Spark has read from storage in this application so far (the UI's "Input"); with
    ``scanning`` (a data source: ``binaryFile`` is image files), only by the stages of SQL
    queries whose physical plan scans that source."""
    if scanning is None:
        return sum(int(stage.inputBytes()) for stage in _stages(spark))
    return sum(int(stage.inputBytes()) for stage in stage_data(spark, _scanning(spark, scanning)))


# (application, source) -> (executions classified, the last one's id, their scanning stages).
# A finished query's plan and stages never change: each is read once, not on every call (a long
# session, such as the test suite's, runs thousands, and each plan is kilobytes through Py4J).
_SCANS: dict[tuple[str, str], tuple[int, int, frozenset[int]]] = {}


def _scanning(spark: SparkSession, source: str) -> set[int]:
    """Stage ids of the SQL queries whose physical plan scans ``source``."""
    store = spark._jsparkSession.sharedState().statusStore()
    key = (spark.sparkContext.applicationId, source)
    done, last, settled_ids = _SCANS.get(key, (0, -1, frozenset()))
    previous = _as_list(spark, store.executionsList(done - 1, 1)) if done else []
    if done and [execution.executionId() for execution in previous] != [last]:
        done, last, settled_ids = 0, -1, frozenset()  # the store evicted old queries: again
    ids, unsettled, running_before = set(settled_ids), set(), False
    for execution in _as_list(spark, store.executionsList(done, 2**31 - 1)):
        scans = f"Scan {source} " in execution.physicalPlanDescription()
        stages = {int(stage) for stage in _as_list(spark, execution.stages())} if scans else set()
        running_before = running_before or not execution.completionTime().isDefined()
        if running_before:  # running, or after one that is: read again on the next call
            unsettled |= stages
        else:  # finished, as is every query before it: never read again
            ids |= stages
            done, last = done + 1, execution.executionId()
    _SCANS[key] = (done, last, frozenset(ids))
    return ids | unsettled


def stage_data(spark: SparkSession, stage_ids: Iterable[int]) -> list:
    """The last attempt of each of these stages that Spark's status store still holds."""
    store = spark.sparkContext._jsc.sc().statusStore()
    found = []
    for stage_id in stage_ids:
        try:
            found.append(store.lastStageAttempt(stage_id))
        except Py4JJavaError:  # evicted (spark.ui.retainedStages)
            continue
    return found


def jobs_run(spark: SparkSession) -> int:
    """Spark jobs this application has started (each a pass over some data)."""
    return len(_as_list(spark, spark.sparkContext._jsc.sc().statusStore().jobsList(None)))


def _records_read(spark: SparkSession, group: str) -> int:
    """Input records of the group's stages so far: for featurize, images read into the CNN."""
    tracker = spark.sparkContext.statusTracker()
    ids = {
        stage_id
        for job_id in tracker.getJobIdsForGroup(group)
        for stage_id in (getattr(tracker.getJobInfo(job_id), "stageIds", None) or [])
    }
    return sum(int(stage.inputRecords()) for stage in stage_data(spark, ids))


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
def spark_progress(
    spark: SparkSession, label: str, *, every: float = 1.0, records: int | None = None
) -> Iterator[None]:
    """Show progress of every Spark job started inside the block: in tasks, or, given the
    ``records`` its input holds, in records read (images, for featurize). Records of running
    tasks arrive with executor heartbeats (``spark.executor.heartbeatInterval``, 10 s)."""
    group = f"sparkles-{label}-{time.monotonic_ns()}"
    context = spark.sparkContext
    context.setJobGroup(group, label)
    stop = threading.Event()
    interactive = sys.stderr.isatty()

    unit = "task" if records is None else "image"

    def count() -> tuple[int, int]:
        if records is None:
            return _task_counts(spark, group)
        return min(_records_read(spark, group), records), records

    def watch() -> None:
        bar = tqdm(
            total=records or 0, desc=label, unit=unit, disable=not interactive, file=sys.stderr
        )
        last_log, last_done = 0.0, -1
        while not stop.wait(every):
            try:
                done, total = count()
            except Exception:  # the JVM went away under us (Ctrl-C, a failed job): stop quietly
                break
            bar.total, bar.n = total, done
            bar.refresh()
            quiet_for = time.monotonic() - last_log
            if not interactive and total and done != last_done and quiet_for > 10:
                log.info("%s: %d/%d %ss (%.0f%%)", label, done, total, unit, 100 * done / total)
                last_log, last_done = time.monotonic(), done
        bar.close()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield
        if records is not None:
            log.info("%s: %d %ss", label, records, unit)
    finally:
        stop.set()
        thread.join()
        context.setLocalProperty("spark.jobGroup.id", None)


DESCRIPTION = "spark.job.description"


@contextmanager
def step(spark: SparkSession, name: str) -> Iterator[None]:
    """Every Spark job this thread starts inside the block is described as ``name`` (the Spark
    UI's and ``spark/stages.csv``'s description): Spark names a query's stages after a JVM
    thread, not after the line of ours that asked for them."""
    context = spark.sparkContext
    before = context.getLocalProperty(DESCRIPTION)
    context.setJobDescription(name)
    try:
        yield
    finally:
        context.setLocalProperty(DESCRIPTION, before)  # type: ignore[arg-type]
