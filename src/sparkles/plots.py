"""Every plot of the project, in one place: evaluation (ROC, confusion matrix, label
distribution, misclassified images), searches, and the EDA's label and image-size charts.

Figures are built with ``matplotlib.figure.Figure`` (no pyplot: no GUI backend, no global
figure state) and written by ``save_figure``. The functions take results, never Spark work
or file reads (the misclassified gallery is handed the bytes of the images it shows).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from PIL import Image
from scipy.cluster.hierarchy import dendrogram
from sklearn.metrics import auc as sk_auc
from sklearn.metrics import roc_curve

from sparkles.names import PREDICTION
from sparkles.tracking import loggable

if TYPE_CHECKING:
    from sparkles.model.kinds import SearchAxes
    from sparkles.tasks.evaluate import Evaluation
    from sparkles.tasks.evaluate_sets import SetEvaluation
    from sparkles.train.tune import Search


def save_figure(figure: Figure, path: Path, dpi: int = 100) -> Path:
    """Lay out and write a figure; every plot of the project goes through here."""
    figure.tight_layout()
    figure.savefig(path, dpi=dpi)
    return path


def plot_roc(evaluation: Evaluation, path: Path) -> Path:
    """Two classes: the positive class's curve. More: one one-vs-rest curve per class."""
    figure = Figure(figsize=(5, 5))
    axes = figure.subplots()
    auc = evaluation.metrics.get("auc", float("nan"))
    frame = evaluation.predictions
    classes = [evaluation.positive] if len(evaluation.labels) == 2 else evaluation.labels
    for name in classes:
        truth = (frame.label == name).astype(int)
        fpr, tpr, _ = roc_curve(truth, frame[f"probability_{name}"])
        own = auc if len(classes) == 1 else sk_auc(fpr, tpr)
        axes.plot(fpr, tpr, lw=2, label=f"{name} vs rest (AUC = {own:.4f})")
    axes.plot([0, 1], [0, 1], ls="--", color="grey", label="chance (AUC = 0.5)")
    title = "ROC, held-out test"
    if len(classes) > 1:
        title = f"ROC one-vs-rest, held-out test\nmacro-average AUC = {auc:.4f}"
    axes.set(xlabel="false positive rate", ylabel="true positive rate", title=title)
    axes.legend(loc="lower right")
    return save_figure(figure, path)


def plot_roc_per_class(evaluation: SetEvaluation, path: Path) -> Path:
    """Multi-label: one curve per class (its classifier's margin against carrying the class),
    each class's threshold marked where its classifier says it."""
    figure = Figure(figsize=(5, 5))
    axes = figure.subplots()
    frame = evaluation.predictions
    for name, threshold in zip(evaluation.labels, evaluation.thresholds, strict=True):
        truth = frame.labels.str.split("|").apply(lambda names, n=name: n in names).astype(int)
        fpr, tpr, _ = roc_curve(truth, frame[f"margin_{name}"])
        (line,) = axes.plot(fpr, tpr, lw=2, label=f"{name} (AUC = {sk_auc(fpr, tpr):.4f})")
        said = frame[f"probability_{name}"] >= threshold
        at = (said[truth == 0].mean() if (truth == 0).any() else 0.0, said[truth == 1].mean())
        axes.scatter(*at, color=line.get_color(), edgecolors="black", zorder=3)
    axes.plot([0, 1], [0, 1], ls="--", color="grey", label="chance (AUC = 0.5)")
    auc = evaluation.metrics.get("auc", float("nan"))
    title = f"ROC per class, held-out test\nmacro-average AUC = {auc:.4f}; dots: thresholds"
    axes.set(xlabel="false positive rate", ylabel="true positive rate", title=title)
    axes.legend(loc="lower right")
    return save_figure(figure, path)


