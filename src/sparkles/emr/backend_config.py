"""The emr backend's settings: ``--backend-config`` (a JSON file, ``${VAR}`` expanded) validated
before anything is uploaded, every error naming its key, and the tracking URI the step will log
to checked for what a cluster cannot reach or must not see."""

from __future__ import annotations

import re
from typing import Any

from mlflow.exceptions import ExecutionException
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sparkles.config import ConfigError
from sparkles.errors import UserError
from sparkles.overrides import USERINFO, expand_environment


class EmrError(UserError, ExecutionException):
    """What stops a run before its step starts, said in one line: a --backend-config that
    cannot be used (naming the key), a tracking server the cluster cannot reach, AWS refusing.
    ``mlflow run`` prints an ExecutionException's message without a traceback."""


class NewCluster(BaseModel):
    """A transient cluster for one run, sized as scripts/emr/create-cluster.sh sizes its own;
    it terminates when its step ends."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = "sparkles"
    release_label: str = "emr-spark-8.1.0"
    primary_type: str = "m6i.xlarge"
    core_type: str = "m6i.4xlarge"
    core_count: int = Field(default=2, ge=1)
    key_name: str | None = None
    subnet_id: str | None = None
    log_uri: str | None = None  # default: <s3_prefix>/emr-logs/
    service_role: str = "EMR_DefaultRole"
    instance_profile: str = "EMR_EC2_DefaultRole"
    wheelhouse: str | None = None  # s3://… for nodes without internet
    tags: dict[str, str] = {}  # on the cluster (cost allocation, ownership): RunJobFlow's Tags


class EmrBackendConfig(BaseModel):
    """``--backend-config``: a JSON file (``${VAR}`` and ``${VAR:-default}`` are expanded)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    s3_prefix: str  # s3://bucket/prefix: project archives (and a transient cluster's files)
    cluster_id: str | None = None  # a running cluster, j-…
    new_cluster: NewCluster | None = None  # or a transient one
    region: str | None = None  # default: boto3's chain (AWS_DEFAULT_REGION, ~/.aws/config)
    # a runtime role for the step (AddJobFlowSteps' ExecutionRoleArn: a running cluster with a
    # security configuration that allows runtime roles, EMR >= 6.7)
    execution_role_arn: str | None = None
    venv: str = "/opt/sparkles/venv"  # the bootstrap's venv on the primary node
    # the tracking URI the step logs to, if the cluster reaches the server by another address
    # (default: the caller's, as with an SSM port forward to a server on the primary node)
    cluster_tracking_uri: str | None = None
    # MLflow's CLI never waits for a plugin backend's run: under `mlflow run` this one waits for
    # its step itself (Ctrl-C cancels it) unless told not to; from Python, synchronous=True waits
    # through MLflow and synchronous=False returns at once
    wait: bool = True
    poll_seconds: float = Field(default=30.0, gt=0)
    log_wait_seconds: float = Field(default=300.0, ge=0)  # EMR pushes step logs every ~5 min

    @field_validator("s3_prefix")
    @classmethod
    def _s3(cls, value: str) -> str:
        if not re.match(r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/|$)", value):
            raise ValueError(f"must be s3://bucket[/prefix], got {value!r}")
        return value.rstrip("/")

    @field_validator("cluster_id")
    @classmethod
    def _cluster(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"j-[A-Z0-9]{1,64}", value):
            raise ValueError(f"must be an EMR cluster id like j-1ABCDEFGHIJKL, got {value!r}")
        return value

    @model_validator(mode="after")
    def _one_cluster(self) -> EmrBackendConfig:
        if (self.cluster_id is None) == (self.new_cluster is None):
            raise ValueError("give exactly one of cluster_id (a running cluster) or new_cluster")
        if self.execution_role_arn and self.new_cluster is not None:
            raise ValueError(
                "execution_role_arn is a step's runtime role, given when a step is added to a "
                "running cluster (AddJobFlowSteps); a transient cluster's step runs as its "
                "instance profile"
            )
        return self


def load_config(backend_config: dict[str, Any] | None) -> EmrBackendConfig:
    """The validated config; MLflow's own keys (upper case, or its docker settings) dropped."""
    ours = {
        key: value
        for key, value in (backend_config or {}).items()
        if not key.isupper() and not key.startswith(("_mlflow", "build_image", "docker_auth"))
    }
    try:
        return EmrBackendConfig.model_validate(expand_environment(ours, "--backend-config"))
    except ConfigError as err:  # a ${VAR} that is not set
        raise EmrError(str(err)) from None
    except ValidationError as err:
        lines = [
            f"--backend-config: key '{'.'.join(map(str, e['loc'])) or '(top level)'}': {e['msg']}"
            for e in err.errors()
        ]
        raise EmrError("\n".join(lines)) from None


def check_tracking_uri(uri: str, config: EmrBackendConfig | None = None) -> None:
    """The step logs into the caller's run from the cluster: both must reach one server, and
    the URI the step is given (``cluster_tracking_uri``, else the caller's) lands in its
    arguments, which the EMR console and CloudTrail show: no credentials in either."""
    scheme = uri.split(":", 1)[0] if re.match(r"^[a-zA-Z][\w+.-]*:", uri) else ""
    if scheme in ("file", "sqlite") or (not scheme and uri != "databricks"):
        raise EmrError(
            f"the tracking URI {uri!r} is local to this machine, but the EMR step logs into the "
            "same run from the cluster: use a tracking server both reach (MLFLOW_TRACKING_URI="
            "http://…, e.g. a server on the primary node through an SSM port forward; docs/emr.md)"
        )
    cluster_uri = config.cluster_tracking_uri if config else None
    given = {"the tracking URI": uri, "cluster_tracking_uri": cluster_uri}
    for key, value in given.items():
        if value and USERINFO.search(value):
            raise EmrError(
                f"{key} carries credentials, which a step's arguments would show in the EMR "
                "console and CloudTrail: give them to the cluster as MLFLOW_TRACKING_TOKEN (or "
                "MLFLOW_TRACKING_USERNAME/PASSWORD) or a netrc file"
            )


def split_s3(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` (or EMR's ``s3n://``) → (bucket, key)."""
    bucket, _, key = re.sub(r"^s3[an]?://", "", uri).partition("/")
    return bucket, key
