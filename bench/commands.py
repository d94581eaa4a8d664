"""Benchmark: what each command costs as a user runs it — a cold process on the sample.

Into a scratch store, on the local profile (the bundled sample; --set to change it): `init`,
`featurize` (first: the CNN runs), `featurize` again (nothing new), `train`, `tune --max-evals 4`,
`promote`, `predict`, and `mlflow run . -e train`. For each: wall seconds; from its log, the
seconds to Spark up, to the first line of the command's own work, the fit, and the model
logging; from its run's `spark.*` metrics (sparkles.observe), its Spark jobs, the seconds one
ran and the driver's alone, what they read (all input, cached blocks included, and image files:
the `binaryFile` scans); its event log's size; artifact bytes the command wrote. Then (with
--scale K) `train` again on K times the images.

With --map: where the seconds of `featurize` (nothing new), `train` and `tune --max-evals 4`
go: before the run (interpreter, imports, JVM), in it with a Spark job running and without,
after it; and per step of `spark/stages.csv` its jobs and seconds (docs/performance.md).

With --ratios N: each command's ratio to a bare Spark start (a Python process that imports
pyspark, starts a local[2] SparkSession, runs one query and stops), the two measured
alternately: N rounds of (bare, featurize nothing new, bare, train, bare, tune --max-evals 4);
medians of each and of each command's ratio to the bare run just before it (issue #47's
targets: featurize nothing new <= 1.5, train <= 2.0, tune <= 2.5).

With --overhead N: what observing costs (event log, executor memory sampling, the end-of-run
summary, plans, system metrics): `featurize` (nothing new), `train` and `tune --max-evals 4`,
N rounds each with `observe.enabled` true and false, alternating which goes first; the median
wall seconds of each and their ratio.

    python bench/commands.py
    python bench/commands.py --set featurizer.model=MobileNetV2 --scale 10
    python bench/commands.py --map
    python bench/commands.py --overhead 3
    python bench/commands.py --ratios 3
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from statistics import median

import psutil

ROOT = Path(__file__).resolve().parent.parent
STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO ([\w.]+): (.*)$")


def _busy() -> float:
    """CPU seconds the whole machine has spent busy (every process: the JVM, Python workers)."""
    times = psutil.cpu_times()
    return times.user + times.nice + times.system


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.exists() else 0


def _lines(stderr: str) -> list[tuple[float, str, str]]:
    """(unix time, logger, message) of every log line."""
    found = []
    for line in stderr.splitlines():
        match = STAMP.match(line)
        if match:
            stamp = datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S,%f").timestamp()
            found.append((stamp, match[2], match[3]))
    return found


def _first(lines: list[tuple[float, str, str]], text: str, start: float) -> float | None:
    return next((t - start for t, _, message in lines if text in message), None)


def _spark_work(tracking: str, since: float) -> dict[str, float]:
    """The ``spark.*`` metrics of the newest top-level run started after ``since``, and its
    attached event log's size (MB)."""
    import mlflow

    client = mlflow.MlflowClient(tracking)
    runs = client.search_runs(
        [e.experiment_id for e in client.search_experiments()],
        filter_string=f"attributes.start_time >= {int(since * 1000)}",
        order_by=["attributes.start_time DESC"],
    )
    top = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    if not top:
        return {}
    run, folder = top[0], "spark/eventlog"
    sizes = [
        f.file_size or 0
        for d in client.list_artifacts(run.info.run_id, folder)
        for f in (client.list_artifacts(run.info.run_id, d.path) if d.is_dir else [d])
    ]
    return {**run.data.metrics, "event_log_mb": sum(sizes) / 1e6, "run_id": run.info.run_id}


def run(name: str, argv: list[str], artifacts: Path, env: dict[str, str]) -> dict:
    """One cold process; its figures from the clock, its log, its run and the artifacts."""
    artifacts_before = _size(artifacts)
    busy_before, started = _busy(), time.time()
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600)
    wall, cpu = time.time() - started, _busy() - busy_before
    if done.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{done.stderr[-3000:]}")
    lines = _lines(done.stderr)
    spark_up = _first(lines, "Spark ", started) if lines else None
    setup = ("py4j", "sparkles.session", "mlflow")  # loggers of start-up, not the command's work
    own = next((t - started for t, logger, _ in lines if not logger.startswith(setup)), None)
    fit = re.search(r"fitted in ([\d.]+) s", done.stderr)
    logging_from = _first(lines, "logging the model", started)
    logged_at = _first(lines, "accuracy ", started)
    spark = _spark_work(env["MLFLOW_TRACKING_URI"], started)
    return {
        "command": name,
        "wall_s": wall,
        "cpu_s": cpu,
        "spark_up_s": spark_up,
        "first_own_line_s": own,
        "fit_s": float(fit[1]) if fit else None,
        "model_logging_s": (logged_at - logging_from) if logging_from and logged_at else None,
        "jobs": spark.get("spark.jobs"),
        "job_s": spark.get("spark.job_seconds"),
        "driver_only_s": spark.get("spark.driver_only_seconds"),
        "read_mb": _mb(spark.get("spark.input_bytes")),
        "image_mb": _mb(spark.get("spark.image_bytes_read")),
        "event_log_mb": spark.get("event_log_mb"),
        "artifact_mb": (_size(artifacts) - artifacts_before) / 1e6,
        "spark": spark,
    }


