"""SPP layers against slow pure-Python loops written from the spec, plus gradcheck."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import sppdet.layers.spp as spp_mod
import sppdet.layers.spp.common as spp_common
import sppdet.layers.spp.max_numba as spp_numba
import sppdet.layers.spp.max_roi_pool as spp_roi_pool
import sppdet.layers.spp.region as spp_region
from sppdet.layers import (
    RoISpatialPyramidPool,
    SpatialPyramidPool,
    paper_pool_params,
    project_rois,
    pyramid_length,
    roi_spp,
    spatial_pyramid_pool,
)

# ---------------------------------------------------------------------------------------
# Slow references: plain loops over regions, levels and bins


def ref_cells(box, stride, offset, h, w):
    """Inclusive cells (x1', y1', x2', y2') of one window, straight from the spec."""
    x1, y1, x2, y2 = (float(v) for v in box)

    def axis(lo, hi, size):
        a = math.floor((lo - offset) / stride) + 1
        b = math.ceil((hi - offset) / stride) - 1
        if b < a:
            a = b = math.floor(((lo + hi) / 2 - offset) / stride + 0.5)
        return min(max(a, 0), size - 1), min(max(b, 0), size - 1)

    (ax, bx), (ay, by) = axis(x1, x2, w), axis(y1, y2, h)
    return ax, ay, bx, by


def ref_bins(first, last, n):
    a = last - first + 1
    return [(first + (i * a) // n, first + -(-((i + 1) * a) // n)) for i in range(n)]


def ref_pool(fmap, ybins, xbins, mode):
    """(C, n, n) pooled over explicit bins of fmap (C, H, W)."""
    out = torch.empty(fmap.shape[0], len(ybins), len(xbins), dtype=fmap.dtype)
    for i, (ys, ye) in enumerate(ybins):
        for j, (xs, xe) in enumerate(xbins):
            patch = fmap[:, ys:ye, xs:xe].reshape(fmap.shape[0], -1)
            out[:, i, j] = patch.amax(1) if mode == "max" else patch.mean(1)
    return out


def ref_roi_spp(features, rois, levels, stride, offset, mode):
    rows = []
    for r in rois.tolist():
        b = int(r[0])
        fmap = features[b]
        x1, y1, x2, y2 = ref_cells(r[1:], stride, offset, fmap.shape[1], fmap.shape[2])
        parts = [ref_pool(fmap, ref_bins(y1, y2, n), ref_bins(x1, x2, n), mode).reshape(-1) for n in levels]
        rows.append(torch.cat(parts))
    return torch.stack(rows)


def random_rois(n, img_w, img_h, num_images=1, seed=0):
    """Tiny, huge, border and out-of-image windows."""
    g = torch.Generator().manual_seed(seed)
    w = torch.exp(torch.empty(n).uniform_(math.log(1.0), math.log(3 * img_w), generator=g))
    h = torch.exp(torch.empty(n).uniform_(math.log(1.0), math.log(3 * img_h), generator=g))
    x1 = torch.empty(n).uniform_(-0.5 * img_w, 1.2 * img_w, generator=g)
    y1 = torch.empty(n).uniform_(-0.5 * img_h, 1.2 * img_h, generator=g)
    b = torch.randint(0, num_images, (n,), generator=g).float()
    rois = torch.stack([b, x1, y1, x1 + w, y1 + h], 1)
    fixed = torch.tensor(
        [
            [0, 0, 0, img_w, img_h],  # the whole image
            [0, -1000, -1000, 3 * img_w, 3 * img_h],  # much larger than the image
            [0, 0.0, 0.0, 0.5, 0.5],  # sub-pixel, at the corner
            [0, img_w - 3, img_h - 2, img_w, img_h],  # bottom-right border
            [0, 5 * img_w, 10, 6 * img_w, 40],  # entirely right of the image
            [0, -300, -200, -100, -50],  # entirely above-left
            [0, 40.0, 40.0, 41.0, 41.0],  # one pixel
        ]
    )
    fixed[:, 0] = torch.arange(len(fixed)) % num_images
    return torch.cat([rois, fixed])


# ---------------------------------------------------------------------------------------
# Projection


def test_project_rois_hand_computed():
    rois = torch.tensor(
        [
            # S=16, offset=0: x1'=floor(0/16)+1=1, x2'=ceil(100/16)-1=ceil(6.25)-1=6;
            #                 y1'=floor(0/16)+1=1, y2'=ceil(50/16)-1=ceil(3.125)-1=3
            [0, 0.0, 0.0, 100.0, 50.0],
            # x1'=floor(32/16)+1=3 > x2'=ceil(48/16)-1=2: centre 40/16=2.5 -> floor(2.5+0.5)=3;
            # y1'=floor(16/16)+1=2, y2'=ceil(40/16)-1=ceil(2.5)-1=2
            [0, 32.0, 16.0, 48.0, 40.0],
            # x1'=floor(1000/16)+1=63, x2'=ceil(1500/16)-1=ceil(93.75)-1=93 -> clamped to 19, 19
            [0, 1000.0, 17.0, 1500.0, 47.0],  # y: floor(17/16)+1=2, ceil(47/16)-1=ceil(2.9375)-1=2
            # x1'=floor(-500/16)+1=-32+1=-31, x2'=ceil(-100/16)-1=-6-1=-7 -> clamped 0, 0
            [0, -500.0, -300.0, -100.0, -50.0],
            # big: x1'=floor(-10/16)+1=0, x2'=ceil(5000/16)-1=312 -> 19; y: 0 .. ceil(400/16)-1=24 -> 9
            [0, -10.0, -10.0, 5000.0, 400.0],
        ]
    )
    cells = project_rois(rois, 16, 0.0, feat_h=10, feat_w=20)
    assert cells.dtype == torch.int64
    assert cells.tolist() == [[1, 1, 6, 3], [3, 2, 3, 2], [19, 2, 19, 2], [0, 0, 0, 0], [0, 0, 19, 9]]


def test_project_rois_offset():
    # offset 8: x1'=floor((0-8)/16)+1=floor(-0.5)+1=0, x2'=ceil((100-8)/16)-1=ceil(5.75)-1=5,
    #           y2'=ceil((50-8)/16)-1=ceil(2.625)-1=2
    cells = project_rois(torch.tensor([[0, 0.0, 0.0, 100.0, 50.0]]), 16, 8.0, 100, 100)
    assert cells.tolist() == [[0, 0, 5, 2]]


def test_project_rois_matches_reference_and_never_empty():
    rois = random_rois(500, 300, 200, seed=1)
    for stride, offset, (h, w) in [(16, 0.0, (13, 19)), (8, 3.5, (1, 1)), (32, -4.0, (2, 40))]:
        cells = project_rois(rois, stride, offset, h, w)
        ref = [ref_cells(r[1:], stride, offset, h, w) for r in rois.tolist()]
        assert cells.tolist() == [list(c) for c in ref]
        assert (cells[:, 2] >= cells[:, 0]).all() and (cells[:, 3] >= cells[:, 1]).all()
        assert cells[:, 0::2].max() < w and cells[:, 1::2].max() < h and cells.min() >= 0


# ---------------------------------------------------------------------------------------
# Region SPP


@pytest.mark.parametrize("mode", ["max", "avg"])
@pytest.mark.parametrize(
    "shape,levels,stride,offset",
    [
        ((2, 3, 7, 9), (6, 3, 2, 1), 16, 0.0),
        ((2, 3, 7, 9), (5, 3, 4, 1), 16, 7.5),  # levels that divide no finer one
        ((1, 2, 1, 1), (6, 3, 2, 1), 16, 0.0),  # 1x1 map
        ((2, 2, 2, 30), (6, 3, 2, 1), 8, 2.0),  # H < n, W >> H
        ((1, 4, 13, 13), (4, 2, 1), 32, 0.0),
    ],
)
def test_roi_spp_matches_loop(mode, shape, levels, stride, offset):
    torch.manual_seed(0)
    features = torch.randn(*shape, dtype=torch.float64)
    img_h, img_w = shape[2] * stride, shape[3] * stride
    rois = random_rois(60, img_w, img_h, num_images=shape[0])
    ref = ref_roi_spp(features, rois, levels, stride, offset, mode)
    out = roi_spp(features, rois, levels, stride, offset, mode)  # fast path (no grad)
    assert out.shape == (len(rois), pyramid_length(shape[1], levels))
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    grad_out = roi_spp(features.clone().requires_grad_(), rois, levels, stride, offset, mode)
    torch.testing.assert_close(grad_out.detach(), ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mode,numba", [("max", True), ("max", False), ("avg", False)])
def test_roi_spp_fast_and_autograd_paths_agree_on_realistic_map(monkeypatch, mode, numba):
    monkeypatch.setattr(spp_numba, "HAVE_NUMBA", numba and spp_numba.HAVE_NUMBA)
    torch.manual_seed(0)
    features = torch.randn(2, 8, 43, 58)
    rois = random_rois(150, 917, 688, num_images=2, seed=3)
    fast = roi_spp(features, rois, mode=mode)  # no autograd: chunked, written in place
    ref = ref_roi_spp(features.double(), rois, (6, 3, 2, 1), 16, 0.0, mode).float()
    slow = roi_spp(features.clone().requires_grad_(), rois, mode=mode).detach()  # differentiable path
    monkeypatch.setattr(spp_common, "CPU_CHUNK_BYTES", 1)  # one RoI per chunk
    chunked = roi_spp(features, rois, mode=mode)
    if mode == "max":
        assert torch.equal(fast, ref) and torch.equal(fast, slow) and torch.equal(fast, chunked)
    else:
        torch.testing.assert_close(fast, ref, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(slow, fast, rtol=0, atol=0)
        torch.testing.assert_close(chunked, fast, rtol=0, atol=0)


def test_roi_spp_float32_avg_is_accurate():
    torch.manual_seed(0)
    features = torch.randn(1, 4, 43, 58) * 100 + 1000  # large offset: a naive float32 SAT would drift
    rois = random_rois(40, 917, 688, seed=4)
    out = roi_spp(features, rois, mode="avg")
    ref = ref_roi_spp(features.double(), rois, (6, 3, 2, 1), 16, 0.0, "avg")
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), ref, rtol=1e-6, atol=1e-4)


def test_roi_spp_batch_index_selects_the_map():
    features = torch.stack([torch.zeros(3, 5, 5), torch.ones(3, 5, 5)])
    rois = torch.tensor([[0, 0.0, 0.0, 80.0, 80.0], [1, 0.0, 0.0, 80.0, 80.0]])
    for mode in ("max", "avg"):
        out = roi_spp(features, rois, (2, 1), 16, mode=mode)
        assert out.shape == (2, 3 * 5)
        assert (out[0] == 0).all() and (out[1] == 1).all()


def test_roi_spp_layout_is_channel_major_per_level():
    features = torch.arange(2 * 4 * 4, dtype=torch.float32).view(1, 2, 4, 4)
    # window covering all 4x4 cells: x1'=floor(-8/16)+1=0 (offset 8), x2'=ceil((64-8)/16)-1=3
    out = roi_spp(features, torch.tensor([[0, 0.0, 0.0, 64.0, 64.0]]), (2, 1), 16, offset=8.0)
    expected = torch.cat(
        [F.adaptive_max_pool2d(features, 2).reshape(1, -1), F.adaptive_max_pool2d(features, 1).reshape(1, -1)], 1
    )
    assert torch.equal(out, expected)


@pytest.mark.parametrize("mode", ["max", "avg"])
def test_roi_spp_gradcheck(mode):
    # Distinct values: no ties, so max pooling is differentiable at this point.
    features = torch.randperm(2 * 2 * 5 * 6, generator=torch.Generator().manual_seed(0)).double() / 10
    features = features.view(2, 2, 5, 6).requires_grad_()
    rois = torch.tensor(
        [
            [0, 0.0, 0.0, 96.0, 80.0],
            [1, 10.0, 5.0, 60.0, 70.0],
            [0, 30.0, 30.0, 35.0, 34.0],
            [1, -50.0, 20.0, 40.0, 200.0],
            [1, 80.0, 0.0, 96.0, 16.0],
        ]
    )
    assert torch.autograd.gradcheck(lambda f: roi_spp(f, rois, (3, 2, 1), 16, 0.0, mode), (features,))


@pytest.fixture(params=["numba", "roi_pool", "rank_keys"])
def max_grad_path(request, monkeypatch):
    """Run a test on every differentiable max path (numba kernels; torchvision roi_pool; rank keys)."""
    if request.param == "numba" and not spp_numba.HAVE_NUMBA:
        pytest.skip("numba is not installed")
    if request.param != "numba":
        monkeypatch.setattr(spp_numba, "HAVE_NUMBA", False)
    if request.param == "rank_keys":
        monkeypatch.setattr(spp_region, "roi_pool_bins_match", lambda *a: False)
    return request.param


def test_roi_pool_bins_match_hand_values():
    # 57 cells in 7 bins: float32 57/7 * 7 = 57.000004, so roi_pool's last bin would end a cell late
    wide = torch.tensor([[0, 0, 56, 5]])
    assert not spp_roi_pool.roi_pool_bins_match(wide, (7, 1), torch.float32)
    assert spp_roi_pool.roi_pool_bins_match(wide, (6, 3, 2, 1), torch.float32)
    assert spp_roi_pool.roi_pool_bins_match(torch.tensor([[0, 0, 55, 5]]), (7, 1), torch.float32)
    assert not spp_roi_pool.roi_pool_bins_match(wide, (6, 1), torch.float16)  # not checked: never used


def test_roi_spp_level_roi_pool_would_bin_differently_uses_rank_keys(monkeypatch):
    """A window 57 cells wide at level 7: the differentiable path still matches the loop."""
    monkeypatch.setattr(spp_numba, "HAVE_NUMBA", False)  # the torch paths (numba bins exactly)
    values = torch.randperm(2 * 60 * 8, generator=torch.Generator().manual_seed(1)).float().view(1, 2, 8, 60)
    rois = torch.tensor([[0, 0.0, 0.0, 460.0, 64.0], [0, 0.0, 8.0, 100.0, 40.0]])
    cells = spp_mod.project_rois(rois, 8, 0.0, 8, 60)
    assert cells[0, 0] == 1 and cells[0, 2] == 57  # 57 cells
    assert not spp_roi_pool.roi_pool_bins_match(cells, (7, 1), torch.float32)
    weights = torch.randn(2, 2 * 50)
    f = values.clone().requires_grad_()
    out = roi_spp(f, rois, (7, 1), 8)
    (out * weights).sum().backward()
    g = values.clone().requires_grad_()
    ref = ref_roi_spp(g, rois, (7, 1), 8, 0.0, "max")
    (ref * weights).sum().backward()
    assert torch.equal(out.detach(), ref.detach())
    torch.testing.assert_close(f.grad, g.grad)


def test_roi_spp_max_gradient_matches_loop_reference(max_grad_path):
    torch.manual_seed(0)
    values = torch.randperm(2 * 4 * 13 * 17).float().view(2, 4, 13, 17)  # distinct: no ties
    rois = random_rois(40, 17 * 16, 13 * 16, num_images=2, seed=7)
    weights = torch.randn(len(rois), 4 * 50)
    f = values.clone().requires_grad_()
    (roi_spp(f, rois) * weights).sum().backward()
    g = values.clone().requires_grad_()
    (ref_roi_spp(g, rois, (6, 3, 2, 1), 16, 0.0, "max") * weights).sum().backward()
    torch.testing.assert_close(f.grad, g.grad)


def test_roi_spp_max_gradient_ties_go_to_first_cell(max_grad_path):
    features = torch.zeros(1, 1, 4, 4, requires_grad=True)
    # offset 8: the window (0, 0, 64, 64) covers cells 0..3 on both axes
    roi_spp(features, torch.tensor([[0, 0.0, 0.0, 64.0, 64.0]]), (2, 1), 16, 8.0).sum().backward()
    expected = torch.zeros(4, 4)
    expected[0, 0], expected[0, 2], expected[2, 0], expected[2, 2] = 2, 1, 1, 1  # level 2 + level 1
    assert torch.equal(features.grad[0, 0], expected)


def test_roi_spp_empty_and_errors():
    features = torch.randn(1, 3, 4, 4)
    assert roi_spp(features, torch.zeros(0, 5)).shape == (0, 3 * 50)
    with pytest.raises(ValueError, match="batch index"):
        roi_spp(features, torch.tensor([[1, 0.0, 0.0, 10.0, 10.0]]))
    with pytest.raises(ValueError, match="finite"):
        roi_spp(features, torch.tensor([[0, float("nan"), 0.0, 10.0, 10.0]]))
    with pytest.raises(ValueError, match=r"\(K, 5\)"):
        roi_spp(features, torch.zeros(2, 4))
    with pytest.raises(ValueError, match="mode"):
        roi_spp(features, torch.zeros(1, 5), mode="sum")
    with pytest.raises(ValueError, match="levels"):
        roi_spp(features, torch.zeros(1, 5), levels=(2, 0))


def test_roi_module_wraps_function():
    spp = RoISpatialPyramidPool(levels=(3, 1), stride=8, offset=3.5, mode="avg")
    features = torch.randn(1, 5, 6, 7)
    rois = random_rois(10, 56, 48, seed=5)
    assert torch.equal(spp(features, rois), roi_spp(features, rois, (3, 1), 8, 3.5, "avg"))
    assert spp.output_size(5) == 5 * 10
    assert "levels=(3, 1)" in repr(spp)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("mode", ["max", "avg"])
def test_roi_spp_cuda_matches_cpu(mode):
    torch.manual_seed(0)
    features = torch.randn(2, 16, 43, 58)
    rois = random_rois(300, 917, 688, num_images=2, seed=6)
    cpu = roi_spp(features, rois, mode=mode)
    gpu = roi_spp(features.cuda(), rois.cuda(), mode=mode)
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-5, atol=1e-5)
    f = features.cuda().requires_grad_()
    roi_spp(f, rois.cuda(), mode=mode).sum().backward()
    fc = features.clone().requires_grad_()
    roi_spp(fc, rois, mode=mode).sum().backward()
    torch.testing.assert_close(f.grad.cpu(), fc.grad, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------------------------
# Image-level SPP


@pytest.mark.parametrize("mode", ["max", "avg"])
@pytest.mark.parametrize("hw", [(1, 1), (2, 3), (13, 13), (5, 40), (10, 11)])
def test_adaptive_spp_equals_torch_adaptive_pooling(mode, hw):
    torch.manual_seed(0)
    x = torch.randn(2, 3, *hw, dtype=torch.float64)
    levels = (4, 2, 1)
    out = SpatialPyramidPool(levels, mode=mode)(x)
    pool = F.adaptive_max_pool2d if mode == "max" else F.adaptive_avg_pool2d
    assert torch.equal(out, torch.cat([pool(x, n).reshape(2, -1) for n in levels], 1))
    ref = torch.stack(
        [
            torch.cat(
                [ref_pool(x[b], ref_bins(0, hw[0] - 1, n), ref_bins(0, hw[1] - 1, n), mode).reshape(-1) for n in levels]
            )
            for b in range(2)
        ]
    )
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)


def test_paper_params():
    assert paper_pool_params(13, 3) == (5, 4)  # the paper's example: 13x13 conv5, 3x3 bins
    assert paper_pool_params(13, 6) == (3, 2)
    assert paper_pool_params(13, 1) == (13, 13)
    assert paper_pool_params(10, 6) is None  # win 2, stride 1 -> 9 bins
    assert paper_pool_params(11, 4) is None  # win 3, stride 2 -> 5 bins
    assert paper_pool_params(3, 4) is None  # stride 0
    for a in range(1, 60):
        for n in range(1, 9):
            p = paper_pool_params(a, n)
            assert (p is None) == (a < n or a % n > a // n)  # the documented condition
            if p is not None:
                win, stride = p
                assert (a - win) // stride + 1 == n and (n - 1) * stride + win <= a


def paper_ref_bins(a, n):
    p = paper_pool_params(a, n)
    if p is None:
        return ref_bins(0, a - 1, n)  # documented fallback: adaptive on this axis
    win, stride = p
    return [(i * stride, i * stride + win) for i in range(n)]


@pytest.mark.parametrize("mode", ["max", "avg"])
@pytest.mark.parametrize("hw", [(13, 13), (10, 11), (13, 10), (3, 2), (1, 1), (7, 30)])
def test_paper_spp_matches_loop(mode, hw):
    torch.manual_seed(0)
    x = torch.randn(2, 3, *hw, dtype=torch.float64)
    levels = (6, 4, 3, 2, 1)
    out = spatial_pyramid_pool(x, levels, mode, binning="paper")
    assert out.shape == (2, pyramid_length(3, levels))
    ref = torch.stack(
        [
            torch.cat(
                [ref_pool(x[b], paper_ref_bins(hw[0], n), paper_ref_bins(hw[1], n), mode).reshape(-1) for n in levels]
            )
            for b in range(2)
        ]
    )
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)


def test_paper_spp_on_13x13_is_the_papers_pooling():
    x = torch.randn(1, 4, 13, 13)
    out = spatial_pyramid_pool(x, (3,), binning="paper")
    assert torch.equal(out, F.max_pool2d(x, 5, 4).reshape(1, -1))


def test_paper_spp_length_never_changes():
    spp = SpatialPyramidPool((6, 4, 3, 2, 1), binning="paper")
    for h in range(1, 16):
        for w in (1, 4, 10, 11, 17):
            assert spp(torch.randn(1, 2, h, w)).shape == (1, 2 * (36 + 16 + 9 + 4 + 1))


@pytest.mark.parametrize("binning", ["adaptive", "paper"])
@pytest.mark.parametrize("mode", ["max", "avg"])
def test_spp_gradcheck(binning, mode):
    # 10 x 11 with n = 4: rows use the paper's window (3, stride 2), columns fall back to adaptive.
    x = torch.randperm(10 * 11, generator=torch.Generator().manual_seed(1)).double() / 7
    x = x.view(1, 1, 10, 11).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: spatial_pyramid_pool(t, (4, 3, 1), mode, binning), (x,))


def test_spp_errors():
    with pytest.raises(ValueError, match="binning"):
        SpatialPyramidPool(binning="caffe")
    with pytest.raises(ValueError, match="mode"):
        SpatialPyramidPool(mode="median")
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        spatial_pyramid_pool(torch.randn(3, 4, 5))
