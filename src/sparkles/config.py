"""Profiles: YAML files in conf/ loaded into validated, typed objects.

A profile is picked by name (``local`` → ``conf/local.yaml``) or by path. Every error names the
file and the dotted key, so a typo in a 200-line EMR profile is found in seconds.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sparkles.errors import ConfigError, describe
from sparkles.overrides import (
    CREDENTIAL_KEYS,
    apply_overrides,
    credentials_in_values,
    expand_environment,
)
from sparkles.storage import is_uri

log = logging.getLogger(__name__)
CONF_DIR_ENV = "SPARKLES_CONF_DIR"
# what a search and the registry select on: val_<metric>, higher is better; which metrics a
# profile's task logs is the task's to check (sparkles.tasks.catalog.check_profile)
Metric = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SparkConfig(_Strict):
    master: str = "local[*]"
    app_name: str = "sparkles"
    show_progress: bool = True
    conf: dict[str, str] = Field(default_factory=dict)

    @field_validator("conf", mode="before")
    @classmethod
    def _stringify(cls, value: Any) -> Any:
        """Spark conf values are strings; YAML gives ints and bools, so accept and convert them."""
        if isinstance(value, dict):
            return {
                str(k): str(v).lower() if isinstance(v, bool) else str(v) for k, v in value.items()
            }
        return value

    @field_validator("conf")
    @classmethod
    def _no_credentials(cls, value: dict[str, str]) -> dict[str, str]:
        secrets = sorted(key for key in value if CREDENTIAL_KEYS.search(key))
        if secrets:
            raise ValueError(
                f"credentials do not belong in a profile ({', '.join(secrets)}): use the "
                "instance profile (EMR), the AWS_* environment variables or ~/.aws"
            )
        return value


class MlflowConfig(_Strict):
    tracking_uri: str = "sqlite:///mlruns.db"
    artifact_location: str = "./mlartifacts"
    experiment: str = "sparkles"


class SampleConfig(_Strict):
    """The bundled synthetic sample: generated into the data paths on first use."""

    images: int = Field(default=240, ge=8)
    seed: int = 7
    size: tuple[int, int] = (320, 240)
    classes: list[str] = Field(default_factory=lambda: ["Car", "Tree"])  # Bus may join them


class DataConfig(_Strict):
    labels_csv: str
    classes_csv: str
    images: str
    image_glob: str = "*.jpg"
    classes: list[str] = Field(default_factory=lambda: ["Car", "Tree"], min_length=2)
    # an image with several target classes: dropped (counted), kept once under the first class
    # listed, kept once per class (the 2019 study's counting; splits keep its copies together),
    # or kept once with its set of classes and a classifier per class (docs/commands.md)
    multi_label_policy: Literal["drop", "keep-first", "keep-all", "multi-label"] = "drop"
    sample: SampleConfig | None = None

    @model_validator(mode="after")
    def _distinct_classes(self) -> DataConfig:
        folded = [c.lower() for c in self.classes]
        if len(set(folded)) != len(folded):
            raise ValueError(f"classes must differ (ignoring case): {self.classes}")
        return self


@dataclass(frozen=True)
class Setting:
    """What a featurizer setting is beyond its profile value, declared on its field below; the
    transformer's Params, the feature-store key, the featurize run's params and the served
    model's settings are all derived from these (``featurizer.DeepImageFeaturizer``).

    ``param``: the DeepImageFeaturizer Param carrying it (None: the driver alone uses it).
    ``features``: ``"key"`` if it changes a feature (it joins the store key and the profile's
    features key), ``"weights"`` if it does so through the weights file (whose identity joins the
    store key in its place), None if it never does. ``stored_as`` names it in the store key and
    the served model's settings (default: the field's name); ``scale`` converts the profile's
    unit to the Param's (MB → bytes). ``when``: (another field, its value) — the setting only
    matters then (int8's calibration), and joins the keys and the run's params only then, so
    the keys of every other configuration stay as they were.
    """

    param: str | None
    features: Literal["key", "weights"] | None
    doc: str
    stored_as: str | None = None
    scale: int = 1
    when: tuple[str, Any] | None = None

    @property
    def logged(self) -> bool:
        """A featurize run logs it as a param: it reaches the CNN or its weights."""
        return self.param is not None or self.features is not None

    def to_param(self, value: Any) -> Any:
        """A profile value in its Param's unit (MB → bytes)."""
        return int(value * self.scale) if self.scale != 1 else value

    def applies(self, values: dict[str, Any]) -> bool:
        """Whether it matters under these field values (see ``when``)."""
        return self.when is None or values.get(self.when[0]) == self.when[1]


class FeaturizerConfig(_Strict):
    """The featurizer's settings, declared once (see ``Setting``)."""

    model: Annotated[str, Setting("modelName", "key", "keras.applications CNN", "model")] = (
        "InceptionV3"
    )
    weights: Annotated[
        str, Setting(None, "weights", "'imagenet', 'random', or a weights file path/URI")
    ] = "imagenet"
    weights_mirror: Annotated[
        str | None, Setting(None, None, "where to fetch Keras' ImageNet weights from instead")
    ] = None
    allow_random_weights: Annotated[
        bool, Setting(None, None, "fall back to random weights when none can be fetched")
    ] = False
    random_seed: Annotated[
        int, Setting("seed", "weights", "seed of random weights and the calibration sample", "seed")
    ] = 0
    pooling: Annotated[
        Literal["avg", "max", "none"],
        Setting("pooling", "key", "avg, max, or none (unpooled, as sparkdl)"),
    ] = "avg"
    # OpenVINO f32: Keras' features to ~1e-8, faster; bf16 only where the CPU has it; int8:
    # NNCF-quantized on OpenVINO (docs/performance.md)
    runtime: Annotated[
        Literal["keras", "openvino"],
        Setting("runtime", "key", "keras, or openvino (same model, compiled)"),
    ] = "openvino"
    precision: Annotated[
        Literal["f32", "bf16", "int8"],
        Setting(
            "precision",
            "key",
            "f32; bf16 where the CPU has bf16 instructions; int8 (OpenVINO, calibrated)",
        ),
    ] = "f32"
    calibration_images: Annotated[
        int,
        Setting(
            "calibrationImages",
            "key",
            "labelled images int8 is calibrated on (seeded sample)",
            when=("precision", "int8"),
        ),
    ] = Field(default=300, ge=1)
    batch_size: Annotated[int, Setting("batchSize", None, "images per model call")] = Field(
        default=32, ge=1
    )
    # Images per Spark task: a task's last model batch is partial, so a few large tasks waste
    # less than many small ones; more tasks than slots keeps a cluster busy and retries cheap.
    rows_per_partition: Annotated[int, Setting(None, None, "images per Spark task")] = Field(
        default=256, ge=1
    )
    max_file_mb: Annotated[
        float,
        Setting("maxFileBytes", "key", "larger files are quarantined", "max_file_bytes", 2**20),
    ] = Field(default=50.0, gt=0)
    max_pixels: Annotated[
        int, Setting("maxPixels", "key", "more pixels is a decompression bomb")
    ] = Field(default=89_478_485, gt=0)

    @model_validator(mode="after")
    def _int8_on_openvino(self) -> FeaturizerConfig:
        if self.precision == "int8" and self.runtime != "openvino":
            raise ValueError(
                "precision: int8 runs on OpenVINO only (NNCF quantizes the OpenVINO model); set "
                "featurizer.runtime: openvino or featurizer.precision: f32"
            )
        return self

    @classmethod
    def settings(cls) -> dict[str, Setting]:
        """Field name → its Setting, in declaration order."""
        return {
            name: next(m for m in field.metadata if isinstance(m, Setting))
            for name, field in cls.model_fields.items()
        }


class _KindSections(BaseModel):
    """A profile section that holds, beside its own settings, one subsection per classifier
    kind (``train.<kind>``, ``tune.<kind>``). Their contents are the kinds' to declare and check
    (``model.classifiers``): this layer knows no kind, so a new kind edits nothing here."""

    model_config = ConfigDict(extra="allow", frozen=True)

    @model_validator(mode="after")
    def _kind_sections_are_sections(self) -> _KindSections:
        for key, value in (self.model_extra or {}).items():
            if not isinstance(value, dict):
                raise ValueError(f"unknown key '{key}' (not a setting, nor a classifier's section)")
        return self

    def kind_section(self, kind: str) -> dict[str, Any]:
        """The raw ``<kind>`` subsection ({} where the profile has none)."""
        return dict((self.model_extra or {}).get(kind, {}))


class TrainConfig(_KindSections):
    """The classifier on the cached features: a kind of ``model.classifiers.KINDS`` (penalized
    logistic regression, the 2019 study's, whose values are the ones below; a multilayer
    perceptron, its Future Work, under ``train.mlp``)."""

    classifier: str = "logistic"
    test_fraction: float = Field(default=0.2, gt=0, lt=1)
    seed: int = 42
    reg_param: float = Field(default=0.01, ge=0)
    elastic_net_param: float = Field(default=0.5, ge=0, le=1)
    max_iter: int = Field(default=100, ge=1)
    tol: float = Field(default=1e-4, gt=0)
    standardization: bool = True
    gallery_size: int = Field(default=12, ge=0)


class TuneConfig(_KindSections):
    """Searches on cached features, each over its classifier's own space: ``tune.<kind>.grid``
    and ``tune.<kind>.hyperopt`` (declared by the kind); selection never sees the test split."""

    @model_validator(mode="after")
    def _spaces_per_kind(self) -> TuneConfig:
        """``tune.<kind>`` holds ``grid`` and ``hyperopt``; logistic's spaces were at
        ``tune.grid`` and ``tune.hyperopt`` before each kind had its section."""
        for kind, section in (self.model_extra or {}).items():
            if kind in ("grid", "hyperopt"):
                raise ValueError(
                    f"'tune.{kind}' is now 'tune.logistic.{kind}' (each classifier kind has its "
                    f"own tune.<kind>.grid and tune.<kind>.hyperopt)"
                )
            unknown = sorted(set(section) - {"grid", "hyperopt"})
            if unknown:
                raise ValueError(
                    f"unknown key 'tune.{kind}.{unknown[0]}' (a kind's search spaces are "
                    f"tune.{kind}.grid and tune.{kind}.hyperopt)"
                )
        return self

    method: Literal["grid", "hyperopt"] = "hyperopt"
    metric: Metric = "auc"
    max_evals: int = Field(default=16, ge=1)
    seed: int = 0
    validation: Literal["holdout", "cv"] = "holdout"
    validation_fraction: float = Field(default=0.2, gt=0, lt=1)
    folds: int = Field(default=3, ge=2)
    task_cpus: int = Field(default=1, ge=1)  # no TF during a search: one task per core


class RegistryConfig(_Strict):
    model_name: str = "sparkles-car-vs-tree"
    metric: Metric = "auc"
    min_improvement: float = Field(default=0.0, ge=0)
    # runs that fell back to random weights are never promoted unless this says so
    allow_random_weights: bool = False


class EdaConfig(_Strict):
    top_n: int = Field(default=20, ge=1)  # most frequent labels in the bar chart and summary
    top_k: int = Field(default=48, ge=2)  # labels in the co-occurrence matrix (the study used 48)
    output_dir: str | None = "./eda"
    # width × height of every image from its header: reads each file's bytes once (no decode)
    image_sizes: bool = True


class StoreConfig(_Strict):
    dir: str = "./.cache/features"
    # an append that leaves more live segments than this compacts them into one
    compact_after_segments: int = Field(default=16, ge=1)
    # a featurize holding the store's lease renews it every quarter of this; one not renewed
    # for this long belongs to a run that died, and a waiting run breaks it
    lease_seconds: float = Field(default=120.0, gt=0)


class ObserveConfig(_Strict):
    """What a run records of its Spark work (docs/troubleshooting.md; conf/local.yaml's comments
    say what each key does). ``event_log``: a folder, null for the cluster's own, "" for none."""

    enabled: bool = True
    event_log: str | None = "./spark-events"
    event_log_attach_mb: float = Field(default=64.0, ge=0)
    plans: int = Field(default=3, ge=0)
    system_metrics: bool = True
    system_metrics_interval: float = Field(default=10.0, gt=0)
    executor_metrics_interval_ms: int = Field(default=1000, ge=0)


class Profile(_Strict):
    name: str
    source: str = ""
    spark: SparkConfig = SparkConfig()
    mlflow: MlflowConfig = MlflowConfig()
    data: DataConfig
    featurizer: FeaturizerConfig = FeaturizerConfig()
    store: StoreConfig = StoreConfig()
    train: TrainConfig = TrainConfig()
    tune: TuneConfig = TuneConfig()
    registry: RegistryConfig = RegistryConfig()
    eda: EdaConfig = EdaConfig()
    observe: ObserveConfig = ObserveConfig()

    @model_validator(mode="before")
    @classmethod
    def _renamed_keys(cls, data: Any) -> Any:
        """Keys profiles wrote before one word named one thing: read as their new name, with a
        one-line notice; both at once is an error (which one meant it is unknown)."""
        return read_renamed(data, RENAMED_KEYS)


# profile sections renamed, old → new: what profiles written before say is still read
RENAMED_KEYS = {"cache": "store"}
_NOTICED: set[tuple[str, str]] = set()


def read_renamed(data: Any, renamed: dict[str, str]) -> Any:
    """``data`` (a section's raw mapping) with each key of ``renamed`` read as its new name,
    said once per process (a section is parsed again at each use); both at once is an error,
    since which one was meant is unknown. The profile's sections and each classifier kind's
    (``model.kinds.Section.renamed``) use it."""
    if not isinstance(data, dict):
        return data
    for old, new in renamed.items():
        if old in data:
            if new in data:
                raise ValueError(f"key '{old}' is now '{new}': give one of them, not both")
            if (old, new) not in _NOTICED:
                _NOTICED.add((old, new))
                log.warning("profile key '%s' is now '%s' (read as '%s')", old, new, new)
            data = {**{k: v for k, v in data.items() if k != old}, new: data[old]}
    return data


def conf_dir() -> Path:
    """Where profiles are looked up by name: $SPARKLES_CONF_DIR, else ./conf."""
    return Path(os.environ.get(CONF_DIR_ENV, "conf"))


def profile_path(name_or_path: str) -> Path:
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") or candidate.exists():
        return candidate
    return conf_dir() / f"{name_or_path}.yaml"


def _check_paths(profile: Profile) -> None:
    """Local input paths must exist, unless the sample generator is about to create them."""
    if profile.data.sample is not None:
        return
    for key in ("labels_csv", "classes_csv", "images"):
        value = getattr(profile.data, key)
        if not is_uri(value) and not Path(value).exists():
            raise ConfigError(f"{profile.source}: key 'data.{key}': path does not exist: {value}")


def load_profile(name_or_path: str = "local", overrides: list[str] | None = None) -> Profile:
    """Read, override and validate a profile. Raises ConfigError with one clear message."""
    path = profile_path(name_or_path)
    source = str(path)
    if not path.is_file():
        known = sorted(p.stem for p in conf_dir().glob("*.yaml"))
        raise ConfigError(f"profile {name_or_path!r} not found at {source} (known: {known})")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{source}: not valid YAML: {err}") from err
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: a profile is a mapping of sections, got {type(raw).__name__}")
    raw = apply_overrides(raw, overrides or [], source)
    leaked = credentials_in_values(raw)
    if leaked:
        raise ConfigError(
            f"{source}: credentials do not belong in a profile (user information in the URI of "
            f"{', '.join(repr(k) for k in leaked)}): give them to the tool that reads the URI "
            "(MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD or MLFLOW_TRACKING_TOKEN for "
            "MLflow, ~/.netrc for HTTPS, the instance profile for S3)"
        )
    raw = expand_environment(raw, source)
    raw.setdefault("name", path.stem)
    raw["source"] = source
    try:
        profile = Profile.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(describe(err, source)) from None
    _check_paths(profile)
    return profile
