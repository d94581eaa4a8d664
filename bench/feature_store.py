"""Benchmark: the feature store's incremental featurize, what the file index saves, a listing.

On N generated JPEGs of Open Images size (~1024×768, ~270 KB), in one Spark session (after a
warm-up featurize elsewhere, so the model's conversion and the JVM's JIT are paid already):
  first:  featurize (1 - fraction)·N images into an empty store (every file hashed);
  second: `fraction`·N images added, featurize again: only those are read, hashed and computed;
  third:  nothing added: the fixed cost (listing, the file index, joins, the table);
  rehash: nothing added, `--rehash`: every file read and hashed again (the cost of a run before
          the file index);
  listing: the listing alone (names, sizes, modification times; no byte read);
  hash:   the identity pass alone (read + sha256 in the JVM) over all N files, in MB/s.
Every run starts with the images out of the page cache, as reads from S3 would.

    python bench/feature_store.py                   # N = 600, 10 % added, InceptionV3
    python bench/feature_store.py --n 40 --model MobileNetV2   # smoke size
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from featurize import generate  # noqa: E402  (bench/featurize.py: the same images)


def evict(path: Path) -> None:
    """Drop the file's pages from the OS page cache (no root needed: POSIX_FADV_DONTNEED)."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(descriptor)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=600, help="images in all")
    parser.add_argument("--fraction", type=float, default=0.1, help="share added for the 2nd run")
    parser.add_argument("--model", default="InceptionV3")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    from pyspark.sql import functions as F

    from sparkles.config import load_profile
    from sparkles.data.images import read_contents, read_image_files
    from sparkles.features.featurize import featurize
    from sparkles.session import build_session

    work = Path(tempfile.mkdtemp(prefix="sparkles-bench-store-"))
    generate(work / "warm", 8)
    generate(work / "n", args.n)
    images = sorted((work / "n" / "img").glob("*.jpg"))
    added = images[: round(args.n * args.fraction)]
    aside = work / "aside"
    aside.mkdir()
    for path in added:
        shutil.move(path, aside / path.name)

    def profile(folder: Path, cache: str):
        return load_profile(
            "local",
            [
                f"featurizer.model={args.model}",
                "featurizer.weights=random",
                "data.sample=null",
                f"data.labels_csv={folder / 'l.csv'}",
                f"data.classes_csv={folder / 'c.csv'}",
                f"data.images={folder / 'img'}",
                f"store.dir={work / cache}",
            ],
        )

    spark = build_session(profile(work / "warm", "warm-cache"))
    featurize(profile(work / "warm", "warm-cache"), spark)  # conversion, JIT, Python workers

    runs = {}
    for name in ("first", "second", "third", "rehash"):
        if name == "second":
            for path in added:
                shutil.move(aside / path.name, path)
        for path in (work / "n" / "img").glob("*.jpg"):  # as on S3: none in the page cache
            evict(path)
        started = time.perf_counter()
        result = featurize(profile(work / "n", "cache"), spark, rehash=name == "rehash")
        runs[name] = (time.perf_counter() - started, result.counts, result.seconds)

    started = time.perf_counter()
    listed = read_image_files(spark, str(work / "n" / "img")).files
    listed.select("path", "length", "modification_time").write.format("noop").mode(
        "overwrite"
    ).save()
    listing_seconds = time.perf_counter() - started

    paths = [p.resolve().as_uri() for p in images]
    for path in images:
        evict(path)
    started = time.perf_counter()
    read_contents(spark, paths).select(F.sha2("content", 256)).write.format("noop").mode(
        "overwrite"
    ).save()
    hash_seconds = time.perf_counter() - started
    megabytes = sum(p.stat().st_size for p in images) / 1e6
    spark.stop()

    print(
        f"{args.n} JPEGs ~1024x768, {megabytes / args.n * 1e3:.0f} KB on average; "
        f"{args.model}, random weights; {os.cpu_count()} cores\n"
    )
    print(
        "| run | images in | files read | through the CNN | reused | whole command "
        "| of the first | CNN stage |"
    )
    print("|---|---|---|---|---|---|---|---|")
    first = runs["first"][0]
    for name, (seconds, counts, cnn_seconds) in runs.items():
        print(
            f"| {name} | {counts['rows_in']} | {counts['hashed_files']} | {counts['computed']} "
            f"| {counts['reused']} | {seconds:.1f} s | {seconds / first:.1%} "
            f"| {cnn_seconds:.1f} s |"
        )
    fixed = runs["third"][0]
    print(
        f"\nlisting alone: {listing_seconds:.2f} s for {args.n} files; hash pass alone: "
        f"{hash_seconds:.1f} s for {megabytes:.0f} MB = {megabytes / hash_seconds:.0f} MB/s; "
        f"a run with nothing new: {fixed:.1f} s (with --rehash: {runs['rehash'][0]:.1f} s)"
    )
    second, cnn = runs["second"][0], runs["second"][2]
    print(
        f"+{args.fraction:.0%}: {second:.1f} s = nothing-new run {fixed:.1f} s + CNN stage "
        f"{cnn:.1f} s + {second - fixed - cnn:.1f} s more (reading and hashing the new files, "
        f"their segment)"
    )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
