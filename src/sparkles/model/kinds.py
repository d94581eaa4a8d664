"""What a classifier kind is: the interface every kind fills in, and its own profile sections.

A kind (``model.classifiers``) is one class. Beside its methods it declares its sections as
pydantic models: ``Grid`` and ``Hyperopt``, its search spaces at ``tune.<kind>.grid`` and
``tune.<kind>.hyperopt``, and optionally ``Settings``, its fixed values at ``train.<kind>``. The
profile loader knows no kind (``config._KindSections`` keeps those subsections raw); a kind checks
its own, with errors that name the profile and the dotted key as every profile error does.

pyspark and hyperopt are imported where a method needs them: the JVM-free scorer imports this
module and must run where pyspark cannot load.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from sparkles.config import ConfigError, TrainConfig, TuneConfig, read_renamed
from sparkles.errors import describe
from sparkles.tracking import loggable

if TYPE_CHECKING:
    from pyspark.ml import Estimator, Transformer

Params = dict[str, Any]  # searchable parameters by Spark Param name
Numbers = dict[str, Any]  # a fitted classifier as JSON-able numbers (serving/classifier.json)


class Section(BaseModel):
    """Base of a kind's profile sections: unknown keys are errors, values frozen. ``renamed``:
    keys profiles wrote before (old → new), read as the new one with a one-line notice."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    renamed: ClassVar[dict[str, str]] = {}

    @model_validator(mode="before")
    @classmethod
    def _renamed_keys(cls, data: Any) -> Any:
        return read_renamed(data, cls.renamed)


class NoSettings(Section):
    """A kind whose fixed values are ``train``'s own (logistic regression's)."""


class SearchAxes(NamedTuple):
    """What a search plot (``plots.plot_search``) puts on its x axis (log scale?), its colour,
    and beside each point."""

    x: str
    x_log: bool
    colour: str
    label: str | None = None


class Columns(NamedTuple):
    features: str
    label: str
    prediction: str


def _section(model: type[Section], raw: dict[str, Any], *, key: str, source: str) -> Any:
    try:
        return model.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(describe(err, source or "profile", key)) from None


class ClassifierKind:
    """One kind of classifier; subclasses fill in every method and declare their sections."""

    name: ClassVar[str]
    search_axes: ClassVar[SearchAxes]
    Settings: ClassVar[type[Section]] = NoSettings  # train.<name>
    Grid: ClassVar[type[Section]]  # tune.<name>.grid
    Hyperopt: ClassVar[type[Section]]  # tune.<name>.hyperopt

    # --- its sections of the profile -------------------------------------------------------
    def settings(self, train: TrainConfig, source: str = "") -> Any:
        """``train.<name>``, checked."""
        return _section(
            self.Settings, train.kind_section(self.name), key=f"train.{self.name}", source=source
        )

    def grid(self, tune: TuneConfig, source: str = "") -> Any:
        """``tune.<name>.grid``, checked."""
        raw = tune.kind_section(self.name).get("grid", {})
        return _section(self.Grid, raw, key=f"tune.{self.name}.grid", source=source)

    def hyperopt(self, tune: TuneConfig, source: str = "") -> Any:
        """``tune.<name>.hyperopt``, checked."""
        raw = tune.kind_section(self.name).get("hyperopt", {})
        return _section(self.Hyperopt, raw, key=f"tune.{self.name}.hyperopt", source=source)

    def check(self, train: TrainConfig, tune: TuneConfig, source: str = "") -> None:
        """Every section of this kind, so a bad one fails before Spark starts."""
        self.settings(train, source)
        self.grid(tune, source)
        self.hyperopt(tune, source)

    # --- its life ----------------------------------------------------------------------------
    def default_params(self, settings: TrainConfig) -> Params:
        """The profile's own values of the searchable parameters."""
        raise NotImplementedError

    def fixed_params(self, settings: TrainConfig) -> Params:
        """The profile's values of what is not searched, logged by Spark Param name."""
        raise NotImplementedError

    def stages(
        self, settings: TrainConfig, params: Params, sizes: tuple[int, int], columns: Columns
    ) -> list[Estimator]:
        """The unfitted stages after the label indexer; ``sizes``: (features, classes)."""
        raise NotImplementedError

    def grid_points(self, settings: TrainConfig, tune: TuneConfig) -> list[Params]:
        """Every point of the grid, in a fixed order."""
        raise NotImplementedError

    def hyperopt_space(self, settings: TrainConfig, tune: TuneConfig) -> dict[str, Any]:
        raise NotImplementedError

    def from_sample(self, sample: dict[str, Any]) -> Params:
        """A hyperopt sample as parameters: integers where Spark wants them, lists not tuples."""
        raise NotImplementedError

    def parse_logged(self, logged: dict[str, str]) -> Params:
        """``tracking.loggable``'s inverse, for this kind's parameters read back from MLflow
        (strings): each takes the type of its default value."""
        defaults = self.default_params(TrainConfig())
        parsed: Params = {}
        for name, value in logged.items():
            default = defaults.get(name)
            if isinstance(default, list):
                parsed[name] = [int(size) for size in str(value).split("-")]
            elif isinstance(default, int) and not isinstance(default, bool):
                parsed[name] = int(value)
            else:
                parsed[name] = float(value)
        return parsed

    def fitted(self, stages: list[Transformer]) -> Transformer | None:
        """This kind's fitted model among a pipeline's stages, if it is there."""
        raise NotImplementedError

    def numbers(self, stages: list[Transformer]) -> Numbers:
        """The fitted classifier as plain numbers (with ``kind``), for the JVM-free scorer."""
        raise NotImplementedError

    def probabilities(self, numbers: Numbers, features: np.ndarray) -> np.ndarray:
        """(n, classes) probabilities from ``numbers``, as Spark computes them."""
        raise NotImplementedError

    def input_length(self, numbers: Numbers) -> int:
        raise NotImplementedError


def describe_params(params: Params) -> str:
    return " ".join(
        f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in loggable(params).items()
    )
