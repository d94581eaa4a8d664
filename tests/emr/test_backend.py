"""`mlflow run . --backend emr` against a real AWS API endpoint on loopback.

moto in server mode (EMR and S3) runs in this process, `boto3` everywhere is pointed at it with
AWS_ENDPOINT_URL, and `mlflow server` is the tracking server both "sides" reach. The test plays
the cluster: it runs the step's own command line here, as the primary node would, then moves the
step to its end state in moto and puts the step's output where EMR puts step logs. moto has no
CancelSteps; the test adds it to moto's EMR endpoint as AWS documents it (a pending or running
step becomes CANCELLED). Nothing of this project is replaced.
"""

from __future__ import annotations

import functools
import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import mlflow
import pytest

from tests.conftest import ROOT, free_port, mlflow_server
from tests.emr.standin import EmrStandIn, alive
from tests.test_readme import COPY_IGNORE, command

pytestmark = pytest.mark.e2e  # `mlflow run` and `mlflow server` as processes
boto3 = pytest.importorskip("boto3")
moto_server = pytest.importorskip("moto.server")

BUCKET = "sparkles-emr-test"
REGION = "us-east-1"
# a small sample for the step that really runs an entry point here
SMALL = "data.sample.images=40 data.sample.size=[128, 96]"


@pytest.fixture(autouse=True)
def _mlflow_as_it_was():
    """These tests point MLflow at their tracking server and experiment (which MLflow also
    writes into the environment); later tests find both as they were."""
    before = mlflow.get_tracking_uri()
    saved = {k: v for k, v in os.environ.items() if k.startswith("MLFLOW_")}
    yield
    mlflow.set_tracking_uri(before)
    for key in [k for k in os.environ if k.startswith("MLFLOW_")]:
        del os.environ[key]
    os.environ.update(saved)


@pytest.fixture(scope="module")
def aws():
    """moto's EMR and S3 on loopback, a bucket, and a running cluster logging to it."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.core.responses import ActionResult
    from moto.emr.models import Step, emr_backends
    from moto.emr.responses import ElasticMapReduceResponse

    def cancel_steps(self) -> ActionResult:  # moto has none: the stand-in's, as documented
        cluster = self.backend.clusters[self._get_param("ClusterId")]
        option = self._get_param("StepCancellationOption") or "SEND_INTERRUPT"
        info = standin.cancel(cluster, self._get_param("StepIds", []), option)
        return ActionResult({"CancelStepsInfoList": info})

    def status(self) -> dict:  # DescribeStep's Status, with FailureDetails once a step failed
        details = getattr(self, "failure_details", None)
        return {**plain_status.fget(self), **({"FailureDetails": details} if details else {})}

    def create_persistent_app_ui(self) -> ActionResult:  # moto has none either
        return ActionResult(standin.create_persistent_app_ui(self._get_param("TargetResourceArn")))

    def get_persistent_app_ui_presigned_url(self) -> ActionResult:
        return ActionResult(
            standin.presigned_url(
                self._get_param("PersistentAppUIId"),
                self._get_param("PersistentAppUIType"),
                self._get_param("ApplicationId"),
            )
        )

    plain_status = Step.status
    patch = pytest.MonkeyPatch()
    patch.setattr(ElasticMapReduceResponse, "cancel_steps", cancel_steps, raising=False)
    for name, played in (
        ("create_persistent_app_ui", create_persistent_app_ui),
        ("get_persistent_app_ui_presigned_url", get_persistent_app_ui_presigned_url),
    ):
        patch.setattr(ElasticMapReduceResponse, name, played, raising=False)
    patch.setattr(Step, "status", property(status))
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
    }
    for key, value in env.items():
        patch.setenv(key, value)
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    cluster = _running_cluster("sparkles", f"s3n://{BUCKET}/emr-logs/")
    backend = emr_backends[DEFAULT_ACCOUNT_ID][REGION]
    node = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "SPARKLES_"))}
    node["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), node["PATH"]])
    standin = EmrStandIn(backend, node, sys.prefix)
    try:
        with standin:
            yield {"env": env, "cluster_id": cluster, "backend": backend, "standin": standin}
    finally:
        server.stop()
        patch.undo()


def _running_cluster(name: str, log_uri: str) -> str:
    """A long-running cluster (steps are added to it), logging to ``log_uri``."""
    return boto3.client("emr").run_job_flow(
        Name=name,
        ReleaseLabel="emr-spark-8.1.0",
        LogUri=log_uri,
        Instances={
            "InstanceGroups": [
                {"InstanceRole": "MASTER", "InstanceCount": 1, "InstanceType": "m6i.xlarge"}
            ],
            "KeepJobFlowAliveWhenNoSteps": True,
        },
        JobFlowRole="EMR_EC2_DefaultRole",
        ServiceRole="EMR_DefaultRole",
    )["JobFlowId"]


@pytest.fixture(scope="module")
def tracking(tmp_path_factory: pytest.TempPathFactory):
    """`mlflow server` on loopback: the tracking server the laptop and the cluster share."""
    folder = tmp_path_factory.mktemp("tracking")
    store = f"sqlite:///{folder / 'mlflow.db'}"
    with mlflow_server(store, "--artifacts-destination", str(folder / "artifacts")) as url:
        yield url


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """The project as a user's checkout holds it, with files git would ignore beside it."""
    root = tmp_path / "sparkles"
    shutil.copytree(ROOT, root, ignore=COPY_IGNORE)
    (root / "mlruns.db").write_text("a local store: ignored, never uploaded")
    return root


