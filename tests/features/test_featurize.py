"""Featurize on the sample: rows reconcile, only complete cache entries count, MLflow logs it."""

from __future__ import annotations

import csv
import json
import os
import time
from pathlib import Path
from urllib.parse import urlparse

import mlflow
import pytest

from sparkles.cnn.featurizer import DeepImageFeaturizer
from sparkles.cnn.runtimes import cpu_has_bf16
from sparkles.cnn.weights import WeightsUnavailableError
from sparkles.commands import run_featurize
from sparkles.config import load_profile
from sparkles.data.sample import ensure_sample
from sparkles.features.commit import STALE_AFTER_SECONDS, CommittedTables
from sparkles.features.featurize import featurize
from tests.conftest import warned_once, write_profile
from tests.images import encode, photo


def _labelled_ids(profile) -> list[str]:
    with open(profile.data.labels_csv) as handle:
        rows = [
            r
            for r in csv.DictReader(handle)
            if r["Confidence"] == "1" and r["LabelName"] == "/m/0k4j"
        ]
    return sorted({r["ImageID"] for r in rows})


@pytest.fixture(scope="module")
def damaged(tmp_path_factory: pytest.TempPathFactory):
    """The test sample with one empty, one truncated, one non-image and one missing file."""
    folder = tmp_path_factory.mktemp("damaged")
    profile = load_profile(str(write_profile(folder)))
    ensure_sample(profile)
    images = Path(profile.data.images)
    ids = [i for i in _labelled_ids(profile) if (images / f"{i}.jpg").exists()]
    jpeg = encode(photo(seed=4))
    (images / f"{ids[0]}.jpg").write_bytes(b"")
    (images / f"{ids[1]}.jpg").write_bytes(jpeg[: len(jpeg) // 3])
    (images / f"{ids[2]}.jpg").write_text("<html>not a photo</html>")
    (images / f"{ids[3]}.jpg").unlink()
    return folder, {"empty": ids[0], "truncated": ids[1], "text": ids[2], "missing": ids[3]}


def _profile(folder: Path, *overrides: str):
    return load_profile(str(folder / "profile.yaml"), list(overrides))


def test_rows_in_equal_featurized_plus_quarantined(spark, damaged, tmp_path: Path) -> None:
    folder, ids = damaged
    result = featurize(_profile(folder, f"store.dir={tmp_path / 'cache'}"), spark)
    counts = result.counts
    assert not result.reused
    assert counts["rows_in"] == counts["featurized"] + counts["quarantined"]
    assert counts["quarantined"] == 3
    assert counts["missing_files"] == 1
    assert counts["empty_files"] == 1
    assert (
        counts["files"]
        == counts["matched_files"] + counts["unlabeled_files"] + counts["policy_dropped_files"]
    )
    assert counts["computed"] == counts["rows_in"] and counts["reused"] == 0
    # 0-byte, truncated and text files: three images, all through the featurizer in this run
    assert counts["computed_images"] == counts["rows_in"]
    reasons = {r.image_id: r.featurize_error for r in result.table.quarantine().collect()}
    assert reasons[ids["empty"]].startswith("empty file")
    assert reasons[ids["truncated"]].startswith("corrupt or truncated")
    assert reasons[ids["text"]].startswith("not an image")
    table = result.table.features()
    assert table.count() == counts["featurized"]
    assert {r.label for r in table.select("label").distinct().collect()} == {"Car", "Tree"}
    assert len(table.first().features) == 1280  # MobileNetV2, pooled
    assert result.images_per_second > 0


def test_a_second_run_reuses_every_image(spark, damaged, tmp_path: Path, monkeypatch) -> None:
    folder, _ = damaged
    profile = _profile(folder, f"store.dir={tmp_path / 'cache'}")
    first = featurize(profile, spark)

    def no_cnn(*args, **kwargs):
        raise AssertionError("the featurizer ran on a cache hit")

    monkeypatch.setattr(DeepImageFeaturizer, "_transform", no_cnn)
    second = featurize(profile, spark)
    assert second.reused
    assert second.fingerprint == first.fingerprint
    assert second.counts["featurized"] == first.counts["featurized"]
    assert second.counts["quarantined"] == 3  # stored too: an unchanged bad file is not retried
    assert second.counts["computed"] == 0 and second.counts["reused"] == first.counts["rows_in"]
    monkeypatch.undo()
    rebuilt = featurize(profile, spark, refresh=True)
    assert not rebuilt.reused and rebuilt.fingerprint == first.fingerprint
    assert rebuilt.counts["computed"] == rebuilt.counts["rows_in"]


def test_other_settings_use_another_store(spark, tmp_path: Path) -> None:
    profile = load_profile(str(write_profile(tmp_path)))
    ensure_sample(profile)
    first = featurize(profile, spark)
    pooled_max = featurize(
        load_profile(str(tmp_path / "profile.yaml"), ["featurizer.pooling=max"]), spark
    )
    assert pooled_max.fingerprint != first.fingerprint
    assert pooled_max.table.store.root != first.table.store.root
    assert pooled_max.counts["computed"] == pooled_max.counts["rows_in"]
    # another runtime's features (equal to 1e-8, but not bit-equal) are not served from this one
    keras = featurize(
        load_profile(str(tmp_path / "profile.yaml"), ["featurizer.runtime=keras"]), spark
    )
    assert keras.table.store.root != first.table.store.root
    assert keras.counts["computed"] == keras.counts["rows_in"]


@pytest.mark.skipif(cpu_has_bf16(), reason="this CPU has bf16: the fallback cannot happen here")
def test_bf16_requested_on_a_cpu_without_it_is_recorded_as_the_f32_that_ran(
    spark, damaged, tmp_path: Path, caplog
) -> None:
    folder, _ = damaged
    cache = f"store.dir={tmp_path / 'cache'}"
    f32 = featurize(_profile(folder, cache), spark)
    with warned_once(caplog, "no bf16 instructions"):
        asked_bf16 = run_featurize(_profile(folder, cache, "featurizer.precision=bf16"), spark)
    assert asked_bf16.reused and asked_bf16.fingerprint == f32.fingerprint
    run = mlflow.search_runs(
        experiment_names=["sparkles-test"], output_format="list", max_results=1
    )[0]
    assert run.data.params["precision"] == "f32"
    assert run.data.tags["sparkles.featurizer.precision_requested"] == "bf16"


def test_partial_entries_are_never_trusted(spark, tmp_path: Path) -> None:
    cache = CommittedTables(spark, str(tmp_path / "cache"))
    table = spark.createDataFrame([("a", 1)], "path string, x int")
    staged = cache.stage("abc", table)  # an interrupted run: staged, never committed
    assert cache.lookup("abc") is None
    # a directory under the final name without meta.json (e.g. a crash mid-copy on S3)
    table.write.parquet(cache.entry_path("abc") + "/table")
    assert cache.lookup("abc") is None
    committed = cache.commit("abc", cache.stage("abc", table), {"counts": {}})
    assert cache.lookup("abc") == committed
    # a table no meta.json names is kept while it may still be written to, removed once stale
    abandoned = Path(urlparse(staged.table).path)
    assert abandoned.is_dir()
    hours_ago = time.time() - STALE_AFTER_SECONDS - 3600
    for path in [abandoned, *abandoned.rglob("*")]:
        os.utime(path, (hours_ago, hours_ago))
    cache.commit("abc", cache.stage("abc", table), {"counts": {}})
    assert not abandoned.exists()
    assert Path(urlparse(committed.table).path).is_dir()  # younger: another writer's, perhaps
    other = Path(cache.commit("def", cache.stage("def", table), {}).path.removeprefix("file:"))
    (other / "meta.json").write_text('{"fingerprint": "abc"}')
    assert cache.lookup("def") is None  # changed behind Hadoop's back: checksum mismatch
    (other / ".meta.json.crc").unlink()
    assert cache.lookup("def") is None  # readable, but meta.json does not match its key


def test_featurize_run_is_logged(spark, damaged, tmp_path: Path) -> None:
    folder, ids = damaged
    profile = _profile(folder, f"store.dir={tmp_path / 'cache'}")
    result = run_featurize(profile, spark)
    run = mlflow.search_runs(
        experiment_names=["sparkles-test"], output_format="list", max_results=1
    )[0]
    assert run.info.status == "FINISHED"
    assert run.data.tags["sparkles.store.fingerprint"] == result.fingerprint
    assert run.data.tags["sparkles.weights.used"] == "random"
    assert run.data.params["runtime"] == "openvino" == profile.featurizer.runtime
    assert run.data.params["precision"] == "f32" == result.precision
    assert run.data.tags["sparkles.featurizer.precision"] == "f32"
    assert run.data.metrics["count_quarantined"] == 3
    assert run.data.metrics["count_rows_in"] == result.counts["rows_in"]
    assert (
        run.data.metrics["count_computed"] + run.data.metrics["count_reused"]
        == (result.counts["rows_in"])
    )
    assert run.data.tags["sparkles.store.table"] == result.table.entry.path
    assert run.data.metrics["images_per_second"] > 0
    local = mlflow.artifacts.download_artifacts(
        run_id=run.info.run_id, dst_path=str(tmp_path / "a")
    )
    with open(Path(local) / "featurize" / "quarantine.csv") as handle:
        quarantined = {row["image_id"]: row["reason"] for row in csv.DictReader(handle)}
    assert set(quarantined) == {ids["empty"], ids["truncated"], ids["text"]}


def test_weights_fall_back_only_where_the_profile_allows(
    spark, damaged, tmp_path: Path, caplog
) -> None:
    folder, _ = damaged
    missing = tmp_path / "absent.h5"
    strict = _profile(folder, f"featurizer.weights={missing}", f"store.dir={tmp_path / 'c1'}")
    with pytest.raises(WeightsUnavailableError, match="absent.h5"):
        run_featurize(strict, spark)
    failed = mlflow.search_runs(
        experiment_names=["sparkles-test"], output_format="list", max_results=1
    )[0]
    assert failed.info.status == "FAILED"
    assert "absent.h5" in failed.data.tags["sparkles.error"]

    lenient = _profile(
        folder,
        f"featurizer.weights={missing}",
        "featurizer.allow_random_weights=true",
        f"store.dir={tmp_path / 'c2'}",
    )
    with warned_once(caplog, "falling back to RANDOM weights"):
        result = featurize(lenient, spark)
    assert result.weights.kind == "random"
    settings = json.loads(Path(urlparse(result.table.store.root).path, "settings.json").read_text())
    assert settings["weights"] == result.weights.identity
    assert result.weights.identity.startswith("random")
