"""``mlflow run . --backend emr``: run an entry point on an EMR cluster from your own machine.

MLflow's plugin point for project backends (entry-point group ``mlflow.project_backend``, see
pyproject.toml) hands ``run`` the project, entry point and parameters. This backend

1. validates ``--backend-config`` (``EmrBackendConfig``: every error names its key) and refuses
   a tracking URI the cluster cannot reach, before anything is uploaded;
2. creates the MLflow run in the caller's tracking server, tagged as MLflow tags its own
   backends' runs (source, entry point, git commit, parameters);
3. packages the project as it is on disk (git's view: tracked and untracked-but-not-ignored
   files) and uploads it under ``s3_prefix``;
4. adds one step (``command-runner.jar``) to a running cluster (``cluster_id``), or starts a
   transient cluster (``new_cluster``) with that one step, which runs ``sparkles.emr.step``
   with the bootstrap's venv: it fetches the archive and runs ``mlflow run`` there **into the
   same run id**;
5. returns an ``EmrSubmittedRun``: ``wait`` polls the step, ``get_status`` maps its state,
   ``cancel`` cancels it (the run ends KILLED); when the step ends its stdout and stderr are
   fetched from the cluster's log URI, attached to the run under ``emr-step/`` and their tail
   printed.

AWS calls go through boto3's default credential chain and endpoint settings
(``AWS_ENDPOINT_URL`` included, which the tests point at a local moto server).
"""

from __future__ import annotations

import gzip
import json
import logging
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mlflow.entities import RunStatus, RunTag
from mlflow.projects.backend.abstract_backend import AbstractBackend
from mlflow.projects.submitted_run import SubmittedRun
from mlflow.projects.utils import (
    PROJECT_SYNCHRONOUS,
    fetch_and_validate_project,
    get_or_create_run,
)
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PROJECT_BACKEND

from sparkles.emr.project import package
from sparkles.emr.settings import (
    EmrBackendConfig,
    EmrError,
    check_tracking_uri,
    load_config,
)
from sparkles.names import EMR_CLUSTER_TAG, EMR_PROJECT_TAG, EMR_STEP_TAG, ERROR_TAG

log = logging.getLogger(__name__)

BACKEND = "emr"
LOG_ARTIFACTS = "emr-step"  # where a step's stdout/stderr land in the run
EMR_SCRIPTS = Path("scripts") / "emr"  # in the project: bootstrap.sh, configurations.json
# EMR step states → MLflow run states
STATES = {
    "PENDING": RunStatus.SCHEDULED,
    "CANCEL_PENDING": RunStatus.RUNNING,
    "RUNNING": RunStatus.RUNNING,
    "COMPLETED": RunStatus.FINISHED,
    "CANCELLED": RunStatus.KILLED,
    "INTERRUPTED": RunStatus.KILLED,
    "FAILED": RunStatus.FAILED,
}
ACCEPTS_STEPS = ("STARTING", "BOOTSTRAPPING", "RUNNING", "WAITING")


