"""EMR as AWS documents it, for the emr backend's tests, on loopback: moto's EMR and S3 server
underneath (nothing of this project replaced), and what moto does not do, played as documented.

- **Steps run.** Each PENDING step of a cluster the stand-in serves runs its ``Args`` as
  ``command-runner.jar`` does: its own process, with the cluster side's environment (no tracking
  URI of the caller; the bootstrap's venv is this test venv), one step at a time. It goes
  PENDING → RUNNING → COMPLETED or FAILED by exit code, a failure with ``FailureDetails``, and
  ``stdout.gz``/``stderr.gz`` land under ``<LogUri>/<cluster>/steps/<step>/`` after
  ``log_delay`` seconds (EMR: minutes).
- **CancelSteps** ("Cancel steps", EMR Management Guide): a pending step is CANCELLED; for a
  running one ``SEND_INTERRUPT`` sends SIGTERM to the step's process alone (CANCEL_PENDING until
  it exits), ``TERMINATE_PROCESS`` SIGKILLs it and every descendant; the answer gives each
  step's status. Steps of clusters the stand-in does not serve are cancelled the same way, the
  test playing the node.
- **Bootstrap actions** run with their ``Args`` list before the first step (``bootstrap.sh``
  with ``DRY_RUN=1``: its arguments checked, nothing installed); one that fails terminates the
  cluster ``TERMINATED_WITH_ERRORS`` with ``StateChangeReason`` ``BOOTSTRAP_FAILURE`` and
  cancels its steps. A cluster without ``KeepJobFlowAliveWhenNoSteps`` terminates after its
  last step.
- **Persistent application UIs** (EMR API Reference: CreatePersistentAppUI,
  GetPersistentAppUIPresignedURL): ``TargetResourceArn`` must be a cluster's ARN (else
  ``InvalidRequestException``) and yields a ``PersistentAppUIId``; a presigned URL is asked of
  a known id, with ``PersistentAppUIType`` one of SHS, TEZ, YTS, and answers
  ``PresignedURLReady`` and ``PresignedURL``. Each call is recorded (``app_ui_calls``).
"""

from __future__ import annotations

import gzip
import signal
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any

import boto3
import psutil

ENDED = ("COMPLETED", "FAILED", "CANCELLED", "INTERRUPTED")