def _environment(aws: dict, tracking: str, **extra: str) -> dict[str, str]:
    venv_bin = str(Path(sys.executable).parent)
    plain = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "SPARKLES_"))}
    return {
        **plain,
        **aws["env"],
        "PATH": os.pathsep.join([venv_bin, plain["PATH"]]),
        "MLFLOW_TRACKING_URI": tracking,
        "SPARKLES_S3": f"s3://{BUCKET}/sparkles",
        "SPARKLES_EMR_CLUSTER_ID": aws["cluster_id"],
        **extra,
    }


def _launch(project: Path, line: str, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        ["bash", "-c", f"set -euo pipefail\n{line}"],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _submitted_step(aws: dict, launcher: subprocess.Popen, known: set[str]) -> dict:
    """The step the launcher added to the cluster (waits for it)."""
    emr = boto3.client("emr")
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        steps = emr.list_steps(ClusterId=aws["cluster_id"])["Steps"]
        new = [step for step in steps if step["Id"] not in known]
        if new:
            (step,) = new
            return emr.describe_step(ClusterId=aws["cluster_id"], StepId=step["Id"])["Step"]
        if launcher.poll() is not None:
            pytest.fail(f"mlflow run ended before adding a step:\n{launcher.stderr.read()[-3000:]}")
        time.sleep(0.5)
    pytest.fail("no step was added in 3 minutes")


def _known_steps(aws: dict) -> set[str]:
    return {s["Id"] for s in boto3.client("emr").list_steps(ClusterId=aws["cluster_id"])["Steps"]}


def _step(aws: dict, step_id: str):
    (step,) = [s for s in aws["backend"].clusters[aws["cluster_id"]].steps if s.id == step_id]
    return step


def _finish(
    aws: dict, step_id: str, state: str, stdout: str, stderr: str, failure: dict | None = None
) -> None:
    """What the cluster does when a step ends: its state (with FailureDetails if it failed),
    and its logs under the log URI."""
    s3 = boto3.client("s3")
    folder = f"emr-logs/{aws['cluster_id']}/steps/{step_id}"
    for name, text in (("stdout", stdout), ("stderr", stderr)):
        s3.put_object(Bucket=BUCKET, Key=f"{folder}/{name}.gz", Body=gzip.compress(text.encode()))
    step = _step(aws, step_id)
    step.failure_details = failure
    step.state = state


def _option(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def test_mlflow_run_backend_emr_as_written(aws: dict, tracking: str, project: Path) -> None:
    """docs/emr.md's line: the run on the caller's server, the project in S3, the step's
    arguments; the step completing ends the run FINISHED with the step's logs attached."""
    line = command("mlflow run . --backend emr")
    config = project / "conf" / "emr-backend.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "poll_seconds": 0.5}))
    known = _known_steps(aws)
    launcher = _launch(project, line, _environment(aws, tracking))
    try:
        step = _submitted_step(aws, launcher, known)
        args = step["Config"]["Args"]
        assert step["Config"]["Jar"] == "command-runner.jar"
        assert args[:3] == ["/opt/sparkles/venv/bin/python", "-m", "sparkles.emr.step"]
        assert _option(args, "--entry-point") == "tune" and "-Pprofile=emr" in args
        assert _option(args, "--tracking-uri") == tracking
        run_id = _option(args, "--run-id")

        mlflow.set_tracking_uri(tracking)
        run = mlflow.get_run(run_id)
        assert run.info.status == "RUNNING"
        assert run.data.tags["mlflow.project.entryPoint"] == "tune"
        assert run.data.tags["mlflow.project.backend"] == "emr"
        assert run.data.tags["sparkles.emr.step_id"] == step["Id"]
        assert run.data.params["profile"] == "emr"

        archive = _option(args, "--archive")
        assert archive == f"s3://{BUCKET}/sparkles/mlflow-projects/{run_id}/project.tar.gz"
        local = project.parent / "uploaded.tar.gz"
        boto3.client("s3").download_file(BUCKET, archive.split("/", 3)[3], str(local))
        with tarfile.open(local) as tar:
            names = set(tar.getnames())
        assert {"MLproject", "conf/emr.yaml", "src/sparkles/cli.py"} <= names
        assert "mlruns.db" not in names and not any(n.startswith(".venv") for n in names)

        _finish(aws, step["Id"], "COMPLETED", "the step's stdout\n", "the step's stderr\n")
        out, err = launcher.communicate(timeout=120)
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
    assert launcher.returncode == 0, err[-3000:]
    assert "the step's stderr" in err, (out[-2000:], err[-2000:])  # the tail, printed
    finished = mlflow.get_run(run_id)
    assert finished.info.status == "FINISHED"
    logs = {a.path for a in mlflow.MlflowClient().list_artifacts(run_id, "emr-step")}
    assert logs == {"emr-step/stdout", "emr-step/stderr"}


def test_interrupting_mlflow_run_cancels_the_step(aws: dict, tracking: str, project: Path) -> None:
    """Ctrl-C cancels the running step with SEND_INTERRUPT; cancelling is asynchronous (the
    step's process gets SIGTERM and ends its entry point: tests/emr/test_step.py), so the run
    stays RUNNING while the step is CANCEL_PENDING and ends KILLED once EMR says it ended."""
    line = command("mlflow run . --backend emr")
    config = project / "conf" / "emr-backend.json"
    config.write_text(
        json.dumps({**json.loads(config.read_text()), "poll_seconds": 0.5, "log_wait_seconds": 0})
    )
    known = _known_steps(aws)
    launcher = _launch(project, line, _environment(aws, tracking))
    try:
        step = _submitted_step(aws, launcher, known)
        run_id = _option(step["Config"]["Args"], "--run-id")
        _step(aws, step["Id"]).state = "RUNNING"  # EMR started it
        time.sleep(2)  # in wait(): polling the step
        os.killpg(launcher.pid, signal.SIGINT)  # Ctrl-C
        emr = boto3.client("emr")
        deadline = time.monotonic() + 60
        while _step(aws, step["Id"]).state != "CANCEL_PENDING" and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _step(aws, step["Id"]).cancellation_option == "SEND_INTERRUPT"
        time.sleep(2)  # the backend waits for EMR to say the step ended
        mlflow.set_tracking_uri(tracking)
        assert launcher.poll() is None
        assert mlflow.get_run(run_id).info.status == "RUNNING"
        _step(aws, step["Id"]).state = "CANCELLED"  # the step's process exited
        _, err = launcher.communicate(timeout=120)
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
    assert launcher.returncode != 0
    state = emr.describe_step(ClusterId=aws["cluster_id"], StepId=step["Id"])["Step"]["Status"]
    assert state["State"] == "CANCELLED"
    assert mlflow.get_run(run_id).info.status == "KILLED"
    assert f"step {step['Id']}: RUNNING" in err  # progress reaches the terminal
    assert f"interrupted: cancelling step {step['Id']}" in err


def test_bad_config_and_local_tracking_fail_before_any_upload(
    aws: dict, tracking: str, project: Path, tmp_path: Path
) -> None:
    s3 = boto3.client("s3")
    before = s3.list_objects_v2(Bucket=BUCKET).get("KeyCount", 0)
    mlflow.set_tracking_uri(tracking)
    runs = len(mlflow.search_runs(search_all_experiments=True, output_format="list"))
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps({"cluster_id": aws["cluster_id"], "s3_prefix": "my-bucket/x", "poll_secs": 5})
    )
    done = subprocess.run(
        ["bash", "-c", f"mlflow run . --backend emr --backend-config {bad} -e train"],
        cwd=project,
        env=_environment(aws, tracking),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode != 0
    assert "key 's3_prefix': Value error, must be s3://bucket[/prefix]" in done.stderr
    assert "key 'poll_secs': Extra inputs are not permitted" in done.stderr
    assert "Traceback" not in done.stderr

    local = _environment(aws, tracking, MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'm.db'}")
    done = subprocess.run(
        ["bash", "-c", command("mlflow run . --backend emr")],
        cwd=project,
        env=local,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode != 0
    assert "is local to this machine" in done.stderr and "Traceback" not in done.stderr
    assert s3.list_objects_v2(Bucket=BUCKET).get("KeyCount", 0) == before
    mlflow.set_tracking_uri(tracking)
    assert len(mlflow.search_runs(search_all_experiments=True, output_format="list")) == runs


def test_a_transient_cluster_is_the_one_create_cluster_sh_starts(
    aws: dict, tracking: str, project: Path
) -> None:
    """new_cluster: a cluster for this one step, with create-cluster.sh's release, sizes,
    bootstrap (the project's own wheel) and configurations; it ends with its step."""
    mlflow.set_tracking_uri(tracking)
    mlflow.set_experiment("sparkles-emr")
    prefix = f"s3://{BUCKET}/transient"
    submitted = mlflow.projects.run(
        str(project),
        entry_point="train",
        parameters={"profile": "emr"},
        backend="emr",
        backend_config={
            "s3_prefix": prefix,
            "new_cluster": {
                "key_name": "k",
                "core_count": 3,
                "wheelhouse": f"{prefix}/wheels/",
                "tags": {"team": "vision"},
            },
            "poll_seconds": 0.5,
            "log_wait_seconds": 0,
        },
        synchronous=False,  # from Python: a handle on the submitted step, at once
    )
    emr = boto3.client("emr")
    cluster = emr.describe_cluster(ClusterId=submitted.cluster_id)["Cluster"]
    script = subprocess.run(
        ["bash", str(project / "scripts" / "emr" / "create-cluster.sh")],
        env={
            **os.environ,
            "DRY_RUN": "1",
            "SPARKLES_S3": prefix,
            "KEY_NAME": "k",
            "CORE_COUNT": "3",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    create = next(line for line in script.stdout.splitlines() if "emr create-cluster" in line)
    assert f"--release-label {cluster['ReleaseLabel']} " in create
    assert {"Key": "team", "Value": "vision"} in cluster["Tags"]
    assert cluster["AutoTerminate"] is True  # no KeepJobFlowAliveWhenNoSteps: it ends with the step
    groups = emr.list_instance_groups(ClusterId=submitted.cluster_id)["InstanceGroups"]
    for group in groups:
        role = {"MASTER": "MASTER", "CORE": "CORE"}[group["InstanceGroupType"]]
        expected = f"InstanceGroupType={role}\\,InstanceCount={group['RequestedInstanceCount']}"
        assert f"{expected}\\,InstanceType={group['InstanceType']}" in create
    (bootstrap,) = emr.list_bootstrap_actions(ClusterId=submitted.cluster_id)["BootstrapActions"]
    assert f"Path={bootstrap['ScriptPath']}\\," in create
    # the API's Args: one element per argument of bootstrap.sh (not the CLI's comma shorthand)
    wheel, wheelhouse = bootstrap["Args"]
    assert wheelhouse == f"{prefix}/wheels/"
    assert wheel.startswith(f"{prefix}/emr/sparkles_spark-") and wheel.endswith(".whl")
    keys = {o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=BUCKET)["Contents"]}
    assert wheel.split("/", 3)[3] in keys and "transient/emr/bootstrap.sh" in keys
    configured = {c["Classification"] for c in cluster["Configurations"]}
    shipped = json.loads((project / "scripts" / "emr" / "configurations.json").read_text())
    assert configured == {c["Classification"] for c in shipped}
    assert submitted.get_status() == "RUNNING"  # as MLflow's own backends answer
    # EMR holds a new cluster's step PENDING while it boots (moto marks it RUNNING at once): a
    # pending step is cancelled at once (a running one would wait for its process)
    cluster_steps = aws["backend"].clusters[submitted.cluster_id].steps
    (step,) = [s for s in cluster_steps if s.id == submitted.step_id]
    step.state = "PENDING"
    assert submitted.get_status() == "SCHEDULED"
    submitted.cancel()
    assert mlflow.get_run(submitted.run_id).info.status == "KILLED"
    terminated = emr.describe_cluster(ClusterId=submitted.cluster_id)["Cluster"]["Status"]
    assert terminated["State"] in ("TERMINATING", "TERMINATED")


def test_a_transient_cluster_is_terminated_when_the_run_fails_after_it_started(
    aws: dict, tracking: str, project: Path, monkeypatch
) -> None:
    """Anything that fails after RunJobFlow (here: the tracking server refusing the run's
    tags) terminates the cluster it started: none is left running, and billed."""
    mlflow.set_tracking_uri(tracking)
    emr = boto3.client("emr")
    before = {c["Id"] for c in emr.list_clusters()["Clusters"]}

    logged = mlflow.MlflowClient.log_batch

    def refused(self, run_id, metrics=(), params=(), tags=(), **kwargs):
        if any(tag.key == "sparkles.emr.cluster_id" for tag in tags):  # once the cluster runs
            raise RuntimeError("the tracking server went away")
        return logged(self, run_id, metrics=metrics, params=params, tags=tags, **kwargs)

    monkeypatch.setattr(mlflow.MlflowClient, "log_batch", refused)
    with pytest.raises(RuntimeError, match="went away"):
        mlflow.projects.run(
            str(project),
            entry_point="train",
            parameters={"profile": "emr"},
            backend="emr",
            backend_config={"s3_prefix": f"s3://{BUCKET}/leak", "new_cluster": {}, "wait": False},
            synchronous=False,
        )
    (started,) = [c for c in emr.list_clusters()["Clusters"] if c["Id"] not in before]
    state = emr.describe_cluster(ClusterId=started["Id"])["Cluster"]["Status"]["State"]
    assert state in ("TERMINATING", "TERMINATED")


def _served_cluster(aws: dict) -> str:
    """A running cluster whose steps the stand-in runs (the bootstrap's venv: this one)."""
    cluster = _running_cluster("sparkles-node", f"s3://{BUCKET}/emr-logs/")
    aws["standin"].served.add(cluster)
    return cluster


def _config(tmp_path: Path, **values) -> Path:
    config = tmp_path / "backend.json"
    config.write_text(
        json.dumps(
            {
                "s3_prefix": f"s3://{BUCKET}/sparkles",
                "poll_seconds": 0.5,
                "log_wait_seconds": 5,
                **values,
            }
        )
    )
    return config


def _runs_on_the_node(config: Path, entry_point: str, *params: str, overrides: str = SMALL) -> str:
    return (
        f"mlflow run . --backend emr --backend-config {config} -e {entry_point} "
        f"--experiment-name sparkles-emr -P profile=local -P overrides='{overrides}' "
        + " ".join(f"-P {param}" for param in params)
    )


def _mlflow_run_on_the_node(
    aws: dict,
    tracking: str,
    project: Path,
    tmp_path: Path,
    entry_point: str,
    *params: str,
    cluster: str | None = None,
    overrides: str = SMALL,
) -> tuple[str, int, str]:
    """`mlflow run --backend emr` of ``entry_point`` on a served cluster (a new one unless
    given), to its end: the cluster, the exit code and what the terminal showed."""
    cluster = cluster or _served_cluster(aws)
    config = _config(tmp_path, cluster_id=cluster)
    line = _runs_on_the_node(config, entry_point, *params, overrides=overrides)
    launcher = _launch(project, line, _environment(aws, tracking))
    try:
        _, err = launcher.communicate(timeout=900)
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
    return cluster, launcher.returncode, err


def test_featurize_then_tune_run_as_steps_into_their_runs(
    aws: dict, tracking: str, project: Path, tmp_path: Path
) -> None:
    """docs/emr.md's featurize and tune lines, on a node the stand-in runs (the step, `mlflow
    run`, the entry point, Spark; the local profile, as the node here has no S3A): each step
    runs into the run the backend created, its output reaching the run from the step itself;
    tune fits on the table featurize committed, reading no image."""
    # the node's data and feature store at fixed places: each step unpacks the project into
    # a folder of its own, which the local profile's relative paths would follow
    node = tmp_path / "node"
    fixed = (
        f"data.labels_csv={node}/labels.csv data.classes_csv={node}/classes.csv "
        f"data.images={node}/images store.dir={node}/cache featurizer.model=MobileNetV2 "
        "featurizer.weights=random"
    )
    on_node = functools.partial(_mlflow_run_on_the_node, aws, tracking, project, tmp_path)
    cluster, code, err = on_node("featurize", overrides=f"{SMALL} {fixed}")
    assert code == 0, err[-4000:]
    grid = "tune.logistic.grid.reg_param=[0.1] tune.logistic.grid.elastic_net_param=[0.0]"
    _, code, err = on_node(
        "tune", "method=grid", cluster=cluster, overrides=f"{SMALL} {fixed} {grid}"
    )
    assert code == 0, err[-4000:]
    featurized, tuned = boto3.client("emr").list_steps(ClusterId=cluster)["Steps"][::-1]
    assert {featurized["Status"]["State"], tuned["Status"]["State"]} == {"COMPLETED"}
    mlflow.set_tracking_uri(tracking)
    run = mlflow.get_run(_option(tuned["Config"]["Args"], "--run-id"))
    assert run.info.status == "FINISHED"
    assert run.data.tags["mlflow.project.backend"] == "emr"
    assert run.data.tags["sparkles.command"].startswith("tune")  # the entry point ran here
    assert run.data.tags["sparkles.features.run_id"] == _option(
        featurized["Config"]["Args"], "--run-id"
    )
    assert "auc" in run.data.metrics
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)}
    assert "emr-step" in artifacts
    assert f"step {tuned['Id']}: RUNNING" in err and "--- step stderr (tail) ---" in err
    # the run knows its Spark application, and EMR's persistent History Server links to it
    app_id = run.data.tags["sparkles.spark.app_id"]
    spark_files = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, "spark")}
    assert {"spark/stages.csv", "spark/timeline.png", "spark/eventlog"} <= spark_files
    ui, page = run.data.tags["sparkles.emr.history_server"].split()
    assert page.endswith(f"#/clusterDetails/{cluster}")
    asked = dict(aws["standin"].app_ui_calls)["GetPersistentAppUIPresignedURL"]
    assert asked == {"PersistentAppUIId": ui, "PersistentAppUIType": "SHS", "ApplicationId": app_id}
    assert f"Spark History Server of {app_id} (this link expires): https://{ui}." in err
    (experiment,) = [e for e in mlflow.search_experiments() if e.name == "sparkles-emr"]
    assert run.info.experiment_id == experiment.experiment_id


