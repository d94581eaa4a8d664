"""The emr backend's own decisions, without AWS: its config, the tracking URIs it refuses, the
files it packages, the step it asks for (unit tier; the backend against an AWS endpoint on
loopback is tests/emr/test_backend.py)."""

from __future__ import annotations

import subprocess
import tarfile
from pathlib import Path

import pytest

from sparkles.emr.backend import step_args
from sparkles.emr.backend_config import EmrError, check_tracking_uri, load_config
from sparkles.emr.project import package, project_files
from sparkles.emr.submitted import STATES

pytest.importorskip("pathspec")


def test_config_errors_name_their_keys(monkeypatch) -> None:
    with pytest.raises(EmrError) as caught:
        load_config({"s3_prefix": "bucket/x", "cluster_id": "cluster-1", "pol_seconds": 1})
    message = str(caught.value)
    assert "key 's3_prefix'" in message and "key 'cluster_id'" in message
    assert "key 'pol_seconds': Extra inputs are not permitted" in message
    with pytest.raises(EmrError, match="exactly one of cluster_id"):
        load_config({"s3_prefix": "s3://bucket/x"})
    with pytest.raises(EmrError, match="execution_role_arn is a step's runtime role"):
        load_config(
            {
                "s3_prefix": "s3://bucket/x",
                "new_cluster": {},
                "execution_role_arn": "arn:aws:iam::123456789012:role/step",
            }
        )
    monkeypatch.setenv("SPARKLES_S3", "s3://my-bucket/sparkles")
    monkeypatch.delenv("SPARKLES_EMR_CLUSTER_ID", raising=False)
    with pytest.raises(EmrError, match="SPARKLES_EMR_CLUSTER_ID is not set"):
        load_config(_json(Path("conf/emr-backend.json")))
    monkeypatch.setenv("SPARKLES_EMR_CLUSTER_ID", "j-ABC123")
    config = load_config({**_json(Path("conf/emr-backend.json")), "SYNCHRONOUS": False})
    assert (config.cluster_id, config.s3_prefix) == ("j-ABC123", "s3://my-bucket/sparkles")
    assert config.wait and config.venv == "/opt/sparkles/venv"


def _json(path: Path) -> dict:
    import json

    return json.loads((Path(__file__).resolve().parents[2] / path).read_text())


@pytest.mark.parametrize(
    "uri", ["sqlite:///mlruns.db", "file:///tmp/mlruns", "./mlruns", "https://me:token@host"]
)
def test_a_tracking_uri_the_cluster_cannot_use_is_refused(uri: str) -> None:
    with pytest.raises(EmrError):
        check_tracking_uri(uri)


def test_the_cluster_s_tracking_uri_carries_no_credentials_either() -> None:
    """It lands in the step's arguments as the caller's would (the EMR console, CloudTrail)."""
    config = load_config(
        {
            "s3_prefix": "s3://my-bucket/p",
            "cluster_id": "j-ABC",
            "cluster_tracking_uri": "http://me:token@primary:5000",
        }
    )
    with pytest.raises(EmrError, match="cluster_tracking_uri carries credentials"):
        check_tracking_uri("http://127.0.0.1:5000", config)
    plain = config.model_copy(update={"cluster_tracking_uri": "http://primary:5000"})
    check_tracking_uri("http://127.0.0.1:5000", plain)


def test_a_shared_tracking_server_is_accepted() -> None:
    for uri in ("http://localhost:5000", "https://mlflow.example.com", "databricks"):
        check_tracking_uri(uri)


def _tree(root: Path) -> None:
    for name, text in {
        "MLproject": "name: x",
        "src/pkg/data/a.py": "",
        "data/big.jpg": "x",
        "mlruns.db": "",
        ".gitignore": "/data/\n*.db\n",
        "notes.txt": "untracked, not ignored",
    }.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def test_the_project_is_packaged_as_git_sees_it(tmp_path: Path) -> None:
    _tree(tmp_path)
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    subprocess.run(
        ["git", "-C", str(tmp_path), "add", "MLproject", "src", ".gitignore"], check=True
    )
    expected = {"MLproject", "src/pkg/data/a.py", ".gitignore", "notes.txt"}
    assert {str(p.relative_to(tmp_path)) for p in project_files(tmp_path)} == expected
    archive = tmp_path.parent / "project.tar.gz"
    assert package(tmp_path, archive) == len(expected)
    with tarfile.open(archive) as tar:
        assert set(tar.getnames()) == expected


