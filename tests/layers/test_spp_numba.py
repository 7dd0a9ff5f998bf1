"""numba kernels of region max-SPP (CPU float32): forward equal to a plain loop and to the torch
paths, gradients bitwise equal to the torch training path where no maximum is tied, ties to the
first cell, and the torch paths still serve when numba is switched off."""

import numpy as np
import pytest
import torch

import sppdet.layers.spp.max_numba as spp_numba
from sppdet.layers.spp import project_rois, roi_spp
from sppdet.layers.spp.max_tables import roi_spp_max
from sppdet.layers.spp.max_train import roi_spp_max_train

pytestmark = pytest.mark.skipif(not spp_numba.HAVE_NUMBA, reason="numba is not installed")

LEVELS = (6, 3, 2, 1)


def loop_spp(features, batch, cells, levels):
    """Plain loops over windows, levels and bins (max): ``(K, C * sum(n*n))``; and, per output,
    the flat map index of the first maximal cell in row-major order (for the gradient)."""
    f = features.detach().double().numpy()
    N, C, H, W = f.shape
    rows, where = [], []
    for b, (x1, y1, x2, y2) in zip(batch.tolist(), cells.tolist()):
        vals, idx = [], []
        for n in levels:
            v, i = np.empty((C, n, n)), np.empty((C, n, n), np.int64)
            for by in range(n):
                ys, ye = y1 + by * (y2 - y1 + 1) // n, y1 + -(-(by + 1) * (y2 - y1 + 1) // n)
                for bx in range(n):
                    xs, xe = x1 + bx * (x2 - x1 + 1) // n, x1 + -(-(bx + 1) * (x2 - x1 + 1) // n)
                    patch = f[b, :, ys:ye, xs:xe].reshape(C, -1)
                    first = patch.argmax(1)  # numpy: the first maximum
                    v[:, by, bx] = patch.max(1)
                    cy, cx = ys + first // (xe - xs), xs + first % (xe - xs)
                    i[:, by, bx] = ((b * C + np.arange(C)) * H + cy) * W + cx
            vals.append(v.ravel())
            idx.append(i.ravel())
        rows.append(np.concatenate(vals))
        where.append(np.concatenate(idx))
    return torch.from_numpy(np.stack(rows)).to(features.dtype), torch.from_numpy(np.stack(where))


