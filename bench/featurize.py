"""Benchmark: featurization speed per runtime × precision, against bare Keras and the hardware.

In one run, on N generated JPEGs of Open Images size (~1024×768, real JPEG compression), for
every runtime (keras, openvino) × precision (f32, bf16 where the CPU has it; int8 on openvino,
NNCF-calibrated on the images as `featurize` does):
  bare: PIL decode + the compiled CNN (preprocess_input included), one process, all cores, and the
        largest difference of its features from bare Keras f32;
  sparkles: binaryFile → DeepImageFeaturizer → Parquet on the local profile, cold and warm;
plus the machine's dense matmul GFLOP/s (TensorFlow), the model's GFLOP per image counted from
its layers, the peak RSS of the whole process tree for N and 8N images, and the projection for
the 2019 study's 41,620 images.

pass ÷ bare is measured in rounds at 8N: a bare run (its own process), then a warm pass, again
`--repeats` times, and the median round is reported with the spread. A small VM's speed drifts
by 10–20 % over minutes; measured minutes apart, bare and pass compared that drift, not the pass.

    python bench/featurize.py                 # N = 128 (and 8N = 1024), 3 rounds
    python bench/featurize.py --n 16 --scale 2 --repeats 1   # smoke size
    python bench/featurize.py --rows openvino:f32,openvino:int8   # some rows only
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from sparkles.cnn.runtimes import WORKER_TIMINGS_ENV, WORKER_TIMINGS_PREFIX

SEED_IMAGES = 41_620
PASS_MARK = "sparkles-bench: pass "


def generate(folder: Path, count: int) -> Path:
    """The synthetic sample at 1024×768, with sensor-like noise so that the JPEGs weigh what
    Open Images photos do (~250–350 KB; the clean drawings compress to ~70 KB and decode
    faster than real photos)."""
    from PIL import Image

    from sparkles.data.sample import generate_sample

    generate_sample(
        folder / "l.csv", folder / "c.csv", folder / "img", count=count, seed=11, size=(1024, 768)
    )
    rng = np.random.default_rng(11)
    for path in sorted((folder / "img").glob("*.jpg")):
        pixels = np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)
        noisy = pixels + rng.normal(0, 10, pixels.shape).astype(np.int16)
        Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(path, quality=90)
    return folder / "img"


def model_gflop(model) -> float:
    """Multiply-adds ×2 of every Conv2D, DepthwiseConv2D and Dense layer, per image."""
    import keras

    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            _, h, w, c = layer.output.shape
            kh, kw = layer.kernel_size
            total += 2 * h * w * kh * kw * c
        elif isinstance(layer, keras.layers.Conv2D):
            _, h, w, c_out = layer.output.shape
            kh, kw = layer.kernel_size
            c_in = layer.input.shape[-1]
            total += 2 * h * w * kh * kw * c_in * c_out // layer.groups
        elif isinstance(layer, keras.layers.Dense):
            total += 2 * layer.input.shape[-1] * layer.units
    return total / 1e9


def matmul_gflops(size: int = 2048, repeats: int = 20) -> float:
    import tensorflow as tf

    a = tf.random.normal((size, size))
    b = tf.random.normal((size, size))
    tf.linalg.matmul(a, b).numpy()
    started = time.perf_counter()
    for _ in range(repeats):
        c = tf.linalg.matmul(a, b)
    c.numpy()
    return 2 * size**3 * repeats / (time.perf_counter() - started) / 1e9


def bare(
    images: Path, model_name: str, batch: int, runtime: str, precision: str, budget: float = 0
) -> dict:
    """images/s for decode + the CNN (with its preprocessing) in this process, and the first batch's
    features (compared with bare Keras f32 by the caller). ``budget``: stop after the batch that
    passes this many seconds (a steady loop's rate; keeps the caller's Spark worker alive)."""
    from sparkles.cnn.backbones import get_spec
    from sparkles.cnn.imaging import decode_image
    from sparkles.cnn.quantize import calibration_identity, quantized_model
    from sparkles.cnn.runtimes import compile_cnn
    from sparkles.cnn.settings import CnnSettings

    spec = get_spec(model_name)
    files = sorted(images.glob("*.jpg"))
    limits = {"max_bytes": 50 << 20, "max_pixels": 89_478_485}
    quantized = None
    if precision == "int8":  # calibrated as featurize does: up to 300 of the images
        contents = [path.read_bytes() for path in files[:300]]
        identity = calibration_identity([hashlib.sha256(c).hexdigest() for c in contents])
        limit_pair = (limits["max_bytes"], limits["max_pixels"])
        quantized = str(
            quantized_model(
                spec,
                None,
                pooling="avg",
                seed=0,
                contents=contents,
                identity=identity,
                limits=limit_pair,
            )
        )
    settings = CnnSettings(model=model_name, runtime=runtime, precision=precision)
    cnn = compile_cnn(
        spec, settings, weights=None, threads=os.cpu_count() or 0, quantized=quantized
    )

    def run(paths: list[Path], deadline: float = float("inf")) -> tuple[np.ndarray, int]:
        for start in range(0, len(paths), batch):
            chunk = paths[start : start + batch]
            pixels = np.stack(
                [decode_image(path.read_bytes(), spec.input_size, **limits) for path in chunk]
            )
            features = cnn(pixels.astype(np.float32))  # preprocessing: in the CNN
            if start == 0:
                first = features
            if time.perf_counter() > deadline:
                break
        return first, start + len(chunk)

    first, _ = run(files[:batch])  # warm-up: tracing, compilation and thread pools
    started = time.perf_counter()
    _, done = run(files, started + budget if budget else float("inf"))
    return {"rate": done / (time.perf_counter() - started), "first": first}


def bare_in_child(
    images: str, model_name: str, batch: int, runtime: str, precision: str, out: str
) -> float:
    """``bare`` in a process of its own (the pass's driver holds no second model), at most 30 s
    of images: with its start it stays under the minute after which Spark stops an idle Python
    worker, so the next warm pass keeps its worker, as a pass right after another does."""
    command = [
        sys.executable,
        __file__,
        "--bare-child",
        images,
        model_name,
        str(batch),
        runtime,
        precision,
        out,
    ]
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True)
    return float(done.stdout.strip().splitlines()[-1])


def sparkles_pass(folder: str, out: str, model_name: str, overrides: str, rounds: str) -> dict:
    """`featurize` on the local profile: cold (model build + pass), then
    ``rounds`` warm ones (the same again, cache refreshed), each after a bare run of the same
    runtime × precision if ``rounds`` says so ("3+bare"). The pass alone is the CNN stage and
    its Parquet write; the whole command adds label ingest, file matching and the fingerprint.
    Peak RSS of this process tree is sampled during the passes only."""
    from sparkles.config import load_profile
    from sparkles.features.featurize import featurize
    from sparkles.session import build_session

    data = Path(folder)
    settings = [
        f"featurizer.model={model_name}",
        "featurizer.weights=random",
        "data.sample=null",
        f"data.labels_csv={data / 'l.csv'}",
        f"data.classes_csv={data / 'c.csv'}",
        f"data.images={data / 'img'}",
        f"store.dir={out}",
        *json.loads(overrides),
    ]
    profile = load_profile("local", settings)
    runtime, precision = profile.featurizer.runtime, profile.featurizer.precision
    count, with_bare = int(rounds.split("+")[0]), rounds.endswith("+bare")
    spark = build_session(profile)
    passes: list[dict] = []
    features = str(Path(out) / f"bare-{runtime}-{precision}.npy")
    args = (str(data / "img"), model_name, profile.featurizer.batch_size, runtime, precision)
    if with_bare and precision == "int8":
        bare_in_child(*args, features)  # quantizes once: a round's bare must not wait for NNCF
    for name in ["cold", *(f"warm{i}" for i in range(count))]:
        bare_rate = bare_in_child(*args, features) if with_bare and name != "cold" else None
        print(f"{PASS_MARK}{name}", file=sys.stderr, flush=True)
        started = time.perf_counter()
        peak = RssPeak(os.getpid())
        with peak.sampling():
            result = featurize(profile, spark, refresh=True)
        rows = result.counts["rows_in"]
        passes.append(
            {
                "name": name,
                "command": rows / (time.perf_counter() - started),
                "pass": rows / result.seconds,
                "pass_seconds": result.seconds,
                "bare": bare_rate,
                "peak_rss": peak.peak,
            }
        )
    spark.stop()
    return {"images": rows, "passes": passes, "peak_rss": max(p["peak_rss"] for p in passes)}


def _tree_rss(pid: int) -> int:
    """Resident memory of a process and all its descendants, in bytes (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        stack += children.get(current, [])
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


class RssPeak:
    """The peak resident memory of a process tree, sampled every 0.2 s while ``sampling``."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak = pid, 0

    @contextmanager
    def sampling(self) -> Iterator[None]:
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                self.peak = max(self.peak, _tree_rss(self.pid))
                time.sleep(0.2)

        watcher = threading.Thread(target=sample, daemon=True)
        watcher.start()
        try:
            yield
        finally:
            done.set()
            watcher.join()


def run_passes(images: str, out: str, model_name: str, overrides: list[str], rounds: str) -> dict:
    """``sparkles_pass`` in a fresh process (a fresh JVM), with the Python worker's timings."""
    command = [
        sys.executable,
        __file__,
        "--child",
        images,
        out,
        model_name,
        json.dumps(overrides),
        rounds,
    ]
    log = Path(tempfile.mkdtemp(prefix="sparkles-bench-pass-")) / "stderr.log"
    environment = {**os.environ, WORKER_TIMINGS_ENV: "1"}
    with log.open("w") as stderr:
        done = subprocess.run(
            command, stdout=subprocess.PIPE, stderr=stderr, text=True, env=environment
        )
    if done.returncode:
        raise RuntimeError(f"the sparkles pass failed: see {log}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    workers = worker_seconds(log.read_text())
    for each in result["passes"]:
        each["worker"] = workers.get(each["name"], {})
    return result


def worker_seconds(stderr: str) -> dict[str, dict[str, float]]:
    """Each pass's Python worker seconds (decode, CNN, all of its UDF calls): the worker prints
    cumulative timings, so a pass's are its last line less the pass before's (from zero where a
    new worker started)."""
    last: dict[str, dict[str, float]] = {}
    current = None
    for line in stderr.splitlines():
        if line.startswith(PASS_MARK):
            current = line.removeprefix(PASS_MARK).strip()
        elif line.startswith(WORKER_TIMINGS_PREFIX) and current:
            last[current] = json.loads(line.removeprefix(WORKER_TIMINGS_PREFIX))
    per_pass, before = {}, {}
    for name, totals in last.items():
        if totals.get("images", 0) < before.get("images", 0):
            before = {}  # a new worker: its counters start at zero
        per_pass[name] = {key: value - before.get(key, 0.0) for key, value in totals.items()}
        before = totals
    return per_pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=128, help="images for the speed runs and N")
    parser.add_argument("--scale", type=int, default=8, help="memory is compared at N and scale×N")
    parser.add_argument("--repeats", type=int, default=3, help="bare/pass rounds at scale×N")
    parser.add_argument("--model", default="InceptionV3")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="profile override for the sparkles runs, e.g. spark.conf.spark.driver.memory=2g",
    )
    parser.add_argument(
        "--rows", default="", help="runtime:precision,... to run (default: every one that can)"
    )
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    parser.add_argument("--bare-child", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.child:
        print(json.dumps(sparkles_pass(*args.child)))
        return
    if args.bare_child:
        images, model_name, batch, runtime, precision, out = args.bare_child
        measured = bare(Path(images), model_name, int(batch), runtime, precision, budget=30)
        np.save(out, measured["first"])
        print(measured["rate"])
        return

    from sparkles.cnn.backbones import get_spec
    from sparkles.cnn.runtimes import PRECISIONS, RUNTIMES, cpu_has_bf16

    work = Path(tempfile.mkdtemp(prefix="sparkles-bench-featurize-"))
    small, large = work / "n", work / "scaled"
    generate(small, args.n)
    generate(large, args.n * args.scale)
    mean_kb = np.mean([p.stat().st_size for p in (small / "img").glob("*.jpg")]) / 1e3
    gflops_hw = matmul_gflops()
    gflop = model_gflop(get_spec(args.model).build(None, "avg"))
    allowed = gflops_hw / gflop
    every = [(r, p) for r in RUNTIMES for p in PRECISIONS if p != "int8" or r == "openvino"]
    runnable = [(r, p) for r, p in every if p != "bf16" or cpu_has_bf16()]
    if args.rows:
        chosen = {tuple(row.split(":")) for row in args.rows.split(",")}
        runnable = [row for row in runnable if row in chosen | {("keras", "f32")}]
    print(
        f"machine: {os.cpu_count()} cores; TF matmul {gflops_hw:.0f} GFLOP/s; bf16 instructions: "
        f"{'yes' if cpu_has_bf16() else 'no (bf16 rows not run)'}"
    )
    print(
        f"model: {args.model}, random weights, {gflop:.2f} GFLOP/image (from its layers); "
        f"matmul allows {allowed:.1f} images/s"
    )
    print(
        f"N: {args.n} JPEGs ~1024x768 ({mean_kb:.0f} KB on average); {args.scale}N = "
        f"{args.n * args.scale}; {args.repeats} bare/pass rounds at {args.scale}N\n"
    )
    print(
        "| runtime | precision | bare images/s | vs bare Keras f32 | max abs diff (relative) "
        f"| sparkles pass N | pass {args.scale}N | pass/bare (same runtime; rounds' range) "
        "| pass/bare Keras | pass/matmul-allowed "
        f"| whole command N | peak RSS N / {args.scale}N (all {args.scale}N rounds) "
        f"| {SEED_IMAGES:,} images |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    where: list[str] = []
    reference: dict = {}  # bare Keras f32: the first row
    for runtime, precision in every:
        if (runtime, precision) not in runnable:
            why = "not asked for" if args.rows else "this CPU has no bf16"
            print(f"| {runtime} | {precision} | not run: {why} |" + " |" * 10)
            continue
        overrides = [
            *args.overrides,
            f"featurizer.runtime={runtime}",
            f"featurizer.precision={precision}",
        ]
        at_n = run_passes(str(small), str(work / "out-n"), args.model, overrides, "1")
        rounds = f"{args.repeats}+bare"
        at_8n = run_passes(str(large), str(work / "out-8n"), args.model, overrides, rounds)
        warm = sorted(at_8n["passes"][1:], key=lambda each: each["pass"] / each["bare"])
        median = warm[len(warm) // 2]  # the median round (the upper one of an even count)
        ratios = [each["pass"] / each["bare"] for each in warm]
        bare_rate = statistics.median(each["bare"] for each in warm)
        passed = statistics.median(each["pass"] for each in warm)
        # as at N: the cold pass and one warm one (the JVM's heap grows over more passes)
        first_two = max(each["peak_rss"] for each in at_8n["passes"][:2])
        first = np.load(work / "out-8n" / f"bare-{runtime}-{precision}.npy")
        reference = reference or {"rate": bare_rate, "first": first}
        diff = np.abs(first - reference["first"]).max()
        relative = diff / np.abs(reference["first"]).max()
        print(
            f"| {runtime} | {precision} | {bare_rate:.1f} "
            f"| {bare_rate / reference['rate']:.2f} | {diff:.1e} ({relative:.1e}) "
            f"| {at_n['passes'][1]['pass']:.1f} | {passed:.1f} "
            f"| **{statistics.median(ratios):.2f}** ({ratios[0]:.2f}–{ratios[-1]:.2f}) "
            f"| {passed / reference['rate']:.2f} "
            f"| {passed / allowed:.2f} | {at_n['passes'][1]['command']:.1f} "
            f"| {at_n['peak_rss'] / 2**30:.2f} / {first_two / 2**30:.2f} "
            f"({at_8n['peak_rss'] / 2**30:.2f}) GiB "
            f"| {SEED_IMAGES / passed / 3600:.2f} h |",
            flush=True,
        )
        worker, seconds = median["worker"], median["pass_seconds"]
        images = worker.get("images") or 1
        parts = [worker.get(k, 0.0) for k in ("decode_s", "cnn_s", "udf_s")]
        decode, cnn, udf = (1000 * v / images for v in parts)
        outside = 1000 * (seconds - parts[2]) / images
        where.append(
            f"| {runtime} | {precision} | {1000 * seconds / images:.1f} "
            f"| {1000 / median['bare']:.1f} "
            f"| {decode:.1f} | {cnn:.1f} | {udf - decode - cnn:.1f} | {outside:.1f} |"
        )
    print(
        f"\nWhere the median round's warm {args.scale}N pass spends each image (ms; worker figures "
        "from the Python worker's own clocks)\n\n| runtime | precision | pass | bare | decode "
        "| CNN | rest of the UDF call | outside the Python worker |\n" + "|---" * 8 + "|"
    )
    print("\n".join(where))
    print(
        "\n(rates in images/s, warm; a pass is the CNN stage and its Parquet write, the whole "
        "command adds label ingest, file matching and the fingerprint; RSS is the whole process "
        "tree during the passes; 2019: 4 x r5.24xlarge, 96 vCPU and 768 GB each, time not "
        "reported)"
    )


if __name__ == "__main__":
    main()
