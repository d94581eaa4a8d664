"""Benchmark: what each command costs as a user runs it — a cold process on the sample.

Into a scratch store, on the local profile (the bundled sample; --set to change it): `init`,
`featurize` (first: the CNN runs), `featurize` again (nothing new), `train`, `tune --max-evals 4`,
`promote`, `predict`, and `mlflow run . -e train`. For each: wall seconds; from its log, the
seconds to Spark up, to the first line of the command's own work, the fit, and the model
logging; how many Spark jobs it ran and what they read (all input, cached blocks included, and
image files: the `binaryFile` scans; SPARKLES_REPORT_READS=1 makes a command log them); artifact
bytes the command wrote. Then (with --scale K) `train` again on K times the images.

    python bench/commands.py
    python bench/commands.py --set featurizer.model=MobileNetV2 --scale 10
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

ROOT = Path(__file__).resolve().parent.parent
STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO ([\w.]+): (.*)$")
READ = re.compile(r"Spark ran (\d+) jobs and read ([\d.]+) MB .*, ([\d.]+) MB of it image files")


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


def run(name: str, argv: list[str], artifacts: Path, env: dict[str, str]) -> dict:
    """One cold process; its figures from the clock, its log and the artifact folder."""
    artifacts_before = _size(artifacts)
    started = time.time()
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600)
    wall = time.time() - started
    if done.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{done.stderr[-3000:]}")
    lines = _lines(done.stderr)
    spark_up = _first(lines, "Spark ", started) if lines else None
    setup = ("py4j", "sparkles.session", "mlflow")  # loggers of start-up, not the command's work
    own = next((t - started for t, logger, _ in lines if not logger.startswith(setup)), None)
    fit = re.search(r"fitted in ([\d.]+) s", done.stderr)
    logging_from = _first(lines, "logging the model", started)
    logged_at = _first(lines, "accuracy ", started)
    read = READ.findall(done.stderr)
    return {
        "command": name,
        "wall_s": wall,
        "spark_up_s": spark_up,
        "first_own_line_s": own,
        "fit_s": float(fit[1]) if fit else None,
        "model_logging_s": (logged_at - logging_from) if logging_from and logged_at else None,
        "jobs": int(read[-1][0]) if read else None,
        "read_mb": float(read[-1][1]) if read else None,
        "image_mb": float(read[-1][2]) if read else None,
        "artifact_mb": (_size(artifacts) - artifacts_before) / 1e6,
    }


def _cell(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--scale", type=int, default=0, help="train again on K× the images")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sparkles-bench-commands-"))
    tracking = f"sqlite:///{work / 'mlruns.db'}"
    settings = [
        f"mlflow.artifact_location={work / 'artifacts'}", f"cache.dir={work / 'cache'}",
        f"data.labels_csv={work / 'data/labels.csv'}",
        f"data.classes_csv={work / 'data/classes.csv'}",
        f"data.images={work / 'data/images'}", *args.overrides,
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(MLFLOW_TRACKING_URI=tracking, MLFLOW_EXPERIMENT_NAME="sparkles")
    env["SPARKLES_REPORT_READS"] = "1"  # each command logs its Spark jobs and bytes read
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
        ("predict", [*sparkles, "predict", "--images", images,
                     "--output", str(work / "predictions"), *sets]),
        ("mlflow run -e train", [sys.executable, "-m", "mlflow", "run", ".", "-e", "train",
                                 "--env-manager", "local", "-P", overrides]),
    ]  # fmt: skip
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
    print("| command | wall s | to Spark up s | to own first line s | fit s | model logging s "
          "| Spark jobs | Spark read MB | of it images MB | artifacts MB |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, argv in steps:
        m = run(name, argv, work / "artifacts", env)  # the experiment's, for every command
        print(f"| {name} | {m['wall_s']:.1f} | {_cell(m['spark_up_s'])} | "
              f"{_cell(m['first_own_line_s'])} | {_cell(m['fit_s'])} | "
              f"{_cell(m['model_logging_s'])} | {_cell(m['jobs'], 0)} | {_cell(m['read_mb'], 2)} | "
              f"{_cell(m['image_mb'], 2)} | {m['artifact_mb']:.2f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
