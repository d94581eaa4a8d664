"""DeepImageFeaturizer: sparkdl's transformer rebuilt on ``predict_batch_udf`` and Keras 3.

Input is the compressed bytes from Spark's binaryFile source; a Python worker decodes a batch,
runs the headless CNN once per batch, and returns a Spark ML vector per image. Images that cannot
be decoded get a null vector and a reason in ``errorCol`` instead of failing the job or vanishing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import tempfile
from pathlib import Path
from typing import Any, Literal, get_args, get_origin
from urllib.parse import urlparse

from pyspark import keyword_only
from pyspark.ml import Transformer
from pyspark.ml.functions import array_to_vector
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

from sparkles import storage
from sparkles.cnn.backbones import CnnSpec, get_spec, sha256_file
from sparkles.cnn.executors import featurize_udf, ship
from sparkles.cnn.imaging import PREPROCESS_VERSION
from sparkles.cnn.params import HasFeaturizerSettings
from sparkles.cnn.quantize import MODEL_XML, QUANTIZED_DIR, calibration_identity, quantized_model
from sparkles.cnn.runtimes import precision_that_runs
from sparkles.cnn.settings import CnnSettings
from sparkles.cnn.weights import ResolvedWeights, WeightsUnavailableError, resolve_weights
from sparkles.code import ship_to_executors
from sparkles.config import FeaturizerConfig
from sparkles.names import CONTENT, ERROR, FEATURES, WEIGHTS_DIR
from sparkles.storage import is_uri

log = logging.getLogger(__name__)


def calibration_sample(images: DataFrame, sha: str, *, seed: int, count: int) -> DataFrame:
    """int8's calibration images: the ``count`` distinct ones (by content hash ``sha``) first in
    a seeded order of their hashes, computed in the JVM: the same images whatever the
    listing's order or partitioning, another set for another seed."""
    order = F.sha2(F.concat(F.lit(f"{seed}:"), F.col(sha)), 256)
    return images.dropDuplicates([sha]).orderBy(order).limit(count)


class _Writer(DefaultParamsWriter):
    """Saves Params, plus the weights file itself: a saved model must not depend on a path."""

    def saveImpl(self, path: str) -> None:
        super().saveImpl(path)
        featurizer: DeepImageFeaturizer = self.instance
        resolved = featurizer.resolve_weights(self.sparkSession)
        if resolved.local_path:
            target = f"{path.rstrip('/')}/{WEIGHTS_DIR}/{Path(resolved.local_path).name}"
            storage.copy_from_local(self.sparkSession, resolved.local_path, target)
        quantized = featurizer.local_quantized_model(self.sparkSession)
        if quantized:
            for file in (quantized, quantized.with_suffix(".bin")):
                target = f"{path.rstrip('/')}/{QUANTIZED_DIR}/{file.name}"
                storage.copy_from_local(self.sparkSession, str(file), target)


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
        if featurizer.isSet(featurizer.quantizedModel):  # int8: the stage's own copy
            quantized = f"{path.rstrip('/')}/{QUANTIZED_DIR}/{MODEL_XML}"
            featurizer.set(
                featurizer.quantizedModel, storage.qualified(self.sparkSession, quantized)
            )
        return featurizer