def split_s3(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` (or EMR's ``s3n://``) → (bucket, key)."""
    bucket, _, key = re.sub(r"^s3[an]?://", "", uri).partition("/")
    return bucket, key


def step_args(
    config: EmrBackendConfig,
    archive: str,
    entry_point: str,
    params: dict[str, Any],
    run_id: str,
    experiment_id: str,
    tracking_uri: str,
) -> list[str]:
    """What command-runner.jar runs on the primary node (``sparkles.emr.step``)."""
    return [
        f"{config.venv}/bin/python", "-m", "sparkles.emr.step",
        "--archive", archive, "--entry-point", entry_point, "--run-id", run_id,
        "--experiment-id", experiment_id,
        "--tracking-uri", config.cluster_tracking_uri or tracking_uri,
        *(f"-P{key}={value}" for key, value in params.items()),
    ]  # fmt: skip


def _clients(config: EmrBackendConfig) -> tuple[Any, Any]:
    try:
        import boto3
    except ImportError as err:
        raise EmrError("the emr backend needs boto3: pip install 'sparkles-spark[emr]'") from err
    session = boto3.session.Session(region_name=config.region)
    return session.client("emr"), session.client("s3")


class EmrBackend(AbstractBackend):
    """The ``emr`` project backend (MLflow calls ``run``; see the module's docstring)."""

    def run(
        self,
        project_uri: str,
        entry_point: str,
        params: dict[str, Any],
        version: str | None,
        backend_config: dict[str, Any],
        tracking_uri: str,
        experiment_id: str,
    ) -> EmrSubmittedRun:
        config = load_config(backend_config)
        check_tracking_uri(tracking_uri)
        emr, s3 = _clients(config)
        if config.cluster_id:
            with _aws("checking the cluster"):
                _check_cluster(emr, config.cluster_id)
        work_dir = Path(fetch_and_validate_project(project_uri, version, entry_point, params))
        run = get_or_create_run(
            None, project_uri, experiment_id, str(work_dir), version, entry_point, params
        )
        run_id = run.info.run_id
        client = MlflowClient()
        try:
            archive = f"{config.s3_prefix}/mlflow-projects/{run_id}/project.tar.gz"
            with tempfile.TemporaryDirectory() as folder, _aws(f"uploading {archive}"):
                local = Path(folder) / "project.tar.gz"
                count = package(work_dir, local)
                s3.upload_file(str(local), *split_s3(archive))
            log.info("uploaded %d project files to %s", count, archive)
            args = step_args(
                config, archive, entry_point, params, run_id, experiment_id, tracking_uri
            )
            step = {
                "Name": f"sparkles-{entry_point}-{run_id[:8]}",
                "ActionOnFailure": "CONTINUE",
                "HadoopJarStep": {"Jar": "command-runner.jar", "Args": args},
            }
            with _aws("submitting the step"):
                if config.new_cluster is not None:
                    cluster_id, step_id = _start_transient(emr, s3, config, step, work_dir)
                else:
                    cluster_id = config.cluster_id
                    added = emr.add_job_flow_steps(JobFlowId=cluster_id, Steps=[step])
                    step_id = added["StepIds"][0]
        except BaseException as err:
            client.set_tag(run_id, ERROR_TAG, f"{type(err).__name__}: {err}"[:5000])
            client.set_terminated(run_id, "FAILED")
            raise
        tags = {EMR_CLUSTER_TAG: cluster_id, EMR_STEP_TAG: step_id, EMR_PROJECT_TAG: archive,
                MLFLOW_PROJECT_BACKEND: BACKEND}  # fmt: skip
        client.log_batch(run_id, tags=[RunTag(key, value) for key, value in tags.items()])
        log.info("run %s: step %s on cluster %s", run_id, step_id, cluster_id)
        submitted = EmrSubmittedRun(run_id, cluster_id, step_id, config, emr, s3)
        if config.wait and not backend_config.get(PROJECT_SYNCHRONOUS, False):
            _wait_here(submitted)
        return submitted


def _wait_here(submitted: EmrSubmittedRun) -> None:
    """What MLflow does for the runs it waits on (``mlflow run`` waits on none of a plugin's):
    wait for the step, end the run with its outcome, cancel the step on Ctrl-C."""
    try:
        completed = submitted.wait()
    except KeyboardInterrupt:
        log.error("interrupted: cancelling step %s", submitted.step_id)
        submitted.cancel()
        raise
    submitted.end_run(RunStatus.FINISHED if completed else RunStatus.FAILED)
    if not completed:
        raise EmrError(
            f"run {submitted.run_id}: step {submitted.step_id} on {submitted.cluster_id} ended "
            f"{submitted.final_state} (its output: the run's {LOG_ARTIFACTS}/ artifacts)"
        )
    log.info("=== run %s: step %s completed ===", submitted.run_id, submitted.step_id)


@contextmanager
def _aws(doing: str) -> Iterator[None]:
    """botocore's errors (no credentials, access denied, no such cluster) in one line."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except (BotoCoreError, ClientError) as err:
        raise EmrError(f"AWS refused {doing}: {err}") from err


def _check_cluster(emr: Any, cluster_id: str) -> None:
    """The cluster exists and takes steps: said before anything is uploaded."""
    state = emr.describe_cluster(ClusterId=cluster_id)["Cluster"]["Status"]["State"]
    if state not in ACCEPTS_STEPS:
        raise EmrError(
            f"--backend-config: key 'cluster_id': {cluster_id} is {state}; steps can be added "
            f"to a cluster that is {', '.join(ACCEPTS_STEPS)}"
        )


def _start_transient(
    emr: Any, s3: Any, config: EmrBackendConfig, step: dict[str, Any], project: Path
) -> tuple[str, str]:
    """A cluster that runs this one step and terminates: the project's wheel and bootstrap
    uploaded beside the archive, create-cluster.sh's configurations."""
    spec = config.new_cluster
    assert spec is not None
    prefix, scripts = f"{config.s3_prefix}/emr", project / EMR_SCRIPTS
    with tempfile.TemporaryDirectory() as folder:
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", folder,
             str(project)],
            check=True, timeout=600,
        )  # fmt: skip
        (wheel,) = Path(folder).glob("*.whl")
        s3.upload_file(str(wheel), *split_s3(f"{prefix}/{wheel.name}"))
    s3.upload_file(str(scripts / "bootstrap.sh"), *split_s3(f"{prefix}/bootstrap.sh"))
    bootstrap_args = [",".join(filter(None, [f"{prefix}/{wheel.name}", spec.wheelhouse]))]
    instances: dict[str, Any] = {
        "InstanceGroups": [
            {"InstanceRole": "MASTER", "InstanceCount": 1, "InstanceType": spec.primary_type},
            {
                "InstanceRole": "CORE",
                "InstanceCount": spec.core_count,
                "InstanceType": spec.core_type,
            },
        ],  # fmt: skip
        "KeepJobFlowAliveWhenNoSteps": False,
    }
    if spec.key_name:
        instances["Ec2KeyName"] = spec.key_name
    if spec.subnet_id:
        instances["Ec2SubnetId"] = spec.subnet_id
    started = emr.run_job_flow(
        Name=spec.name,
        ReleaseLabel=spec.release_label,
        Applications=[{"Name": "Spark"}],
        Instances=instances,
        BootstrapActions=[
            {
                "Name": "sparkles",
                "ScriptBootstrapAction": {"Path": f"{prefix}/bootstrap.sh", "Args": bootstrap_args},
            }
        ],
        Configurations=json.loads((scripts / "configurations.json").read_text()),
        LogUri=spec.log_uri or f"{config.s3_prefix}/emr-logs/",
        ServiceRole=spec.service_role,
        JobFlowRole=spec.instance_profile,
        Steps=[step],
    )
    cluster_id = started["JobFlowId"]
    (first,) = emr.list_steps(ClusterId=cluster_id)["Steps"]
    return cluster_id, first["Id"]


class EmrSubmittedRun(SubmittedRun):
    """One EMR step running one MLflow run."""

    def __init__(
        self,
        run_id: str,
        cluster_id: str,
        step_id: str,
        config: EmrBackendConfig,
        emr: Any,
        s3: Any,
    ) -> None:
        super().__init__()
        self._run_id, self.cluster_id, self.step_id = run_id, cluster_id, step_id
        self.config, self.emr, self.s3 = config, emr, s3
        self.final_state: str | None = None  # the step's state once wait() saw it end

    @property
    def run_id(self) -> str:
        return self._run_id

    def step_state(self) -> str:
        step = self.emr.describe_step(ClusterId=self.cluster_id, StepId=self.step_id)["Step"]
        return step["Status"]["State"]

    def get_status(self) -> RunStatus:
        return STATES[self.step_state()]

    def wait(self) -> bool:
        """Poll until the step ends; attach its logs; True if it completed."""
        state, said = self.step_state(), None
        while STATES[state] in (RunStatus.SCHEDULED, RunStatus.RUNNING):
            if state != said:
                log.info("step %s: %s", self.step_id, state)
                said = state
            time.sleep(self.config.poll_seconds)
            state = self.step_state()
        log.info("step %s: %s", self.step_id, state)
        self.final_state = state
        self._attach_logs()
        if STATES[state] == RunStatus.KILLED:
            self.end_run(RunStatus.KILLED)
        return state == "COMPLETED"

    def cancel(self) -> None:
        """Cancel the step (EMR interrupts it if it runs); the run ends KILLED."""
        self.emr.cancel_steps(
            ClusterId=self.cluster_id, StepIds=[self.step_id],
            StepCancellationOption="SEND_INTERRUPT",
        )  # fmt: skip
        if self.config.new_cluster is not None:
            self.emr.terminate_job_flows(JobFlowIds=[self.cluster_id])
        self.end_run(RunStatus.KILLED)

    def end_run(self, status: int) -> None:
        """End the run with ``status`` unless it already ended (the step's mlflow ends it)."""
        client = MlflowClient()
        if not RunStatus.is_terminated(client.get_run(self.run_id).info.status):
            client.set_terminated(self.run_id, RunStatus.to_string(status))

    def _attach_logs(self) -> None:
        """stdout/stderr of the step from the cluster's log URI, into the run and (the tail of
        stderr) onto this console. EMR uploads them minutes after the step ends."""
        log_uri = self.emr.describe_cluster(ClusterId=self.cluster_id)["Cluster"].get("LogUri")
        if not log_uri:
            log.warning("cluster %s has no log URI: no step output to attach", self.cluster_id)
            return
        bucket, key = split_s3(log_uri)
        folder = f"{key.rstrip('/')}/{self.cluster_id}/steps/{self.step_id}/".lstrip("/")
        deadline = time.monotonic() + self.config.log_wait_seconds
        with tempfile.TemporaryDirectory() as local:
            found: list[Path] = []
            while True:
                for name in ("stdout", "stderr"):
                    target = Path(local) / name
                    if target.exists():
                        continue
                    try:
                        body = self.s3.get_object(Bucket=bucket, Key=f"{folder}{name}.gz")["Body"]
                    except Exception:  # not there yet
                        continue
                    target.write_bytes(gzip.decompress(body.read()))
                    found.append(target)
                if len(found) == 2 or time.monotonic() >= deadline:
                    break
                time.sleep(min(self.config.poll_seconds, 15))
            for path in found:
                MlflowClient().log_artifact(self.run_id, str(path), LOG_ARTIFACTS)
            if not found:
                log.warning("no step logs at s3://%s/%s yet: see the EMR console", bucket, folder)
            for path in sorted(found):
                tail = path.read_text(errors="replace").splitlines()[-30:]
                print("\n".join([f"--- step {path.name} (tail) ---", *tail]), file=sys.stderr)
