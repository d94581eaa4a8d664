"""What a run's Spark work cost, read once at its end from Spark's own status store (no
per-task Python work, nothing run again): the application it ran in (tags), where its seconds,
spill and memory went (``spark.*`` metrics, ``spark/stages.csv``, ``spark/timeline.png``), the
longest queries' final plans with their operator metrics (``spark/plans/``); its event log
follows once the session has stopped (``event_log``). docs/troubleshooting.md reads them.
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from pyspark.sql import SparkSession

from sparkles import event_log, plots, tracking
from sparkles.config import ObserveConfig, Profile
from sparkles.names import (
    SPARK_APP_TAG,
    SPARK_ARTIFACTS,
    SPARK_EVENT_LOG_TAG,
    SPARK_MASTER_TAG,
    SPARK_UI_TAG,
    SPARK_VERSION_TAG,
)
from sparkles.progress import stage_data

log = logging.getLogger(__name__)
RUN_JOB_TAG = "sparkles-run-"  # + the MLflow run id: every Spark job a run (or trial) started
# Spark's call site names our files by their full path: keep it from the package on
OUR_PATH = re.compile(r"\S*/(sparkles/\S+\.py)")


def job_tag(run_id: str) -> str:
    return f"{RUN_JOB_TAG}{run_id}"


@contextmanager
def tagged_jobs(spark: SparkSession, run_id: str) -> Iterator[None]:
    """Every Spark job this thread starts inside the block carries the run's tag (Spark 3.5's
    ``addJobTag``): a search's stages then say which trial ran them."""
    context = spark.sparkContext
    context.addJobTag(job_tag(run_id))
    try:
        yield
    finally:
        context.removeJobTag(job_tag(run_id))


def _as_json(spark: SparkSession, value: Any) -> Any:
    """A status-store object as Python, in one Py4J call: Spark's REST API serializes the same
    classes with Jackson's Scala module, which ships in Spark's jars."""
    jvm = spark.sparkContext._jvm
    mapper = jvm.com.fasterxml.jackson.databind.ObjectMapper()
    mapper.registerModule(jvm.com.fasterxml.jackson.module.scala.DefaultScalaModule())
    return json.loads(mapper.writeValueAsString(value))


def application_tags(spark: SparkSession) -> dict[str, str]:
    """Which Spark application did the work, and where its event log and UI are."""
    context = spark.sparkContext
    conf = context.getConf()
    tags = {
        SPARK_APP_TAG: context.applicationId,
        SPARK_VERSION_TAG: spark.version,
        SPARK_MASTER_TAG: context.master,
    }
    if conf.get("spark.eventLog.enabled", "false").lower() == "true":
        tags[SPARK_EVENT_LOG_TAG] = conf.get("spark.eventLog.dir", "file:/tmp/spark-events")
    if context.uiWebUrl:
        tags[SPARK_UI_TAG] = context.uiWebUrl
    return tags


