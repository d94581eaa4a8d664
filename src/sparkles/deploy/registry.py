"""Model registry: register the best run as `challenger`, move `champion` only when it is better.

Aliases, not stages (stages are deprecated). The challenger is chosen on **validation** metrics
(``val_<metric>``), never on the test split: picking the best of many runs by their test score
would undo the honest search. Candidates share the feature-cache fingerprint and classes of the
newest scoring run, and runs on random weights are left out unless the profile allows them.
The champion gate then compares both models on images that **neither** trained on: the shared
test split when the runs share fingerprint and split, else the images in both test splits.
Every decision, both scores and which images they came from are tags on the new version.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import asdict, dataclass

import mlflow
from mlflow.entities import Run
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from pyspark.ml import PipelineModel
from pyspark.sql import DataFrame, SparkSession

from sparkles import tracking
from sparkles.cnn.featurizer import DeepImageFeaturizer
from sparkles.config import Profile
from sparkles.data.images import read_contents
from sparkles.errors import UserError
from sparkles.features.commit import open_entry
from sparkles.features.tables import open_training_table
from sparkles.names import (
    CLASSES_TAG,
    IMAGE_ID,
    LABEL,
    MODEL_ARTIFACT,
    PATH,
    PROMOTION_TAG_PREFIX,
    SCORING_TAG,
    STORE_FINGERPRINT_TAG,
    STORE_PATH_TAG,
    STORE_TABLE_TAG,
    WEIGHTS_USED_TAG,
)
from sparkles.session import build_session
from sparkles.tasks.catalog import load_logged
from sparkles.train.splits import SPLIT_PARAMS, train_and_test

log = logging.getLogger(__name__)


class PromotionError(UserError, RuntimeError):
    """Nothing to promote, or the registry cannot be used as asked."""


@dataclass(kw_only=True)
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
    images: str  # which images: none of them was trained on by either model
    selected_by: str = ""  # the validation metric that chose the challenger, and its value

    def tags(self) -> dict[str, str]:
        return {f"{PROMOTION_TAG_PREFIX}{k}": str(v) for k, v in asdict(self).items()}


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


def _group(run: Run) -> tuple[str | None, str | None]:
    """Runs are comparable when they learned from the same features of the same classes."""
    return tracking.tag(run, STORE_FINGERPRINT_TAG), run.data.tags.get(CLASSES_TAG)


def best_run(experiment_name: str, metric: str, allow_random_weights: bool = False) -> Run:
    """The FINISHED scoring run with the highest ``val_<metric>`` among comparable runs.

    Comparable: the fingerprint and classes of the newest candidate. Ties go to the earlier run.
    """
    experiment = mlflow.get_experiment_by_name(experiment_name)
    runs = []
    if experiment is not None:
        runs = mlflow.search_runs(
            [experiment.experiment_id],
            filter_string=SCORING_RUNS,
            order_by=["attributes.start_time DESC"],
            output_format="list",
        )
    selector = f"val_{metric}"
    candidates = [run for run in runs if selector in run.data.metrics]
    if runs and not candidates:
        raise PromotionError(
            f"experiment {experiment_name!r} has scoring runs but none with {selector!r} (runs "
            "from before promotion selected on validation metrics): run `main` or `tune` again"
        )
    if not allow_random_weights:
        random = [r for r in candidates if r.data.tags.get(WEIGHTS_USED_TAG) == "random"]
        candidates = [r for r in candidates if r not in random]
        if random and not candidates:
            raise PromotionError(
                f"every candidate run in {experiment_name!r} used random weights (the offline "
                "fallback): its features mean nothing outside this machine. Provide the real "
                "weights, or set registry.allow_random_weights: true to promote them anyway"
            )
    if candidates:
        group = _group(candidates[0])
        pool = [run for run in candidates if _group(run) == group]
        return max(pool, key=lambda run: (run.data.metrics[selector], -run.info.start_time))
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
    """The registered version of ``run``'s ``artifact``, registering it if it is not yet."""
    try:
        for version in client.search_model_versions(f"name = '{name}'"):
            if version.run_id == run.info.run_id:
                return version.version
    except MlflowException:
        pass
    registered = mlflow.register_model(f"runs:/{run.info.run_id}/{MODEL_ARTIFACT}", name)
    return registered.version