def plot_label_sets(evaluation: SetEvaluation, path: Path) -> Path:
    """Multi-label: test images by true set (rows) and predicted set (columns); the diagonal is
    subset accuracy's numerator."""
    truth, said, matrix = evaluation.sets()
    figure = Figure(figsize=(1.6 + 1.1 * len(said), 1.4 + 0.6 * len(truth)))
    axes = figure.subplots()
    axes.imshow(matrix, cmap="Blues", aspect="auto")
    axes.set_xticks(range(len(said)), [name or "none" for name in said], rotation=30)
    axes.set_yticks(range(len(truth)), [name or "none" for name in truth])
    axes.set(xlabel="predicted set", ylabel="true set", title="Label sets, held-out test")
    for (row, column), value in np.ndenumerate(matrix):
        colour = "white" if value > matrix.max() / 2 else "black"
        axes.text(column, row, str(value), ha="center", va="center", color=colour)
    return save_figure(figure, path)


def plot_confusion(evaluation: Evaluation, path: Path) -> Path:
    figure = Figure(figsize=(4.5, 4))
    axes = figure.subplots()
    matrix = evaluation.confusion
    axes.imshow(matrix, cmap="Blues")
    ticks = range(len(evaluation.labels))
    axes.set(
        xticks=ticks, yticks=ticks, xlabel="predicted", ylabel="true", title="Confusion matrix"
    )
    axes.set_xticklabels(evaluation.labels)
    axes.set_yticklabels(evaluation.labels)
    for (row, column), value in np.ndenumerate(matrix):
        colour = "white" if value > matrix.max() / 2 else "black"
        axes.text(column, row, str(value), ha="center", va="center", color=colour)
    return save_figure(figure, path)


def plot_label_distribution(counts: dict[str, dict[str, int]], path: Path) -> Path:
    """Images per class in each split (e.g. {"train": {"Car": 80, ...}, "test": {...}})."""
    frame = pd.DataFrame(counts).fillna(0).astype(int)
    figure = Figure(figsize=(5, 3.5))
    axes = figure.subplots()
    width = 0.8 / len(frame.columns)
    for offset, split in enumerate(frame.columns):
        positions = np.arange(len(frame)) + offset * width
        bars = axes.bar(positions, frame[split], width, label=split)
        axes.bar_label(bars)
    axes.set_xticks(np.arange(len(frame)) + width * (len(frame.columns) - 1) / 2, frame.index)
    axes.set(ylabel="images", title="Images per class")
    axes.legend()
    return save_figure(figure, path)


def plot_misclassified(wrong: pd.DataFrame, contents: dict[str, bytes], path: Path) -> Path:
    """Misclassified test images (rows of ``Evaluation.mistakes``, or of
    ``SetEvaluation.mistakes`` with their own ``caption``), truth and P(predicted class) in
    titles; one whose bytes ``contents`` lacks is drawn as its title."""
    columns = 4
    count = max(len(wrong), 1)
    rows_needed = (count + columns - 1) // columns
    figure = Figure(figsize=(10, 2.8 * rows_needed))
    grid = figure.subplots(rows_needed, columns)
    cells = np.atleast_1d(grid).ravel()
    for cell in cells:
        cell.axis("off")
    if not len(wrong):
        cells[0].text(0.5, 0.5, "no misclassified test images", ha="center", va="center")
    for cell, row in zip(cells, wrong.itertuples(), strict=False):
        if row.path in contents:
            cell.imshow(Image.open(io.BytesIO(contents[row.path])).convert("RGB"))
        else:
            cell.text(0.5, 0.5, "image no longer\nat its path", ha="center", va="center")
        caption = getattr(row, "caption", None) or (
            f"true {row.label}, said {getattr(row, PREDICTION)}\n"
            f"P({getattr(row, PREDICTION)}) = {row.confidence:.2f}"
        )
        cell.set_title(caption, fontsize=8)
    figure.suptitle("Misclassified test images (most confident first)")
    return save_figure(figure, path, dpi=90)


