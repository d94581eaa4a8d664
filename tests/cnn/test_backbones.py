"""Every keras.applications family: its input size and preprocessing are Keras' own, pooled and
unpooled features agree, and OpenVINO's conversion answers as Keras does (random weights, small
input: what is checked is the graph, not ImageNet). `pooling: none` itself is Keras' own
constructor option; tests/cnn/test_featurizer.py runs it through the featurizer."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from sparkles.cnn import backbones
from sparkles.cnn.backbones import UnknownModelError, available, descriptions_file, get_spec

# one model per family (the keras.applications module holding it), the smallest where a
# family has several
ONE_PER_FAMILY = {
    "convnext": "ConvNeXtTiny",
    "densenet": "DenseNet121",
    "efficientnet": "EfficientNetB0",
    "efficientnet_v2": "EfficientNetV2B0",
    "inception_resnet_v2": "InceptionResNetV2",
    "inception_v3": "InceptionV3",
    "mobilenet": "MobileNet",
    "mobilenet_v2": "MobileNetV2",
    "mobilenet_v3": "MobileNetV3Small",
    "nasnet": "NASNetMobile",
    "resnet": "ResNet50",
    "resnet_v2": "ResNet50V2",
    "vgg16": "VGG16",
    "vgg19": "VGG19",
    "xception": "Xception",
}


def test_every_family_is_covered_and_sizes_are_keras_own() -> None:
    assert {get_spec(name).family for name in available()} == set(ONE_PER_FAMILY)
    sizes = {name: get_spec(name).input_size for name in ("InceptionV3", "EfficientNetB7")}
    assert sizes == {"InceptionV3": (299, 299), "EfficientNetB7": (600, 600)}
    with pytest.raises(UnknownModelError, match="featurizer.model.*ConvNeXtTiny"):
        get_spec("InceptionV4")


def test_what_keras_said_is_remembered_per_keras_version(tmp_path, monkeypatch) -> None:
    """A later process reads a model's size and weights file from disk: no Keras import."""
    monkeypatch.setenv("SPARKLES_CACHE_DIR", str(tmp_path))
    get_spec.cache_clear()
    try:
        asked = get_spec("MobileNetV2").imagenet()
        assert descriptions_file().parent == tmp_path
        remembered = json.loads(descriptions_file().read_text())["MobileNetV2"]
        assert remembered["size"] == 224 and remembered["imagenet"]["name"] == asked.name

        def no_keras(name: str):
            raise AssertionError(f"Keras was asked about {name}")

        monkeypatch.setattr(backbones, "_introspect", no_keras)
        get_spec.cache_clear()
        again = get_spec("MobileNetV2")
        assert again.input_size == (224, 224) and again.imagenet() == asked
    finally:
        get_spec.cache_clear()


@pytest.mark.conversion
@pytest.mark.parametrize("name", sorted(ONE_PER_FAMILY.values()))
def test_openvino_answers_as_keras_for_each_family(name: str) -> None:
    import openvino as ov

    spec = get_spec(name)
    side = max(spec.min_size, 32)
    small = dataclasses.replace(spec, input_size=(side, side))
    pixels = np.random.default_rng(1).uniform(0, 255, (2, side, side, 3)).astype(np.float32)
    pixels = small.preprocess()(pixels)
    import keras

    pooled = small.build(None, "avg", seed=3)
    # the unpooled features are the input of the pooled model's last layer, its average pooling
    # (a second build with pooling "none" doubled this test's time); ConvNeXt normalizes after
    # pooling, so its unpooled model is built
    last = pooled.layers[-1]
    if isinstance(last, keras.layers.GlobalAveragePooling2D):
        unpooled = keras.Model(pooled.inputs, last.input)
    else:
        unpooled = small.build(None, "none", seed=3)
    # eager calls: predict_on_batch traces a graph first, seconds per model
    keras_none = np.asarray(unpooled(pixels, training=False)).reshape(2, -1)
    keras_avg = np.asarray(pooled(pixels, training=False))
    # f32 said: OpenVINO's CPU default on a CPU with bf16 instructions is bf16
    f32 = {"INFERENCE_PRECISION_HINT": ov.Type.f32}
    compiled = ov.Core().compile_model(ov.convert_model(unpooled), "CPU", f32)
    openvino = compiled(pixels)[compiled.output(0)].reshape(2, -1)
    channels = keras_avg.shape[1]
    assert keras_none.shape[1] % channels == 0  # unpooled: every position's channels
    # pooling avg is the mean over positions of the unpooled features
    np.testing.assert_allclose(
        keras_none.reshape(2, -1, channels).mean(axis=1), keras_avg, rtol=1e-3, atol=1e-5
    )
    scale = np.abs(keras_none).max()
    np.testing.assert_allclose(openvino, keras_none, atol=1e-4 * scale, rtol=1e-3)
