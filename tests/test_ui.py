"""The MLflow UI, for real: `mlflow server` on loopback, pages rendered by headless Chromium."""

from __future__ import annotations

import html
import re
import shutil
import subprocess
import tempfile

import mlflow
import pytest

from sparkles import tracking
from sparkles.commands import run_tune
from sparkles.config import load_profile
from sparkles.deploy.registry import promote
from tests.conftest import ROOT, mlflow_server, registering, searching

MODEL = "sparkles-ui-model"
SHOTS = ROOT / "test-artifacts"
pytestmark = pytest.mark.e2e  # `mlflow server` and headless Chromium, as processes
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def server(registry_runs, spark):
    if CHROMIUM is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium; .ci/run does)")
    path, _ = registry_runs  # run_tune and promote point MLflow at its store
    profile = load_profile(
        path,
        [
            "mlflow.experiment=reg-strong",
            "tune.logistic.grid.reg_param=[0.01]",
            "tune.logistic.grid.elastic_net_param=[0.0, 1.0]",
        ],
    )
    tuned = run_tune(searching(profile), spark)
    decision = promote(registering(profile, MODEL), "reg-strong")
    with mlflow_server(profile.mlflow.tracking_uri) as base:
        yield base, profile, tuned, decision


def render(url: str, screenshot: str) -> str:
    """The page's text after its JavaScript ran, and a screenshot in test-artifacts/."""
    SHOTS.mkdir(exist_ok=True)
    flags = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1400,1000",
        "--virtual-time-budget=20000",
    ]
    with tempfile.TemporaryDirectory() as profile_dir:
        subprocess.run(
            [*flags, f"--user-data-dir={profile_dir}", f"--screenshot={SHOTS / screenshot}", url],
            capture_output=True,
            timeout=120,
            check=True,
        )
    with tempfile.TemporaryDirectory() as profile_dir:
        dom = subprocess.run(
            [*flags, f"--user-data-dir={profile_dir}", "--dump-dom", url],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        ).stdout
    text = re.sub(r"<style.*?</style>|<script.*?</script>", " ", dom, flags=re.S)
    text = html.unescape(re.sub(r"<[^>]+>", " ", text))
    return re.sub(r"\s+", " ", text)


def readme_ui_links() -> tuple[str, str]:
    """The UI's address and the runs link, as README.md gives them."""
    text = (ROOT / "README.md").read_text()
    [link] = re.findall(r"# open (http://\S+/#/experiments/\d+/runs\S*)", text)
    return link.split("/#/")[0], link


def test_the_readme_link_opens_the_runs_table_where_the_home_page_would_not(server) -> None:
    """A fresh browser, as a newcomer's: the README's link lands on the runs table; the
    experiment's link on the home page lands on the GenAI overview, as the README warns."""
    base, _, tuned, _ = server
    experiment = mlflow.get_experiment_by_name("reg-strong")
    readme_base, readme_link = readme_ui_links()
    assert tracking.runs_page("1") == readme_link  # what `sparkles init` prints
    home = render(base + "/", "home.png")
    assert "Model training" in home and "reg-strong" in home  # the switch the README names
    plain = render(f"{base}/#/experiments/{experiment.experiment_id}", "experiment-genai.png")
    assert "Overview" in plain and "Traces" in plain
    link = readme_link.replace(readme_base, base).replace(
        "/experiments/1/", f"/experiments/{experiment.experiment_id}/"
    )
    text = render(link, "experiment-runs.png")
    assert "Runs" in text and "Model registry" in text and "Overview" not in text
    for name in ("main", "tune-grid"):
        assert re.search(rf"\b{name}\b", text), name
    assert (SHOTS / "experiment-runs.png").stat().st_size > 10_000


def test_run_page_shows_the_metrics(server) -> None:
    base, _, tuned, _ = server
    run = mlflow.get_run(tuned["run_id"])
    text = render(
        f"{base}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}", "run.png"
    )
    for name in ("accuracy", "f1", "auc", "best_val_auc"):
        shown = re.search(rf"\b{name} ([0-9.e+-]+)", text)
        assert shown, name
        assert float(shown.group(1)) == pytest.approx(run.data.metrics[name], rel=1e-9)
    assert "regParam" in text and "elasticNetParam" in text


def test_model_page_shows_the_champion(server) -> None:
    base, _, _, decision = server
    text = render(f"{base}/#/models/{MODEL}", "registered-model.png")
    assert MODEL in text
    assert re.search(r"@ ?champion", text)
    assert f"sparkles.promotion.decision : {decision.decision}" in text
