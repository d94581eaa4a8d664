"""``sparkles <command>``: what the MLproject entry points call, and nothing else."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from sparkles import tracking
from sparkles.config import ConfigError, Profile, load_profile
from sparkles.errors import UserError, file_system_cause
from sparkles.overrides import redact, split_overrides
from sparkles.tasks.catalog import check_profile

log = logging.getLogger("sparkles")


# Command options that are profile values: passed as overrides, so they are validated with the
# profile (one clear message naming the key) before Spark starts. Empty means "the profile's".
TRAIN_OPTIONS = {
    "reg_param": "train.reg_param",
    "elastic_net_param": "train.elastic_net_param",
    "max_iter": "train.max_iter",
}
METRIC_HELP = "auc, accuracy or f1; multi-label: auc, micro_f1, macro_f1 or subset_accuracy"
TUNE_OPTIONS = {"method": "tune.method", "max_evals": "tune.max_evals", "metric": "tune.metric"}
# Commands that read a feature table and fit: no live UI to serve (the history server still
# has their event logs where the profile keeps them), unless the profile asks for one.
SHORT_COMMAND = {"spark.ui.enabled": "false"}
URL_OPTIONS = ("labels", "classes", "images")  # openimages download: where each comes from
PROMOTE_OPTIONS = {
    "metric": "registry.metric",
    "model_name": "registry.model_name",
    "min_improvement": "registry.min_improvement",
}


def _profile(
    args: argparse.Namespace, options: dict[str, str] | None = None, tracked: bool = True
) -> Profile:
    """Each --set may hold several KEY=VALUE settings (MLproject passes one string). The
    profile's tracking server is asked first: down, it is one line now, not minutes of retries
    after Spark started."""
    overrides = [item for text in args.overrides for item in split_overrides(text)]
    for attribute, key in (options or {}).items():
        value = getattr(args, attribute)
        if value not in (None, ""):
            overrides.append(f"{key}={value}")
    profile = check_profile(load_profile(args.profile, overrides))
    if tracked:
        tracking.check_server(tracking.tracking_uri(profile))
    return profile


def _truthy(text: str) -> bool:
    return str(text).strip().lower() in ("1", "true", "yes", "on")


def cmd_sample_data(args: argparse.Namespace) -> int:
    from sparkles.data.sample import generate_sample

    profile = _profile(args, tracked=False)  # writes files only
    data, sample = profile.data, profile.data.sample
    count = args.count or (sample.images if sample else 240)
    seed = args.seed if args.seed is not None else (sample.seed if sample else 7)
    classes = tuple(args.classes or (sample.classes if sample else ["Car", "Tree"]))
    files = (Path(data.labels_csv), Path(data.classes_csv), Path(data.images))
    paths = generate_sample(*files, count=count, seed=seed, classes=classes)
    print(f"wrote {count} synthetic images to {paths.images}, labels to {paths.labels_csv}")
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    from sparkles.data.sample import ensure_sample

    profile = _profile(args)
    ensure_sample(profile)
    experiment_id = tracking.configure(profile)
    where = redact(tracking.tracking_uri(profile))
    print(
        f"tracking {where}, experiment {profile.mlflow.experiment!r} "
        f"(id {experiment_id}); data at {profile.data.images}"
    )
    print(f"compare runs: {tracking.how_to_compare(where, experiment_id)}")
    return 0


def cmd_featurize(args: argparse.Namespace) -> int:
    from sparkles.commands import run_featurize
    from sparkles.features.featurize import summary
    from sparkles.session import build_session

    profile = _profile(args)
    spark = build_session(profile)
    result = run_featurize(
        profile, spark, refresh=_truthy(args.refresh), rehash=_truthy(args.rehash)
    )
    print(json.dumps(summary(result), indent=2))
    return 0


def cmd_compact(args: argparse.Namespace) -> int:
    from sparkles.features.store import compact_all
    from sparkles.session import build_session

    profile = _profile(args, tracked=False)  # stores only: no MLflow
    report = compact_all(
        build_session(profile), profile.store.dir, lease_seconds=profile.store.lease_seconds
    )
    print(json.dumps(report, indent=2))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from sparkles.commands import run_train
    from sparkles.session import build_session

    profile = _profile(args, TRAIN_OPTIONS)
    spark = build_session(profile, defaults=SHORT_COMMAND)
    print(json.dumps(run_train(profile, spark, args.features), indent=2))
    return 0


def cmd_main(args: argparse.Namespace) -> int:
    from sparkles.commands import run_main
    from sparkles.session import build_session

    profile = _profile(args, TRAIN_OPTIONS)
    spark = build_session(profile)
    outcome = run_main(profile, spark, refresh=_truthy(args.refresh), rehash=_truthy(args.rehash))
    print(json.dumps(outcome, indent=2))
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from sparkles.commands import run_tune
    from sparkles.session import build_session

    profile = _profile(args, TUNE_OPTIONS)
    # a search runs no TensorFlow: give each core its own task
    task_cpus = {"spark.task.cpus": str(profile.tune.task_cpus)}
    outcome = run_tune(profile, build_session(profile, task_cpus, SHORT_COMMAND), args.features)
    print(json.dumps(outcome, indent=2))
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from sparkles.deploy.registry import promote

    decision = promote(_profile(args, PROMOTE_OPTIONS), args.experiment or None)
    print(json.dumps(asdict(decision), indent=2))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from sparkles.deploy.predict import predict
    from sparkles.session import build_session

    profile = _profile(args)
    tracking.configure(profile)
    model_uri = args.model_uri or f"models:/{profile.registry.model_name}@champion"
    result = predict(
        build_session(profile),
        model_uri,
        images=args.images,
        output=args.output,
        csv=_truthy(args.csv),
        overwrite=_truthy(args.overwrite),
    )
    print(json.dumps(asdict(result), indent=2))
    return 0


def cmd_eda(args: argparse.Namespace) -> int:
    from sparkles.commands import run_eda
    from sparkles.data.sample import ensure_sample
    from sparkles.session import build_session

    profile = _profile(args)
    ensure_sample(profile)
    result = run_eda(profile, build_session(profile), args.output or None)
    print(json.dumps(result.summary, indent=2))
    return 0


def cmd_openimages_download(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from sparkles.data.download import download_subset

    classes = [name.strip() for arg in args.classes for name in arg.split(",") if name.strip()]
    urls = {f"{what}_url": getattr(args, f"{what}_url") for what in URL_OPTIONS}
    report = download_subset(
        classes, Path(args.dest), limit=args.limit, workers=args.workers, **urls
    )
    print(json.dumps({k: v for k, v in asdict(report).items() if k != "failed"}, indent=2))
    if report.failed:
        for image_id, reason in sorted(report.failed.items()):
            print(f"failed {image_id}: {reason}", file=sys.stderr)
        print(
            f"error: {len(report.failed)} of {report.requested} images failed; run the same "
            "command again to retry them (finished files are kept, partial ones resumed)",
            file=sys.stderr,
        )
        return 1
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    from sparkles import history

    if args.folder:
        return history.serve(args.folder, args.port, None)
    experiment_id = tracking.configure(_profile(args))
    return history.serve_run(args.run_id or history.newest_run(experiment_id), args.port)


def _add_openimages(commands: argparse._SubParsersAction) -> None:
    from sparkles.data import download

    openimages = commands.add_parser("openimages", help="fetch an Open Images subset")
    actions = openimages.add_subparsers(dest="action", required=True)
    fetch = actions.add_parser(
        "download", help="label CSVs + validation images of the given classes, resumable"
    )
    help = "display names, space- or comma-separated (Car Tree, or Car,Tree)"
    fetch.add_argument("--classes", nargs="+", default=["Car", "Tree"], help=help)
    fetch.add_argument("--limit", type=int, default=None, help="at most N images per class")
    fetch.add_argument("--dest", default="./data/openimages", help="output folder")
    fetch.add_argument("--workers", type=int, default=8, help="parallel downloads")
    # a mirror (or a test server) can be named in the environment: `mlflow run -e download` too
    defaults = (download.LABELS_URL, download.CLASSES_URL, download.IMAGES_URL)
    for what, default in zip(URL_OPTIONS, defaults, strict=True):
        variable = f"SPARKLES_OPENIMAGES_{what.upper()}_URL"
        image = "template with {image_id}" if what == "images" else None
        fetch.add_argument(f"--{what}-url", default=os.environ.get(variable, default), help=image)
    fetch.set_defaults(func=cmd_openimages_download)


def _add_features_option(parser: argparse.ArgumentParser) -> None:
    help = (
        "the featurize (or main) run whose training table to fit on (default: the newest one "
        "matching the profile's data and featurizer settings)"
    )
    parser.add_argument("--features", type=lambda text: text or None, metavar="RUN_ID", help=help)


def _add_train_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reg-param", default=None, help="regularization strength (>= 0)")
    parser.add_argument("--elastic-net-param", default=None, help="0 = L2 ... 1 = L1")
    parser.add_argument("--max-iter", default=None, help="LogisticRegression iterations")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sparkles", description=__doc__)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--profile", default="local", help="profile name in conf/ or a YAML path")
    help = "override one profile value, e.g. --set featurizer.pooling=max (repeatable)"
    common.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=help
    )
    commands = parser.add_subparsers(dest="command", required=True)

    sample = commands.add_parser("sample-data", parents=[common], help="write the synthetic sample")
    sample.add_argument("--count", type=int, default=None, help="images (default: the profile's)")
    sample.add_argument("--seed", type=int, default=None)
    help = "classes to draw: Car Tree, optionally Bus (default: the profile's sample.classes)"
    sample.add_argument("--classes", nargs="+", metavar="CLASS", help=help)
    sample.set_defaults(func=cmd_sample_data)

    init = commands.add_parser(
        "init", parents=[common], help="create the experiment (and the sample data, if used)"
    )
    init.set_defaults(func=cmd_init)

    featurize = commands.add_parser(
        "featurize",
        parents=[common],
        help="CNN features for the profile's images; only those the feature store lacks",
    )
    _add_featurize_options(featurize)
    featurize.set_defaults(func=cmd_featurize)

    compact = commands.add_parser(
        "compact",
        parents=[common],
        help="merge each feature store's appended segments under the profile's store.dir",
    )
    compact.set_defaults(func=cmd_compact)

    train = commands.add_parser(
        "train", parents=[common], help="fit and evaluate the classifier on cached features"
    )
    _add_train_options(train)
    _add_features_option(train)
    train.set_defaults(func=cmd_train)

    tune = commands.add_parser(
        "tune", parents=[common], help="grid or hyperopt search on cached features (nested runs)"
    )
    tune.add_argument("--method", default=None, help="grid or hyperopt (default: the profile's)")
    tune.add_argument("--max-evals", default=None, help="hyperopt trials")
    tune.add_argument("--metric", default=None, help=METRIC_HELP)
    _add_features_option(tune)
    tune.set_defaults(func=cmd_tune)

    promote = commands.add_parser(
        "promote", parents=[common], help="register the best run; move `champion` if it is better"
    )
    promote.add_argument("--experiment", default=None, help="default: the profile's")
    promote.add_argument("--metric", default=None, help=METRIC_HELP)
    promote.add_argument("--model-name", default=None, help="registered model name")
    promote.add_argument("--min-improvement", default=None, help="required gain over champion")
    promote.set_defaults(func=cmd_promote)

    predict = commands.add_parser(
        "predict", parents=[common], help="score images with a registered model, to Parquet"
    )
    predict.add_argument("--images", required=True, help="directory or glob, local or s3://")
    predict.add_argument("--output", required=True, help="output directory (local or s3://)")
    predict.add_argument("--model-uri", default=None, help="default: models:/<name>@champion")
    _flag(predict, "--csv", "CSV as well")
    _flag(predict, "--overwrite", "replace predictions already in --output (default: refuse)")
    predict.set_defaults(func=cmd_predict)

    eda = commands.add_parser(
        "eda", parents=[common], help="label statistics and co-occurrence plots, logged to MLflow"
    )
    eda.add_argument("--output", default=None, help="folder for plots and summary")
    eda.set_defaults(func=cmd_eda)

    main_job = commands.add_parser(
        "main", parents=[common], help="featurize (cache-aware) then train, in one MLflow run"
    )
    _add_train_options(main_job)
    _add_featurize_options(main_job)
    main_job.set_defaults(func=cmd_main)
    history = commands.add_parser("history", parents=[common], help="Spark's History Server")
    history.add_argument("run_id", nargs="?", help="a run id (default: the newest run's)")
    history.add_argument("--port", type=int, default=18080, help="its UI and REST API")
    history.add_argument("--folder", help="every application in a folder of event logs")
    history.set_defaults(func=cmd_history)
    _add_openimages(commands)
    return parser


def _flag(parser: argparse.ArgumentParser, name: str, help: str) -> None:
    """``--name`` alone, or ``--name true|false`` (how an MLproject parameter passes it)."""
    parser.add_argument(name, nargs="?", const="true", default="false", help=help)


def _add_featurize_options(parser: argparse.ArgumentParser) -> None:
    _flag(parser, "--refresh", "run the CNN on every image again (the new features win)")
    _flag(
        parser,
        "--rehash",
        "read and hash every image file again, repairing the file index (after a tool "
        "rewrote files keeping their size and modification time)",
    )


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TF loads here or in a worker
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # py4j logs each connection it closes at INFO, and errors of the ones the JVM's exit cut
    logging.getLogger("py4j").setLevel(logging.CRITICAL)
    args = build_parser().parse_args(argv)
    already = _active_spark()
    try:
        return args.func(args)
    except ConfigError as err:
        print(f"configuration error: {err}", file=sys.stderr)
        return 2
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)  # says what to do; a traceback would bury it
        return 1
    except Exception as err:
        cause = file_system_cause(err)  # a write the storage layer did not name the path of
        if cause is None:
            raise
        print(f"error: file system: {cause}", file=sys.stderr)
        return 1
    finally:
        # Stop the session this command started before the interpreter exits: left to the
        # exit, the JVM goes down under py4j's open connections, whose tracebacks land in a good
        # run's log. A session the caller had (a notebook, a test) is theirs to keep.
        started = _active_spark()
        if started is not None and already is None:  # then its event log goes to its runs
            from sparkles.event_log import stop_and_attach

            stop_and_attach(started)


def _active_spark():  # -> SparkSession | None, without importing pyspark for commands that don't
    module = sys.modules.get("pyspark.sql")
    return module.SparkSession.getActiveSession() if module else None


if __name__ == "__main__":
    sys.exit(main())
