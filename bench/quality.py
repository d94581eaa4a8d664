"""Benchmark: classification quality and feature fidelity per runtime × precision, on your photos.

For every runtime × precision this machine runs (keras and openvino at f32; bf16 where the CPU
has bf16 instructions; openvino int8, NNCF-calibrated on the images themselves as `featurize`
does), the real commands' code on a profile pointed at the given data: `featurize` (Spark, its
own feature store), then `train` with the profile's classifier, printing the held-out
accuracy/F1/AUC, each image's feature cosine to Keras f32 (median, min) and the featurize pass's
images/s (Spark tasks, model build included).

    python bench/quality.py --images DIR --labels CSV --classes CSV --weights FILE \\
        --model MobileNetV2
    python bench/quality.py ... --weights random --model InceptionV3   # speed, random weights
    python bench/quality.py ... --rows openvino:f32,openvino:int8   # some rows (and Keras f32)
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def combinations(bf16: bool) -> list[tuple[str, str]]:
    rows = [("keras", "f32"), ("keras", "bf16"), ("openvino", "f32"), ("openvino", "bf16")]
    return [r for r in rows if r[1] != "bf16" or bf16] + [("openvino", "int8")]


def features_by_image(table) -> dict[str, np.ndarray]:
    from sparkles.names import SHA

    rows = table.features().select(SHA, "features").collect()
    return {row[SHA]: row.features.toArray() for row in rows}


def cosines(reference: dict[str, np.ndarray], other: dict[str, np.ndarray]) -> np.ndarray:
    shared = sorted(reference.keys() & other.keys())
    a = np.stack([reference[k] for k in shared])
    b = np.stack([other[k] for k in shared])
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return (a * b).sum(axis=1) / np.where(norms == 0, 1, norms)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", required=True, help="folder of <ImageID>.jpg")
    parser.add_argument("--labels", required=True, help="Open Images image-level labels CSV")
    parser.add_argument("--classes", required=True, help="class descriptions CSV (MID, name)")
    parser.add_argument("--weights", required=True, help="weights file, 'imagenet' or 'random'")
    parser.add_argument("--model", default="MobileNetV2", help="keras.applications model")
    parser.add_argument("--target", default="Car,Tree", help="the classes to tell apart")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="profile override, e.g. featurizer.calibration_images=100",
    )
    parser.add_argument(
        "--rows", default="", help="runtime:precision,... to run (keras:f32, the reference, always)"
    )
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    from sparkles.cnn.runtimes import cpu_has_bf16
    from sparkles.config import load_profile
    from sparkles.features.featurize import featurize
    from sparkles.model.classifiers import default_params
    from sparkles.session import build_session
    from sparkles.train.fit import train

    work = Path(tempfile.mkdtemp(prefix="sparkles-bench-quality-"))
    os.environ.setdefault("SPARKLES_OPENVINO_CACHE", str(work / "converted"))
    base = [
        "data.sample=null",
        f"data.images={args.images}",
        f"data.labels_csv={args.labels}",
        f"data.classes_csv={args.classes}",
        f"data.classes=[{args.target}]",
        f"featurizer.model={args.model}",
        f"featurizer.weights={args.weights}",
        f"store.dir={work / 'cache'}",
        *args.overrides,
    ]
    spark = None
    results, reference = [], None
    chosen = {tuple(row.split(":")) for row in args.rows.split(",") if row} | {("keras", "f32")}
    rows = [row for row in combinations(cpu_has_bf16()) if not args.rows or row in chosen]
    for runtime, precision in rows:
        profile = load_profile(
            "local", [*base, f"featurizer.runtime={runtime}", f"featurizer.precision={precision}"]
        )
        spark = spark or build_session(profile)
        started = time.perf_counter()
        featurized = featurize(profile, spark, refresh=True)
        seconds = time.perf_counter() - started
        trained = train(profile, featurized.table, default_params(profile.train))
        features = features_by_image(featurized.table)
        reference = reference or features
        similar = cosines(reference, features)
        results.append((runtime, precision, featurized, seconds, trained.metrics, similar))
        print(f"done: {runtime} {precision}", flush=True)

    first = results[0][2]
    print(
        f"\n{args.model}, weights {first.weights.kind} ({args.weights}), "
        f"{first.counts['featurized']} images featurized + {first.counts['quarantined']} "
        f"quarantined; {os.cpu_count()} cores, bf16 instructions: "
        f"{'yes' if cpu_has_bf16() else 'no'}\n"
    )
    print(
        "| runtime | precision | accuracy | F1 | AUC | cosine to Keras f32 (median / min) "
        "| pass images/s | featurize command s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for runtime, precision, featurized, seconds, metrics, similar in results:
        print(
            f"| {runtime} | {precision} | {metrics['accuracy']:.4f} | {metrics['f1']:.4f} "
            f"| {metrics['auc']:.4f} | {np.median(similar):.4f} / {similar.min():.4f} "
            f"| {featurized.images_per_second:.1f} | {seconds:.1f} |"
        )
    print(
        "\n(test split as `train` makes it; int8 calibrated on featurizer.calibration_images of "
        "these images, the seeded sample `featurize` takes; a pass includes each Python "
        "worker's model build)"
    )
    spark.stop()


if __name__ == "__main__":
    main()
