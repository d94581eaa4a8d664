"""Where the featurizer's CNN runs: Keras itself, or OpenVINO compiling the same Keras model.

Both start from the one Keras model (``CnnSpec.build``), so weights, pooling and preprocessing
are shared and only the executor differs. OpenVINO at f32 gives Keras' features to ~1e-8, faster;
bf16 halves the arithmetic on CPUs with bf16 instructions (AVX512_BF16, AMX) at ~3e-3 relative
error; int8 runs the NNCF-quantized model (``quantize``) on any x86 CPU, fastest with VNNI.
The precision asked for is not always the precision that runs: a CPU without bf16 runs f32,
and every record (cache key, run params) holds what ran (docs/architecture.md).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

from sparkles.cnn.backbones import CnnSpec, sha256_file
from sparkles.cnn.quiet import converting, import_keras
from sparkles.cnn.settings import CnnSettings

RUNTIMES = ("keras", "openvino")
# Set in a Python worker's environment: after each batch it prints its cumulative seconds
# (decode, CNN, the whole UDF call) on one line, for bench/featurize.py's breakdown of a pass.
WORKER_TIMINGS_ENV = "SPARKLES_WORKER_TIMINGS"
WORKER_TIMINGS_PREFIX = "sparkles: worker timings "
CONVERTED_ENV = "SPARKLES_OPENVINO_CACHE"
PRECISIONS = ("f32", "bf16", "int8")


class PrecisionUnavailableError(RuntimeError):
    """An executor cannot run the precision its driver chose (a CPU without bf16)."""


@functools.cache
def cpu_has_bf16() -> bool:
    """Whether this CPU executes bf16 natively, as OpenVINO's CPU plugin reports it."""
    import openvino as ov

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def precision_that_runs(precision: str) -> tuple[str, str | None]:
    """(precision this machine will run, why it differs from the one asked for, or None)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "bf16" and not cpu_has_bf16():
        return "f32", "this CPU has no bf16 instructions (AVX512_BF16 or AMX): running f32"
    return precision, None


@dataclass
class CompiledCnn:
    """Decoded pixels (n, height, width, 3), float32 in 0–255 → features (n, dim) float32.

    The model's own preprocessing is part of it: Keras' ``preprocess_input``, run by Keras, or
    by OpenVINO converted from it (``preprocessing_model``)."""

    run: Callable[[np.ndarray], np.ndarray]
    dim: int
    runtime: str
    precision: str  # what actually runs, read back from the runtime where it can say
    # one call at a time: a served model takes requests on several threads, and OpenVINO's
    # compiled model has one infer request ("Infer Request is busy"); each call uses every
    # core already (LATENCY), so turns cost no throughput (bench/serving.py --load)
    turns: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        with self.turns:
            features = self.run(pixels)
        return np.asarray(features, dtype=np.float32).reshape(len(pixels), self.dim)


def compile_cnn(
    spec: CnnSpec,
    settings: CnnSettings,
    *,
    weights: str | None,
    threads: int = 0,
    native_only: bool = True,
    quantized: str | None = None,
) -> CompiledCnn:
    """Build the headless CNN of ``settings`` and compile it for its runtime and precision;
    int8 compiles ``quantized`` (its ``model.xml``, ``model.bin`` beside it), made by ``quantize``.

    ``precision`` is the one the driver resolved: an executor that cannot run it fails here,
    in seconds, rather than writing f32 features under a bf16 cache key. ``native_only=False``
    lets Keras emulate bf16 on a CPU without it (slowly): for measuring bf16's numerics only.
    """
    runtime, precision = settings.runtime, settings.precision
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
    runs, reason = precision_that_runs(precision)
    if runs != precision and (native_only or runtime != "keras"):
        raise PrecisionUnavailableError(
            f"featurizer precision {precision} was chosen on the driver, but {reason} on this "
            f"executor; set featurizer.precision=f32 or run on CPUs that have bf16"
        )
    if precision == "int8" and (runtime != "openvino" or quantized is None):
        raise ValueError("int8 runs a quantized OpenVINO model: runtime openvino and its file")
    if runtime == "keras":
        return _keras(spec, settings, weights)
    return _openvino(spec, settings, weights=weights, threads=threads, quantized=quantized)


def _keras(spec: CnnSpec, settings: CnnSettings, weights: str | None) -> CompiledCnn:
    keras = import_keras()
    precision = settings.precision

    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16" if precision == "bf16" else "float32")
    try:
        model = spec.build(weights, settings.pooling, settings.seed)
    finally:
        keras.config.set_dtype_policy(policy)
    preprocess = spec.preprocess()
    return CompiledCnn(
        lambda pixels: model.predict_on_batch(preprocess(pixels.copy())),  # it works in place
        int(np.prod(model.output_shape[1:])),
        "keras",
        precision,
    )


def converted_dir() -> Path:
    """Where this machine keeps converted models: $SPARKLES_OPENVINO_CACHE, else a per-user
    folder in the temp dir (an executor's home may not be writable)."""
    configured = os.environ.get(CONVERTED_ENV)
    if configured:
        return Path(configured)
    return Path(tempfile.gettempdir()) / f"sparkles-openvino-{os.getuid()}"


def model_key(spec: CnnSpec, weights: str | None, pooling: str, seed: int, *more: str) -> str:
    """A converted model's folder name: the model, its input size, pooling, the weights'
    content (or random seed), and ``more`` (OpenVINO's version; int8's calibration)."""
    identity = sha256_file(weights) if weights else f"random:seed={seed}"
    key = json.dumps([spec.name, list(spec.input_size), pooling, identity, *more])
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def converted_model(spec: CnnSpec, weights: str | None, *, pooling: str, seed: int) -> Any:
    """The Keras model converted to OpenVINO, from this machine's cache when an earlier worker
    converted the same (model, weights content, pooling, OpenVINO version): converting costs
    ~10 s per worker for InceptionV3, reading the saved model well under one."""
    import openvino as ov

    folder = converted_dir() / model_key(spec, weights, pooling, seed, ov.__version__)
    return _cached(folder, lambda: spec.build(weights, pooling, seed))


def preprocessing_model(spec: CnnSpec) -> Any:
    """Keras' own ``preprocess_input`` for ``spec``, converted to OpenVINO (and cached as models
    are): a worker that reads both never imports TensorFlow or Keras (~6 s of CPU and ~0.5 GB
    a Python worker). Compiled at f32 whatever the CNN's precision, as Keras runs it."""
    import openvino as ov

    def build() -> Any:
        keras = import_keras()

        pixels = keras.Input((*spec.input_size, 3), name="pixels")
        # an identity (EfficientNet, ConvNeXt: the model preprocesses) still makes a graph
        return keras.Model(pixels, spec.preprocess()(pixels) + 0.0)

    identity = json.dumps([spec.family, list(spec.input_size), version("keras"), ov.__version__])
    key = hashlib.sha256(f"preprocess_input:{identity}".encode()).hexdigest()[:32]
    return _cached(converted_dir() / key, build)


def _cached(folder: Path, build: Callable[[], Any]) -> Any:
    """The OpenVINO model saved in ``folder``, else ``build()``'s Keras model converted and
    saved there (atomically: workers converting the same model at once keep one)."""
    import openvino as ov

    if (folder / "model.xml").is_file():
        try:
            return ov.Core().read_model(folder / "model.xml")
        except Exception:  # unreadable (OpenVINO raises its own types): replace it
            shutil.rmtree(folder, ignore_errors=True)
    keras = import_keras()

    with converting():
        model = ov.convert_model(build())
    keras.backend.clear_session()  # the Keras model built for the conversion is not needed
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:  # f32 as converted: the default would halve the weights to fp16
        ov.save_model(model, staging / "model.xml", compress_to_fp16=False)
        staging.rename(folder)  # atomic; fails if another worker got there first
    except OSError:
        pass
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return model


def _openvino(
    spec: CnnSpec,
    settings: CnnSettings,
    *,
    weights: str | None,
    threads: int,
    quantized: str | None,
) -> CompiledCnn:
    import openvino as ov

    precision = settings.precision

    if quantized:
        model = ov.Core().read_model(quantized, str(Path(quantized).with_suffix(".bin")))
    else:
        model = converted_model(spec, weights, pooling=settings.pooling, seed=settings.seed)
    dim = int(np.prod([d.get_length() for d in model.output(0).get_partial_shape()[1:]]))
    # int8 layers run int8 whatever the hint; what stays unquantized runs f32, not bf16
    wanted = ov.Type.bf16 if precision == "bf16" else ov.Type.f32
    config: dict[str, Any] = {
        "INFERENCE_PRECISION_HINT": wanted,
        # one request at a time per Python worker: LATENCY uses every thread on each batch
        # (THROUGHPUT's streams ran at 0.58x Keras here; bench/featurize.py)
        "PERFORMANCE_HINT": "LATENCY",
    }
    if threads > 0:
        config["INFERENCE_NUM_THREADS"] = threads
    compiled = ov.Core().compile_model(model, "CPU", config)
    ran = compiled.get_property("INFERENCE_PRECISION_HINT")
    if ran != wanted:  # OpenVINO quietly runs f32 where bf16 is missing: never record bf16 then
        raise PrecisionUnavailableError(
            f"OpenVINO was asked for {precision} and compiled {ran} on this executor"
        )
    output = compiled.output(0)
    f32 = {"INFERENCE_PRECISION_HINT": ov.Type.f32}
    if threads > 0:
        f32["INFERENCE_NUM_THREADS"] = threads
    preprocess = ov.Core().compile_model(preprocessing_model(spec), "CPU", f32)
    return CompiledCnn(
        lambda pixels: compiled(preprocess(pixels)[0])[output], dim, "openvino", precision
    )
