"""Packaging: conda.yaml and pyproject.toml describe one stack; a logged model carries its code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import mlflow
import pytest
import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent


def test_conda_env_pins_what_the_package_declares() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    conda = yaml.safe_load((ROOT / "conda.yaml").read_text())["dependencies"]
    pip = next(item["pip"] for item in conda if isinstance(item, dict))
    conda_pins = {Requirement(r).name: Requirement(r) for r in pip if not r.startswith("-")}
    for text in project["dependencies"]:
        declared = Requirement(text)
        assert declared.name in conda_pins, f"{declared.name} is missing from conda.yaml"
        assert conda_pins[declared.name].specifier == declared.specifier, declared.name
    (spark_range,) = map(Requirement, project["optional-dependencies"]["spark"])
    (pinned,) = conda_pins["pyspark"].specifier
    assert spark_range.specifier.contains(pinned.version), "conda's pyspark is outside the range"
    python = next(item for item in conda if isinstance(item, str) and item.startswith("python="))
    assert Requirement(f"python{project['requires-python']}").specifier.contains(
        python.split("=")[1]
    )


BARE_SCRIPT = """
import json, sys
import mlflow
from pyspark.sql import SparkSession

tracking_uri, model_uri, images = sys.argv[1:]
spark = (
    SparkSession.builder.master("local[2]").config("spark.ui.enabled", "false").getOrCreate()
)
mlflow.set_tracking_uri(tracking_uri)
model = mlflow.spark.load_model(model_uri)
frame = spark.read.format("binaryFile").load(images).select("path", "content").limit(3)
rows = model.transform(frame).select("prediction", "featurize_error").collect()
import sparkles
print(json.dumps({"rows": [list(r) for r in rows], "code": sparkles.__file__}))
"""


def test_the_architecture_page_has_one_line_per_module() -> None:
    """docs/architecture.md's module map names every module of the package, and no other."""
    import re

    package = ROOT / "src" / "sparkles"
    modules = {
        str(path.relative_to(package))
        for path in package.rglob("*.py")
        if path.name != "__init__.py"
    }
    page = (ROOT / "docs" / "architecture.md").read_text()
    table = page.split("## Modules", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([\w/]+\.py)` \|", table, flags=re.M)
    assert len(rows) == len(set(rows)), "a module has two rows"
    assert set(rows) == modules


@pytest.mark.e2e
def test_a_logged_model_scores_where_the_project_is_not_installed(
    registry_store, tmp_path: Path
) -> None:
    """Only the pinned third-party packages: the model brings this project's code itself."""
    from sparkles.config import load_profile
    from sparkles.deploy.registry import best_run

    path, _ = registry_store
    profile = load_profile(path)
    run = best_run("reg-strong", "auc", allow_random_weights=True)
    local = mlflow.artifacts.download_artifacts(f"runs:/{run.info.run_id}/model", dst_path=tmp_path)
    requirements = (Path(local) / "requirements.txt").read_text().split()
    assert not [r for r in requirements if Requirement(r).name.startswith("sparkles")]
    assert (Path(local) / "code" / "sparkles" / "featurizer.py").is_file()

    bare = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    (site,) = bare.glob("lib/python3*/site-packages")
    # the test venv's packages as a plain path: its .pth files (the editable install of this
    # project among them) are not processed, so `sparkles` is not importable
    (site / "third_party.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    python = bare / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PYTHON"))}
    env.update(PYSPARK_PYTHON=str(python), SPARK_LOCAL_IP="127.0.0.1")
    probe = subprocess.run([python, "-c", "import sparkles"], cwd=tmp_path, env=env)
    assert probe.returncode != 0, "the project is importable: the test would prove nothing"
    script = tmp_path / "score.py"
    script.write_text(BARE_SCRIPT)
    done = subprocess.run(
        [python, str(script), mlflow.get_tracking_uri(), f"runs:/{run.info.run_id}/model",
         str(Path(profile.data.images) / "*.jpg")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(report["rows"]) == 3
    assert all(
        prediction in ("Car", "Tree") and error is None for prediction, error in report["rows"]
    )
    assert "/code/sparkles/" in report["code"]  # the model's own copy, not an installed one
