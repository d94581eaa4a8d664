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


PACKAGE = ROOT / "src" / "sparkles"
ARCHITECTURE = ROOT / "docs" / "architecture.md"


def _section(title: str) -> str:
    return ARCHITECTURE.read_text().split(f"## {title}", 1)[1].split("\n## ", 1)[0]


def _modules() -> dict[str, Path]:
    """Dotted name (``sparkles.cnn.featurizer``) → file, packages' ``__init__`` left out."""
    return {
        ".".join(("sparkles", *path.relative_to(PACKAGE).with_suffix("").parts)): path
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.name != "__init__.py"
    }


def _imports(path: Path) -> set[str]:
    """The project modules ``path`` imports, at any depth, but not those imported for type
    hints only (under ``if TYPE_CHECKING:``)."""
    import ast

    tree = ast.parse(path.read_text())
    hints = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
        for statement in block.body
        for node in ast.walk(statement)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in hints:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("sparkles.")}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sparkles"):
            found |= {f"{node.module}.{alias.name}" for alias in node.names} | {node.module}
    modules = _modules()
    return {name for name in found if name in modules}


def _unit(module: str) -> str:
    """A subpackage (``cnn``), or a top-level module (``config``)."""
    return module.split(".")[1]


def _layers() -> dict[str, int | None]:
    """docs/architecture.md's layer table: unit → layer (None: an alias for old models)."""
    import re

    layers: dict[str, int | None] = {}
    for layer, units in re.findall(r"^\| (\d+|alias) \| ([^|]+) \|", _section("Layers"), re.M):
        for unit in re.findall(r"`(\w+)`", units):
            layers[unit] = None if layer == "alias" else int(layer)
    return layers


def test_the_architecture_page_has_one_line_per_module() -> None:
    """docs/architecture.md's module map names every module of the package, and no other."""
    import re

    modules = {str(path.relative_to(PACKAGE)) for path in _modules().values()}
    rows = re.findall(r"^\| `([\w/]+\.py)` \|", _section("Modules"), flags=re.M)
    assert len(rows) == len(set(rows)), "a module has two rows"
    assert set(rows) == modules


def test_each_layer_imports_only_the_layers_below_it() -> None:
    """The order docs/architecture.md gives: a module imports its own subpackage and lower
    layers, never a unit beside it or above it; and no import cycle."""
    from graphlib import CycleError, TopologicalSorter

    layers, modules = _layers(), _modules()
    assert {_unit(name) for name in modules} == set(layers), "every unit has one layer"
    graph = {name: _imports(path) - {name} for name, path in modules.items()}
    upward = [
        f"{name} → {target}"
        for name, targets in graph.items()
        for target in targets
        if layers[_unit(name)] is not None
        and _unit(target) != _unit(name)
        and not (layers[_unit(target)] is not None and layers[_unit(target)] < layers[_unit(name)])
    ]
    assert upward == [], "imports that are not downward"
    try:
        tuple(TopologicalSorter(graph).static_order())
    except CycleError as err:
        raise AssertionError(f"an import cycle: {err.args[1]}") from None


def test_no_module_outgrows_its_concern() -> None:
    """~400 lines at most: past that a module holds two concerns (generated code included)."""
    sizes = {name: len(path.read_text().splitlines()) for name, path in _modules().items()}
    assert {name: size for name, size in sizes.items() if size > 420} == {}


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
    assert (Path(local) / "code" / "sparkles" / "cnn" / "featurizer.py").is_file()

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
        [
            python,
            str(script),
            mlflow.get_tracking_uri(),
            f"runs:/{run.info.run_id}/model",
            str(Path(profile.data.images) / "*.jpg"),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(report["rows"]) == 3
    assert all(
        prediction in ("Car", "Tree") and error is None for prediction, error in report["rows"]
    )
    assert "/code/sparkles/" in report["code"]  # the model's own copy, not an installed one


def test_only_the_tasks_know_single_from_multi_label() -> None:
    """Everything else asks the task (``sparkles.tasks``; ``model.answers`` when served): no
    other module names a task, the multi-label stage or its answer. ``data.openimages`` reads
    the policy word, which selects labels before any task exists; ``model.label_sets`` is the
    multi-label task's Spark stage."""
    import re

    knowing = re.compile(
        r"\b(MULTI_LABEL|SINGLE_LABEL|LabelSet|label_sets|PREDICTED_LABELS|multi_label)\b"
    )
    allowed = {"names.py", "model/answers.py", "model/label_sets.py", "data/openimages.py"}
    found = {
        str(path.relative_to(PACKAGE))
        for path in _modules().values()
        if knowing.search(path.read_text().split('"""', 2)[-1])  # past the docstring
    }
    outside = {name for name in found if not name.startswith("tasks/") and name not in allowed}
    assert outside == set()
