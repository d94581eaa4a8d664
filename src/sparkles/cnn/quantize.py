"""int8 features: NNCF post-training quantization of the OpenVINO model, calibrated on a seeded
sample of the profile's own labelled images.

The quantized model is made once, on the driver, and kept twice: in this machine's converted-model
cache (``runtimes.converted_dir``, as f32 conversions are) and beside the features it makes, in
the feature store (``<store>/int8/``), from where train, predict and the logged model take it.
Executors and the JVM-free scorer never calibrate: they run the file they are given. Its identity
(the sample's image hashes, the NNCF settings and versions) joins the store key, so features from
another calibration never mix with these.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sparkles.cnn.backbones import CnnSpec
from sparkles.cnn.imaging import BadImage, decode_image
from sparkles.cnn.runtimes import converted_dir, converted_model, model_key

log = logging.getLogger(__name__)

# Chosen by measurement (bench/quality.py, docs/performance.md): on 800 real photos with real
# MobileNetV2 weights, NNCF's defaults (fast bias correction) gave features at median cosine
# 0.97 to f32; full bias correction 0.993 at the same speed. The mixed preset and SmoothQuant
# changed neither fidelity nor speed measurably; nothing needed an ignored scope.
NNCF_SETTINGS: dict[str, Any] = {"preset": "performance", "fast_bias_correction": False}
QUANTIZED_DIR = "int8"  # beside the features, in the store; inside a saved featurizer stage
MODEL_XML, MODEL_BIN = "model.xml", "model.bin"


class CalibrationError(ValueError):
    """No calibration image could be decoded."""


def calibration_identity(image_hashes: Sequence[str]) -> str:
    """What the quantized model depends on beyond the model and weights: which images it was
    calibrated on (their content hashes, in any order) and how NNCF was run."""
    import nncf
    import openvino as ov

    parts = [sorted(image_hashes), NNCF_SETTINGS, nncf.__version__, ov.__version__]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


def quantized_model(
    spec: CnnSpec,
    weights: str | None,
    *,
    pooling: str,
    seed: int,
    contents: Sequence[bytes],
    identity: str,
    limits: tuple[int, int],
) -> Path:
    """The int8 model's ``model.xml`` (``model.bin`` beside it) on this machine: from the
    converted-model cache, else quantized now on ``contents`` and kept there."""
    import nncf
    import openvino as ov

    folder = converted_dir() / model_key(spec, weights, pooling, seed, "int8", identity)
    if (folder / MODEL_XML).is_file() and (folder / MODEL_BIN).is_file():
        return folder / MODEL_XML
    preprocess = spec.preprocess()
    samples = []
    for content in contents:
        try:
            pixels = decode_image(
                content, spec.input_size, max_bytes=limits[0], max_pixels=limits[1]
            )
        except BadImage:  # quarantined when featurized; calibration goes on without it
            continue
        samples.append(preprocess(pixels[np.newaxis].astype(np.float32)))
    if not samples:
        raise CalibrationError(
            f"none of the {len(contents)} calibration images could be decoded: int8 needs "
            "readable images of the profile's own classes"
        )
    skipped = len(contents) - len(samples)
    log.info("int8: calibrating %s on %d images (%d skipped)", spec.name, len(samples), skipped)
    model = converted_model(spec, weights, pooling=pooling, seed=seed)
    quantized = nncf.quantize(
        model,
        nncf.Dataset(samples),
        subset_size=len(samples),
        preset=nncf.QuantizationPreset(NNCF_SETTINGS["preset"]),
        fast_bias_correction=NNCF_SETTINGS["fast_bias_correction"],
    )
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        ov.save_model(quantized, staging / MODEL_XML, compress_to_fp16=False)
        staging.rename(folder)  # atomic; fails if another process got there first
    except OSError:
        pass
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder / MODEL_XML