def windows(n, H, W, num_images, seed):
    """Inclusive cells: random, 1-cell, along every border, the whole map."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, W, (n, 2), generator=g).sort(1).values
    y = torch.randint(0, H, (n, 2), generator=g).sort(1).values
    cells = torch.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], 1)
    fixed = torch.tensor(
        [
            [0, 0, 0, 0],  # 1 cell, top-left
            [W - 1, H - 1, W - 1, H - 1],  # 1 cell, bottom-right
            [0, 0, W - 1, H - 1],  # the whole map
            [W - 1, 0, W - 1, H - 1],  # right border column
            [0, H - 1, W - 1, H - 1],  # bottom border row
            [max(0, W - 3), max(0, H - 2), W - 1, H - 1],  # small, at the corner
        ]
    )
    cells = torch.cat([cells, fixed])
    batch = torch.randint(0, num_images, (len(cells),), generator=g)
    return batch, cells


@pytest.mark.parametrize(
    "shape,levels",
    [
        ((3, 5, 9, 11), LEVELS),  # several images, channels not a multiple of 8
        ((1, 13, 1, 7), LEVELS),  # a single row: bins repeat cells
        ((2, 3, 8, 6), (5, 3, 4, 1)),  # two direct levels (5, 4), 1 from 3
        ((1, 4, 6, 6), (2, 2, 1)),  # a level listed twice
    ],
)
def test_forward_equals_loop_and_torch_paths(shape, levels):
    features = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    batch, cells = windows(40, shape[2], shape[3], shape[0], seed=1)
    ref, _ = loop_spp(features, batch, cells, levels)
    got = spp_numba.roi_spp_max_numba(features, batch, cells, levels)
    assert torch.equal(got, ref)
    assert torch.equal(got, roi_spp_max(features, batch, cells, levels))  # torch inference path
    train = spp_numba.RoISPPMaxNumba.apply(features.clone().requires_grad_(), batch, cells, levels)
    assert torch.equal(train.detach(), ref)


def test_non_contiguous_map():
    base = torch.randn(2, 7, 10, 24, generator=torch.Generator().manual_seed(2))
    features = base[:, :, :, ::2]  # (2, 7, 10, 12), not contiguous
    channels_last = torch.randn(2, 9, 10, 12).to(memory_format=torch.channels_last)
    for f in (features, channels_last):
        batch, cells = windows(30, 10, 12, 2, seed=3)
        assert torch.equal(spp_numba.roi_spp_max_numba(f, batch, cells, LEVELS), loop_spp(f, batch, cells, LEVELS)[0])


def _grad_case(seed, shape=(2, 6, 12, 15)):
    n = int(np.prod(shape))
    features = (torch.randperm(n, generator=torch.Generator().manual_seed(seed)).float() / n).view(shape)  # no ties
    batch, cells = windows(50, shape[2], shape[3], shape[0], seed=seed)
    return features, batch, cells


def test_gradient_bitwise_equals_torch_training_path():
    features, batch, cells = _grad_case(4)
    a, b = features.clone().requires_grad_(), features.clone().requires_grad_()
    out_a = spp_numba.RoISPPMaxNumba.apply(a, batch, cells, LEVELS)
    out_b = roi_spp_max_train(b, batch, cells, LEVELS)
    weights = torch.randn(out_a.shape, generator=torch.Generator().manual_seed(5))
    (out_a * weights).sum().backward()
    (out_b * weights).sum().backward()
    assert torch.equal(out_a, out_b) and torch.equal(a.grad, b.grad)
    a.grad = b.grad = None  # a broadcast gradient (loss = sum) is read in place, not copied
    spp_numba.RoISPPMaxNumba.apply(a, batch, cells, LEVELS).sum().backward()
    roi_spp_max_train(b, batch, cells, LEVELS).sum().backward()
    assert torch.equal(a.grad, b.grad)


@pytest.mark.parametrize("levels", [(5, 3, 4, 1), (2, 2, 1)])
def test_gradient_equals_loop_for_other_pyramids(levels):
    features, batch, cells = _grad_case(6, shape=(2, 5, 9, 10))
    _, where = loop_spp(features, batch, cells, levels)
    weights = torch.randn(where.shape, generator=torch.Generator().manual_seed(7))
    expected = torch.zeros(features.numel(), dtype=torch.float64).index_add_(
        0, where.view(-1), weights.double().view(-1)
    )
    f = features.clone().requires_grad_()
    (spp_numba.RoISPPMaxNumba.apply(f, batch, cells, levels) * weights).sum().backward()
    torch.testing.assert_close(f.grad.double().view(-1), expected, rtol=1e-5, atol=1e-5)


def test_ties_go_to_the_first_cell_as_in_the_torch_path():
    features = torch.zeros(1, 3, 7, 9)
    features[0, 1, 2:5, 3:8] = 1.0  # a plateau of equal maxima
    batch, cells = windows(30, 7, 9, 1, seed=8)
    a, b = features.clone().requires_grad_(), features.clone().requires_grad_()
    spp_numba.RoISPPMaxNumba.apply(a, batch, cells, LEVELS).sum().backward()
    roi_spp_max_train(b, batch, cells, LEVELS).sum().backward()
    assert torch.equal(a.grad, b.grad)
    _, where = loop_spp(features, batch, cells, LEVELS)  # the first maximal cell of every bin
    first = torch.zeros(features.numel()).index_add_(0, where.view(-1), torch.ones(where.numel()))
    assert torch.equal(a.grad.view(-1), first)


def test_roi_spp_dispatch(monkeypatch):
    features = torch.randn(2, 4, 13, 17, generator=torch.Generator().manual_seed(9))
    rois = torch.tensor([[0, 0.0, 0.0, 200.0, 150.0], [1, 30.0, 20.0, 90.0, 200.0], [1, 5.0, 5.0, 6.0, 6.0]])
    calls = []
    monkeypatch.setattr(spp_numba, "_threads", lambda real=spp_numba._threads: calls.append(1) or real())
    with torch.no_grad():
        fast = roi_spp(features, rois)
    roi_spp(features.clone().requires_grad_(), rois).sum().backward()
    assert len(calls) == 3  # inference forward, training forward and backward
    cells = project_rois(rois, 16, 0.0, 13, 17)
    assert torch.equal(fast, roi_spp_max(features, rois[:, 0].long(), cells, LEVELS))
    assert not spp_numba.applies(features.double()) and not spp_numba.applies(features.half())


def test_without_numba_the_torch_paths_run(monkeypatch):
    monkeypatch.setattr(spp_numba, "HAVE_NUMBA", False)
    monkeypatch.setattr(spp_numba, "_threads", lambda: pytest.fail("numba used although switched off"))
    features, batch, cells = _grad_case(10, shape=(1, 4, 8, 9))
    rois = torch.tensor([[0, 0.0, 0.0, 120.0, 100.0], [0, 40.0, 16.0, 80.0, 60.0]])
    with torch.no_grad():
        out = roi_spp(features, rois)
    f = features.clone().requires_grad_()
    roi_spp(f, rois).sum().backward()
    cells = project_rois(rois, 16, 0.0, 8, 9)
    ref, where = loop_spp(features, rois[:, 0].long(), cells, LEVELS)
    assert torch.equal(out, ref)
    assert torch.equal(
        f.grad.view(-1), torch.zeros(features.numel()).index_add_(0, where.view(-1), torch.ones(where.numel()))
    )


def test_threads_follow_torch_and_are_restored():
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        spp_numba.roi_spp_max_numba(
            torch.randn(1, 2, 4, 4), torch.zeros(1, dtype=torch.long), torch.tensor([[0, 0, 3, 3]]), LEVELS
        )
        assert torch.get_num_threads() == 1  # numba's first call must not raise torch's count
        assert spp_numba.numba.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
