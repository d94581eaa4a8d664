"""Every input accounted for on every file system.

Odd file names are counted once; a cache entry is trusted only when every file it names is
there; saved featurizers find their weights on a non-local default file system and in a second
SparkSession; any decoding error quarantines one image; featurize reads only the files that can
match a label.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from urllib.parse import urlparse

import pytest
from pyspark.sql import functions as F

from sparkles.config import load_profile
from sparkles.deploy.predict import predict
from sparkles.deploy.registry import best_run
from sparkles.features.commit import CommittedTables
from sparkles.features.featurize import featurize
from sparkles.progress import input_bytes
from tests.conftest import ROOT, write_profile
from tests.images import encode, photo

ODD_NAMES = ["car photo 1", "100%car", "café"]


def _labels(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _write_labels(path: Path, rows: list[dict[str, str]]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _target_ids(rows: list[dict[str, str]], classes_csv: Path) -> dict[str, set[str]]:
    """ImageID → the target classes (Car, Tree) it carries as positive labels."""
    names = dict(line.strip().split(",", 1) for line in classes_csv.read_text().splitlines())
    targets: dict[str, set[str]] = {}
    for row in rows:
        name = names.get(row["LabelName"])
        if row["Confidence"] == "1" and name in ("Car", "Tree"):
            targets.setdefault(row["ImageID"], set()).add(name)
    return targets


@pytest.fixture
def odd_folder(tmp_path: Path) -> Path:
    """The sample, with three labelled images renamed to names people give photos, a labelled
    0-byte file and an unlabelled photo, both with such names too."""
    profile_file = write_profile(
        tmp_path, data={"sample": {"images": 30, "seed": 4, "size": [128, 96]}}
    )
    profile = load_profile(str(profile_file))
    from sparkles.data.sample import ensure_sample

    ensure_sample(profile)
    images, labels_csv = Path(profile.data.images), Path(profile.data.labels_csv)
    rows = _labels(labels_csv)
    targets = _target_ids(rows, Path(profile.data.classes_csv))
    single = [image_id for image_id, names in sorted(targets.items()) if len(names) == 1]
    renamed = dict(zip(single[:3], ODD_NAMES, strict=True))
    for old, new in renamed.items():
        (images / f"{old}.jpg").rename(images / f"{new}.jpg")
    for row in rows:
        row["ImageID"] = renamed.get(row["ImageID"], row["ImageID"])
    empty_source = next(row for row in rows if row["ImageID"] == single[3])
    rows.append({**empty_source, "ImageID": "IMG 0001"})
    (images / "IMG 0001.jpg").write_bytes(b"")
    shutil.copyfile(images / "café.jpg", images / "Été 2024.jpg")  # no label
    _write_labels(labels_csv, rows)
    return profile_file


def _expected_counts(profile_file: Path) -> dict[str, int]:
    profile = load_profile(str(profile_file))
    on_disk = sorted(Path(profile.data.images).glob("*.jpg"))
    targets = _target_ids(_labels(Path(profile.data.labels_csv)), Path(profile.data.classes_csv))
    return {
        "files": len(on_disk),
        "empty_files": sum(p.stat().st_size == 0 for p in on_disk),
        "unlabeled_files": sum(p.stem not in targets for p in on_disk),
        "policy_dropped_files": sum(len(targets.get(p.stem, ())) > 1 for p in on_disk),
    }


def test_odd_file_names_are_counted_once_by_featurize(spark, odd_folder: Path) -> None:
    expected = _expected_counts(odd_folder)
    assert expected["empty_files"] == 1 and expected["unlabeled_files"] >= 1
    result = featurize(load_profile(str(odd_folder)), spark)
    counts = result.counts
    for key, value in expected.items():
        assert counts[key] == value, (key, counts)
    assert counts["files"] == (
        counts["matched_files"] + counts["unlabeled_files"] + counts["policy_dropped_files"]
    )
    assert counts["rows_in"] == counts["featurized"] + counts["quarantined"]
    assert counts["quarantined"] == 1
    table = result.table.read()
    names = {row.path.rsplit("/", 1)[-1]: row.featurize_error for row in table.collect()}
    assert len(names) == table.count() == counts["rows_in"]
    for name in ODD_NAMES:
        assert names[f"{name}.jpg"] is None
    assert names["IMG 0001.jpg"].startswith("empty file")


def test_odd_file_names_are_counted_once_by_predict(
    spark, registry_store, odd_folder: Path, tmp_path: Path
) -> None:
    expected = _expected_counts(odd_folder)
    images = load_profile(str(odd_folder)).data.images
    run = best_run("reg-strong", "auc", allow_random_weights=True)
    result = predict(
        spark, f"runs:/{run.info.run_id}/model", images=images, output=str(tmp_path / "out")
    )
    assert result.images == expected["files"]
    assert result.quarantined == 1 and result.scored == expected["files"] - 1
    scored = spark.read.parquet(str(tmp_path / "out" / "predictions"))
    assert scored.select("path").distinct().count() == result.scored
    names = {row.path.rsplit("/", 1)[-1] for row in scored.select("path").collect()}
    assert {f"{name}.jpg" for name in ODD_NAMES} | {"Été 2024.jpg"} <= names


def _local(uri: str) -> Path:
    return Path(urlparse(uri).path)


def _small_table(spark, rows: int = 64):
    return (
        spark.range(rows)
        .repartition(4)
        .select(
            F.col("id").cast("string").alias("path"),
            F.lit(None).cast("string").alias("featurize_error"),
        )
    )


def test_lookup_never_trusts_an_entry_with_a_missing_or_short_file(spark, tmp_path: Path) -> None:
    """On S3A a directory "rename" is a copy: an interrupted one leaves part of the table."""
    cache = CommittedTables(spark, str(tmp_path / "cache"))
    entry = cache.commit("k1", cache.stage("k1", _small_table(spark)), {"counts": {}})
    assert cache.lookup("k1") is not None
    assert cache.lookup("k1").read(spark).count() == 64
    parts = sorted(_local(entry.table).glob("part-*"))
    assert len(parts) == 4
    parts[0].unlink()
    assert cache.lookup("k1") is None

    entry = cache.commit("k2", cache.stage("k2", _small_table(spark)), {"counts": {}})
    part = sorted(_local(entry.table).glob("part-*"))[1]
    part.write_bytes(part.read_bytes()[:-10])
    assert cache.lookup("k2") is None


def test_concurrent_writers_of_one_key_keep_each_others_staging(spark, tmp_path: Path) -> None:
    cache = CommittedTables(spark, str(tmp_path / "cache"))
    first = cache.stage("k", _small_table(spark, 40))
    second = cache.stage("k", _small_table(spark, 40))
    assert list(_local(first.table).glob("part-*")), "the second writer deleted the first's table"
    cache.commit("k", first, {"counts": {"rows_in": 40}})
    cache.commit("k", second, {"counts": {"rows_in": 40}})
    entry = cache.lookup("k")
    assert entry is not None and entry.read(spark).count() == 40


def test_a_refresh_replaces_the_entry_and_lookup_reads_the_new_table(spark, tmp_path: Path) -> None:
    cache = CommittedTables(spark, str(tmp_path / "cache"))
    cache.commit("k", cache.stage("k", _small_table(spark, 10)), {"counts": {}})
    cache.commit("k", cache.stage("k", _small_table(spark, 30)), {"counts": {}})
    assert cache.lookup("k").read(spark).count() == 30


SECOND_SESSION = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path

    import mlflow
    import numpy as np
    from pyspark.ml import Pipeline, PipelineModel
    from pyspark.sql import SparkSession

    from sparkles.cnn.featurizer import DeepImageFeaturizer
    from sparkles.cnn.backbones import get_spec
    from sparkles.model.stages import stage_of

    work, photos = Path(sys.argv[1]), Path(sys.argv[2]).as_uri()
    weights = work / "w" / "mobilenet.weights.h5"
    weights.parent.mkdir()
    get_spec("MobileNetV2").build(None, "avg", seed=42).save_weights(str(weights))

    def session(**conf):
        builder = SparkSession.builder.master("local[2]").config("spark.ui.enabled", "false")
        for key, value in conf.items():
            builder = builder.config(key, value)
        return builder.getOrCreate()

    def features(model, spark):
        images = spark.read.format("binaryFile").load(photos).select("path", "content")
        rows = model.transform(images).select("path", "features", "featurize_error").collect()
        assert all(r.featurize_error is None for r in rows), rows
        return {r.path.rsplit("/", 1)[-1]: r.features.toArray() for r in rows}

    def featurizer():
        return DeepImageFeaturizer(modelName="MobileNetV2", weights=str(weights), batchSize=4)

    first = session()
    images = first.read.format("binaryFile").load(photos)
    model = Pipeline(stages=[featurizer()]).fit(images)
    reference = features(model, first)
    model.save((work / "saved").as_uri())
    first.stop()

    # A second SparkContext in this process, whose default file system is not the local disk
    # (as HDFS on YARN): MLflow saves the model through it, copies it there again to load it,
    # and loads it by a bare path. (MLflow caches the first context's FileSystem: that is why
    # the first context here does not touch MLflow.)
    second = session(**{
        "spark.hadoop.fs.defaultFS": "viewfs://cluster/",
        "spark.hadoop.fs.viewfs.mounttable.cluster.linkFallback": (work / "dfs").as_uri(),
    })
    mlflow.set_tracking_uri(f"sqlite:///{work / 'mlruns.db'}")
    with mlflow.start_run() as run:
        saved = PipelineModel.load((work / "saved").as_uri())
        mlflow.spark.log_model(saved, artifact_path="model")
    loaded = mlflow.spark.load_model(f"runs:/{run.info.run_id}/model")
    stage = stage_of(loaded, DeepImageFeaturizer)
    by_mlflow = features(loaded, second)
    again = features(featurizer(), second)  # the same weights file, shipped to the new context
    ships = sorted(p.name for p in Path(work / "tmp").glob("sparkles-ship-*"))
    second.stop()
    print(json.dumps({
        "weights_param": stage.getOrDefault(stage.weights),
        "copied_to_dfs": sorted(p.name for p in (work / "dfs" / "tmp" / "mlflow").iterdir()),
        "max_diff_mlflow": max(float(np.abs(by_mlflow[k] - reference[k]).max()) for k in reference),
        "max_diff_again": max(float(np.abs(again[k] - reference[k]).max()) for k in reference),
        "same_images": sorted(by_mlflow) == sorted(reference) == sorted(again),
        "ship_dirs_while_second_runs": ships,
    }))
    """
)