def held_out_images(spark: SparkSession, run: Run) -> DataFrame:
    """(path, image_id, label) of the images ``run`` tested on (and so never trained on)."""
    table_path = tracking.tag(run, STORE_TABLE_TAG)
    path = table_path or tracking.tag(run, STORE_PATH_TAG)
    if table_path is not None:
        table = open_training_table(spark, path)
        features = None if table is None else table.features()
    else:  # logged before the feature store: a whole-run cache entry
        entry = open_entry(spark, path)
        features = None if entry is None else entry.features(spark)
    if features is None:
        raise PromotionError(
            f"the training table {path} of run {run.info.run_id} is gone or incomplete, so "
            "its test split is unknown: run `sparkles featurize` with its profile again"
        )
    _, test = train_and_test(features, run.data.params)
    return test.select(PATH, IMAGE_ID, LABEL)


def _images_neither_trained_on(spark: SparkSession, a: Run, b: Run) -> DataFrame:
    """Images in both runs' test splits (by image id: the caches may differ)."""
    theirs = held_out_images(spark, b).select(IMAGE_ID)
    both = held_out_images(spark, a).join(theirs.distinct(), IMAGE_ID)
    return both.dropDuplicates([IMAGE_ID, LABEL])  # keep-all: one row per (image, label)


def _same_test_split(a: Run, b: Run) -> bool:
    keys = SPLIT_PARAMS
    return tracking.tag(a, STORE_FINGERPRINT_TAG) == tracking.tag(b, STORE_FINGERPRINT_TAG) and all(
        a.data.params.get(k) == b.data.params.get(k) for k in keys
    )


def _stored_features(spark: SparkSession, a: Run, b: Run) -> DataFrame | None:
    """Rows of ``a``'s training table with their stored features, when both runs' features come
    from one feature store (the same featurizer settings): then re-scoring reads no image."""
    store = tracking.tag(a, STORE_PATH_TAG)
    if store is None or store != tracking.tag(b, STORE_PATH_TAG):
        return None
    table = open_training_table(spark, tracking.tag(a, STORE_TABLE_TAG) or "")
    return None if table is None else table.read()


def _without_featurizer(model: PipelineModel) -> PipelineModel:
    """The scoring model's stages after the CNN: they score stored features as they would the
    featurizer's output (quarantined rows included)."""
    return PipelineModel([s for s in model.stages if not isinstance(s, DeepImageFeaturizer)])


def rescore(
    spark: SparkSession,
    test: DataFrame,
    model_uris: list[str],
    metric: str,
    features: DataFrame | None = None,
) -> list[float]:
    """Score each model on ``test`` (path, image_id, label): on ``features`` (stored rows of
    those images) where given, else on the raw images, each the way its task scores (a
    multi-label model each image once, against its set of labels)."""
    if features is not None:
        inputs = features.join(test.select(IMAGE_ID, LABEL).distinct(), [IMAGE_ID, LABEL])
    else:
        test = test.select(PATH, IMAGE_ID, LABEL)
        paths = [row.path for row in test.select(PATH).distinct().collect()]
        images = read_contents(spark, paths).select(PATH, "content")
        inputs = images.join(test, PATH)
    scores = []
    for uri in model_uris:
        model, task = load_logged(uri)
        if features is not None:
            model = _without_featurizer(model)
        scores.append(task.rescore(model, inputs, metric))
    return scores


@dataclass(kw_only=True)
class Comparison:
    """Both models' scores on images neither trained on, how they were had, and which images."""

    challenger_score: float
    champion_score: float
    evaluation: str
    images: str


