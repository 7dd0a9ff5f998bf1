"""The traceable region SPP (sppdet.export.spp_onnx) equals roi_spp, in torch and in onnxruntime."""

import io
import warnings

import numpy as np
import pytest
import torch

from sppdet.export.spp_onnx import check_levels, plan_levels, project_cells, roi_spp_one_map, roi_spp_traceable
from sppdet.layers.spp import project_rois, roi_spp


def _windows(rng, n, w, h):
    """Random windows plus edge cases: across/at the border, outside, tiny, whole image."""
    xy = rng.uniform(-40, max(w, h), (n, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(1, 400, (n, 2))], 1)
    edge = [
        [0, 0, w, h],  # whole image
        [w - 10, h - 10, w + 30, h + 30],  # over the bottom-right border
        [-50, -50, 5, 5],  # mostly outside, top-left
        [w + 10, h + 10, w + 60, h + 60],  # entirely outside
        [100.2, 80.7, 100.9, 81.1],  # far smaller than a cell
        [31.9, 31.9, 32.1, 32.1],  # a point on a cell edge
        [16.0, 16.0, 48.0, 48.0],  # exactly on cell centres
        [3, 3, 12, 500],  # thin and tall
    ]
    return torch.tensor(np.concatenate([boxes, edge]), dtype=torch.float32)


def _traceable(feat, boxes, levels, stride, offset):
    return roi_spp_one_map(feat, boxes, levels, stride, offset)


@pytest.mark.parametrize(
    "levels, stride, offset",
    [((6, 3, 2, 1), 16, 0.0), ((4, 2, 1), 8, 3.5), ((5, 1), 16, 8.5), ((1, 2, 3, 4, 8), 16, 4.0), ((3, 2), 16, 0.0)],
)
def test_equals_roi_spp_on_random_maps(levels, stride, offset):
    rng = np.random.default_rng(stride)
    feat = torch.randn(1, 12, 27, 35, generator=torch.Generator().manual_seed(0))
    boxes = _windows(rng, 300, 35 * stride, 27 * stride)
    rois = torch.cat([torch.zeros(len(boxes), 1), boxes], 1)
    ref = roi_spp(feat, rois, levels, stride, offset)
    got = _traceable(feat, boxes, levels, stride, offset)
    torch.testing.assert_close(got, ref, rtol=0, atol=0)
    torch.testing.assert_close(
        project_cells(boxes, stride, offset, torch.full((len(boxes),), 27), torch.full((len(boxes),), 35)),
        project_rois(rois, stride, offset, 27, 35),
    )


def test_stacked_maps_read_only_their_own_extent():
    """Two maps of different sizes zero-padded into one stack: each window equals roi_spp on
    its own map, padding is never pooled (all features negative, so a read 0 would show)."""
    g = torch.Generator().manual_seed(1)
    small, big = -torch.rand(1, 8, 9, 13, generator=g) - 0.1, -torch.rand(1, 8, 20, 31, generator=g) - 0.1
    stack = torch.zeros(2, 8, 20, 31)
    stack[0, :, :9, :13], stack[1] = small[0], big[0]
    rng = np.random.default_rng(2)
    boxes = _windows(rng, 100, 31 * 16, 20 * 16)
    which = torch.from_numpy(rng.integers(0, 2, len(boxes)))
    sizes = torch.tensor([[9, 13], [20, 31]])[which]
    got = roi_spp_traceable(stack, which, boxes, sizes[:, 0], sizes[:, 1], (4, 2, 1), 16, 0.0)
    for s, feat in enumerate((small, big)):
        idx = torch.nonzero(which == s).flatten()
        rois = torch.cat([torch.zeros(len(idx), 1), boxes[idx]], 1)
        torch.testing.assert_close(got[idx], roi_spp(feat, rois, (4, 2, 1), 16, 0.0), rtol=0, atol=0)


def test_equals_roi_spp_on_a_real_map(shared_data):
    """Conv map of a real photo (tiny backbone) and its real Selective Search windows."""
    from sppdet.config import load_config
    from sppdet.data.image_io import read_image
    from sppdet.modeling.detector import build_detector
    from sppdet.proposals.io import load_proposals

    folder = shared_data("voc07-demo")
    image = read_image(folder / "000004.jpg")
    boxes = torch.from_numpy(load_proposals(folder / "000004_boxes.mat")["000004"][0])
    cfg = load_config(None, ["model.backbone=tiny", "model.tiny_width=8", "model.frozen_bn=false"])
    torch.manual_seed(0)
    model = build_detector(cfg, 2).eval()
    with torch.no_grad():
        batch = model.prepare([image], [400], 1000)
        feat = model.backbone(batch.images[0])
    scaled = boxes * float(batch.factors[0, 0])
    rois = torch.cat([torch.zeros(len(boxes), 1), scaled], 1)
    s, o = model.spp.stride, model.spp.offset
    ref = roi_spp(feat, rois, (6, 3, 2, 1), s, o)
    torch.testing.assert_close(_traceable(feat, scaled, (6, 3, 2, 1), s, o), ref, rtol=0, atol=0)


def test_onnxruntime_max_roi_pool_equals_roi_spp():
    ort = pytest.importorskip("onnxruntime")

    class SPP(torch.nn.Module):
        def forward(self, feat, boxes):
            return _traceable(feat, boxes, (6, 3, 2, 1), 16, 0.0)

    feat = torch.randn(1, 6, 21, 29, generator=torch.Generator().manual_seed(3))
    boxes = _windows(np.random.default_rng(3), 200, 29 * 16, 21 * 16)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            SPP(), (feat[:, :, :10, :10], boxes[:5]), buf, input_names=["feat", "boxes"], opset_version=17,
            dynamic_axes={"feat": {2: "h", 3: "w"}, "boxes": {0: "n"}}, dynamo=False,
        )  # fmt: skip
    sess = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"feat": feat.numpy(), "boxes": boxes.numpy()})[0]
    rois = torch.cat([torch.zeros(len(boxes), 1), boxes], 1)
    np.testing.assert_array_equal(got, roi_spp(feat, rois, (6, 3, 2, 1), 16, 0.0).numpy())


def test_plan_pools_only_levels_that_divide_no_finer_one():
    assert plan_levels((6, 3, 2, 1)) == {6: None, 3: 6, 2: 6, 1: 2}
    assert plan_levels((1, 2, 3, 4, 8)) == {8: None, 4: 8, 3: None, 2: 4, 1: 2}


def test_check_levels_flags_float32_bin_errors():
    """n = 7 over 57 cells: 57/7 in float32 times 7 rounds up past 57, one bin too many cells."""
    assert check_levels((6, 3, 2, 1, 4, 5, 8), 4096) == ()
    assert check_levels((7, 2, 1), 4096) == (7,)
    assert check_levels((7,), 56) == ()
    # by hand: 57/7 = 8.142857 rounds to float32 8.1428575, and 7 * that = 57.000004, so the
    # last bin would end at cell ceil(57.000004) = 58 instead of 57
    assert float(np.float32(7) * (np.float32(57) / np.float32(7))) > 57.0
