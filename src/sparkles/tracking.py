"""MLflow set-up shared by every command: where runs go, how they are tagged, how they end."""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Run, RunStatus

from sparkles.config import Profile
from sparkles.errors import UserError
from sparkles.names import (
    COMMAND_TAG,
    ERROR_TAG,
    PROFILE_EXPERIMENT_TAG,
    PROFILE_TAG,
    RENAMED_TAG_PREFIXES,
)
from sparkles.overrides import redact
from sparkles.storage import is_uri

log = logging.getLogger(__name__)
# mlflow.set_tracking_uri and mlflow.set_experiment write MLFLOW_TRACKING_URI and
# MLFLOW_EXPERIMENT_ID into this process's environment, so "the environment wins" must mean the
# environment this process started with (the user's, or the one `mlflow run` gave it), read
# before anything here touched MLflow.
_STARTUP_TRACKING_URI = os.environ.get("MLFLOW_TRACKING_URI")
_STARTUP_EXPERIMENT_ID = os.environ.get("MLFLOW_EXPERIMENT_ID")
_STARTUP_EXPERIMENT_NAME = os.environ.get("MLFLOW_EXPERIMENT_NAME")


def tracking_uri(profile: Profile) -> str:
    """``MLFLOW_TRACKING_URI`` wins (``mlflow run`` and EMR set it); else the profile's."""
    return _STARTUP_TRACKING_URI or profile.mlflow.tracking_uri


# The MLflow 3 UI opens an experiment in GenAI mode unless told it holds model training runs
# (a UI with the GenAI / Model training switch follows the switch instead: ``runs_page``).
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")
UI = "http://127.0.0.1:5000"  # where `mlflow ui` serves by default


def runs_page(experiment_id: str, base: str = UI) -> str:
    """The experiment's runs table in the UI's *Model training* workspace. A fresh browser
    starts MLflow 3.17 in its GenAI workspace, where the experiment opens on its traces
    overview; the ``workflowType`` parameter picks the workspace."""
    return f"{base}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


class TrackingUnreachable(UserError, ConnectionError):
    """The tracking server cannot be used: said in one line, before Spark starts."""


SERVER_CHECK_SECONDS = 5.0  # a server that is up answers a one-row search in milliseconds


def _cause(err: BaseException) -> str:
    """The root of a requests failure, in the words a user acts on."""
    import requests

    chain, seen = [], err
    while seen is not None and seen not in chain:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    names = " ".join(type(e).__name__ for e in chain)
    if isinstance(err, requests.exceptions.SSLError):
        return f"TLS failed ({chain[-1]})"
    if "NameResolution" in names or "gaierror" in names:
        return "the host name does not resolve (DNS)"
    if any(isinstance(e, ConnectionRefusedError) for e in chain):
        return "connection refused (nothing listens there: is the server up?)"
    if isinstance(err, requests.exceptions.Timeout):
        return f"no answer within {SERVER_CHECK_SECONDS:g} s"
    return f"{type(chain[-1]).__name__}: {chain[-1]}"


def check_server(uri: str) -> None:
    """An ``http(s)`` tracking server answers an authenticated one-row search within seconds,
    or ``TrackingUnreachable`` says which URI failed and why (refused, DNS, TLS, 401/403, a 5xx);
    credentials come from MLflow's own variables and are never printed. Other stores (SQLite,
    files, Databricks) are not servers we can ask this way, and are left to MLflow. MLflow's own
    retries stay on for the run itself: a server that blinks during a long run is retried."""
    if not uri.startswith(("http://", "https://")):
        return
    import requests
    from mlflow.utils.credentials import get_default_host_creds

    creds = get_default_host_creds(uri)
    auth = (creds.username, creds.password) if creds.username else None
    headers = {"Authorization": f"Bearer {creds.token}"} if creds.token else {}
    verify = False if creds.ignore_tls_verification else (creds.server_cert_path or True)
    where = redact(uri)
    try:
        answer = requests.get(
            f"{uri.rstrip('/')}/api/2.0/mlflow/experiments/search",
            params={"max_results": 1},
            auth=auth,
            headers=headers,
            verify=verify,
            cert=creds.client_cert_path,
            timeout=SERVER_CHECK_SECONDS,
        )
    except requests.exceptions.RequestException as err:
        raise TrackingUnreachable(f"tracking server {where}: {_cause(err)}") from None
    if answer.status_code in (401, 403):
        raise TrackingUnreachable(
            f"tracking server {where}: HTTP {answer.status_code} {answer.reason}: check "
            "MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD or MLFLOW_TRACKING_TOKEN"
        )
    if answer.status_code >= 400:
        raise TrackingUnreachable(
            f"tracking server {where}: HTTP {answer.status_code} {answer.reason} to an "
            "experiment search (is it an MLflow server, and is it well?)"
        )


def how_to_compare(where: str, experiment_id: str) -> str:
    """What to open to see the runs: a tracking server serves its own UI; a store needs one."""
    if where.startswith(("http://", "https://")):
        return f"open {runs_page(experiment_id, where.rstrip('/'))}"
    return f"mlflow ui --backend-store-uri {where}, then open {runs_page(experiment_id)}"


