"""Benchmark: a 32-trial hyperopt search at the 2019 study's scale (41,620 cached 2048-d features).

Builds a synthetic feature table in the cache format, runs the real search code on it, and prints
seconds per trial and the ratio of one trial to one featurization pass of the same rows.

    python bench/tune_scale.py                     # full size (tens of minutes on 2 cores)
    python bench/tune_scale.py --rows 2000 --trials 4   # smoke size
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from pyspark.ml.functions import array_to_vector
from pyspark.sql import functions as F

from sparkles.config import load_profile
from sparkles.model.kinds import describe_params
from sparkles.session import build_session
from sparkles.train.splits import stratified_split
from sparkles.train.tune import search


def synthetic_features(spark, rows: int, dim: int, partitions: int, path: str) -> None:
    """Two classes whose 2048-d means differ slightly, written as the cache's Parquet table."""

    def generate(batches):
        for batch in batches:
            rng = np.random.default_rng(int(batch.id.iloc[0]))
            labels = np.where(batch.id % 2 == 0, "Car", "Tree")
            shift = np.where(labels == "Car", 0.0, 0.08)[:, None]
            values = rng.random((len(batch), dim), dtype=np.float32) + shift
            yield pd.DataFrame(
                {
                    "path": [f"file:/synthetic/{i:08d}.jpg" for i in batch.id],
                    "image_id": [f"{i:016x}" for i in batch.id],
                    "label": labels,
                    "features": list(values),
                    "featurize_error": None,
                }
            )

    schema = (
        "path string, image_id string, label string, features array<float>, featurize_error string"
    )
    table = spark.range(0, rows, numPartitions=partitions).mapInPandas(generate, schema)
    table.withColumn("features", array_to_vector("features")).write.parquet(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=41_620)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--trials", type=int, default=32)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument(
        "--images-per-second",
        type=float,
        default=24.0,
        help="featurization speed to compare with (bench/featurize.py measures it; 24 = warm "
        "InceptionV3 through Spark on this 2-core machine)",
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sparkles-bench-tune-"))
    profile = load_profile(
        "local",
        [
            f"mlflow.tracking_uri=sqlite:///{work / 'mlruns.db'}",
            f"mlflow.artifact_location={work / 'artifacts'}",
            "mlflow.experiment=bench-tune",
        ],
    )
    spark = build_session(profile, {"spark.task.cpus": str(profile.tune.task_cpus)})
    started = time.monotonic()
    synthetic_features(spark, args.rows, args.dim, args.partitions, str(work / "table"))
    print(f"synthetic table: {args.rows} x {args.dim} in {time.monotonic() - started:.1f} s")
    features = spark.read.parquet(str(work / "table")).where(F.col("featurize_error").isNull())
    train_set, _ = stratified_split(features, profile.train.test_fraction, profile.train.seed)
    mlflow.set_tracking_uri(profile.mlflow.tracking_uri)
    mlflow.set_experiment("bench-tune")
    started = time.monotonic()
    with mlflow.start_run(run_name="bench-tune"):
        found = search(
            profile, train_set, ["Car", "Tree"], method="hyperopt", max_evals=args.trials
        )
    total = time.monotonic() - started
    per_trial = [t.metrics["fit_seconds"] for t in found.trials]
    featurize_pass = args.rows / args.images_per_second
    print(
        f"rows {args.rows}, dim {args.dim}, partitions {features.rdd.getNumPartitions()}, "
        f"tol {profile.train.tol}, maxIter {profile.train.max_iter}, "
        f"validation {profile.tune.validation}"
    )
    print(f"{len(found.trials)} trials in {total:.1f} s (search total, incl. persisting the table)")
    print(
        f"seconds per trial: mean {statistics.mean(per_trial):.1f}, "
        f"median {statistics.median(per_trial):.1f}, "
        f"min {min(per_trial):.1f}, max {max(per_trial):.1f}"
    )
    print(
        f"one featurization pass of {args.rows} images at {args.images_per_second} images/s: "
        f"{featurize_pass:.0f} s"
    )
    print(
        f"trial / featurization pass: {statistics.mean(per_trial) / featurize_pass:.4f} "
        f"(1 : {featurize_pass / statistics.mean(per_trial):.0f})"
    )
    print(
        f"best: {describe_params(found.best.params)}, "
        f"val_{found.metric} {found.best.metrics['val_' + found.metric]:.4f}"
    )
    spark.stop()


if __name__ == "__main__":
    main()
