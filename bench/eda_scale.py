"""Benchmark: `sparkles eda` on a synthetic label table of the 2019 study's size.

256,707 positive/negative label rows over 41,620 images and 601 label names (Zipf-distributed
popularity, ~6 labels per image), in the Open Images CSV format; prints the time of the Spark
computation and of the plots.

    python bench/eda_scale.py
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from sparkles.config import load_profile
from sparkles.data.eda import compute, write_report
from sparkles.session import build_session


def synthetic_labels(folder: Path, rows: int, images: int, names: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    mids = [f"/m/bench{i:04d}" for i in range(names - 2)] + ["/m/0k4j", "/m/07j7r"]
    display = [f"Label {i}" for i in range(names - 2)] + ["Car", "Tree"]
    popularity = 1.0 / np.arange(1, names + 1) ** 1.1
    popularity /= popularity.sum()
    image_ids = np.array([f"{i:016x}" for i in range(images)])
    frame = pd.DataFrame(
        {
            "ImageID": image_ids[rng.integers(0, images, rows)],
            "Source": "verification",
            "LabelName": np.array(mids)[rng.choice(names, rows, p=popularity)],
            "Confidence": (rng.random(rows) < 0.75).astype(int),
        }
    )
    frame.to_csv(folder / "labels.csv", index=False)
    pd.DataFrame({"m": mids, "n": display}).to_csv(
        folder / "classes.csv", index=False, header=False
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=256_707)
    parser.add_argument("--images", type=int, default=41_620)
    parser.add_argument("--names", type=int, default=601)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="sparkles-bench-eda-"))
    synthetic_labels(folder, args.rows, args.images, args.names)
    spark = build_session(load_profile("local"), {"spark.task.cpus": "1"})
    started = time.monotonic()
    result = compute(
        spark,
        labels_csv=str(folder / "labels.csv"),
        classes_csv=str(folder / "classes.csv"),
        classes=["Car", "Tree"],
    )
    computed = time.monotonic() - started
    write_report(result, folder / "report")
    plotted = time.monotonic() - started - computed
    summary = result.summary
    print(
        f"{summary['label_rows']:,} label rows, {summary['images']:,} images, "
        f"{summary['distinct_label_names']} label names"
    )
    print(f"Spark computation: {computed:.1f} s; plots and summary files: {plotted:.1f} s")
    print(f"report: {folder / 'report'}")
    spark.stop()


if __name__ == "__main__":
    main()
