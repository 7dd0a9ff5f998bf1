"""Training path of region max-SPP (one roi_pool with argmax, block maxima, scatter backward):
same outputs and gradients as one torchvision roi_pool per level, and gradcheck."""

import torch
from torchvision.ops import roi_pool

from sppdet.layers.spp import project_rois, roi_spp
from sppdet.layers.spp.max_train import level_sources, roi_spp_max_train

LEVELS = (6, 3, 2, 1)


def _setup(dtype=torch.float32, n=40, seed=0, c=5, h=13, w=17):
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(2, c, h, w, generator=g, dtype=dtype)
    wh = torch.rand(n, 2, generator=g) * torch.tensor([w * 15.0, h * 15.0]) + 8
    xy = torch.rand(n, 2, generator=g) * (torch.tensor([w * 16.0, h * 16.0]) - wh)
    rois = torch.cat([torch.randint(0, 2, (n, 1), generator=g).to(dtype), xy.to(dtype), (xy + wh).to(dtype)], 1)
    return feats, rois


def test_plan():
    assert level_sources((6, 3, 2, 1)) == {6: None, 3: 6, 2: 6, 1: 2}
    assert level_sources((4, 3, 1)) == {4: None, 3: None, 1: 3}


def test_matches_roi_pool_per_level_values_and_gradients():
    feats, rois = _setup()
    cells = project_rois(rois, 16, 0.0, 13, 17)
    boxes = torch.cat([rois[:, :1], cells.to(feats.dtype)], 1)
    ref_in = feats.clone().requires_grad_()
    ref = torch.cat([roi_pool(ref_in, boxes, (n, n), 1.0).flatten(1) for n in LEVELS], 1)
    got_in = feats.clone().requires_grad_()
    got = roi_spp_max_train(got_in, rois[:, 0].long(), cells, LEVELS)
    assert torch.equal(got, ref)
    w = torch.randn_like(ref)
    (ref * w).sum().backward()
    (got * w).sum().backward()
    torch.testing.assert_close(got_in.grad, ref_in.grad, rtol=1e-5, atol=1e-5)
    # roi_spp dispatches training to this path where roi_pool's bins are the paper's
    via = feats.clone().requires_grad_()
    torch.testing.assert_close(roi_spp(via, rois, LEVELS, 16), ref)


def test_gradcheck_double():
    feats, rois = _setup(torch.float64, n=4, seed=1, c=2, h=7, w=8)
    cells = project_rois(rois, 16, 0.0, 7, 8)
    x = feats.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda t: roi_spp_max_train(t, rois[:, 0].long(), cells, LEVELS), (x,))
