"""Image bytes for tests: good ones in every colour mode, and every kind of bad one."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def encode(image: Image.Image, fmt: str = "JPEG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def photo(width: int = 160, height: int = 120, seed: int = 0) -> Image.Image:
    """A noisy RGB picture (so JPEG does real work)."""
    rng = np.random.default_rng(seed)
    base = np.linspace(0, 255, width)[None, :, None] * rng.uniform(0.3, 1, size=(1, 1, 3))
    pixels = base + rng.normal(0, 25, size=(height, width, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def good_variants() -> dict[str, bytes]:
    """Images that must be converted to RGB and featurized, not quarantined."""
    rgb = photo()
    palette = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    palette.info["transparency"] = 0
    sixteen = Image.fromarray(np.asarray(rgb.convert("L"), dtype=np.uint16) * 257)
    return {
        "rgb.jpg": encode(rgb),
        "gray.jpg": encode(rgb.convert("L")),
        "cmyk.jpg": encode(rgb.convert("CMYK")),
        "rgba.png": encode(rgb.convert("RGBA"), "PNG"),
        "palette.png": encode(palette, "PNG"),
        "sixteen.png": encode(sixteen, "PNG"),
        "rotated.jpg": exif_rotated(),
    }


def exif_rotated() -> bytes:
    """200x100, red left half, blue right half, EXIF orientation 6 (display rotated 90° CW)."""
    pixels = np.zeros((100, 200, 3), np.uint8)
    pixels[:, :100] = (255, 0, 0)
    pixels[:, 100:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(Image.fromarray(pixels), exif=exif.tobytes(), quality=95)


def bad_variants(max_pixels: int) -> dict[str, tuple[bytes, str]]:
    """Images that must be quarantined, with the start of the expected reason."""
    jpeg = encode(photo(seed=1))
    bomb = encode(Image.new("L", (max_pixels // 1000 + 1, 1001)), "PNG")
    return {
        "empty.jpg": (b"", "empty file"),
        "truncated.jpg": (jpeg[: len(jpeg) // 2], "corrupt or truncated"),
        "text.jpg": (b"this is not an image at all\n" * 10, "not an image"),
        "bomb.png": (bomb, "decompression bomb"),
        "stripoffsets.tif": (strip_offsets_as_double(), "undecodable image (TypeError"),
    }


def strip_offsets_as_double() -> bytes:
    """A TIFF whose StripOffsets tag claims type DOUBLE: Pillow's load() raises TypeError.

    Found by fuzzing Pillow with mutated files; before, the exception escaped and failed the
    whole Spark job instead of quarantining one image.
    """
    tiff = encode(photo(64, 48).convert("CMYK"), "TIFF")
    entry = tiff.index(b"\x11\x01\x04\x00")  # tag 0x0111 StripOffsets, type 4 (LONG), LE
    return tiff[: entry + 2] + b"\x0c\x00" + tiff[entry + 4 :]
