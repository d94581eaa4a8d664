"""DeepImageFeaturizer on real Spark and real Keras: parity, quarantine, save/load, weights."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.server
import threading
from pathlib import Path

import numpy as np
import pytest
from pyspark.ml import Pipeline, PipelineModel

from sparkles.cnn.backbones import ImagenetFile, get_spec
from sparkles.cnn.featurizer import DeepImageFeaturizer
from sparkles.cnn.imaging import decode_image
from sparkles.cnn.runtimes import (
    CONVERTED_ENV,
    PrecisionUnavailableError,
    compile_cnn,
    converted_dir,
    cpu_has_bf16,
    model_key,
)
from sparkles.cnn.settings import CnnSettings
from sparkles.cnn.weights import WeightsUnavailableError, resolve_weights
from sparkles.data.images import read_image_files
from sparkles.model.stages import stage_of
from tests.conftest import warned_once
from tests.images import bad_variants, encode, good_variants, photo


def _cnn(seed: int, runtime: str, precision: str) -> CnnSettings:
    """The settings ``compile_cnn`` reads (its ``spec`` names the model)."""
    return CnnSettings(seed=seed, runtime=runtime, precision=precision, pooling="avg")


LIMITS = {"max_bytes": 50 << 20, "max_pixels": 2_000_000}
# bf16 keeps 8 bits of mantissa: InceptionV3's features moved 3.1e-3 of their largest value
# (OpenVINO, issue #15's measurements); README's Performance section gives the same bound
BF16_RELATIVE_TOLERANCE = 2e-2


def _write(folder: Path, files: dict[str, bytes]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (folder / name).write_bytes(content)
    return folder


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Generated pictures plus real photographs that scikit-image ships."""
    from PIL import Image
    from skimage import data

    files = {
        f"generated{i}.jpg": encode(photo(300 + 40 * i, 200 + 30 * i, seed=i)) for i in range(3)
    }
    for name in ("astronaut", "coffee", "chelsea", "rocket"):
        files[f"{name}.jpg"] = encode(Image.fromarray(getattr(data, name)()))
    return _write(tmp_path_factory.mktemp("photos"), files)


def _features_by_name(frame, column: str = "features") -> dict[str, np.ndarray]:
    return {Path(r.path).name: r[column] for r in frame.select("path", column).collect()}


def _bare_keras(folder: Path, names: list[str], model_name: str, pooling: str) -> np.ndarray:
    """What a person would write without Spark: decode, preprocess, predict_on_batch."""
    spec = get_spec(model_name)
    pixels = np.stack(
        [decode_image((folder / n).read_bytes(), spec.input_size, **LIMITS) for n in names]
    ).astype(np.float32)
    model = spec.build(None, pooling, seed=0)
    out = np.asarray(model.predict_on_batch(spec.preprocess()(pixels)))
    return out.reshape(len(names), -1)


@pytest.mark.parametrize(
    ("runtime", "pooling", "size"),
    [("openvino", "avg", 2048), ("openvino", "none", 8 * 8 * 2048), ("keras", "avg", 2048)],
)
def test_inception_features_equal_bare_keras(
    spark, photos: Path, runtime: str, pooling: str, size: int
) -> None:
    images = read_image_files(spark, str(photos)).files
    featurizer = DeepImageFeaturizer(
        weights="random",
        pooling=pooling,
        runtime=runtime,
        precision="f32",
        batchSize=4,
        maxPixels=LIMITS["max_pixels"],
    )
    got = _features_by_name(featurizer.transform(images))
    names = sorted(got)
    assert len(names) == 7
    expected = _bare_keras(photos, names, "InceptionV3", pooling)
    actual = np.stack([got[n].toArray() for n in names])
    assert actual.shape == (7, size)
    assert np.abs(actual - expected).max() <= 1e-4
    assert actual.std() > 0


