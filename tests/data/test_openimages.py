"""Open Images ingest with Spark: positives only, names, the multi-label policy, file matching."""

from __future__ import annotations

from pathlib import Path

import pytest

from sparkles.data.images import read_image_files
from sparkles.data.openimages import IngestError, match_files, select_target_labels
from tests.images import encode, photo

CLASSES_V5 = "/m/0k4j,Car\n/m/07j7r,Tree\n/m/01g317,Person\n"
LABELS = """ImageID,Source,LabelName,Confidence
img1,verification,/m/0k4j,1
img2,verification,/m/07j7r,1
img3,verification,/m/0k4j,1
img3,crowdsource-verified,/m/07j7r,1
img4,verification,/m/0k4j,0
img5,verification,/m/07j7r,1
img5,verification,/m/01g317,1
img6,verification,/m/0k4j,1
img8,verification,/m/07j7r,1
img2,verification,/m/07j7r,1
"""


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    (tmp_path / "classes.csv").write_text(CLASSES_V5)
    (tmp_path / "labels.csv").write_text(LABELS)
    images = tmp_path / "images" / "nested"
    images.mkdir(parents=True)
    for name in ("img1", "img2", "img3", "img4", "img5", "img7"):
        (images / f"{name}.jpg").write_bytes(encode(photo(32, 24)))
    (images / "img8.jpg").write_bytes(b"")  # empty: Spark's binaryFile skips it silently
    (images / "notes.txt").write_text("not matched by the glob")
    return tmp_path


def _labels(spark, root: Path, classes=("Car", "Tree"), policy="drop", classes_csv="classes.csv"):
    return select_target_labels(
        spark,
        str(root / "labels.csv"),
        classes_csv=str(root / classes_csv),
        classes=list(classes),
        policy=policy,
    )


def test_positive_labels_only_with_names(spark, dataset: Path) -> None:
    labeled = _labels(spark, dataset)
    got = {(r.image_id, r.label) for r in labeled.labels.collect()}
    # img4 has only a negative Car row; img3 carries both classes and is dropped
    assert got == {
        ("img1", "Car"),
        ("img2", "Tree"),
        ("img5", "Tree"),
        ("img6", "Car"),
        ("img8", "Tree"),
    }
    assert labeled.counts["label_rows"] == 10
    assert labeled.counts["positive_label_rows"] == 9
    assert labeled.counts["images_in_labels"] == 7
    assert labeled.counts["images_with_target"] == 6
    assert labeled.counts["multi_label_images"] == 1
    assert labeled.counts["labeled_images"] == 5
    assert [list(r.labels) for r in labeled.multi_label.collect()] == [["Car", "Tree"]]


@pytest.mark.parametrize(
    ("classes", "expected"), [(("Car", "Tree"), "Car"), (("Tree", "Car"), "Tree")]
)
def test_keep_first_follows_class_order(spark, dataset: Path, classes, expected) -> None:
    labeled = _labels(spark, dataset, classes=classes, policy="keep-first")
    got = dict((r.image_id, r.label) for r in labeled.labels.collect())
    assert got["img3"] == expected
    assert labeled.counts["multi_label_images"] == 1
    assert labeled.counts["labeled_images"] == 6


def test_keep_all_keeps_one_row_per_target_class(spark, dataset: Path) -> None:
    labeled = _labels(spark, dataset, policy="keep-all")
    got = sorted((r.image_id, r.label) for r in labeled.labels.collect())
    assert [label for image, label in got if image == "img3"] == ["Car", "Tree"]
    assert labeled.counts["labeled_images"] == 6
    assert labeled.counts["labeled_rows"] == 7
    matched = match_files(labeled, read_image_files(spark, str(dataset / "images")))
    counts = matched.counts
    # img3's file is matched once, and counted once per class it keeps
    assert counts["matched_files"] == 5 and counts["matched_rows"] == 6
    assert counts["policy_dropped_files"] == 0
    assert counts["files"] == counts["matched_files"] + counts["unlabeled_files"]
    assert matched.matched.count() + matched.empty.count() == counts["matched_rows"]


def test_v7_class_file_with_header_and_case_insensitive_names(spark, dataset: Path) -> None:
    (dataset / "v7.csv").write_text("LabelName,DisplayName\n" + CLASSES_V5)
    labeled = _labels(spark, dataset, classes=("car", "TREE"), classes_csv="v7.csv")
    assert labeled.counts["labeled_images"] == 5
    assert {r.label for r in labeled.labels.collect()} == {"car", "TREE"}


def test_unknown_class_is_an_error(spark, dataset: Path) -> None:
    with pytest.raises(IngestError, match=r"no class named \['Bus'\]"):
        _labels(spark, dataset, classes=("Car", "Bus"))


def test_wrong_labels_header_is_an_error(spark, dataset: Path) -> None:
    (dataset / "labels.csv").write_text("id,label\nimg1,Car\n")
    with pytest.raises(IngestError, match="expected the Open Images header"):
        _labels(spark, dataset)


def test_files_matched_missing_unlabeled_and_empty(spark, dataset: Path) -> None:
    labeled = _labels(spark, dataset)
    matched = match_files(labeled, read_image_files(spark, str(dataset / "images")))
    assert {r.image_id for r in matched.matched.collect()} == {"img1", "img2", "img5"}
    assert [(r.image_id, r.label) for r in matched.empty.collect()] == [("img8", "Tree")]
    assert [r.image_id for r in matched.missing.collect()] == ["img6"]
    counts = matched.counts
    assert counts == {
        "files": 7,
        "empty_files": 1,
        "matched_files": 4,
        "matched_rows": 4,
        "missing_files": 1,
        "unlabeled_files": 2,  # img4 (negative label only) and img7 (no label)
        "policy_dropped_files": 1,  # img3: Car and Tree
    }
    assert (
        counts["files"]
        == counts["matched_files"] + counts["unlabeled_files"] + counts["policy_dropped_files"]
    )
