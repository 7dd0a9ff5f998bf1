import numpy as np
import pytest
import torch

from sppdet.modeling.features import assign_scales, pad_batch, resize_image, scale_factors


def test_scale_factors_shorter_side_and_cap():
    # 375x500 image, shorter side 375 -> 688: factor 688/375; longer side 917 < 2000
    assert scale_factors(375, 500, [688], 2000) == [pytest.approx(688 / 375)]
    # cap: longer side 1000 * (1200/500) = 2400 > 2000 -> factor 2000/1000
    assert scale_factors(500, 1000, [1200], 2000) == [pytest.approx(2.0)]


def test_assign_scales_hand_cases():
    # paper 5 scales on a 500x375 image (shorter side 375)
    f = torch.tensor([scale_factors(375, 500, [480, 576, 688, 864, 1200], 2000)], dtype=torch.float64)
    boxes = torch.tensor(
        [
            [0.0, 0.0, 100.0, 100.0],  # 100x100: 224/100 = 2.24 -> factor 1200/375=3.2? no: pick closest area
            [0.0, 0.0, 300.0, 300.0],  # large box -> smallest scale
            [0.0, 0.0, 10.0, 10.0],
        ]
    )  # tiny box -> largest scale
    factors = f.expand(3, -1)
    got = assign_scales(boxes, factors, 224)
    # by hand: factors = 1.28, 1.536, 1.8347, 2.304, 3.2
    # 100x100 scaled areas: 16384, 23593, 33661, 53084, 102400 -> |a - 50176| smallest at 2.304 (index 3)
    # 300x300: 147456, ... -> smallest area 147456 (index 0) is closest
    # 10x10: largest factor 3.2 -> 1024, index 4
    assert got.tolist() == [3, 0, 4]


def test_assign_single_scale_is_zero():
    assert assign_scales(torch.rand(5, 4), torch.ones(5, 1, dtype=torch.float64)).tolist() == [0] * 5


def test_pad_batch_keeps_pixels():
    a, b = torch.rand(3, 5, 7), torch.rand(3, 8, 4)
    out = pad_batch([a, b], size_divisible=4)
    assert out.shape == (2, 3, 8, 8)
    assert torch.equal(out[0, :, :5, :7], a) and torch.equal(out[1, :, :8, :4], b)
    assert out[0, :, 5:].abs().sum() == 0


def test_resize_image_size():
    im = np.zeros((100, 200, 3), np.uint8)
    assert resize_image(im, 1.5).shape == (150, 300, 3)
