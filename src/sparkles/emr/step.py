"""What the EMR step of ``mlflow run --backend emr`` runs on the primary node.

``python -m sparkles.emr.step --archive s3://… --entry-point E --run-id R …``, with the
bootstrap's venv: fetch the project archive the backend uploaded, unpack it in a fresh folder
and ``mlflow run`` the entry point there into run R (created by the backend on the caller's
tracking server). The unpacked project's own code comes first on ``PYTHONPATH``, so the step
runs the code as it was on the caller's disk, not the bootstrap's wheel (executors receive the
driver's code: ``session.build_session`` ships it).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path


def fetch(archive: str, folder: Path) -> None:
    """Download and unpack ``s3://bucket/key.tar.gz`` into ``folder`` (boto3's defaults)."""
    import boto3

    from sparkles.emr.backend import split_s3

    local = folder / ".project.tar.gz"
    boto3.client("s3").download_file(*split_s3(archive), str(local))
    with tarfile.open(local) as tar:
        tar.extractall(folder, filter="data")
    local.unlink()


def command(args: argparse.Namespace, project: Path) -> list[str]:
    return [
        sys.executable, "-m", "mlflow", "run", str(project), "-e", args.entry_point,
        "--env-manager", "local", "--run-id", args.run_id, "--experiment-id", args.experiment_id,
        *(item for param in args.params for item in ("-P", param)),
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sparkles.emr.step", description=__doc__)
    parser.add_argument("--archive", required=True)
    parser.add_argument("--entry-point", required=True)
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--experiment-id", required=True)
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument("-P", dest="params", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    project = Path(tempfile.mkdtemp(prefix="sparkles-step-"))
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
    return subprocess.call(command(args, project), cwd=project, env=env)


if __name__ == "__main__":
    sys.exit(main())
