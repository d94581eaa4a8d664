"""The project as the emr backend uploads it: the files git sees (tracked, and untracked but not
ignored; .gitignore's patterns where there is no git), packed into one archive."""

from __future__ import annotations

import subprocess
import tarfile
from pathlib import Path


def project_files(root: Path) -> list[Path]:
    """The files of the project as git sees it: tracked, and untracked but not ignored."""
    try:
        git = ["git", "-C", str(root), "ls-files", "-z", "--cached", "--others"]
        listed = subprocess.run(
            [*git, "--exclude-standard"], capture_output=True, check=True, timeout=60
        ).stdout.decode()
        names = [name for name in listed.split("\0") if name]
    except (OSError, subprocess.SubprocessError):
        names = _without_ignored(root)
    return sorted(root / name for name in set(names) if (root / name).is_file())


def _without_ignored(root: Path) -> list[str]:
    """No git (a copy without .git): every file that .gitignore's patterns do not exclude."""
    import pathspec

    ignore = root / ".gitignore"
    lines = ignore.read_text().splitlines() if ignore.is_file() else []
    spec = pathspec.GitIgnoreSpec.from_lines([".git/", *lines])
    return [
        str(path.relative_to(root))
        for path in root.rglob("*")
        if path.is_file() and not spec.match_file(str(path.relative_to(root)))
    ]


def package(root: Path, archive: Path) -> int:
    """``root``'s project files into a .tar.gz; returns how many."""
    files = project_files(root)
    with tarfile.open(archive, "w:gz") as tar:
        for path in files:
            tar.add(path, arcname=str(path.relative_to(root)), recursive=False)
    return len(files)
