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
5. returns an ``EmrSubmittedRun``: ``wait`` polls the step, saying each state on the
   terminal, ``get_status`` maps its state, ``cancel`` cancels it (the run ends KILLED once EMR
   says the step ended); the step logs its stdout and stderr into the run (``emr-step/``) as
   they are written, and their tails are printed when it ends (the cluster's log URI only for
   a step that died first).

AWS calls go through boto3's default credential chain and endpoint settings
(``AWS_ENDPOINT_URL`` included, which the tests point at a local moto server).
"""

from __future__ import annotations

import gzip
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

from sparkles import __version__
from sparkles.emr.app_ui import link_history_server
from sparkles.emr.project import package
from sparkles.emr.settings import (
    EmrBackendConfig,
    EmrError,
    check_tracking_uri,
    load_config,
    split_s3,
)
from sparkles.emr.transient import say, start_transient, terminate
from sparkles.names import (
    EMR_CLUSTER_TAG,
    EMR_PROJECT_TAG,
    EMR_STEP_ARTIFACTS,
    EMR_STEP_TAG,
    ERROR_TAG,
)

BACKEND = "emr"
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


def _ongoing(state: str) -> bool:
    """The step has not ended (pending, running, or being cancelled)."""
    return STATES[state] in (RunStatus.SCHEDULED, RunStatus.RUNNING)


AWS_ATTEMPTS = 10  # per call, with botocore's backoff
# how long a cancel waits for EMR to say the step ended (the step's own grace is 30 s)
CANCEL_WAIT_SECONDS = 120.0


def _failure(status: dict[str, Any]) -> str:
    """DescribeStep's ``FailureDetails`` (reason, message, log file) as a clause, or ""."""
    details = status.get("FailureDetails") or {}
    said = [details.get(key) for key in ("Reason", "Message") if details.get(key)]
    if details.get("LogFile"):
        said.append(f"log: {details['LogFile']}")
    return f": {'; '.join(said)}" if said else ""


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
        "--client-version", __version__,
        *(f"-P{key}={value}" for key, value in params.items()),
    ]  # fmt: skip


def _clients(config: EmrBackendConfig) -> tuple[Any, Any]:
    try:
        import boto3
    except ImportError as err:
        raise EmrError("the emr backend needs boto3: pip install 'sparkles-spark[emr]'") from err
    from botocore.config import Config

    # a throttled or failing call during an hours-long wait is retried with botocore's own
    # exponential backoff ("standard" mode: throttling and transient errors), not a traceback
    retried = Config(retries={"max_attempts": AWS_ATTEMPTS, "mode": "standard"})
    session = boto3.session.Session(region_name=config.region)
    return session.client("emr", config=retried), session.client("s3", config=retried)


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
        check_tracking_uri(tracking_uri, config)
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
            say(f"uploaded {count} project files to {archive}")
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
                    cluster_id, step_id = start_transient(emr, s3, config, step, work_dir)
                else:
                    cluster_id = config.cluster_id
                    role = config.execution_role_arn
                    runtime = {"ExecutionRoleArn": role} if role else {}
                    added = emr.add_job_flow_steps(JobFlowId=cluster_id, Steps=[step], **runtime)
                    step_id = added["StepIds"][0]
        except BaseException as err:
            client.set_tag(run_id, ERROR_TAG, f"{type(err).__name__}: {err}"[:5000])
            client.set_terminated(run_id, "FAILED")
            raise
        tags = {EMR_CLUSTER_TAG: cluster_id, EMR_STEP_TAG: step_id, EMR_PROJECT_TAG: archive,
                MLFLOW_PROJECT_BACKEND: BACKEND}  # fmt: skip
        try:
            client.log_batch(run_id, tags=[RunTag(key, value) for key, value in tags.items()])
        except BaseException:
            if config.new_cluster is not None:
                terminate(emr, cluster_id)
            raise
        say(f"run {run_id}: step {step_id} on cluster {cluster_id}")
        submitted = EmrSubmittedRun(run_id, cluster_id, step_id, config, emr, s3)
        if config.wait and not backend_config.get(PROJECT_SYNCHRONOUS, False) and _from_cli():
            _wait_here(submitted)
        return submitted


def _from_cli() -> bool:
    """Whether ``mlflow run`` (a click command) called: it never waits for a plugin backend's
    run, so this backend does; from Python, ``mlflow.projects.run(synchronous=True)`` waits
    through MLflow and ``synchronous=False`` returns the submitted run at once."""
    import click

    return click.get_current_context(silent=True) is not None