@dataclass
class SparkWork:
    """A run's jobs and stages as Spark's status store holds them (its REST API's fields)."""

    started_ms: int
    ended_ms: int
    jobs: list[dict] = field(default_factory=list)
    stages: list[dict] = field(default_factory=list)
    queries: list[dict] = field(default_factory=list)  # the SQL executions that ran its jobs

    def job_intervals(self) -> list[tuple[int, int]]:
        """Each job's (submitted, completed) within the run, merged where they overlap."""
        spans = sorted(
            (
                max(job["submissionTime"] or self.started_ms, self.started_ms),
                min(job["completionTime"] or self.ended_ms, self.ended_ms),
            )
            for job in self.jobs
        )
        merged: list[tuple[int, int]] = []
        for start, end in spans:
            if merged and start <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], end))
            elif end > start:
                merged.append((start, end))
        return merged

    def image_stages(self) -> set[int]:
        """Stages of the run's queries that scan image files (Spark's binaryFile source)."""
        return {
            int(stage)
            for query in self.queries
            if "Scan binaryFile " in (query.get("physicalPlanDescription") or "")
            for stage in query.get("stages") or []
        }

    def metrics(self) -> dict[str, float]:
        """The run's totals as ``spark.*`` metrics: seconds with a job running and without
        (the driver alone: Python, planning, MLflow), tasks, time, bytes, spill, peaks."""
        busy = sum(end - start for start, end in self.job_intervals()) / 1000
        wall = (self.ended_ms - self.started_ms) / 1000
        stages = self.stages

        def total(key: str) -> float:
            return float(sum(stage.get(key) or 0 for stage in stages))

        def peak(name: str) -> float:
            return float(max([_peak(stage, name) for stage in stages] or [0]))

        return {
            "spark.wall_seconds": wall,
            "spark.job_seconds": busy,
            "spark.driver_only_seconds": max(wall - busy, 0.0),
            "spark.jobs": float(len(self.jobs)),
            "spark.stages": float(len(stages)),
            "spark.tasks": total("numCompleteTasks") + total("numFailedTasks"),
            "spark.failed_tasks": total("numFailedTasks"),
            "spark.executor_run_seconds": total("executorRunTime") / 1000,
            "spark.executor_cpu_seconds": total("executorCpuTime") / 1e9,
            "spark.gc_seconds": total("jvmGcTime") / 1000,
            "spark.input_bytes": total("inputBytes"),
            # of it, image files (binaryFile scans): on S3, the bytes of the bill
            "spark.image_bytes_read": float(
                sum(
                    stage.get("inputBytes") or 0
                    for stage in stages
                    if stage["stageId"] in self.image_stages()
                )
            ),
            "spark.shuffle_read_bytes": total("shuffleReadBytes"),
            "spark.shuffle_write_bytes": total("shuffleWriteBytes"),
            "spark.memory_spill_bytes": total("memoryBytesSpilled"),
            "spark.disk_spill_bytes": total("diskBytesSpilled"),
            # a stage's figure is the sum of its tasks' peaks: an upper bound of what they held
            "spark.peak_execution_memory_bytes": float(
                max([stage.get("peakExecutionMemory") or 0 for stage in stages] or [0])
            ),
            "spark.peak_jvm_heap_bytes": peak("JVMHeapMemory"),
            "spark.peak_jvm_rss_bytes": peak("ProcessTreeJVMRSSMemory"),
            "spark.peak_python_rss_bytes": peak("ProcessTreePythonRSSMemory"),
        }

    def table(self, run_id: str) -> pd.DataFrame:
        """One row per stage that ran, with what called it and, in a search, which trial's
        (nested run's) job it served."""
        runs_of: dict[int, set[str]] = {}
        jobs_of: dict[int, list[int]] = {}
        query_of = {int(job): q["description"] for q in self.queries for job in q.get("jobs") or {}}
        caller: dict[int, str] = {}  # a broadcast's stage names a JVM thread: name its query
        for job in self.jobs:
            for stage_id in job["stageIds"]:
                caller.setdefault(stage_id, query_of.get(job["jobId"], ""))
                jobs_of.setdefault(stage_id, []).append(job["jobId"])
                tags = job.get("jobTags") or []
                runs_of.setdefault(stage_id, set()).update(
                    tag.removeprefix(RUN_JOB_TAG)
                    for tag in tags
                    if tag.startswith(RUN_JOB_TAG) and tag != job_tag(run_id)
                )
        rows = []
        for stage in sorted(self.stages, key=lambda s: (s["submissionTime"] or 0, s["stageId"])):
            submitted = stage["submissionTime"] or self.started_ms
            completed = stage["completionTime"] or self.ended_ms
            rows.append(
                {
                    "stage": stage["stageId"],
                    "attempt": stage["attemptId"],
                    "status": stage["status"],
                    "called_from": _caller(stage["name"], caller.get(stage["stageId"], "")),
                    "step": stage.get("description") or "",
                    "jobs": " ".join(map(str, jobs_of.get(stage["stageId"], []))),
                    "nested_run": " ".join(sorted(runs_of.get(stage["stageId"], []))),
                    "start_s": round((submitted - self.started_ms) / 1000, 3),
                    "seconds": round((completed - submitted) / 1000, 3),
                    "tasks": stage["numTasks"],
                    "failed_tasks": stage["numFailedTasks"],
                    "executor_run_s": stage["executorRunTime"] / 1000,
                    "executor_cpu_s": round(stage["executorCpuTime"] / 1e9, 3),
                    "gc_s": stage["jvmGcTime"] / 1000,
                    "input_bytes": stage["inputBytes"],
                    "shuffle_read_bytes": stage["shuffleReadBytes"],
                    "shuffle_write_bytes": stage["shuffleWriteBytes"],
                    "memory_spill_bytes": stage["memoryBytesSpilled"],
                    "disk_spill_bytes": stage["diskBytesSpilled"],
                    "peak_execution_memory": stage["peakExecutionMemory"],
                    "peak_jvm_rss": _peak(stage, "ProcessTreeJVMRSSMemory"),
                    "peak_python_rss": _peak(stage, "ProcessTreePythonRSSMemory"),
                }
            )
        return pd.DataFrame(rows)


