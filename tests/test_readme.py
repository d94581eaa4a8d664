"""A command the README (or docs/) shows is a promise: every one runs here exactly as written.

The workflow test copies the project to a fresh folder and runs the README's command lines, as
written, through bash in one tracking store and one feature cache, as a new user would after
`make quickstart` (on the embedded default made test-sized: 60 small images, MobileNetV2): the entry
points main, featurize, train, tune (grid and hyperopt), promote, predict and eda, the Python
example and `mlflow ui`. `download` runs through `mlflow run` against a loopback server, and
docs/development.md's quick loops run in a copy of the project as cloned. A last test fails
when README.md or a page of docs/ gains a command that no test runs and that is not marked as
needing the network or AWS (on its line, or for a whole block on the block's first line).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import yaml

from tests.conftest import ROOT, import_trap, imports_by_this_project
from tests.data.test_download import ID, Server, server  # noqa: F401 (a fixture)

README = ROOT / "README.md"
DOCUMENTS = [README, *sorted((ROOT / "docs").glob("*.md"))]
CONTRIBUTING = ROOT / "docs" / "development.md"
# Every test module: a documented command is accounted for if any test runs it by `command(...)`.
SOURCE = "\n".join(path.read_text() for path in sorted(Path(__file__).parent.rglob("test_*.py")))
TUNE = "mlflow run . -e tune --env-manager local --experiment-name sparkles"
MARKS = ("needs network", "needs AWS")
# Commands another test or CI runs as written.
ELSEWHERE = {
    "make test": ".ci/run runs it",
    "python experiments/eda.py": "tests/test_notebooks.py runs every notebook as __main__",
    "python experiments/end_to_end.py": "tests/test_notebooks.py runs it on a fresh profile",
}
_GENERATED = shutil.ignore_patterns(
    ".git",
    ".venv*",
    "mlruns*",
    "mlartifacts",
    ".cache",
    "eda",
    "predictions",
    "test-artifacts",
    "__pycache__",
    ".pytest_cache",
    "*.egg-info",
    ".ruff_cache",
)


def COPY_IGNORE(folder: str, names: list[str]) -> set[str]:
    """What a fresh clone would not have: generated state, and the project's top-level data/
    (the sample), never src/sparkles/data/."""
    ignored = set(_GENERATED(folder, names))
    return ignored | ({"data"} & set(names) if Path(folder) == ROOT else set())


def readme_blocks(document: Path = README) -> list[tuple[str, str]]:
    """(language, text) of every fenced code block in README.md (or another document)."""
    return re.findall(r"^```(\w*)\n(.*?)^```", document.read_text(), flags=re.M | re.S)


def shell_lines(text: str) -> list[str]:
    """A shell block's command lines: continuations joined, no blank or comment-only lines."""
    lines = []
    for line in text.replace("\\\n", " ").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            lines.append(line.strip())
    return lines


def block_marked(text: str) -> bool:
    """A block whose first line is a comment carrying a mark: every line of it needs that."""
    first = text.lstrip().splitlines()[0] if text.strip() else ""
    return first.startswith("#") and marked(first)


def documented_commands(documents: list[Path] = DOCUMENTS) -> list[tuple[str, bool]]:
    """(line, in a marked block) of every command line of the documents' bash blocks."""
    return [
        (line, block_marked(text))
        for document in documents
        for lang, text in readme_blocks(document)
        if lang == "bash"
        for line in shell_lines(text)
    ]


def readme_commands(documents: list[Path] = DOCUMENTS) -> list[str]:
    """The command lines a test may run: every bash block's, but those of marked blocks."""
    return [line for line, in_marked_block in documented_commands(documents) if not in_marked_block]


def readme_python() -> list[str]:
    return [
        text for document in DOCUMENTS for lang, text in readme_blocks(document) if lang == "python"
    ]


def contributing_lines() -> list[str]:
    """docs/development.md's loops: run by test_the_contributing_loops_run_as_written."""
    return [bare(line) for line in readme_commands([CONTRIBUTING])]


def bare(line: str) -> str:
    """A command line without its trailing comment."""
    return re.sub(r"\s+#.*$", "", line)


def marked(text: str) -> bool:
    return any(mark in text for mark in MARKS)


