import math

import numpy as np
import pytest
import torch

from sppdet import structures as S


def test_xywh_round_trip_and_hand_values():
    b = np.array([[10.0, 20.0, 30.0, 40.0]], dtype=np.float32)  # x y w h
    xyxy = S.xywh_to_xyxy(b)
    np.testing.assert_allclose(xyxy, [[10, 20, 40, 60]])
    np.testing.assert_allclose(S.xyxy_to_xywh(xyxy), b)
    t = torch.tensor([[10.0, 20.0, 30.0, 40.0]])
    assert torch.allclose(S.xyxy_to_xywh(S.xywh_to_xyxy(t)), t)


def test_cxcywh_hand_values():
    b = torch.tensor([[50.0, 40.0, 20.0, 10.0]])
    assert torch.allclose(S.cxcywh_to_xyxy(b), torch.tensor([[40.0, 35.0, 60.0, 45.0]]))
    assert torch.allclose(S.xyxy_to_cxcywh(S.cxcywh_to_xyxy(b)), b)


def test_voc_one_based_inclusive():
    # VOC xmin=1..xmax=10 covers ten pixels -> x1=0, x2=10, width 10
    v = np.array([[1, 5, 10, 8]])
    ours = S.voc_to_xyxy(v)
    np.testing.assert_allclose(ours, [[0, 4, 10, 8]])
    np.testing.assert_allclose(ours[:, 2] - ours[:, 0], [10])
    np.testing.assert_allclose(S.xyxy_to_voc(ours), v)


def test_rcnn_mat_order_and_base():
    # R-CNN .mat rows are [y1 x1 y2 x2], 1-based inclusive
    m = np.array([[5, 1, 8, 10]])
    np.testing.assert_allclose(S.rcnn_mat_to_xyxy(m), [[0, 4, 10, 8]])
    np.testing.assert_allclose(S.xyxy_to_rcnn_mat(S.rcnn_mat_to_xyxy(m)), m)


def test_zero_based_inclusive():
    np.testing.assert_allclose(S.zero_based_inclusive_to_xyxy(np.array([[0, 0, 9, 4]])), [[0, 0, 10, 5]])


def test_voc_iou_equals_continuous_iou():
    rng = np.random.default_rng(0)
    a = rng.integers(1, 50, size=(20, 2))
    a = np.concatenate([a, a + rng.integers(0, 30, size=(20, 2))], 1)
    b = rng.integers(1, 50, size=(15, 2))
    b = np.concatenate([b, b + rng.integers(0, 30, size=(15, 2))], 1)

    def voc_iou(p, q):  # devkit formula with +1 on 1-based inclusive boxes
        iw = min(p[2], q[2]) - max(p[0], q[0]) + 1
        ih = min(p[3], q[3]) - max(p[1], q[1]) + 1
        if iw <= 0 or ih <= 0:
            return 0.0
        inter = iw * ih
        ua = (p[2] - p[0] + 1) * (p[3] - p[1] + 1) + (q[2] - q[0] + 1) * (q[3] - q[1] + 1) - inter
        return inter / ua

    ref = np.array([[voc_iou(p, q) for q in b] for p in a])
    ours = S.box_iou(S.voc_to_xyxy(a), S.voc_to_xyxy(b))
    np.testing.assert_allclose(ours, ref, atol=1e-9)


def test_clip_and_remove_small():
    b = torch.tensor([[-5.0, -5.0, 20.0, 30.0], [10, 10, 10.5, 40], [0, 0, float("nan"), 4]])
    c = S.clip_boxes(b, 15, 25)
    assert torch.equal(c[0], torch.tensor([0.0, 0.0, 15.0, 25.0]))
    assert S.remove_small_boxes(b, 1.0).tolist() == [0]
    assert S.remove_small_boxes(b.numpy(), 0.0).tolist() == [0, 1]


def test_box_area():
    assert S.box_area(np.array([[0, 0, 3, 4]])).tolist() == [12]


def test_box_coder_hand_value_and_round_trip():
    coder = S.BoxCoder(weights=(1.0, 1.0, 1.0, 1.0))
    p = torch.tensor([[0.0, 0.0, 10.0, 20.0]])
    g = torch.tensor([[5.0, 0.0, 25.0, 20.0]])
    d = coder.encode(p, g)
    # centre moves 10 px on width 10 -> dx = 1; width doubles -> dw = log 2
    assert torch.allclose(d, torch.tensor([[1.0, 0.0, math.log(2), 0.0]]))
    coder = S.BoxCoder()
    rng = torch.Generator().manual_seed(0)
    p = torch.rand(100, 2, generator=rng, dtype=torch.float64) * 100
    p = torch.cat([p, p + 1 + torch.rand(100, 2, generator=rng, dtype=torch.float64) * 80], 1)
    g = torch.rand(100, 2, generator=rng, dtype=torch.float64) * 100
    g = torch.cat([g, g + 1 + torch.rand(100, 2, generator=rng, dtype=torch.float64) * 80], 1)
    assert torch.allclose(coder.decode(coder.encode(p, g), p), g, atol=1e-9)
    # class-specific layout: (N, 4k) decodes each group of 4
    d2 = torch.cat([coder.encode(p, g), torch.zeros_like(p)], 1)
    out = coder.decode(d2, p)
    assert out.shape == (100, 8)
    assert torch.allclose(out[:, 4:], p, atol=1e-9)


def test_box_coder_clamps_huge_scale():
    coder = S.BoxCoder()
    out = coder.decode(torch.tensor([[0.0, 0.0, 1000.0, 1000.0]]), torch.tensor([[0.0, 0.0, 10.0, 10.0]]))
    assert torch.isfinite(out).all()
    assert (out[0, 2] - out[0, 0]).item() == pytest.approx(10 * 1000 / 16, rel=1e-4)
