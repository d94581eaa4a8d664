"""Searches on cached features: nested runs, honest selection, repeatable hyperopt, no CNN."""

from __future__ import annotations

import mlflow
import pytest

from sparkles.cnn.featurizer import DeepImageFeaturizer
from sparkles.commands import run_featurize, run_tune
from sparkles.config import ConfigError, load_profile
from sparkles.features.featurize import featurize
from sparkles.model import classifiers
from sparkles.tasks.catalog import check_profile
from sparkles.train import tune as tune_module
from sparkles.train.fit import train
from sparkles.train.splits import stratified_split
from tests.conftest import searching, write_profile


@pytest.fixture(scope="module")
def cached(spark, tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("tune")
    path = write_profile(
        folder,
        data={"sample": {"images": 60, "seed": 8, "size": [128, 96]}},
        tune={"logistic": {"grid": {"regParam": [0.01, 1.0], "elasticNetParam": [0.0, 1.0]}}},
    )
    profile = load_profile(str(path))
    run_featurize(profile, spark)
    return profile


def _children(parent_id: str) -> list:
    return mlflow.search_runs(
        experiment_names=["sparkles-test"],
        filter_string=f"tags.mlflow.parentRunId = '{parent_id}'",
        output_format="list",
    )


def test_grid_makes_one_child_per_point_and_refits_the_best(spark, cached) -> None:
    outcome = run_tune(searching(cached), spark)
    children = _children(outcome["run_id"])
    assert len(children) == 4
    points = {
        (float(c.data.params["regParam"]), float(c.data.params["elasticNetParam"]))
        for c in children
    }
    assert points == {(0.01, 0.0), (0.01, 1.0), (1.0, 0.0), (1.0, 1.0)}
    assert all(c.info.status == "FINISHED" for c in children)
    top = max(c.data.metrics["val_auc"] for c in children)
    # ties (small validation sets) go to the earliest trial
    best = min(
        (c for c in children if c.data.metrics["val_auc"] == top), key=lambda c: c.info.run_name
    )
    parent = mlflow.get_run(outcome["run_id"])
    assert parent.data.metrics["best_val_auc"] == best.data.metrics["val_auc"]
    assert parent.data.params["regParam"] == best.data.params["regParam"]
    assert parent.data.params["elasticNetParam"] == best.data.params["elasticNetParam"]
    # the parent's test metrics are the refit winner's on the untouched test split
    refit = train(
        cached,
        featurize(cached, spark).table,
        {name: float(best.data.params[name]) for name in ("regParam", "elasticNetParam")},
    )
    for name in ("accuracy", "f1", "auc"):
        assert parent.data.metrics[name] == pytest.approx(refit.metrics[name], abs=1e-9)
    assert parent.data.tags["sparkles.store.reused"] == "true"
    artifacts = {f.path for f in mlflow.MlflowClient().list_artifacts(outcome["run_id"], "tuning")}
    assert artifacts == {"tuning/search.png"}


def _search(profile, train_set, seed: int) -> list[tuple[float, float]]:
    profile = profile.model_copy(update={"tune": profile.tune.model_copy(update={"seed": seed})})
    with mlflow.start_run():
        found = tune_module.search(
            profile, train_set, ["Car", "Tree"], method="hyperopt", max_evals=2
        )
    return [(t.params["regParam"], t.params["elasticNetParam"]) for t in found.trials]


def test_hyperopt_is_bounded_repeatable_and_never_runs_the_cnn(spark, cached, monkeypatch) -> None:
    def no_cnn(self, dataset):
        raise AssertionError("the CNN ran during a search")

    monkeypatch.setattr(DeepImageFeaturizer, "_transform", no_cnn)
    table = featurize(cached, spark).table  # stored: no CNN
    train_set, _ = stratified_split(table.features(), 0.2, cached.train.seed)
    first = _search(cached, train_set, 7)
    again = _search(cached, train_set, 7)
    other = _search(cached, train_set, 8)
    assert len(first) == 2
    assert first == again
    assert first != other
    bounds = classifiers.KINDS["logistic"].hyperopt(cached.tune)
    for reg_param, elastic_net in first + other:
        assert bounds.reg_param_min <= reg_param <= bounds.reg_param_max
        assert bounds.elastic_net_param_min <= elastic_net <= bounds.elastic_net_param_max


def test_interrupted_search_keeps_finished_trials(spark, cached, monkeypatch) -> None:
    real = tune_module.Searcher._validate
    calls = []

    def interrupt_third(self, params):
        calls.append(params["regParam"])
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(self, params)

    monkeypatch.setattr(tune_module.Searcher, "_validate", interrupt_third)
    cross_validated = cached.model_copy(
        update={"tune": cached.tune.model_copy(update={"validation": "cv", "folds": 2})}
    )
    with pytest.raises(KeyboardInterrupt):
        run_tune(searching(cross_validated), spark)
    parent = mlflow.search_runs(
        experiment_names=["sparkles-test"],
        filter_string="attributes.run_name = 'tune-grid'",
        order_by=["attributes.start_time DESC"],
        output_format="list",
    )[0]
    assert parent.info.status == "KILLED"
    children = _children(parent.info.run_id)
    assert sorted(c.info.status for c in children) == ["FINISHED", "FINISHED", "KILLED"]
    for child in children:
        if child.info.status == "FINISHED":  # mean over the 2 folds, one per trial
            assert 0 <= child.data.metrics["val_auc"] <= 1


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "tune.logistic.hyperopt.reg_param_min=2",
            "reg_param_min (2.0) must be below reg_param_max",
        ),
        (
            "tune.logistic.hyperopt.elastic_net_param_max=1.5",
            "tune.logistic.hyperopt.elastic_net_param_max",
        ),
        (
            "tune.logistic.grid.elastic_net_param=[0, 2]",
            "elastic_net_param values must be in [0, 1]",
        ),
        ("tune.max_evals=0", "tune.max_evals"),
        ("tune.metric=logloss", "tune.metric"),
    ],
)
def test_invalid_spaces_are_rejected(tmp_path, override: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        check_profile(load_profile(str(write_profile(tmp_path)), [override]))
    assert message in str(err.value)
