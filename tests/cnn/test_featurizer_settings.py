"""The featurizer's settings are declared once (``config.Setting`` on FeaturizerConfig's fields):
the Spark Params and getters (generated into ``cnn/params.py``), the settings a worker runs with
(``cnn/settings.py``), the store key, the featurize run's params and the served model's settings
follow. A test adds a setting there and sees it arrive everywhere."""

from __future__ import annotations

import sys
import types
from typing import Annotated

import pytest

from sparkles.cnn import featurizer as featurizer_module
from sparkles.cnn.featurizer import DeepImageFeaturizer
from sparkles.cnn.params_codegen import generated, params_source, settings_source
from sparkles.config import FeaturizerConfig, Setting, load_profile
from sparkles.features.lineage import features_key, featurize_params
from tests.conftest import write_profile


def test_the_generated_params_and_settings_are_current() -> None:
    """``python -m sparkles.cnn.params_codegen`` was run after the last declaration changed."""
    for path, text in generated().items():
        assert path.read_text() == text, (
            f"{path.name} is stale: python -m {params_source.__module__}"
        )


class FilteredConfig(FeaturizerConfig):
    """The one line a new setting takes (here: a hypothetical resampling filter)."""

    resize_filter: Annotated[
        str, Setting("resizeFilter", "key", "PIL filter images are resized with")
    ] = "bilinear"


def _generated(source: str, name: str) -> types.ModuleType:
    """The module the codegen writes for the extended declaration, imported as ``name``."""
    module = types.ModuleType(name)
    sys.modules[name] = module  # a dataclass looks its module up while it is defined
    exec(compile(source, f"{name}.py", "exec"), module.__dict__)
    return module


HasFilteredSettings = _generated(
    params_source(FilteredConfig, "HasFilteredSettings"), "regenerated_params"
).HasFilteredSettings


class FilteredFeaturizer(DeepImageFeaturizer, HasFilteredSettings):
    """How the test binds the regenerated Params without editing the checked-in module."""

    config_model = FilteredConfig


def _profile(tmp_path, resize_filter: str):
    profile = load_profile(str(write_profile(tmp_path)))
    settings = FilteredConfig(**profile.featurizer.model_dump(), resize_filter=resize_filter)
    return profile.model_copy(update={"featurizer": settings})


def test_a_new_setting_reaches_the_params_the_key_the_run_and_the_served_model(
    tmp_path, monkeypatch
) -> None:
    box, bilinear = _profile(tmp_path, "box"), _profile(tmp_path, "bilinear")
    featurizer = FilteredFeaturizer.from_profile(box.featurizer, "random")
    # a Spark Param, declared in code, with its getter and the profile model's default
    assert "def getResizeFilter(self) -> str:" in params_source(FilteredConfig)
    assert featurizer.getResizeFilter() == "box"
    assert FilteredFeaturizer().getResizeFilter() == "bilinear"
    assert "resizeFilter: PIL filter images are resized with" in featurizer.explainParams()
    # the feature store's key: features made another way never mix
    key = featurizer.store_key("random:seed=0")
    assert key["resize_filter"] == "box"
    other = FilteredFeaturizer.from_profile(bilinear.featurizer, "random")
    assert {k for k, v in other.store_key("random:seed=0").items() if key[k] != v} == {
        "resize_filter"
    }
    # the profile's features key, which train/tune look a table up by
    assert features_key(box) != features_key(bilinear)
    # the featurize run's params, and the served model's settings.json
    assert featurize_params(box, "f32")["resize_filter"] == "box"
    assert featurizer.setting_values()["resize_filter"] == "box"
    # the one object a worker and the JVM-free scorer build the CNN from
    regenerated = _generated(settings_source(FilteredConfig), "regenerated_settings").CnnSettings
    monkeypatch.setattr(featurizer_module, "CnnSettings", regenerated)
    assert featurizer.cnn_settings().resize_filter == "box"
    served = regenerated.from_dict({**featurizer.setting_values(), "weights_file": None})
    assert served == featurizer.cnn_settings()
    assert regenerated.from_dict({"model": "InceptionV3"}).resize_filter == "bilinear"  # older


def test_settings_that_cannot_change_a_feature_stay_out_of_the_keys(tmp_path) -> None:
    profile = load_profile(str(write_profile(tmp_path)))
    featurizer = DeepImageFeaturizer.from_profile(profile.featurizer, "random")
    key = featurizer.store_key("random:seed=0")
    assert "batch_size" not in key and "seed" not in key  # the weights' identity stands for it
    bigger = profile.featurizer.model_copy(update={"batch_size": 64, "rows_per_partition": 9})
    assert features_key(profile.model_copy(update={"featurizer": bigger})) == features_key(profile)
    pooled = profile.featurizer.model_copy(update={"pooling": "max"})
    assert features_key(profile.model_copy(update={"featurizer": pooled})) != features_key(profile)
    # what the served model is rebuilt from: every Param-carried setting, in profile units' names
    assert featurizer.setting_values() == {
        "model": "MobileNetV2",
        "seed": 0,
        "pooling": "avg",
        "runtime": "openvino",
        "precision": "f32",
        "calibration_images": 300,
        "batch_size": 16,
        "max_file_bytes": 50 * 2**20,
        "max_pixels": 89_478_485,
    }
    assert "calibration_images" not in key  # int8's alone (tests/cnn/test_quantize.py)


def test_params_are_checked_as_the_profile_model_checks_them() -> None:
    with pytest.raises(ValueError, match="pooling must be one of avg, max, none"):
        DeepImageFeaturizer(pooling="mean")
    with pytest.raises(AttributeError):
        DeepImageFeaturizer(poolingg="avg")  # a misspelt Param is not silently ignored
