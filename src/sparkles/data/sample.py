"""The bundled offline sample: synthetic car and tree scenes in exactly the Open Images format.

Generated (deterministically, from a seed) rather than committed, so the repository stays small
and the same ingest code runs on the sample as on the real Open Images validation set.
"""

from __future__ import annotations

import csv
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from sparkles.config import Profile

log = logging.getLogger(__name__)

CAR, TREE, BUS = "/m/0k4j", "/m/07j7r", "/m/01bjv"
# Real Open Images MIDs; v5's class-descriptions-boxable.csv has no header row.
CLASSES = {
    CAR: "Car",
    TREE: "Tree",
    BUS: "Bus",
    "/m/083wq": "Wheel",
    "/m/07yv9": "Vehicle",
    "/m/01prls": "Land vehicle",
    "/m/05s2s": "Plant",
    "/m/0cgh4": "Building",
    "/m/01g317": "Person",
}
LABELS_HEADER = ["ImageID", "Source", "LabelName", "Confidence"]


@dataclass(frozen=True)
class SamplePaths:
    labels_csv: Path
    classes_csv: Path
    images: Path


def image_id(seed: int, index: int) -> str:
    """16 hex digits, like Open Images IDs, stable for a seed."""
    return hashlib.sha256(f"sparkles-{seed}-{index}".encode()).hexdigest()[:16]


def _color(rng: np.random.Generator, low: int = 0, high: int = 256) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(low, high, size=3))