class _DeepImageFeaturizerParams(HasFeaturizerSettings, HasInputCol, HasOutputCol):
    """The Params: columns, the weights file and int8's model here; one per featurizer setting
    (``modelName``, ``pooling``, ``runtime``, ``precision``, ``batchSize``, …, each with its
    getter) in ``HasFeaturizerSettings``, generated from ``config.FeaturizerConfig``
    (``params_codegen``), whose declaration also gives the store key and served settings."""

    config_model: type[FeaturizerConfig] = FeaturizerConfig
    errorCol = Param(
        Params._dummy(),
        "errorCol",
        "column for the reason an image was not featurized",
        TypeConverters.toString,
    )
    weights = Param(
        Params._dummy(),
        "weights",
        "'imagenet', 'random', or a weights file path/URI",
        TypeConverters.toString,
    )
    quantizedModel = Param(
        Params._dummy(),
        "quantizedModel",
        "precision int8: the quantized OpenVINO model.xml (path/URI, model.bin beside it)",
        TypeConverters.toString,
    )
    calibrationSet = Param(
        Params._dummy(),
        "calibrationSet",
        "precision int8: identity of the images and NNCF settings quantizedModel came from",
        TypeConverters.toString,
    )

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._setDefault(inputCol=CONTENT, outputCol=FEATURES, errorCol=ERROR, weights="imagenet")

    def getErrorCol(self) -> str:
        return self.getOrDefault(self.errorCol)

    def getWeights(self) -> str:
        return self.getOrDefault(self.weights)

    def getQuantizedModel(self) -> str | None:
        return self.getOrDefault(self.quantizedModel) if self.isSet(self.quantizedModel) else None

    def getCalibrationSet(self) -> str | None:
        return self.getOrDefault(self.calibrationSet) if self.isSet(self.calibrationSet) else None

    def _field_values(self) -> dict[str, Any]:
        """Profile field name → value, for the settings a Param carries."""
        return {
            field: self.getOrDefault(setting.param)
            for field, setting in self.config_model.settings().items()
            if setting.param is not None
        }

    def setting_values(self) -> dict[str, Any]:
        """``stored_as`` → value of every Param-carried setting: the served model's settings."""
        return {
            setting.stored_as or field: self.getOrDefault(setting.param)
            for field, setting in self.config_model.settings().items()
            if setting.param is not None
        }

    def cnn_settings(self, precision: str | None = None) -> CnnSettings:
        """The settings a worker builds the CNN with (``precision``: the one that runs)."""
        settings = CnnSettings(**self.setting_values())
        return dataclasses.replace(settings, precision=precision or settings.precision)

    def store_key(self, weights_identity: str) -> dict[str, Any]:
        """What a feature depends on, hashed into the feature store's key: every setting that
        changes a feature, the model's input size, the weights' identity (which stands for the
        weights settings) and the preprocessing version."""
        spec = get_spec(self.getModelName())
        values = self._field_values()
        key = {
            setting.stored_as or field: values[field]
            for field, setting in self.config_model.settings().items()
            if setting.features == "key" and setting.applies(values)
        }
        if self.getPrecision() == "int8":
            key["calibration"] = self.getCalibrationSet()
        return {
            **key,
            "model": spec.name,
            "input_size": list(spec.input_size),
            "weights": weights_identity,
            "preprocess": PREPROCESS_VERSION,
        }


