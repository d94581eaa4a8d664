"""conda.yaml (MLflow's conda env manager) and pyproject.toml must describe the same stack."""

from __future__ import annotations

import tomllib
from pathlib import Path

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