def _caller(stage_name: str | None, query: str) -> str:
    """Where in Python a stage's work was asked for: Spark's call site names the line, unless
    the stage ran from a JVM thread (a broadcast): then the SQL query's own call site does."""
    name = stage_name or ""
    if ".py:" not in name and ".py:" in query:
        name = query
    return OUR_PATH.sub(r"\1", name)


def _peak(stage: dict, name: str) -> int:
    return int((stage.get("peakExecutorMetrics") or {}).get(name) or 0)


def spark_work(spark: SparkSession, run_id: str, started_ms: int) -> SparkWork:
    """The jobs the run's tag marks, the stages that ran for them (skipped ones ran for an
    earlier job) and the SQL queries that ran them: only those are read (a long session, a
    notebook's or the test suite's, holds thousands)."""
    jvm, context = spark.sparkContext._jvm, spark.sparkContext
    store = context._jsc.sc().statusStore()
    work = SparkWork(started_ms, int(time.time() * 1000))
    job_ids = sorted(context._jsc.sc().statusTracker().getJobIdsForTag(job_tag(run_id)))
    every_job = store.jobsList(None)
    whole_application = every_job.size() == len(job_ids)  # a command's own process: one call
    if whole_application:
        work.jobs = _as_json(spark, every_job)
    else:  # a notebook's or the test suite's long session: only this run's, one by one
        work.jobs = _as_json(spark, _java_list(jvm, [store.job(job) for job in job_ids]))
    wanted = {stage for job in work.jobs for stage in job["stageIds"]}
    if whole_application:
        quantiles = context._gateway.new_array(jvm.double, 0)
        stages = _as_json(spark, store.stageList(None, False, False, quantiles, None))
    else:
        stages = _as_json(spark, _java_list(jvm, stage_data(spark, sorted(wanted))))
    work.stages = [
        stage
        for stage in stages
        if stage["stageId"] in wanted and stage["status"] not in ("SKIPPED", "PENDING")
    ]
    work.queries = _queries_since(spark, started_ms, set(job_ids))
    return work


def _java_list(jvm: Any, items: list) -> Any:
    listed = jvm.java.util.ArrayList()
    for item in items:
        listed.add(item)
    return listed


def _queries_since(spark: SparkSession, started_ms: int, job_ids: set[int]) -> list[dict]:
    """The SQL queries that ran these jobs: read newest first, in pages, back to the run's
    start (queries are kept in the order they began)."""
    store = spark._jsparkSession.sharedState().statusStore()
    found, end, page = [], int(store.executionsCount()), 100
    while end > 0:
        queries = _as_json(spark, store.executionsList(max(0, end - page), min(page, end)))
        found += [q for q in queries if job_ids & {int(job) for job in q.get("jobs") or {}}]
        if not queries or queries[0]["submissionTime"] < started_ms:
            break
        end -= page
    return found


