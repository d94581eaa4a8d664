"""Many users, one store: featurize runs started together put each image through the CNN once,
and one killed while holding the store's lease does not stop the others."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sparkles import tracking
from sparkles.features.featurize import featurize
from sparkles.features.lease import LEASE_FILE, StoreLease
from sparkles.features.store import SEGMENTS, FeatureStore
from tests.conftest import ROOT, mlflow_server
from tests.features.test_store import _sample


def _featurize(path: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "sparkles.cli", "featurize", "--profile", path],
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        start_new_session=True,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _counts(process: subprocess.Popen) -> tuple[dict[str, int], str]:
    out, err = process.communicate(timeout=600)
    assert process.returncode == 0, err[-3000:]
    return json.loads(out[out.index("{") :])["counts"], err


@pytest.mark.e2e
def test_two_runs_started_together_compute_each_image_once(tmp_path: Path) -> None:
    path, profile = _sample(tmp_path)
    tracking.configure(profile)  # the team's experiment exists (two first runs would race on it)
    first, second = _featurize(path), _featurize(path)
    (a, a_log), (b, b_log) = _counts(first), _counts(second)
    assert a["rows_in"] == b["rows_in"] > 0
    # the CNN saw each image once in all, and each run's numbers are its own
    assert a["computed_images"] + b["computed_images"] == a["matched_files"]
    assert sorted([a["computed"], b["computed"]]) == [0, a["rows_in"]]
    for counts in (a, b):
        assert counts["computed"] + counts["reused"] == counts["rows_in"]
        assert counts["featurized"] + counts["quarantined"] == counts["rows_in"]
    assert "waiting for the featurize of" in a_log + b_log


@pytest.mark.e2e
def test_a_run_killed_holding_the_lease_leaves_the_other_to_compute_it(
    spark, tmp_path: Path, caplog
) -> None:
    """SIGKILL a featurize while it writes its segment: the next run (this process) breaks the
    dead run's lease, never reads its half-written segment (kept until stale: it might be a
    live writer's) and computes every image itself."""
    path, profile = _sample(tmp_path)
    doomed = _featurize(path)
    cache = Path(profile.store.dir)
    _mid_pass(doomed, cache)
    os.killpg(doomed.pid, signal.SIGKILL)
    doomed.wait()
    assert doomed.returncode == -signal.SIGKILL, "the first featurize ended before it was killed"
    [root] = [d for d in cache.iterdir() if (d / "settings.json").is_file()]
    assert (root / LEASE_FILE).exists()  # the dead run's
    [left] = FeatureStore(spark, str(root)).segments.listed()
    assert not (root / SEGMENTS / left / "meta.json").exists()  # never committed
    with caplog.at_level("WARNING"):
        counts = featurize(profile, spark).counts
    assert counts["computed"] == counts["rows_in"] == counts["featurized"] + counts["quarantined"]
    assert "broke the featurize lease" in caplog.text
    store = FeatureStore(spark, str(root))
    assert [s.key for s in store.live_segments()] != [left]
    assert left in store.segments.listed()
    assert not (root / LEASE_FILE).exists()  # released when done


def test_a_lease_not_renewed_in_time_is_broken_and_taken(spark, tmp_path: Path) -> None:
    """A holder on another machine (an EMR step that was lost) is waited for only until its
    lease expires; then one waiter takes it, and gives it back when done."""
    root = tmp_path / "store"
    root.mkdir()
    stale = {
        "host": f"not-{socket.gethostname()}",
        "pid": 1,
        "token": "t",
        "renewed_at": time.time() - 2,
    }
    (root / LEASE_FILE).write_text(json.dumps(stale))
    lease = StoreLease(spark, root.as_uri(), seconds=1.0)
    with lease.held() as waited:
        held = json.loads((root / LEASE_FILE).read_text())
        assert held["token"] == lease.token and held["host"] == socket.gethostname()
        other = StoreLease(spark, root.as_uri(), seconds=60.0)
        assert not other._create()  # taken: a second run would wait
    assert waited < 5
    assert not (root / LEASE_FILE).exists()


def _mid_pass(process: subprocess.Popen, cache: Path) -> None:
    """Wait until ``process`` writes its store segment (the CNN has run: it holds the lease), or
    fail if it ended first."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        stores = [d for d in cache.glob("*") if (d / "settings.json").is_file()]  # not file-index/
        if any(any(store.glob(f"{SEGMENTS}/*/table-*")) for store in stores):
            return
        time.sleep(0.05)
    raise AssertionError(f"featurize ended ({process.poll()}) before it wrote its segment")


@pytest.mark.e2e
def test_a_tracking_server_down_mid_featurize_loses_no_features(spark, tmp_path: Path) -> None:
    """The server stops while the CNN runs: the run fails when it logs, its committed features
    stay, and the rerun computes nothing (the server's restart: tests/test_tracking.py)."""
    path, profile = _sample(tmp_path)
    artifacts = ("--artifacts-destination", str(tmp_path / "served-artifacts"))
    quick = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
    with mlflow_server(f"sqlite:///{tmp_path / 'server.db'}", *artifacts) as url:
        blinked = _featurize(path, {"MLFLOW_TRACKING_URI": url, **quick})
        _mid_pass(blinked, Path(profile.store.dir))
    blinked.communicate(timeout=600)
    assert blinked.returncode != 0  # it could not log its run
    counts = featurize(profile, spark).counts
    assert counts["computed"] == 0 and counts["reused"] == counts["rows_in"] > 0