class EmrStandIn:
    def __init__(self, backend: Any, node_env: dict[str, str], venv: str, log_delay: float = 1):
        self.backend, self.node_env, self.venv, self.log_delay = backend, node_env, venv, log_delay
        self.served: set[str] = set()  # clusters whose steps run here
        self.serve_new = False  # and every cluster RunJobFlow starts while this is set
        self.known: set[str] = set(backend.clusters)
        self.processes: dict[str, subprocess.Popen] = {}  # step id → its running process
        self.cancelling: dict[str, str] = {}  # step id → StepCancellationOption
        self.bootstrapped: set[str] = set()
        self.app_uis: dict[str, str] = {}  # PersistentAppUIId → the cluster ARN it serves
        self.app_ui_calls: list[tuple[str, dict]] = []
        self.folder = Path(tempfile.mkdtemp(prefix="emr-standin-"))
        self.lock = threading.RLock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> EmrStandIn:
        self.thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self.stop.set()
        self.thread.join(timeout=30)
        for process in self.processes.values():
            _kill_tree(process.pid)

    # --- what CancelSteps does ----------------------------------------------------------------
    def cancel(self, cluster: Any, step_ids: list[str], option: str) -> list[dict[str, str]]:
        info = []
        with self.lock:
            for step_id in step_ids:
                step = next((s for s in cluster.steps if s.id == step_id), None)
                if step is None or step.state not in ("PENDING", "RUNNING"):
                    reason = "no such step" if step is None else f"step is {step.state}"
                    info.append({"StepId": step_id, "Status": "FAILED", "Reason": reason})
                    continue
                step.cancellation_option = option
                process = self.processes.get(step_id)
                if process is not None:
                    self.cancelling[step_id] = option  # it ends CANCELLED when it exits
                if step.state == "RUNNING" and option == "SEND_INTERRUPT":
                    step.state = "CANCEL_PENDING"
                    if process is not None:
                        process.send_signal(signal.SIGTERM)  # the step's process alone
                elif process is not None:  # TERMINATE_PROCESS: the step and every descendant
                    _kill_tree(process.pid)
                else:
                    step.state = "CANCELLED"
                info.append({"StepId": step_id, "Status": "SUBMITTED"})
        return info

    # --- persistent application UIs, as the EMR API Reference documents them ------------------
    def create_persistent_app_ui(self, target_arn: str) -> dict[str, Any]:
        from moto.emr.exceptions import InvalidRequestException

        self.app_ui_calls.append(("CreatePersistentAppUI", {"TargetResourceArn": target_arn}))
        if target_arn not in {cluster.arn for cluster in self.backend.clusters.values()}:
            raise InvalidRequestException(f"no cluster with ARN {target_arn}")
        ui = f"p-{len(self.app_uis) + 1:013d}"
        self.app_uis[ui] = target_arn
        return {"PersistentAppUIId": ui, "RuntimeRoleEnabledCluster": False}

    def presigned_url(self, ui: str, kind: str | None, app_id: str | None) -> dict[str, Any]:
        from moto.emr.exceptions import InvalidRequestException

        asked = {"PersistentAppUIId": ui, "PersistentAppUIType": kind, "ApplicationId": app_id}
        self.app_ui_calls.append(("GetPersistentAppUIPresignedURL", asked))
        if ui not in self.app_uis or kind not in (None, "SHS", "TEZ", "YTS"):
            raise InvalidRequestException(f"no persistent app UI {ui} of type {kind}")
        url = f"https://{ui}.emrappui.example/shs/history/{app_id or ''}/?authToken=standin"
        return {"PresignedURLReady": True, "PresignedURL": url}

    # --- the cluster side ---------------------------------------------------------------------
    def _loop(self) -> None:
        while not self.stop.wait(0.2):
            with self.lock:
                for cluster in list(self.backend.clusters.values()):
                    if cluster.id not in self.known:
                        self.known.add(cluster.id)
                        if self.serve_new:
                            self.served.add(cluster.id)
                    if cluster.id in self.served:
                        self._serve(cluster)

    def _serve(self, cluster: Any) -> None:
        if cluster.state in ("TERMINATING", "TERMINATED", "TERMINATED_WITH_ERRORS"):
            for step in cluster.steps:
                if step.state in ("PENDING", "RUNNING") and step.id not in self.processes:
                    step.state = "CANCELLED"
            return
        if cluster.id not in self.bootstrapped:
            self.bootstrapped.add(cluster.id)
            failed = self._bootstrap(cluster)
            if failed:
                cluster.state = "TERMINATED_WITH_ERRORS"
                cluster.last_state_change_reason = failed
                for step in cluster.steps:
                    step.state = "CANCELLED"
                return
        for step in cluster.steps:
            process = self.processes.get(step.id)
            if process is not None:
                if process.poll() is not None:
                    self._ended(cluster, step, process.returncode)
                return  # one step at a time
            if step.state in ("PENDING", "RUNNING") and not getattr(step, "ran", False):
                self._start(cluster, step)
                return
        if not cluster.keep_job_flow_alive_when_no_steps and all(
            s.state in ENDED for s in cluster.steps
        ):
            cluster.terminate()

    def _bootstrap(self, cluster: Any) -> str | None:
        s3 = boto3.client("s3")
        for action in cluster.bootstrap_actions:
            script = action.script_bootstrap_action
            bucket, _, key = script["Path"].removeprefix("s3://").partition("/")
            local = self.folder / f"{cluster.id}-{Path(key).name}"
            s3.download_file(bucket, key, str(local))
            done = subprocess.run(
                ["bash", str(local), *script.get("Args", [])],
                env={**self.node_env, "DRY_RUN": "1"},
                capture_output=True,
                text=True,
                timeout=60,
            )
            if done.returncode != 0:
                return f"bootstrap action {action.name} failed: {done.stderr.strip()[-300:]}"
        return None

    def _start(self, cluster: Any, step: Any) -> None:
        step.ran = True
        step.state = "RUNNING"
        args = [str(a) for a in step.args]
        if args and args[0].startswith("/opt/sparkles/venv/"):  # the bootstrap's venv here
            args[0] = args[0].replace("/opt/sparkles/venv", self.venv, 1)
        logs = self.folder / step.id
        logs.mkdir()
        self.processes[step.id] = subprocess.Popen(
            args,
            env=self.node_env,
            cwd=logs,
            stdout=(logs / "stdout").open("w"),
            stderr=(logs / "stderr").open("w"),
        )

    def _ended(self, cluster: Any, step: Any, code: int) -> None:
        del self.processes[step.id]
        logs = self.folder / step.id
        if step.id in self.cancelling:
            step.state = "CANCELLED"
        elif code == 0:
            step.state = "COMPLETED"
        else:
            step.state = "FAILED"
            step.failure_details = {
                "Reason": "Unknown Error.",
                "Message": f"Command exited with status {code}.",
                "LogFile": f"{cluster.log_uri.rstrip('/')}/{cluster.id}/steps/{step.id}/stderr.gz",
            }
        threading.Timer(self.log_delay, self._upload_logs, (cluster, step, logs)).start()

    def _upload_logs(self, cluster: Any, step: Any, logs: Path) -> None:
        bucket, _, prefix = cluster.log_uri.split("://", 1)[1].partition("/")
        folder = f"{prefix.rstrip('/')}/{cluster.id}/steps/{step.id}".lstrip("/")
        s3 = boto3.client("s3")
        for name in ("stdout", "stderr"):
            body = gzip.compress((logs / name).read_bytes())
            s3.put_object(Bucket=bucket, Key=f"{folder}/{name}.gz", Body=body)

    def tree_of(self, step_id: str) -> list[int]:
        """The pids of a running step's process and its descendants, now."""
        process = self.processes.get(step_id)
        if process is None:
            return []
        try:
            root = psutil.Process(process.pid)
            return [root.pid, *(child.pid for child in root.children(recursive=True))]
        except psutil.NoSuchProcess:
            return []


def _kill_tree(pid: int) -> None:
    try:
        root = psutil.Process(pid)
        tree = [*root.children(recursive=True), root]
    except psutil.NoSuchProcess:
        return
    for process in tree:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            continue
    psutil.wait_procs(tree, timeout=10)


def alive(pids: list[int]) -> list[int]:
    """Which of ``pids`` still run (zombies have ended)."""
    running = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                running.append(pid)
        except psutil.NoSuchProcess:
            continue
    return running
