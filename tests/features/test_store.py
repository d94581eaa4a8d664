"""The per-image feature store: the CNN runs only on images it lacks; appends are all or nothing."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np

from sparkles.cli import main as cli_main
from sparkles.cnn.featurizer import DeepImageFeaturizer
from sparkles.config import load_profile
from sparkles.data.sample import ensure_sample
from sparkles.features import segments
from sparkles.features.featurize import featurize
from tests.conftest import write_profile
from tests.images import encode, photo


def _sample(folder: Path, **sections: dict):
    """The sample, its files written an hour ago as photos are: none is racy for the file
    index (written as it is hashed), so what a featurize reads is what the test says."""
    path = write_profile(folder, **sections)
    profile = load_profile(str(path))
    ensure_sample(profile)
    hour_ago = time.time() - 3600
    for file in Path(profile.data.images).iterdir():
        os.utime(file, (hour_ago, hour_ago))
    return str(path), profile


def _labelled_files(profile, count: int) -> list[Path]:
    """``count`` image files that carry exactly one of the profile's classes."""
    rows = Path(profile.data.labels_csv).read_text().splitlines()[1:]
    positives: dict[str, set[str]] = {}
    for row in rows:
        image, _, label, confidence = row.split(",")
        if confidence == "1" and label in ("/m/0k4j", "/m/07j7r"):
            positives.setdefault(image, set()).add(label)
    single = sorted(image for image, labels in positives.items() if len(labels) == 1)
    return [Path(profile.data.images) / f"{image}.jpg" for image in single[:count]]


def _forbid_the_cnn(monkeypatch) -> None:
    def no_cnn(*args, **kwargs):
        raise AssertionError("the featurizer ran")

    monkeypatch.setattr(DeepImageFeaturizer, "_transform", no_cnn)


def _features(result) -> dict[str, np.ndarray]:
    rows = result.table.features().select("image_id", "features").collect()
    return {row.image_id: row.features.toArray() for row in rows}


def test_changing_the_classes_runs_no_cnn(spark, tmp_path: Path, monkeypatch) -> None:
    path, profile = _sample(tmp_path)
    first = featurize(profile, spark)
    _forbid_the_cnn(monkeypatch)
    # every car in the sample is also labelled Vehicle: the same images, other labels
    relabelled = featurize(load_profile(path, ["data.classes=[Vehicle, Tree]"]), spark)
    assert relabelled.counts["computed"] == 0
    assert relabelled.counts["reused"] == relabelled.counts["rows_in"] > 0
    assert relabelled.reused and relabelled.fingerprint != first.fingerprint
    labels = {r.label for r in relabelled.table.features().select("label").distinct().collect()}
    assert labels == {"Vehicle", "Tree"}
    # the same inputs again: the same training table, row for row
    again = featurize(load_profile(path, ["data.classes=[Vehicle, Tree]"]), spark)
    assert again.fingerprint == relabelled.fingerprint
    assert again.table.entry.path == relabelled.table.entry.path
    rows = again.table.read().select("image_id", "label", "image_sha256").collect()
    assert sorted(rows) == sorted(
        relabelled.table.read().select("image_id", "label", "image_sha256").collect()
    )


