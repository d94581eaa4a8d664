"""Decoding in the workers: odd colour modes become RGB, unusable files become reasons."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

from sparkles.cnn.imaging import BadImage, decode_image
from tests.images import bad_variants, encode, exif_rotated, good_variants, photo

SIZE = (64, 48)  # height, width
LIMITS = {"max_bytes": 1 << 20, "max_pixels": 2_000_000}


@pytest.mark.parametrize("name", sorted(good_variants()))
def test_every_colour_mode_decodes_to_rgb(name: str) -> None:
    pixels = decode_image(good_variants()[name], SIZE, **LIMITS)
    assert pixels.shape == (64, 48, 3)
    assert pixels.dtype == np.uint8
    assert pixels.std() > 0  # real content, not a blank canvas


def test_exif_orientation_is_applied() -> None:
    pixels = decode_image(exif_rotated(), (64, 64), **LIMITS).astype(int)
    # displayed upright, the red half is on top and the blue half at the bottom
    assert pixels[4, 32, 0] > 200 and pixels[4, 32, 2] < 60
    assert pixels[60, 32, 2] > 200 and pixels[60, 32, 0] < 60


def test_transparency_is_composited_on_white() -> None:
    clear = Image.new("RGBA", (32, 32), (255, 0, 0, 0))
    assert (decode_image(encode(clear, "PNG"), (8, 8), **LIMITS) == 255).all()


@pytest.mark.parametrize("name", sorted(bad_variants(LIMITS["max_pixels"])))
def test_bad_images_raise_with_reason(name: str) -> None:
    content, reason = bad_variants(LIMITS["max_pixels"])[name]
    with pytest.raises(BadImage, match=re.escape(reason)):
        decode_image(content, SIZE, **LIMITS)


def test_none_content_is_empty() -> None:
    with pytest.raises(BadImage, match="empty file"):
        decode_image(None, SIZE, **LIMITS)


def test_file_over_size_limit() -> None:
    content = encode(photo(seed=2))
    with pytest.raises(BadImage, match=f"file too large: {len(content)} bytes"):
        decode_image(content, SIZE, max_bytes=len(content) - 1, max_pixels=LIMITS["max_pixels"])
    assert decode_image(content, SIZE, max_bytes=len(content), max_pixels=10**6).shape == (
        64,
        48,
        3,
    )
