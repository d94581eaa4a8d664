"""EDA on a label table with known counts: every number exact, the plots real PNGs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sparkles.eda import compute, dendrogram_leaves, markdown, write_report

CLASSES = "/m/0k4j,Car\n/m/07j7r,Tree\n/m/083wq,Wheel\n/m/05s2s,Plant\n/m/01g317,Person\n"
# image: positive labels (plus negatives that must not count)
IMAGES = {
    "i1": ["/m/0k4j", "/m/083wq"],
    "i2": ["/m/0k4j", "/m/083wq", "/m/07j7r"],
    "i3": ["/m/07j7r", "/m/05s2s"],
    "i4": ["/m/07j7r", "/m/05s2s", "/m/01g317"],
    "i5": ["/m/01g317"],
    "i6": ["/m/zzzz"],  # a MID with no display name keeps its MID
}
NEGATIVES = [("i5", "/m/0k4j"), ("i1", "/m/07j7r"), ("i7", "/m/05s2s")]  # i7: negatives only


@pytest.fixture
def labels(tmp_path: Path) -> tuple[str, str]:
    rows = ["ImageID,Source,LabelName,Confidence"]
    rows += [f"{i},verification,{m},1" for i, mids in IMAGES.items() for m in mids]
    rows += [f"{i},verification,{m},0" for i, m in NEGATIVES]
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "classes.csv").write_text(CLASSES)
    return str(tmp_path / "labels.csv"), str(tmp_path / "classes.csv")


def test_every_number_is_exact(spark, labels) -> None:
    result = compute(spark, *labels, ["Car", "Tree"], top_n=3, top_k=5)
    summary = result.summary
    assert summary["label_rows"] == 15
    assert summary["images"] == 7
    assert summary["positive_label_rows"] == 12
    assert summary["images_with_positive_labels"] == 6
    assert summary["distinct_label_names"] == 6
    assert summary["labels_per_image_mean"] == pytest.approx(12 / 6)
    assert summary["labels_per_image_max"] == 3
    assert result.labels_per_image == {1: 2, 2: 2, 3: 2}
    assert summary["target_classes"] == {"Car": 2, "Tree": 3}
    assert summary["images_with_several_target_classes"] == 1  # i2
    assert result.top_labels == [("Tree", 3), ("Car", 2), ("Person", 2)]  # ties by name
    names = result.cooccurrence_labels
    assert names == ["Tree", "Car", "Person", "Plant", "Wheel"]
    matrix = dict(
        ((a, b), int(result.cooccurrence[i, j]))
        for i, a in enumerate(names)
        for j, b in enumerate(names)
    )
    assert matrix[("Car", "Wheel")] == matrix[("Wheel", "Car")] == 2
    assert matrix[("Tree", "Plant")] == 2 and matrix[("Tree", "Car")] == 1
    assert matrix[("Person", "Car")] == 0 and matrix[("Tree", "Tree")] == 3
    phi = result.correlation()
    assert phi[names.index("Car"), names.index("Wheel")] == pytest.approx(1.0)
    assert np.allclose(phi, phi.T)


def test_plots_and_summary_files(spark, labels, tmp_path: Path) -> None:
    result = compute(spark, *labels, ["Car", "Tree"], top_n=3, top_k=5)
    plots = write_report(result, tmp_path / "report")
    assert set(plots) == {"labels_per_image", "top_labels", "dendrogram", "heatmap"}
    for path in plots.values():
        with Image.open(path) as image:
            image.verify()
            assert image.format == "PNG"
    assert sorted(dendrogram_leaves(result)) == sorted(result.cooccurrence_labels)
    leaves = dendrogram_leaves(result)
    assert abs(leaves.index("Car") - leaves.index("Wheel")) == 1  # always together: adjacent
    assert (tmp_path / "report" / "eda_summary.json").is_file()
    text = (tmp_path / "report" / "eda_summary.md").read_text()
    assert "| images_with_several_target_classes | 1 |" in text
    assert markdown(result.summary) == text
