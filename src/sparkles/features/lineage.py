"""Feature-table lineage in MLflow: which featurize run committed which training table, under
which features key, and how ``train``/``tune`` find it again without reading an image.

A featurize (or main) run logs its counts and tags (``log_featurize``); ``committed_features``
finds the newest FINISHED run under the profile's features key (or the one ``--features``
names) and opens its table; a train/tune run records where its features came from
(``log_features_source``).
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from pyspark.sql import SparkSession

from sparkles import storage, tracking
from sparkles.cnn.backbones import sha256_file
from sparkles.cnn.imaging import PREPROCESS_VERSION
from sparkles.cnn.weights import ResolvedWeights, WeightsUnavailableError
from sparkles.config import FeaturizerConfig, Profile
from sparkles.errors import UserError
from sparkles.features.commit import fingerprint
from sparkles.features.featurize import FeaturizeResult, choose_weights
from sparkles.features.tables import open_training_table
from sparkles.names import (
    CALIBRATION_TAG,
    COMMAND_TAG,
    ERROR,
    FEATURE_SOURCE_PREFIXES,
    FEATURES_KEY_TAG,
    FEATURES_RUN_TAG,
    FEATURIZE_ARTIFACTS,
    FEATURIZER_TAG,
    IMAGE_ID,
    LABEL,
    PATH,
    PRECISION_REQUESTED_TAG,
    PRECISION_TAG,
    QUARANTINE_REASON,
    RUNTIME_TAG,
    STORE_FINGERPRINT_TAG,
    STORE_PATH_TAG,
    STORE_REUSED_TAG,
    STORE_TABLE_TAG,
    WEIGHTS_IDENTITY_TAG,
    WEIGHTS_PATH_TAG,
    WEIGHTS_USED_TAG,
)

log = logging.getLogger(__name__)
DATA_PARAMS = ["classes", "multi_label_policy"]  # a featurize run's params beside its featurizer's


class TableMissingError(UserError, RuntimeError):
    """``train``/``tune`` never run the CNN: every image needs features in the store, and a
    training table must have been committed by ``featurize`` or ``main``."""


def log_featurize(result: FeaturizeResult, spark: SparkSession, profile: Profile) -> None:
    """Counts, timings, weights and the quarantine list into the active MLflow run, and the tags
    by which train/tune find its training table."""
    settings = profile.featurizer
    mlflow.log_params(featurize_params(profile, result.precision, result.calibration))
    mlflow.set_tags(
        {
            FEATURES_KEY_TAG: features_key(profile),
            FEATURIZER_TAG: settings.model_dump_json(),
            WEIGHTS_PATH_TAG: result.weights.local_path or "",
            STORE_FINGERPRINT_TAG: result.fingerprint,
            STORE_PATH_TAG: result.table.store.root,
            STORE_TABLE_TAG: result.table.entry.path,
            STORE_REUSED_TAG: str(result.reused).lower(),
            WEIGHTS_USED_TAG: result.weights.kind,
            WEIGHTS_IDENTITY_TAG: result.weights.identity,
            RUNTIME_TAG: settings.runtime,
            PRECISION_TAG: result.precision,
            PRECISION_REQUESTED_TAG: settings.precision,
            **({CALIBRATION_TAG: result.calibration} if result.calibration else {}),
        }
    )
    metrics = {f"count_{k}": float(v) for k, v in result.counts.items()}
    if not result.reused:
        metrics["featurize_seconds"] = result.seconds
        metrics["images_per_second"] = result.images_per_second
    mlflow.log_metrics(metrics)
    quarantine = result.table.quarantine().select(PATH, IMAGE_ID, LABEL, ERROR)
    with tempfile.TemporaryDirectory() as folder:
        quarantine.toPandas().rename(columns={ERROR: QUARANTINE_REASON}).to_csv(
            Path(folder, "quarantine.csv"), index=False
        )
        Path(folder, "featurize_counts.json").write_text(json.dumps(result.counts, indent=2))
        mlflow.log_artifacts(folder, artifact_path=FEATURIZE_ARTIFACTS)


def featurize_params(
    profile: Profile, precision: str, calibration: str | None = None
) -> dict[str, Any]:
    """A featurize run's params: the profile's featurizer settings that reach the CNN or its
    weights (with the precision that ran; int8's calibration set), and the data's classes and
    multi-label policy."""
    settings = profile.featurizer
    values = {**settings.model_dump(), "precision": precision}
    logged = {
        field: values[field]
        for field, setting in type(settings).settings().items()
        if setting.logged and setting.applies(values)
    }
    if calibration:
        logged["calibration_set"] = calibration
    data = profile.data
    return {
        **logged,
        "classes": ",".join(data.classes),
        "multi_label_policy": data.multi_label_policy,
    }


def _is_featurize_param(name: str) -> bool:
    setting = FeaturizerConfig.settings().get(name)
    return name in DATA_PARAMS or name == "calibration_set" or bool(setting and setting.logged)


def features_key(profile: Profile) -> str:
    """What a training table answers: these labels, images and classes under this policy,
    through this featurizer. train/tune use the newest table committed under the same key."""
    data = profile.data
    settings = profile.featurizer
    values = settings.model_dump()
    shaping = {f for f, s in type(settings).settings().items() if s.features and s.applies(values)}
    featurizer = settings.model_dump(include=shaping)
    parts = {
        "labels_csv": storage.qualify(data.labels_csv),
        "classes_csv": storage.qualify(data.classes_csv),
        "images": storage.qualify(data.images),
        "image_glob": data.image_glob,
        "classes": list(data.classes),
        "multi_label_policy": data.multi_label_policy,
        "featurizer": featurizer,
        "preprocess": PREPROCESS_VERSION,
    }
    return fingerprint(parts, [])


def _features_run(profile: Profile, experiment_id: str, run_id: str | None) -> Run:
    """The run named by ``--features`` (a train/tune run stands for the table it used), else the
    newest FINISHED featurize/main run of this experiment under the profile's features key."""
    if run_id:
        try:
            run = mlflow.get_run(run_id)
        except MlflowException as err:
            raise TableMissingError(f"--features {run_id}: no such run ({err.message})") from err
        source = run.data.tags.get(FEATURES_RUN_TAG)
        if source and FEATURES_KEY_TAG not in run.data.tags:
            return _features_run(profile, experiment_id, source)
        if tracking.tag(run, STORE_TABLE_TAG) is None:
            raise TableMissingError(
                f"--features {run_id}: that run committed no training table (give the id of a "
                "`featurize` or `main` run)"
            )
        return run
    key = features_key(profile)
    found = mlflow.search_runs(
        [experiment_id],
        filter_string=f"attributes.status = 'FINISHED' and tags.`{FEATURES_KEY_TAG}` = '{key}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
        output_format="list",
    )
    if not found:
        experiment = mlflow.get_experiment(experiment_id).name
        raise TableMissingError(
            f"no featurize run in experiment {experiment!r} has features for the images, labels, "
            f"classes and featurizer settings of {profile.source or profile.name}: run `sparkles "
            "featurize` (mlflow run: -e featurize, or the `main` entry point) with this profile "
            "first, or pick a table with --features RUN_ID"
        )
    return found[0]


def _weights_of(run: Run, profile: Profile, spark: SparkSession) -> ResolvedWeights:
    """The weights the table's features came from, without a download where it can be helped:
    random weights are a seed; a file is taken where that run left it if its hash still
    matches, and resolved from the settings again only if not."""
    tags = run.data.tags
    kind, identity = tags[WEIGHTS_USED_TAG], tags[WEIGHTS_IDENTITY_TAG]
    requested = run.data.params.get("weights", profile.featurizer.weights)
    if kind == "random":
        return ResolvedWeights(requested, kind, None, identity)
    path = tags.get(WEIGHTS_PATH_TAG)
    if path and Path(path).is_file() and f"sha256:{sha256_file(path)}" == identity:
        return ResolvedWeights(requested, kind, path, identity)
    resolved = choose_weights(profile, spark)
    if resolved.identity != identity:
        raise WeightsUnavailableError(
            f"the features of run {run.info.run_id} were computed with weights {identity}, but "
            f"featurizer.weights={profile.featurizer.weights!r} resolves to {resolved.identity} "
            "here: the model logged now could not score images as its features were made"
        )
    return resolved


def committed_features(
    profile: Profile, spark: SparkSession, *, experiment_id: str, run_id: str | None = None
) -> tuple[Profile, FeaturizeResult, Run]:
    """A committed training table, as a featurize run left it: no image is read, no CNN built.

    Returns the profile with that run's featurizer settings (what the logged model must run),
    the table as a FeaturizeResult, and the featurize run.
    """
    run = _features_run(profile, experiment_id, run_id)
    tags = run.data.tags
    table_path = tracking.tag(run, STORE_TABLE_TAG)
    table = open_training_table(spark, table_path)
    if table is None:
        raise TableMissingError(
            f"the training table {table_path} of run {run.info.run_id} is gone "
            "or incomplete: run `sparkles featurize` with this profile again"
        )
    if FEATURIZER_TAG in tags:
        settings = FeaturizerConfig.model_validate_json(tags[FEATURIZER_TAG])
        profile = profile.model_copy(update={"featurizer": settings})
    counts = {
        key.removeprefix("count_"): int(value)
        for key, value in run.data.metrics.items()
        if key.startswith("count_")
    }
    result = FeaturizeResult(
        fingerprint=tracking.tag(run, STORE_FINGERPRINT_TAG),
        table=table,
        reused=True,
        weights=_weights_of(run, profile, spark),
        precision=tags.get(PRECISION_TAG, profile.featurizer.precision),
        counts=counts,
        runtime=tags.get(RUNTIME_TAG, profile.featurizer.runtime),
        calibration=tags.get(CALIBRATION_TAG),
    )
    log.info(
        "fitting on the training table of %s run %s (%s rows, %s); no image is read",
        tags.get(COMMAND_TAG, "featurize"),
        run.info.run_id,
        counts.get("featurized", "?"),
        table.entry.path,
    )
    return profile, result, run


def log_features_source(result: FeaturizeResult, run: Run) -> None:
    """Into a train/tune run: which table it fitted on, with the params, tags and counts of the
    run that committed it (so runs compare, and promote groups them, as before)."""
    tags = {
        tracking.current_tag(k): v
        for k, v in run.data.tags.items()
        if k.startswith(FEATURE_SOURCE_PREFIXES)
    }
    mlflow.set_tags({**tags, STORE_REUSED_TAG: "true", FEATURES_RUN_TAG: run.info.run_id})
    mlflow.log_params({k: v for k, v in run.data.params.items() if _is_featurize_param(k)})
    mlflow.log_metrics({f"count_{k}": float(v) for k, v in result.counts.items()})