def command(prefix: str) -> str:
    """The README command line that is, or alone starts with, ``prefix`` (fails if it is gone)."""
    lines = readme_commands()
    found = [line for line in lines if bare(line) == prefix] or [
        line for line in lines if line.startswith(prefix)
    ]
    assert len(found) == 1, f"README has {len(found)} commands starting {prefix!r}: {found}"
    return found[0]


def user_environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """A new user's shell: no MLflow variables, no virtualenv on PATH (the README activates it)."""
    venv_bin = str(Path(sys.executable).parent)
    path = [p for p in os.environ["PATH"].split(os.pathsep) if p != venv_bin]
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MLFLOW_", "SPARKLES_", "PYSPARK_"))
        # nor a surrounding make's variables (`make test` passes its PYTEST_ARGS down in these)
        and k not in ("VIRTUAL_ENV", "MAKEFLAGS", "MFLAGS", "MAKELEVEL", "PYTEST_ARGS")
    }
    return {**env, "PATH": os.pathsep.join(path), **(extra or {})}


class Workspace:
    """A fresh copy of the project with the test's virtualenv as `.venv`, and a bash to run in."""

    def __init__(self, folder: Path, test_sized: bool = True) -> None:
        self.root = folder / "sparkles"
        shutil.copytree(ROOT, self.root, ignore=COPY_IGNORE)
        (self.root / ".venv").symlink_to(Path(sys.prefix))
        self.setup = [
            line
            for line in readme_commands([README])
            if line.startswith(("export MLFLOW_", "source .venv/bin/activate"))
        ]
        self.log: list[str] = []
        if not test_sized:  # the project exactly as cloned (its own tests read conf/local.yaml)
            return
        # the embedded default, test-sized: fewer, smaller sample images, shorter fits
        local = self.root / "conf" / "local.yaml"
        profile = yaml.safe_load(local.read_text())
        profile["data"]["sample"].update(images=60, size=[128, 96])
        profile["featurizer"].update(model="MobileNetV2", batch_size=16)  # 1/20 of the FLOPs
        profile["spark"]["conf"]["spark.sql.shuffle.partitions"] = 2
        # seventeen short-lived drivers: C1-only JIT starts faster (a cache-hit featurize process
        # 34-40 s instead of 45 s here); the G1 flags stay
        spark_conf = profile["spark"]["conf"]
        java = spark_conf["spark.driver.extraJavaOptions"]
        spark_conf["spark.driver.extraJavaOptions"] = f"{java} -XX:TieredStopAtLevel=1"
        # fits of tens of images: few iterations (each is a Spark job), here and in searches
        profile["train"]["max_iter"] = 10
        profile.setdefault("tune", {}).setdefault("mlp", {}).setdefault("grid", {})
        profile["tune"]["mlp"]["grid"]["max_iter"] = [10, 20]
        local.write_text(yaml.safe_dump(profile))

    def run(
        self, line: str, env: dict[str, str] | None = None, activate: bool = True
    ) -> subprocess.CompletedProcess:
        script = "\n".join(["set -euo pipefail", *(self.setup if activate else []), line])
        started = time.monotonic()
        done = subprocess.run(
            ["bash", "-c", script],
            cwd=self.root,
            env=user_environment(env),
            capture_output=True,
            text=True,
            timeout=900,
        )
        self.log.append(f"{time.monotonic() - started:6.1f} s  exit {done.returncode}  $ {line}")
        print(self.log[-1])  # pytest shows it for a failed test, and under -s
        assert done.returncode == 0, f"{line}\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
        return done

    def start(self, line: str, **streams) -> subprocess.Popen:
        """A README line that serves until stopped (exec'd, so stopping it stops the server),
        in a session of its own; ``streams``: where its stdout/stderr go."""
        script = "\n".join(["set -euo pipefail", *self.setup, f"exec {line}"])
        return subprocess.Popen(
            ["bash", "-c", script],
            cwd=self.root,
            env=user_environment(),
            start_new_session=True,
            **streams,
        )

    def runs(self, experiment: str = "sparkles") -> list[mlflow.entities.Run]:
        mlflow.set_tracking_uri(f"sqlite:///{self.root / 'mlruns.db'}")
        return mlflow.search_runs(
            experiment_names=[experiment], output_format="list", order_by=["start_time ASC"]
        )


