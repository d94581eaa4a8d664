"""SparkSession from a profile, with the settings that make pyspark 3.5 and 4.x behave alike."""

from __future__ import annotations

import ctypes
import logging
import os
import sys
from pathlib import Path

from pyspark.sql import SparkSession

from sparkles.code import ship_to_executors
from sparkles.config import Profile
from sparkles.storage import is_uri, qualify

log = logging.getLogger(__name__)

# Defaults that differ between pyspark 3.5 and 4.x: pin them so both behave the same.
PORTABLE_DEFAULTS = {
    "spark.sql.ansi.enabled": "true",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.execution.pythonUDF.arrow.enabled": "false",
    "spark.sql.legacy.timeParserPolicy": "CORRECTED",
    "spark.sql.session.timeZone": "UTC",
}


# In local mode a failed task's exception is logged, with its Java trace, by each of these on
# its way to the driver, where it is raised again (and said once: in one line for a user's
# error, in full otherwise). Their echoes buried the one line that says what to do.
TASK_FAILURE_ECHOES = (
    "org.apache.spark.executor.Executor",
    "org.apache.spark.util.Utils",
    "org.apache.spark.scheduler.TaskSetManager",
    "org.apache.spark.sql.execution.datasources.FileFormatWriter",
)


def _quiet_task_failure_echoes(spark: SparkSession) -> None:
    if os.environ.get("SPARKLES_SPARK_LOG_LEVEL"):  # asked for a level: keep every logger's
        return
    jvm = spark.sparkContext._jvm
    level = jvm.org.apache.logging.log4j.Level.OFF
    for name in TASK_FAILURE_ECHOES:
        jvm.org.apache.logging.log4j.core.config.Configurator.setLevel(name, level)


LOG4J_CONFIG = Path(__file__).with_name("spark-log4j2.properties")


def _driver_java_options(configured: str) -> str:
    """The driver JVM's options where sparkles launches it (a local master): our log4j2 file
    unless one is given, and netlib's Java BLAS where no native one is installed (netlib then
    prints a dlopen failure before falling back to the same Java code)."""
    options = [configured] if configured else []
    if "log4j2.configurationFile" not in configured:
        options.append(f"-Dlog4j2.configurationFile={LOG4J_CONFIG.as_uri()}")
    if "netlib" not in configured and not _native_blas():
        options += [f"-Ddev.ludovic.netlib.{lib}.allowNative=false" for lib in ("blas", "lapack")]
    return " ".join(options)


def _native_blas() -> bool:
    try:
        ctypes.CDLL("libblas.so.3")
    except OSError:
        return False
    return True


def observing(profile: Profile) -> dict[str, str]:
    """What Spark records for ``observe``: its event log (compressed and rolled alike on
    pyspark 3.5, where both are off by default, and 4.x, where both are on), and executors'
    memory per stage, their process trees (JVM and Python workers' RSS) included."""
    if not profile.observe.enabled:
        return {}
    settings = {"spark.executor.processTreeMetrics.enabled": "true"}
    interval = profile.observe.executor_metrics_interval_ms
    settings["spark.executor.metrics.pollingInterval"] = f"{interval}ms"
    folder = profile.observe.event_log
    if folder == "":
        return {**settings, "spark.eventLog.enabled": "false"}
    settings |= {
        "spark.eventLog.compress": "true",
        "spark.eventLog.compression.codec": "zstd",
        "spark.eventLog.rolling.enabled": "true",
        "spark.eventLog.rolling.maxFileSize": "128m",
    }
    if folder is None:  # the cluster's own folder (EMR's spark-defaults: its History Server's)
        return settings
    if not is_uri(folder):  # Spark refuses to start on a local folder that does not exist
        Path(folder).mkdir(parents=True, exist_ok=True)
    return {**settings, "spark.eventLog.enabled": "true", "spark.eventLog.dir": qualify(folder)}


def build_session(
    profile: Profile, extra: dict[str, str] | None = None, defaults: dict[str, str] | None = None
) -> SparkSession:
    """Start (or reuse) the session the profile describes; ``extra`` wins over the profile,
    the profile over ``defaults`` (a command's own, e.g. no UI for a short one).

    Python workers must run the driver's interpreter, or they miss pandas and this package.
    """
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    os.environ.setdefault("PYARROW_IGNORE_TIMEZONE", "1")
    if profile.spark.master.startswith("local"):
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    builder = SparkSession.builder.master(profile.spark.master).appName(profile.spark.app_name)
    settings = {
        **PORTABLE_DEFAULTS,
        **observing(profile),
        **(defaults or {}),
        **profile.spark.conf,
        **(extra or {}),
    }
    # The console bar garbles logs when stdout is not a terminal; ours (progress.py) does not.
    settings.setdefault("spark.ui.showConsoleProgress", "false")
    if profile.spark.master.startswith("local"):
        options = settings.get("spark.driver.extraJavaOptions", "")
        settings["spark.driver.extraJavaOptions"] = _driver_java_options(options)
    for key, value in settings.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(os.environ.get("SPARKLES_SPARK_LOG_LEVEL", "WARN"))
    if spark.sparkContext.master.startswith("local"):
        _quiet_task_failure_echoes(spark)
    else:  # executors run the driver's code, not whatever version their nodes installed
        ship_to_executors(spark)
    log.info("Spark %s up (%s)", spark.version, spark.sparkContext.master)
    return spark
