"""Resolve a weights setting (imagenet, random, path or URI) to one file on the driver.

Resolution happens once, on the driver, before any Spark job: a missing file fails in seconds
with a message that says how to provide it, not an hour later on an executor.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import sys
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse, urlsplit

from pyspark.sql import SparkSession

from sparkles import storage
from sparkles.cnn.backbones import CnnSpec, ImagenetFile, sha256_file
from sparkles.cnn.quiet import import_keras
from sparkles.errors import UserError
from sparkles.storage import is_uri

WEIGHTS_PROBE_SECONDS = 5  # offline, a download attempt fails in this long at most


class WeightsUnavailableError(UserError, RuntimeError):
    """The configured weights cannot be had; the message names the file and the remedy."""


@dataclass(frozen=True)
class ResolvedWeights:
    requested: str  # what the profile or Param said
    kind: str  # "imagenet", "file" or "random"
    local_path: str | None  # a file on the driver; None for random
    identity: str  # sha256 of the file, or "random:seed=N": part of the cache fingerprint

    @property
    def is_random(self) -> bool:
        return self.kind == "random"


def _imagenet(spec: CnnSpec, mirror: str | None, cache_dir: str | None) -> str:
    """Keras' cached file, else Keras' own download; offline, a clear error at once (a DNS
    failure or WEIGHTS_PROBE_SECONDS of silence), not Keras' retries."""
    file = spec.imagenet()
    origin = file.origin_from(mirror)
    cached = cached_weights(file, cache_dir)
    if cached is not None:
        return cached
    unreachable = _unreachable(origin)
    if unreachable is None:
        keras = import_keras()

        if cache_dir:  # Keras silently falls back to /tmp/.keras when the folder does not exist
            Path(cache_dir).mkdir(parents=True, exist_ok=True)
        try:  # Keras reports downloads on stdout, which belongs to our JSON summaries
            with contextlib.redirect_stdout(sys.stderr):
                return keras.utils.get_file(
                    file.name,
                    origin,
                    cache_subdir="models",
                    file_hash=file.file_hash,
                    cache_dir=cache_dir,
                )
        except Exception as err:  # keras raises a bare Exception for fetch failures
            unreachable = str(err)
    raise WeightsUnavailableError(
        f"ImageNet weights for {spec.name} are not in the Keras cache and could not be "
        f"downloaded from {origin}: {unreachable}. Provide the file {file.name} one way: "
        f"put it in ~/.keras/models/ (or $KERAS_HOME/models/), set featurizer.weights to its "
        f"path or s3:// URI, or set featurizer.weights_mirror to a server that has it."
    )


def cached_weights(file: ImagenetFile, cache_dir: str | None = None) -> str | None:
    """The file where ``keras.utils.get_file`` keeps it (``cache_dir``, else $KERAS_HOME or
    ~/.keras, else /tmp/.keras), if it is there whole: Keras' checksum (md5 or sha256) holds."""
    keras_home = os.environ.get("KERAS_HOME", os.path.join("~", ".keras"))
    fallback = os.path.join(tempfile.gettempdir(), ".keras")
    homes = [cache_dir] if cache_dir else [keras_home, fallback]
    for home in homes:
        path = Path(os.path.expanduser(home)) / "models" / file.name
        if path.is_file() and (file.file_hash is None or _digest(path, file.file_hash)):
            return str(path)
    return None


def _digest(path: Path, expected: str) -> bool:
    algorithm = hashlib.sha256 if len(expected) == 64 else hashlib.md5  # Keras' "auto"
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, algorithm).hexdigest() == expected


def _unreachable(url: str) -> str | None:
    """Why ``url``'s server (or the proxy for it) cannot be reached now; None if it answers."""
    parts = urlsplit(url)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(parts.hostname or ""):
        parts = urlsplit(proxy)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname, port), WEIGHTS_PROBE_SECONDS).close()
    except OSError as err:
        return f"{parts.hostname}:{port} is unreachable ({err})"
    return None


def _file(spark: SparkSession | None, location: str) -> str:
    """A driver-local path as it is; any URI (a saved model's ``hdfs://``, ``viewfs://``,
    ``s3://`` weights) copied to the driver through Hadoop's FileSystem."""
    if location.startswith("file:") and "://" not in location.replace("file:///", "file:/"):
        location = urlparse(location).path
    if not is_uri(location):
        if not Path(location).is_file():
            raise WeightsUnavailableError(
                f"weights file {location} does not exist; set featurizer.weights to an existing "
                f".h5/.weights.h5 file, an s3:// URI, 'imagenet' or 'random'"
            )
        return str(Path(location).resolve())
    if spark is None:
        raise WeightsUnavailableError(f"weights URI {location} needs a Spark session to fetch")
    local = Path(tempfile.mkdtemp(prefix="sparkles-weights-")) / Path(location).name
    try:
        storage.copy_to_local(spark, location, str(local))
    except Exception as err:
        raise WeightsUnavailableError(f"weights file {location} could not be read: {err}") from err
    return str(local)


def resolve_weights(
    spec: CnnSpec | None,
    weights: str,
    *,
    seed: int = 0,
    mirror: str | None = None,
    spark: SparkSession | None = None,
    cache_dir: str | None = None,
) -> ResolvedWeights:
    """``cache_dir`` defaults to Keras' own ($KERAS_HOME or ~/.keras), shared with plain Keras."""
    if weights == "random":
        return ResolvedWeights(weights, "random", None, f"random:seed={seed}")
    if weights == "imagenet":
        if spec is None:
            raise ValueError("ImageNet weights are resolved for a model: give its CnnSpec")
        path = _imagenet(spec, mirror, cache_dir)
        return ResolvedWeights(weights, "imagenet", path, "sha256:" + sha256_file(path))
    path = _file(spark, weights)
    return ResolvedWeights(weights, "file", path, "sha256:" + sha256_file(path))
