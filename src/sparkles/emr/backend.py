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

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mlflow.entities import RunStatus, RunTag
from mlflow.projects.backend.abstract_backend import AbstractBackend
from mlflow.projects.utils import PROJECT_SYNCHRONOUS, fetch_and_validate_project, get_or_create_run
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PROJECT_BACKEND

from sparkles import __version__
from sparkles.emr.backend_config import (
    EmrBackendConfig,
    EmrError,
    check_tracking_uri,
    load_config,
    split_s3,
)
from sparkles.emr.project import package
from sparkles.emr.submitted import EmrSubmittedRun
from sparkles.emr.transient import say, start_transient, terminate
from sparkles.names import (
    EMR_CLUSTER_TAG,
    EMR_PROJECT_TAG,
    EMR_STEP_ARTIFACTS,
    EMR_STEP_TAG,
    ERROR_TAG,
)

BACKEND = "emr"
ACCEPTS_STEPS = ("STARTING", "BOOTSTRAPPING", "RUNNING", "WAITING")
AWS_ATTEMPTS = 10  # per call, with botocore's backoff


def step_args(
    config: EmrBackendConfig,
    archive: str,
    *,
    entry_point: str,
    params: dict[str, Any],
    run_id: str,
    experiment_id: str,
    tracking_uri: str,
) -> list[str]:
    """What command-runner.jar runs on the primary node (``sparkles.emr.step``)."""
    options = {
        "--archive": archive,
        "--entry-point": entry_point,
        "--run-id": run_id,
        "--experiment-id": experiment_id,
        "--tracking-uri": config.cluster_tracking_uri or tracking_uri,
        "--client-version": __version__,
    }
    flags = [part for option in options.items() for part in option]
    parameters = [f"-P{key}={value}" for key, value in params.items()]
    return [f"{config.venv}/bin/python", "-m", "sparkles.emr.step", *flags, *parameters]


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
                config,
                archive,
                entry_point=entry_point,
                params=params,
                run_id=run_id,
                experiment_id=experiment_id,
                tracking_uri=tracking_uri,
            )
            step = {
                "Name": f"sparkles-{entry_point}-{run_id[:8]}",
                "ActionOnFailure": "CONTINUE",
                "HadoopJarStep": {"Jar": "command-runner.jar", "Args": args},
            }
            with _aws("submitting the step"):
                if config.new_cluster is not None:
                    cluster_id, step_id = start_transient(
                        emr, s3, config, step=step, project=work_dir
                    )
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
        tags = {
            EMR_CLUSTER_TAG: cluster_id,
            EMR_STEP_TAG: step_id,
            EMR_PROJECT_TAG: archive,
            MLFLOW_PROJECT_BACKEND: BACKEND,
        }
        try:
            client.log_batch(run_id, tags=[RunTag(key, value) for key, value in tags.items()])
        except BaseException:
            if config.new_cluster is not None:
                terminate(emr, cluster_id)
            raise
        say(f"run {run_id}: step {step_id} on cluster {cluster_id}")
        submitted = EmrSubmittedRun(
            run_id=run_id, cluster_id=cluster_id, step_id=step_id, config=config, emr=emr, s3=s3
        )
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
