"""The EMR scripts: shellcheck-clean, the launch command complete, the bootstrap really installs.

AWS cannot be reached from here: create-cluster.sh runs with DRY_RUN=1 (prints its commands),
and bootstrap.sh runs for real into a temporary prefix with a stand-in for EMR's pyspark folder.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EMR = ROOT / "scripts" / "emr"

pytestmark = pytest.mark.e2e  # the scripts run as processes (with a stand-in aws CLI)


def test_scripts_pass_shellcheck() -> None:
    shellcheck = shutil.which("shellcheck") or str(Path(sys.executable).parent / "shellcheck")
    done = subprocess.run(
        [shellcheck, "--severity=style", *sorted(map(str, EMR.glob("*.sh")))],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout


def _create(**env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in ("SPARKLES_S3", "KEY_NAME")}
    return subprocess.run(
        ["bash", str(EMR / "create-cluster.sh")],
        env={**base, "DRY_RUN": "1", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_create_cluster_names_release_bootstrap_and_configuration() -> None:
    done = _create(SPARKLES_S3="s3://b/p", KEY_NAME="k", CORE_COUNT="3")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    wheel = next(line for line in lines if "s3 cp" in line and ".whl" in line).split()[-1]
    assert wheel.startswith("s3://b/p/emr/sparkles_spark-") and wheel.endswith("-py3-none-any.whl")
    create = next(line for line in lines if line.startswith("aws emr create-cluster"))
    assert "--release-label emr-spark-8.1.0" in create
    assert "--applications Name=Spark --" in create  # emr-spark-8.x has no Hadoop application
    assert "--auto-termination-policy IdleTimeout=3600" in create
    assert "InstanceGroupType=CORE\\,InstanceCount=3\\,InstanceType=m6i.4xlarge" in create
    assert f"Path=s3://b/p/emr/bootstrap.sh\\,Name=sparkles\\,Args=\\[{wheel}\\]" in create
    assert f"file://{EMR / 'configurations.json'}" in create
    settings = json.loads((EMR / "configurations.json").read_text())
    assert {c["Classification"] for c in settings} == {"spark-env", "spark-defaults"}
    assert "/opt/sparkles/venv/bin/python" in json.dumps(settings)


def test_create_cluster_passes_a_wheelhouse_to_the_bootstrap() -> None:
    done = _create(SPARKLES_S3="s3://b/p", KEY_NAME="k", WHEELHOUSE="s3://b/wheels/")
    create = next(line for line in done.stdout.splitlines() if "create-cluster" in line)
    assert "-py3-none-any.whl\\,s3://b/wheels/\\]" in create


def _submit(*entry_points: str, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in ("CLUSTER_ID", "SPARKLES_S3")}
    return subprocess.run(
        ["bash", str(EMR / "submit-steps.sh"), *entry_points],
        env={**base, "DRY_RUN": "1", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_submit_steps_runs_each_entry_point_through_the_emr_backend() -> None:
    settings = {
        "CLUSTER_ID": "j-1",
        "SPARKLES_S3": "s3://b/p",
        "MLFLOW_TRACKING_URI": "http://127.0.0.1:5000",
    }
    done = _submit(**settings)
    assert done.returncode == 0, done.stderr
    lines = [shlex.split(line) for line in done.stdout.splitlines()]
    assert [line[line.index("-e") + 1] for line in lines] == ["main", "tune", "promote"]
    for line in lines:
        assert line[:3] == ["mlflow", "run", str(ROOT)]
        assert line[line.index("--backend") + 1] == "emr"
        assert line[line.index("--backend-config") + 1] == str(ROOT / "conf" / "emr-backend.json")
        assert "profile=emr" in line and "sparkles-emr" in line
    assert len(_submit("tune", **settings).stdout.splitlines()) == 1
    unknown = _submit("deploy", **settings)
    assert unknown.returncode == 2 and "unknown entry point 'deploy'" in unknown.stderr
    assert _submit(SPARKLES_S3="s3://b/p").returncode != 0  # no cluster id


def test_create_cluster_refuses_to_start_without_its_settings() -> None:
    done = _create(KEY_NAME="k")
    assert done.returncode != 0 and "set SPARKLES_S3" in done.stderr


@pytest.mark.e2e
def test_bootstrap_installs_a_venv_that_sees_the_clusters_pyspark(tmp_path: Path) -> None:
    """A tiny package stands in for the wheel (the real one brings TensorFlow: minutes)."""
    package = tmp_path / "pkg"
    (package / "sparkles").mkdir(parents=True)
    (package / "sparkles" / "__init__.py").write_text("")
    (package / "pyproject.toml").write_text(
        '[project]\nname = "sparkles-spark"\nversion = "0.0.1"\n'
        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
    )
    spark_python = tmp_path / "spark" / "python"
    (spark_python / "pyspark").mkdir(parents=True)
    (spark_python / "pyspark" / "__init__.py").write_text("__version__ = 'emr'\n")
    (spark_python / "lib").mkdir()
    with zipfile.ZipFile(spark_python / "lib" / "py4j-0.10.9.9-src.zip", "w") as archive:
        archive.writestr("py4j/__init__.py", "")
    prefix = tmp_path / "opt"
    env = {
        **os.environ,
        "SPARKLES_PREFIX": str(prefix),
        "SPARKLES_SPARK_PYTHON": str(spark_python),
        "SPARKLES_PYTHON": sys.executable,
    }
    wheels = tmp_path / "dist"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--wheel-dir",
            str(wheels),
            str(package),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = wheels.glob("sparkles_spark-0.0.1-*.whl")
    refused = subprocess.run(
        ["bash", str(EMR / "bootstrap.sh"), "sparkles"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 2 and "expected this project's wheel" in refused.stderr
    assert not prefix.exists()  # refused before anything was installed
    done = subprocess.run(
        ["bash", str(EMR / "bootstrap.sh"), str(wheel)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "sparkles 0.0.1" in done.stderr
    probe = "import pyspark, py4j, sparkles; print(pyspark.__version__, py4j.__file__)"
    venv_python = prefix / "venv" / "bin" / "python"
    seen = subprocess.run([venv_python, "-c", probe], capture_output=True, text=True, check=True)
    version, py4j_file = seen.stdout.split()
    assert version == "emr" and "py4j-0.10.9.9-src.zip" in py4j_file
