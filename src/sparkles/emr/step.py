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

Output: the entry point's stdout and stderr go to this process's own (EMR's step logs, uploaded
to S3 minutes later) and, as they are written, into the run itself as ``emr-step/stdout`` and
``emr-step/stderr`` (every ``SPARKLES_STEP_LOG_SECONDS``, 30 s, and at the end): the caller sees
them in the run while the step runs, and needs no wait for S3 once it ended.
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

from sparkles.names import EMR_STEP_ARTIFACTS

GRACE_ENV = "SPARKLES_STEP_GRACE_SECONDS"
LOG_SECONDS_ENV = "SPARKLES_STEP_LOG_SECONDS"


class RunOutput:
    """The entry point's two streams, copied to this process's own and to files that are
    logged into the run every ``every`` seconds and when the step ends."""

    def __init__(self, tracking_uri: str, run_id: str, folder: Path, every: float) -> None:
        from mlflow import MlflowClient

        self.client, self.run_id, self.every = MlflowClient(tracking_uri), run_id, every
        self.files = {name: folder / name for name in ("stdout", "stderr")}
        self.logged: dict[Path, int] = {}  # size of each file when it was last logged
        self.copies: list[threading.Thread] = []
        self.stop = threading.Event()
        self.uploads = threading.Thread(target=self._upload_now_and_then, daemon=True)

    def start(self, child: subprocess.Popen) -> None:
        for name, stream, own in (
            ("stdout", child.stdout, sys.stdout),
            ("stderr", child.stderr, sys.stderr),
        ):
            copy = threading.Thread(target=self._copy, args=(stream, own, self.files[name]))
            copy.start()
            self.copies.append(copy)
        self.uploads.start()

    @staticmethod
    def _copy(stream, own, path: Path) -> None:
        with path.open("w") as kept:
            for line in stream:
                own.write(line)
                own.flush()
                kept.write(line)
                kept.flush()

    def _upload_now_and_then(self) -> None:
        while not self.stop.wait(self.every):
            self.upload()

    def upload(self) -> None:
        """Each file that grew since it was last logged (an hours-long step's output is not
        sent again every round)."""
        for path in self.files.values():
            size = path.stat().st_size if path.exists() else -1
            if size < 0 or size == self.logged.get(path):
                continue
            try:
                self.client.log_artifact(self.run_id, str(path), EMR_STEP_ARTIFACTS)
                self.logged[path] = size
            except Exception as err:  # the tracking server blinked: the next round retries
                print(f"sparkles: step output not logged yet: {err}", file=sys.stderr)

    def ran_on_emr(self) -> None:
        """The nested ``mlflow run`` tagged the run with its own backend (``local``): it ran as
        an EMR step, as the caller's backend tagged it before."""
        from mlflow.utils.mlflow_tags import MLFLOW_PROJECT_BACKEND

        try:
            self.client.set_tag(self.run_id, MLFLOW_PROJECT_BACKEND, "emr")
        except Exception as err:
            print(f"sparkles: the run's backend tag not restored: {err}", file=sys.stderr)

    def finish(self) -> None:
        for copy in self.copies:
            copy.join()
        self.stop.set()
        self.uploads.join()
        self.upload()


def fetch(archive: str, folder: Path) -> None:
    """Unpack the project archive (``s3://bucket/key.tar.gz`` through boto3's defaults, or a
    file on this node) into ``folder``."""
    local = Path(archive)
    if archive.startswith("s3://"):
        import boto3

        from sparkles.emr.backend_config import split_s3

        local = folder / ".project.tar.gz"
        boto3.client("s3").download_file(*split_s3(archive), str(local))
    with tarfile.open(local) as tar:
        tar.extractall(folder, filter="data")
    if local.parent == folder:
        local.unlink()


def command(args: argparse.Namespace, project: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "mlflow",
        "run",
        str(project),
        "-e",
        args.entry_point,
        "--env-manager",
        "local",
        "--run-id",
        args.run_id,
        "--experiment-id",
        args.experiment_id,
        *(item for param in args.params for item in ("-P", param)),
    ]


def end_tree(root: psutil.Process, grace: float) -> None:
    """SIGTERM to ``root`` and every descendant, then SIGKILL to whatever is left after
    ``grace`` seconds, descendants started meanwhile included."""
    known: dict[int, psutil.Process] = {root.pid: root}

    def collect() -> list[psutil.Process]:
        for process in list(known.values()):
            try:
                known.update((child.pid, child) for child in process.children(recursive=True))
            except psutil.NoSuchProcess:
                continue
        return list(known.values())

    def send(signal_with: str) -> None:
        for process in collect():
            try:
                getattr(process, signal_with)()
            except psutil.NoSuchProcess:
                continue

    send("terminate")
    psutil.wait_procs(collect(), timeout=grace)
    send("kill")
    psutil.wait_procs(collect(), timeout=10)


def run_until_cancelled(
    argv: list[str], *, cwd: Path, env: dict[str, str], grace: float, output: RunOutput
) -> int:
    """Run ``argv`` with its output teed (``output``); on SIGTERM end its whole process tree
    (``end_tree``) and return 143."""
    cancelled = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: cancelled.set())
    try:
        child = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
        )
        output.start(child)
        while not cancelled.is_set():
            try:
                code = child.wait(timeout=0.5)
                output.finish()
                return code
            except subprocess.TimeoutExpired:
                continue
        print(
            f"sparkles: cancelled (SIGTERM): stopping the entry point (pid {child.pid}) and its "
            f"processes, SIGKILL after {grace:.0f} s",
            file=sys.stderr,
            flush=True,
        )
        end_tree(psutil.Process(child.pid), grace)
        child.wait()
        output.finish()
        return 128 + signal.SIGTERM
    finally:
        signal.signal(signal.SIGTERM, previous)


def versions_agree(client: str | None, unknown: list[str]) -> bool:
    """The caller's backend and this step come from two installs: say in one line when they
    differ (the step runs the caller's project code, so a difference alone is a warning), and
    stop when the caller asks for what this step does not know."""
    from sparkles import __version__ as here

    if client in (None, here) and not unknown:
        return True
    both = f"sparkles {here} on this cluster, {client or 'an older one'} on the caller's machine"
    if unknown:
        print(
            f"sparkles: {both}: this step does not know {' '.join(unknown)}; bootstrap the "
            "cluster with the caller's wheel (docs/emr.md)",
            file=sys.stderr,
            flush=True,
        )
        return False
    print(f"sparkles: {both}: running the caller's project code", file=sys.stderr, flush=True)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sparkles.emr.step", description=__doc__)
    parser.add_argument("--archive", required=True)
    parser.add_argument("--entry-point", required=True)
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--experiment-id", required=True)
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument("--client-version", help="the caller's sparkles (the emr backend's)")
    parser.add_argument("-P", dest="params", action="append", default=[], metavar="KEY=VALUE")
    args, unknown = parser.parse_known_args(argv)
    if not versions_agree(args.client_version, unknown):
        return 2
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
        logs = Path(folder) / ".step-output"
        logs.mkdir()
        every = float(os.environ.get(LOG_SECONDS_ENV, "30"))
        output = RunOutput(args.tracking_uri, args.run_id, logs, every)
        code = run_until_cancelled(
            command(args, project), cwd=project, env=env, grace=grace, output=output
        )
        output.ran_on_emr()
        return code


if __name__ == "__main__":
    sys.exit(main())
