"""Model registry: register the best run as `challenger`, move `champion` only when it is better.

Aliases, not stages (stages are deprecated). Both models are compared on the same held-out
images: when the two runs share a feature-cache fingerprint and split, their logged test metrics
already are that comparison; otherwise both are re-scored on the challenger's test split.
Every decision and both scores are written as tags on the new version.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import mlflow
from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from sparkles import tracking
from sparkles.cache import open_entry
from sparkles.config import Profile
from sparkles.evaluate import headline_metrics
from sparkles.session import build_session
from sparkles.splits import stratified_split

log = logging.getLogger(__name__)
SCORING_TAG = "sparkles.model.scores_images"  # set on runs that logged the full scoring model
MODEL_ARTIFACT = "model"


class PromotionError(RuntimeError):
    """Nothing to promote, or the registry cannot be used as asked."""


@dataclass
class Decision:
    model_name: str
    version: str
    run_id: str
    metric: str
    challenger_score: float
    champion_version: str | None
    champion_score: float | None
    decision: str  # "first-champion", "promoted" or "kept-champion"
    evaluation: str  # how the two were compared

    def tags(self) -> dict[str, str]:
        return {f"sparkles.promotion.{k}": str(v) for k, v in asdict(self).items()}


SCORING_RUNS = f"attributes.status = 'FINISHED' and tags.`{SCORING_TAG}` = 'true'"


def _experiments_with_scoring_runs(metric: str) -> list[str]:
    """Names of the experiments that hold a run ``promote`` could pick: for error messages."""
    names = []
    for experiment in mlflow.search_experiments():
        runs = mlflow.search_runs(
            [experiment.experiment_id], filter_string=SCORING_RUNS, output_format="list"
        )
        if any(metric in run.data.metrics for run in runs):
            names.append(experiment.name)
    return names


def best_run(experiment_name: str, metric: str) -> Run:
    """The FINISHED run with the highest test ``metric`` among runs that logged a scoring model."""
    experiment = mlflow.get_experiment_by_name(experiment_name)
    runs = []
    if experiment is not None:
        runs = mlflow.search_runs(
            [experiment.experiment_id],
            filter_string=SCORING_RUNS,
            order_by=[f"metrics.`{metric}` DESC", "attributes.start_time ASC"],
            max_results=1,
            output_format="list",
        )
    if runs and metric in runs[0].data.metrics:
        return runs[0]
    problem = (
        f"experiment {experiment_name!r} does not exist"
        if experiment is None
        else f"experiment {experiment_name!r} has no FINISHED run with a scoring model and a "
        f"{metric!r} metric"
    )
    elsewhere = [name for name in _experiments_with_scoring_runs(metric) if name != experiment_name]
    if elsewhere:
        listed = ", ".join(repr(name) for name in elsewhere)
        raise PromotionError(
            f"{problem}; runs that can be promoted are in {listed}: pass --experiment "
            f"{elsewhere[0]!r} (mlflow run: -P experiment={elsewhere[0]}), or train with "
            f"--experiment-name {experiment_name} (`mlflow run` without it uses 'Default')"
        )
    raise PromotionError(f"{problem}: run `main` or `tune` first")


def _version_for(client: mlflow.MlflowClient, name: str, run: Run) -> str:
    """The registered version of ``run``'s model, registering it if it is not yet."""
    try:
        for version in client.search_model_versions(f"name = '{name}'"):
            if version.run_id == run.info.run_id:
                return version.version
    except MlflowException:
        pass
    registered = mlflow.register_model(f"runs:/{run.info.run_id}/{MODEL_ARTIFACT}", name)
    return registered.version


def _same_test_split(a: Run, b: Run) -> bool:
    keys = ("test_fraction", "split_seed")
    return a.data.tags.get("sparkles.cache.fingerprint") == b.data.tags.get(
        "sparkles.cache.fingerprint"
    ) and all(a.data.params.get(k) == b.data.params.get(k) for k in keys)


def rescore(
    spark: SparkSession, challenger: Run, model_uris: list[str], metric: str
) -> list[float]:
    """Score each model on the raw images of the challenger's test split."""
    entry = open_entry(spark, challenger.data.tags["sparkles.cache.path"])
    if entry is None:
        raise PromotionError(
            f"the challenger's feature cache entry {challenger.data.tags['sparkles.cache.path']} "
            "is gone or incomplete: run `sparkles featurize` with its profile again"
        )
    params = challenger.data.params
    _, test = stratified_split(
        entry.features(spark), float(params["test_fraction"]), int(params["split_seed"])
    )
    test = test.select("path", "label")
    paths = [row.path for row in test.select("path").collect()]
    images = spark.read.format("binaryFile").load(paths).select("path", "content")
    labelled = images.join(test, "path")
    scores = []
    for uri in model_uris:
        model = mlflow.spark.load_model(uri)
        # with a label column present, the model's own StringIndexer adds label_index
        scored = model.transform(labelled).where(F.col("featurize_error").isNull())
        n_classes = len(model.stages[2].labels)
        scores.append(headline_metrics(scored, n_classes)[metric])
    return scores


def promote(
    profile: Profile,
    experiment: str,
    metric: str,
    model_name: str,
    min_improvement: float,
) -> Decision:
    tracking.configure(profile)
    client = mlflow.MlflowClient()
    challenger_run = best_run(experiment, metric)
    version = _version_for(client, model_name, challenger_run)
    client.set_registered_model_alias(model_name, "challenger", version)
    challenger_score = float(challenger_run.data.metrics[metric])
    try:
        champion = client.get_model_version_by_alias(model_name, "champion")
    except MlflowException:
        champion = None

    if champion is None or champion.version == version:
        decision = Decision(
            model_name, version, challenger_run.info.run_id, metric, challenger_score,
            champion.version if champion else None, challenger_score if champion else None,
            "first-champion" if champion is None else "kept-champion",
            "no champion yet" if champion is None else "the best run already is the champion",
        )  # fmt: skip
    else:
        champion_run = mlflow.get_run(champion.run_id)
        if _same_test_split(challenger_run, champion_run) and metric in champion_run.data.metrics:
            champion_score = float(champion_run.data.metrics[metric])
            how = "logged test metrics (same feature cache fingerprint and split)"
        else:
            uris = [f"models:/{model_name}/{version}", f"models:/{model_name}/{champion.version}"]
            spark = build_session(profile)  # only now: comparing logged metrics needs no Spark
            challenger_score, champion_score = rescore(spark, challenger_run, uris, metric)
            how = "both re-scored on the challenger's test split (different features or split)"
        gain = challenger_score - champion_score
        better = gain > 0 and gain >= min_improvement
        decision = Decision(
            model_name, version, challenger_run.info.run_id, metric, challenger_score,
            champion.version, champion_score, "promoted" if better else "kept-champion", how,
        )  # fmt: skip
    if decision.decision in ("first-champion", "promoted"):
        client.set_registered_model_alias(model_name, "champion", version)
    for key, value in decision.tags().items():
        client.set_model_version_tag(model_name, version, key, value)
    log.info(
        "%s v%s (%s %.4f) vs champion v%s (%s): %s",
        model_name, version, metric, decision.challenger_score, decision.champion_version,
        decision.champion_score, decision.decision,
    )  # fmt: skip
    return decision
