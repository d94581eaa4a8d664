"""The keras.applications CNNs the featurizer knows: input size, preprocessing, weights file.

Weight file names and origins are Keras' own, so ``weights: imagenet`` downloads exactly what
``keras.applications.X(weights="imagenet", include_top=False)`` would, into the same cache.
"""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

KERAS_WEIGHTS_BASE = "https://storage.googleapis.com/tensorflow/keras-applications/"


@dataclass(frozen=True)
class CnnSpec:
    """One keras.applications model, headless."""

    name: str
    module: str  # keras.applications submodule that holds preprocess_input
    input_size: tuple[int, int]  # (height, width)
    weights_file: str  # Keras' file name for the include_top=False ImageNet weights
    weights_subdir: str  # folder under KERAS_WEIGHTS_BASE
    weights_md5: str | None  # Keras' own checksum for that file, where it has one

    def weights_origin(self, mirror: str | None = None) -> str:
        base = (
            mirror.rstrip("/") + "/" if mirror else KERAS_WEIGHTS_BASE + self.weights_subdir + "/"
        )
        return base + self.weights_file

    def preprocess(self) -> Callable[[np.ndarray], np.ndarray]:
        return importlib.import_module(f"keras.applications.{self.module}").preprocess_input

    def build(self, weights: str | None, pooling: str, seed: int = 0) -> Any:
        """The headless model; ``weights=None`` gives seeded random weights (tests, offline)."""
        import keras

        if weights is None:
            keras.utils.set_random_seed(seed)
        constructor = getattr(keras.applications, self.name)
        return constructor(
            include_top=False,
            weights=weights,
            input_shape=(*self.input_size, 3),
            pooling=None if pooling == "none" else pooling,
        )


def sha256_file(path: str) -> str:
    """A weights file's identity: its content, whatever its name or place."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


MODELS: dict[str, CnnSpec] = {
    spec.name: spec
    for spec in (
        CnnSpec(
            "InceptionV3",
            "inception_v3",
            (299, 299),
            "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
            "inception_v3",
            "bcbd6486424b2319ff4ef7d526e38f63",
        ),
        CnnSpec(
            "Xception",
            "xception",
            (299, 299),
            "xception_weights_tf_dim_ordering_tf_kernels_notop.h5",
            "xception",
            "b0042744bf5b25fce3cb969f33bebb97",
        ),
        CnnSpec(
            "ResNet50",
            "resnet50",
            (224, 224),
            "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
            "resnet",
            "4d473c1dd8becc155b73f8504c6f6626",
        ),
        CnnSpec(
            "MobileNetV2",
            "mobilenet_v2",
            (224, 224),
            "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5",
            "mobilenet_v2",
            None,
        ),
    )
}


def get_spec(name: str) -> CnnSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; supported: {sorted(MODELS)}") from None
