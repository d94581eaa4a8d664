"""Profiles: every mistake gives one message naming the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from sparkles.cli import _profile as profile_from_args
from sparkles.cli import build_parser
from sparkles.config import ConfigError, load_profile
from sparkles.overrides import redact, split_overrides

ROOT = Path(__file__).resolve().parent.parent


def _edit(path: Path, change) -> Path:
    raw = yaml.safe_load(path.read_text())
    change(raw)
    path.write_text(yaml.safe_dump(raw))
    return path


def test_local_profile_loads_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    profile = load_profile("local")
    assert profile.name == "local"
    assert profile.spark.conf["spark.task.cpus"] == "2"
    assert profile.mlflow.tracking_uri == "sqlite:///mlruns.db"
    assert profile.data.classes == ["Car", "Tree"]
    assert profile.featurizer.model == "InceptionV3"
    assert profile.featurizer.allow_random_weights is True


def test_profile_by_path_with_overrides(profile_path: Path) -> None:
    profile = load_profile(
        str(profile_path),
        ["featurizer.pooling=max", "featurizer.batch_size=8", "data.classes=[Car, Bus]"],
    )
    assert profile.featurizer.pooling == "max"
    assert profile.featurizer.batch_size == 8
    assert profile.data.classes == ["Car", "Bus"]


def test_spark_settings_are_overridden_by_their_dotted_names(profile_path: Path) -> None:
    profile = load_profile(str(profile_path), ["spark.conf.spark.driver.memory=2g"])
    assert profile.spark.conf["spark.driver.memory"] == "2g"
    assert profile.spark.conf["spark.task.cpus"] == "2"  # the rest of the section stays


def test_unknown_key_is_named(profile_path: Path) -> None:
    _edit(profile_path, lambda raw: raw["featurizer"].update(polling="avg"))
    with pytest.raises(ConfigError) as err:
        load_profile(str(profile_path))
    assert str(profile_path) in str(err.value)
    assert "unknown key 'featurizer.polling'" in str(err.value)


def test_wrong_type_is_named(profile_path: Path) -> None:
    _edit(profile_path, lambda raw: raw["featurizer"].update(batch_size="many"))
    with pytest.raises(ConfigError, match=r"key 'featurizer.batch_size'.*'many'"):
        load_profile(str(profile_path))


def test_bad_choice_is_named(profile_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"key 'data.multi_label_policy'"):
        load_profile(str(profile_path), ["data.multi_label_policy=keep-most"])


def test_missing_required_key_is_named(profile_path: Path) -> None:
    _edit(profile_path, lambda raw: raw["data"].pop("labels_csv"))
    with pytest.raises(ConfigError, match=r"missing required key 'data.labels_csv'"):
        load_profile(str(profile_path))


def test_missing_path_is_named_when_no_sample(profile_path: Path) -> None:
    _edit(profile_path, lambda raw: raw["data"].pop("sample"))
    with pytest.raises(ConfigError) as err:
        load_profile(str(profile_path))
    assert "key 'data.labels_csv': path does not exist" in str(err.value)
    assert str(profile_path) in str(err.value)


def test_uri_paths_are_not_checked_locally(profile_path: Path) -> None:
    def to_s3(raw: dict) -> None:
        raw["data"].pop("sample")
        raw["data"].update(
            labels_csv="s3://b/l.csv", classes_csv="s3://b/c.csv", images="s3://b/i/"
        )

    _edit(profile_path, to_s3)
    assert load_profile(str(profile_path)).data.images == "s3://b/i/"


def test_unknown_profile_lists_known_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    with pytest.raises(ConfigError, match=r"profile 'nope' not found .*'local'"):
        load_profile("nope")


def test_bad_override_syntax(profile_path: Path) -> None:
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_profile(str(profile_path), ["featurizer.pooling"])
    with pytest.raises(ConfigError, match="is not a section"):
        load_profile(str(profile_path), ["featurizer.batch_size.x=1"])


@pytest.mark.parametrize(
    ("text", "settings"),
    [
        ("", []),
        ("featurizer.pooling=max", ["featurizer.pooling=max"]),
        ("data.classes=[Car, Bus]", ["data.classes=[Car, Bus]"]),
        (
            "featurizer.pooling=max  data.classes=[Car, Bus] train.reg_param=0.1",
            ["featurizer.pooling=max", "data.classes=[Car, Bus]", "train.reg_param=0.1"],
        ),
        ("data.images='/photos/summer 2024'", ["data.images='/photos/summer 2024'"]),
        (
            "spark.conf.spark.driver.extraJavaOptions=-Da=1 -Db=2 featurizer.batch_size=8",
            ["spark.conf.spark.driver.extraJavaOptions=-Da=1 -Db=2", "featurizer.batch_size=8"],
        ),
    ],
)
def test_a_new_setting_starts_only_at_a_key(text: str, settings: list[str]) -> None:
    assert split_overrides(text) == settings


def test_set_takes_a_yaml_value_with_spaces_as_the_readme_writes_it(profile_path: Path) -> None:
    """`--set data.classes='[Car, Bus]'` (quotes gone in the shell), and MLproject's one string."""
    args = build_parser().parse_args(
        [
            "featurize",
            "--profile",
            str(profile_path),
            "--set",
            "data.classes=[Car, Bus]",
            "--set",
            "featurizer.pooling=max data.images='/tmp/summer 2024' train.reg_param=0.5",
        ]
    )
    profile = profile_from_args(args)
    assert profile.data.classes == ["Car", "Bus"]
    assert profile.featurizer.pooling == "max"
    assert profile.data.images == "/tmp/summer 2024"
    assert profile.train.reg_param == 0.5


