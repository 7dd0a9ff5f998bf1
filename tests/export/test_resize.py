"""The exported graph's resize equals cv2.resize (the Python inference path's) pixel for pixel."""

import cv2
import numpy as np
import pytest
import torch

from sppdet.export.resize import resize_area, resize_linear, resize_to_factor, scale_factor
from sppdet.modeling.features import resize_image, scale_factors


def _size(n: int) -> torch.Tensor:
    return torch.tensor([n])


@pytest.mark.parametrize("seed", range(4))
def test_linear_is_cv2_bit_exact(seed):
    rng = np.random.default_rng(seed)
    for _ in range(25):
        h, w = (int(v) for v in rng.integers(1, 300, 2))
        nh, nw = (int(v) for v in rng.integers(1, 600, 2))
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        ref = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
        got = resize_linear(torch.from_numpy(img), _size(nh), _size(nw)).numpy()
        np.testing.assert_array_equal(got, ref, err_msg=f"{h}x{w} -> {nh}x{nw}")


def test_linear_special_ratios():
    """Exactly 2x up, exactly 0.5x down, identity and a 1-pixel-wide image."""
    rng = np.random.default_rng(7)
    for h, w, nh, nw in ((40, 57, 80, 114), (80, 114, 40, 57), (33, 47, 33, 47), (1, 30, 3, 90), (30, 1, 60, 2)):
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        ref = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
        got = resize_linear(torch.from_numpy(img), _size(nh), _size(nw)).numpy()
        np.testing.assert_array_equal(got, ref)


def test_area_within_one_grey_level_of_cv2():
    """Area is the exact box mean; OpenCV sums in float32 (and has special kernels for ratios such
    as 10/3), so means at k + 0.5 may round the other way: at most one level, in few pixels."""
    rng = np.random.default_rng(3)
    for h, w, nh, nw in ((300, 400, 90, 120), (301, 457, 75, 100), (256, 256, 64, 64), (500, 375, 100, 75)):
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        ref = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA).astype(int)
        got = resize_area(torch.from_numpy(img), _size(nh), _size(nw)).numpy().astype(int)
        assert np.abs(got - ref).max() <= 1
        assert (got != ref).mean() < 0.01


@pytest.mark.parametrize(
    "h, w, scale, max_size",
    [(375, 500, 688, 2000), (406, 500, 320, 1000), (100, 900, 480, 600), (2000, 1500, 320, 1000)],
)
def test_factor_and_resize_follow_the_python_path(h, w, scale, max_size):
    """Same factor as scale_factors and the same image as resize_image (bilinear or area)."""
    img = np.random.default_rng(h).integers(0, 256, (h, w, 3), dtype=np.uint8)
    f_ref = scale_factors(h, w, [scale], max_size)[0]
    f = scale_factor(_size(h), _size(w), scale, max_size)
    assert f.item() == f_ref
    ref = resize_image(img, f_ref)
    got = resize_to_factor(torch.from_numpy(img), f).numpy()
    assert got.shape == ref.shape
    if f_ref >= 0.5:
        np.testing.assert_array_equal(got, ref)
    else:
        assert np.abs(got.astype(int) - ref).max() <= 1
