"""Hue rotation against a per-pixel colorsys reference, and its place in training samples."""

import colorsys

import numpy as np
import pytest

from sppdet.data.augment import rotate_hue


def _reference(image: np.ndarray, degrees: float) -> np.ndarray:
    out = np.empty_like(image)
    for idx in np.ndindex(image.shape[:2]):
        r, g, b = (image[idx] / 255.0).tolist()
        h, s, v = colorsys.rgb_to_hsv(r, g, b)
        out[idx] = np.round(np.array(colorsys.hsv_to_rgb((h + degrees / 360.0) % 1.0, s, v)) * 255)
    return out


@pytest.mark.parametrize("degrees", [40, -90, 180, 300])
def test_matches_colorsys(degrees):
    rng = np.random.default_rng(degrees % 360)
    image = rng.integers(0, 256, (12, 15, 3), dtype=np.uint8)
    got = rotate_hue(image, degrees).astype(int)
    ref = _reference(image, degrees).astype(int)
    # OpenCV keeps hue in 2-degree steps and saturation in 1/255 steps on uint8
    assert np.abs(got - ref).max() <= 6
    assert np.abs(got - ref).mean() < 1.5


def test_hand_values():
    red, grey = [255, 0, 0], [90, 90, 90]
    image = np.array([[red, grey]], dtype=np.uint8)
    np.testing.assert_array_equal(rotate_hue(image, 120), [[[0, 255, 0], grey]])
    np.testing.assert_array_equal(rotate_hue(image, -120), [[[0, 0, 255], grey]])
    assert rotate_hue(image, 360) is image  # a full turn (and 0) leaves the image as it is


def test_refuses_non_rgb():
    with pytest.raises(ValueError, match="RGB uint8"):
        rotate_hue(np.zeros((4, 4), np.uint8), 30)
