"""Exploratory analysis of Open Images labels, as in the 2019 study, computed with Spark.

Labels per image, the most frequent labels, the target classes, and which labels occur together
(a co-occurrence matrix of the top-K labels, clustered into a dendrogram). Only aggregates reach
the driver: the K×K matrix, never the label table.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from matplotlib.figure import Figure
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from scipy.cluster.hierarchy import dendrogram, linkage
from scipy.spatial.distance import squareform

from sparkles import tracking
from sparkles.config import Profile
from sparkles.data.openimages import read_class_descriptions, read_image_labels
from sparkles.evaluate import save_figure


@dataclass
class EdaResult:
    summary: dict[str, Any]
    labels_per_image: dict[int, int]  # number of positive labels → number of images
    top_labels: list[tuple[str, int]]  # (label name, images), most frequent first
    cooccurrence_labels: list[str]
    cooccurrence: np.ndarray  # images carrying both labels; the diagonal is each label's count
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


def positive_labels(spark: SparkSession, labels_csv: str, classes_csv: str) -> DataFrame:
    """(image_id, name) for every positive label, display names joined (MID kept if unnamed)."""
    names = read_class_descriptions(spark, classes_csv)
    return (
        read_image_labels(spark, labels_csv)
        .where(F.col("Confidence") == 1)
        .join(F.broadcast(names), "LabelName", "left")
        .select(
            F.col("ImageID").alias("image_id"),
            F.coalesce("DisplayName", "LabelName").alias("name"),
        )
        .distinct()
    )


def compute(
    spark: SparkSession,
    labels_csv: str,
    classes_csv: str,
    classes: list[str],
    top_n: int = 20,
    top_k: int = 48,
) -> EdaResult:
    raw = read_image_labels(spark, labels_csv)
    totals = raw.agg(
        F.count(F.lit(1)).alias("label_rows"),
        F.countDistinct("ImageID").alias("images"),
        F.sum((F.col("Confidence") == 1).cast("int")).alias("positive_label_rows"),
    ).first()
    positives = positive_labels(spark, labels_csv, classes_csv).cache()
    per_image = positives.groupBy("image_id").agg(F.count(F.lit(1)).alias("n_labels"))
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
    several = targets.groupBy("image_id").count().where("count > 1").count()

    keep = [name for name, _ in top[:top_k]]
    index = {name: i for i, name in enumerate(keep)}
    chosen = positives.where(F.col("name").isin(keep))
    pairs = (
        chosen.alias("a")
        .join(chosen.alias("b"), "image_id")
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
    }
    positives.unpersist()
    return EdaResult(summary, histogram, top[:top_n], keep, matrix)


def plot_labels_per_image(result: EdaResult, path: Path) -> Path:
    figure = Figure(figsize=(6, 3.5))
    axes = figure.subplots()
    axes.bar(list(result.labels_per_image), list(result.labels_per_image.values()))
    axes.set(xlabel="positive labels per image", ylabel="images", title="Labels per image")
    return save_figure(figure, path)


def plot_top_labels(result: EdaResult, path: Path) -> Path:
    names, counts = (
        zip(*reversed(result.top_labels), strict=True) if result.top_labels else ((), ())
    )
    figure = Figure(figsize=(6, 0.3 * len(names) + 1.2))
    axes = figure.subplots()
    axes.barh(names, counts)
    axes.set(xlabel="images", title=f"Top {len(names)} labels")
    return save_figure(figure, path)


def _tree(result: EdaResult) -> np.ndarray:
    """Average-linkage clustering of the top-K labels on 1 − phi correlation."""
    distance = 1.0 - result.correlation()
    np.fill_diagonal(distance, 0.0)
    return linkage(squareform(np.clip(distance, 0, 2), checks=False), method="average")


def dendrogram_leaves(result: EdaResult) -> list[str]:
    """Top-K labels in dendrogram order."""
    leaves = dendrogram(_tree(result), no_plot=True)["leaves"]
    return [result.cooccurrence_labels[i] for i in leaves]


def plot_dendrogram(result: EdaResult, path: Path) -> Path:
    tree = _tree(result)
    figure = Figure(figsize=(7, 0.22 * len(result.cooccurrence_labels) + 1.5))
    axes = figure.subplots()
    dendrogram(tree, labels=result.cooccurrence_labels, orientation="left", ax=axes)
    axes.set(xlabel="1 − correlation of occurrence", title="Labels that occur together")
    return save_figure(figure, path)


def plot_heatmap(result: EdaResult, path: Path) -> Path:
    order = [result.cooccurrence_labels.index(n) for n in dendrogram_leaves(result)]
    phi = result.correlation()[np.ix_(order, order)]
    names = [result.cooccurrence_labels[i] for i in order]
    size = 0.2 * len(names) + 2
    figure = Figure(figsize=(size + 1, size))
    axes = figure.subplots()
    image = axes.imshow(phi, cmap="RdBu_r", vmin=-1, vmax=1)
    axes.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    axes.set_yticks(range(len(names)), names, fontsize=7)
    axes.set_title("Co-occurrence correlation (dendrogram order)")
    figure.colorbar(image, ax=axes, shrink=0.8)
    return save_figure(figure, path)


def markdown(summary: dict[str, Any]) -> str:
    lines = ["# Label summary", "", "| quantity | value |", "|---|---|"]
    for key, value in summary.items():
        if isinstance(value, float):
            lines.append(f"| {key} | {value:,.2f} |")
        elif not isinstance(value, dict):
            lines.append(f"| {key} | {value:,} |")
    for section in ("target_classes", "top_labels"):
        lines += ["", f"## {section.replace('_', ' ')}", "", "| label | images |", "|---|---|"]
        lines += [f"| {k} | {v:,} |" for k, v in summary[section].items()]
    return "\n".join(lines) + "\n"


def write_report(result: EdaResult, folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    result.plots = {
        "labels_per_image": plot_labels_per_image(result, folder / "labels_per_image.png"),
        "top_labels": plot_top_labels(result, folder / "top_labels.png"),
        "dendrogram": plot_dendrogram(result, folder / "cooccurrence_dendrogram.png"),
        "heatmap": plot_heatmap(result, folder / "cooccurrence_heatmap.png"),
    }
    (folder / "eda_summary.json").write_text(json.dumps(result.summary, indent=2))
    (folder / "eda_summary.md").write_text(markdown(result.summary))
    return result.plots


def run_eda(profile: Profile, spark: SparkSession, output: str | None = None) -> EdaResult:
    """Compute, write the folder, and log everything to an MLflow run named ``eda``."""
    settings, data = profile.eda, profile.data
    with tracking.run(profile, "eda"):
        result = compute(
            spark, data.labels_csv, data.classes_csv, data.classes, settings.top_n, settings.top_k
        )
        folder = Path(output or settings.output_dir or tempfile.mkdtemp(prefix="sparkles-eda-"))
        write_report(result, folder)
        mlflow.log_params({"eda_top_n": settings.top_n, "eda_top_k": settings.top_k})
        numbers = {k: v for k, v in result.summary.items() if isinstance(v, int | float)}
        mlflow.log_metrics({f"eda_{k}": float(v) for k, v in numbers.items()})
        mlflow.log_artifacts(str(folder), artifact_path="eda")
    return result