def configure(profile: Profile) -> str:
    """Point MLflow at the profile's store and return the experiment id (created if missing)."""
    mlflow.set_tracking_uri(tracking_uri(profile))
    experiment_id = _STARTUP_EXPERIMENT_ID
    if not experiment_id:
        name = _STARTUP_EXPERIMENT_NAME or profile.mlflow.experiment
        experiment = mlflow.get_experiment_by_name(name)
        if experiment is not None:
            experiment_id = experiment.experiment_id
        else:
            location = profile.mlflow.artifact_location
            if not is_uri(location):
                location = Path(location).resolve().as_uri()
            experiment_id = mlflow.create_experiment(name, artifact_location=location)
    if EXPERIMENT_KIND[0] not in mlflow.get_experiment(experiment_id).tags:
        mlflow.MlflowClient().set_experiment_tag(experiment_id, *EXPERIMENT_KIND)
    return experiment_id


def take_launcher_run_id() -> str | None:
    """The run ``mlflow run`` created for this process, handed out once.

    MLflow unsets MLFLOW_RUN_ID only when it reads the variable itself. Passed explicitly, it
    stays set, and every later ``start_run`` (each nested trial of a search) would resume the
    launcher's run instead of creating a child: so it is removed as it is taken.
    """
    return os.environ.pop("MLFLOW_RUN_ID", None)


def _say_if_elsewhere(profile: Profile, active: mlflow.ActiveRun) -> None:
    """A run outside the profile's experiment is easy to lose (``promote`` looks there): say so."""
    experiment = mlflow.get_experiment(active.info.experiment_id)
    expected = profile.mlflow.experiment
    if experiment.name == expected:
        return
    mlflow.set_tag(PROFILE_EXPERIMENT_TAG, expected)
    log.warning(
        "this run is in experiment %r (id %s), not the profile's %r: `sparkles promote` looks "
        "in %r unless given --experiment %r (mlflow run: pass --experiment-name %s, or export "
        "MLFLOW_EXPERIMENT_NAME=%s)",
        experiment.name,
        experiment.experiment_id,
        expected,
        expected,
        experiment.name,
        expected,
        expected,
    )


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


@contextmanager
def run(profile: Profile, name: str, nested: bool = False) -> Iterator[mlflow.ActiveRun]:
    """An MLflow run tagged with profile and commit; any exception ends it FAILED, error tagged.

    Under ``mlflow run`` the launcher has created the run already (MLFLOW_RUN_ID): the first
    top-level run reuses it, and nothing after it does.
    """
    experiment_id = configure(profile)
    run_id = None if nested else take_launcher_run_id()
    # MLflow's system metrics (CPU, memory, disk, network) on a command's run; a search's
    # trials share their parent's process, whose run samples it already
    sampled = profile.observe.enabled and profile.observe.system_metrics and not nested
    if sampled:
        from mlflow.system_metrics import set_system_metrics_sampling_interval

        set_system_metrics_sampling_interval(profile.observe.system_metrics_interval)
        logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)  # its start/stop
    active = mlflow.start_run(
        run_id=run_id,
        experiment_id=None if run_id else experiment_id,
        run_name=name,
        nested=nested,
        log_system_metrics=sampled,
    )
    if not nested:
        _say_if_elsewhere(profile, active)
    tags = {PROFILE_TAG: profile.name, COMMAND_TAG: name}
    commit = git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
    mlflow.set_tags(tags)
    try:
        yield active
    except BaseException as err:
        mlflow.set_tag(ERROR_TAG, f"{type(err).__name__}: {err}"[:5000])
        status = RunStatus.KILLED if isinstance(err, KeyboardInterrupt) else RunStatus.FAILED
        mlflow.end_run(RunStatus.to_string(status))
        raise
    mlflow.end_run()


def loggable(params: dict[str, Any]) -> dict[str, Any]:
    """Parameters as MLflow params (strings, one value each): a list (hidden layers) as
    ``64-32``; a classifier kind parses them back (``ClassifierKind.parse_logged``)."""
    return {k: "-".join(map(str, v)) if isinstance(v, list) else v for k, v in params.items()}


_NOTICED: set[tuple[str, str]] = set()


def current_tag(key: str) -> str:
    """``key`` as this release spells it: a tag a run logged before a rename, renamed."""
    for new, old in RENAMED_TAG_PREFIXES.items():
        if key.startswith(old):
            return new + key.removeprefix(old)
    return key


def tag(run: Run, key: str) -> str | None:
    """``run``'s tag ``key``, or the same tag under the name a run logged before a rename gave
    it (``names.RENAMED_TAG_PREFIXES``), said once per run and tag."""
    tags = run.data.tags
    if key in tags:
        return tags[key]
    for new, old in RENAMED_TAG_PREFIXES.items():
        before = old + key.removeprefix(new)
        if key.startswith(new) and before in tags:
            if (run.info.run_id, before) not in _NOTICED:
                _NOTICED.add((run.info.run_id, before))
                log.info("run %s: read its tag '%s' as '%s'", run.info.run_id, before, key)
            return tags[before]
    return None