def test_a_rewrite_keeping_size_and_mtime_is_found_by_rehash(spark, tmp_path: Path) -> None:
    """Same name, same size, same mtime, other bytes (what ``cp -p`` or ``rsync -t`` can leave):
    the file index trusts the metadata, as git does; ``rehash`` reads every file, repairs the
    index and recomputes exactly that file."""
    _, profile = _sample(tmp_path)
    first = featurize(profile, spark)
    target = _labelled_files(profile, 1)[0]
    stat = target.stat()
    data = bytearray(target.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(255 - b for b in data[middle : middle + 64])
    target.write_bytes(bytes(data))
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert target.stat().st_size == stat.st_size and target.stat().st_mtime_ns == stat.st_mtime_ns

    trusted = featurize(profile, spark)
    assert trusted.counts["hashed_files"] == trusted.counts["computed"] == 0
    assert trusted.fingerprint == first.fingerprint

    repaired = featurize(profile, spark, rehash=True)
    counts = repaired.counts
    assert counts["hashed_files"] == counts["matched_files"] and counts["indexed_files"] == 0
    assert counts["index_repaired"] == 1
    assert counts["computed"] == 1 and counts["computed_images"] == 1
    assert counts["reused"] == counts["rows_in"] - 1
    assert repaired.fingerprint != first.fingerprint
    rewritten = repaired.table.read().where(f"image_id = '{target.stem}'").first()
    original = first.table.read().where(f"image_id = '{target.stem}'").first()
    assert rewritten.image_sha256 != original.image_sha256
    assert rewritten.featurize_error is not None or not np.array_equal(
        rewritten.features.toArray(), original.features.toArray()
    )
    after = featurize(profile, spark)  # the repaired index is trusted again
    assert after.counts["hashed_files"] == 0 and after.fingerprint == repaired.fingerprint


def test_appends_compact_past_the_threshold_and_the_newest_row_wins(
    spark, tmp_path: Path, monkeypatch, capsys
) -> None:
    path, profile = _sample(tmp_path)
    aside = tmp_path / "aside"
    aside.mkdir()
    batches = [_labelled_files(profile, 6)[:3], _labelled_files(profile, 6)[3:]]
    for file in batches[0] + batches[1]:
        shutil.move(file, aside / file.name)
    featurize(profile, spark)
    for batch in batches:
        for file in batch:
            shutil.move(aside / file.name, file)
        featurize(profile, spark)
    refreshed = featurize(profile, spark, refresh=True)  # every image again: duplicates
    store = refreshed.table.store
    assert len(store.live_segments()) == 4
    newest = store.live_segments()[-1].key
    assert {r.segment for r in store.read().select("segment").distinct().collect()} == {newest}
    assert store.read().count() == refreshed.counts["rows_in"]
    assert refreshed.counts["computed"] == refreshed.counts["rows_in"]
    before = _features(refreshed)

    capsys.readouterr()
    assert cli_main(["compact", "--profile", path]) == 0
    [report] = json.loads(capsys.readouterr().out)
    assert report["segments_before"] == 4 and report["segments_after"] == 1
    [compacted] = store.live_segments()
    assert sorted(compacted.meta["replaces"]) == sorted(
        name for name in store.segments.listed() if name != compacted.key
    )
    after = featurize(profile, spark)  # reads the compacted segment only
    assert after.reused and after.fingerprint == refreshed.fingerprint
    assert set(_features(after)) == set(before)
    assert all(np.array_equal(before[k], v) for k, v in _features(after).items())
    assert {r.segment for r in store.read().select("segment").distinct().collect()} == {newest}

    # replaced segments stay while a reader may still hold them, then go
    assert len(store.segments.listed()) == 5
    store.tidy()
    assert len(store.segments.listed()) == 5
    monkeypatch.setattr(segments, "STALE_AFTER_SECONDS", -1)
    store.tidy()
    assert store.segments.listed() == [compacted.key]

    # automatically: an append that leaves more than compact_after_segments compacts them
    _labelled_files(profile, 7)[6].write_bytes(encode(photo(160, 120, seed=5)))
    grown = featurize(load_profile(path, ["store.compact_after_segments=1"]), spark)
    assert grown.counts["computed"] == 1
    [merged] = store.live_segments()
    assert merged.key != compacted.key and compacted.key in merged.meta["replaces"]


def test_a_file_system_failure_is_one_line_naming_the_path(spark, tmp_path: Path, capsys) -> None:
    """The store's folder cannot be made (a file stands where it would go): the user reads one
    line with the path and the file system's own reason, the run ends FAILED."""
    import mlflow

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file, not a folder")
    path, profile = _sample(tmp_path)
    capsys.readouterr()
    code = cli_main(["featurize", "--profile", path, "--set", f"store.dir={blocker}/cache"])
    err = capsys.readouterr().err
    assert code == 1
    [line] = [text for text in err.splitlines() if text.startswith("error:")]
    assert str(blocker / "cache") in line and "not a directory" in line
    assert "Traceback" not in err and "py4j" not in err.lower()
    mlflow.set_tracking_uri(profile.mlflow.tracking_uri)
    [run] = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert run.info.status == "FAILED"
