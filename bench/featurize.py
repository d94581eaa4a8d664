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

    python bench/featurize.py                 # N = 128 (and 8N = 1024)
    python bench/featurize.py --n 16 --scale 2   # smoke size
    python bench/featurize.py --rows openvino:f32,openvino:int8   # some rows only
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from sparkles.runtimes import WORKER_TIMINGS_ENV, WORKER_TIMINGS_PREFIX

SEED_IMAGES = 41_620
PASS_MARK = "sparkles-bench: pass "


def generate(folder: Path, count: int) -> Path:
    """The synthetic sample at 1024×768, with sensor-like noise so that the JPEGs weigh what
    Open Images photos do (~250–350 KB; the clean drawings compress to ~70 KB and decode
    faster than real photos)."""
    from PIL import Image

    from sparkles.data.sample import generate_sample

    generate_sample(folder / "l.csv", folder / "c.csv", folder / "img", count, 11, (1024, 768))
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


def bare(images: Path, model_name: str, batch: int, runtime: str, precision: str) -> dict:
    """images/s for decode + the CNN (with its preprocessing) in this process, and the first batch's
    features (compared with bare Keras f32 by the caller)."""
    from sparkles.backbones import get_spec
    from sparkles.imaging import decode_image
    from sparkles.quantize import calibration_identity, quantized_model
    from sparkles.runtimes import compile_cnn

    spec = get_spec(model_name)
    files = sorted(images.glob("*.jpg"))
    limits = {"max_bytes": 50 << 20, "max_pixels": 89_478_485}
    quantized = None
    if precision == "int8":  # calibrated as featurize does: up to 300 of the images
        contents = [path.read_bytes() for path in files[:300]]
        identity = calibration_identity([hashlib.sha256(c).hexdigest() for c in contents])
        limit_pair = (limits["max_bytes"], limits["max_pixels"])
        quantized = str(quantized_model(spec, None, "avg", 0, contents, identity, limit_pair))
    cnn = compile_cnn(
        spec, None, "avg", 0, runtime, precision, os.cpu_count() or 0, quantized=quantized
    )

    def run(paths: list[Path]) -> np.ndarray:
        for start in range(0, len(paths), batch):
            chunk = paths[start : start + batch]
            pixels = np.stack(
                [decode_image(path.read_bytes(), spec.input_size, **limits) for path in chunk]
            )
            features = cnn(pixels.astype(np.float32))  # preprocessing: in the CNN
            if start == 0:
                first = features
        return first

    first = run(files[:batch])  # warm-up: tracing, compilation and thread pools
    started = time.perf_counter()
    run(files)
    return {"rate": len(files) / (time.perf_counter() - started), "first": first}


def sparkles_pass(folder: str, out: str, model_name: str, overrides: str) -> dict[str, float]:
    """`featurize` on the local profile, twice: cold (session start + model build + pass) and
    warm (the same again, cache refreshed). The pass alone is the CNN stage and its Parquet
    write; the whole command adds label ingest, file matching and the fingerprint."""
    from sparkles.config import load_profile
    from sparkles.session import build_session
    from sparkles.training_tables import featurize

    started = time.perf_counter()
    data = Path(folder)
    profile = load_profile(
        "local",
        [f"featurizer.model={model_name}", "featurizer.weights=random", "data.sample=null",
         f"data.labels_csv={data / 'l.csv'}", f"data.classes_csv={data / 'c.csv'}",
         f"data.images={data / 'img'}", f"cache.dir={out}", *json.loads(overrides)],
    )  # fmt: skip
    spark = build_session(profile)
    timings: dict[str, float] = {}
    for name in ("cold", "warm"):
        print(f"{PASS_MARK}{name}", file=sys.stderr, flush=True)
        result = featurize(profile, spark, refresh=True)
        rows = result.counts["rows_in"]
        timings[name] = rows / (time.perf_counter() - started)
        timings[f"{name}_pass"] = rows / result.seconds
        timings[f"{name}_pass_seconds"] = result.seconds
        started = time.perf_counter()
    spark.stop()
    return {"images": rows, **timings}


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


def peak_rss_of_pass(
    images: str, out: str, model_name: str, overrides: list[str]
) -> tuple[float, dict]:
    """Run one sparkles pass in a fresh process and sample its whole tree's RSS."""
    command = [sys.executable, __file__, "--child", images, out, model_name, json.dumps(overrides)]
    log = Path(tempfile.mkdtemp(prefix="sparkles-bench-pass-")) / "stderr.log"
    environment = {**os.environ, WORKER_TIMINGS_ENV: "1"}
    with log.open("w") as stderr:
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=stderr, text=True, env=environment
        )
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _tree_rss(process.pid))
            time.sleep(0.2)

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    output, _ = process.communicate()
    done.set()
    watcher.join()
    result = json.loads(output.strip().splitlines()[-1])
    result["warm_worker"] = warm_worker_seconds(log.read_text())
    return peak / 2**30, result


