"""The file index: a featurize reads only the image files whose (path, size, mtime) it lacks.

What was read is the kernel's own record (inotify: every open of a file in the image folder),
not the project's counters.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from inotify_simple import INotify, flags

from sparkles.features.featurize import featurize
from tests.features.test_store import _features, _labelled_files, _sample


@contextmanager
def opened_files(folder: Path) -> Iterator[set[str]]:
    """Names of the files in ``folder`` that anyone opened while the block ran (filled at exit)."""
    names: set[str] = set()
    with INotify() as inotify:
        inotify.add_watch(str(folder), flags.OPEN | flags.ACCESS)
        yield names
        names.update(e.name for e in inotify.read(timeout=0) if not e.mask & flags.ISDIR)


def test_a_featurize_reads_only_the_files_the_index_lacks(spark, tmp_path: Path) -> None:
    _, profile = _sample(tmp_path)
    images = Path(profile.data.images)
    aside = tmp_path / "aside"
    aside.mkdir()
    added = _labelled_files(profile, 4)
    for file in added:
        shutil.move(file, aside / file.name)
    with opened_files(images) as opened:
        first = featurize(profile, spark)
    matched = first.counts["matched_files"]
    assert first.counts["hashed_files"] == matched == len(opened) > 0
    assert first.counts["computed"] == first.counts["rows_in"] and not first.reused

    for file in added:  # a rename keeps the modification time: the index has not seen them
        shutil.move(aside / file.name, file)
    with opened_files(images) as opened:
        second = featurize(profile, spark)
    assert opened == {file.name for file in added}
    counts = second.counts
    assert counts["hashed_files"] == counts["computed"] == counts["computed_images"] == len(added)
    assert counts["indexed_files"] == matched
    assert counts["rows_in"] == first.counts["rows_in"] + len(added) == counts["featurized"]
    before, after = _features(first), _features(second)
    assert set(after) == set(before) | {file.stem for file in added}
    assert all(np.array_equal(before[image], after[image]) for image in before)

    with opened_files(images) as opened:
        third = featurize(profile, spark)
    assert opened == set()
    assert third.counts["hashed_files"] == third.counts["computed"] == 0
    assert third.reused and third.fingerprint == second.fingerprint

    # re-timestamped: read once to learn its bytes are known, no CNN work
    touched = added[0]
    os.utime(touched, (time.time() - 7200, time.time() - 7200))
    with opened_files(images) as opened:
        fourth = featurize(profile, spark)
    assert opened == {touched.name}
    assert fourth.counts["hashed_files"] == 1 and fourth.counts["computed"] == 0
    assert fourth.fingerprint == third.fingerprint


def test_a_file_modified_as_it_is_hashed_is_read_again_until_it_settles(
    spark, tmp_path: Path
) -> None:
    """git's racy entries: a modification time not older than the hash proves nothing."""
    _, profile = _sample(tmp_path)
    featurize(profile, spark)
    racy = _labelled_files(profile, 1)[0]
    future = time.time() + 3600  # a clock ahead of ours, or a write in the same tick
    os.utime(racy, (future, future))
    for _ in range(2):
        with opened_files(racy.parent) as opened:
            result = featurize(profile, spark)
        assert opened == {racy.name}
        assert result.counts["hashed_files"] == 1 and result.counts["computed"] == 0