def plot_metrics_across_runs(table: pd.DataFrame, path: Path) -> Path:
    """Test accuracy, F1 and AUC of runs (``runName`` and those columns), in the order given."""
    figure = Figure(figsize=(7, 3.5))
    axes = figure.subplots()
    for name in ("accuracy", "f1", "auc"):
        axes.plot(range(len(table)), table[name], marker="o", label=name)
    axes.set_xticks(range(len(table)), table["runName"], rotation=45, ha="right")
    axes.set(ylabel="test metric", title="Test metrics across runs")
    axes.legend()
    return save_figure(figure, path)


def plot_labels_per_image(histogram: dict[int, int], path: Path) -> Path:
    """Images by how many positive labels they carry."""
    figure = Figure(figsize=(6, 3.5))
    axes = figure.subplots()
    axes.bar(list(histogram), list(histogram.values()))
    axes.set(xlabel="positive labels per image", ylabel="images", title="Labels per image")
    return save_figure(figure, path)


def plot_top_labels(top: list[tuple[str, int]], path: Path) -> Path:
    names, counts = zip(*reversed(top), strict=True) if top else ((), ())
    figure = Figure(figsize=(6, 0.3 * len(names) + 1.2))
    axes = figure.subplots()
    axes.barh(names, counts)
    axes.set(xlabel="images", title=f"Top {len(names)} labels")
    return save_figure(figure, path)


def plot_target_labels(counts: dict[str, dict[str, int]], path: Path) -> Path:
    """Per target class: label rows of every confidence against the positive ones."""
    frame = pd.DataFrame(counts).fillna(0).astype(int)  # rows: classes, columns: kinds
    figure = Figure(figsize=(5.5, 3.5))
    axes = figure.subplots()
    width = 0.8 / len(frame.columns)
    for offset, kind in enumerate(frame.columns):
        bars = axes.bar(np.arange(len(frame)) + offset * width, frame[kind], width, label=kind)
        axes.bar_label(bars)
    axes.set_xticks(np.arange(len(frame)) + width * (len(frame.columns) - 1) / 2, frame.index)
    axes.set(ylabel="label rows", title="Target classes: all label rows and positive ones")
    axes.legend()
    return save_figure(figure, path)


def plot_dendrogram(tree: np.ndarray, labels: list[str], path: Path) -> Path:
    figure = Figure(figsize=(7, 0.22 * len(labels) + 1.5))
    axes = figure.subplots()
    dendrogram(tree, labels=labels, orientation="left", ax=axes)
    axes.set(xlabel="1 − correlation of occurrence", title="Labels that occur together")
    return save_figure(figure, path)


def plot_heatmap(phi: np.ndarray, names: list[str], path: Path) -> Path:
    """A correlation matrix, rows and columns in the order given (the dendrogram's)."""
    size = 0.2 * len(names) + 2
    figure = Figure(figsize=(size + 1, size))
    axes = figure.subplots()
    image = axes.imshow(phi, cmap="RdBu_r", vmin=-1, vmax=1)
    axes.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    axes.set_yticks(range(len(names)), names, fontsize=7)
    axes.set_title("Co-occurrence correlation (dendrogram order)")
    figure.colorbar(image, ax=axes, shrink=0.8)
    return save_figure(figure, path)


def plot_image_sizes(sizes: pd.DataFrame, path: Path) -> Path:
    """Width × height of the images (``width``, ``height``, ``images`` per distinct size): each
    size a point whose area grows with how many images have it."""
    figure = Figure(figsize=(5.5, 4.5))
    axes = figure.subplots()
    if len(sizes):
        area = 20 + 200 * sizes.images / sizes.images.max()
        axes.scatter(sizes.width, sizes.height, s=area, alpha=0.6, edgecolors="black")
    else:
        axes.text(0.5, 0.5, "no readable image headers", ha="center", va="center")
    total = int(sizes.images.sum()) if len(sizes) else 0
    axes.set(
        xlabel="width (pixels)",
        ylabel="height (pixels)",
        title=f"Image dimensions ({total:,} images, {len(sizes):,} distinct sizes)",
    )
    return save_figure(figure, path)


