"""Exploratory analysis of Open Images labels, as in the 2019 study, computed with Spark.

Labels per image, the most frequent labels (over positive rows, and over all rows: Open Images
also lists labels verified absent), the target classes, which labels occur together (a
co-occurrence matrix of the top-K labels, clustered into a dendrogram), and the images' width ×
height read from their file headers (no decode). Only aggregates reach the driver: the K×K
matrix and one row per distinct image size, never the label table.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from scipy.cluster.hierarchy import dendrogram, linkage
from scipy.spatial.distance import squareform

from sparkles import plots
from sparkles.data.images import read_image_files
from sparkles.data.openimages import read_class_descriptions, read_image_labels
from sparkles.names import IMAGE_ID


@dataclass
class EdaResult:
    summary: dict[str, Any]
    labels_per_image: dict[int, int]  # number of positive labels → number of images
    top_labels: list[tuple[str, int]]  # (label name, images), most frequent first
    cooccurrence_labels: list[str]
    cooccurrence: np.ndarray  # images carrying both labels; the diagonal is each label's count
    # width, height, images: one row per distinct size; None when no image folder was given
    image_sizes: pd.DataFrame | None = None
    target_label_rows: dict[str, dict[str, int]] = field(default_factory=dict)
    plots: dict[str, Path] = field(default_factory=dict)

    def correlation(self) -> np.ndarray:
        """Phi coefficient between the labels' presence indicators over all labelled images."""
        n = self.summary["images_with_positive_labels"]
        counts = np.diag(self.cooccurrence).astype(float)
        numerator = n * self.cooccurrence - np.outer(counts, counts)
        spread = np.sqrt(counts * (n - counts))
        with np.errstate(divide="ignore", invalid="ignore"):
            phi = numerator / np.outer(spread, spread)
        phi = np.nan_to_num(phi)
        np.fill_diagonal(phi, 1.0)
        return phi


def named_labels(spark: SparkSession, labels_csv: str, classes_csv: str) -> DataFrame:
    """(image_id, name, Confidence) for every label row, display names joined (MID kept if
    unnamed): the positive counts and the all-rows counts both come from this one join."""
    names = read_class_descriptions(spark, classes_csv)
    return (
        read_image_labels(spark, labels_csv)
        .join(F.broadcast(names), "LabelName", "left")
        .select(
            F.col("ImageID").alias(IMAGE_ID),
            F.coalesce("DisplayName", "LabelName").alias("name"),
            "Confidence",
        )
    )


def _header_size(contents: pd.Series) -> pd.DataFrame:
    """(width, height) from each file's header; PIL reads no pixels until asked. Nulls where
    the header is unreadable."""
    sizes = []
    for content in contents:
        try:
            with Image.open(io.BytesIO(content)) as image:
                sizes.append(image.size)
        except Exception:  # noqa: BLE001 - any unreadable header is counted, not raised
            sizes.append((None, None))
    return pd.DataFrame(sizes, columns=["width", "height"], dtype="Int32")


def image_sizes(spark: SparkSession, images: str, glob: str) -> tuple[pd.DataFrame, dict[str, int]]:
    """Images per distinct (width, height), and how many files had no readable header."""
    header = F.pandas_udf(_header_size, "width int, height int")
    files = read_image_files(spark, images, glob)
    sized = files.files.select(header("content").alias("size")).select("size.*")
    per_size = sized.groupBy("width", "height").count().toPandas()
    known = per_size.dropna()
    table = pd.DataFrame(
        {
            "width": known.width.astype(int),
            "height": known.height.astype(int),
            "images": known["count"].astype(int),
        }
    ).sort_values("images", ascending=False, ignore_index=True)
    unreadable = int(per_size["count"].sum() - table.images.sum()) + files.empty.count()
    return table, {"images_measured": int(table.images.sum()), "images_without_size": unreadable}


def _size_summary(table: pd.DataFrame, counts: dict[str, int]) -> dict[str, Any]:
    if table.empty:
        return dict(counts)
    widths, heights = (np.repeat(table[c], table.images) for c in ("width", "height"))
    top = table.iloc[0]
    return {
        **counts,
        "width_median": float(np.median(widths)),
        "height_median": float(np.median(heights)),
        "width_min": int(widths.min()),
        "width_max": int(widths.max()),
        "height_min": int(heights.min()),
        "height_max": int(heights.max()),
        "distinct_sizes": len(table),
        "most_common_size": f"{top.width}x{top.height} ({top.images} images)",
    }