def warm_worker_seconds(stderr: str) -> dict[str, float]:
    """The Python worker's own seconds in the warm pass (its cumulative timings at the end,
    less those at the end of the cold pass): decode, CNN, and all of its UDF calls."""
    totals: dict[str, dict[str, float]] = {"cold": {}, "warm": {}}
    current = "cold"
    for line in stderr.splitlines():
        if line.startswith(PASS_MARK):
            current = line.removeprefix(PASS_MARK).strip()
        elif line.startswith(WORKER_TIMINGS_PREFIX):
            totals[current] = json.loads(line.removeprefix(WORKER_TIMINGS_PREFIX))
    cold, warm = totals["cold"], totals["warm"]
    return {key: warm.get(key, 0.0) - cold.get(key, 0.0) for key in warm}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=128, help="images for the speed runs and N")
    parser.add_argument("--scale", type=int, default=8, help="memory is compared at N and scale×N")
    parser.add_argument("--model", default="InceptionV3")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="profile override for the sparkles runs, e.g. spark.conf.spark.driver.memory=2g",
    )  # fmt: skip
    parser.add_argument(
        "--rows", default="", help="runtime:precision,... to run (default: every one that can)"
    )
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.child:
        print(json.dumps(sparkles_pass(*args.child)))
        return

    from sparkles.backbones import get_spec
    from sparkles.runtimes import PRECISIONS, RUNTIMES, cpu_has_bf16

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
    # on the scale×N images: long enough that a rate is stable (N alone swings by ±5%)
    bares = {c: bare(large / "img", args.model, args.batch_size, *c) for c in runnable}
    reference = bares[("keras", "f32")]
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
        f"{args.n * args.scale}\n"
    )
    print(
        "| runtime | precision | bare images/s | vs bare Keras f32 | max abs diff (relative) "
        f"| sparkles pass N | pass {args.scale}N | pass/bare (same runtime) | pass/bare Keras "
        "| pass/matmul-allowed "
        f"| whole command N | peak RSS N / {args.scale}N | {SEED_IMAGES:,} images |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    where: list[str] = []
    for runtime, precision in every:
        if (runtime, precision) not in runnable:
            why = "not asked for" if args.rows else "this CPU has no bf16"
            print(f"| {runtime} | {precision} | not run: {why} |" + " |" * 10)
            continue
        measured = bares[(runtime, precision)]
        diff = np.abs(measured["first"] - reference["first"]).max()
        relative = diff / np.abs(reference["first"]).max()
        overrides = [*args.overrides, f"featurizer.runtime={runtime}",
                     f"featurizer.precision={precision}"]  # fmt: skip
        rss_n, at_n = peak_rss_of_pass(str(small), str(work / "out-n"), args.model, overrides)
        rss_8n, at_8n = peak_rss_of_pass(str(large), str(work / "out-8n"), args.model, overrides)
        passed = at_8n["warm_pass"]
        print(
            f"| {runtime} | {precision} | {measured['rate']:.1f} "
            f"| {measured['rate'] / reference['rate']:.2f} | {diff:.1e} ({relative:.1e}) "
            f"| {at_n['warm_pass']:.1f} | {passed:.1f} | {passed / measured['rate']:.2f} "
            f"| {passed / reference['rate']:.2f} "
            f"| {passed / allowed:.2f} | {at_n['warm']:.1f} | {rss_n:.2f} / {rss_8n:.2f} GiB "
            f"| {SEED_IMAGES / passed / 3600:.2f} h |",
            flush=True,
        )
        worker, seconds = at_8n["warm_worker"], at_8n["warm_pass_seconds"]
        images = worker.get("images") or 1
        bare_ms = 1000 / measured["rate"]
        parts = [worker.get(k, 0.0) for k in ("decode_s", "cnn_s", "udf_s")]
        decode, cnn, udf = (1000 * v / images for v in parts)
        outside = 1000 * (seconds - parts[2]) / images
        where.append(
            f"| {runtime} | {precision} | {1000 * seconds / images:.1f} | {bare_ms:.1f} "
            f"| {decode:.1f} | {cnn:.1f} | {udf - decode - cnn:.1f} | {outside:.1f} |"
        )
    print(
        f"\nWhere the warm {args.scale}N pass spends each image (ms; worker figures from the "
        "Python worker's own clocks)\n\n| runtime | precision | pass | bare | decode | CNN "
        "| rest of the UDF call | outside the Python worker |\n|---|---|---|---|---|---|---|---|"
    )
    print("\n".join(where))
    print(
        "\n(rates in images/s, warm; a pass is the CNN stage and its Parquet write, the whole "
        "command adds label ingest, file matching and the fingerprint; RSS is the whole process "
        "tree; 2019: 4 x r5.24xlarge, 96 vCPU and 768 GB each, time not reported)"
    )


if __name__ == "__main__":
    main()