def test_bad_images_are_quarantined_not_dropped(spark, tmp_path: Path) -> None:
    bad = bad_variants(LIMITS["max_pixels"])
    huge = encode(photo(1200, 900, seed=9))
    files = {**good_variants(), **{n: c for n, (c, _) in bad.items() if c}, "huge.jpg": huge}
    assert len(huge) > max(len(c) for n, c in files.items() if n != "huge.jpg")
    folder = _write(tmp_path / "mixed", files)
    images = read_image_files(spark, str(folder), "*.*")
    assert [r.image_id for r in images.empty.collect()] == []  # empty.jpg was not written (b"")
    featurizer = DeepImageFeaturizer(
        modelName="MobileNetV2",
        weights="random",
        batchSize=3,
        maxFileBytes=len(huge) - 1,
        maxPixels=LIMITS["max_pixels"],
    )
    rows = (
        featurizer.transform(images.files).select("path", "features", "featurize_error").collect()
    )
    reasons = {Path(r.path).name: r.featurize_error for r in rows}
    assert len(rows) == len(files)
    for name, (_, reason) in bad.items():
        if name != "empty.jpg":
            assert reasons[name].startswith(reason), (name, reasons[name])
    assert reasons["huge.jpg"].startswith("file too large")
    for name in good_variants():
        assert reasons[name] is None, (name, reasons[name])
    featurized = [r for r in rows if r.featurize_error is None]
    assert all(r.features is not None and r.features.size == 1280 for r in featurized)
    assert all(r.features is None for r in rows if r.featurize_error is not None)


def test_pipeline_model_saves_and_loads_with_its_weights(
    spark, photos: Path, tmp_path: Path
) -> None:
    spec = get_spec("MobileNetV2")
    weights_file = tmp_path / "mine" / "mobilenet.weights.h5"
    weights_file.parent.mkdir()
    spec.build(None, "avg", seed=42).save_weights(str(weights_file))
    images = read_image_files(spark, str(photos)).files
    featurizer = DeepImageFeaturizer(
        modelName="MobileNetV2", weights=str(weights_file), runtime="keras", batchSize=4
    )
    model = Pipeline(stages=[featurizer]).fit(images)
    before = _features_by_name(model.transform(images))
    model.save(str(tmp_path / "saved"))
    assert (tmp_path / "saved" / "stages").is_dir()
    weights_file.unlink()  # the saved model must not need the original file
    loaded = PipelineModel.load(str(tmp_path / "saved"))
    stage = stage_of(loaded, DeepImageFeaturizer)  # one stage here, found by type all the same
    assert stage.getWeights().endswith("/weights/mobilenet.weights.h5")
    assert (stage.getRuntime(), stage.getPrecision()) == ("keras", "f32")  # not the defaults
    after = _features_by_name(loaded.transform(images))
    assert before.keys() == after.keys()
    for name in before:
        np.testing.assert_array_equal(before[name].toArray(), after[name].toArray())
    # and the weights really are the file's, not a random initialisation
    random_init = _features_by_name(
        DeepImageFeaturizer(modelName="MobileNetV2", weights="random", seed=42 + 1).transform(
            images
        )
    )
    assert not np.allclose(
        random_init["coffee.jpg"].toArray(), after["coffee.jpg"].toArray(), rtol=1e-3, atol=0
    )