def compute(
    spark: SparkSession,
    *,
    labels_csv: str,
    classes_csv: str,
    classes: list[str],
    top_n: int = 20,
    top_k: int = 48,
    images: str | None = None,
    image_glob: str = "*.jpg",
) -> EdaResult:
    """Every number of the report; image sizes too when ``images`` (a folder or URI) is given."""
    every = named_labels(spark, labels_csv, classes_csv).cache()
    totals = every.agg(
        F.count(F.lit(1)).alias("label_rows"),
        F.countDistinct(IMAGE_ID).alias("images"),
        F.sum((F.col("Confidence") == 1).cast("int")).alias("positive_label_rows"),
    ).first()
    positives = every.where(F.col("Confidence") == 1).select(IMAGE_ID, "name").distinct().cache()
    per_image = positives.groupBy(IMAGE_ID).agg(F.count(F.lit(1)).alias("n_labels"))
    histogram = {
        int(r.n_labels): int(r["count"])
        for r in per_image.groupBy("n_labels").count().orderBy("n_labels").collect()
    }
    by_name = positives.groupBy("name").agg(F.count(F.lit(1)).alias("images"))
    ranked = by_name.orderBy(F.desc("images"), "name").limit(max(top_n, top_k)).collect()
    top = [(r.name, int(r.images)) for r in ranked]
    wanted = [c.lower() for c in classes]
    targets = positives.where(F.lower("name").isin(wanted))
    target_counts = {r.name: int(r["count"]) for r in targets.groupBy("name").count().collect()}
    several = targets.groupBy(IMAGE_ID).count().where("count > 1").count()
    # every label row, whatever its confidence: what the labels file says about each class
    ranked_all = every.groupBy("name").count().orderBy(F.desc("count"), "name").limit(top_n)
    top_all = {r.name: int(r["count"]) for r in ranked_all.collect()}
    target_rows = every.where(F.lower("name").isin(wanted)).groupBy("name").count().collect()
    all_rows = {r.name.lower(): int(r["count"]) for r in target_rows}
    positive_rows = {k.lower(): v for k, v in target_counts.items()}
    target_label_rows = {
        "all label rows": {c: all_rows.get(c.lower(), 0) for c in classes},
        "positive": {c: positive_rows.get(c.lower(), 0) for c in classes},
    }

    keep = [name for name, _ in top[:top_k]]
    index = {name: i for i, name in enumerate(keep)}
    chosen = positives.where(F.col("name").isin(keep))
    pairs = (
        chosen.alias("a")
        .join(chosen.alias("b"), IMAGE_ID)
        .groupBy(F.col("a.name").alias("x"), F.col("b.name").alias("y"))
        .count()
        .collect()  # at most K×K rows
    )
    matrix = np.zeros((len(keep), len(keep)), dtype=np.int64)
    for row in pairs:
        matrix[index[row.x], index[row.y]] = row["count"]
    n_images = per_image.count()
    summary = {
        "label_rows": int(totals.label_rows),
        "images": int(totals.images),
        "positive_label_rows": int(totals.positive_label_rows or 0),
        "images_with_positive_labels": int(n_images),
        "distinct_label_names": int(by_name.count()),
        "labels_per_image_mean": float(sum(k * v for k, v in histogram.items()) / max(n_images, 1)),
        "labels_per_image_max": max(histogram, default=0),
        "target_classes": {c: target_counts.get(c, 0) for c in classes},
        "images_with_several_target_classes": int(several),
        "top_labels": dict(top[:top_n]),
        "target_classes_all_rows": target_label_rows["all label rows"],
        "top_labels_all_rows": top_all,
    }
    positives.unpersist()
    every.unpersist()
    sizes = None
    if images is not None:
        sizes, size_counts = image_sizes(spark, images, image_glob)
        summary.update(_size_summary(sizes, size_counts))
    return EdaResult(summary, histogram, top[:top_n], keep, matrix, sizes, target_label_rows)


def cooccurrence_tree(result: EdaResult) -> np.ndarray:
    """Average-linkage clustering of the top-K labels on 1 − phi correlation."""
    distance = 1.0 - result.correlation()
    np.fill_diagonal(distance, 0.0)
    return linkage(squareform(np.clip(distance, 0, 2), checks=False), method="average")


def dendrogram_leaves(result: EdaResult) -> list[str]:
    """Top-K labels in dendrogram order."""
    leaves = dendrogram(cooccurrence_tree(result), no_plot=True)["leaves"]
    return [result.cooccurrence_labels[i] for i in leaves]


def markdown(summary: dict[str, Any]) -> str:
    lines = ["# Label summary", "", "| quantity | value |", "|---|---|"]
    for key, value in summary.items():
        if isinstance(value, float):
            lines.append(f"| {key} | {value:,.2f} |")
        elif isinstance(value, int):
            lines.append(f"| {key} | {value:,} |")
        elif not isinstance(value, dict):
            lines.append(f"| {key} | {value} |")
    sections = {
        "target_classes": "images",
        "top_labels": "images",
        "target_classes_all_rows": "label rows",
        "top_labels_all_rows": "label rows",
    }
    for section, unit in sections.items():
        lines += ["", f"## {section.replace('_', ' ')}", "", f"| label | {unit} |", "|---|---|"]
        lines += [f"| {k} | {v:,} |" for k, v in summary[section].items()]
    return "\n".join(lines) + "\n"


def write_report(result: EdaResult, folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    order = [result.cooccurrence_labels.index(n) for n in dendrogram_leaves(result)]
    result.plots = {
        "labels_per_image": plots.plot_labels_per_image(
            result.labels_per_image, folder / "labels_per_image.png"
        ),
        "top_labels": plots.plot_top_labels(result.top_labels, folder / "top_labels.png"),
        "dendrogram": plots.plot_dendrogram(
            cooccurrence_tree(result),
            result.cooccurrence_labels,
            folder / "cooccurrence_dendrogram.png",
        ),
        "target_labels": plots.plot_target_labels(
            result.target_label_rows, folder / "target_label_rows.png"
        ),
        "heatmap": plots.plot_heatmap(
            result.correlation()[np.ix_(order, order)],
            [result.cooccurrence_labels[i] for i in order],
            folder / "cooccurrence_heatmap.png",
        ),
    }
    if result.image_sizes is not None:
        result.plots["image_sizes"] = plots.plot_image_sizes(
            result.image_sizes, folder / "image_sizes.png"
        )
        result.image_sizes.to_csv(folder / "image_sizes.csv", index=False)
    (folder / "eda_summary.json").write_text(json.dumps(result.summary, indent=2))
    (folder / "eda_summary.md").write_text(markdown(result.summary))
    return result.plots
