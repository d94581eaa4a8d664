"""Benchmark: serving latency and throughput, the logged model's JVM-free `python_function`
flavour vs its Spark flavour, each served by `mlflow models serve --env-manager local` on loopback
in turn (the Spark one from a local copy of the model whose pyfunc flavour is pointed back at
MLflow's own Spark loader, `mlflow.spark`, as models logged before the one-model layout had it).

Trains one `main` run on the local profile (the bundled sample, InceptionV3 by default) into a
scratch tracking store, then for each flavour: start the server, time to ready, a warm-up
request, single-image latency (p50, p95 over --requests requests) and images/s at batch 32.

    python bench/serving.py
    python bench/serving.py --set featurizer.model=MobileNetV2 --requests 20

``--load N`` serves only the JVM-free flavour and runs a bounded load test instead: 4 client
threads send N requests in all (batches of 1, 8 and 32, a quarter of the images hostile: a
truncated JPEG, text, no bytes, a decompression bomb, a file over ``featurizer.max_file_mb``:
set it low, ``--set featurizer.max_file_mb=2``, to keep that request small),
check every answer (200, one row per image, a reason on each hostile row and none on a real
one) and sample the server's memory (RSS of its process tree) twice a second; it prints
p50/p95/p99 per batch size, the HTTP errors, and RSS at the start, the end and its peak.

    python bench/serving.py --load 300 --set featurizer.model=MobileNetV2
"""

from __future__ import annotations

import argparse
import base64
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import requests


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _body(paths: list[Path]) -> dict:
    rows = [[str(p), base64.b64encode(p.read_bytes()).decode()] for p in paths]
    return {"dataframe_split": {"columns": ["path", "content"], "data": rows}}


def measure(model_uri: str, tracking_uri: str, images: list[Path], repeats: int) -> dict:
    port = _free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    started = time.perf_counter()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "models",
            "serve",
            "-m",
            model_uri,
            "--env-manager",
            "local",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"the server for {model_uri} exited")
            try:
                if requests.get(f"{url}/ping", timeout=5).status_code == 200:
                    break
            except requests.ConnectionError:
                time.sleep(0.5)
        ready = time.perf_counter() - started

        def post(paths: list[Path]) -> float:
            begun = time.perf_counter()
            answer = requests.post(f"{url}/invocations", json=_body(paths), timeout=600)
            answer.raise_for_status()
            return time.perf_counter() - begun

        first = post(images[:1])
        single = [post([images[i % len(images)]]) for i in range(repeats)]
        batch = images[:32]
        post(batch)  # a second batch size: Keras traces once more
        batches = [post(batch) for _ in range(3)]
        return {
            "ready_s": ready,
            "first_s": first,
            "p50_ms": 1000 * float(np.percentile(single, 50)),
            "p95_ms": 1000 * float(np.percentile(single, 95)),
            "images_per_s": len(batch) / float(np.median(batches)),
        }
    finally:
        server.terminate()
        server.wait(timeout=60)


CLIENTS = 4
BATCH_SIZES = (1, 8, 32)


def _hostile(real_jpeg: Path, folder: Path, max_mb: float) -> dict[str, Path]:
    """Payloads a public endpoint gets, written into ``folder`` (scratch, never beside the
    user's images): each must come back as a row with a reason."""
    from PIL import Image

    real = real_jpeg.read_bytes()
    made = {
        "truncated": real[: len(real) // 2],
        "text": b"these are not pixels",
        "empty": b"",
        "too_large": os.urandom(int(max_mb * 2**20) + 1024),
    }
    bomb = folder / "bomb.png"
    Image.new("1", (12_000, 12_000)).save(bomb)  # 144 Mpx, ~20 KB of PNG
    made["bomb"] = bomb.read_bytes()
    paths = {}
    for name, data in made.items():
        paths[name] = folder / f"hostile-{name}.bin"
        paths[name].write_bytes(data)
    return paths


def _tree_rss(pid: int) -> int:
    import psutil

    root = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])


