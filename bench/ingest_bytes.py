"""Benchmark: bytes that `featurize` reads from the image folder, against bytes it needs.

A folder where 3 of every 4 files have no label (on EMR: the whole validation prefix, of which
Car/Tree are about a quarter): featurize should read the labelled files' bytes, not the folder's.
The figure is Spark's own: the sum of ``inputBytes`` over every stage of the featurize command,
from the application's status store (what the Spark UI shows as "Input").

    python bench/ingest_bytes.py            # 48 labelled + 144 unlabelled images
    python bench/ingest_bytes.py --n 16     # smoke size
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

import yaml


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=48, help="labelled images (3n unlabelled added)")
    args = parser.parse_args()
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    from sparkles.config import load_profile
    from sparkles.data.sample import generate_sample
    from sparkles.features.featurize import featurize
    from sparkles.progress import input_bytes
    from sparkles.session import build_session

    folder = Path(tempfile.mkdtemp(prefix="sparkles-bench-bytes-"))
    sample = generate_sample(
        folder / "labels.csv",
        folder / "classes.csv",
        folder / "img",
        count=args.n,
        seed=5,
        size=(640, 480),
    )
    labelled = sorted(sample.images.glob("*.jpg"))
    for copy in range(3):  # same bytes, names the labels CSV does not know
        for path in labelled:
            shutil.copyfile(path, path.with_name(f"unlabelled{copy}-{path.name}"))
    on_disk = sum(p.stat().st_size for p in sample.images.glob("*.jpg"))
    needed = sum(p.stat().st_size for p in labelled)
    profile_file = folder / "profile.yaml"
    profile_file.write_text(
        yaml.safe_dump(
            {
                "name": "bench-bytes",
                "spark": {"master": "local[2]", "conf": {"spark.ui.enabled": False}},
                "mlflow": {"tracking_uri": f"sqlite:///{folder / 'mlruns.db'}"},
                "data": {
                    "labels_csv": str(folder / "labels.csv"),
                    "classes_csv": str(folder / "classes.csv"),
                    "images": str(sample.images),
                },
                "featurizer": {"model": "MobileNetV2", "weights": "random"},
                "store": {"dir": str(folder / "cache")},
            }
        )
    )
    profile = load_profile(str(profile_file))
    spark = build_session(profile)
    before = input_bytes(spark)
    result = featurize(profile, spark)
    read = input_bytes(spark) - before
    spark.stop()
    counts = result.counts
    print(f"files on disk            {counts['files']} ({on_disk / 1e6:.1f} MB)")
    print(f"labelled (matched) files {counts['matched_files']} ({needed / 1e6:.1f} MB)")
    print(f"unlabelled files         {counts['unlabeled_files']}")
    print(f"featurized / quarantined {counts['featurized']} / {counts['quarantined']}")
    print(f"bytes read by Spark      {read / 1e6:.1f} MB")
    print(f"read / folder            {read / on_disk:.2f}")
    print(f"read / labelled files    {read / needed:.2f}")
    shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