@pytest.mark.e2e
def test_weights_reach_a_second_session_and_a_non_local_default_fs(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for seed in range(3):
        (photos / f"photo{seed}.jpg").write_bytes(encode(photo(200, 150, seed=seed)))
    work = tmp_path / "work"
    (work / "tmp").mkdir(parents=True)
    (work / "dfs").mkdir()
    script = tmp_path / "second_session.py"
    script.write_text(SECOND_SESSION)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")},
        "TMPDIR": str(work / "tmp"),
        "PYSPARK_PYTHON": sys.executable,
    }
    done = subprocess.run(
        [sys.executable, str(script), str(work), str(photos)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["weights_param"].startswith("viewfs://cluster/tmp/mlflow/"), report
    assert report["copied_to_dfs"], "MLflow did not copy the model to the default file system"
    assert report["same_images"]
    assert report["max_diff_mlflow"] == 0.0 and report["max_diff_again"] == 0.0
    assert len(report["ship_dirs_while_second_runs"]) == 1  # the first context's copy is gone
    assert not list((work / "tmp").glob("sparkles-ship-*"))  # and the last one, at exit


def test_reads_scale_with_the_labelled_files(spark, tmp_path: Path) -> None:
    """9 of 10 files have no label: featurize reads the labelled tenth's bytes (twice where new:
    hashed, then decoded) and its own Parquet, not the folder."""
    profile_file = write_profile(
        tmp_path, data={"sample": {"images": 16, "seed": 6, "size": [160, 120]}}
    )
    profile = load_profile(str(profile_file))
    from sparkles.data.sample import ensure_sample

    ensure_sample(profile)
    images = Path(profile.data.images)
    labelled = sorted(images.glob("*.jpg"))
    for copy in range(9):
        for path in labelled:
            shutil.copyfile(path, path.with_name(f"unlabelled{copy}-{path.name}"))
    expected = _expected_counts(profile_file)
    before = input_bytes(spark)
    counts = featurize(profile, spark).counts
    read = input_bytes(spark) - before
    for key, value in expected.items():
        assert counts[key] == value, (key, counts)
    assert counts["unlabeled_files"] >= 9 * len(labelled)
    matched = {p.stem for p in labelled} - {
        p.stem
        for p in labelled
        if p.stem
        not in _target_ids(_labels(Path(profile.data.labels_csv)), Path(profile.data.classes_csv))
    }
    assert counts["rows_in"] == counts["featurized"] + counts["quarantined"]
    needed = sum((images / f"{stem}.jpg").stat().st_size for stem in matched)
    folder = sum(p.stat().st_size for p in images.glob("*.jpg"))
    assert read < 0.5 * folder, (read, needed, folder)
    assert read >= needed
