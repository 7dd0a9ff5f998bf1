"""Training forward with a folded frozen prefix: same outputs and gradients as the plain one."""

import torch
from torch import nn

from sppdet.config import ModelConfig
from sppdet.modeling.backbone import build_backbone
from sppdet.modeling.train_fast import backbone_forward, split_frozen_prefix


def _backbone(freeze_at: int):
    torch.manual_seed(0)
    bb = build_backbone(ModelConfig(backbone="mobilenet_v2", weights="", freeze_at=freeze_at, frozen_bn=True))
    g = torch.Generator().manual_seed(1)
    for m in bb.modules():  # non-trivial batch-norm statistics, so folding matters
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return bb.train()


def test_frozen_prefix_matches_plain_forward_and_gradients():
    bb = _backbone(4)
    prefix, rest = split_frozen_prefix(bb)
    assert len(prefix) == 4 and len(rest) == 10  # features[:4] frozen of features[:14]
    x = torch.randn(1, 3, 96, 128)
    grads = []
    outs = []
    for fn in (bb, lambda t: backbone_forward(bb, t)):
        bb.zero_grad(set_to_none=True)
        y = fn(x)
        (y.pow(2).sum()).backward()
        outs.append(y.detach())
        grads.append([p.grad.clone() for p in bb.parameters() if p.requires_grad])
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-4, atol=1e-4)
    for a, b in zip(grads[1], grads[0]):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)


def test_refolds_after_frozen_weights_change_and_falls_back_when_nothing_frozen():
    bb = _backbone(4)
    x = torch.randn(1, 3, 64, 64)
    backbone_forward(bb, x)
    with torch.no_grad():
        bb.features[0][0].weight.mul_(2.0)  # in place: the folded copy must be rebuilt
    torch.testing.assert_close(backbone_forward(bb, x), bb(x), rtol=1e-4, atol=1e-4)
    free = _backbone(0)
    assert len(split_frozen_prefix(free)[0]) == 0
    torch.testing.assert_close(backbone_forward(free, x), free(x))
