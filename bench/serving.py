"""Benchmark: serving latency and throughput, the logged model's JVM-free `python_function`
flavour vs its Spark flavour, each served by `mlflow models serve --env-manager local` on loopback
in turn (the Spark one from a local copy of the model whose pyfunc flavour is pointed back at
MLflow's own Spark loader, `mlflow.spark`, as models logged before the one-model layout had it).

Trains one `main` run on the local profile (the bundled sample, InceptionV3 by default) into a
scratch tracking store, then for each flavour: start the server, time to ready, a warm-up
request, single-image latency (p50, p95 over --requests requests) and images/s at batch 32.

    python bench/serving.py
    python bench/serving.py --set featurizer.model=MobileNetV2 --requests 20
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
        [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri,
         "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
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
        [f"mlflow.tracking_uri={tracking_uri}", f"mlflow.artifact_location={work / 'artifacts'}",
         f"cache.dir={work / 'cache'}", f"data.labels_csv={work / 'data/labels.csv'}",
         f"data.classes_csv={work / 'data/classes.csv'}", f"data.images={work / 'data/images'}",
         *args.overrides],
    )  # fmt: skip
    ensure_sample(profile)
    spark = build_session(profile)
    import mlflow

    run_id = run_main(profile, spark)["run_id"]
    mlflow.set_tracking_uri(tracking_uri)
    spark.stop()
    images = sorted(Path(profile.data.images).glob("*.jpg"))
    mean_kb = np.mean([p.stat().st_size for p in images[:32]]) / 1e3
    settings = profile.featurizer
    print(f"{settings.model} ({settings.runtime}, {settings.precision}); sample JPEGs of "
          f"{mean_kb:.0f} KB; {args.requests} single-image requests, then batches of 32; "
          f"{os.cpu_count()} cores\n")  # fmt: skip
    print("| served flavour | start to ready | first request | single image p50 | p95 | "
          "images/s at batch 32 |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    spark_served = _spark_flavour_copy(f"runs:/{run_id}/model", work / "spark-served")
    for name, uri in (("pyfunc, no JVM", f"runs:/{run_id}/model"), ("Spark", spark_served)):
        m = measure(uri, tracking_uri, images, args.requests)
        print(f"| {name} | {m['ready_s']:.1f} s | {m['first_s']:.2f} s | {m['p50_ms']:.0f} ms | "
              f"{m['p95_ms']:.0f} ms | {m['images_per_s']:.1f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
