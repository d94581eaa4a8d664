"""A Spark application's event log attached to the MLflow runs it served (``spark/eventlog/``),
once the session has stopped: only then is the log complete, and read by the History Server as
a finished application. Read through Hadoop's FileSystem: local, HDFS (EMR's own folder) or S3
alike."""

from __future__ import annotations

import logging
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow

from sparkles.names import SPARK_ARTIFACTS, SPARK_EVENT_LOG_ATTACHED_TAG

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

# application id -> (its event log folder, the cap in MB, the top-level runs made in it): each
# run gets the log once the session stopped (a log is only complete, and readable by the
# History Server as a finished application, then)
_EVENT_LOGS: dict[str, tuple[str, float, list[str]]] = {}


def attach_later(app_id: str, folder: str, *, cap_mb: float, run_id: str) -> None:
    """Remember that ``run_id`` ran in ``app_id``, whose log is written under ``folder``."""
    _EVENT_LOGS.setdefault(app_id, (folder, cap_mb, []))[2].append(run_id)


def stop_and_attach(spark: SparkSession) -> None:
    """Stop the session, then attach its finished event log to the top-level runs it served
    (``spark/eventlog/``), or tag each with why not (over the cap, not found)."""
    app_id = spark.sparkContext.applicationId
    jvm = spark.sparkContext._gateway.jvm  # the gateway outlives the context
    spark.stop()
    if app_id not in _EVENT_LOGS:
        return
    folder, cap_mb, runs = _EVENT_LOGS.pop(app_id)
    client = mlflow.MlflowClient()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            found = _fetch_event_log(jvm, folder, app_id, into=Path(tmp), cap_mb=cap_mb)
            for run_id in runs:
                if isinstance(found, Path):
                    client.log_artifacts(run_id, str(found.parent), f"{SPARK_ARTIFACTS}/eventlog")
                    client.set_tag(run_id, SPARK_EVENT_LOG_ATTACHED_TAG, found.name)
                else:
                    client.set_tag(run_id, SPARK_EVENT_LOG_ATTACHED_TAG, f"no: {found}")
    except Exception as err:  # the command's work is done and logged: say it, do not fail it
        log.warning("could not attach the Spark event log of %s: %s", app_id, str(err)[:300])


def _fetch_event_log(
    jvm: Any, folder: str, app_id: str, *, into: Path, cap_mb: float
) -> Path | str:
    """The application's event log copied under ``into/<its name>`` (a rolled log's folder,
    or one file), through Hadoop's FileSystem (local, HDFS, S3 alike); else why not."""
    base = jvm.org.apache.hadoop.fs.Path(folder)
    fs = base.getFileSystem(jvm.org.apache.hadoop.conf.Configuration())
    names = [str(status.getPath().getName()) for status in fs.listStatus(base)]
    ours = [
        name
        for name in names
        if name == f"eventlog_v2_{app_id}" or re.fullmatch(rf"{re.escape(app_id)}(\.\w+)?", name)
    ]
    if not ours:
        return f"no finished event log of {app_id} in {folder}"
    source = jvm.org.apache.hadoop.fs.Path(base, ours[0])
    size_mb = fs.getContentSummary(source).getLength() / 2**20
    if size_mb > cap_mb:
        return (
            f"{size_mb:.1f} MB is over observe.event_log_attach_mb ({cap_mb:g}); it is at "
            f"{source.toString()}"
        )
    holder = into / "log"
    holder.mkdir()
    fs.copyToLocalFile(False, source, jvm.org.apache.hadoop.fs.Path(holder.as_uri()), True)
    return holder / ours[0]