def plot_search(found: Search, search_axes: SearchAxes, path: Path) -> Path:
    """Validation metric of every trial against the classifier kind's main parameter, coloured
    by its second (logistic: regParam, log scale, and elasticNetParam; mlp: maxIter and
    stepSize, each point labelled with its hidden layers); the winner circled."""
    x_name, x_log, colour_name, label = search_axes
    figure = Figure(figsize=(6, 4))
    axes = figure.subplots()
    metric = f"val_{found.metric}"
    xs = [float(t.params[x_name]) for t in found.trials]
    ys = [t.metrics[metric] for t in found.trials]
    points = axes.scatter(
        xs,
        ys,
        c=[float(t.params[colour_name]) for t in found.trials],
        cmap="viridis",
        edgecolors="black",
    )
    if label:
        for x, y, trial in zip(xs, ys, found.trials, strict=True):
            axes.annotate(
                loggable(trial.params)[label],
                (x, y),
                fontsize=7,
                xytext=(4, 4),
                textcoords="offset points",
            )
    best = found.best
    axes.scatter(
        [float(best.params[x_name])],
        [best.metrics[metric]],
        s=250,
        facecolors="none",
        edgecolors="red",
    )
    if x_log:
        axes.set_xscale("log")
    axes.set(
        xlabel=f"{x_name}{' (log scale)' if x_log else ''}",
        ylabel=metric,
        title=f"Search: {len(found.trials)} trials",
    )
    figure.colorbar(points, ax=axes, label=colour_name)
    return save_figure(figure, path)


def plot_spark_timeline(
    stages: pd.DataFrame, jobs: list[tuple[int, int]], *, started_ms: int, metrics: dict, path: Path
) -> Path:
    """A run's stages on its time axis (one bar each, coloured by the step that ran it), with
    the seconds no Spark job ran (the driver alone: Python, planning, MLflow) shaded."""
    figure = Figure(figsize=(10, 2.5 + min(len(stages), 40) * 0.12))
    axes = figure.subplots()
    wall = metrics["spark.wall_seconds"]
    gaps, last = [], 0.0
    for start, end in jobs:
        start_s, end_s = (start - started_ms) / 1000, (end - started_ms) / 1000
        if start_s > last:
            gaps.append((last, start_s - last))
        last = max(last, end_s)
    if wall > last:
        gaps.append((last, wall - last))
    for left, width in gaps:
        axes.axvspan(left, left + width, color="#f4cccc", lw=0)
    steps = [step or "(no step)" for step in stages["step"]] if len(stages) else []
    colours = {name: f"C{index % 10}" for index, name in enumerate(dict.fromkeys(steps))}
    if len(stages):  # one call for every bar: a search has hundreds
        widths = np.maximum(stages["seconds"].to_numpy(), wall / 1000)
        axes.barh(
            np.arange(len(stages)),
            widths,
            left=stages["start_s"].to_numpy(),
            color=[colours[step] for step in steps],
            height=0.8,
        )
    legend = [Patch(color="#f4cccc", label="no Spark job running (driver only)")]
    legend += [Patch(color=colour, label=name[:70]) for name, colour in colours.items()]
    axes.set(
        xlim=(0, max(wall, 1e-3)),
        ylim=(-1, max(len(stages), 1)),
        xlabel="seconds since the run started",
        ylabel="stage (in order)",
        title=f"{len(stages)} stages; {metrics['spark.job_seconds']:.1f} s of {wall:.1f} s with a "
        f"Spark job running, {metrics['spark.driver_only_seconds']:.1f} s driver only",
    )
    axes.invert_yaxis()
    axes.legend(
        handles=legend[:13],
        loc="upper center",
        bbox_to_anchor=(0.5, -0.15),
        fontsize="small",
        ncol=2,
    )
    return save_figure(figure, path, dpi=80)  # drawn at every run's end: kept cheap