def test_ctrl_c_leaves_no_process_of_the_step_and_the_run_killed(
    aws: dict, tracking: str, project: Path, tmp_path: Path
) -> None:
    """Ctrl-C → CancelSteps (SEND_INTERRUPT) → SIGTERM to the step's process alone on the
    node → the step ends the entry point's tree, the Spark driver's JVM included → EMR says
    CANCELLED → the run ends KILLED."""
    cluster = _served_cluster(aws)
    line = _runs_on_the_node(_config(tmp_path, cluster_id=cluster), "eda")
    launcher = _launch(project, line, _environment(aws, tracking))
    standin = aws["standin"]
    try:
        deadline, tree, step_id = time.monotonic() + 300, [], None
        while time.monotonic() < deadline:  # until the entry point's Spark driver runs
            steps = boto3.client("emr").list_steps(ClusterId=cluster)["Steps"]
            step_id = steps[0]["Id"] if steps else None
            tree = standin.tree_of(step_id) if step_id else []
            names = {_name(pid) for pid in tree}
            if "java" in names:
                break
            assert launcher.poll() is None, launcher.stderr.read()[-3000:]
            time.sleep(0.5)
        assert "java" in names, "the entry point's Spark driver did not start"
        os.killpg(launcher.pid, signal.SIGINT)  # Ctrl-C
        _, err = launcher.communicate(timeout=300)
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
    assert launcher.returncode != 0
    assert alive(tree) == [], "processes of the step outlived its cancellation"
    step = boto3.client("emr").describe_step(ClusterId=cluster, StepId=step_id)["Step"]
    assert step["Status"]["State"] == "CANCELLED"
    mlflow.set_tracking_uri(tracking)
    assert mlflow.get_run(_option(step["Config"]["Args"], "--run-id")).info.status == "KILLED"


