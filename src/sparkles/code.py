"""The project's own code, where a logged model goes: inside the model, and onto executors.

A logged model must not ask pip for this project (the name ``sparkles`` on PyPI is somebody
else's). Its code travels in the model (MLflow ``code_paths``, which MLflow puts on the driver's
``sys.path`` when it loads the model), and the driver ships it to the executors as a zip, since
Python workers unpickle the featurizer's functions by module name.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from pyspark.sql import SparkSession

_shipped_to: set[str] = set()  # Spark applications whose executors have the code


def package_dir() -> Path:
    """The folder of the ``sparkles`` package this process runs (installed, or from a model)."""
    return Path(__file__).resolve().parent


def ship_to_executors(spark: SparkSession) -> None:
    """Make ``import sparkles`` work in every Python worker of this application, once."""
    context = spark.sparkContext
    if context.applicationId in _shipped_to:
        return
    folder = Path(tempfile.mkdtemp(prefix="sparkles-code-"))
    archive = shutil.make_archive(
        str(folder / "sparkles"), "zip", root_dir=package_dir().parent, base_dir="sparkles"
    )
    context.addPyFile(archive)
    _shipped_to.add(context.applicationId)