def _background(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    """Sky gradient over ground, in varied colours (dusk, noon, overcast; grass, road, sand)."""
    w, h = size
    horizon = int(h * rng.uniform(0.45, 0.75))
    top, bottom = np.array(_color(rng, 60, 256)), np.array(_color(rng, 120, 256))
    ramp = np.linspace(0, 1, horizon)[:, None, None]
    sky = (top * (1 - ramp) + bottom * ramp).astype(np.uint8)
    ground = np.broadcast_to(np.array(_color(rng, 30, 180), np.uint8), (h - horizon, w, 3))
    pixels = np.concatenate([np.broadcast_to(sky, (horizon, w, 3)), ground], axis=0)
    noise = rng.normal(0, 6, pixels.shape)
    return Image.fromarray(np.clip(pixels + noise, 0, 255).astype(np.uint8))


def _draw_car(draw: ImageDraw.ImageDraw, rng: np.random.Generator, size: tuple[int, int]) -> None:
    w, h = size
    length = w * rng.uniform(0.3, 0.6)
    height = length * rng.uniform(0.28, 0.38)
    x0 = rng.uniform(0, w - length)
    y1 = h * rng.uniform(0.7, 0.95)
    body = _color(rng)
    draw.rounded_rectangle([x0, y1 - height, x0 + length, y1], radius=height * 0.2, fill=body)
    cabin_x = x0 + length * rng.uniform(0.15, 0.3)
    cabin = [cabin_x, y1 - height * 1.7, cabin_x + length * 0.5, y1 - height + 1]
    draw.rounded_rectangle(cabin, radius=height * 0.25, fill=body)
    draw.rectangle([cabin[0] + 4, cabin[1] + 4, cabin[2] - 4, cabin[3] - 2], fill=(170, 200, 230))
    r = height * 0.35
    for cx in (x0 + length * 0.2, x0 + length * 0.8):
        draw.ellipse([cx - r, y1 - r, cx + r, y1 + r], fill=(20, 20, 20))
        draw.ellipse([cx - r / 2, y1 - r / 2, cx + r / 2, y1 + r / 2], fill=(160, 160, 160))


def _draw_bus(draw: ImageDraw.ImageDraw, rng: np.random.Generator, size: tuple[int, int]) -> None:
    """Long and tall, a row of windows, three wheels: not a car at any scale."""
    w, h = size
    length = w * rng.uniform(0.55, 0.85)
    height = length * rng.uniform(0.3, 0.4)
    x0 = rng.uniform(0, w - length)
    y1 = h * rng.uniform(0.75, 0.95)
    draw.rectangle([x0, y1 - height, x0 + length, y1], fill=_color(rng))
    panes = int(rng.integers(5, 9))
    pane = length / (panes + 1)
    for k in range(panes):
        left = x0 + pane * (k + 0.5)
        draw.rectangle(
            [left, y1 - height * 0.85, left + pane * 0.7, y1 - height * 0.5], fill=(170, 200, 230)
        )
    r = height * 0.18
    for cx in (x0 + length * 0.15, x0 + length * 0.5, x0 + length * 0.85):
        draw.ellipse([cx - r, y1 - r, cx + r, y1 + r], fill=(20, 20, 20))


def _draw_tree(draw: ImageDraw.ImageDraw, rng: np.random.Generator, size: tuple[int, int]) -> None:
    w, h = size
    tall = h * rng.uniform(0.45, 0.85)
    cx = rng.uniform(w * 0.1, w * 0.9)
    base = h * rng.uniform(0.75, 0.98)
    trunk_w = tall * rng.uniform(0.06, 0.12)
    bark = (int(rng.integers(70, 120)), int(rng.integers(40, 80)), int(rng.integers(10, 40)))
    draw.rectangle([cx - trunk_w / 2, base - tall * 0.45, cx + trunk_w / 2, base], fill=bark)
    leaf = (int(rng.integers(10, 90)), int(rng.integers(90, 200)), int(rng.integers(10, 80)))
    if rng.random() < 0.5:  # conifer: stacked triangles
        for k in range(3):
            top = base - tall + k * tall * 0.2
            half = tall * (0.18 + 0.08 * k)
            draw.polygon(
                [(cx, top), (cx - half, top + tall * 0.35), (cx + half, top + tall * 0.35)],
                fill=leaf,
            )
    else:  # broadleaf: a crown of overlapping blobs
        for _ in range(int(rng.integers(4, 8))):
            r = tall * rng.uniform(0.15, 0.25)
            ox, oy = rng.normal(0, tall * 0.12), base - tall * 0.7 + rng.normal(0, tall * 0.1)
            draw.ellipse([cx + ox - r, oy - r, cx + ox + r, oy + r], fill=leaf)


def _draw_building(
    draw: ImageDraw.ImageDraw, rng: np.random.Generator, size: tuple[int, int]
) -> None:
    w, h = size
    bw, bh = w * rng.uniform(0.2, 0.4), h * rng.uniform(0.4, 0.7)
    x0 = rng.uniform(0, w - bw)
    draw.rectangle([x0, h * 0.9 - bh, x0 + bw, h * 0.9], fill=_color(rng, 80, 200))


DRAWABLE = ("Car", "Tree", "Bus")  # the classes the sample can draw


def classes_to_draw(configured: list[str], wanted: list[str]) -> tuple[str, ...]:
    """The sample's configured classes, plus every class the profile wants that it can draw."""
    drawable = {c.lower() for c in DRAWABLE}
    have = {c.lower() for c in configured}
    extra = [c for c in wanted if c.lower() in drawable and c.lower() not in have]
    return (*configured, *extra)


def _scene(kind: str) -> list[str]:
    scenes = {"car": [CAR], "tree": [TREE], "bus": [BUS], "both": [CAR, TREE]}
    return scenes.get(kind, ["/m/0cgh4"])


def _labels_for(kind: str, rng: np.random.Generator, image: str) -> list[list[str]]:
    """Positive rows for what is drawn, plus distractors and verified negatives (Confidence 0)."""
    rows = [[image, "verification", mid, "1"] for mid in _scene(kind)]
    if CAR in _scene(kind) or BUS in _scene(kind):
        rows += [[image, "crowdsource-verified", mid, "1"] for mid in ("/m/083wq", "/m/07yv9")]
    if TREE in _scene(kind) and rng.random() < 0.5:
        rows.append([image, "verification", "/m/05s2s", "1"])
    if kind == "car" and rng.random() < 0.3:
        rows.append([image, "verification", TREE, "0"])
    if kind == "tree" and rng.random() < 0.3:
        rows.append([image, "verification", CAR, "0"])
    if rng.random() < 0.1:
        rows.append([image, "verification", "/m/01g317", "0"])
    return rows


def generate_sample(
    labels_csv: Path,
    classes_csv: Path,
    images: Path,
    *,
    count: int = 240,
    seed: int = 7,
    size: tuple[int, int] = (320, 240),
    classes: tuple[str, ...] = ("Car", "Tree"),
) -> SamplePaths:
    """Write ``count`` JPEG scenes and the two Open Images CSVs. Same seed, same bytes.

    ``classes``: Car and Tree, optionally Bus (a third class, drawn as often as each of them).
    """
    unknown = sorted({c.lower() for c in classes} - {c.lower() for c in DRAWABLE})
    if unknown or not {"car", "tree"} <= {c.lower() for c in classes}:
        raise ValueError(f"the synthetic sample draws Car and Tree, optionally Bus; not {unknown}")
    rng = np.random.default_rng(seed)
    images.mkdir(parents=True, exist_ok=True)
    labels_csv.parent.mkdir(parents=True, exist_ok=True)
    classes_csv.parent.mkdir(parents=True, exist_ok=True)
    if "bus" in {c.lower() for c in classes}:
        kinds = rng.choice(
            ["car", "tree", "bus", "both", "neither"], size=count, p=[0.3, 0.3, 0.3, 0.07, 0.03]
        )
    else:  # the two-class sample, byte for byte as it always was
        kinds = rng.choice(
            ["car", "tree", "both", "neither"], size=count, p=[0.45, 0.45, 0.07, 0.03]
        )
    rows: list[list[str]] = []
    painters = {CAR: _draw_car, TREE: _draw_tree, BUS: _draw_bus, "/m/0cgh4": _draw_building}
    for index, kind in enumerate(kinds):
        name = image_id(seed, index)
        scale = rng.uniform(0.8, 1.25)
        dims = (int(size[0] * scale), int(size[1] * rng.uniform(0.8, 1.25)))
        picture = _background(rng, dims)
        draw = ImageDraw.Draw(picture)
        for mid in _scene(str(kind)):
            painters[mid](draw, rng, dims)
        picture = picture.filter(ImageFilter.GaussianBlur(rng.uniform(0, 1.2)))
        picture.save(images / f"{name}.jpg", "JPEG", quality=int(rng.integers(70, 95)))
        rows += _labels_for(str(kind), rng, name)
    with labels_csv.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(LABELS_HEADER)
        writer.writerows(rows)
    with classes_csv.open("w", newline="") as handle:
        csv.writer(handle).writerows(CLASSES.items())
    return SamplePaths(labels_csv, classes_csv, images)


def ensure_sample(profile: Profile) -> None:
    """Generate the bundled synthetic sample on first use, if the profile asks for it."""
    sample, data = profile.data.sample, profile.data
    if sample is None or Path(data.labels_csv).exists():
        return
    log.info(
        "generating the bundled sample (%d synthetic images) in %s", sample.images, data.images
    )
    generate_sample(
        Path(data.labels_csv),
        Path(data.classes_csv),
        Path(data.images),
        count=sample.images,
        seed=sample.seed,
        size=sample.size,
        classes=classes_to_draw(sample.classes, data.classes),
    )
