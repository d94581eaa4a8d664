"""Every ImageNet CNN in ``keras.applications``, by its name, headless.

Nothing here is a hand-written table: a model's input size, preprocessing and ImageNet weights
file are what ``keras.applications`` itself uses. Keras keeps them inside each constructor (the
``default_size`` it hands ``imagenet_utils.obtain_input_shape``, the file name it hands
``file_utils.get_file``), so ``describe`` calls the constructor and stops it at that call:
the input size costs no model build, the weights file one build with no weights (once per
process, and only when ``weights: imagenet`` is resolved). ``weights: imagenet`` therefore
downloads exactly what ``keras.applications.X(weights="imagenet", include_top=False)`` would,
into the same cache.

What Keras answered is remembered on disk per Keras version (``descriptions_file``): a featurize
with nothing new to compute needs the input size and the weights file's name for its store key,
and importing Keras and building a model to learn them again cost ~4 s of such a run.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib
import inspect
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

from sparkles.cnn.quiet import import_keras
from sparkles.errors import UserError

log = logging.getLogger(__name__)

# For the models whose constructor does not say (MobileNetV3): their weights files are named
# for 224 px (Keras' docs), and imagenet_utils' smallest input elsewhere is 32 px.
OPEN_SIZE_DEFAULT, MIN_SIZE_DEFAULT = 224, 32


@dataclass(frozen=True)
class ImagenetFile:
    """Keras' ImageNet weights file for a headless model: its name, where Keras fetches it, and
    Keras' checksum for it (md5 or sha256; None where Keras has none)."""

    name: str
    origin: str
    file_hash: str | None

    def origin_from(self, mirror: str | None) -> str:
        return mirror.rstrip("/") + "/" + self.name if mirror else self.origin


@dataclass(frozen=True)
class CnnSpec:
    """One keras.applications model, headless."""

    name: str
    family: str  # the keras.applications module holding it and its preprocess_input
    input_size: tuple[int, int]  # (height, width): the size its ImageNet weights were trained at
    min_size: int  # the smallest input Keras accepts for it
    imagenet_file: ImagenetFile | None = None  # None: asked of Keras on first use

    def imagenet(self) -> ImagenetFile:
        return self.imagenet_file or _imagenet_file(self.name, self.input_size)

    def preprocess(self) -> Callable[[np.ndarray], np.ndarray]:
        import_keras()
        return importlib.import_module(f"keras.src.applications.{self.family}").preprocess_input

    def build(self, weights: str | None, pooling: str, seed: int = 0) -> Any:
        """The headless model; ``weights=None`` gives seeded random weights (tests, offline)."""
        keras = import_keras()

        if weights is None:
            keras.utils.set_random_seed(seed)
        return _constructor(self.name)(
            include_top=False,
            weights=weights,
            input_shape=(*self.input_size, 3),
            pooling=None if pooling == "none" else pooling,
        )


class _Stop(Exception):
    """Raised from inside a Keras constructor once it has said what we asked."""


@contextlib.contextmanager
def _intercept(module: Any, attribute: str, seen: dict[str, Any]) -> Iterator[None]:
    """While open, a call of ``module.attribute`` records its arguments by name and stops."""
    original = getattr(module, attribute)

    def record(*args: Any, **kwargs: Any) -> Any:
        seen.update(inspect.signature(original).bind(*args, **kwargs).arguments)
        raise _Stop

    setattr(module, attribute, record)
    try:
        yield
    except _Stop:
        pass
    finally:
        setattr(module, attribute, original)


def available() -> list[str]:
    """The model names ``keras.applications`` exports."""
    keras = import_keras()

    return sorted(
        name
        for name in dir(keras.applications)
        if name[0].isupper()
        and getattr(getattr(keras.applications, name), "__module__", "").startswith(
            "keras.src.applications."
        )
    )


class UnknownModelError(UserError, ValueError):
    """A model name keras.applications does not have; the message lists the ones it has."""


def _constructor(name: str) -> Callable[..., Any]:
    keras = import_keras()

    if name not in available():
        raise UnknownModelError(
            f"featurizer.model: keras.applications has no model {name!r}; it has "
            f"{', '.join(available())}"
        )
    return getattr(keras.applications, name)


def descriptions_file() -> Path:
    """Where Keras' answers are kept, per Keras version: $SPARKLES_CACHE_DIR, else
    $XDG_CACHE_HOME/sparkles or ~/.cache/sparkles."""
    xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    base = os.environ.get("SPARKLES_CACHE_DIR") or Path(xdg) / "sparkles"
    return Path(base) / f"keras-{version('keras')}-applications.json"


def _described() -> dict[str, dict[str, Any]]:
    try:
        return json.loads(descriptions_file().read_text())
    except (OSError, ValueError):
        return {}


def _remember(name: str, **fields: Any) -> None:
    """Merge ``fields`` into ``name``'s description; a file that cannot be written is skipped."""
    target = descriptions_file()
    known = _described()
    known[name] = {**known.get(name, {}), **fields}
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=target.parent, delete=False) as handle:
            json.dump(known, handle, indent=1, sort_keys=True)
        os.replace(handle.name, target)  # readers see the old file or the new one
    except OSError as err:
        log.debug("not remembering %s's description in %s: %s", name, target, err)


@functools.cache
def get_spec(name: str) -> CnnSpec:
    """The model called ``name`` in keras.applications; its input size is Keras' default."""
    known = _described().get(name)
    if known and "family" in known:
        weights = known.get("imagenet")
        return CnnSpec(
            name,
            known["family"],
            (known["size"], known["size"]),
            known["min_size"],
            ImagenetFile(**weights) if weights else None,
        )
    spec = _introspect(name)
    _remember(name, family=spec.family, size=spec.input_size[0], min_size=spec.min_size)
    return spec


def _introspect(name: str) -> CnnSpec:
    import_keras()
    from keras.src.applications import imagenet_utils

    constructor = _constructor(name)
    seen: dict[str, Any] = {}
    with _intercept(imagenet_utils, "obtain_input_shape", seen):
        constructor(include_top=False, weights=None)
    # a model that never asks (MobileNetV3 takes any size) was trained at ImageNet's usual size
    size = int(seen.get("default_size", OPEN_SIZE_DEFAULT))
    family = constructor.__module__.rsplit(".", 1)[1]
    return CnnSpec(name, family, (size, size), int(seen.get("min_size", MIN_SIZE_DEFAULT)))


@functools.cache
def _imagenet_file(name: str, input_size: tuple[int, int]) -> ImagenetFile:
    import_keras()
    from keras.src.utils import file_utils

    seen: dict[str, Any] = {}
    with _intercept(file_utils, "get_file", seen):
        _constructor(name)(include_top=False, weights="imagenet", input_shape=(*input_size, 3))
    if not seen:
        raise ValueError(f"keras.applications.{name} fetches no ImageNet weights file")
    file = ImagenetFile(seen["fname"], seen["origin"], seen.get("file_hash"))
    _remember(name, imagenet=asdict(file))
    return file


def sha256_file(path: str) -> str:
    """A weights file's identity: its content, whatever its name or place."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