def test_invalid_yaml(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("spark: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_profile(str(path))


def _gib(size: str) -> float:
    return float(size[:-1]) / (1024 if size.endswith("m") else 1)


def test_emr_profile_takes_its_locations_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("SPARKLES_S3", "s3://my-bucket/sparkles")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://10.0.0.5:5000")
    monkeypatch.delenv("SPARKLES_WEIGHTS", raising=False)
    profile = load_profile("emr")
    assert profile.spark.master == "yarn"
    assert profile.store.dir == "s3://my-bucket/sparkles/feature-cache"
    assert profile.data.labels_csv.startswith("s3://my-bucket/sparkles/openimages/")
    assert profile.mlflow.tracking_uri == "http://10.0.0.5:5000"
    assert profile.featurizer.weights == "imagenet" and not profile.featurizer.allow_random_weights
    conf = profile.spark.conf
    provider = "spark.hadoop.fs.s3a.bucket.open-images-dataset.aws.credentials.provider"
    assert conf[provider].endswith("AnonymousAWSCredentialsProvider")
    assert profile.data.images.startswith("s3a://open-images-dataset/")
    # the sizing arithmetic in the file's header: one model per executor, 4 executors fit YARN
    assert conf["spark.executor.cores"] == conf["spark.task.cpus"]
    per_executor = sum(
        _gib(conf[f"spark.executor.{key}"])
        for key in ("memory", "memoryOverhead", "pyspark.memory")
    )
    assert 16 // int(conf["spark.executor.cores"]) * per_executor <= 56


def test_unset_environment_variable_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("SPARKLES_S3", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://10.0.0.5:5000")
    with pytest.raises(ConfigError, match=r"emr.yaml: key '\S+': environment variable SPARKLES_S3"):
        load_profile("emr")


def test_credentials_in_a_profile_are_rejected(profile_path: Path) -> None:
    with pytest.raises(ConfigError, match="credentials do not belong in a profile"):
        load_profile(str(profile_path), ["spark.conf={spark.hadoop.fs.s3a.secret.key: abc}"])


@pytest.mark.parametrize(
    "override",
    [
        "spark.conf.spark.hadoop.fs.azure.account.key.acct.dfs.core.windows.net=abc",
        "spark.conf.spark.hadoop.fs.azure.account.oauth2.client.secret=abc",
        "spark.conf.spark.authenticate.secret=abc",
        "spark.conf.spark.ssl.private.key=abc",
        "spark.conf.spark.hadoop.fs.s3a.access.key=abc",
    ],
)
def test_credential_keys_of_every_shape_are_rejected(profile_path: Path, override: str) -> None:
    with pytest.raises(ConfigError, match="credentials do not belong in a profile") as caught:
        load_profile(str(profile_path), [override])
    assert "abc" not in str(caught.value).replace(str(profile_path), "")  # not repeated


@pytest.mark.parametrize(
    "override",
    [
        "mlflow.tracking_uri=https://alice:s3cret@mlflow.example.com",
        "featurizer.weights_mirror=https://ghp_token@mirror.example.com/weights/",
        "data.images=s3a://KEY:SECRET@bucket/images",
    ],
)
def test_credentials_in_values_are_rejected_without_repeating_them(
    profile_path: Path, override: str
) -> None:
    with pytest.raises(ConfigError, match="user information in the URI") as caught:
        load_profile(str(profile_path), [override])
    message = str(caught.value)
    assert override.split("=", 1)[0] in message
    for secret in ("s3cret", "ghp_token", "SECRET"):
        assert secret not in message


def test_printed_uris_never_show_user_information() -> None:
    assert redact("https://alice:s3cret@host:5000/x") == "https://***@host:5000/x"
    assert redact("tracking http://tok@h and s3://b/k") == "tracking http://***@h and s3://b/k"
    assert redact("sqlite:///mlruns.db") == "sqlite:///mlruns.db"


def test_a_section_renamed_since_is_read_with_one_notice(profile_path: Path, caplog) -> None:
    """Profiles written before 0.3 say ``cache:`` for the feature store's section."""
    from tests.conftest import warned_once

    _edit(profile_path, lambda raw: raw.update(cache=raw.pop("store")))
    with warned_once(caplog, "profile key 'cache' is now 'store'"):
        profile = load_profile(str(profile_path))
    assert profile.store.dir.endswith("cache")
    with pytest.raises(ConfigError, match="'cache' is now 'store': give one of them"):
        load_profile(str(profile_path), ["store.lease_seconds=30"])
