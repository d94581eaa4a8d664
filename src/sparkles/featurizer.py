"""DeepImageFeaturizer: sparkdl's transformer rebuilt on ``predict_batch_udf`` and Keras 3.

Input is the compressed bytes from Spark's binaryFile source; a Python worker decodes a batch,
runs the headless CNN once per batch, and returns a Spark ML vector per image. Images that cannot
be decoded get a null vector and a reason in ``errorCol`` instead of failing the job or vanishing.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from pyspark import SparkFiles, keyword_only
from pyspark.ml import Transformer
from pyspark.ml.functions import array_to_vector, predict_batch_udf
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.param.shared import HasInputCol, HasOutputCol
from pyspark.ml.util import (
    DefaultParamsReadable,
    DefaultParamsReader,
    DefaultParamsWritable,
    DefaultParamsWriter,
)
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, FloatType, StringType, StructField, StructType

from sparkles import storage
from sparkles.code import ship_to_executors
from sparkles.models import CnnSpec, get_spec, sha256_file
from sparkles.names import ERROR, WEIGHTS_DIR
from sparkles.runtimes import (
    PRECISIONS,
    RUNTIMES,
    ImageBatchFeaturizer,
    compile_cnn,
    precision_that_runs,
)
from sparkles.weights import ResolvedWeights, resolve_weights

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


def _ship(spark: SparkSession, local_path: str) -> str:
    """Make a driver-side weights file readable on every executor; returns its SparkFiles name.

    The name carries the file's hash, so two different files called ``weights.h5`` never clash.
    """
    application = spark.sparkContext.applicationId
    _forget_applications(keep=application)
    key = (application, sha256_file(local_path))
    if key not in _shipped:
        if application not in _ship_dirs:
            _ship_dirs[application] = Path(tempfile.mkdtemp(prefix="sparkles-ship-"))
        name = f"{key[1][:16]}-{Path(local_path).name}"
        staged = _ship_dirs[application] / name
        shutil.copyfile(local_path, staged)
        spark.sparkContext.addFile(str(staged))
        _shipped[key] = name
    return _shipped[key]


def _make_predict_fn(
    spec: CnnSpec,
    shipped_weights: str | None,
    pooling: str,
    seed: int,
    runtime: str,
    precision: str,
    max_bytes: int,
    max_pixels: int,
):
    """Runs once per Python worker (predict_batch_udf caches the result): builds the model."""

    def make() -> Any:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import tensorflow as tf
        from pyspark import TaskContext

        context = TaskContext.get()
        threads = context.cpus() if context is not None else 0
        try:  # only possible before TF's first op in this worker
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(min(threads, 2))
        except RuntimeError:
            pass
        weights = SparkFiles.get(shipped_weights) if shipped_weights else None
        started = time.monotonic()
        cnn = compile_cnn(spec, weights, pooling, seed, runtime, precision, threads)
        # Lands in the executor's log: one line per Python worker that built a model.
        print(
            f"sparkles: built {spec.name} on {runtime} at {precision} in "
            f"{time.monotonic() - started:.1f} s (pid {os.getpid()}, {threads or 'default'} "
            f"threads)",
            file=sys.stderr,
            flush=True,
        )
        featurize = ImageBatchFeaturizer(cnn, spec, max_bytes, max_pixels, threads)

        def predict(contents: np.ndarray) -> dict[str, np.ndarray]:
            features, errors = featurize(contents)
            return {"features": features, "error": errors}

        return predict

    return make


_udfs: dict[tuple, Any] = {}


def _featurize_udf(spark: SparkSession, spec: CnnSpec, shipped: str | None, *settings: Any) -> Any:
    """One UDF per Spark application and configuration: predict_batch_udf keys its per-worker
    model cache by the UDF, so reusing it lets a later transform reuse a model already built."""
    key = (spark.sparkContext.applicationId, spec, shipped, *settings)
    if key not in _udfs:
        *model_settings, batch_size = settings
        make = _make_predict_fn(spec, shipped, *model_settings)
        # Nondeterministic: Spark must not inline the UDF into each column that reads it.
        _udfs[key] = predict_batch_udf(
            make, return_type=_RESULT, batch_size=batch_size
        ).asNondeterministic()
    return _udfs[key]


class _Writer(DefaultParamsWriter):
    """Saves Params, plus the weights file itself: a saved model must not depend on a path."""

    def saveImpl(self, path: str) -> None:
        super().saveImpl(path)
        featurizer: DeepImageFeaturizer = self.instance
        resolved = featurizer.resolve_weights(self.sparkSession)
        if resolved.local_path:
            target = f"{path.rstrip('/')}/{WEIGHTS_DIR}/{Path(resolved.local_path).name}"
            storage.copy_from_local(self.sparkSession, resolved.local_path, target)


class _Reader(DefaultParamsReader):
    def load(self, path: str) -> DeepImageFeaturizer:
        # a model loaded where this project is not installed brings its code: executors too
        ship_to_executors(self.sparkSession)
        featurizer = super().load(path)
        folder = f"{path.rstrip('/')}/{WEIGHTS_DIR}"
        names = storage.list_names(self.sparkSession, folder)
        if names:
            # Qualified: a bare path names the default file system (HDFS on YARN, where MLflow
            # copies a model before loading it), not the driver's disk.
            weights = storage.qualified(self.sparkSession, f"{folder}/{names[0]}")
            featurizer.set(featurizer.weights, weights)
        return featurizer


class DeepImageFeaturizer(
    Transformer, HasInputCol, HasOutputCol, DefaultParamsReadable, DefaultParamsWritable
):
    """Image bytes → CNN features (a Spark ML vector), with bad images quarantined, not dropped."""

    errorCol = Param(
        Params._dummy(),
        "errorCol",
        "column for the reason an image was not featurized",
        TypeConverters.toString,
    )
    modelName = Param(
        Params._dummy(), "modelName", "keras.applications CNN", TypeConverters.toString
    )
    weights = Param(
        Params._dummy(),
        "weights",
        "'imagenet', 'random', or a weights file path/URI",
        TypeConverters.toString,
    )
    pooling = Param(
        Params._dummy(),
        "pooling",
        "avg, max, or none (unpooled, as sparkdl)",
        TypeConverters.toString,
    )
    runtime = Param(
        Params._dummy(),
        "runtime",
        "keras, or openvino (same model, compiled)",
        TypeConverters.toString,
    )
    precision = Param(
        Params._dummy(),
        "precision",
        "f32, or bf16 where the CPU has bf16 instructions (f32 elsewhere, with a warning)",
        TypeConverters.toString,
    )
    batchSize = Param(Params._dummy(), "batchSize", "images per model call", TypeConverters.toInt)
    seed = Param(Params._dummy(), "seed", "seed for random weights", TypeConverters.toInt)
    maxFileBytes = Param(
        Params._dummy(), "maxFileBytes", "larger files are quarantined", TypeConverters.toInt
    )
    maxPixels = Param(
        Params._dummy(), "maxPixels", "more pixels is a decompression bomb", TypeConverters.toInt
    )

    @keyword_only
    def __init__(
        self,
        *,
        inputCol: str = "content",
        outputCol: str = "features",
        errorCol: str = ERROR,
        modelName: str = "InceptionV3",
        weights: str = "imagenet",
        pooling: str = "avg",
        runtime: str = "openvino",
        precision: str = "f32",
        batchSize: int = 32,
        seed: int = 0,
        maxFileBytes: int = 50 * 1024 * 1024,
        maxPixels: int = 89_478_485,
    ) -> None:
        super().__init__()
        self._setDefault(
            inputCol="content", outputCol="features", errorCol=ERROR,
            modelName="InceptionV3", weights="imagenet", pooling="avg", runtime="openvino",
            precision="f32", batchSize=32, seed=0, maxFileBytes=50 * 1024 * 1024,
            maxPixels=89_478_485,
        )  # fmt: skip
        self._set(**self._input_kwargs)
        self._validate()

    @keyword_only
    def setParams(
        self,
        *,
        inputCol: str = "content",
        outputCol: str = "features",
        errorCol: str = ERROR,
        modelName: str = "InceptionV3",
        weights: str = "imagenet",
        pooling: str = "avg",
        runtime: str = "openvino",
        precision: str = "f32",
        batchSize: int = 32,
        seed: int = 0,
        maxFileBytes: int = 50 * 1024 * 1024,
        maxPixels: int = 89_478_485,
    ) -> DeepImageFeaturizer:
        """Sets the given Params, as pyspark.ml's own transformers do."""
        self._set(**self._input_kwargs)
        self._validate()
        return self

    def getErrorCol(self) -> str:
        return self.getOrDefault(self.errorCol)

    def getModelName(self) -> str:
        return self.getOrDefault(self.modelName)

    def getWeights(self) -> str:
        return self.getOrDefault(self.weights)

    def getPooling(self) -> str:
        return self.getOrDefault(self.pooling)

    def getRuntime(self) -> str:
        return self.getOrDefault(self.runtime)

    def getPrecision(self) -> str:
        return self.getOrDefault(self.precision)

    def getBatchSize(self) -> int:
        return self.getOrDefault(self.batchSize)

    def getSeed(self) -> int:
        return self.getOrDefault(self.seed)

    def getMaxFileBytes(self) -> int:
        return self.getOrDefault(self.maxFileBytes)

    def getMaxPixels(self) -> int:
        return self.getOrDefault(self.maxPixels)

    def _validate(self) -> None:
        get_spec(self.getModelName())
        for name, value, allowed in (
            ("pooling", self.getPooling(), ("avg", "max", "none")),
            ("runtime", self.getRuntime(), RUNTIMES),
            ("precision", self.getPrecision(), PRECISIONS),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
        if self.getBatchSize() < 1:
            raise ValueError("batchSize must be at least 1")

    def spec(self) -> CnnSpec:
        return get_spec(self.getModelName())

    def resolve_weights(self, spark: SparkSession | None = None) -> ResolvedWeights:
        return resolve_weights(self.spec(), self.getWeights(), self.getSeed(), spark=spark)

    def precision_that_runs(self) -> str:
        """The precision this transform will run: bf16 becomes f32, with a warning, on a driver
        whose CPU lacks it (executors are checked again when they build the model)."""
        precision, reason = precision_that_runs(self.getPrecision())
        if reason:
            message = f"featurizer precision bf16 requested, but {reason}"
            warnings.warn(message, stacklevel=3)
            print(f"sparkles: {message}", file=sys.stderr, flush=True)
        return precision

    def _transform(self, dataset: DataFrame) -> DataFrame:
        self._validate()
        spark = dataset.sparkSession
        resolved = self.resolve_weights(spark)
        shipped = _ship(spark, resolved.local_path) if resolved.local_path else None
        featurize = _featurize_udf(
            spark, self.spec(), shipped, self.getPooling(), self.getSeed(), self.getRuntime(),
            self.precision_that_runs(), self.getMaxFileBytes(), self.getMaxPixels(),
            self.getBatchSize(),
        )  # fmt: skip
        scratch = "__sparkles_featurized"
        out, error = self.getOutputCol(), self.getErrorCol()
        return (
            dataset.withColumn(scratch, featurize(F.col(self.getInputCol())))
            .withColumn(error, F.col(f"{scratch}.error"))
            .withColumn(
                out, F.when(F.col(error).isNull(), array_to_vector(F.col(f"{scratch}.features")))
            )
            .drop(scratch)
        )

    def write(self) -> _Writer:
        return _Writer(self)

    @classmethod
    def read(cls) -> _Reader:
        return _Reader(cls)