def test_without_git_the_gitignore_patterns_decide(tmp_path: Path) -> None:
    _tree(tmp_path)
    names = {str(p.relative_to(tmp_path)) for p in project_files(tmp_path)}
    assert names == {"MLproject", "src/pkg/data/a.py", ".gitignore", "notes.txt"}


def test_the_step_runs_the_entry_point_into_the_run() -> None:
    config = load_config(
        {
            "s3_prefix": "s3://b-1/p",
            "cluster_id": "j-1",
            "cluster_tracking_uri": "http://10.0.0.5:5000",
        }
    )
    args = step_args(
        config,
        "s3://b-1/p/a.tar.gz",
        entry_point="tune",
        params={"profile": "emr", "max_evals": 8},
        run_id="r1",
        experiment_id="7",
        tracking_uri="http://localhost:5000",
    )
    assert args[:3] == ["/opt/sparkles/venv/bin/python", "-m", "sparkles.emr.step"]
    assert args[args.index("--tracking-uri") + 1] == "http://10.0.0.5:5000"
    assert args[-2:] == ["-Pprofile=emr", "-Pmax_evals=8"]
    assert {STATES[s] for s in ("CANCELLED", "INTERRUPTED")} == {STATES["CANCELLED"]}


def test_without_a_region_boto3s_own_chain_picks_it(monkeypatch) -> None:
    """The shipped config names no region: someone set up for another one (AWS_DEFAULT_REGION,
    or the region `aws configure` wrote into their profile) has their cluster looked up there,
    not in a default of ours. boto3 reads AWS_DEFAULT_REGION, not AWS_REGION (botocore's
    configprovider), so AWS_REGION must not decide it either."""
    pytest.importorskip("boto3")
    from sparkles.emr.backend import _clients

    monkeypatch.setenv("SPARKLES_S3", "s3://my-bucket/sparkles")
    monkeypatch.setenv("SPARKLES_EMR_CLUSTER_ID", "j-ABC123")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    emr, s3 = _clients(load_config(_json(Path("conf/emr-backend.json"))))
    assert emr.meta.region_name == s3.meta.region_name == "eu-west-1"
    named = load_config({**_json(Path("conf/emr-backend.json")), "region": "ap-south-1"})
    assert _clients(named)[0].meta.region_name == "ap-south-1"
    # an hours-long wait survives throttling: botocore's standard retries, with backoff
    retries = emr.meta.config.retries
    assert (retries["mode"], retries["total_max_attempts"]) == ("standard", 11)  # 1 + 10 retries


def test_a_step_older_than_its_caller_says_so_in_one_line(capsys) -> None:
    """The backend (the caller's install) and the step (the cluster's bootstrapped wheel) may
    differ: an option the step does not know stops it with one line naming both versions,
    instead of argparse's usage message; a mere difference is said and the step goes on."""
    from sparkles import __version__
    from sparkles.emr.step import main, versions_agree

    base = [
        "--archive",
        "s3://b/p.tar.gz",
        "--entry-point",
        "tune",
        "--run-id",
        "r",
        "--experiment-id",
        "1",
        "--tracking-uri",
        "http://h:5000",
    ]
    assert main([*base, "--client-version", "9.0.0", "--retry-budget", "3"]) == 2
    said = capsys.readouterr().err.strip().splitlines()
    assert said == [
        f"sparkles: sparkles {__version__} on this cluster, 9.0.0 on the caller's machine: this "
        "step does not know --retry-budget 3; bootstrap the cluster with the caller's wheel "
        "(docs/emr.md)"
    ]
    assert versions_agree("9.0.0", []) and "running the caller's" in capsys.readouterr().err
    assert versions_agree(__version__, []) and capsys.readouterr().err == ""
