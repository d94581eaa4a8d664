"""The classifier kinds' parameters: grid points, hyperopt samples, MLflow params (unit tier)."""

from __future__ import annotations

import itertools

from sparkles.config import load_profile
from sparkles.model import classifiers
from sparkles.model.kinds import describe_params
from sparkles.tracking import loggable
from tests.conftest import write_profile


def test_a_logistic_grid_is_every_combination(tmp_path) -> None:
    grid = [
        "tune.logistic.grid.reg_param=[0.01, 0.1, 1.0]",
        "tune.logistic.grid.elastic_net_param=[0.0, 0.5]",
    ]
    profile = load_profile(str(write_profile(tmp_path)), grid)
    points = classifiers.grid_points(profile.train, profile.tune)
    expected = itertools.product([0.01, 0.1, 1.0], [0.0, 0.5])
    assert [(p["regParam"], p["elasticNetParam"]) for p in points] == list(expected)


def test_the_grid_keys_profiles_wrote_before_are_read_with_one_notice(tmp_path, caplog) -> None:
    """0.2's profiles spelled the grid's keys as Spark's Params (``regParam``); every profile
    key is snake_case now, and MLflow still logs Spark's names."""
    from tests.conftest import warned_once

    old = ["tune.logistic.grid.regParam=[0.5]", "tune.logistic.grid.elastic_net_param=[0.0]"]
    with warned_once(caplog, "profile key 'regParam' is now 'reg_param'"):
        profile = classifiers.check_profile(load_profile(str(write_profile(tmp_path)), old))
    assert classifiers.grid_points(profile.train, profile.tune) == [
        {"regParam": 0.5, "elasticNetParam": 0.0}
    ]


def test_perceptron_params_survive_mlflow_as_strings() -> None:
    params = {"layers": [64, 32], "stepSize": 0.03, "maxIter": 50}
    logged = loggable(params)
    assert logged == {"layers": "64-32", "stepSize": 0.03, "maxIter": 50}
    assert classifiers.KINDS["mlp"].parse_logged({k: str(v) for k, v in logged.items()}) == params
    assert describe_params(params) == "layers=64-32 stepSize=0.03 maxIter=50"


def test_a_hyperopt_sample_becomes_spark_params() -> None:
    sample = {"layers": (128, 32), "stepSize": 0.1, "maxIter": 41.0}
    perceptron = classifiers.KINDS["mlp"].from_sample(sample)
    assert perceptron == {"layers": [128, 32], "stepSize": 0.1, "maxIter": 41}
    logistic = classifiers.KINDS["logistic"].from_sample({"regParam": 1, "elasticNetParam": 0})
    assert logistic == {"regParam": 1.0, "elasticNetParam": 0.0}
    assert all(isinstance(v, float) for v in logistic.values())


def test_default_params_are_the_profiles(tmp_path) -> None:
    path = str(write_profile(tmp_path))
    profile = load_profile(path, ["train.reg_param=0.2", "train.elastic_net_param=0.3"])
    assert classifiers.default_params(profile.train) == {"regParam": 0.2, "elasticNetParam": 0.3}