class DeepImageFeaturizer(
    _DeepImageFeaturizerParams, Transformer, DefaultParamsReadable, DefaultParamsWritable
):
    """Image bytes → CNN features (a Spark ML vector), with bad images quarantined, not dropped.

    Keywords: the Params of ``_DeepImageFeaturizerParams`` (camelCase, as in pyspark.ml).
    """

    @keyword_only
    def __init__(self, **params: Any) -> None:
        super().__init__()
        self.setParams(**self._input_kwargs)

    @keyword_only
    def setParams(self, **params: Any) -> DeepImageFeaturizer:
        """Sets the given Params, as pyspark.ml's own transformers do."""
        self._set(**self._input_kwargs)
        self._validate()
        return self

    @classmethod
    def from_profile(
        cls, settings: FeaturizerConfig, weights: str, **params: Any
    ) -> DeepImageFeaturizer:
        """The featurizer a profile's featurizer section describes, over a resolved weights
        file (or ``random``); ``params`` override (the precision that runs, columns)."""
        values = {
            setting.param: setting.to_param(getattr(settings, field))
            for field, setting in cls.config_model.settings().items()
            if setting.param is not None
        }
        return cls(weights=weights, **{**values, **params})

    def _validate(self) -> None:
        """The profile model's own checks (allowed values, ranges) on the Params' values. The
        model name is checked where the model is needed (``spec()``): asking Keras would import
        it, and train, tune and predict build this stage without ever running a CNN."""
        for field, setting in self.config_model.settings().items():
            if setting.param is None:
                continue
            value = self.getOrDefault(setting.param)
            kind = self.config_model.model_fields[field].annotation
            allowed = get_args(kind) if get_origin(kind) is Literal else None
            if allowed and value not in allowed:
                raise ValueError(
                    f"{setting.param} must be one of {', '.join(allowed)}, got {value!r}"
                )
        if self.getBatchSize() < 1:
            raise ValueError("batchSize must be at least 1")

    def spec(self) -> CnnSpec:
        return get_spec(self.getModelName())

    def resolve_weights(self, spark: SparkSession | None = None) -> ResolvedWeights:
        # only ImageNet weights need the model's description (its Keras file name)
        spec = self.spec() if self.getWeights() == "imagenet" else None
        return resolve_weights(spec, self.getWeights(), seed=self.getOrDefault("seed"), spark=spark)

    def local_quantized_model(self, spark: SparkSession) -> Path | None:
        """The int8 model's model.xml on the driver (model.bin beside it), fetched from its URI
        through Hadoop's FileSystem where it is not a local file (a saved model on HDFS, a
        feature store on S3)."""
        location = self.getQuantizedModel()
        if location is None:
            return None
        if not is_uri(location) or location.startswith("file:"):
            local = Path(urlparse(location).path if location.startswith("file:") else location)
            if not (local.is_file() and local.with_suffix(".bin").is_file()):
                raise WeightsUnavailableError(
                    f"quantized model {location} (and its .bin) not found: featurize again"
                )
            return local
        folder = Path(tempfile.mkdtemp(prefix="sparkles-int8-"))
        for suffix in (".xml", ".bin"):
            source = location.removesuffix(".xml") + suffix
            storage.copy_to_local(spark, source, str(folder / f"model{suffix}"))
        return folder / MODEL_XML

    def calibrate(self, dataset: DataFrame) -> DeepImageFeaturizer:
        """Quantize this featurizer's CNN to int8 on a seeded sample of ``dataset``'s images
        (``calibrationImages`` of them, ``calibration_sample``) and set
        ``quantizedModel``/``calibrationSet``: the int8 model made once, here, on the driver."""
        hashed = dataset.select(F.sha2(F.col(self.getInputCol()), 256).alias("sha"), "*")
        chosen = calibration_sample(
            hashed, "sha", seed=self.getSeed(), count=self.getCalibrationImages()
        )
        sample = chosen.select("sha", self.getInputCol()).collect()
        contents = [bytes(row[self.getInputCol()] or b"") for row in sample]
        identity = calibration_identity([row.sha for row in sample])
        return self.quantize(dataset.sparkSession, contents, identity)

    def quantize(
        self, spark: SparkSession, contents: list[bytes], identity: str
    ) -> DeepImageFeaturizer:
        """Quantize to int8 on calibration images already chosen (``contents``, whose
        ``identity`` is ``calibration_identity`` of their hashes) and set ``quantizedModel`` and
        ``calibrationSet``: featurize chooses them from hashes it has and reads only these."""
        resolved = self.resolve_weights(spark)
        xml = quantized_model(
            self.spec(),
            resolved.local_path,
            pooling=self.getPooling(),
            seed=self.getSeed(),
            contents=contents,
            identity=identity,
            limits=(self.getMaxFileBytes(), self.getMaxPixels()),
        )
        return self.setParams(quantizedModel=str(xml), calibrationSet=identity)

    def precision_that_runs(self) -> str:
        """The precision this transform will run: bf16 becomes f32, with a warning, on a driver
        whose CPU lacks it (executors are checked again when they build the model)."""
        precision, reason = precision_that_runs(self.getPrecision())
        if reason:
            log.warning("featurizer precision bf16 requested, but %s", reason)
        return precision

    def _transform(self, dataset: DataFrame) -> DataFrame:
        self._validate()
        spark = dataset.sparkSession
        resolved = self.resolve_weights(spark)
        shipped = ship(spark, resolved.local_path) if resolved.local_path else None
        quantized = None
        if self.getPrecision() == "int8":
            xml = self.local_quantized_model(spark)
            if xml is None:
                raise ValueError(
                    "precision int8 runs a quantized model: call calibrate(images) first, or "
                    "set quantizedModel"
                )
            # one stem for the pair, from both files: two models may share an .xml
            both = sha256_file(str(xml)) + sha256_file(str(xml.with_suffix(".bin")))
            stem = hashlib.sha256(both.encode()).hexdigest()[:16]
            ship(spark, str(xml.with_suffix(".bin")), stem)
            quantized = ship(spark, str(xml), stem)
        settings = self.cnn_settings(self.precision_that_runs())
        featurize = featurize_udf(
            spark, self.spec(), shipped=shipped, quantized=quantized, settings=settings
        )
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