def _mb(value: float | None) -> float | None:
    return None if value is None else value / 1e6


def _cell(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--scale", type=int, default=0, help="train again on K× the images")
    parser.add_argument("--map", action="store_true", help="where each command's seconds go")
    parser.add_argument(
        "--overhead", type=int, default=0, metavar="N", help="N rounds of observe on vs off instead"
    )
    parser.add_argument(
        "--ratios", type=int, default=0, metavar="N", help="N rounds against a bare Spark start"
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sparkles-bench-commands-"))
    tracking = f"sqlite:///{work / 'mlruns.db'}"
    settings = [
        f"mlflow.artifact_location={work / 'artifacts'}",
        f"store.dir={work / 'cache'}",
        f"data.labels_csv={work / 'data/labels.csv'}",
        f"data.classes_csv={work / 'data/classes.csv'}",
        f"data.images={work / 'data/images'}",
        f"observe.event_log={work / 'spark-events'}",
        *args.overrides,
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(MLFLOW_TRACKING_URI=tracking, MLFLOW_EXPERIMENT_NAME="sparkles")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    sets = [item for setting in settings for item in ("--set", setting)]
    sparkles = [sys.executable, "-m", "sparkles.cli"]
    from sparkles.config import load_profile

    images = load_profile("local", settings).data.images  # the sample's, or --set data.images
    overrides = f"overrides={' '.join(settings)}"
    steps = [
        ("init", [*sparkles, "init", *sets]),
        ("featurize (first)", [*sparkles, "featurize", *sets]),
        ("featurize (nothing new)", [*sparkles, "featurize", *sets]),
        ("train", [*sparkles, "train", *sets]),
        ("tune --max-evals 4", [*sparkles, "tune", "--max-evals", "4", *sets]),
        ("promote", [*sparkles, "promote", *sets]),
        (
            "predict",
            [
                *sparkles,
                "predict",
                "--images",
                images,
                "--output",
                str(work / "predictions"),
                *sets,
            ],
        ),
        (
            "mlflow run -e train",
            [
                sys.executable,
                "-m",
                "mlflow",
                "run",
                ".",
                "-e",
                "train",
                "--env-manager",
                "local",
                "-P",
                overrides,
            ],
        ),
    ]
    if args.overhead:
        return overhead(args.overhead, steps[:5], work, env)
    if args.ratios:
        return ratios(args.ratios, steps[:5], work, env)
    if args.map:
        return where_time_goes(steps[:5], work, env)
    if args.scale > 1:
        base = load_profile("local", settings).data.sample.images
        scaled = [s.replace(str(work), str(work / "scaled")) for s in settings[1:]]
        scaled.append(f"data.sample.images={base * args.scale}")
        scaled_sets = [item for setting in scaled for item in ("--set", setting)]
        steps += [
            (f"featurize ({args.scale}x images)", [*sparkles, "featurize", *scaled_sets]),
            (f"train ({args.scale}x images)", [*sparkles, "train", *scaled_sets]),
        ]
    print(f"{os.cpu_count()} cores; scratch store {work}\n")
    print(
        "| command | wall s | to Spark up s | to own first line s | fit s | model logging s "
        "| Spark jobs | s with a job running | s driver only | Spark read MB "
        "| of it images MB | event log MB | artifacts MB |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, argv in steps:
        m = run(name, argv, work / "artifacts", env)  # the experiment's, for every command
        print(
            f"| {name} | {m['wall_s']:.1f} | {_cell(m['spark_up_s'])} | "
            f"{_cell(m['first_own_line_s'])} | {_cell(m['fit_s'])} | "
            f"{_cell(m['model_logging_s'])} | {_cell(m['jobs'], 0)} | {_cell(m['job_s'])} | "
            f"{_cell(m['driver_only_s'])} | {_cell(m['read_mb'], 2)} | "
            f"{_cell(m['image_mb'], 2)} | {_cell(m['event_log_mb'], 2)} | "
            f"{m['artifact_mb']:.2f} |",
            flush=True,
        )


def overhead(rounds: int, steps: list[tuple[str, list[str]]], work: Path, env: dict) -> None:
    """init and the first featurize once, then each measured command ``rounds`` times with
    observing on and off, the order alternating per round (a drift in the machine hits both)."""
    for name, argv in steps[:2]:
        run(name, argv, work / "artifacts", env)
    off = ["--set", "observe.enabled=false"]
    walls: dict[tuple[str, str], list[float]] = {}
    cpus: dict[tuple[str, str], list[float]] = {}
    for index in range(rounds):
        for mode in ("on", "off") if index % 2 == 0 else ("off", "on"):
            for name, argv in steps[2:]:
                measured = run(name, argv + (off if mode == "off" else []), work / "artifacts", env)
                walls.setdefault((name, mode), []).append(measured["wall_s"])
                cpus.setdefault((name, mode), []).append(measured["cpu_s"])
                print(
                    f"round {index + 1} {mode:>3}: {name} {measured['wall_s']:.1f} s, "
                    f"{measured['cpu_s']:.1f} CPU s",
                    flush=True,
                )
    print(f"\n{os.cpu_count()} cores, {rounds} rounds: medians (CPU: the machine's busy seconds)\n")
    print("| command | wall on | wall off | on / off | CPU on | CPU off | on / off |")
    print("|---|---|---|---|---|---|---|")
    for name, _ in steps[2:]:
        on, off_s = median(walls[(name, "on")]), median(walls[(name, "off")])
        cpu_on, cpu_off = median(cpus[(name, "on")]), median(cpus[(name, "off")])
        print(
            f"| {name} | {on:.1f} | {off_s:.1f} | {on / off_s:.3f} | {cpu_on:.1f} | "
            f"{cpu_off:.1f} | {cpu_on / cpu_off:.3f} |"
        )


BARE = """
from pyspark.sql import SparkSession
spark = SparkSession.builder.master("local[2]").config("spark.ui.enabled", "false").getOrCreate()
spark.range(1000).selectExpr("sum(id)").collect()
spark.stop()
"""


def _bare(env: dict) -> float:
    started = time.time()
    subprocess.run(
        [sys.executable, "-c", BARE],
        cwd=ROOT,
        env=env,
        check=True,
        timeout=600,
        capture_output=True,
    )
    return time.time() - started


def ratios(rounds: int, steps: list[tuple[str, list[str]]], work: Path, env: dict) -> None:
    """init and the first featurize once; then per round, before each measured command, a bare
    Spark start, so a drift in the machine's speed hits both sides of each ratio alike."""
    for name, argv in steps[:2]:
        run(name, argv, work / "artifacts", env)
    measured: dict[str, list[tuple[float, float]]] = {}
    for index in range(rounds):
        for name, argv in steps[2:]:
            bare = _bare(env)
            wall = run(name, argv, work / "artifacts", env)["wall_s"]
            measured.setdefault(name, []).append((bare, wall))
            print(f"round {index + 1}: bare {bare:.1f} s, {name} {wall:.1f} s", flush=True)
    print(f"\n{os.cpu_count()} cores, {rounds} rounds: medians\n")
    print("| command | bare Spark start s | command s | command / bare |")
    print("|---|---|---|---|")
    for name, pairs in measured.items():
        bare, wall = median(b for b, _ in pairs), median(w for _, w in pairs)
        ratio = median(w / b for b, w in pairs)
        print(f"| {name} | {bare:.1f} | {wall:.1f} | {ratio:.2f} |")


def where_time_goes(steps: list[tuple[str, list[str]]], work: Path, env: dict) -> None:
    """Each measured command's seconds: before its run, its run's Spark jobs and driver-only
    seconds, after it; then its stages.csv summed per step."""
    import mlflow
    import pandas as pd

    for name, argv in steps[:2]:
        run(name, argv, work / "artifacts", env)
    for name, argv in steps[2:]:
        m = run(name, argv, work / "artifacts", env)
        spark = m["spark"]
        before = m["spark_up_s"] or 0.0
        inside = spark["spark.wall_seconds"]
        print(
            f"\n### {name}: {m['wall_s']:.1f} s wall, Spark up at {before:.1f} s; its run "
            f"{inside:.1f} s = {spark['spark.job_seconds']:.1f} s with a Spark job running + "
            f"{spark['spark.driver_only_seconds']:.1f} s driver only, "
            f"{spark['spark.jobs']:.0f} jobs, {spark['spark.stages']:.0f} stages\n"
        )
        stages = pd.read_csv(
            mlflow.artifacts.download_artifacts(
                run_id=spark["run_id"],
                artifact_path="spark/stages.csv",
                tracking_uri=env["MLFLOW_TRACKING_URI"],
            ),
            keep_default_na=False,
        )
        stages["end_s"] = stages.start_s + stages.seconds
        steps_seen = stages.groupby("step", sort=False).agg(
            stages=("stage", "count"),
            stage_s=("seconds", "sum"),
            first=("start_s", "min"),
            last=("end_s", "max"),
            callers=("called_from", lambda c: len(set(c))),
        )
        print("| step | stages | stage s | from s | to s |")
        print("|---|---|---|---|---|")
        for step, row in steps_seen.iterrows():
            print(
                f"| {step or '(none)'} | {row.stages} | {row.stage_s:.2f} | {row['first']:.1f} "
                f"| {row['last']:.1f} |"
            )
        top = stages.sort_values("seconds", ascending=False).head(5)
        print(
            "\nlongest stages: "
            + "; ".join(
                f"{r.stage} {r.called_from} ({r.step}) {r.seconds:.2f} s" for r in top.itertuples()
            )
        )


if __name__ == "__main__":
    main()