def write_plans(spark: SparkSession, work: SparkWork, *, count: int, folder: Path) -> list[Path]:
    """The ``count`` longest SQL queries that ran the run's jobs: their final physical plan
    (``isFinalPlan=true`` under AQE) as Spark's UI shows it, then each operator's metrics
    (rows, time, spill, sizes) as the query left them."""
    store = spark._jsparkSession.sharedState().statusStore()
    executions = work.queries

    def seconds(execution: dict) -> float:
        ended = execution.get("completionTime") or int(time.time() * 1000)
        return (ended - execution["submissionTime"]) / 1000

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    longest = sorted(executions, key=seconds, reverse=True)[:count]
    for rank, execution in enumerate(longest, start=1):
        query = execution["executionId"]
        values = _as_json(spark, store.executionMetrics(query))
        nodes = _as_json(spark, store.planGraph(query).allNodes())
        lines = [
            f"query {query}: {seconds(execution):.3f} s, jobs "
            f"{' '.join(sorted(execution.get('jobs') or {}, key=int))}",
            f"description: {execution.get('description') or ''}",
            "",
            execution.get("physicalPlanDescription") or "",
            "",
            "== Operator metrics (as the query ended) ==",
        ]
        for node in nodes:
            said = [
                f"{metric['name']}: {values[str(metric['accumulatorId'])]}"
                for metric in node.get("metrics") or []
                if str(metric["accumulatorId"]) in values
            ]
            if said:
                lines.append(f"{node['name']} ({node.get('desc', '')[:120]})")
                lines += [f"    {text}".replace("\n", " ") for text in said]
        path = folder / f"{rank:02d}-query-{query}.txt"
        path.write_text("\n".join(lines) + "\n")
        written.append(path)
    return written


def log_spark_work(spark: SparkSession, settings: ObserveConfig, *, run_id: str, started_ms: int):
    """Read the run's Spark work once and log it: metrics, stages.csv, timeline, plans."""
    work = spark_work(spark, run_id, started_ms)
    metrics = work.metrics()
    mlflow.log_metrics(metrics)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        stages = work.table(run_id)
        stages.to_csv(folder / "stages.csv", index=False)
        plots.plot_spark_timeline(
            stages,
            work.job_intervals(),
            started_ms=work.started_ms,
            metrics=metrics,
            path=folder / "timeline.png",
        )
        if settings.plans:
            write_plans(spark, work, count=settings.plans, folder=folder / "plans")
        mlflow.log_artifacts(tmp, artifact_path=SPARK_ARTIFACTS)
    spilled = stages[stages.memory_spill_bytes > 0] if len(stages) else stages
    if len(spilled):
        worst = spilled.sort_values("memory_spill_bytes").iloc[-1]
        log.warning(
            "Spark spilled %.1f MB from memory (%.1f MB to disk) in %d stages, most in stage %d "
            "(%s): docs/troubleshooting.md says what to change",
            metrics["spark.memory_spill_bytes"] / 1e6,
            metrics["spark.disk_spill_bytes"] / 1e6,
            len(spilled),
            worst.stage,
            worst.called_from,
        )
    log.info(
        "Spark: %d jobs, %.1f s of %.1f s with a job running (the rest the driver alone); "
        "spark/timeline.png shows where",
        len(work.jobs),
        metrics["spark.job_seconds"],
        metrics["spark.wall_seconds"],
    )
    return work


@contextmanager
def observed_run(profile: Profile, spark: SparkSession, name: str) -> Iterator[mlflow.ActiveRun]:
    """``tracking.run`` that also knows its Spark application and, at its end (failed ones
    too: those are the runs a user reads this for), logs what its Spark work cost."""
    with tracking.run(profile, name) as active:
        if not profile.observe.enabled:
            yield active
            return
        run_id, started_ms = active.info.run_id, int(time.time() * 1000)
        tags = application_tags(spark)
        mlflow.set_tags(tags)
        if SPARK_EVENT_LOG_TAG in tags:  # attached to this run once the session stopped
            event_log.attach_later(
                tags[SPARK_APP_TAG],
                tags[SPARK_EVENT_LOG_TAG],
                cap_mb=profile.observe.event_log_attach_mb,
                run_id=run_id,
            )
        try:
            with tagged_jobs(spark, run_id):
                yield active
        finally:
            try:
                log_spark_work(spark, profile.observe, run_id=run_id, started_ms=started_ms)
            except Exception as err:  # a JVM that died (of memory) has nothing left to read
                log.warning("could not read this run's Spark work: %s", str(err)[:300])
