"""What a profile's text may say before it is validated: ``--set KEY=VALUE`` overrides (several
in one MLproject parameter), ``${VAR}`` / ``${VAR:-default}`` references to the environment, and
never a credential (secret keys, ``user:token@`` in a URI; ``redact`` for anything printed)."""

from __future__ import annotations

import os
import re
from typing import Any

import yaml

from sparkles.errors import ConfigError

# ${VAR} or ${VAR:-default} in any string value: the EMR profile takes its S3 prefix this way.
ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
# Spark/Hadoop settings that hold secrets: they come from the instance profile or the
# environment, never from a file that is committed, copied to S3 or logged.
CREDENTIAL_KEYS = re.compile(
    r"(access\.key|secret\.key|session\.token|awsAccessKeyId|awsSecretAccessKey|password"
    r"|private\.key|client\.secret|authenticate\.secret|\.sas\.token)$"
    r"|fs\.azure\.account\.key\.",
    re.IGNORECASE,
)
# scheme://user:token@host: a credential in a value (a tracking URI, a mirror, a data path).
USERINFO = re.compile(r"\b[a-zA-Z][\w+.-]*://([^/@\s]+)@")


def redact(text: str) -> str:
    """``https://user:token@host/x`` → ``https://***@host/x``: for anything printed or logged."""
    return USERINFO.sub(lambda m: m.group(0).replace(m.group(1), "***"), text)


def credentials_in_values(node: Any, path: str = "") -> list[str]:
    """Dotted keys whose string value carries user information in a URI."""
    if isinstance(node, dict):
        return [
            key
            for k, v in node.items()
            for key in credentials_in_values(v, f"{path}.{k}" if path else str(k))
        ]
    if isinstance(node, list):
        return [k for i, v in enumerate(node) for k in credentials_in_values(v, f"{path}[{i}]")]
    return [path] if isinstance(node, str) and USERINFO.search(node) else []


# Several KEY=VALUE settings may share one string (MLproject passes `overrides` as one argument).
# A new setting starts only where whitespace is followed by a dotted key and "=": any other
# whitespace belongs to the value, so `data.classes=[Car, Bus]` stays one setting, as YAML reads it.
NEXT_OVERRIDE = re.compile(r"\s+(?=[A-Za-z_][\w-]*(?:\.[\w-]+)*=)")


def split_overrides(text: str) -> list[str]:
    """``"a.b=1 c.d=[x, y]"`` → ``["a.b=1", "c.d=[x, y]"]``; quoting is YAML's, in the value."""
    return [part for part in NEXT_OVERRIDE.split(text.strip()) if part]


def parse_override(text: str) -> tuple[list[str], Any]:
    """``featurizer.pooling=max`` → (["featurizer", "pooling"], "max"); values are YAML-typed.

    ``spark.conf.spark.driver.memory=2g`` sets the Spark setting ``spark.driver.memory``."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"override {text!r}: expected KEY=VALUE, e.g. featurizer.pooling=max")
    value = yaml.safe_load(raw) if raw.strip() else ""
    if key.startswith("spark.conf."):  # Spark's own keys contain dots: spark.conf.<spark key>
        return ["spark", "conf", key.removeprefix("spark.conf.")], value
    return key.split("."), value


def apply_overrides(raw: dict[str, Any], overrides: list[str], source: str) -> dict[str, Any]:
    for text in overrides:
        keys, value = parse_override(text)
        node = raw
        for depth, key in enumerate(keys[:-1]):
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                dotted = ".".join(keys[: depth + 1])
                raise ConfigError(f"{source}: override {text!r}: {dotted} is not a section")
            node = child
        node[keys[-1]] = value
    return raw


def expand_environment(node: Any, source: str, path: str = "") -> Any:
    """Replace ${VAR} / ${VAR:-default} in strings; an unset VAR without a default is an error."""
    if isinstance(node, dict):
        return {
            k: expand_environment(v, source, f"{path}.{k}" if path else str(k))
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [expand_environment(v, source, f"{path}[{i}]") for i, v in enumerate(node)]
    if not isinstance(node, str):
        return node

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        value = os.environ.get(name) or default
        if value is None:
            raise ConfigError(
                f"{source}: key '{path}': environment variable {name} is not set "
                f"(the value is {node!r})"
            )
        return value

    return ENV_REFERENCE.sub(substitute, node)