def load(
    model_uri: str,
    tracking_uri: str,
    images: list[Path],
    requests_total: int,
    max_mb: float,
    work: Path,
) -> dict:
    """The bounded load test of ``--load``."""
    import random
    import threading
    from concurrent.futures import ThreadPoolExecutor

    hostile = list(_hostile(images[0], work, max_mb).values())
    rng = random.Random(0)
    plan = []
    for number in range(requests_total):
        size = BATCH_SIZES[number % len(BATCH_SIZES)]
        paths = [
            rng.choice(hostile) if rng.random() < 0.25 else rng.choice(images) for _ in range(size)
        ]
        plan.append(paths)
    port = _free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "models",
            "serve",
            "-m",
            model_uri,
            "--env-manager",
            "local",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    memory: list[int] = []
    stop = threading.Event()
    try:
        while not _up(url):
            if server.poll() is not None:
                raise RuntimeError("the server exited before it was ready")
            time.sleep(0.5)
        for size in BATCH_SIZES:  # warm-up: each batch size once, every hostile payload in it
            warm = [*hostile, *images][:size] if size > len(hostile) else hostile[:size]
            requests.post(f"{url}/invocations", json=_body(warm), timeout=600)

        def sample() -> None:
            while not stop.wait(0.5):
                memory.append(_tree_rss(server.pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        memory.append(_tree_rss(server.pid))

        def ask(paths: list[Path]) -> tuple[int, float, int, str]:
            begun = time.perf_counter()
            answer = requests.post(f"{url}/invocations", json=_body(paths), timeout=600)
            seconds = time.perf_counter() - begun
            if answer.status_code != 200:
                return len(paths), seconds, answer.status_code, answer.text[:200]
            rows = answer.json()["predictions"]
            for path, row in zip(paths, rows, strict=True):
                bad = path in hostile
                if bad != (row["featurize_error"] is not None):
                    return len(paths), seconds, 200, f"{path.name}: {row['featurize_error']}"
            return len(paths), seconds, 200, "" if len(rows) == len(paths) else "rows lost"

        began = time.perf_counter()
        with ThreadPoolExecutor(CLIENTS) as pool:
            results = list(pool.map(ask, plan))
        wall = time.perf_counter() - began
        stop.set()
        sampler.join()
        memory.append(_tree_rss(server.pid))
        alive = server.poll() is None
    finally:
        stop.set()
        server.terminate()
        server.wait(timeout=60)
    per_size = {}
    for size in BATCH_SIZES:
        seconds = [r[1] for r in results if r[0] == size]
        per_size[size] = [1000 * float(np.percentile(seconds, q)) for q in (50, 95, 99)]
    return {
        "wall_s": wall,
        "images": sum(len(p) for p in plan),
        "per_size": per_size,
        "server_errors": sum(r[2] >= 500 for r in results),
        "other_errors": [r[3] for r in results if r[3]],
        "alive": alive,
        # after the warm-up: the first sample, the peak of each half of the run, the last
        "rss_mb": [
            m / 2**20
            for m in (
                memory[0],
                max(memory[: len(memory) // 2]),
                max(memory[len(memory) // 2 :]),
                memory[-1],
            )
        ],
    }


def _up(url: str) -> bool:
    try:
        return requests.get(f"{url}/ping", timeout=5).status_code == 200
    except requests.ConnectionError:
        return False


def _spark_flavour_copy(model_uri: str, folder: Path) -> str:
    """The model with its pyfunc flavour served by MLflow's Spark loader (a JVM in the server)."""
    import mlflow
    import yaml

    local = Path(mlflow.artifacts.download_artifacts(model_uri, dst_path=str(folder)))
    spec = yaml.safe_load((local / "MLmodel").read_text())
    spec["flavors"]["python_function"].update(loader_module="mlflow.spark", data="sparkml")
    (local / "MLmodel").write_text(yaml.safe_dump(spec))
    return str(local)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--load", type=int, default=0, help="run the load test, N requests")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    from sparkles.commands import run_main
    from sparkles.config import load_profile
    from sparkles.data.sample import ensure_sample
    from sparkles.session import build_session

    work = Path(tempfile.mkdtemp(prefix="sparkles-bench-serving-"))
    tracking_uri = f"sqlite:///{work / 'mlruns.db'}"
    profile = load_profile(
        "local",
        [
            f"mlflow.tracking_uri={tracking_uri}",
            f"mlflow.artifact_location={work / 'artifacts'}",
            f"store.dir={work / 'cache'}",
            f"data.labels_csv={work / 'data/labels.csv'}",
            f"data.classes_csv={work / 'data/classes.csv'}",
            f"data.images={work / 'data/images'}",
            *args.overrides,
        ],
    )
    ensure_sample(profile)
    spark = build_session(profile)
    import mlflow

    run_id = run_main(profile, spark)["run_id"]
    mlflow.set_tracking_uri(tracking_uri)
    spark.stop()
    images = sorted(Path(profile.data.images).glob("*.jpg"))
    mean_kb = np.mean([p.stat().st_size for p in images[:32]]) / 1e3
    settings = profile.featurizer
    if args.load:
        m = load(
            f"runs:/{run_id}/model", tracking_uri, images, args.load, settings.max_file_mb, work
        )
        print(
            f"{settings.model} ({settings.runtime}, {settings.precision}); {args.load} requests "
            f"({m['images']} images, a quarter hostile) from {CLIENTS} clients in "
            f"{m['wall_s']:.1f} s; {os.cpu_count()} cores\n"
        )
        print("| batch | p50 | p95 | p99 |\n|---|---|---|---|")
        for size, (p50, p95, p99) in m["per_size"].items():
            print(f"| {size} | {p50:.0f} ms | {p95:.0f} ms | {p99:.0f} ms |")
        start, first, second, end = m["rss_mb"]
        print(
            f"\nserver errors (5xx): {m['server_errors']}; wrong answers: "
            f"{m['other_errors'][:3] or 0}; server alive: {m['alive']}; server RSS after the "
            f"warm-up {start:.0f} MB, peak in the first half {first:.0f} MB, in the second half "
            f"{second:.0f} MB, at the end {end:.0f} MB"
        )
        return
    print(
        f"{settings.model} ({settings.runtime}, {settings.precision}); sample JPEGs of "
        f"{mean_kb:.0f} KB; {args.requests} single-image requests, then batches of 32; "
        f"{os.cpu_count()} cores\n"
    )
    print(
        "| served flavour | start to ready | first request | single image p50 | p95 | "
        "images/s at batch 32 |"
    )
    print("|---|---|---|---|---|---|")
    spark_served = _spark_flavour_copy(f"runs:/{run_id}/model", work / "spark-served")
    for name, uri in (("pyfunc, no JVM", f"runs:/{run_id}/model"), ("Spark", spark_served)):
        m = measure(uri, tracking_uri, images, args.requests)
        print(
            f"| {name} | {m['ready_s']:.1f} s | {m['first_s']:.2f} s | {m['p50_ms']:.0f} ms | "
            f"{m['p95_ms']:.0f} ms | {m['images_per_s']:.1f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
