"""Fuzz the image reader: mutated real JPEG (BCCD, VOC07) and PNG files."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from fuzz_kit import TIERS, expect_clean, file_mutations, run_fuzz, shared
from hypothesis import strategies as st

from sppdet.data.image_io import image_size, read_image


def _small_real_images():
    """A real BCCD photo shrunk to 64x48, as JPEG and as PNG (small: decoding stays cheap)."""
    img = cv2.imread(str(shared("bccd", "VOC", "JPEGImages", "BloodImage_00000.jpg")))
    small = cv2.resize(img, (64, 48), interpolation=cv2.INTER_AREA)
    return {
        "jpg": cv2.imencode(".jpg", small)[1].tobytes(),
        "png": cv2.imencode(".png", small)[1].tobytes(),
        "png16": cv2.imencode(".png", small.astype(np.uint16) * 257)[1].tobytes(),
    }


def _check(path, data: bytes) -> None:
    path.write_bytes(data)
    size = expect_clean(lambda: image_size(path), [path.name])
    img = expect_clean(lambda: read_image(path, max_pixels=4_000_000), [path.name])
    if img is not None:
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
        if size is not None:  # the header's size is the decoded size
            assert (img.shape[1], img.shape[0]) == size


@pytest.mark.parametrize("tier", TIERS)
@pytest.mark.parametrize("kind", ["jpg", "png", "png16"])
def test_image_mutations(tier, kind, tmp_path):
    original = _small_real_images()[kind]
    path = tmp_path / f"image.{kind[:3]}"
    # Header edits matter most (sizes, markers): half the examples edit only the first 200 bytes.
    head = st.builds(lambda h: h + original[200:], file_mutations(original[:200], text=False))
    run_fuzz(tier, 25, st.one_of(file_mutations(original, text=False), head), lambda d: _check(path, d))


@pytest.mark.parametrize("tier", TIERS)
def test_real_photo_mutations(tier, tmp_path):
    original = shared("voc07-demo", "000004.jpg").read_bytes()
    path = tmp_path / "000004.jpg"
    run_fuzz(tier, 8, file_mutations(original, text=False), lambda d: _check(path, d))


def test_image_regressions(tmp_path):
    """Inputs the fuzzer found, and header sizes that lie (kept as explicit cases)."""
    png = bytearray(_small_real_images()["png"])
    huge = bytes(png[:16]) + (60000).to_bytes(4, "big") * 2 + bytes(png[24:])  # IHDR claims 60000x60000
    zero = bytes(png[:16]) + bytes(8) + bytes(png[24:])
    for name, data in (("huge.png", huge), ("zero.png", zero), ("cut.png", bytes(png[:40]))):
        _check(tmp_path / name, data)