def _name(pid: int) -> str:
    import psutil

    try:
        return psutil.Process(pid).name()
    except psutil.NoSuchProcess:
        return ""


def test_a_failing_entry_point_ends_failed_saying_emrs_reason(
    aws: dict, tracking: str, project: Path, tmp_path: Path
) -> None:
    """`train` with no features committed fails on the node: the step FAILED, EMR's
    FailureDetails on the terminal, the run FAILED with the entry point's own error."""
    cluster, code, err = _mlflow_run_on_the_node(aws, tracking, project, tmp_path, "train")
    assert code != 0
    assert "ended FAILED: Unknown Error.; Command exited with status 1." in err
    assert "run `sparkles featurize`" in err  # the step's stderr tail: what to do
    (step,) = boto3.client("emr").list_steps(ClusterId=cluster)["Steps"]
    mlflow.set_tracking_uri(tracking)
    run = mlflow.get_run(_option(step["Config"]["Args"], "--run-id"))
    assert run.info.status == "FAILED"
    assert "TableMissingError" in run.data.tags["sparkles.error"]


def test_a_transient_cluster_boots_with_a_wheelhouse_runs_its_step_and_terminates(
    aws: dict, tracking: str, project: Path
) -> None:
    """From Python, waiting through MLflow: the bootstrap action gets the wheel and the
    wheelhouse as two arguments and accepts them, the step runs `eda` into the run, and the
    cluster ends with its step."""
    mlflow.set_tracking_uri(tracking)
    mlflow.set_experiment("sparkles-emr")
    standin = aws["standin"]
    standin.serve_new = True
    try:
        submitted = mlflow.projects.run(
            str(project),
            entry_point="eda",
            parameters={"profile": "local", "overrides": SMALL},
            backend="emr",
            synchronous=True,
            backend_config={
                "s3_prefix": f"s3://{BUCKET}/booted",
                "poll_seconds": 0.5,
                "log_wait_seconds": 5,
                "new_cluster": {"wheelhouse": f"s3://{BUCKET}/wheels/"},
            },
        )
    finally:
        standin.serve_new = False
    assert mlflow.get_run(submitted.run_id).info.status == "FINISHED"
    assert submitted.get_status() == "FINISHED"
    emr = boto3.client("emr")
    (bootstrap,) = emr.list_bootstrap_actions(ClusterId=submitted.cluster_id)["BootstrapActions"]
    assert bootstrap["Args"][1] == f"s3://{BUCKET}/wheels/"
    state = emr.describe_cluster(ClusterId=submitted.cluster_id)["Cluster"]["Status"]["State"]
    assert state in ("TERMINATING", "TERMINATED")


