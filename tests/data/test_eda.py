"""EDA on a label table with known counts: every number exact, the plots real PNGs."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from sparkles.data.eda import compute, dendrogram_leaves, markdown, write_report

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
def labels(tmp_path: Path) -> dict[str, Any]:
    rows = ["ImageID,Source,LabelName,Confidence"]
    rows += [f"{i},verification,{m},1" for i, mids in IMAGES.items() for m in mids]
    rows += [f"{i},verification,{m},0" for i, m in NEGATIVES]
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "classes.csv").write_text(CLASSES)
    return {
        "labels_csv": str(tmp_path / "labels.csv"),
        "classes_csv": str(tmp_path / "classes.csv"),
        "classes": ["Car", "Tree"],
    }


def test_every_number_is_exact(spark, labels) -> None:
    result = compute(spark, **labels, top_n=3, top_k=5)
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
    # over every row, negatives included: Car 2 positive + 1 negative, Tree 3 + 1
    assert summary["target_classes_all_rows"] == {"Car": 3, "Tree": 4}
    assert result.target_label_rows["positive"] == {"Car": 2, "Tree": 3}
    assert summary["top_labels_all_rows"] == {"Tree": 4, "Car": 3, "Plant": 3}
    phi = result.correlation()
    assert phi[names.index("Car"), names.index("Wheel")] == pytest.approx(1.0)
    assert np.allclose(phi, phi.T)


def test_plots_and_summary_files(spark, labels, tmp_path: Path) -> None:
    result = compute(spark, **labels, top_n=3, top_k=5)
    plots = write_report(result, tmp_path / "report")
    assert set(plots) == {
        "labels_per_image",
        "top_labels",
        "dendrogram",
        "heatmap",
        "target_labels",
    }
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


def test_image_sizes_come_from_the_headers(spark, labels, tmp_path: Path) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    for name, size in (("a", (64, 48)), ("b", (64, 48)), ("c", (30, 90))):
        Image.new("RGB", size, (200, 10, 10)).save(folder / f"{name}.jpg")
    # a header that says 5000 × 4000 and no pixel data: only a decode would fail on it
    with Image.new("RGB", (5000, 4000)) as big:
        buffer = io.BytesIO()
        big.save(buffer, format="JPEG")
    (folder / "d.jpg").write_bytes(buffer.getvalue()[:2000])
    (folder / "e.jpg").write_bytes(b"not an image")
    (folder / "f.jpg").write_bytes(b"")
    result = compute(spark, **labels, images=str(folder))
    table = {(r.width, r.height): r.images for r in result.image_sizes.itertuples()}
    assert table == {(64, 48): 2, (30, 90): 1, (5000, 4000): 1}
    summary = result.summary
    assert summary["images_measured"] == 4
    assert summary["images_without_size"] == 2  # not an image, and the 0-byte file
    assert summary["most_common_size"] == "64x48 (2 images)"
    assert summary["width_max"] == 5000 and summary["height_min"] == 48
    plots = write_report(result, tmp_path / "report")
    with Image.open(plots["image_sizes"]) as image:
        assert image.format == "PNG"
    assert "| images_without_size | 2 |" in (tmp_path / "report" / "eda_summary.md").read_text()
