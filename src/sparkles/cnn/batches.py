"""A batch of image bytes → CNN features and quarantine reasons: the work a Spark Python worker
does for the DeepImageFeaturizer and the JVM-free scorer does per request, from one settings
object (``CnnSettings``), so the two cannot drift apart."""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from sparkles.cnn.backbones import CnnSpec
from sparkles.cnn.imaging import BadImage, decode_image
from sparkles.cnn.runtimes import CompiledCnn, compile_cnn
from sparkles.cnn.settings import CnnSettings


def batch_featurizer(
    spec: CnnSpec,
    settings: CnnSettings,
    *,
    weights: str | None,
    quantized: str | None,
    threads: int,
) -> ImageBatchFeaturizer:
    """The CNN ``settings`` describe (``spec``: ``get_spec(settings.model)``, resolved once
    on the driver), over a local weights file (None: seeded random weights) and, for int8, the
    quantized model's local .xml; ``threads`` (0: OpenVINO's and TF's own choice) run it and
    decode."""
    cnn = compile_cnn(spec, settings, weights=weights, threads=threads, quantized=quantized)
    return ImageBatchFeaturizer(cnn, spec, settings, threads)


class ImageBatchFeaturizer:
    """Compressed image bytes → (features, reasons): the work of one batch, in Spark's Python
    worker and in the JVM-free scoring model alike.

    PIL releases the GIL while decoding, so ``threads`` decode a batch side by side while the
    CNN waits (halves decode time on 2 cores; bench/featurize.py). Only the decodable images go
    to the CNN, unpadded: Keras 3 retraces once for a second batch size and then runs any size,
    OpenVINO's batch dimension is dynamic (padding partial batches cost up to 5x on small tasks).
    """

    def __init__(
        self, cnn: CompiledCnn, spec: CnnSpec, settings: CnnSettings, threads: int
    ) -> None:
        self.cnn, self.spec, self.settings = cnn, spec, settings
        self.limits = (settings.max_file_bytes, settings.max_pixels)
        self.decoders = ThreadPoolExecutor(max(threads, 1), thread_name_prefix="sparkles-decode")
        self.seconds = {"images": 0.0, "decode_s": 0.0, "cnn_s": 0.0}  # cumulative

    def _decode(self, content: bytes | None) -> np.ndarray | str:
        """Pixels, or the reason the image is quarantined."""
        try:
            return decode_image(
                content, self.spec.input_size, max_bytes=self.limits[0], max_pixels=self.limits[1]
            )
        except BadImage as err:
            return str(err)

    def __call__(self, contents: Sequence[bytes | None]) -> tuple[np.ndarray, np.ndarray]:
        """(features (n, dim) float32, zero where quarantined; reasons (n,) object, None where
        featurized)."""
        started = time.perf_counter()
        decoded = list(self.decoders.map(self._decode, contents))
        errors = np.array([d if isinstance(d, str) else None for d in decoded], dtype=object)
        good = np.array([error is None for error in errors], dtype=bool)
        features = np.zeros((len(decoded), self.cnn.dim), dtype=np.float32)
        decoded_at = time.perf_counter()
        if good.any():
            pixels = np.stack([d for d in decoded if not isinstance(d, str)])
            features[good] = self.cnn(pixels.astype(np.float32))
        self.seconds["images"] += len(contents)
        self.seconds["decode_s"] += decoded_at - started
        self.seconds["cnn_s"] += time.perf_counter() - decoded_at
        return features, errors