def _wait_here(submitted: EmrSubmittedRun) -> None:
    """What MLflow does for the runs it waits on (``mlflow run`` waits on none of a plugin's):
    wait for the step, end the run with its outcome, cancel the step on Ctrl-C."""
    try:
        completed = submitted.wait()
    except KeyboardInterrupt:
        say(f"interrupted: cancelling step {submitted.step_id}")
        submitted.cancel()
        raise
    except Exception as err:  # AWS unreachable even after botocore's retries
        say(f"lost track of step {submitted.step_id}: {err}; it may still run (see the console)")
        try:
            submitted.attach_logs()
        except Exception as lost:  # the same outage: what the step teed is in the run anyway
            say(f"no step output attached: {lost}")
        MlflowClient().set_tag(submitted.run_id, ERROR_TAG, f"{type(err).__name__}: {err}")
        submitted.end_run(RunStatus.FAILED)
        raise EmrError(
            f"run {submitted.run_id}: waiting for step {submitted.step_id}: {err}"
        ) from err
    submitted.end_run(RunStatus.FINISHED if completed else RunStatus.FAILED)
    if not completed:
        raise EmrError(
            f"run {submitted.run_id}: step {submitted.step_id} on {submitted.cluster_id} ended "
            f"{submitted.final_state}{submitted.failure} (its output: the run's "
            f"{EMR_STEP_ARTIFACTS}/ artifacts)"
        )
    say(f"run {submitted.run_id}: step {submitted.step_id} completed")


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
        self.failure = ""  # EMR's FailureDetails of a failed step, as a clause

    @property
    def run_id(self) -> str:
        return self._run_id

    def step_status(self) -> dict[str, Any]:
        step = self.emr.describe_step(ClusterId=self.cluster_id, StepId=self.step_id)["Step"]
        return step["Status"]

    def step_state(self) -> str:
        return self.step_status()["State"]

    def get_status(self) -> str:
        """The run's state as MLflow's own backends answer it: ``RUNNING``, ``FINISHED``, …"""
        return RunStatus.to_string(STATES[self.step_state()])

    def wait(self) -> bool:
        """Poll until the step ends, saying each state and the time taken; attach its logs;
        True if it completed."""
        started, said = time.monotonic(), None
        status = self.step_status()
        while _ongoing(status["State"]):
            if status["State"] != said:
                said = status["State"]
                say(f"step {self.step_id}: {said} ({time.monotonic() - started:.0f} s)")
            time.sleep(self.config.poll_seconds)
            status = self.step_status()
        self.final_state = status["State"]
        self.failure = _failure(status)
        cluster_failed = self._cluster_failure()
        if cluster_failed:  # a bootstrap action failed: the step never ran, no log will come
            self.final_state, self.failure = "FAILED", cluster_failed
        say(f"step {self.step_id}: {self.final_state}{self.failure} "
             f"({time.monotonic() - started:.0f} s)")  # fmt: skip
        if not cluster_failed:
            self.attach_logs()
            link_history_server(self.emr, self.cluster_id, self.run_id)
        if STATES[self.final_state] == RunStatus.KILLED:
            self.end_run(RunStatus.KILLED)
        return self.final_state == "COMPLETED"

    def _cluster_failure(self) -> str:
        """Why a transient cluster ended with errors (its ``StateChangeReason``), or ""."""
        if self.config.new_cluster is None:
            return ""
        status = self.emr.describe_cluster(ClusterId=self.cluster_id)["Cluster"]["Status"]
        if status["State"] != "TERMINATED_WITH_ERRORS":
            return ""
        reason = status.get("StateChangeReason") or {}
        said = ": ".join(str(reason[k]) for k in ("Code", "Message") if reason.get(k))
        return f": the cluster {self.cluster_id} ended with errors ({said or 'no reason given'})"

    def cancel(self) -> None:
        """Cancel the step as AWS documents it: ``SEND_INTERRUPT`` (the step ends its processes,
        ``emr.step``), asynchronous, so the run ends KILLED only once EMR says the step ended
        and nothing can write into it any more. A transient cluster is terminated after."""
        answer = self.emr.cancel_steps(
            ClusterId=self.cluster_id, StepIds=[self.step_id],
            StepCancellationOption="SEND_INTERRUPT",
        )  # fmt: skip
        for info in answer.get("CancelStepsInfoList", []):
            if info.get("StepId") == self.step_id and info.get("Status") == "FAILED":
                say(f"EMR could not cancel step {self.step_id}: {info.get('Reason', '?')}")
        deadline = time.monotonic() + CANCEL_WAIT_SECONDS
        state = self.step_state()
        while _ongoing(state) and time.monotonic() < deadline:
            time.sleep(min(self.config.poll_seconds, 5))
            state = self.step_state()
        self.final_state = state
        if self.config.new_cluster is not None:
            terminate(self.emr, self.cluster_id)
        if _ongoing(state):
            say(f"step {self.step_id} is still {state} after {CANCEL_WAIT_SECONDS:.0f} s: the "
                 "run is marked KILLED; see the EMR console")  # fmt: skip
        self.end_run(RunStatus.FINISHED if state == "COMPLETED" else RunStatus.KILLED)

    def end_run(self, status: int) -> None:
        """End the run with ``status`` unless it already ended (the step's mlflow ends it)."""
        client = MlflowClient()
        if not RunStatus.is_terminated(client.get_run(self.run_id).info.status):
            client.set_terminated(self.run_id, RunStatus.to_string(status))

    def attach_logs(self) -> None:
        """The step's stdout/stderr into the run and their tails onto this console: the step
        logs them into the run itself as they are written (``emr.step``); only where it could
        not (it died first) are they fetched from the cluster's log URI, which EMR fills
        minutes after the step ends."""
        client = MlflowClient()
        teed = {a.path for a in client.list_artifacts(self.run_id, EMR_STEP_ARTIFACTS)}
        if {f"{EMR_STEP_ARTIFACTS}/stdout", f"{EMR_STEP_ARTIFACTS}/stderr"} <= teed:
            with tempfile.TemporaryDirectory() as local:
                for name in ("stdout", "stderr"):
                    path = client.download_artifacts(
                        self.run_id, f"{EMR_STEP_ARTIFACTS}/{name}", local
                    )
                    _print_tail(Path(path))
            return
        log_uri = self.emr.describe_cluster(ClusterId=self.cluster_id)["Cluster"].get("LogUri")
        if not log_uri:
            say(f"cluster {self.cluster_id} has no log URI: no step output to attach")
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
                client.log_artifact(self.run_id, str(path), EMR_STEP_ARTIFACTS)
            if not found:
                say(f"no step logs at s3://{bucket}/{folder} yet: see the EMR console")
            for path in sorted(found):
                _print_tail(path)


def _print_tail(path: Path) -> None:
    tail = path.read_text(errors="replace").splitlines()[-30:]
    print("\n".join([f"--- step {path.name} (tail) ---", *tail]), file=sys.stderr)