def compare(
    profile: Profile, challenger: Run, champion: Run, *, uris: tuple[str, str]
) -> Comparison:
    """The challenger against the champion on images neither trained on: their logged test
    metrics when both share the feature table's fingerprint and split; else both re-scored on
    the images in both test splits (starting Spark only then)."""
    metric = profile.registry.metric
    if _same_test_split(challenger, champion) and metric in champion.data.metrics:
        return Comparison(
            challenger_score=float(challenger.data.metrics[metric]),
            champion_score=float(champion.data.metrics[metric]),
            evaluation="logged test metrics (same feature cache fingerprint and split)",
            images=f"the shared test split, {int(challenger.data.metrics['count_test'])} images",
        )
    spark = build_session(profile)
    common = _images_neither_trained_on(spark, challenger, champion)
    ids = sorted(row.image_id for row in common.select(IMAGE_ID).collect())
    if not ids:
        raise PromotionError(
            "no image is in both the challenger's and the champion's test split, so no "
            "image is unseen by both: compare them on new labelled images instead"
        )
    stored = _stored_features(spark, challenger, champion)
    challenger_score, champion_score = rescore(spark, common, list(uris), metric, stored)
    digest = hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]
    return Comparison(
        challenger_score=challenger_score,
        champion_score=champion_score,
        evaluation="both re-scored on the images in both test splits (different features or "
        "split)" + ("; on their stored features" if stored is not None else ""),
        images=f"{len(ids)} images in both test splits (sha256 of their ids: {digest})",
    )


def _champion(client: mlflow.MlflowClient, model_name: str) -> ModelVersion | None:
    try:
        return client.get_model_version_by_alias(model_name, "champion")
    except MlflowException:
        return None


def decide(
    profile: Profile, challenger: Run, *, version: str, champion: ModelVersion | None
) -> Decision:
    """First champion, kept, or promoted: by the gate on images neither model trained on."""
    settings = profile.registry
    score = float(challenger.data.metrics[settings.metric])
    selector = f"val_{settings.metric}"
    chosen = {
        "model_name": settings.model_name,
        "version": version,
        "metric": settings.metric,
        "run_id": challenger.info.run_id,
        "selected_by": f"{selector}={challenger.data.metrics[selector]:.6g}",
    }
    if champion is None or champion.version == version:
        tested = int(challenger.data.metrics["count_test"])
        first = champion is None
        return Decision(
            **chosen,
            challenger_score=score,
            champion_version=None if first else champion.version,
            champion_score=None if first else score,
            decision="first-champion" if first else "kept-champion",
            evaluation="no champion yet" if first else "the best run already is the champion",
            images=f"the challenger's test split, {tested} images",
        )
    uris = (
        f"models:/{settings.model_name}/{version}",
        f"models:/{settings.model_name}/{champion.version}",
    )
    compared = compare(profile, challenger, mlflow.get_run(champion.run_id), uris=uris)
    gain = compared.challenger_score - compared.champion_score
    better = gain > 0 and gain >= settings.min_improvement
    return Decision(
        **chosen,
        challenger_score=compared.challenger_score,
        champion_version=champion.version,
        champion_score=compared.champion_score,
        decision="promoted" if better else "kept-champion",
        evaluation=compared.evaluation,
        images=compared.images,
    )


def promote(profile: Profile, experiment: str | None = None) -> Decision:
    """Register the best run of ``experiment`` (default: the profile's) as ``challenger``, and
    move ``champion`` to it if it beats the champion (the profile's ``registry`` settings)."""
    settings = profile.registry
    tracking.configure(profile)
    client = mlflow.MlflowClient()
    challenger = best_run(
        experiment or profile.mlflow.experiment, settings.metric, settings.allow_random_weights
    )
    version = _version_for(client, settings.model_name, challenger)
    client.set_registered_model_alias(settings.model_name, "challenger", version)
    decision = decide(
        profile, challenger, version=version, champion=_champion(client, settings.model_name)
    )
    if decision.decision in ("first-champion", "promoted"):
        client.set_registered_model_alias(settings.model_name, "champion", version)
    for key, value in decision.tags().items():
        client.set_model_version_tag(settings.model_name, version, key, value)
    log.info(
        "%s v%s (%s %.4f) vs champion v%s (%s): %s",
        settings.model_name,
        version,
        settings.metric,
        decision.challenger_score,
        decision.champion_version,
        decision.champion_score,
        decision.decision,
    )
    return decision
