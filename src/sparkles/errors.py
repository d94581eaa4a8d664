"""The errors whose message tells the user what to do: ``sparkles`` prints them in one line,
without a traceback (``cli.main`` catches ``UserError`` by type). A leaf module."""

from __future__ import annotations

import re
from typing import Any


class UserError(Exception):
    """Something the user can fix, said in a message that names what and how."""


class ConfigError(UserError, ValueError):
    """A profile that cannot be used; the message names the file and the key."""


class StorageError(UserError, OSError):
    """A file system refused a read or write: the path and the cause, not a Java trace."""


# The cause of a Java file-system failure inside a Py4J/Spark error's text: the innermost
# exception of java.io/java.nio/Hadoop's fs packages (FSError wraps the disk's own IOException).
_JAVA_FS_CAUSE = re.compile(
    r"(?:java\.io\.|java\.nio\.file\.|org\.apache\.hadoop\.fs\.)"
    r"(?:[A-Za-z]+Exception|FSError)(?::\s*(?:java\.io\.IOException:\s*)?([^\n\r]*))?"
)


def file_system_cause(error: BaseException) -> str | None:
    """What the file system said, if ``error`` is a Java file-system failure (else None)."""
    found = [m for m in _JAVA_FS_CAUSE.finditer(str(error))]
    if not found:
        return None
    innermost = found[-1]
    name = innermost.group(0).split(":", 1)[0].rsplit(".", 1)[-1]
    detail = (innermost.group(1) or "").strip()
    return f"{detail} ({name})" if detail else name


def describe(error: Any, source: str, section: str = "") -> str:
    """A pydantic ``ValidationError`` as one line per key, named from the profile's top
    (``section``: the dotted key of the section that was validated)."""
    lines = []
    for item in error.errors():
        dotted = ".".join([*([section] if section else []), *map(str, item["loc"])])
        dotted = dotted or "(top level)"
        if item["type"] == "extra_forbidden":
            lines.append(f"{source}: unknown key '{dotted}'")
        elif item["type"] == "missing":
            lines.append(f"{source}: missing required key '{dotted}'")
        elif "credentials" in item["msg"]:  # never repeat a secret in an error message
            lines.append(f"{source}: key '{dotted}': {item['msg']}")
        else:
            lines.append(f"{source}: key '{dotted}': {item['msg']} (got {item['input']!r})")
    return "\n".join(lines)
