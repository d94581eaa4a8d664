"""Benchmark: what bf16 features do downstream. Train the same classifier on f32 and on bf16
features of the same images and print accuracy, F1 and AUC side by side.

f32 features come from `featurize` on the profile (default: the local sample). bf16 features are
computed for the same rows: natively (OpenVINO) where the CPU has bf16 instructions, else by
Keras emulating bf16 (same numerics, slowly). Both tables are trained by `train.train`, with the
same split, seed and regularization.

    python bench/precision_downstream.py
    python bench/precision_downstream.py --set featurizer.weights=/path/inception_notop.h5
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np


def bf16_table(spark, profile, f32_table, weights_path: str | None, folder: Path):
    """A training table with the same rows as ``f32_table`` and bf16 features (own store)."""
    import pandas as pd
    from pyspark.ml.functions import array_to_vector
    from pyspark.sql import functions as F

    from sparkles.backbones import get_spec
    from sparkles.feature_store import SHA, FeatureStore, TrainingTable
    from sparkles.imaging import decode_image
    from sparkles.runtimes import compile_cnn, cpu_has_bf16

    settings = profile.featurizer
    spec = get_spec(settings.model)
    runtime = "openvino" if cpu_has_bf16() else "keras"
    cnn = compile_cnn(
        spec, weights_path, settings.pooling, settings.random_seed, runtime, "bf16",
        native_only=False,
    )  # fmt: skip
    rows = f32_table.features().select("path", "image_id", "label", SHA).toPandas()
    limits = {"max_bytes": 50 << 20, "max_pixels": settings.max_pixels}
    features = []
    for start in range(0, len(rows), settings.batch_size):
        paths = rows.path.iloc[start : start + settings.batch_size]
        pixels = np.stack(
            [decode_image(Path(p.removeprefix("file:")).read_bytes(), spec.input_size, **limits)
             for p in paths]
        )  # fmt: skip
        features.extend(cnn(spec.preprocess()(pixels.astype(np.float32))).tolist())
    table = pd.DataFrame({SHA: rows[SHA], "features": features, "featurize_error": None})
    frame = spark.createDataFrame(
        table, f"{SHA} string, features array<float>, featurize_error string"
    ).withColumn("features", array_to_vector(F.col("features")))
    store = FeatureStore(spark, str(folder))
    store.append(frame, expected=len(table))
    key = f32_table.fingerprint
    entry = store.save_table(key, spark.createDataFrame(rows))
    return TrainingTable(key, entry, store), runtime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="local")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    from sparkles.classifiers import default_params
    from sparkles.config import load_profile
    from sparkles.runtimes import cpu_has_bf16
    from sparkles.session import build_session
    from sparkles.train import train
    from sparkles.training_tables import featurize

    work = Path(tempfile.mkdtemp(prefix="sparkles-bench-precision-"))
    profile = load_profile(
        args.profile, [f"cache.dir={work / 'cache'}", "featurizer.precision=f32", *args.overrides]
    )
    spark = build_session(profile)
    f32 = featurize(profile, spark)
    bf16, runtime = bf16_table(spark, profile, f32.table, f32.weights.local_path, work / "bf16")
    settings = profile.train
    results = {
        name: train(profile, spark, table, default_params(settings))
        for name, table in (("f32", f32.table), ("bf16", bf16))
    }
    a, b = (
        np.stack(table.features().orderBy("path").toPandas().features.map(lambda v: v.toArray()))
        for table in (f32.table, bf16)
    )
    predictions = {
        name: r.evaluation.predictions.set_index("path").prediction for name, r in results.items()
    }
    changed = int(
        (predictions["f32"] != predictions["bf16"].reindex(predictions["f32"].index)).sum()
    )
    how = "native" if cpu_has_bf16() else "emulated by Keras: this CPU has no bf16 instructions"
    print(
        f"{profile.featurizer.model}, weights {f32.weights.kind}, {len(a)} images; bf16 on "
        f"{runtime} ({how}); features: max abs diff {np.abs(a - b).max():.1e}, relative "
        f"{np.abs(a - b).max() / np.abs(a).max():.1e}\n"
    )
    metrics = ["accuracy", "f1", "auc", "val_accuracy", "val_f1", "val_auc"]
    print("| features | " + " | ".join(metrics) + " | test predictions changed |")
    print("|---|" + "---|" * (len(metrics) + 1))
    for name, result in results.items():
        values = " | ".join(f"{result.metrics[m]:.4f}" for m in metrics)
        print(f"| {name} | {values} | {changed if name == 'bf16' else '—'} of "
              f"{len(predictions[name])} |")  # fmt: skip
    spark.stop()


if __name__ == "__main__":
    main()
