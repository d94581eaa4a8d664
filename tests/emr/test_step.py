"""What the EMR step does on the primary node when EMR cancels it, as AWS documents CancelSteps:
``SEND_INTERRUPT`` sends SIGTERM to the step's process alone, and "your step logic" must end
its descendants (AWS, "Cancel steps"). The step runs ``mlflow run``, which starts the entry
point in a process group of its own (``os.setsid``), so nothing else would reach it: the Spark
driver would go on writing into a run already marked KILLED."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import mlflow
import pytest

pytestmark = pytest.mark.e2e  # the step, `mlflow run` and the entry point: real processes

MLPROJECT = """name: step-under-test
entry_points:
  main:
    command: "python tree.py"
"""
# The entry point: a child of its own (as a Spark driver's JVM is), both recording their pids;
# with IGNORE set, the child ignores SIGTERM (a driver stuck in a shutdown hook).
TREE = """
import os, signal, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", '''
import os, signal, sys, time
if os.environ.get("IGNORE"):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
open("child.pid", "w").write(str(os.getpid()))
time.sleep(600)
'''])
open("entry.pid", "w").write(str(os.getpid()))
print("the entry point is at work", flush=True)
child.wait()
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie has ended
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("ignore", ["", "1"], ids=["ends-on-sigterm", "ignores-sigterm"])
def test_sigterm_to_the_step_alone_ends_every_process_of_the_entry_point(
    tmp_path: Path, ignore: str
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "MLproject").write_text(MLPROJECT)
    (project / "tree.py").write_text(TREE)
    archive = tmp_path / "project.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(project, arcname=".")
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(store)
    experiment = mlflow.create_experiment("step", artifact_location=str(tmp_path / "artifacts"))
    run = mlflow.MlflowClient().create_run(experiment)
    work = tmp_path / "node"
    work.mkdir()
    env = {
        **os.environ,
        "IGNORE": ignore,
        "SPARKLES_STEP_GRACE_SECONDS": "3",
        "SPARKLES_STEP_LOG_SECONDS": "1",
        "TMPDIR": str(work),
    }
    env.pop("MLFLOW_TRACKING_URI", None)  # the cluster's side: only what the step is given
    step = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sparkles.emr.step",
            "--archive",
            str(archive),
            "--entry-point",
            "main",
            "--run-id",
            run.info.run_id,
            "--experiment-id",
            experiment,
            "--tracking-uri",
            store,
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        pids = {}
        while time.monotonic() < deadline and len(pids) < 2:
            for name in ("entry", "child"):
                found = list(work.rglob(f"{name}.pid"))
                if found and found[0].read_text():
                    pids[name] = int(found[0].read_text())
            assert step.poll() is None, step.stdout.read()
            time.sleep(0.2)
        assert len(pids) == 2, "the entry point did not start"
        # its output is in the run while the step runs (teed by the step, not S3's later copy)
        client = mlflow.MlflowClient()
        while time.monotonic() < deadline:
            logged = {a.path for a in client.list_artifacts(run.info.run_id, "emr-step")}
            if "emr-step/stdout" in logged:
                kept = client.download_artifacts(run.info.run_id, "emr-step/stdout", str(tmp_path))
                if "the entry point is at work" in Path(kept).read_text():
                    break
            time.sleep(0.5)
        else:
            pytest.fail("the step's output did not reach the run while it ran")
        step.send_signal(signal.SIGTERM)  # SEND_INTERRUPT: to the step's process only
        code = step.wait(timeout=60)
    finally:
        if step.poll() is None:
            step.kill()
    output = step.stdout.read()
    assert code == 128 + signal.SIGTERM, output
    assert not [name for name, pid in pids.items() if _alive(pid)], output
    assert "stopping the entry point" in output
    assert "the entry point is at work" in output  # EMR's own step log gets it too
    assert not list(work.glob("sparkles-step-*")), "the step's project folder is left on the node"
    tags = mlflow.get_run(run.info.run_id).data.tags
    assert tags["mlflow.project.backend"] == "emr"  # not the nested `mlflow run`'s "local"
