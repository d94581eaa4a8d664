"""Compressed image bytes → the RGB pixels a CNN expects, or a reason the image is unusable.

Runs inside Python workers. Everything that can go wrong with a real photo collection (empty,
truncated, not an image, decompression bombs, odd colour modes, EXIF rotation) ends here either
as pixels or as a BadImage with a reason a person can act on.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Bump when decoding changes what pixels a given file yields: it is part of the cache fingerprint.
PREPROCESS_VERSION = "1"


class BadImage(ValueError):
    """An input that is quarantined instead of featurized; ``str(err)`` is the reason."""


def _to_rgb(image: Image.Image) -> Image.Image:
    """Grayscale, CMYK, palette, 16-bit and transparent images → RGB (transparency on white)."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        values = np.asarray(image, dtype=np.float32)
        span = float(values.max() - values.min()) or 1.0
        image = Image.fromarray(((values - values.min()) / span * 255).astype(np.uint8))
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image, mask=image.getchannel("A"))
        return background
    return image.convert("RGB")


def decode_image(
    content: bytes | None, size: tuple[int, int], *, max_bytes: int, max_pixels: int
) -> np.ndarray:
    """Return (height, width, 3) uint8 pixels resized to ``size`` = (height, width).

    Whatever goes wrong with one file, at any step, is a BadImage: that image is quarantined
    with the reason, and the job goes on.
    """
    try:
        return _decode(content, size, max_bytes=max_bytes, max_pixels=max_pixels)
    except BadImage:
        raise
    except Exception as err:  # a decoder bug on a hostile file, EXIF, a mode conversion, ...
        raise BadImage(f"undecodable image ({type(err).__name__}: {err})") from None


def _decode(
    content: bytes | None, size: tuple[int, int], *, max_bytes: int, max_pixels: int
) -> np.ndarray:
    if content is None or len(content) == 0:
        raise BadImage("empty file (0 bytes)")
    if len(content) > max_bytes:
        raise BadImage(f"file too large: {len(content)} bytes > limit {max_bytes}")
    height, width = size
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(content))
            if image.width * image.height > max_pixels:
                raise BadImage(
                    f"decompression bomb: {image.width}x{image.height} pixels > limit {max_pixels}"
                )
            image.draft("RGB", (width, height))  # JPEG: decode at a reduced scale, much faster
            image.load()
    except BadImage:
        raise
    except UnidentifiedImageError:
        raise BadImage("not an image (format not recognised)") from None
    except Image.DecompressionBombError as err:
        raise BadImage(f"decompression bomb: {err}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise BadImage(f"corrupt or truncated image: {err}") from None
    image = _to_rgb(ImageOps.exif_transpose(image))
    resized = image.resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.uint8)
