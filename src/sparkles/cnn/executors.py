"""What the featurizer puts on executors: files shipped once per Spark application (the weights,
int8's model), and the ``predict_batch_udf`` whose function builds the CNN once per Python
worker from one ``CnnSettings`` and runs it batch by batch (``batches``)."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from pyspark import SparkFiles
from pyspark.ml.functions import predict_batch_udf
from pyspark.sql import SparkSession
from pyspark.sql.types import ArrayType, FloatType, StringType, StructField, StructType

from sparkles.cnn.backbones import CnnSpec, sha256_file
from sparkles.cnn.batches import batch_featurizer
from sparkles.cnn.quiet import import_keras
from sparkles.cnn.runtimes import WORKER_TIMINGS_ENV, WORKER_TIMINGS_PREFIX
from sparkles.cnn.settings import CnnSettings

_RESULT = StructType(
    [StructField("features", ArrayType(FloatType())), StructField("error", StringType())]
)
# (Spark application, sha256) → name registered with that SparkContext's addFile. Per
# application: a notebook that stops its session and starts another gets a new SparkContext
# whose executors have none of the files the old one shipped.
_shipped: dict[tuple[str, str], str] = {}
_ship_dirs: dict[str, Path] = {}  # application → folder of the copies its addFile serves


def _forget_applications(keep: str | None = None) -> None:
    """Delete the shipped copies of every application but ``keep``.

    A Python process has one SparkContext at a time, so a new application id means the others
    have stopped and nothing will fetch their copies again.
    """
    for application in [a for a in _ship_dirs if a != keep]:
        shutil.rmtree(_ship_dirs.pop(application), ignore_errors=True)
        for key in [k for k in _shipped if k[0] == application]:
            del _shipped[key]


atexit.register(_forget_applications)


def ship(spark: SparkSession, local_path: str, stem: str | None = None) -> str:
    """Make a driver-side file readable on every executor; returns its SparkFiles name.

    The name carries the file's hash (or ``stem``: files that must sit side by side, as an
    OpenVINO model's .xml and .bin, share one), so two files called ``weights.h5`` never clash.
    """
    application = spark.sparkContext.applicationId
    _forget_applications(keep=application)
    key = (application, sha256_file(local_path))
    if key not in _shipped:
        if application not in _ship_dirs:
            _ship_dirs[application] = Path(tempfile.mkdtemp(prefix="sparkles-ship-"))
        name = f"{stem or key[1][:16]}-{Path(local_path).name}"
        staged = _ship_dirs[application] / name
        shutil.copyfile(local_path, staged)
        spark.sparkContext.addFile(str(staged))
        _shipped[key] = name
    return _shipped[key]


def make_predict_fn(
    spec: CnnSpec,
    shipped_weights: str | None,
    *,
    shipped_quantized: str | None,
    settings: CnnSettings,
):
    """Runs once per Python worker (predict_batch_udf caches the result): builds the model."""

    def make() -> Any:
        from pyspark import TaskContext

        context = TaskContext.get()
        threads = context.cpus() if context is not None else 0
        if settings.runtime == "keras":  # OpenVINO's worker never imports TensorFlow
            os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
            import_keras()
            import tensorflow as tf

            try:  # only possible before TF's first op in this worker
                tf.config.threading.set_intra_op_parallelism_threads(threads)
                tf.config.threading.set_inter_op_parallelism_threads(min(threads, 2))
            except RuntimeError:
                pass
        weights = SparkFiles.get(shipped_weights) if shipped_weights else None
        quantized = SparkFiles.get(shipped_quantized) if shipped_quantized else None
        started = time.monotonic()
        featurize = batch_featurizer(
            spec, settings, weights=weights, quantized=quantized, threads=threads
        )
        # Lands in the executor's log: one line per Python worker that built a model.
        print(
            f"sparkles: built {settings.model} on {settings.runtime} at {settings.precision} in "
            f"{time.monotonic() - started:.1f} s (pid {os.getpid()}, {threads or 'default'} "
            f"threads)",
            file=sys.stderr,
            flush=True,
        )
        measured = bool(os.environ.get(WORKER_TIMINGS_ENV))
        timings = {**featurize.seconds, "udf_s": 0.0} if measured else None

        def predict(contents: np.ndarray) -> dict[str, np.ndarray]:
            started = time.perf_counter()
            features, errors = featurize(contents)
            if timings is not None:
                timings.update(featurize.seconds)
                timings["udf_s"] += time.perf_counter() - started
                print(f"{WORKER_TIMINGS_PREFIX}{json.dumps(timings)}", file=sys.stderr, flush=True)
            return {"features": features, "error": errors}

        return predict

    return make


_udfs: dict[tuple, Any] = {}


def featurize_udf(
    spark: SparkSession,
    spec: CnnSpec,
    *,
    shipped: str | None,
    quantized: str | None,
    settings: CnnSettings,
) -> Any:
    """One UDF per Spark application and configuration: predict_batch_udf keys its per-worker
    model cache by the UDF, so reusing it lets a later transform reuse a model already built."""
    key = (spark.sparkContext.applicationId, spec, shipped, quantized, settings)
    if key not in _udfs:
        make = make_predict_fn(spec, shipped, shipped_quantized=quantized, settings=settings)
        # Nondeterministic: Spark must not inline the UDF into each column that reads it.
        _udfs[key] = predict_batch_udf(
            make, return_type=_RESULT, batch_size=settings.batch_size
        ).asNondeterministic()
    return _udfs[key]
