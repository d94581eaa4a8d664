"""``sparkles history``: the Spark History Server that ships inside pyspark, over one run's
attached event log (or a folder of them), in the foreground, with the link to the application:
the Spark UI of a command that has ended (jobs, stages, the SQL tab's plans with their
operators' rows and times), with nothing installed beyond pyspark and Java."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import mlflow

from sparkles.errors import UserError
from sparkles.names import (
    SPARK_APP_TAG,
    SPARK_ARTIFACTS,
    SPARK_EVENT_LOG_ATTACHED_TAG,
    SPARK_EVENT_LOG_TAG,
)
from sparkles.storage import is_uri

HISTORY_SERVER = "org.apache.spark.deploy.history.HistoryServer"
LOG4J_CONFIG = Path(__file__).with_name("spark-log4j2.properties")
START_SECONDS = 120.0  # a cold JVM on 2 busy cores answers in 5-15 s


def event_log_of(run_id: str, into: Path) -> tuple[Path, str | None]:
    """Download the event log attached to ``run_id``: the folder holding it and its
    application id. A run without one says why (its tag), and where the log is."""
    tags = mlflow.get_run(run_id).data.tags
    attached = tags.get(SPARK_EVENT_LOG_ATTACHED_TAG)
    if not attached or attached.startswith("no"):
        why = attached or "this run recorded none (made before sparkles attached event logs?)"
        where = tags.get(SPARK_EVENT_LOG_TAG)
        hint = f"; `sparkles history --folder {where}` serves that folder" if where else ""
        raise UserError(f"run {run_id} has no event log attached: {why}{hint}")
    local = mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path=f"{SPARK_ARTIFACTS}/eventlog", dst_path=str(into)
    )
    return Path(local), tags.get(SPARK_APP_TAG)


def newest_run(experiment_id: str) -> str:
    """The experiment's newest run with an event log attached (a command's run; a search's
    trials share their parent's)."""
    for run in mlflow.search_runs(
        experiment_ids=[experiment_id],
        order_by=["attributes.start_time DESC"],
        max_results=200,
        output_format="list",
    ):
        if not run.data.tags.get(SPARK_EVENT_LOG_ATTACHED_TAG, "no").startswith("no"):
            return run.info.run_id
    raise UserError(
        f"no run of experiment {experiment_id} has a Spark event log attached: run a command "
        "(train, featurize, tune, main, eda) first, or pass --folder"
    )


def link(port: int, app_id: str | None) -> str:
    base = f"http://127.0.0.1:{port}"
    return f"{base}/history/{app_id}/jobs/" if app_id else f"{base}/"


def _spark_class() -> str:
    from pyspark.find_spark_home import _find_spark_home

    return str(Path(_find_spark_home()) / "bin" / "spark-class")


def start(
    folder: str, port: int, app_id: str | None = None, host: str = "127.0.0.1"
) -> subprocess.Popen:
    """The History Server over ``folder`` (a local path or a URI Hadoop reads), rescanning it
    every 2 s, on ``host``:``port``; answering its REST API (and listing ``app_id``, given
    one) when this returns."""
    uri = folder if is_uri(folder) else Path(folder).resolve().as_uri()
    settings = {
        "spark.history.fs.logDirectory": uri,
        "spark.history.ui.port": str(port),
        "spark.history.fs.update.interval": "2s",
    }
    properties = Path(tempfile.mkdtemp(prefix="sparkles-history-")) / "history.properties"
    properties.write_text("".join(f"{key}={value}\n" for key, value in settings.items()))
    env = {
        **os.environ,
        "SPARK_LOCAL_IP": host,  # the UI binds here (else every interface)
        "SPARK_HISTORY_OPTS": f"-Dlog4j2.configurationFile={LOG4J_CONFIG.as_uri()}",
    }
    server = subprocess.Popen(
        [_spark_class(), HISTORY_SERVER, "--properties-file", str(properties)], env=env
    )
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise UserError(f"the Spark History Server exited ({server.returncode}) over {uri}")
        try:
            listed = {app["id"] for app in applications(port, host)}
            if app_id is None or app_id in listed:
                return server
        except OSError:
            pass
        time.sleep(0.5)
    server.terminate()
    raise UserError(f"the Spark History Server did not answer on {port} in {START_SECONDS:g} s")


def applications(port: int, host: str = "127.0.0.1") -> list[dict]:
    with urllib.request.urlopen(f"http://{host}:{port}/api/v1/applications", timeout=5) as answer:
        return json.loads(answer.read())


def serve_run(run_id: str, port: int) -> int:
    """The run's attached event log, downloaded to a temporary folder, served."""
    with tempfile.TemporaryDirectory(prefix="sparkles-history-") as into:
        folder, app_id = event_log_of(run_id, Path(into))
        return serve(str(folder), port, app_id)


def serve(folder: str, port: int, app_id: str | None) -> int:
    """In the foreground until Ctrl-C; prints the link once the server answers."""
    server = start(folder, port, app_id)
    try:
        print(f"Spark History Server over {folder}: open {link(port, app_id)}", flush=True)
        print("(Ctrl-C stops it)", flush=True)
        return server.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        if server.poll() is None:
            server.terminate()
            server.wait(timeout=30)
