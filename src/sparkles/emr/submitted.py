"""An EMR step running one MLflow run, as MLflow's ``SubmittedRun``: ``wait`` polls the step,
saying each state on the terminal; ``get_status`` maps its state; ``cancel`` cancels it (the
run ends KILLED once EMR says the step ended); ``attach_logs`` puts the step's output into the
run (``emr-step/``) and prints its tails.
"""

from __future__ import annotations

import gzip
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from mlflow.entities import RunStatus
from mlflow.projects.submitted_run import SubmittedRun
from mlflow.tracking import MlflowClient

from sparkles.emr.app_ui import link_history_server
from sparkles.emr.backend_config import EmrBackendConfig, split_s3
from sparkles.emr.transient import say, terminate
from sparkles.names import EMR_STEP_ARTIFACTS

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


def _ongoing(state: str) -> bool:
    """The step has not ended (pending, running, or being cancelled)."""
    return STATES[state] in (RunStatus.SCHEDULED, RunStatus.RUNNING)


# how long a cancel waits for EMR to say the step ended (the step's own grace is 30 s)
CANCEL_WAIT_SECONDS = 120.0


def _failure(status: dict[str, Any]) -> str:
    """DescribeStep's ``FailureDetails`` (reason, message, log file) as a clause, or ""."""
    details = status.get("FailureDetails") or {}
    said = [details.get(key) for key in ("Reason", "Message") if details.get(key)]
    if details.get("LogFile"):
        said.append(f"log: {details['LogFile']}")
    return f": {'; '.join(said)}" if said else ""


class EmrSubmittedRun(SubmittedRun):
    """One EMR step running one MLflow run."""

    def __init__(
        self,
        *,
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
        say(
            f"step {self.step_id}: {self.final_state}{self.failure} "
            f"({time.monotonic() - started:.0f} s)"
        )
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
            ClusterId=self.cluster_id,
            StepIds=[self.step_id],
            StepCancellationOption="SEND_INTERRUPT",
        )
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
            say(
                f"step {self.step_id} is still {state} after {CANCEL_WAIT_SECONDS:.0f} s: the "
                "run is marked KILLED; see the EMR console"
            )
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