def test_missing_weights_file_names_the_path(spark, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.h5"
    with pytest.raises(WeightsUnavailableError, match=f"weights file {missing} does not exist"):
        DeepImageFeaturizer(weights=str(missing)).transform(
            read_image_files(spark, str(tmp_path)).files
        )


def test_unreachable_imagenet_weights_say_how_to_provide_them(tmp_path: Path) -> None:
    absent = ImagenetFile("sparkles-test-absent.h5", "http://127.0.0.1:9/unused", None)
    spec = dataclasses.replace(get_spec("MobileNetV2"), imagenet_file=absent)
    with pytest.raises(WeightsUnavailableError) as err:
        resolve_weights(spec, "imagenet", mirror="http://127.0.0.1:9/", cache_dir=str(tmp_path))
    message = str(err.value)
    assert "sparkles-test-absent.h5" in message
    assert "http://127.0.0.1:9/sparkles-test-absent.h5" in message
    assert "127.0.0.1:9 is unreachable" in message  # found by one connect, not Keras' retries
    assert "featurizer.weights" in message and "weights_mirror" in message


def test_imagenet_weights_download_from_a_mirror(tmp_path: Path) -> None:
    """The real download path (keras get_file), served from loopback instead of Google Cloud."""
    served = tmp_path / "served"
    served.mkdir()
    test_file = ImagenetFile("sparkles-test.weights.h5", "http://127.0.0.1:9/unused", None)
    spec = dataclasses.replace(get_spec("MobileNetV2"), imagenet_file=test_file)
    spec.build(None, "avg", seed=5).save_weights(str(served / test_file.name))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        mirror = f"http://127.0.0.1:{server.server_address[1]}/"
        resolved = resolve_weights(
            spec, "imagenet", mirror=mirror, cache_dir=str(tmp_path / "keras")
        )
    finally:
        server.shutdown()
    assert resolved.kind == "imagenet"
    assert Path(resolved.local_path).read_bytes() == (served / test_file.name).read_bytes()
    assert resolved.identity.startswith("sha256:")


def test_weights_in_the_keras_cache_are_used_where_their_checksum_holds(tmp_path: Path) -> None:
    """No network asked when Keras' cache has the file whole; a damaged one is not used."""
    cached = tmp_path / "models" / "sparkles-test-cached.h5"
    cached.parent.mkdir()
    cached.write_bytes(b"weights")
    good = ImagenetFile(
        cached.name, "http://127.0.0.1:9/unused", hashlib.sha256(b"weights").hexdigest()
    )
    spec = dataclasses.replace(get_spec("MobileNetV2"), imagenet_file=good)
    resolved = resolve_weights(spec, "imagenet", cache_dir=str(tmp_path))
    assert resolved.local_path == str(cached) and resolved.kind == "imagenet"
    damaged = dataclasses.replace(good, file_hash=hashlib.md5(b"other").hexdigest())
    with pytest.raises(WeightsUnavailableError, match="127.0.0.1:9 is unreachable"):
        resolve_weights(
            dataclasses.replace(spec, imagenet_file=damaged), "imagenet", cache_dir=str(tmp_path)
        )


def test_random_weights_are_reproducible_and_seeded() -> None:
    spec = get_spec("MobileNetV2")
    first, again, other = (spec.build(None, "avg", seed=s).get_weights()[0] for s in (1, 1, 2))
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_invalid_params_are_rejected() -> None:
    # checked where the model is needed: asking Keras imports it (train never needs to)
    with pytest.raises(ValueError, match="keras.applications has no model 'VGG99'"):
        DeepImageFeaturizer(modelName="VGG99").spec()
    with pytest.raises(ValueError, match="pooling must be one of avg, max, none"):
        DeepImageFeaturizer(pooling="mean")
    with pytest.raises(ValueError, match="runtime must be one of keras, openvino"):
        DeepImageFeaturizer(runtime="onnx")
    with pytest.raises(ValueError, match="precision must be one of f32, bf16"):
        DeepImageFeaturizer().setParams(precision="fp16")


def _decoded(photos: Path, spec) -> np.ndarray:
    """What a compiled CNN takes: decoded pixels (it preprocesses them itself)."""
    pixels = [
        decode_image(p.read_bytes(), spec.input_size, **LIMITS) for p in sorted(photos.iterdir())
    ]
    return np.stack(pixels).astype(np.float32)


@pytest.mark.skipif(not cpu_has_bf16(), reason="this CPU has no bf16 instructions")
@pytest.mark.parametrize("runtime", ["openvino", "keras"])
def test_bf16_features_stay_within_the_documented_tolerance(photos: Path, runtime: str) -> None:
    spec = get_spec("InceptionV3")
    pixels = _decoded(photos, spec)
    reference = compile_cnn(spec, _cnn(0, "keras", "f32"), weights=None)(pixels)
    bf16 = compile_cnn(spec, _cnn(0, runtime, "bf16"), weights=None)
    assert bf16.precision == "bf16"
    relative = np.abs(bf16(pixels) - reference).max() / np.abs(reference).max()
    assert relative <= BF16_RELATIVE_TOLERANCE


@pytest.mark.skipif(cpu_has_bf16(), reason="this CPU has bf16: the fallback cannot happen here")
def test_bf16_falls_back_to_f32_where_the_cpu_lacks_it(spark, photos: Path, caplog) -> None:
    featurizer = DeepImageFeaturizer(modelName="MobileNetV2", weights="random", precision="bf16")
    with warned_once(caplog, "no bf16 instructions"):
        assert featurizer.precision_that_runs() == "f32"
    # an executor given bf16 by a driver that has it refuses, rather than running f32 under it
    with pytest.raises(PrecisionUnavailableError, match="featurizer.precision=f32"):
        compile_cnn(get_spec("MobileNetV2"), _cnn(0, "openvino", "bf16"), weights=None)
    with warned_once(caplog, "no bf16 instructions"):
        rows = featurizer.transform(read_image_files(spark, str(photos)).files).collect()
    assert len(rows) == 7 and all(r.featurize_error is None for r in rows)


def test_openvino_conversions_are_kept_per_weights_content(photos: Path, tmp_path, monkeypatch):
    """A second worker reads the converted model instead of converting again; other weights, or
    an unreadable saved model, are converted afresh."""
    import openvino as ov

    monkeypatch.setenv(CONVERTED_ENV, str(tmp_path / "converted"))
    spec = dataclasses.replace(get_spec("MobileNetV2"), input_size=(64, 64))  # small: fast
    pixels = _decoded(photos, spec)
    reference = compile_cnn(spec, _cnn(3, "keras", "f32"), weights=None)(pixels)
    first = compile_cnn(spec, _cnn(3, "openvino", "f32"), weights=None)(pixels)
    # the CNN and its preprocessing (preprocess_input, converted: no Keras in a worker)
    assert len(list(converted_dir().glob("*/model.xml"))) == 2
    saved = converted_dir() / model_key(spec, None, "avg", 3, ov.__version__) / "model.xml"
    again = compile_cnn(spec, _cnn(3, "openvino", "f32"), weights=None)(pixels)
    np.testing.assert_array_equal(first, again)
    scale = np.abs(reference).max()
    assert scale > 0 and np.abs(again - reference).max() <= 1e-4 * scale
    other = compile_cnn(spec, _cnn(4, "openvino", "f32"), weights=None)(pixels)  # other weights
    assert len(list(converted_dir().glob("*/model.xml"))) == 3  # the preprocessing is shared
    assert not np.allclose(other, again, rtol=1e-3, atol=0)
    saved.write_text("<not a model")
    rebuilt = compile_cnn(spec, _cnn(3, "openvino", "f32"), weights=None)(pixels)
    np.testing.assert_allclose(rebuilt, first, rtol=1e-6, atol=1e-6 * scale)


WORKER = """
import json, sys
import numpy as np
from sparkles.cnn.backbones import CnnSpec
from sparkles.cnn.executors import make_predict_fn
from sparkles.cnn.settings import CnnSettings

spec = CnnSpec(**json.loads(sys.argv[1]))
settings = CnnSettings(model=spec.name, seed=3, max_file_bytes=1 << 26, max_pixels=1 << 26)
predict = make_predict_fn(spec, None, shipped_quantized=None, settings=settings)()
contents = np.array([open(path, "rb").read() for path in sys.argv[2:]], dtype=object)
out = predict(contents)
loaded = sorted({name.split(".")[0] for name in sys.modules} & {"tensorflow", "keras"})
print(json.dumps({"features": out["features"].tolist(), "loaded": loaded}))
"""


@pytest.mark.e2e
def test_a_worker_with_the_converted_model_cached_imports_no_tensorflow(
    photos: Path, tmp_path: Path, monkeypatch
) -> None:
    """OpenVINO's Python worker reads the model this machine converted and runs it: importing
    TensorFlow and Keras there (~6 s of CPU and ~0.5 GB a worker) buys nothing. Same features
    as Keras on the same pixels."""
    import json
    import os
    import subprocess
    import sys

    monkeypatch.setenv(CONVERTED_ENV, str(tmp_path / "converted"))
    spec = dataclasses.replace(get_spec("MobileNetV2"), input_size=(64, 64))
    files = sorted(photos.iterdir())
    pixels = np.stack([decode_image(p.read_bytes(), spec.input_size, **LIMITS) for p in files])
    reference = compile_cnn(spec, _cnn(3, "keras", "f32"), weights=None)(pixels.astype(np.float32))
    compile_cnn(spec, _cnn(3, "openvino", "f32"), weights=None)  # converted, as a first worker does
    fields = {**dataclasses.asdict(spec), "input_size": list(spec.input_size)}
    done = subprocess.run(
        [sys.executable, "-c", WORKER, json.dumps(fields), *map(str, files)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer["loaded"] == []
    features = np.asarray(answer["features"], dtype=np.float32)
    scale = np.abs(reference).max()
    assert scale > 0 and np.abs(features - reference).max() <= 1e-4 * scale


def test_a_compiled_cnn_answers_threads_that_call_it_at_once(photos: Path) -> None:
    """A served model's requests arrive on several threads: OpenVINO's compiled model has one
    infer request ("Infer Request is busy" when two threads share it), so calls take turns and
    each gets its own images' features."""
    from concurrent.futures import ThreadPoolExecutor

    spec = dataclasses.replace(get_spec("MobileNetV2"), input_size=(64, 64))  # small: fast
    pixels = _decoded(photos, spec)
    cnn = compile_cnn(spec, _cnn(3, "openvino", "f32"), weights=None)
    alone = [cnn(pixels[i : i + 1]) for i in range(len(pixels))]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda i: cnn(pixels[i : i + 1]), list(range(len(pixels))) * 4))
    for index, features in enumerate(together):
        np.testing.assert_array_equal(features, alone[index % len(pixels)])
