"""A run explains its Spark work: the application it ran in, per-stage time and spill, the
longest queries' final plans, a trial's jobs told apart (sparkles.observe)."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pandas as pd
import pytest

from sparkles import tracking
from sparkles.config import load_profile
from sparkles.observe import observed_run, tagged_jobs
from sparkles.progress import step
from sparkles.train.splits import split_params, train_and_test
from tests.conftest import write_profile


def test_a_run_made_to_spill_names_the_stage_and_its_trials_apart(spark, tmp_path: Path) -> None:
    """The split's window, with Spark's buffers for it set to a few rows (as in
    docs/troubleshooting.md's worked example), spills: the run's metrics show it and
    stages.csv names the stage's step; a nested run's jobs carry its id."""
    profile = load_profile(str(write_profile(tmp_path, observe={"enabled": True})))
    # few rows, few spills: each spill file is read back through its own buffer, and the
    # suite's one JVM has 1 GB of heap to share (600 rows in 16-row spills ran it out)
    table = spark.createDataFrame(
        [(f"img{i:04d}", "Car" if i % 3 else "Tree") for i in range(120)], ["image_id", "label"]
    )
    tiny = (
        "spark.sql.windowExec.buffer.in.memory.threshold",
        "spark.sql.windowExec.buffer.spill.threshold",
    )
    for key, rows in zip(tiny, ("8", "32"), strict=True):
        spark.conf.set(key, rows)
    try:
        with observed_run(profile, spark, "spill") as active:
            train, test = train_and_test(table, split_params(profile.train))
            with step(spark, "split"):  # as train's own split is
                assert train.count() + test.count() == 120
            with (
                tracking.run(profile, "trial-001", nested=True) as child,
                tagged_jobs(spark, child.info.run_id),
            ):
                assert spark.range(10).count() == 10
    finally:
        for key in tiny:
            spark.conf.unset(key)
    run = mlflow.get_run(active.info.run_id)
    tags, metrics = run.data.tags, run.data.metrics
    assert tags["sparkles.spark.app_id"] == spark.sparkContext.applicationId
    assert tags["sparkles.spark.version"] == spark.version
    assert tags["sparkles.spark.master"] == spark.sparkContext.master
    # the suite's session writes no event log (conftest): the tag says where one is, or nothing
    assert "sparkles.spark.event_log_dir" not in tags
    assert spark.sparkContext.getConf().get("spark.eventLog.enabled", "false") == "false"
    assert metrics["spark.memory_spill_bytes"] > 0 and metrics["spark.disk_spill_bytes"] > 0
    assert metrics["spark.job_seconds"] + metrics["spark.driver_only_seconds"] == pytest.approx(
        metrics["spark.wall_seconds"]
    )
    assert metrics["spark.tasks"] > 0 and metrics["spark.failed_tasks"] == 0

    folder = Path(
        mlflow.artifacts.download_artifacts(run_id=active.info.run_id, dst_path=str(tmp_path / "a"))
    )
    stages = pd.read_csv(folder / "spark" / "stages.csv", keep_default_na=False)
    assert stages.memory_spill_bytes.sum() == metrics["spark.memory_spill_bytes"]
    spilled = stages[stages.memory_spill_bytes > 0]
    assert len(spilled) and (spilled.step == "split").all(), spilled.step
    trial = stages[stages.nested_run == child.info.run_id]
    assert len(trial) >= 1 and (stages.nested_run == "").sum() == len(stages) - len(trial)
    assert (folder / "spark" / "timeline.png").stat().st_size > 0
    plans = sorted((folder / "spark" / "plans").glob("*.txt"))
    assert 1 <= len(plans) <= profile.observe.plans
    text = "\n".join(plan.read_text() for plan in plans)
    assert "isFinalPlan=true" in text and "Window" in text and "spill size" in text
