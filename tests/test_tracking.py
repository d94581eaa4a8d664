"""MLflow run handling under `mlflow run`, which hands this process its run in MLFLOW_RUN_ID."""

from __future__ import annotations

import http.server
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
import pytest
from pyspark.sql import SparkSession

from sparkles import cli, tracking
from sparkles.config import load_profile
from tests.conftest import free_port, mlflow_server, write_profile


@pytest.fixture
def launched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A profile, and a run created the way the `mlflow run` launcher creates one."""
    profile = load_profile(str(_profile(tmp_path)))
    experiment_id = tracking.configure(profile)
    launcher_run = mlflow.MlflowClient().create_run(experiment_id).info.run_id
    monkeypatch.setenv("MLFLOW_RUN_ID", launcher_run)
    yield profile, launcher_run
    while mlflow.active_run():
        mlflow.end_run()


def _profile(folder: Path) -> Path:
    from tests.conftest import write_profile

    return write_profile(folder)


def test_nested_runs_under_the_launchers_run_are_children(launched) -> None:
    profile, launcher_run = launched
    with tracking.run(profile, "tune-grid") as parent:
        assert parent.info.run_id == launcher_run
        assert "MLFLOW_RUN_ID" not in os.environ
        children = []
        for number in range(2):
            with tracking.run(profile, f"trial-{number}", nested=True) as child:
                mlflow.log_params({"regParam": number})
            children.append(child.info.run_id)
        mlflow.log_params({"regParam": 0.5})  # the refit: the parent has no params before it
    client = mlflow.MlflowClient()
    assert launcher_run not in children and len(set(children)) == 2
    for run_id in children:
        run = client.get_run(run_id)
        assert run.data.tags["mlflow.parentRunId"] == launcher_run
        assert run.info.status == "FINISHED"
    assert client.get_run(launcher_run).data.params == {"regParam": "0.5"}


def test_a_run_outside_the_profiles_experiment_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    profile = load_profile(str(_profile(tmp_path)))
    tracking.configure(profile)
    other = mlflow.create_experiment("somewhere-else")
    launcher_run = mlflow.MlflowClient().create_run(other).info.run_id
    os.environ["MLFLOW_RUN_ID"] = launcher_run
    with caplog.at_level(logging.WARNING), tracking.run(profile, "main"):
        pass
    assert "not the profile's 'sparkles-test'" in caplog.text
    assert "somewhere-else" in caplog.text
    run = mlflow.get_run(launcher_run)
    assert run.data.tags["sparkles.profile_experiment"] == "sparkles-test"


class _Answering(http.server.BaseHTTPRequestHandler):
    """A loopback HTTP server that answers every request with the class's ``status``."""

    status = 401

    def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
        self.send_response(self.status)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@contextmanager
def _answering(status: int) -> Iterator[str]:
    handler = type("Handler", (_Answering,), {"status": status})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def _one_line_from_the_cli(tmp_path: Path, uri: str, capsys) -> str:
    """`sparkles train` against ``uri``: exit 1, within seconds, one line, no Spark."""
    profile = write_profile(tmp_path, mlflow={"tracking_uri": uri})
    started = time.monotonic()
    assert cli.main(["train", "--profile", str(profile)]) == 1
    assert time.monotonic() - started < 3 * tracking.SERVER_CHECK_SECONDS
    assert "pyspark.sql" not in sys.modules or SparkSession.getActiveSession() is None
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize(
    ("answer", "said"),
    [
        ("refused", "connection refused"),
        ("dns", "does not resolve (DNS)"),
        ("tls", "TLS failed"),
        (401, "HTTP 401 Unauthorized: check MLFLOW_TRACKING_USERNAME"),
        (403, "HTTP 403 Forbidden"),
        (503, "HTTP 503"),
    ],
)
def test_a_tracking_server_that_cannot_be_used_is_one_line_before_spark(
    tmp_path: Path, capsys, monkeypatch, answer, said: str
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "s3cret-never-printed")
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
    if answer == "refused":
        err = _one_line_from_the_cli(tmp_path, f"http://127.0.0.1:{free_port()}", capsys)
    elif answer == "dns":
        err = _one_line_from_the_cli(tmp_path, "http://tracking.invalid:5000", capsys)
    else:
        with _answering(401 if answer == "tls" else answer) as where:
            scheme = "https" if answer == "tls" else "http"
            err = _one_line_from_the_cli(tmp_path, f"{scheme}://{where}", capsys)
    assert said in err and "s3cret" not in err
    assert err.startswith("error: tracking server http")


@pytest.mark.e2e
def test_a_real_server_stopped_and_restarted(tmp_path: Path) -> None:
    """The check follows the server: up, down (refused), up again on the same store and port."""
    store = f"sqlite:///{tmp_path / 'server.db'}"
    port = free_port()
    with mlflow_server(store, port=port) as url:
        tracking.check_server(url)
    with pytest.raises(tracking.TrackingUnreachable, match="connection refused"):
        tracking.check_server(url)
    with mlflow_server(store, port=port):
        tracking.check_server(url)
