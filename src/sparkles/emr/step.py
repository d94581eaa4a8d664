"""What the EMR step of ``mlflow run --backend emr`` runs on the primary node.

``python -m sparkles.emr.step --archive s3://… --entry-point E --run-id R …``, with the
bootstrap's venv: fetch the project archive the backend uploaded, unpack it in a fresh folder
(removed when the step ends) and ``mlflow run`` the entry point there into run R (created by
the backend on the caller's tracking server). The unpacked project's own code comes first on
``PYTHONPATH``, so the step runs the code as it was on the caller's disk, not the bootstrap's
wheel (executors receive the driver's code: ``session.build_session`` ships it).

Cancelling: EMR's ``CancelSteps`` with ``SEND_INTERRUPT`` (the default) sends SIGTERM to this
process alone, and AWS leaves ending the step's descendants to the step ("Cancel steps" in the
EMR Management Guide). ``mlflow run`` starts the entry point in a process group of its own, so
this process ends the whole tree itself: SIGTERM to every descendant, SIGKILL to what is left
after a grace period (``SPARKLES_STEP_GRACE_SECONDS``, 30 s: Spark's shutdown hooks).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
from pathlib import Path

import psutil

GRACE_ENV = "SPARKLES_STEP_GRACE_SECONDS"


def fetch(archive: str, folder: Path) -> None:
    """Unpack the project archive (``s3://bucket/key.tar.gz`` through boto3's defaults, or a
    file on this node) into ``folder``."""
    local = Path(archive)
    if archive.startswith("s3://"):
        import boto3

        from sparkles.emr.settings import split_s3

        local = folder / ".project.tar.gz"
        boto3.client("s3").download_file(*split_s3(archive), str(local))
    with tarfile.open(local) as tar:
        tar.extractall(folder, filter="data")
    if local.parent == folder:
        local.unlink()


def command(args: argparse.Namespace, project: Path) -> list[str]:
    return [
        sys.executable, "-m", "mlflow", "run", str(project), "-e", args.entry_point,
        "--env-manager", "local", "--run-id", args.run_id, "--experiment-id", args.experiment_id,
        *(item for param in args.params for item in ("-P", param)),
    ]  # fmt: skip


def end_tree(root: psutil.Process, grace: float) -> None:
    """SIGTERM to ``root`` and every descendant, then SIGKILL to whatever is left after
    ``grace`` seconds, descendants started meanwhile included."""
    known: dict[int, psutil.Process] = {}

    def collect() -> list[psutil.Process]:
        for process in [root, *known.values()]:
            try:
                for child in process.children(recursive=True):
                    known.setdefault(child.pid, child)
            except psutil.NoSuchProcess:
                continue
        return [root, *known.values()]

    for process in collect():
        try:
            process.terminate()
        except psutil.NoSuchProcess:
            continue
    _, alive = psutil.wait_procs(collect(), timeout=grace)
    for process in [*alive, *(p for p in collect() if p.is_running())]:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            continue
    psutil.wait_procs(collect(), timeout=10)


def run_until_cancelled(argv: list[str], cwd: Path, env: dict[str, str], grace: float) -> int:
    """Run ``argv``; on SIGTERM end its whole process tree (``end_tree``) and return 143."""
    cancelled = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: cancelled.set())
    try:
        child = subprocess.Popen(argv, cwd=cwd, env=env)
        while not cancelled.is_set():
            try:
                return child.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                continue
        print(
            f"sparkles: cancelled (SIGTERM): stopping the entry point (pid {child.pid}) and its "
            f"processes, SIGKILL after {grace:.0f} s",
            file=sys.stderr, flush=True,
        )  # fmt: skip
        end_tree(psutil.Process(child.pid), grace)
        child.wait()
        return 128 + signal.SIGTERM
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sparkles.emr.step", description=__doc__)
    parser.add_argument("--archive", required=True)
    parser.add_argument("--entry-point", required=True)
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--experiment-id", required=True)
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument("-P", dest="params", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="sparkles-step-") as folder:
        project = Path(folder)
        fetch(args.archive, project)
        print(f"sparkles: project unpacked in {project}", file=sys.stderr, flush=True)
        venv_bin = str(Path(sys.executable).parent)
        path = os.pathsep.join(filter(None, [str(project / "src"), os.environ.get("PYTHONPATH")]))
        env = {
            **os.environ,
            "MLFLOW_TRACKING_URI": args.tracking_uri,
            "PYTHONPATH": path,
            "PATH": os.pathsep.join([venv_bin, os.environ.get("PATH", "")]),
        }
        grace = float(os.environ.get(GRACE_ENV, "30"))
        return run_until_cancelled(command(args, project), project, env, grace)


if __name__ == "__main__":
    sys.exit(main())
