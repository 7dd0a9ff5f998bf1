"""The from-scratch ``tiny`` backbone."""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from ...config import ModelConfig
from .base import Backbone, init_convs


def build_tiny(cfg: ModelConfig) -> Backbone:
    """From scratch: 8 3x3 conv+BN+ReLU, stride 16, last two dilated (receptive field 207 px).

    ``tiny_stride: 8`` drops stage4's subsampling: 4x the cells (and ~3x the compute) for
    objects only a few cells wide at stride 16, where SPP's bins cannot tell a tight window
    from a shifted one (receptive field 127 px)."""
    w = cfg.tiny_width
    s4 = 2 if cfg.tiny_stride == 16 else 1

    def block(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )

    stage2: nn.Module = block(w, w, 2)
    if cfg.tiny_stem_convs:  # a Sequential only then: checkpoints without extra convs keep their keys
        stage2 = nn.Sequential(stage2, *[block(w, w) for _ in range(cfg.tiny_stem_convs)])
    layers = OrderedDict(
        stage1=block(3, w, 2),  # /2
        stage2=stage2,  # /4
        stage3=nn.Sequential(block(w, 2 * w, 2), block(2 * w, 2 * w)),  # /8
        stage4=nn.Sequential(block(2 * w, 4 * w, s4), block(4 * w, 4 * w)),  # /16 (/8)
        stage5=nn.Sequential(block(4 * w, 4 * w, dilation=2), block(4 * w, 4 * w, dilation=2)),
    )
    for m in layers.values():
        init_convs(m)
    return Backbone("tiny", layers, [[k] for k in layers], 4 * w, reduce_channels=cfg.reduce_channels)