def test_a_wheelhouse_the_bootstrap_refuses_fails_the_run_with_the_clusters_reason(
    aws: dict, tracking: str, project: Path, tmp_path: Path, capfd
) -> None:
    """Its bootstrap action runs with the Args list (bootstrap.sh checks them) before the
    step; a wheelhouse it cannot use fails the bootstrap: the cluster ends with errors, the run
    FAILED with the cluster's reason, at once (no wait for step logs that will never come)."""
    mlflow.set_tracking_uri(tracking)
    mlflow.set_experiment("sparkles-emr")
    standin = aws["standin"]
    standin.serve_new = True
    try:
        with pytest.raises(mlflow.exceptions.ExecutionException):
            mlflow.projects.run(
                str(project),
                entry_point="train",
                parameters={"profile": "local"},
                backend="emr",
                synchronous=True,  # MLflow waits
                backend_config={
                    "s3_prefix": f"s3://{BUCKET}/bad-wheelhouse",
                    "poll_seconds": 0.5,
                    "log_wait_seconds": 300,
                    "new_cluster": {"wheelhouse": "https://example.org/wheels/"},
                },
            )
    finally:
        standin.serve_new = False
    said = capfd.readouterr().err
    assert "ended with errors" in said and "expected a wheelhouse" in said
    (run,) = mlflow.search_runs(
        experiment_names=["sparkles-emr"],
        output_format="list",
        max_results=1,
        order_by=["attributes.start_time DESC"],
    )
    assert run.info.status == "FAILED"
    cluster = boto3.client("emr").describe_cluster(
        ClusterId=run.data.tags["sparkles.emr.cluster_id"]
    )
    assert cluster["Cluster"]["Status"]["State"] == "TERMINATED_WITH_ERRORS"
