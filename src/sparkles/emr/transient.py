"""A transient EMR cluster for one run (``new_cluster``): the project's wheel and bootstrap
uploaded beside the archive, create-cluster.sh's sizes and configurations, the run's one step;
terminated on every way out after ``RunJobFlow``. And ``say``, the backend's progress lines."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from sparkles.emr.backend_config import EmrBackendConfig, split_s3

EMR_SCRIPTS = Path("scripts") / "emr"  # in the project: bootstrap.sh, configurations.json


def start_transient(
    emr: Any, s3: Any, config: EmrBackendConfig, *, step: dict[str, Any], project: Path
) -> tuple[str, str]:
    """A cluster that runs this one step and terminates: the project's wheel and bootstrap
    uploaded beside the archive, create-cluster.sh's configurations."""
    spec = config.new_cluster
    assert spec is not None
    prefix, scripts = f"{config.s3_prefix}/emr", project / EMR_SCRIPTS
    with tempfile.TemporaryDirectory() as folder:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "--quiet",
                "--no-deps",
                "--wheel-dir",
                folder,
                str(project),
            ],
            check=True,
            timeout=600,
        )
        (wheel,) = Path(folder).glob("*.whl")
        s3.upload_file(str(wheel), *split_s3(f"{prefix}/{wheel.name}"))
    s3.upload_file(str(scripts / "bootstrap.sh"), *split_s3(f"{prefix}/bootstrap.sh"))
    # the API's Args is a list, one element per positional argument of the script (the CLI's
    # comma-separated shorthand is not the API's: one joined string reached bootstrap.sh as $1)
    bootstrap_args = [f"{prefix}/{wheel.name}", *([spec.wheelhouse] if spec.wheelhouse else [])]
    instances: dict[str, Any] = {
        "InstanceGroups": [
            {"InstanceRole": "MASTER", "InstanceCount": 1, "InstanceType": spec.primary_type},
            {
                "InstanceRole": "CORE",
                "InstanceCount": spec.core_count,
                "InstanceType": spec.core_type,
            },
        ],
        "KeepJobFlowAliveWhenNoSteps": False,
    }
    if spec.key_name:
        instances["Ec2KeyName"] = spec.key_name
    if spec.subnet_id:
        instances["Ec2SubnetId"] = spec.subnet_id
    tags = [{"Key": key, "Value": value} for key, value in spec.tags.items()]
    started = emr.run_job_flow(
        Name=spec.name,
        **({"Tags": tags} if tags else {}),
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
    try:
        (first,) = emr.list_steps(ClusterId=cluster_id)["Steps"]
    except BaseException:
        terminate(emr, cluster_id)
        raise
    return cluster_id, first["Id"]


def terminate(emr: Any, cluster_id: str) -> None:
    """A transient cluster must not outlive its run: said on the console, and done."""
    say(f"terminating the transient cluster {cluster_id}")
    emr.terminate_job_flows(JobFlowIds=[cluster_id])


def say(message: str) -> None:
    """A progress line on the terminal: ``mlflow run`` configures only MLflow's own logger, so
    this module's log lines never reached it."""
    print(f"sparkles emr: {message}", file=sys.stderr, flush=True)
