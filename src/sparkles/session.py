"""SparkSession from a profile, with the settings that make pyspark 3.5 and 4.x behave alike."""

from __future__ import annotations

import logging
import os
import sys

from pyspark.sql import SparkSession

from sparkles.config import Profile

log = logging.getLogger(__name__)

# Defaults that differ between pyspark 3.5 and 4.x: pin them so both behave the same.
PORTABLE_DEFAULTS = {
    "spark.sql.ansi.enabled": "true",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.execution.pythonUDF.arrow.enabled": "false",
    "spark.sql.legacy.timeParserPolicy": "CORRECTED",
    "spark.sql.session.timeZone": "UTC",
}


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
    settings = {**PORTABLE_DEFAULTS, **(defaults or {}), **profile.spark.conf, **(extra or {})}
    # The console bar garbles logs when stdout is not a terminal; ours (progress.py) does not.
    settings.setdefault("spark.ui.showConsoleProgress", "false")
    for key, value in settings.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(os.environ.get("SPARKLES_SPARK_LOG_LEVEL", "WARN"))
    log.info("Spark %s up (%s)", spark.version, spark.sparkContext.master)
    return spark