def _new_runs(workspace: Workspace, before: set[str]) -> list[mlflow.entities.Run]:
    return [run for run in workspace.runs() if run.info.run_id not in before]


def _ids(workspace: Workspace) -> set[str]:
    return {run.info.run_id for run in workspace.runs()}


@pytest.mark.e2e
@pytest.mark.timeout(3000)  # ~29 min beside the suite on 2 cores, 13 alone
def test_the_readme_workflow_runs_as_written(tmp_path: Path) -> None:
    from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

    space = Workspace(tmp_path)
    client = lambda: mlflow.MlflowClient()  # noqa: E731  (after set_tracking_uri)

    # Two commands: the first installs (here: the test's venv, already installed) and runs main.
    done = space.run(command("make quickstart"), activate=False)
    assert "accuracy" in done.stderr and "succeeded" in done.stderr
    (quick,) = space.runs()
    assert quick.info.status == "FINISHED"
    assert quick.data.tags["mlflow.project.entryPoint"] == "main"
    assert quick.data.params["regParam"] == "0.01"  # conf/local.yaml's

    # MLproject entry points, the block as written (init again is harmless).
    space.run(command("sparkles init"))
    before = _ids(space)
    space.run(command("mlflow run . -e featurize"))
    (featurized,) = _new_runs(space, before)
    assert featurized.data.params["batch_size"] == "16"
    assert featurized.data.tags["sparkles.store.reused"] == "true"  # batch size: same features
    fingerprint = "sparkles.store.fingerprint"
    assert featurized.data.tags[fingerprint] == quick.data.tags[fingerprint]
    counts = featurized.data.metrics
    assert counts["count_rows_in"] == counts["count_featurized"] + counts["count_quarantined"] > 0

    # A cold train, with TensorFlow, Keras and OpenVINO unimportable: it runs no CNN, so this
    # project's code must not import one (an import is recorded, then fails)
    before = _ids(space)
    traps = import_trap(tmp_path, ["tensorflow", "keras", "openvino"])
    done = space.run(command("mlflow run . -e train"), env=traps)
    ours = imports_by_this_project(tmp_path)
    assert not ours, f"this project's code imported a CNN runtime:\n{ours[0]}"
    assert "Traceback" not in done.stderr and "Error while sending" not in done.stderr
    (trained,) = _new_runs(space, before)
    assert trained.data.tags["mlflow.project.entryPoint"] == "train"
    assert trained.data.params["regParam"] == "0.1"
    assert trained.data.params["elasticNetParam"] == "0.0"
    # the one test image per row: every metric is recomputed from it
    local = mlflow.artifacts.download_artifacts(
        run_id=trained.info.run_id, artifact_path="evaluation", dst_path=str(tmp_path / "ev")
    )
    predictions = pd.read_csv(Path(local) / "test_predictions.csv")
    metrics = trained.data.metrics
    assert len(predictions) == metrics["count_test"]
    assert metrics["accuracy"] == pytest.approx(
        accuracy_score(predictions.label, predictions.prediction), abs=1e-9
    )
    assert metrics["f1"] == pytest.approx(
        f1_score(predictions.label, predictions.prediction, average="weighted"), abs=1e-9
    )
    truth = (predictions.label == "Tree").astype(int)
    assert metrics["auc"] == pytest.approx(roc_auc_score(truth, predictions.score), abs=1e-9)
    artifacts = {f.path for f in client().list_artifacts(trained.info.run_id, "evaluation")}
    for plot in ("roc_curve", "confusion_matrix", "misclassified", "label_distribution"):
        assert f"evaluation/{plot}.png" in artifacts
    _check_spark_work(space, trained)
    _check_spill(space)

    # Tuning: trials are children of the launcher's run; the parent's params come from the refit.
    for method, line in (
        ("grid", command(f"{TUNE} -P method=grid")),
        ("hyperopt", command(f"{TUNE} -P method=hyperopt")),
    ):
        before = _ids(space)
        space.run(line)
        new = _new_runs(space, before)
        parents = [r for r in new if "mlflow.parentRunId" not in r.data.tags]
        assert len(parents) == 1, [r.info.run_name for r in new]
        parent = parents[0]
        children = [r for r in new if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
        assert len(children) == len(new) - 1 == int(parent.data.params["tune_max_evals"]) == 4
        assert parent.data.params["tune_method"] == method
        best = client().get_run(parent.data.tags["sparkles.best_run_id"])
        assert parent.data.params["regParam"] == best.data.params["regParam"]
        assert all(c.info.status == "FINISHED" for c in children)
        assert f"best_val_{parent.data.params['tune_metric']}" in parent.data.metrics

    # The perceptron: the same entry point over its own space (tune.mlp.grid: 2 × 1 × 2 points;
    # the test-sized profile's maxIter choices).
    before = _ids(space)
    space.run(command(f'{TUNE} -P overrides="train.classifier=mlp"'))
    new = _new_runs(space, before)
    (parent,) = [r for r in new if "mlflow.parentRunId" not in r.data.tags]
    assert parent.data.params["classifier"] == "mlp"
    trials = [(c.data.params["layers"], c.data.params["maxIter"]) for c in new if c != parent]
    assert sorted(trials) == [("128-32", "10"), ("128-32", "20"), ("64", "10"), ("64", "20")]
    assert parent.data.metrics["accuracy"] > 0.5

    # Registry: promote, then predict with the champion.
    space.run(command("mlflow run . -e promote --env-manager local"))
    champion = client().get_model_version_by_alias("sparkles-car-vs-tree", "champion")
    assert champion.tags["sparkles.promotion.decision"] == "first-champion"
    space.run(command("mlflow run . -e predict --env-manager local -P images="))
    scored = pd.read_parquet(space.root / "predictions" / "predictions")
    quarantined = pd.read_parquet(space.root / "predictions" / "quarantine")
    on_disk = list((space.root / "data" / "sample" / "validation").glob("*.jpg"))
    assert len(scored) + len(quarantined) == len(on_disk)
    assert set(scored.predicted_label) <= {"Car", "Tree"}

    # Serve the champion without Spark, and ask it with curl, as written.
    _check_serving(
        space, command("mlflow models serve -m models:/sparkles-car-vs"), command("IMAGE=")
    )

    # The Python example scores images with the champion, through Spark and pyfunc.
    (example,) = [text for text in readme_python() if "load_model" in text]
    (space.root / "readme_example.py").write_text(example)
    done = space.run("python readme_example.py")
    assert "prediction" in done.stdout and ("Car" in done.stdout or "Tree" in done.stdout)

    _check_multi_label(space, int(quick.data.metrics["count_policy_dropped_files"]))

    # EDA, as an entry point and as a notebook run as plain Python.
    before = _ids(space)
    space.run(command("mlflow run . -e eda"))
    (eda,) = _new_runs(space, before)
    eda_files = {f.path for f in client().list_artifacts(eda.info.run_id, "eda")}
    assert "eda/cooccurrence_dendrogram.png" in eda_files, eda_files

    # `mlflow ui` serves the same store: the experiment and its runs are there.
    _check_mlflow_ui(space, command(".venv/bin/mlflow ui"))

    # Every run the README made is FINISHED and filed in the profile's experiment.
    everything = space.runs()
    assert all(r.info.status == "FINISHED" for r in everything)
    default = space.runs("Default")
    assert default == [], [r.data.tags.get("mlflow.project.entryPoint") for r in default]


def _check_multi_label(space: Workspace, dropped: int) -> None:
    """The multi-label lines: main (computing only the ``dropped`` images the default policy
    left out), a search on micro F1, its own registered model promoted, predict and serve
    answering sets of classes."""
    before = _ids(space)
    space.run(command('mlflow run . -e main --env-manager local -P overrides="data.multi_label'))
    (main,) = _new_runs(space, before)
    assert main.data.metrics["count_computed_images"] == dropped > 0
    assert "subset_accuracy" in main.data.metrics
    before = _ids(space)
    space.run(command(f'{TUNE} -P overrides="data.multi_label_policy'))
    (parent,) = [r for r in _new_runs(space, before) if "mlflow.parentRunId" not in r.data.tags]
    assert "best_val_micro_f1" in parent.data.metrics
    space.run(command('mlflow run . -e promote --env-manager local -P overrides="data.multi'))
    champion = mlflow.MlflowClient().get_model_version_by_alias("sparkles-car-and-tree", "champion")
    assert champion.run_id in (main.info.run_id, parent.info.run_id)
    space.run(command("mlflow run . -e predict --env-manager local -P model_uri="))
    scored = pd.read_parquet(space.root / "predictions-multi-label" / "predictions")
    assert "predicted_label" not in scored and len(scored) > 0
    assert {name for names in scored.predicted_labels for name in names} <= {"Car", "Tree"}
    serve = command("mlflow models serve -m models:/sparkles-car-and-tree")
    (row,) = _check_serving(space, serve, command("IMAGE=").replace(":5001/", ":5002/"))
    assert set(row["predicted_labels"]) <= {"Car", "Tree"} and "prediction" not in row
    assert row["featurize_error"] is None and 0 <= row["probability_Car"] <= 1


def _check_serving(space: Workspace, serve: str, ask: str) -> list[dict]:
    """Start the README's serve line, run its curl line (which waits for the server), stop."""
    serving = space.start(serve, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        answer = json.loads(space.run(ask).stdout)
    except AssertionError:
        os.killpg(serving.pid, signal.SIGTERM)
        raise AssertionError(serving.communicate(timeout=60)[1][-3000:]) from None
    finally:
        if serving.poll() is None:
            os.killpg(serving.pid, signal.SIGTERM)
            serving.wait(timeout=60)
    (row,) = answer["predictions"]
    if "predicted_labels" in row:  # a multi-label model: _check_multi_label reads it
        return answer["predictions"]
    assert row["prediction"] in ("Car", "Tree") and row["featurize_error"] is None
    assert row["probability_Car"] + row["probability_Tree"] == pytest.approx(1, abs=1e-9)
    return answer["predictions"]


def _check_spark_work(space: Workspace, trained: mlflow.entities.Run) -> None:
    """The train run explains its Spark work, and the README's `sparkles history` line serves
    its application: the History Server's REST API lists every job the run counted."""
    tags, metrics = trained.data.tags, trained.data.metrics
    app_id = tags["sparkles.spark.app_id"]
    assert tags["sparkles.spark.master"] == "local[*]" and tags["sparkles.spark.version"]
    assert tags["sparkles.spark.event_log_attached"] == f"eventlog_v2_{app_id}"
    assert metrics["spark.jobs"] > 0 and metrics["spark.driver_only_seconds"] > 0
    assert "system/cpu_utilization_percentage" in metrics  # MLflow's system metrics
    client = mlflow.MlflowClient()
    names = {f.path for f in client.list_artifacts(trained.info.run_id, "spark")}
    assert {"spark/stages.csv", "spark/timeline.png", "spark/plans", "spark/eventlog"} <= names
    stages = pd.read_csv(
        mlflow.artifacts.download_artifacts(
            run_id=trained.info.run_id, artifact_path="spark/stages.csv"
        )
    )
    assert len(stages) == metrics["spark.stages"]
    assert {"split", "fit logistic", "validate", "evaluate on the test split"} <= set(stages.step)

    line = command("sparkles history")
    errors = open(space.root / "history.err", "w+")  # noqa: SIM115 (the server's, read on failure)
    history = space.start(line, stdout=subprocess.PIPE, stderr=errors, text=True)
    try:
        said = history.stdout.readline()  # printed once the server lists the application
        where = f"http://127.0.0.1:18080/history/{app_id}/jobs/"
        assert where in said, (space.root / "history.err").read_text()[-3000:]
        api = f"http://127.0.0.1:18080/api/v1/applications/{app_id}/jobs"
        with urllib.request.urlopen(api, timeout=10) as answer:
            jobs = json.loads(answer.read())
        assert len(jobs) >= metrics["spark.jobs"]
        assert {job["status"] for job in jobs} == {"SUCCEEDED"}
    finally:
        os.killpg(history.pid, signal.SIGTERM)
        history.wait(timeout=60)
        errors.close()


def _check_spill(space: Workspace) -> None:
    """docs/troubleshooting.md's worked example: a train whose split spills says so, in its
    metrics and in the stage rows of the step that spilled."""
    before = _ids(space)
    done = space.run(command("sparkles train --set spark.conf.spark.sql.windowExec"))
    (spilled,) = _new_runs(space, before)
    assert spilled.data.metrics["spark.memory_spill_bytes"] > 0
    stages = pd.read_csv(
        mlflow.artifacts.download_artifacts(
            run_id=spilled.info.run_id, artifact_path="spark/stages.csv"
        )
    )
    assert "split" in set(stages[stages.memory_spill_bytes > 0].step)
    assert "Spark spilled" in done.stderr


def _check_mlflow_ui(space: Workspace, line: str) -> None:
    """Start the README's `mlflow ui` line, ask its REST API for the experiment, stop it."""
    ui = space.start(line, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = "http://127.0.0.1:5000/api/2.0/mlflow/experiments/get-by-name?experiment_name=sparkles"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    assert b'"name": "sparkles"' in response.read().replace(b'":"', b'": "')
                break
            except OSError:
                assert ui.poll() is None, ui.stderr.read().decode()[-3000:]
                assert time.monotonic() < deadline, "mlflow ui did not answer in 120 s"
                time.sleep(1)
    finally:
        os.killpg(ui.pid, signal.SIGTERM)
        ui.wait(timeout=60)


@pytest.mark.e2e
def test_the_contributing_loops_run_as_written(tmp_path: Path) -> None:
    """docs/development.md's quick loops, as written, in a fresh copy: each runs tests, and
    every one passes (`make test` is CI's own command)."""
    space = Workspace(tmp_path, test_sized=False)
    lines = contributing_lines()
    assert "make test-fast" in lines
    for line in lines:
        if line == "make test":
            continue  # .ci/run runs it
        done = space.run(line, activate=False)
        # pytest's closing line (under a make, make's own lines may follow it)
        (summary, *_) = [x for x in done.stdout.splitlines()[::-1] if re.search(r"\d+ passed", x)]
        assert "failed" not in summary and "error" not in summary, summary


@pytest.mark.e2e
def test_download_entry_point_as_written(tmp_path: Path, server: Server) -> None:  # noqa: F811
    space = Workspace(tmp_path)
    urls = {
        "SPARKLES_OPENIMAGES_LABELS_URL": server.urls()["labels_url"],
        "SPARKLES_OPENIMAGES_CLASSES_URL": server.urls()["classes_url"],
        "SPARKLES_OPENIMAGES_IMAGES_URL": server.urls()["images_url"],
    }
    line = command("mlflow run . -e download")
    assert marked(line)
    space.run(line, env=urls)
    folder = space.root / "data" / "openimages"
    downloaded = sorted(p.stem for p in (folder / "validation").glob("*.jpg"))
    assert downloaded == sorted(ID[name] for name in ("c1", "c2", "c3", "ct", "t1", "t2"))
    assert (folder / "download_report.json").is_file()
    (run,) = space.runs()
    assert run.data.tags["mlflow.project.entryPoint"] == "download"
    assert run.info.status == "FINISHED"


def test_every_readme_command_is_run_by_a_test_or_marked() -> None:
    """Neither the README nor a page of docs/ can gain a command that nothing runs."""
    quoted = re.findall(r"""command\(f?(?:"([^"]+)"|'([^']+)')\)""", SOURCE)
    prefixes = [double or single for double, single in quoted]
    run_here = {command(prefix.replace("{TUNE}", TUNE)) for prefix in prefixes}
    contributing = set(contributing_lines())
    unaccounted = []
    for line, in_marked_block in documented_commands():
        setup = line.startswith(("export MLFLOW_", "source .venv/"))  # every workflow step runs it
        if setup or in_marked_block or marked(line) or bare(line) in ELSEWHERE:
            continue
        if line not in run_here and bare(line) not in contributing:
            unaccounted.append(line)
    for text in readme_python():
        first = text.splitlines()[0]
        if not marked(first) and "load_model" not in text:
            unaccounted.append(first)
    assert unaccounted == [], "README commands no test runs (run them, or mark `# needs AWS`)"
