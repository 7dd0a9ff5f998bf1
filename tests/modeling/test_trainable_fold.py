"""Frozen batch-norms folded into trained convs: same outputs and gradients as the plain layers."""

import pytest
import torch
from torch import nn

from sppdet.config import ModelConfig
from sppdet.modeling.backbone import build_backbone
from sppdet.modeling.train_fast import backbone_forward
from sppdet.modeling.trainable_fold import ConvFrozenBN, PointwiseChannelsLast, fold_trainable


def _random_stats(module: nn.Module, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():  # non-trivial statistics, so the fold matters
        if isinstance(m, nn.BatchNorm2d):
            assert m.running_mean is not None and m.running_var is not None
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)


def _grads(module: nn.Module, fn, x: torch.Tensor):
    module.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_()
    y = fn(x)
    (y * torch.linspace(-1, 1, y.numel()).reshape(y.shape)).sum().backward()
    params = [(n, p.grad.clone()) for n, p in module.named_parameters() if p.grad is not None]
    return y.detach(), x.grad, params


@pytest.mark.parametrize("name,freeze_at", [("mobilenet_v2", 4), ("resnet18", 2), ("zf5", 1)])
def test_backbone_outputs_and_gradients_match_plain_path(name, freeze_at):
    """MobileNetV2 as in configs/bccd_mobilenetv2.yaml (blocks 0-3 frozen, frozen BN); a ResNet
    (frozen BN in Bottleneck-style blocks); ZF-5 (no batch-norm: plain convs)."""
    torch.manual_seed(0)
    bb = build_backbone(ModelConfig(backbone=name, weights="", freeze_at=freeze_at, frozen_bn=True))
    _random_stats(bb)
    bb.train()
    x = torch.randn(2, 3, 96, 128)
    y0, _, g0 = _grads(bb, bb, x)
    y1, _, g1 = _grads(bb, lambda t: backbone_forward(bb, t), x)
    y2, _, g2 = _grads(bb, lambda t: backbone_forward(bb, t, fold_bn=False), x)
    assert [n for n, _ in g1] == [n for n, _ in g0] and len(g0) > 0
    for y in (y1, y2):
        torch.testing.assert_close(y, y0, rtol=1e-4, atol=1e-5 * float(y0.abs().max()))
    for g in (g1, g2):
        for (name, a), (_, b) in zip(g, g0):  # float rounding, relative to the gradient's scale
            torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5 * float(b.abs().max()), msg=name)
    # the model itself is untouched: same modules, same state_dict keys
    assert not any(isinstance(m, ConvFrozenBN) for m in bb.modules())


def test_fold_trains_batch_norm_affine_too_and_follows_buffer_changes():
    torch.manual_seed(0)
    block = nn.Sequential(
        nn.Conv2d(8, 16, 1, bias=True), nn.BatchNorm2d(16), nn.ReLU6(inplace=True),
        nn.Conv2d(16, 16, 3, stride=2, padding=1, groups=16, bias=False), nn.BatchNorm2d(16),
        nn.ReLU(inplace=True), nn.Conv2d(16, 4, 1),
    )  # fmt: skip
    _random_stats(block)
    block.eval()  # eval-mode batch-norms with trainable gamma/beta: they get gradients too
    folded = fold_trainable(block)
    assert sum(isinstance(m, ConvFrozenBN) for m in folded.modules()) == 3
    assert not any(isinstance(m, (nn.ReLU6, nn.ReLU)) for _, m in folded.named_children())
    for fmt in (torch.channels_last, torch.contiguous_format):  # pointwise matmul path / conv fallback
        x = torch.randn(2, 8, 10, 12).contiguous(memory_format=fmt)
        y0, gx0, g0 = _grads(block, block, x)
        y1, gx1, g1 = _grads(block, folded, x)
        torch.testing.assert_close(y1, y0, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(gx1, gx0, rtol=1e-4, atol=1e-5)
        assert [n for n, _ in g1] == [n for n, _ in g0]
        for (name, a), (_, b) in zip(g1, g0):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)
    with torch.no_grad():
        block[1].running_mean.add_(0.5)  # read at every call: no stale fold
    x = torch.randn(1, 8, 6, 6).contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(folded(x), block(x), rtol=1e-5, atol=1e-5)
    block[1].train()  # a batch-norm back in training mode: plain computation
    torch.testing.assert_close(folded(x), block(x), rtol=1e-5, atol=1e-5)


def test_pointwise_channels_last_matches_conv_and_keeps_layout():
    torch.manual_seed(0)
    x = torch.randn(2, 6, 5, 7).contiguous(memory_format=torch.channels_last).requires_grad_()
    w = torch.randn(3, 6, requires_grad=True)
    b = torch.randn(3, requires_grad=True)
    y = PointwiseChannelsLast.apply(x, w, b)
    ref = torch.nn.functional.conv2d(x, w[:, :, None, None], b)
    assert y.is_contiguous(memory_format=torch.channels_last) and y._base is None
    torch.testing.assert_close(y, ref)
    gy = torch.randn_like(ref)
    ga = torch.autograd.grad(y, (x, w, b), gy)
    gb = torch.autograd.grad(ref, (x, w, b), gy)
    for a, r in zip(ga, gb):
        torch.testing.assert_close(a, r, rtol=1e-5, atol=1e-5)
    assert ga[0].is_contiguous(memory_format=torch.channels_last)
